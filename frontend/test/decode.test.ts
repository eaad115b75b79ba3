import assert from 'node:assert/strict';
import {test} from 'node:test';
import {decodeAttention, FormatError, FORMAT_VERSION, readColumn, readRow} from '../src/data/decode';
import {decodeQueryKey, halvesToFloats, keyHeadOf, keyVectors, queryVectors} from '../src/data/decode_qk';
import {close, fixture} from './fixtures';

type Expected = {header: Record<string, unknown>; attention: number[][][][]};

function assertDecodesLikeTheWriter(name: string): void {
  const {buffer, expected} = fixture<Expected>(name);
  const a = decodeAttention(buffer);
  assert.equal(a.encoding, expected.header.encoding);
  assert.deepEqual(a.tokens, expected.header.tokens);
  assert.deepEqual(a.keyTokens, expected.header.key_tokens ?? expected.header.tokens);
  const [L, H, N, K] = [expected.attention.length, expected.attention[0].length, expected.attention[0][0].length, expected.attention[0][0][0].length];
  assert.deepEqual([a.numLayers, a.numHeads, a.numTokens, a.numKeyTokens], [L, H, N, K]);
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < N; i++) {
        const row = readRow(a, l, h, i);
        for (let j = 0; j < K; j++) assert.ok(close(row[j], expected.attention[l][h][i][j]), `${name} [${l},${h},${i},${j}]`);
      }
      for (let j = 0; j < K; j++) {
        const column = readColumn(a, l, h, j);
        for (let i = 0; i < N; i++) assert.ok(close(column[i], expected.attention[l][h][i][j]), `${name} column [${l},${h},${i},${j}]`);
      }
    }
  }
}

test('decodes the dense encoding like the writer', () => assertDecodesLikeTheWriter('dense'));
test('decodes cross attention (queries over other tokens), dense and top-k, like the writer', () => {
  assertDecodesLikeTheWriter('cross');
  assertDecodesLikeTheWriter('cross_topk');
});
test('decodes the causal encoding like the writer', () => assertDecodesLikeTheWriter('causal'));
test('decodes the topk encoding like the writer', () => assertDecodesLikeTheWriter('topk'));
test('decodes a causal topk example (padded slots) like the writer', () => assertDecodesLikeTheWriter('topk_causal'));

test('keeps header fields the writer added (segments) and tokens exactly as logged', () => {
  const a = decodeAttention(fixture('dense').buffer);
  assert.deepEqual(a.header.segments, [3]);
  assert.equal(a.tokens[3], '<img src=x onerror=alert(1)>');
});

test('decodes /qk: query and key vectors (float16, float32, or float16 in a blob that predates dtype), scaling, and the key head of a grouped query head', () => {
  type QK = {header: {scaling: number[]}; query: number[][][][]; key: number[][][][]};
  for (const name of ['qk', 'qk_float32', 'qk_no_dtype']) {
    const {buffer, expected} = fixture<QK>(name);
    const qk = decodeQueryKey(buffer);
    assert.equal(qk.header.dtype, {qk: 'float16', qk_float32: 'float32', qk_no_dtype: undefined}[name]);
    assert.deepEqual([qk.numLayers, qk.numHeads, qk.numKvHeads, qk.numTokens, qk.headDim], [2, 4, 2, 5, 3]);
    assert.deepEqual(qk.scaling, expected.header.scaling);
    assert.deepEqual([0, 1, 2, 3].map((h) => keyHeadOf(qk, h)), [0, 0, 1, 1]);
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 4; h++) {
        const q = queryVectors(qk, l, h);
        const k = keyVectors(qk, l, h);
        for (let i = 0; i < 5; i++) {
          for (let t = 0; t < 3; t++) {
            assert.ok(close(q[i * 3 + t], expected.query[l][h][i][t]), `query [${l},${h},${i},${t}]`);
            assert.ok(close(k[i * 3 + t], expected.key[l][keyHeadOf(qk, h)][i][t]), `key [${l},${h},${i},${t}]`);
          }
        }
      }
    }
  }
  // float32 keeps what float16 rounds: the two blobs of the same vectors differ, each as its encoder stored it.
  assert.notDeepEqual(queryVectors(decodeQueryKey(fixture('qk').buffer), 0, 0), queryVectors(decodeQueryKey(fixture('qk_float32').buffer), 0, 0));
  assert.throws(() => decodeQueryKey(withHeader(fixture('qk_float32').buffer, (h) => (h.dtype = 'bfloat16'))), /unknown query\/key dtype "bfloat16"/);
});

test('converts float16 bit patterns, subnormals and infinities included', () => {
  const floats = halvesToFloats(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x7e00]));
  assert.deepEqual([...floats.subarray(0, 5)], [1, -2, 65504, 2 ** -24, Infinity]);
  assert.ok(Number.isNaN(floats[5]));
});

test('rejects a blob of another kind, a newer format and a short payload with a FormatError', () => {
  const {buffer} = fixture('dense');
  assert.throws(() => decodeQueryKey(buffer), FormatError);
  const newer = buffer.slice(0);
  new DataView(newer).setUint32(4, FORMAT_VERSION + 1, true);
  assert.throws(() => decodeAttention(newer), /upgrade tb-attention/);
  assert.throws(() => decodeAttention(buffer.slice(0, buffer.byteLength - 1)), FormatError);
});

test('reads attention whose keys are other tokens than its queries (v2 groups, e.g. cross attention)', () => {
  const {buffer} = fixture('dense');
  const square = decodeAttention(buffer);
  const n = square.numTokens;
  // The same bytes read as 1 query over n² keys: that row is every row of the square head in turn.
  const keys = Array.from({length: n * n}, (_, j) => `k${j}`);
  const rect = decodeAttention(withHeader(buffer, (h) => Object.assign(h, {tokens: square.tokens.slice(0, 1), num_tokens: 1, key_tokens: keys, num_key_tokens: n * n})));
  assert.deepEqual([rect.numTokens, rect.numKeyTokens, rect.keyTokens[3]], [1, n * n, 'k3']);
  for (const [l, h] of [[0, 0], [square.numLayers - 1, square.numHeads - 1]]) {
    const rows = Array.from({length: n}, (_, i) => [...readRow(square, l, h, i)]);
    assert.deepEqual([...readRow(rect, l, h, 0)], rows.flat());
    for (const j of [0, n + 1]) assert.deepEqual([...readColumn(rect, l, h, j)], [rows.flat()[j]]);
  }
  assert.equal(square.numKeyTokens, n); // v1: square
  assert.throws(() => decodeAttention(withHeader(buffer, (h) => Object.assign(h, {key_tokens: keys.slice(0, 3)}))), /key_tokens/);
});

/** The blob with its JSON header changed by `edit` (the payload kept). */
function withHeader(buffer: ArrayBuffer, edit: (header: Record<string, unknown>) => void): ArrayBuffer {
  const view = new DataView(buffer);
  const length = view.getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 12, length))) as Record<string, unknown>;
  edit(header);
  const text = JSON.stringify(header);
  const json = new TextEncoder().encode(text.padEnd(text.length + ((8 - (text.length % 8)) % 8))); // the payload stays aligned
  const out = new Uint8Array(12 + json.length + buffer.byteLength - 12 - length);
  out.set(new Uint8Array(buffer, 0, 12));
  new DataView(out.buffer).setUint32(8, json.length, true);
  out.set(json, 12);
  out.set(new Uint8Array(buffer, 12 + length), 12 + json.length);
  return out.buffer;
}

test('reads the optional scoring rules of /qk (all null when absent) and rejects malformed ones by name', () => {
  const plain = decodeQueryKey(fixture('qk').buffer);
  assert.deepEqual([plain.softcap, plain.slidingWindow, plain.sinks], [[null, null], [null, null], [null, null]]);
  assert.deepEqual([plain.attentionChunk, plain.keyBias, plain.relativeBias], [[null, null], [null, null], [null, null]]);
  const {buffer} = fixture('qk_rules');
  assert.deepEqual(decodeQueryKey(withHeader(buffer, () => {})).slidingWindow, [null, 2, null]); // the helper keeps the blob intact
  const bad: [string, unknown][] = [
    ['softcap', [2]],
    ['softcap', [-1, null, null]],
    ['sliding_window', [null, 2.5, null]],
    ['sinks', [null, null, [1, 2]]],
    ['sinks', 'all'],
    ['attention_chunk', [null, 0, null]],
    ['key_bias', [null, null, [[1, 2, 3, 4, 5, 6]]]], // one head of 4
    ['key_bias', [null, null, Array(4).fill([1, 2, 3])]], // 3 keys of 6
    ['relative_bias', [null, Array(4).fill(Array(6).fill(0)), null]], // 6 distances of 11
    ['relative_bias', [null, Array(4).fill([...Array(10).fill(0), 'x']), null]],
    ['bidirectional_spans', [null, [[3, 2]], null]], // empty
    ['bidirectional_spans', [null, [[0, 7]], null]], // past the 6 tokens
    ['bidirectional_spans', [null, [[0, 3], [2, 5]], null]], // overlapping
    ['bidirectional_spans', [null, [[0.5, 3]], null]],
  ];
  assert.deepEqual(decodeQueryKey(withHeader(buffer, (h) => (h.bidirectional_spans = [null, [[0, 3], [3, 6]], []]))).bidirectionalSpans, [null, [[0, 3], [3, 6]], []]);
  for (const [field, value] of bad) {
    assert.throws(() => decodeQueryKey(withHeader(buffer, (h) => (h[field] = value))), new RegExp(`header ${field} is not one valid entry`));
  }
});

test('reads the bias and chunk rules of /qk: per head, a number per key or per distance j − i', () => {
  const qk = decodeQueryKey(fixture('qk_bias_cross').buffer); // 4 queries over 7 keys
  assert.deepEqual(qk.attentionChunk, [null, null, 4]);
  assert.deepEqual(qk.keyBias.map((layer) => layer && layer.map((head) => head.length)), [[7, 7, 7, 7], null, null]);
  assert.deepEqual(qk.relativeBias.map((layer) => layer && layer.length), [null, 4, 4]);
  assert.ok(qk.relativeBias[1]!.every((head) => head.length === 4 + 7 - 1));
});

test('a one-layer /qk blob (as `/qk?layer=` serves) reads as that layer of the whole, rules included', async () => {
  const {scoringOf} = await import('../src/model/transforms');
  const qk = decodeQueryKey(fixture('qk_rules').buffer);
  const l = qk.numLayers - 1;
  const q = qk.numHeads * qk.numTokens * qk.headDim;
  const k = qk.numKvHeads * qk.numKeyTokens * qk.headDim;
  const one = {
    ...qk,
    numLayers: 1,
    firstLayer: l,
    query: qk.query.subarray(l * q, (l + 1) * q),
    key: qk.key.subarray(l * k, (l + 1) * k),
    scaling: [qk.scaling[l]],
    softcap: [qk.softcap[l]],
    slidingWindow: [qk.slidingWindow[l]],
    sinks: [qk.sinks[l]],
    attentionChunk: [qk.attentionChunk[l]],
    keyBias: [qk.keyBias[l]],
    relativeBias: [qk.relativeBias[l]],
  };
  for (let h = 0; h < qk.numHeads; h++) {
    assert.deepEqual(queryVectors(one, l, h), queryVectors(qk, l, h));
    assert.deepEqual(keyVectors(one, l, h), keyVectors(qk, l, h));
    assert.deepEqual(scoringOf(one, l, h, true), scoringOf(qk, l, h, true));
  }
});
