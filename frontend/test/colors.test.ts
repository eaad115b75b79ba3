import assert from 'node:assert/strict';
import {test} from 'node:test';
import {lab} from 'd3-color';
import {divergingColor, headColors, tintTable} from '../src/model/colors';

function minDistance(colors: string[]): number {
  let min = Infinity;
  for (let a = 0; a < colors.length; a++) {
    for (let b = a + 1; b < colors.length; b++) {
      const x = lab(colors[a]);
      const y = lab(colors[b]);
      min = Math.min(min, Math.hypot(x.l - y.l, x.a - y.a, x.b - y.b));
    }
  }
  return min;
}

for (const heads of [1, 9, 12, 16, 32, 64]) {
  test(`${heads} heads get ${heads} distinct colours`, () => {
    const colors = headColors(heads);
    assert.equal(colors.length, heads);
    assert.equal(new Set(colors).size, heads);
    for (const c of colors) assert.match(c, /^#[0-9a-f]{6}$/);
  });
}

test('16 head colours are far apart (CIELAB distance of at least 20 between any two)', () => {
  assert.ok(minDistance(headColors(16)) >= 20, String(minDistance(headColors(16))));
});

test('32 head colours stay distinguishable (CIELAB distance of at least 12)', () => {
  assert.ok(minDistance(headColors(32)) >= 12, String(minDistance(headColors(32))));
});

test('a head keeps its colour whatever view draws it (same count, same colours)', () => {
  assert.deepEqual(headColors(12), headColors(12));
});

test('weight tints go from white (weight 0) to the head colour (weight 1)', () => {
  const table = tintTable('#ff0000');
  assert.deepEqual([...table.subarray(0, 4)], [255, 255, 255, 255]);
  assert.deepEqual([...table.subarray(255 * 4, 256 * 4)], [255, 0, 0, 255]);
});

test('the diverging scale is white at 0 and opposite hues at the ends', () => {
  const color = divergingColor(2);
  assert.notEqual(color(-2), color(2));
  assert.equal(color(5), color(2)); // clamped
  const mid = lab(color(0));
  assert.ok(mid.l > 90);
});
