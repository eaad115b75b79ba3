import assert from 'node:assert/strict';
import {test} from 'node:test';
import {RunColors, TENSORBOARD_RUN_PALETTE} from '../src/model/colors';
import {gridDelta, layerMeans, metricScale, missingText, pearson, rankHeads, smooth, sortMetrics, weightDeltaScale} from '../src/model/metrics';

test('smoothing is TensorBoard\'s debiased moving average; NaN passes through; a constant series is left alone', () => {
  const w = 0.6;
  const values = [1, 2, null, 4];
  // TensorBoard: last = last * w + (1 - w) * v; smoothed = last / (1 - w^count)
  const l1 = 0.4 * 1;
  const l2 = l1 * w + 0.4 * 2;
  const l3 = l2 * w + 0.4 * 4;
  const out = smooth(values, w);
  assert.ok(Math.abs(out[0]! - l1 / (1 - w)) < 1e-12);
  assert.ok(Math.abs(out[1]! - l2 / (1 - w ** 2)) < 1e-12);
  assert.equal(out[2], null);
  assert.ok(Math.abs(out[3]! - l3 / (1 - w ** 3)) < 1e-12);
  assert.deepEqual(smooth([3, 3, 3], 0.9), [3, 3, 3]);
  assert.deepEqual(smooth([1, 5], 0), [1, 5]);
});

test('layer means skip missing values; the correlation needs three pairs', () => {
  assert.deepEqual(layerMeans([[1, 3, null], [null, null, null]]), [2, null]);
  const {r, n} = pearson([1, 2, 3, null], [2, 4, 6.5, 1]);
  assert.equal(n, 3);
  assert.ok(r! > 0.99);
  assert.equal(pearson([1, 2], [1, 2]).r, null);
});

test('heads rank by value, or by change since a baseline; missing values are left out', () => {
  const grid = [[0.5, 2], [null, 1]];
  assert.deepEqual(rankHeads(grid, 'low').map((r) => r.head), [[0, 0], [1, 1], [0, 1]]);
  assert.deepEqual(rankHeads(grid, 'high').map((r) => r.head), [[0, 1], [1, 1], [0, 0]]);
  const ranked = rankHeads(grid, 'change', [[0.4, 5], [1, 1]]);
  assert.deepEqual(ranked.map((r) => [r.head, r.change]), [[[0, 1], -3], [[0, 0], 0.09999999999999998], [[1, 1], 0]]);
  assert.deepEqual(gridDelta([[1, null]], [[3, 2]]), [[2, null]]);
});

test('colour scales: shares from 0, distances over their range, NaN ignored; signed deltas centred on 0', () => {
  const share = metricScale('pos/NOUN', [0.1, null, 0.34, NaN]);
  assert.equal(share.domain[0], 0);
  assert.ok(share.domain[1] >= 0.34 && share.domain[1] <= 0.4);
  const distance = metricScale('distance', [1.5, 6]);
  assert.deepEqual(distance.domain, [1.5, 6]);
  assert.notEqual(distance.color(1.5), distance.color(6));
  const delta = weightDeltaScale(0.8);
  assert.equal(delta.position(0), 0.5);
  assert.ok(delta.position(0.05) > 0.6); // a small change is visible (square-root scale)
  assert.equal(delta.color(-0.8), delta.ramp(0));
  assert.equal(missingText('pos/X'), 'no tokens of this tag');
  assert.deepEqual(sortMetrics(['pos_from/DET', 'pos/NOUN', 'entropy', 'distance']), ['distance', 'entropy', 'pos/NOUN', 'pos_from/DET']);
});

test('run colours follow TensorBoard: its run list order, then runs as they appear, 7 colours round', () => {
  const colors = new RunColors();
  colors.add(['b', 'a']);
  assert.equal(colors.color('b'), TENSORBOARD_RUN_PALETTE[0]);
  assert.equal(colors.color('a'), TENSORBOARD_RUN_PALETTE[1]);
  assert.equal(colors.color('new'), TENSORBOARD_RUN_PALETTE[2]);
  colors.add(['b', 'a', 'c', 'd', 'e', 'f', 'g']);
  assert.equal(colors.color('g'), TENSORBOARD_RUN_PALETTE[0]); // the 8th run
});
