import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {MetricSeries} from '../src/data/api';
import {flagHeads, HEALTH_DEFAULTS, healthSources, headSeries, rankFlags, stepIndex} from '../src/model/health';

/** A series over `steps` of a 1-layer, 3-head model from one function per head. */
function series(steps: number[], heads: ((s: number) => number | null)[]): MetricSeries {
  return {run: 'r', tag: 't', steps, wall_times: steps.map(() => 0), values: steps.map((s) => [heads.map((f) => f(s))])};
}

const steps = [0, 10, 20, 30];
/** The defaults with the growth rule on at 2× (it is off by default). */
const GROWTH = {...HEALTH_DEFAULTS, logitGrowth: 2};

test('the defaults: growth from the first value off, max logit 100, entropy 0.1× its first value or 0.1 nats', () => {
  assert.deepEqual({...HEALTH_DEFAULTS}, {logitGrowth: 0, logitLevel: 100, entropyDrop: 0.1, entropyFloor: 0.1});
  // A healthy head of the demo's run: 0.2 at initialisation, ~57 (~290×) later: not flagged.
  const healthy = series(steps, [(s) => 0.2 + s * 1.9, () => 5, () => 5]);
  assert.deepEqual(flagHeads('run', healthy, 'max_logit', HEALTH_DEFAULTS), []);
});

test('with growth on, a head whose max logit more than doubles is flagged with its first value, value and ratio', () => {
  const logits = series(steps, [(s) => 4 + s * 0.5, () => 5, (s) => 4 + s * 0.1]);
  const flags = flagHeads('run', logits, 'max_logit', GROWTH);
  // head 0: 4 → 19 (4.75×); head 1 stays at 5; head 2: 4 → 7 (1.75×, under 2×).
  assert.equal(flags.length, 1);
  assert.deepEqual(
    {...flags[0]},
    {run: 'run', metric: 'max_logit', layer: 0, head: 0, firstStep: 0, first: 4, step: 30, value: 19, ratio: 4.75, reasons: ['growth'], severity: 4.75 / 2},
  );
});

test('a max logit above the level is flagged even without growth', () => {
  const logits = series(steps, [() => 125, () => 5, () => 99]);
  const flags = flagHeads('run', logits, 'max_logit', HEALTH_DEFAULTS);
  assert.deepEqual(flags.map((f) => [f.head, f.reasons, f.severity]), [[0, ['level'], 125 / 100]]);
  assert.deepEqual(flagHeads('run', logits, 'max_logit', {...HEALTH_DEFAULTS, logitLevel: 0}), []);
});

test('a head whose entropy falls below a tenth of its first value, or under the floor, is flagged', () => {
  const entropy = series(steps, [(s) => 3 - s * 0.0966, (s) => 3 - s * 0.05, (s) => (s === 30 ? 0.05 : 0.08)]);
  const flags = flagHeads('run', entropy, 'attention_entropy', HEALTH_DEFAULTS);
  // head 0: 3 → 0.102 (below 0.3); head 1: 3 → 1.5 (half: a sharpening head, not flagged); head 2
  // sits under 0.1 nats from the start (not a drop, it was always that low; the floor flags it).
  assert.deepEqual(
    flags.map((f) => [f.head, f.reasons, +f.value.toFixed(3)]),
    [
      [0, ['drop'], 0.102],
      [2, ['floor'], 0.05],
    ],
  );
  assert.ok(Math.abs(flags[0].severity - 0.3 / 0.102) < 1e-9);
});

test('heads are judged at the chosen step: before the growth nothing is flagged', () => {
  const logits = series(steps, [(s) => (s >= 20 ? 12 : 4), () => 4, () => 4]);
  assert.deepEqual(flagHeads('run', logits, 'max_logit', GROWTH, 10), []);
  assert.deepEqual(flagHeads('run', logits, 'max_logit', GROWTH, 25).map((f) => [f.head, f.step]), [[0, 20]]);
  // At the first logged step there is nothing to have grown from.
  assert.deepEqual(flagHeads('run', series([0], [() => 12, () => 4, () => 4]), 'max_logit', GROWTH), []);
});

test('missing values are skipped; the first logged value is the first that exists', () => {
  const logits = series(steps, [(s) => (s === 0 ? null : s === 10 ? 3 : 9), () => null, () => 4]);
  const flags = flagHeads('run', logits, 'max_logit', GROWTH);
  assert.deepEqual(flags.map((f) => [f.head, f.firstStep, f.first, f.ratio]), [[0, 10, 3, 3]]);
  assert.deepEqual(headSeries(logits, 0, 0), [null, 3, 9, 9]);
});

test('runs and signals rank together, most severe first', () => {
  const diverging = flagHeads('lr-high', series(steps, [(s) => 4 + s * 10, () => 4, () => 4]), 'max_logit', GROWTH);
  const collapse = flagHeads('lr-high', series(steps, [() => 3, (s) => (s < 30 ? 3 : 0.1), () => 3]), 'attention_entropy', GROWTH);
  const stable = flagHeads('stable', series(steps, [() => 4, () => 4, () => 4]), 'max_logit', GROWTH);
  const ranked = rankFlags([stable, collapse, diverging]);
  // max logit 4 → 304: 76× (severity 38, also above 100); entropy 3 → 0.1: 0.3 / 0.1 = 3.
  assert.deepEqual(ranked.map((f) => [f.run, f.metric, f.head, f.reasons]), [
    ['lr-high', 'max_logit', 0, ['growth', 'level']],
    ['lr-high', 'attention_entropy', 1, ['drop']],
  ]);
});

test('the step index is the last stored step at or before the chosen one', () => {
  assert.equal(stepIndex([0, 10, 20], null), 2);
  assert.equal(stepIndex([0, 10, 20], 15), 1);
  assert.equal(stepIndex([5, 10], 0), 0);
  assert.equal(stepIndex([], 3), -1);
});

test('health sources: the monitor first, then probes that log a max logit', () => {
  const metrics = new Map([
    ['probe', ['distance', 'max_logit']],
    ['attention_health', ['attention_entropy', 'max_logit', 'max_weight', 'null_attention']],
    ['corpus', ['distance']],
  ]);
  assert.deepEqual(healthSources(metrics), ['attention_health', 'probe']);
});
