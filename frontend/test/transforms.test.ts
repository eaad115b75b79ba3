import assert from 'node:assert/strict';
import {test} from 'node:test';
import {decodeAttention, readRow} from '../src/decode';
import {
  filterRow,
  isSpecialToken,
  neuronRows,
  noFilter,
  pairRanges,
  pruneRow,
  selectionRow,
  specialTokenMask,
  topEntries,
} from '../src/transforms';
import {close, fixture} from './fixtures';

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

test('a multi-token selection sums the selected tokens\' rows', () => {
  const a = decodeAttention(fixture('causal').buffer);
  const sum = selectionRow(a, 1, 0, [2, 4], noFilter(a.numTokens));
  const r2 = readRow(a, 1, 0, 2);
  const r4 = readRow(a, 1, 0, 4);
  for (let j = 0; j < a.numTokens; j++) assert.ok(close(sum[j], r2[j] + r4[j]));
});

test('topEntries lists the largest weights first', () => {
  assert.deepEqual(topEntries([0.1, 0.7, 0, 0.2], 2), [
    {index: 1, weight: 0.7},
    {index: 3, weight: 0.2},
  ]);
});

test('the neuron view softmax of scaled q·k (causal, grouped heads) matches the model\'s', async () => {
  const {decodeQueryKey, queryVectors, keyVectors} = await import('../src/decode');
  const {buffer, expected} = fixture<{causal_softmax: number[][][][]}>('qk');
  const qk = decodeQueryKey(buffer);
  for (let l = 0; l < qk.numLayers; l++) {
    for (let h = 0; h < qk.numHeads; h++) {
      for (let i = 0; i < qk.numTokens; i++) {
        const rows = neuronRows(queryVectors(qk, l, h), keyVectors(qk, l, h), qk.headDim, i, qk.scaling[l], true);
        for (let j = 0; j < qk.numTokens; j++) assert.ok(close(rows.softmax[j], expected.causal_softmax[l][h][i][j], 1e-5));
        assert.equal(rows.scores[qk.numTokens - 1] === -Infinity, i < qk.numTokens - 1);
      }
    }
  }
});
