import assert from 'node:assert/strict';
import {test} from 'node:test';
import {
  decodeAttention,
  decodeQueryKey,
  FormatError,
  halfToFloat,
  keyHeadOf,
  keyVectors,
  queryVectors,
  readColumn,
  readRow,
} from '../src/decode';
import {close, fixture} from './fixtures';

type Expected = {header: Record<string, unknown>; attention: number[][][][]};

function assertDecodesLikeTheWriter(name: string): void {
  const {buffer, expected} = fixture<Expected>(name);
  const a = decodeAttention(buffer);
  assert.equal(a.encoding, expected.header.encoding);
  assert.deepEqual(a.tokens, expected.header.tokens);
  const [L, H, N] = [expected.attention.length, expected.attention[0].length, expected.attention[0][0].length];
  assert.deepEqual([a.numLayers, a.numHeads, a.numTokens], [L, H, N]);
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < N; i++) {
        const row = readRow(a, l, h, i);
        for (let j = 0; j < N; j++) assert.ok(close(row[j], expected.attention[l][h][i][j]), `${name} [${l},${h},${i},${j}]`);
      }
      for (let j = 0; j < N; j++) {
        const column = readColumn(a, l, h, j);
        for (let i = 0; i < N; i++) assert.ok(close(column[i], expected.attention[l][h][i][j]), `${name} column [${l},${h},${i},${j}]`);
      }
    }
  }
}

test('decodes the dense encoding like the writer', () => assertDecodesLikeTheWriter('dense'));
test('decodes the causal encoding like the writer', () => assertDecodesLikeTheWriter('causal'));
test('decodes the topk encoding like the writer', () => assertDecodesLikeTheWriter('topk'));
test('decodes a causal topk example (padded slots) like the writer', () => assertDecodesLikeTheWriter('topk_causal'));

test('keeps header fields the writer added (segments) and tokens exactly as logged', () => {
  const a = decodeAttention(fixture('dense').buffer);
  assert.deepEqual(a.header.segments, [3]);
  assert.equal(a.tokens[3], '<img src=x onerror=alert(1)>');
});

test('decodes /qk: query and key vectors, scaling, and the key head of a grouped query head', () => {
  type QK = {header: {scaling: number[]}; query: number[][][][]; key: number[][][][]};
  const {buffer, expected} = fixture<QK>('qk');
  const qk = decodeQueryKey(buffer);
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
});

test('converts float16 bit patterns, subnormals and infinities included', () => {
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0xc000), -2);
  assert.equal(halfToFloat(0x7bff), 65504);
  assert.equal(halfToFloat(0x0001), 2 ** -24);
  assert.equal(halfToFloat(0x7c00), Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
});

test('rejects a blob of another kind, a newer format and a short payload with a FormatError', () => {
  const {buffer} = fixture('dense');
  assert.throws(() => decodeQueryKey(buffer), FormatError);
  const newer = buffer.slice(0);
  new DataView(newer).setUint32(4, 2, true);
  assert.throws(() => decodeAttention(newer), /upgrade tb-attention/);
  assert.throws(() => decodeAttention(buffer.slice(0, buffer.byteLength - 1)), FormatError);
});
