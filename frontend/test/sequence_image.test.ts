import assert from 'node:assert/strict';
import {test} from 'node:test';
import {DEQUANTIZE, type Attention} from '../src/data/decode';
import type {SequenceImage} from '../src/data/api';
import {applyPatch, DEFAULT_STATE} from '../src/state/state';
import {headHeats, meanHeat, pictureOf, queryToken, RolloutFactors, rolloutHeat} from '../src/views/image/data';
import {decodeState, encodeState} from '../src/state/url_state';
import {patchToken, tokenName, tokenPatch} from '../src/model/image';
import {imageOfToken, sequenceLayout, type SequenceLayout} from '../src/model/sequence_image';
import {rolloutLayer, rolloutRow} from '../src/model/rollout';

// "<s> a [2 × 2 image] b c [2 × 1 image] ?": tokens 2..5 are image 0, 8..9 image 1.
const tokens = ['<s>', 'a', 'I', 'I', 'I', 'I', 'b', 'c', 'J', 'J', '?'];
const n = tokens.length;
const images: SequenceImage[] = [
  {size: [32, 32], pieces: [{span: [2, 6], grid: [2, 2], box: [0, 0, 32, 32]}]},
  {size: [32, 16], pieces: [{span: [8, 10], grid: [2, 1], box: [0, 0, 32, 16]}]},
];
// Idefics3-like: two tiles side by side (2 × 2 tokens each) and a global view of 1 × 1.
const tiled: SequenceImage[] = [
  {size: [32, 64], pieces: [
    {span: [1, 5], grid: [2, 2], box: [0, 0, 32, 32], name: 'tile r1c1'},
    {span: [6, 10], grid: [2, 2], box: [0, 32, 32, 64], name: 'tile r1c2'},
    {span: [11, 12], grid: [1, 1], box: [0, 0, 32, 64], name: 'global'},
  ]},
];

function layout(list: SequenceImage[], index: number, names: string[]): SequenceLayout {
  const out = sequenceLayout(list, index, names);
  if (typeof out === 'string') throw new Error(out);
  return out;
}

function attention(): Attention {
  const codes = new Uint8Array(2 * 2 * n * n);
  for (let c = 0; c < codes.length; c++) codes[c] = (c * 53) % 256;
  return {header: {} as Attention['header'], tokens, keyTokens: tokens, numLayers: 2, firstLayer: 0, heldLayers: 2, numHeads: 2, numTokens: n, numKeyTokens: n, encoding: 'dense', codes, keys: null, topK: 0};
}
const weight = (a: Attention, l: number, h: number, i: number, j: number) => DEQUANTIZE[a.codes[((l * 2 + h) * n + i) * n + j]];

test('an image inside a sequence: its cells name its tokens; text and other images are not cells', () => {
  const first = layout(images, 0, tokens);
  assert.deepEqual([...first.cellTokens], [2, 3, 4, 5]);
  assert.deepEqual(first.chipTokens, [0, 1, 6, 7, 10]); // image 1's tokens are shown with image 1
  assert.deepEqual(patchToken(first, {row: 1, col: 0}), 4);
  assert.deepEqual(tokenPatch(first, 5), {row: 1, col: 1});
  assert.equal(tokenPatch(first, 6), null);
  assert.equal(tokenName(first, 7), 'c');
  const second = layout(images, 1, tokens);
  assert.deepEqual(second.grid, [2, 1]);
  assert.deepEqual([...second.cellTokens], [8, 9]);
  assert.equal(imageOfToken(images, 9), 1);
  assert.equal(imageOfToken(images, 7), -1);
});

test('a text token shows the picked image; a patch its own image; the pick is kept in the URL', () => {
  assert.equal(pictureOf(images, 10, 0), 0); // the end of the text, nothing picked: the first image
  assert.equal(pictureOf(images, 10, 1), 1); // the second image picked
  assert.equal(pictureOf(images, 10, 7), 1); // a pick past the example's images: its last
  assert.equal(pictureOf(images, 3, 1), 0); // a patch of the first image shows the first, whatever is picked
  assert.equal(pictureOf(images, 9, 0), 1);
  const state = applyPatch(DEFAULT_STATE, {image: {picture: 1}});
  assert.equal(decodeState(encodeState(state)).image.picture, 1);
  assert.equal(decodeState(encodeState(DEFAULT_STATE)).image.picture, 0);
});

test('tiles are put side by side on the frame; a coarser view becomes named chips', () => {
  const names = Array.from({length: 13}, (_, t) => `t${t}`);
  const info = layout(tiled, 0, names);
  assert.deepEqual(info.grid, [2, 4]);
  assert.deepEqual([...info.cellTokens], [1, 2, 6, 7, 3, 4, 8, 9]);
  assert.deepEqual(info.chipTokens, [0, 5, 10, 11, 12]);
  assert.equal(info.chipNames[3], 'global r0c0');
  assert.match(String(sequenceLayout([{size: [32, 64], pieces: [tiled[0].pieces[0]]}], 0, names)), /do not cover/);
});

test('a text query shows its row over the image cells and the text; a patch query shows who attends to it', () => {
  const a = attention();
  const info = layout(images, 0, tokens);
  assert.equal(queryToken(DEFAULT_STATE, info, n), n - 1); // the end of the text
  const [row] = headHeats(a, info, 1, [0], 10);
  assert.deepEqual([...row.cells], [2, 3, 4, 5].map((j) => Math.fround(weight(a, 1, 0, 10, j))));
  assert.deepEqual([...row.prefix], [0, 1, 6, 7, 10].map((j) => Math.fround(weight(a, 1, 0, 10, j))));
  const patch = meanHeat(a, info, 0, [0, 1], 3);
  [0, 1, 6, 7, 10].forEach((t, k) => assert.ok(Math.abs(patch.prefix[k] - (weight(a, 0, 0, t, 3) + weight(a, 0, 1, t, 3)) / 2) < 1e-6));
  [2, 3, 4, 5].forEach((t, c) => assert.ok(Math.abs(patch.cells[c] - (weight(a, 0, 0, 3, t) + weight(a, 0, 1, 3, t)) / 2) < 1e-6));
  const state = applyPatch(DEFAULT_STATE, {focus: {tokens: [8]}});
  assert.equal(queryToken(state, layout(images, 1, tokens), n), 8);
});

test('the rollout through the decoder layers of a text query, over the image cells', () => {
  const a = attention();
  const info = layout(images, 0, tokens);
  const settings = {...DEFAULT_STATE.image, mode: 'rollout' as const};
  const heat = rolloutHeat(new RolloutFactors(), a, info, 1, [0, 1], 10, settings);
  const matrices = (l: number) => [0, 1].map((h) => Float32Array.from({length: n * n}, (_, k) => weight(a, l, h, Math.floor(k / n), k % n)));
  const factors = [0, 1].map((l) => rolloutLayer(matrices(l), n, {fusion: settings.fusion, discard: settings.discard}));
  const expected = rolloutRow(factors, n, 10);
  [2, 3, 4, 5].forEach((t, c) => assert.ok(Math.abs(heat.cells[c] - expected[t]) < 1e-6));
});
