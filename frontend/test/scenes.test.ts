// The views' pure parts: what each view asks for and what it draws, from a state and data.

import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {ExampleInfo, MetricSeries, ProbeMetrics, Tags} from '../src/data/api';
import type {DataReader, Loaded, Request} from '../src/data/cache';
import * as requests from '../src/data/requests';
import {resolveSelection} from '../src/state/selection';
import {applyPatch, DEFAULT_STATE, type StatePatch} from '../src/state/state';
import {bannerOf, changeRows, compareNeeds, comparePlan, metricChanges, movedChanges} from '../src/views/compare/scene';
import {exampleNeeds, layerNeeds, panelExample} from '../src/views/shared/example';
import {metricRanking, metricsPlan, metricsScene, previousRanking, seriesStats} from '../src/views/metrics/scene';
import type {ViewModel} from '../src/views/shared/view';

const CROSS = (metric: string) => ({kind: 'metric' as const, probe: 'probe', metric, group: 'cross', steps: [0, 100]});
const TAGS: Tags = {
  train: {
    'probe/cross/entropy': CROSS('entropy'),
    'probe/cross/diagonal_alignment': CROSS('diagonal_alignment'),
    probe: {kind: 'attention', steps: [0, 50, 100]},
    'probe/distance': {kind: 'metric', probe: 'probe', metric: 'distance', group: 'encoder', steps: [0, 50, 100]},
    'probe/previous_token': {kind: 'metric', probe: 'probe', metric: 'previous_token', steps: [0, 100]},
    'probe/pos/NOUN': {kind: 'metric', probe: 'probe', metric: 'pos/NOUN', steps: [0, 50, 100]},
  },
  ckpt: {
    probe: {kind: 'attention', steps: [100]},
    'probe/cross/diagonal_alignment': CROSS('diagonal_alignment'),
    'probe/distance': {kind: 'metric', probe: 'probe', metric: 'distance', steps: [100]},
  },
};

/** A data reader holding some answers; everything else is loading. */
function reader(answers: [Request<unknown>, unknown][]): DataReader {
  const ready = new Map(answers.map(([r, v]) => [r.key, v]));
  return {get: <T>(r: Request<T>): Loaded<T> => (ready.has(r.key) ? {state: 'ready', value: ready.get(r.key) as T} : {state: 'loading'})};
}

function model(patch: StatePatch, data: DataReader = reader([])): ViewModel {
  const state = applyPatch(applyPatch(DEFAULT_STATE, {panel: {run: 'train'}}), patch);
  return {state, tags: TAGS, selection: resolveSelection(TAGS, state, true)!, data};
}

function example(index: number, tokens = ['a', 'b', 'c']): ExampleInfo {
  return {index, tokens, num_layers: 1, num_heads: 2, num_tokens: tokens.length, causal: true, encoding: 'dense', has_qk: false, segments: null};
}

const series = (steps: number[], values: number[][][]): MetricSeries => ({run: 'train', tag: 'probe/distance', steps, wall_times: steps, values});

test('an example view asks for the step’s list and, alongside it, the example the state names', () => {
  const m = model({panel: {example: 7}});
  const [list, weights] = exampleNeeds(m);
  assert.equal(list.key, requests.examples('train', 'probe', 100).key);
  assert.equal(weights.key, requests.attention({run: 'train', tag: 'probe', step: 100, example: 7}).key);
  // Once the list says example 7 does not exist, the first example is fetched instead.
  const listed = model({panel: {example: 7}}, reader([[list, {run: 'train', tag: 'probe', step: 100, wall_time: 0, examples: [example(2), example(3)]}]]));
  assert.equal(exampleNeeds(listed)[1].key, requests.attention({run: 'train', tag: 'probe', step: 100, example: 2}).key);
  assert.equal(panelExample([example(2), example(3)], 3), 3);
});

test('a list of only some examples (an export): their index fields, not their places, name the requests', () => {
  const list = requests.examples('train', 'probe', 100);
  const listed = (wanted: number) => model({panel: {example: wanted}}, reader([[list, {run: 'train', tag: 'probe', step: 100, wall_time: 0, examples: [example(2), example(5)]}]]));
  const layer0 = (example: number) => requests.attentionLayer({run: 'train', tag: 'probe', step: 100, example}, 0, 1).key;
  assert.equal(layerNeeds(listed(0), () => [0])[1].key, layer0(2)); // not there: the first listed
  assert.equal(layerNeeds(listed(5), () => [0])[1].key, layer0(5));
  assert.equal(layerNeeds(listed(1), () => [0])[1].key, layer0(2)); // position 1 is no example
  assert.equal(comparePlan(listed(0)).example, 2); // Compare takes the panel's example too
});

test('the Metrics view plots the state’s metric for the panel’s run and the overlaid runs that logged it', () => {
  const state = applyPatch(DEFAULT_STATE, {panel: {run: 'train'}, metrics: {metric: 'nonsense', runs: ['ckpt', 'missing']}});
  const plan = metricsPlan(TAGS, state, resolveSelection(TAGS, state, true)!)!;
  assert.equal(plan.metric, 'distance'); // unknown metric: the default
  assert.deepEqual(plan.metrics, ['distance', 'previous_token', 'pos/NOUN']);
  assert.deepEqual(plan.runs, ['train', 'ckpt']);
  assert.equal(plan.tag, 'probe/distance');
});

test('the Metrics scene takes the step nearest the state’s and ranks heads by value or change', () => {
  const s = series([0, 50, 100], [[[1, 2]], [[1, 5]], [[0.5, 9]]]);
  const scene = metricsScene(applyPatch(DEFAULT_STATE, {panel: {step: 60}}), 'probe', null, 'distance', [{run: 'train', series: s}], (x) => seriesStats(x, 'distance'));
  assert.equal(scene.step, 50);
  assert.deepEqual(scene.grid, [[1, 5]]);
  assert.deepEqual(scene.runs[0].stats.all, [1.5, 3, 4.75]);
  const low = metricRanking(scene, 'low');
  assert.deepEqual(low.rows.map((r) => r.head), [[0, 0], [0, 1]]);
  const change = metricRanking(scene, 'change');
  assert.equal(change.title, 'Heads by change, step 0 → 50');
  assert.deepEqual(change.rows[0].head, [0, 1]);
  assert.equal(change.rows[0].cells[1].text, '+3.000');
});

test('the previous-token ranking reads the stored metric at the nearest step it was logged', () => {
  const s = series([0, 50, 100], [[[1, 2]], [[1, 5]], [[0.5, 9]]]);
  const scene = metricsScene(applyPatch(DEFAULT_STATE, {panel: {step: 50}}), 'probe', null, 'distance', [{run: 'train', series: s}], (x) => seriesStats(x, 'distance'));
  assert.equal(previousRanking(scene, null).message, 'Reading the stored previous_token metric…');
  const stored = {...series([0, 100], [[[0.1, 0.2]], [[0.9, 0.3]]]), tag: 'probe/previous_token'};
  const ranking = previousRanking(scene, stored);
  assert.equal(ranking.title, 'Previous-token heads, step 0'); // 50 is as near 0 as 100: the first
  assert.deepEqual(ranking.rows.map((r) => [r.head, r.cells[0].text]), [[[0, 1], '20.0%'], [[0, 0], '10.0%']]);
});

test('Compare asks for A’s and B’s lists, their weights once both list the example, and what Changes ranks by', () => {
  const plan = comparePlan(model({compare: {a: {run: null, step: 0}, b: {run: 'ckpt', step: null}, mode: 'changes'}}));
  assert.deepEqual([plan.a.run, plan.a.step, plan.b.run, plan.b.step], ['train', 0, 'ckpt', 100]);
  assert.deepEqual(plan.common, ['distance']);
  const lists = [requests.examples('train', 'probe', 0), requests.examples('ckpt', 'probe', 100)];
  const moved = requests.compareMoved({tag: 'probe', runA: 'train', stepA: 0, runB: 'ckpt', stepB: 100});
  assert.deepEqual(compareNeeds(plan, 'changes', reader([])).map((r) => r.key), [lists[0].key, lists[1].key, moved.key]);
  const both = reader(lists.map((l) => [l, {examples: [example(0)]}]));
  const keys = compareNeeds(plan, 'diff', both).map((r) => r.key);
  assert.ok(keys.includes(requests.attention({run: 'ckpt', tag: 'probe', step: 100, example: 0}).key));
  const byMetric = comparePlan(model({compare: {a: {run: null, step: 0}, b: {run: 'ckpt', step: null}, mode: 'changes', delta: 'distance'}}));
  assert.ok(compareNeeds(byMetric, 'changes', reader([])).some((r) => r.key === requests.probeMetrics('ckpt', 'probe', 100).key));
});

test('the banner names differing tokens and rules out a difference of different lengths', () => {
  const same = bannerOf(example(0), example(0), 0);
  assert.deepEqual(same.lines, []);
  const longer = bannerOf(example(0), example(0, ['a', 'x', 'c', 'd']), 0);
  assert.deepEqual(longer.differences, ['#1: A "b" · B "x"', '#3: A (none) · B "d"']);
  assert.match(longer.blocked.diff!, /A has 3 tokens and B 4/);
  assert.equal(longer.blocked.heads, null);
});

test('changes rank heads by the attention moved as served, or by a metric’s B − A', () => {
  assert.match(movedChanges({moved: [[0.1]], used: 0, skipped: 3}) as string, /No probe input has the same tokens/);
  const moved = movedChanges({moved: [[0.1, 0.4]], used: 2, skipped: 1});
  assert.ok(typeof moved !== 'string');
  assert.equal(moved.note, 'mean of 2 probe inputs; 1 whose tokens differ between A and B left out');
  assert.deepEqual(changeRows(moved).rows.map((r) => [r.head, r.cells[2].text]), [[[0, 1], '40.0%'], [[0, 0], '10.0%']]);
  const pa: ProbeMetrics = {run: 'train', probe: 'probe', step: 0, metrics: {distance: [[1, 2]]}};
  const pb: ProbeMetrics = {run: 'ckpt', probe: 'probe', step: 100, metrics: {distance: [[4, 1.5]]}};
  const metric = metricChanges('distance', pa, pb);
  assert.deepEqual(metric.grid, [[3, -0.5]]);
  assert.deepEqual(changeRows(metric).rows.map((r) => r.head), [[0, 0], [0, 1]]);
});

/** An encoder–decoder example: encoder (3 × 3), decoder (2 × 2) and cross (2 × 3) attention. */
function groupedExample(index: number): ExampleInfo {
  const group = (name: string, tokens: string[], keys: string[]) => ({
    name, num_layers: 1, num_heads: 2, num_tokens: tokens.length, num_key_tokens: keys.length, tokens, key_tokens: keys,
    causal: name === 'decoder', encoding: 'dense' as const, has_qk: false,
  });
  const [src, tgt] = [['a', 'b', 'c'], ['x', 'y']];
  return {...example(index, src), groups: [group('encoder', src, src), group('decoder', tgt, tgt), group('cross', tgt, src)]};
}

test('Metrics follows the group: its metrics, its tags and the picker\'s order from the example', () => {
  const cross = metricsPlan(TAGS, model({panel: {group: 'cross'}}).state, model({panel: {group: 'cross'}}).selection, ['encoder', 'decoder', 'cross']);
  assert.deepEqual(cross?.groups, ['encoder', 'cross']); // the groups with metrics, the first first
  assert.equal(cross?.group, 'cross');
  assert.deepEqual(cross?.metrics, ['entropy', 'diagonal_alignment']);
  assert.equal(cross?.tag, 'probe/cross/entropy');
  assert.deepEqual(cross?.available, ['train']);
  const diagonal = metricsPlan(TAGS, model({panel: {group: 'cross'}, metrics: {metric: 'diagonal_alignment'}}).state, model({}).selection);
  assert.deepEqual([diagonal?.tag, diagonal?.available], ['probe/cross/diagonal_alignment', ['ckpt', 'train']]);
  const first = metricsPlan(TAGS, model({panel: {group: 'encoder'}}).state, model({}).selection);
  assert.deepEqual([first?.group, first?.tag], [null, 'probe/distance']); // the first group: <probe>/<metric>
});

test('Compare follows the group once A\'s list names it: /attention, /compare and /metrics with group=', () => {
  const patch: StatePatch = {panel: {group: 'cross'}, compare: {a: {run: null, step: 0}, b: {run: 'ckpt', step: null}, mode: 'changes'}};
  const lists = [requests.examples('train', 'probe', 0), requests.examples('ckpt', 'probe', 100)];
  const before = comparePlan(model(patch));
  assert.equal(before.groupKnown, false);
  assert.deepEqual(compareNeeds(before, 'changes', reader([])).map((r) => r.key), [lists[0].key, lists[1].key]); // no /compare yet
  const data = reader(lists.map((l) => [l, {examples: [groupedExample(0)]}]));
  const plan = comparePlan(model(patch, data));
  assert.deepEqual([plan.group, plan.metricGroup, plan.common], ['cross', 'cross', ['diagonal_alignment']]);
  const keys = compareNeeds(plan, 'changes', data).map((r) => r.key);
  assert.ok(keys.includes(requests.compareMoved({tag: 'probe', runA: 'train', stepA: 0, runB: 'ckpt', stepB: 100, group: 'cross'}).key));
  assert.ok(keys.includes(requests.attention({run: 'ckpt', tag: 'probe', step: 100, example: 0, group: 'cross'}).key));
  const byMetric = comparePlan(model({...patch, compare: {...patch.compare, delta: 'diagonal_alignment'}}, data));
  assert.ok(compareNeeds(byMetric, 'changes', data).some((r) => r.key === requests.probeMetrics('ckpt', 'probe', 100, 'cross').key));
  const first = comparePlan(model({...patch, panel: {group: 'encoder'}}, data));
  assert.deepEqual([first.group, first.metricGroup], [null, null]); // the first group: the routes' default
  assert.ok(compareNeeds(first, 'changes', data).some((r) => r.key === requests.compareMoved({tag: 'probe', runA: 'train', stepA: 0, runB: 'ckpt', stepB: 100}).key));
});

test('the banner compares the group\'s tokens; cross attention has no square difference', () => {
  const [a, b] = [groupedExample(0), groupedExample(0)];
  assert.equal(bannerOf(a, b, 0, 'decoder').blocked.diff, null);
  assert.match(bannerOf(a, b, 0, 'cross').blocked.diff!, /cross attention's queries \(2 tokens\) attend over other keys \(3\)/);
  assert.equal(bannerOf(a, b, 0, 'cross').blocked.heads, null);
  const other = groupedExample(0);
  other.groups![2] = {...other.groups![2], key_tokens: ['a', 'q', 'c']};
  assert.match(bannerOf(a, other, 0, 'cross').lines.join(' '), /key tokens of example #0 differ at 1 position /);
});
