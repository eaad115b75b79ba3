import assert from 'node:assert/strict';
import {test} from 'node:test';
import {decodeAttention, readRow} from '../src/data/decode';
import {
  attentionChange,
  filterRow,
  hasBias,
  headMatrix,
  isSpecialToken,
  neuronRows,
  pairRanges,
  pooledDifference,
  pruneRow,
  scoringOf,
  specialTokenMask,
  tokenDifferences,
  topEntries,
} from '../src/model/transforms';
import {attentionOf, close, fixture} from './fixtures';

const row = (...values: number[]) => Float32Array.from(values);

test('pruning keeps weights at or above the threshold', () => {
  const out = new Int32Array(5);
  const count = pruneRow(row(0.05, 0.5, 0.001, 0.3, 0.149), {threshold: 0.05, topK: 0}, out);
  assert.deepEqual([...out.subarray(0, count)], [0, 1, 3, 4]);
});

test('top-k pruning keeps the k largest weights of a row', () => {
  const out = new Int32Array(5);
  const count = pruneRow(row(0.05, 0.5, 0.001, 0.3, 0.149), {threshold: 0, topK: 2}, out);
  assert.deepEqual([...out.subarray(0, count)], [1, 3]);
});

test('hiding the first/special tokens zeroes them; renormalising makes the rest sum to 1', () => {
  const hidden = specialTokenMask(['[CLS]', 'a', 'b', '[SEP]']);
  assert.deepEqual([...hidden], [1, 0, 0, 1]);
  const keys = {start: 0, end: 4};
  const hiddenOnly = filterRow(row(0.6, 0.1, 0.1, 0.2), {hidden, renormalize: false, keys});
  assert.deepEqual([...hiddenOnly].map((v) => +v.toFixed(6)), [0, 0.1, 0.1, 0]);
  const renormalised = filterRow(row(0.6, 0.1, 0.3, 0.0), {hidden, renormalize: true, keys});
  assert.deepEqual([...renormalised].map((v) => +v.toFixed(6)), [0, 0.25, 0.75, 0]);
});

test('the first token is hidden even when it is an ordinary word; common special tokens are recognised', () => {
  assert.deepEqual([...specialTokenMask(['The', 'cat'])], [1, 0]);
  for (const t of ['[CLS]', '[SEP]', '<s>', '</s>', '<pad>', '<|endoftext|>', '<|im_start|>']) assert.ok(isSpecialToken(t), t);
  for (const t of ['<img src=x onerror=alert(1)>', 'cat', '[', '<', '|']) assert.ok(!isSpecialToken(t), t);
});

test('the sentence-pair filter selects queries from one segment and keys from the other', () => {
  assert.deepEqual(pairRanges(10, [4], 'AB'), {queries: {start: 0, end: 4}, keys: {start: 4, end: 10}});
  assert.deepEqual(pairRanges(10, [4], 'BA'), {queries: {start: 4, end: 10}, keys: {start: 0, end: 4}});
  assert.deepEqual(pairRanges(10, [4], 'BB'), {queries: {start: 4, end: 10}, keys: {start: 4, end: 10}});
  assert.deepEqual(pairRanges(10, null, 'AB'), {queries: {start: 0, end: 10}, keys: {start: 0, end: 10}});
  const filtered = filterRow(row(0.1, 0.2, 0.3, 0.4), {hidden: null, renormalize: false, keys: {start: 2, end: 4}});
  assert.deepEqual([...filtered].map((v) => +v.toFixed(6)), [0, 0, 0.3, 0.4]);
});

test('topEntries lists the largest weights first', () => {
  assert.deepEqual(topEntries([0.1, 0.7, 0, 0.2], 2), [
    {index: 1, weight: 0.7},
    {index: 3, weight: 0.2},
  ]);
});

test('the neuron view softmax of scaled q·k (causal, grouped heads) matches the model\'s', async () => {
  const {decodeQueryKey, queryVectors, keyVectors} = await import('../src/data/decode_qk');
  const {buffer, expected} = fixture<{causal_softmax: number[][][][]}>('qk');
  const qk = decodeQueryKey(buffer);
  for (let l = 0; l < qk.numLayers; l++) {
    for (let h = 0; h < qk.numHeads; h++) {
      for (let i = 0; i < qk.numTokens; i++) {
        const rows = neuronRows(queryVectors(qk, l, h), keyVectors(qk, l, h), qk.headDim, i, scoringOf(qk, l, h, true));
        for (let j = 0; j < qk.numTokens; j++) assert.ok(close(rows.softmax[j], expected.causal_softmax[l][h][i][j], 1e-5));
        assert.equal(rows.scores[qk.numTokens - 1] === -Infinity, i < qk.numTokens - 1);
        assert.equal(rows.sinkShare, 0);
      }
    }
  }
});

test('the neuron view applies the soft cap, the sliding window and the sinks as the writer defines them', async () => {
  const {decodeQueryKey, queryVectors, keyVectors} = await import('../src/data/decode_qk');
  type Expected = {softmax: {causal: number[][][][]; bidirectional: number[][][][]}};
  const {buffer, expected} = fixture<Expected>('qk_rules');
  const qk = decodeQueryKey(buffer);
  assert.deepEqual(qk.softcap, [2, null, null]);
  assert.deepEqual(qk.slidingWindow, [null, 2, null]);
  assert.deepEqual(qk.sinks, [null, null, [0.5, -1, 2, 0]]);
  for (const causal of [true, false]) {
    const want = causal ? expected.softmax.causal : expected.softmax.bidirectional;
    for (let l = 0; l < qk.numLayers; l++) {
      for (let h = 0; h < qk.numHeads; h++) {
        for (let i = 0; i < qk.numTokens; i++) {
          const rows = neuronRows(queryVectors(qk, l, h), keyVectors(qk, l, h), qk.headDim, i, scoringOf(qk, l, h, causal));
          let sum = 0;
          for (let j = 0; j < qk.numTokens; j++) {
            assert.ok(close(rows.softmax[j], want[l][h][i][j], 1e-5), `${causal ? 'causal' : 'bidirectional'} [${l},${h},${i},${j}]`);
            sum += rows.softmax[j];
          }
          assert.ok(close(sum + rows.sinkShare, 1, 1e-5));
          if (l === 0) assert.ok(rows.scores.every((x) => x === -Infinity || Math.abs(x) <= 2)); // capped at ±2
          if (l === 1) {
            assert.deepEqual(rows.masks.map((m, j) => (m === 'window' ? j : -1)).filter((j) => j >= 0),
              [...Array(qk.numTokens).keys()].filter((j) => Math.abs(i - j) >= 2 && !(causal && j > i)));
          }
          if (l === 2) assert.ok(rows.sinkShare > 0);
        }
      }
    }
  }
});

test('the neuron view masks causally but within each bidirectional span (a prefix-LM mask), as the writer defines it', async () => {
  const {decodeQueryKey, queryVectors, keyVectors} = await import('../src/data/decode_qk');
  const {buffer, expected} = fixture<{softmax: {bidirectional: number[][][][]}}>('qk_spans');
  const qk = decodeQueryKey(buffer);
  assert.deepEqual(qk.bidirectionalSpans, [[[0, 3]], [[1, 3], [4, 7]]]);
  for (let l = 0; l < qk.numLayers; l++) {
    for (let h = 0; h < qk.numHeads; h++) {
      for (let i = 0; i < qk.numTokens; i++) {
        const rows = neuronRows(queryVectors(qk, l, h), keyVectors(qk, l, h), qk.headDim, i, scoringOf(qk, l, h, false));
        for (let j = 0; j < qk.numTokens; j++) {
          assert.ok(close(rows.softmax[j], expected.softmax.bidirectional[l][h][i][j], 1e-5), `[${l},${h},${i},${j}]`);
        }
        if (l === 0 && i === 1) assert.deepEqual(rows.masks, [null, null, null, 'causal', 'causal', 'causal', 'causal']);
        if (l === 1 && i === 4) assert.deepEqual(rows.masks, ['window', 'window', 'window', null, null, null, null]);
        if (l === 1 && i === 2) assert.deepEqual(rows.masks, ['window', null, null, 'causal', 'causal', 'causal', 'causal']);
      }
    }
  }
});

test('the neuron view adds the bias per key or per distance and masks other chunks, as the writer defines them', async () => {
  const {decodeQueryKey, queryVectors, keyVectors} = await import('../src/data/decode_qk');
  type Expected = {softmax: Record<'causal' | 'bidirectional', number[][][][]>};
  for (const name of ['qk_bias', 'qk_bias_cross']) {
    const {buffer, expected} = fixture<Expected>(name);
    const qk = decodeQueryKey(buffer);
    for (const cause of Object.keys(expected.softmax) as ('causal' | 'bidirectional')[]) {
      const causal = cause === 'causal';
      for (let l = 0; l < qk.numLayers; l++) {
        for (let h = 0; h < qk.numHeads; h++) {
          const scoring = scoringOf(qk, l, h, causal);
          assert.equal(hasBias(scoring), l !== 2 || qk.relativeBias[2] !== null);
          for (let i = 0; i < qk.numTokens; i++) {
            const rows = neuronRows(queryVectors(qk, l, h), keyVectors(qk, l, h), qk.headDim, i, scoring);
            for (let j = 0; j < qk.numKeyTokens; j++) {
              assert.ok(close(rows.softmax[j], expected.softmax[cause][l][h][i][j], 1e-5), `${name} ${cause} [${l},${h},${i},${j}]`);
            }
            const chunked = rows.masks.map((m, j) => (m === 'chunk' ? j : -1)).filter((j) => j >= 0);
            const others = [...Array(qk.numKeyTokens).keys()].filter((j) => Math.floor(j / 4) !== Math.floor(i / 4) && !(causal && j > i));
            assert.deepEqual(chunked, l === 2 ? others : []);
          }
        }
      }
    }
  }
});

test('attention change: half the L1 distance of each row, averaged over query tokens', () => {
  const n = 3;
  const a = attentionOf([[1, 0, 0], [1, 0, 0], [0, 0, 1]], n);
  const b = attentionOf([[1, 0, 0], [0, 1, 0], [0, 0, 1]], n);
  assert.ok(Math.abs(attentionChange(a, b, 0, 0) - 1 / 3) < 1e-6);
  assert.equal(attentionChange(a, a, 0, 0), 0);
  assert.deepEqual(Array.from(headMatrix(b, 0, 0)), [1, 0, 0, 0, 1, 0, 0, 0, 1]);
});

test('token differences name each position and what each side has there', () => {
  assert.deepEqual(tokenDifferences(['a', 'b', 'c'], ['a', 'x', 'c', 'd']), [
    {position: 1, a: 'b', b: 'x'},
    {position: 3, a: null, b: 'd'},
  ]);
  assert.deepEqual(tokenDifferences(['a'], ['a']), []);
});

test('the pooled difference keeps, per cell, the largest change it covers', () => {
  const a = attentionOf([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], 4);
  const b = attentionOf([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]], 4);
  const d = pooledDifference(a, b, 2);
  assert.equal(d.size, 2);
  assert.equal(d.maxAbs, 1);
  // cell (0, 0) covers rows 0-1 and keys 0-1: row 1 moved from key 0 (-1) to key 1 (+1); of equal
  // changes the first key's is kept. Cell (1, 1): row 3 moved from key 3 to key 2 (+1 first).
  assert.deepEqual(Array.from(d.pooled[0]), [-1, 0, 0, 1]);
  assert.equal(pooledDifference(a, b).size, 4); // never more cells than tokens
});
