import assert from 'node:assert/strict';
import {test} from 'node:test';
import {decodeAttention, DEQUANTIZE, readRow} from '../src/data/decode';
import {specialTokenMask, type RowFilter} from '../src/model/transforms';

const unfiltered = (n: number): RowFilter => ({hidden: null, renormalize: false, keys: {start: 0, end: n}});
import {thumbnailCells} from '../src/views/model/model_view';
import {fixture} from './fixtures';

const code = (w: number) => Math.round(255 * Math.sqrt(w));

for (const name of ['dense', 'causal', 'topk']) {
  test(`a model-view thumbnail holds every weight of the head when it has room (${name})`, () => {
    const a = decodeAttention(fixture(name).buffer);
    const n = a.numTokens;
    const {rows, cols, cells} = thumbnailCells(a, 1, 1, unfiltered(n), {start: 0, end: n}, 64);
    assert.deepEqual([rows, cols], [n, n]);
    for (let i = 0; i < n; i++) {
      const row = readRow(a, 1, 1, i);
      for (let j = 0; j < n; j++) assert.equal(DEQUANTIZE[cells[i * n + j]], row[j]);
    }
  });
}

test('a smaller thumbnail keeps the largest weight of each pooled cell', () => {
  const a = decodeAttention(fixture('topk').buffer); // 9 tokens
  const {rows, cols, cells} = thumbnailCells(a, 0, 1, unfiltered(9), {start: 0, end: 9}, 3);
  assert.deepEqual([rows, cols], [3, 3]);
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 3; c++) {
      let max = 0;
      for (let i = 3 * r; i < 3 * r + 3; i++) max = Math.max(max, ...readRow(a, 0, 1, i).slice(3 * c, 3 * c + 3));
      assert.equal(DEQUANTIZE[cells[r * 3 + c]], max);
    }
  }
});

test('thumbnails follow the hide/renormalise filter and the sentence-pair ranges', () => {
  const a = decodeAttention(fixture('dense').buffer); // 5 tokens, segments [3]
  const hidden = specialTokenMask(a.tokens);
  const filter = {hidden, renormalize: true, keys: {start: 3, end: 5}};
  const {rows, cols, cells} = thumbnailCells(a, 0, 2, filter, {start: 0, end: 3}, 64);
  assert.deepEqual([rows, cols], [3, 2]);
  for (let i = 0; i < 3; i++) {
    const row = readRow(a, 0, 2, i);
    const kept = row.reduce((sum, w, j) => sum + (hidden[j] ? 0 : w), 0);
    for (let j = 3; j < 5; j++) {
      const expected = hidden[j] ? 0 : code(row[j] / kept);
      assert.ok(Math.abs(cells[i * 2 + j - 3] - expected) <= 1, `[${i},${j}]`);
    }
  }
});

test('a one-layer blob (as `/attention?layer=` serves) reads as that layer of the whole', () => {
  for (const name of ['dense', 'causal', 'topk']) {
    const a = decodeAttention(fixture(name).buffer);
    const perLayer = a.codes.length / a.numLayers;
    const one = {
      ...a,
      codes: a.codes.subarray(perLayer, 2 * perLayer),
      keys: a.keys ? a.keys.subarray(perLayer, 2 * perLayer) : null,
      firstLayer: 1,
      heldLayers: 1,
    };
    for (let h = 0; h < a.numHeads; h++) {
      for (let i = 0; i < a.numTokens; i++) assert.deepEqual(readRow(one, 1, h, i), readRow(a, 1, h, i));
    }
    const n = a.numTokens;
    assert.deepEqual(thumbnailCells(one, 1, 0, unfiltered(n), {start: 0, end: n}, 4), thumbnailCells(a, 1, 0, unfiltered(n), {start: 0, end: n}, 4));
  }
});
