import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {MetricSeries, Tags} from '../src/data/api';
import type {DataReader, Loaded, Request} from '../src/data/cache';
import {healthPlan, healthRows} from '../src/views/health/plan';
import {HEALTH_DEFAULTS} from '../src/model/health';

const steps = [0, 100, 200];
const metricInfo = (probe: string, metric: string) => ({kind: 'metric' as const, steps, probe, metric});

// Two runs of the monitor (one also has a probe that logs max_logit) and a run with a probe only.
const tags: Tags = {
  stable: {'attention_health/max_logit': metricInfo('attention_health', 'max_logit'), 'attention_health/attention_entropy': metricInfo('attention_health', 'attention_entropy')},
  diverging: {
    'attention_health/max_logit': metricInfo('attention_health', 'max_logit'),
    'attention_health/attention_entropy': metricInfo('attention_health', 'attention_entropy'),
    'probe/max_logit': metricInfo('probe', 'max_logit'),
    'probe/distance': metricInfo('probe', 'distance'),
  },
  other: {'corpus/distance': metricInfo('corpus', 'distance')},
};

function series(run: string, tag: string, head: (s: number) => number): MetricSeries {
  return {run, tag, steps, wall_times: steps.map(() => 0), values: steps.map((s) => [[4, head(s)]])};
}

/** A reader that answers every request from `answers` (by route tag and run). */
function reader(answers: Record<string, MetricSeries>): DataReader {
  return {
    get<T>(request: Request<T>): Loaded<T> {
      const [, run, tag] = JSON.parse(request.key) as string[];
      const value = answers[`${run} ${tag}`];
      return value ? {state: 'ready', value: value as T} : {state: 'loading'};
    },
  };
}

test('the monitor is the default source; runs are those that logged it; a probe with max_logit is a source too', () => {
  const plan = healthPlan(tags, null);
  assert.deepEqual(plan.sources, ['attention_health', 'probe']);
  assert.equal(plan.source, 'attention_health');
  assert.deepEqual(plan.runs, ['diverging', 'stable']);
  assert.equal(plan.series.length, 4);
  const probe = healthPlan(tags, 'probe');
  assert.deepEqual([probe.source, probe.runs, probe.series.map((s) => s.metric)], ['probe', ['diverging'], ['max_logit']]);
  assert.equal(healthPlan({other: tags.other}, null).source, null);
});

test('the diverging head is flagged; its sparkline overlays the same head of every run, its own run on top', () => {
  const answers = {
    'stable attention_health/max_logit': series('stable', 'attention_health/max_logit', () => 4),
    'stable attention_health/attention_entropy': series('stable', 'attention_health/attention_entropy', () => 3),
    'diverging attention_health/max_logit': series('diverging', 'attention_health/max_logit', (s) => 4 + s * 1.8),
    'diverging attention_health/attention_entropy': series('diverging', 'attention_health/attention_entropy', () => 3),
  };
  const color = (run: string) => (run === 'stable' ? 'blue' : 'red');
  const rows = healthRows(healthPlan(tags, null), reader(answers), HEALTH_DEFAULTS, color);
  assert.ok(Array.isArray(rows));
  assert.deepEqual(rows.map((r) => [r.flag.run, r.flag.metric, r.flag.layer, r.flag.head, r.flag.reasons]), [['diverging', 'max_logit', 0, 1, ['level']]]);
  assert.deepEqual(rows[0].series.map((s) => [s.color, s.width, [...s.values]]), [
    ['blue', 1, [4, 4, 4]],
    ['red', 2, [4, 184, 364]],
  ]);
  assert.equal(rows[0].threshold, 100); // the level, the rule that flagged it
  // With the growth rule on, its line is drawn: 2 × the first value.
  const growth = healthRows(healthPlan(tags, null), reader(answers), {...HEALTH_DEFAULTS, logitGrowth: 2}, color);
  assert.ok(Array.isArray(growth));
  assert.deepEqual([growth[0].flag.reasons, growth[0].threshold], [['growth', 'level'], 8]);
});

test('while a series loads the panel says so', () => {
  const rows = healthRows(healthPlan(tags, null), reader({}), HEALTH_DEFAULTS, () => 'black');
  assert.deepEqual(rows, {kind: 'loading', text: 'Loading the health metrics…'});
});
