import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {addResidual, discardLowest, fuseHeads, kthSmallest, rolloutLayer, rolloutMatrix, rolloutRow, type Matrix} from '../src/model/rollout';

const m = (...values: number[]) => Float64Array.from(values);

/** A random row-stochastic n × n matrix (a head's softmax weights). */
function softmaxMatrix(n: number, random: () => number): Matrix {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let j = 0; j < n; j++) sum += out[i * n + j] = Math.exp(3 * random());
    for (let j = 0; j < n; j++) out[i * n + j] /= sum;
  }
  return out;
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** The paper's recursion written out plainly: Ã_1 = A_1, Ã_l = A_l · Ã_{l−1} (n³ products). */
function referenceRollout(layers: number[][][]): number[][] {
  const mul = (a: number[][], b: number[][]) => a.map((row) => b[0].map((_, j) => row.reduce((s, v, k) => s + v * b[k][j], 0)));
  return layers.slice(1).reduce((acc, a) => mul(a, acc), layers[0]);
}

function toRows(matrix: ArrayLike<number>, n: number): number[][] {
  return Array.from({length: n}, (_, i) => Array.from({length: n}, (_, j) => matrix[i * n + j]));
}

test('head fusion takes the mean, largest or smallest weight cell by cell', () => {
  const heads = [m(0.2, 0.8, 0.6, 0.4), m(0.6, 0.4, 0.0, 1.0)];
  assert.deepEqual([...fuseHeads(heads, 'mean')].map((v) => +v.toFixed(6)), [0.4, 0.6, 0.3, 0.7]);
  assert.deepEqual([...fuseHeads(heads, 'max')].map((v) => +v.toFixed(6)), [0.6, 0.8, 0.6, 1]);
  assert.deepEqual([...fuseHeads(heads, 'min')].map((v) => +v.toFixed(6)), [0.2, 0.4, 0, 0.4]);
  assert.throws(() => fuseHeads([], 'mean'), /no heads/);
});

test('discarding zeroes the given share of the smallest weights, earliest first among ties', () => {
  assert.deepEqual([...discardLowest(m(0.4, 0.1, 0.3, 0.2), 0.5)].map((v) => +v.toFixed(6)), [0.4, 0, 0.3, 0]);
  assert.deepEqual([...discardLowest(m(0.5, 0.5, 0.5, 0.5), 0.25)].map((v) => +v.toFixed(6)), [0, 0.5, 0.5, 0.5]);
  assert.deepEqual([...discardLowest(m(0.4, 0.1), 0)].map((v) => +v.toFixed(6)), [0.4, 0.1]);
});

test('selection finds the k-th smallest value as a sort would, ties included', () => {
  const random = seeded(3);
  for (const size of [1, 2, 7, 100, 1001]) {
    // Values from a few levels: many ties.
    const values = Float64Array.from({length: size}, () => Math.floor(random() * 5) / 4);
    const sorted = Float64Array.from(values).sort();
    for (const k of [0, Math.floor(size / 3), size - 1]) assert.equal(kthSmallest(Float64Array.from(values), k), sorted[k], `${size} ${k}`);
  }
});

test('the residual is added as ½·W + ½·I and each row renormalised', () => {
  // Row 0 sums to 1: ½·W + ½·I keeps it stochastic. Row 1 lost weight to the discard: renormalised.
  const a = addResidual(m(0.0, 1.0, 0.2, 0.0), 2);
  assert.deepEqual([...a].map((v) => +v.toFixed(6)), [0.5, 0.5, +(0.1 / 0.6).toFixed(6), +(0.5 / 0.6).toFixed(6)]);
});

test('rollout of a token that attends only to the other: the residual keeps half at home', () => {
  const swap = m(0, 1, 1, 0);
  const layer = rolloutLayer([swap], 2, {fusion: 'mean', discard: 0});
  assert.deepEqual([...rolloutRow([layer], 2, 0)], [0.5, 0.5]);
  assert.deepEqual([...rolloutRow([layer, layer, layer], 2, 1)], [0.5, 0.5]);
});

test('rollout rows equal the paper recursion A_L · … · A_1 computed plainly, and stay stochastic', () => {
  const random = seeded(7);
  const n = 6;
  const numLayers = 4;
  for (const fusion of ['mean', 'max', 'min'] as const) {
    for (const discard of [0, 0.3, 0.9]) {
      const factors = Array.from({length: numLayers}, () =>
        rolloutLayer([softmaxMatrix(n, random), softmaxMatrix(n, random), softmaxMatrix(n, random)], n, {fusion, discard}),
      );
      const expected = referenceRollout(factors.map((f) => toRows(f, n)));
      const actual = toRows(rolloutMatrix(factors, n), n);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) assert.ok(Math.abs(actual[i][j] - expected[i][j]) < 1e-6, `${fusion} ${discard} [${i}][${j}]`);
        assert.ok(Math.abs(actual[i].reduce((s, v) => s + v, 0) - 1) < 1e-6);
      }
    }
  }
});

test('rollout refuses a query outside the tokens', () => {
  assert.throws(() => rolloutRow([m(1)], 1, 1), /query 1 is not a token of 1/);
});

interface RolloutFixture {
  shape: [number, number, number, number];
  attention: number[][][][];
  cases: {head_fusion: 'mean' | 'max' | 'min'; discard_ratio: number; heads: number[] | null; discarded: number; rollout: number[][][]}[];
}

test('rollout equals the Python reference (tb_attention.vision.rollout) through every layer, for every fusion and discard ratio', () => {
  const file = path.join(process.env.TBA_FIXTURES ?? path.join(process.cwd(), 'test', 'fixtures'), 'rollout.json');
  const fixture = JSON.parse(fs.readFileSync(file, 'utf8')) as RolloutFixture;
  const [numLayers, numHeads, n] = fixture.shape;
  assert.equal(fixture.cases.length, 6);
  for (const c of fixture.cases) {
    const heads = c.heads ?? [...Array(numHeads).keys()];
    const factors = fixture.attention.map((layer) => rolloutLayer(heads.map((h) => Float64Array.from(layer[h].flat())), n, {fusion: c.head_fusion, discard: c.discard_ratio}));
    for (let l = 0; l < numLayers; l++) {
      for (let q = 0; q < n; q++) {
        const row = rolloutRow(factors.slice(0, l + 1), n, q);
        for (let j = 0; j < n; j++) {
          const expected = c.rollout[l][q][j];
          assert.ok(Math.abs(row[j] - expected) < 1e-9, `${c.head_fusion} discard ${c.discard_ratio} heads ${c.heads}: layer ${l} [${q}][${j}] ${row[j]} vs ${expected}`);
        }
      }
    }
  }
});
