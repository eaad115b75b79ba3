import assert from 'node:assert/strict';
import {test} from 'node:test';
import {
  distancePoints,
  fitImage,
  heatDifference,
  heatPixels,
  heatPosition,
  heatScale,
  imageMismatch,
  maxPixelDistance,
  meanRows,
  patchAt,
  patchBox,
  patchHeat,
  patchToken,
  tileBoxes,
  tokenName,
  tokenPatch,
  type ImageInfo,
} from '../src/model/image';

// A ViT with a CLS and a distillation token over a 2 × 3 patch grid of 16 px patches.
const info: ImageInfo = {grid: [2, 3], patch_size: [16, 16], prefix_tokens: 2, prefix_names: ['CLS', 'DIST']};

test('tokens are the prefix tokens, then the patches row by row', () => {
  assert.equal(patchToken(info, {row: 0, col: 0}), 2);
  assert.equal(patchToken(info, {row: 1, col: 2}), 7);
  assert.deepEqual(tokenPatch(info, 5), {row: 1, col: 0});
  assert.equal(tokenPatch(info, 1), null);
  assert.equal(tokenPatch(info, 8), null);
  assert.deepEqual([0, 1, 2, 7].map((t) => tokenName(info, t)), ['CLS', 'DIST', 'r0c0', 'r1c2']);
});

test('an example whose token count does not fit its image says so', () => {
  assert.equal(imageMismatch(info, 8), null);
  assert.match(imageMismatch(info, 9)!, /9 tokens, but its image has 2 prefix tokens and 2 × 3 patches \(8\)/);
});

test('a weight row splits into heat per patch cell and the prefix tokens', () => {
  const row = [0.3, 0.1, 0.05, 0.1, 0.15, 0.2, 0.0, 0.1];
  const heat = patchHeat(row, info);
  assert.deepEqual([...heat.prefix].map((v) => +v.toFixed(6)), [0.3, 0.1]);
  assert.deepEqual([...heat.cells].map((v) => +v.toFixed(6)), [0.05, 0.1, 0.15, 0.2, 0, 0.1]);
  assert.throws(() => patchHeat(row.slice(0, 7), info), /7 weights for 2 prefix tokens and 6 patches/);
});

test('the mean of heads and B − A are taken cell by cell', () => {
  assert.deepEqual([...meanRows([[0.2, 0.8], [0.4, 0.6]])].map((v) => +v.toFixed(6)), [0.3, 0.7]);
  const a = patchHeat([0.5, 0, 0.1, 0.1, 0.1, 0.1, 0.1, 0], info);
  const b = patchHeat([0.2, 0, 0.1, 0.4, 0.1, 0.1, 0.1, 0], info);
  const d = heatDifference(a, b);
  assert.deepEqual([...d.cells].map((v) => +v.toFixed(6)), [0, 0.3, 0, 0, 0, 0]);
  assert.deepEqual([...d.prefix].map((v) => +v.toFixed(6)), [-0.3, 0]);
});

test('heat colours: sequential up to the largest cell, diverging around no change', () => {
  const heat = patchHeat([0, 0, 0, 0.25, 0.5, 0, 0, 0], info);
  const seq = heatScale([heat], false);
  assert.equal(seq.max, 0.5);
  assert.equal(heatPosition(seq, 0.25), 0.5);
  const div = heatScale([heatDifference(heat, patchHeat([0, 0, 0.2, 0, 0.5, 0, 0, 0], info))], true);
  assert.deepEqual([div.min, div.max], [-0.25, 0.25]);
  // A rollout's scale starts at its smallest cell: its weights all sit well above 0.
  const rollout = heatScale([patchHeat([0, 0, 0.1, 0.2, 0.3, 0.1, 0.1, 0.1], info)], false, false);
  assert.deepEqual([rollout.min, rollout.max, heatPosition(rollout, 0.2)].map((v) => +v.toFixed(6)), [0.1, 0.3, 0.5]);
  assert.equal(heatPosition(div, -0.25), 0);
  assert.equal(heatPosition(div, 0), 0.5);
  // One RGBA pixel per patch, at the chosen opacity; the hottest patch is the brightest.
  const pixels = heatPixels(heat, seq, 0.6);
  assert.equal(pixels.length, 6 * 4);
  assert.ok([...Array(6).keys()].every((c) => pixels[c * 4 + 3] === 153));
  const brightness = (c: number) => pixels[c * 4] + pixels[c * 4 + 1] + pixels[c * 4 + 2];
  assert.ok(brightness(2) > brightness(1) && brightness(1) > brightness(0));
  assert.equal(heatScale([patchHeat(new Array(8).fill(0), info)], false).max, 1);
});

test('the image fits its box; a point maps to the patch under it', () => {
  const image = fitImage({x: 0, y: 0, w: 300, h: 100}, 48, 32);
  assert.deepEqual(image, {x: 75, y: 0, w: 150, h: 100});
  assert.deepEqual(patchAt(image, info.grid, 75, 0), {row: 0, col: 0});
  assert.deepEqual(patchAt(image, info.grid, 224.9, 99.9), {row: 1, col: 2});
  assert.deepEqual(patchAt(image, info.grid, 176, 51), {row: 1, col: 2});
  assert.equal(patchAt(image, info.grid, 74, 50), null);
  assert.deepEqual(patchBox(image, info.grid, {row: 1, col: 1}), {x: 125, y: 50, w: 50, h: 50});
});

test('overlays tile as large as they fit, each below its label', () => {
  const boxes = tileBoxes({x: 0, y: 0, w: 420, h: 300}, 4, 1, 20, 10);
  assert.equal(boxes.length, 4);
  // 2 × 2: (300 − 10) / 2 − 20 = 125 px high and wide; 4 × 1 would give (420 − 30) / 4 = 97.5.
  assert.equal(boxes[0].w, 125);
  assert.equal(boxes[1].x - boxes[0].x, 135);
  assert.equal(boxes[2].y - boxes[0].y, 155);
  assert.equal(boxes[0].y, (300 - 2 * 145 - 10) / 2 + 20);
});

test('the pixel-distance scatter has one dot per head and layer; its bound is the corner diagonal', () => {
  const points = distancePoints([[10, 20], [null, 40]]);
  assert.deepEqual(points, [
    {layer: 0, head: 0, value: 10},
    {layer: 0, head: 1, value: 20},
    {layer: 1, head: 1, value: 40},
  ]);
  assert.equal(maxPixelDistance(info), Math.hypot(16, 32));
});
