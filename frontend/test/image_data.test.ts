import assert from 'node:assert/strict';
import {test} from 'node:test';
import {DEQUANTIZE, type Attention} from '../src/data/decode';
import {applyPatch, DEFAULT_STATE} from '../src/state/state';
import {headHeats, meanHeat, queryToken, RolloutFactors, rolloutHeat} from '../src/views/image/data';
import {rolloutLayer, rolloutRow} from '../src/model/rollout';
import type {ImageInfo} from '../src/model/image';

// One CLS token and a 2 × 2 patch grid; 2 layers × 2 heads of dense weight codes.
const info: ImageInfo = {grid: [2, 2], patch_size: [16, 16], prefix_tokens: 1, prefix_names: ['CLS']};
const n = 5;

function attention(): Attention {
  const tokens = ['CLS', 'r0c0', 'r0c1', 'r1c0', 'r1c1'];
  const codes = new Uint8Array(2 * 2 * n * n);
  for (let c = 0; c < codes.length; c++) codes[c] = (c * 37) % 256;
  return {header: {} as Attention['header'], tokens, keyTokens: tokens, numLayers: 2, firstLayer: 0, heldLayers: 2, numHeads: 2, numTokens: n, numKeyTokens: n, encoding: 'dense', codes, keys: null, topK: 0};
}

const weight = (a: Attention, l: number, h: number, i: number, j: number) => DEQUANTIZE[a.codes[((l * 2 + h) * n + i) * n + j]];

test('the query is the locked token, else CLS, else the centre patch', () => {
  assert.equal(queryToken(applyPatch(DEFAULT_STATE, {focus: {tokens: [3]}}), info, n), 3);
  assert.equal(queryToken(DEFAULT_STATE, info, n), 0);
  assert.equal(queryToken(applyPatch(DEFAULT_STATE, {focus: {tokens: [9]}}), info, n), 0); // not a token of this example
  assert.equal(queryToken(DEFAULT_STATE, {...info, prefix_tokens: 0, prefix_names: [], grid: [3, 3]}, 9), 4);
});

test('per-head and mean heats are the query rows of the stored weights', () => {
  const a = attention();
  const [h0, h1] = headHeats(a, info, 1, [0, 1], 2);
  assert.deepEqual([...h0.cells], [1, 2, 3, 4].map((j) => Math.fround(weight(a, 1, 0, 2, j))));
  assert.deepEqual([...h1.prefix], [Math.fround(weight(a, 1, 1, 2, 0))]);
  const mean = meanHeat(a, info, 1, [0, 1], 2);
  mean.cells.forEach((v, c) => assert.ok(Math.abs(v - (weight(a, 1, 0, 2, c + 1) + weight(a, 1, 1, 2, c + 1)) / 2) < 1e-6));
});

test('the rollout heat is the rollout row of the layers up to the chosen one; factors are reused', () => {
  const a = attention();
  const cache = new RolloutFactors();
  const settings = {mode: 'rollout' as const, split: false, opacity: 0.6, fusion: 'max' as const, discard: 0.2, diff: false};
  const heat = rolloutHeat(cache, a, info, 1, [0, 1], 3, settings);
  const matrix = (l: number, h: number) => Float64Array.from({length: n * n}, (_, c) => weight(a, l, h, Math.floor(c / n), c % n));
  const factors = [0, 1].map((l) => rolloutLayer([matrix(l, 0), matrix(l, 1)], n, {fusion: 'max', discard: 0.2}));
  const row = rolloutRow(factors, n, 3);
  heat.cells.forEach((v, c) => assert.ok(Math.abs(v - row[c + 1]) < 1e-6));
  const first = cache.get(a, 1, [0, 1], 'max', 0.2)[0];
  assert.equal(cache.get(a, 0, [0, 1], 'max', 0.2)[0], first); // same settings: the same factor
  assert.notEqual(cache.get(a, 0, [0], 'max', 0.2)[0], first); // other heads: recomputed
});
