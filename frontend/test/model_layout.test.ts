import assert from 'node:assert/strict';
import {test} from 'node:test';
import {contentHeight, GAP, HEADER_HEIGHT, layerRange, modelGrid, PAD, visibleLayers} from '../src/views/model/layout';

/** The layers whose rows meet the canvas, by brute force: row l's box in canvas pixels. */
function reference(scrollTop: number, height: number, thumb: number, numLayers: number): number[] {
  const shown: number[] = [];
  for (let l = 0; l < numLayers; l++) {
    const top = HEADER_HEIGHT + PAD + l * (thumb + GAP) - scrollTop;
    if (top + thumb > HEADER_HEIGHT && top < height) shown.push(l);
  }
  return shown;
}

test('the visible layers hold every row that meets the canvas, and at most one more each way', () => {
  for (const thumb of [24, 37, 150]) {
    for (const height of [100, 480, 900]) {
      const max = Math.max(0, contentHeight(32, thumb) - height);
      for (let scrollTop = 0; scrollTop <= max; scrollTop += 7) {
        const range = layerRange(visibleLayers(scrollTop, height, thumb, 32));
        const want = reference(scrollTop, height, thumb, 32);
        for (const l of want) assert.ok(range.includes(l), `layer ${l} at scroll ${scrollTop}, thumb ${thumb}`);
        assert.ok(range.length <= want.length + 2, `range ${range} for ${want}`);
      }
    }
  }
});

test('the layers fetched ahead stay within the model', () => {
  assert.deepEqual(visibleLayers(0, 400, 24, 32, 1, 1), {first: 0, last: 13});
  const bottom = contentHeight(32, 24) - 400;
  assert.deepEqual(visibleLayers(bottom, 400, 24, 32, 1, 1).last, 31);
  assert.deepEqual(visibleLayers(0, 5000, 24, 3, 1, 1), {first: 0, last: 2});
  assert.deepEqual(layerRange({first: 4, last: 6}), [4, 5, 6]);
});

test('32 heads fit a 1,280 px view with the smallest thumbnail and no sideways scroll', () => {
  const {thumb, left} = modelGrid(1280, 32);
  assert.ok(thumb >= 24 && left >= PAD);
  assert.equal(modelGrid(4000, 2).thumb, 150);
});
