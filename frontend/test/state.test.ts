import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {Tags} from '../src/data/api';
import {pluginParams, withPluginParams} from '../src/app/host';
import {compareEndpoints, metricGroup, metricGroups, probeMetrics, resolveSelection, runsWithMetric} from '../src/state/selection';
import {applyPatch, DEFAULT_STATE, plottedHeads, type State} from '../src/state/state';
import {decodeState, encodeState} from '../src/state/url_state';

test('a state survives its URL form', () => {
  const state: State = applyPatch(DEFAULT_STATE, {
    view: 'neuron',
    panel: {run: 'train/a b&c', tag: 'probe', step: 100, example: 2, group: 'cross'},
    focus: {layer: 3, heads: [0, 5], tokens: [4, 7], side: 'to'},
    filters: {pair: 'AB', hide: true, renorm: true, threshold: 0.05, topk: 3},
  });
  assert.deepEqual(decodeState(encodeState(state)), state);
});

test('the default state has an empty URL form, and malformed parameters fall back to defaults', () => {
  assert.deepEqual(encodeState(DEFAULT_STATE), {});
  const state = decodeState({step: '-1', layer: 'x', heads: '1,a', view: 'nope', pair: 'AC', min: '7', tokens: '3,3,1'});
  assert.equal(state.panel.step, null);
  assert.equal(state.focus.layer, 0);
  assert.equal(state.focus.heads, null);
  assert.equal(state.view, 'head');
  assert.equal(state.filters.pair, 'all');
  assert.equal(state.filters.threshold, DEFAULT_STATE.filters.threshold);
  assert.deepEqual(state.focus.tokens, [1, 3]);
});

test('the state lives in TensorBoard\'s hash under p.attention.*, next to TensorBoard\'s own keys', () => {
  const hash = withPluginParams('#attention&smoothing=0.6&p.attention.run=old&p.other.x=1', {run: 'tr ain', step: '5'});
  assert.equal(hash, 'attention&smoothing=0.6&p.other.x=1&p.attention.run=tr%20ain&p.attention.step=5');
  assert.deepEqual(pluginParams('#' + hash), {run: 'tr ain', step: '5'});
  assert.equal(withPluginParams('', {view: 'model'}), 'attention&p.attention.view=model');
});

const tags: Tags = {
  b: {probe: {kind: 'attention', steps: [0, 50, 100]}, 'probe/entropy': {kind: 'metric', steps: [0]}},
  a: {'probe/entropy': {kind: 'metric', steps: [0]}},
  c: {z: {kind: 'attention', steps: [3]}, y: {kind: 'attention', steps: [1, 2]}},
};

test('selection: runs without attention are skipped; defaults are the first run, tag and the newest step', () => {
  const sel = resolveSelection(tags, DEFAULT_STATE)!;
  assert.deepEqual(sel.runs, ['b', 'c']);
  assert.equal(sel.run, 'b');
  assert.deepEqual(sel.tags, ['probe']);
  assert.equal(sel.step, 100);
});

test('selection: a step that is not stored snaps to the nearest one; an unknown tag to the first', () => {
  const sel = resolveSelection(tags, applyPatch(DEFAULT_STATE, {panel: {run: 'c', tag: 'nope', step: 2}}))!;
  assert.equal(sel.tag, 'y');
  assert.equal(sel.step, 2);
  assert.equal(resolveSelection(tags, applyPatch(DEFAULT_STATE, {panel: {run: 'b', step: 70}}))!.step, 50);
  assert.equal(resolveSelection({}, DEFAULT_STATE), null);
});

test('the new views\' state survives its URL form: metric, runs, smoothing, axis, picks, rank, analysis and compare', () => {
  const state: State = applyPatch(DEFAULT_STATE, {
    view: 'compare',
    metrics: {metric: 'pos_from/NOUN', runs: ['run,with,commas', 'b/c'], smoothing: 0.85, xlog: true, picks: [[3, 1], [0, 7]], rank: 'previous'},
    analysis: {pos: 'VERB', section: 'pos_from'},
    compare: {a: {run: 'checkpoint-0', step: 0}, b: {run: 'checkpoint-800', step: null}, mode: 'changes', delta: 'entropy'},
  });
  const params = encodeState(state);
  assert.equal(params.picks, '3.1,0.7');
  assert.equal(params.a_run, 'checkpoint-0');
  assert.equal(params.a_step, '0');
  assert.equal(params.b_step, undefined);
  assert.deepEqual(decodeState(params), state);
  const bad = decodeState({smooth: '2', picks: '1.x,2.3,2.3', rank: 'zzz', section: 'nope', compare: 'x', xaxis: 'lin', pos: 'a<b'});
  assert.equal(bad.metrics.smoothing, DEFAULT_STATE.metrics.smoothing);
  assert.deepEqual(bad.metrics.picks, [[2, 3]]);
  assert.equal(bad.metrics.rank, 'low');
  assert.equal(bad.analysis.section, 'overview');
  assert.equal(bad.compare.mode, 'diff');
  assert.equal(bad.metrics.xlog, false);
  assert.equal(bad.analysis.pos, 'NOUN');
});

test('a change of state merges into the groups it names and leaves the others as they were', () => {
  const state = applyPatch(DEFAULT_STATE, {focus: {layer: 2}, compare: {mode: 'changes'}});
  assert.deepEqual(state.focus, {...DEFAULT_STATE.focus, layer: 2});
  assert.equal(state.compare.mode, 'changes');
  assert.equal(state.compare.a, DEFAULT_STATE.compare.a);
  assert.equal(state.filters, DEFAULT_STATE.filters);
  assert.equal(DEFAULT_STATE.focus.layer, 0);
});

test('plotted heads: the picks, else the shown heads of the selected layer', () => {
  assert.deepEqual(plottedHeads(applyPatch(DEFAULT_STATE, {metrics: {picks: [[1, 2]]}, focus: {layer: 3, heads: [0]}})), [[1, 2]]);
  assert.deepEqual(plottedHeads(applyPatch(DEFAULT_STATE, {focus: {layer: 3, heads: [0, 4]}})), [[3, 0], [3, 4]]);
  assert.deepEqual(plottedHeads(DEFAULT_STATE), []);
});

const runsTags: Tags = {
  train: {
    probe: {kind: 'attention', steps: [0, 25, 50]},
    'probe/distance': {kind: 'metric', probe: 'probe', metric: 'distance', steps: [0, 25, 50]},
    'probe/pos/NOUN': {kind: 'metric', probe: 'probe', metric: 'pos/NOUN', steps: [0, 25, 50]},
  },
  'checkpoint-0': {probe: {kind: 'attention', steps: [0]}, 'probe/distance': {kind: 'metric', probe: 'probe', metric: 'distance', steps: [0]}},
  'checkpoint-800': {probe: {kind: 'attention', steps: [800]}},
  other: {corpus: {kind: 'attention', steps: [0]}},
};

test('metrics of a probe and the runs that logged one', () => {
  assert.deepEqual(probeMetrics(runsTags, 'train', 'probe'), ['distance', 'pos/NOUN']);
  const grouped: Tags = {t5: {probe: {kind: 'attention', steps: [0]}, 'probe/entropy': {kind: 'metric', probe: 'probe', metric: 'entropy', steps: [0]}, 'probe/cross/diagonal_alignment': {kind: 'metric', probe: 'probe', metric: 'diagonal_alignment', steps: [0]}}};
  assert.deepEqual(probeMetrics(grouped, 't5', 'probe'), ['entropy']); // the first group's only
  assert.deepEqual(runsWithMetric(runsTags, 'probe', 'distance'), ['checkpoint-0', 'train']);
});

test('metrics per attention group: the first group\'s are <probe>/<metric>, the others\' <probe>/<group>/<metric>', () => {
  const metric = (metric: string, group: string) => ({kind: 'metric' as const, probe: 'probe', metric, group, steps: [0]});
  const t5: Tags = {
    t5: {
      probe: {kind: 'attention', steps: [0]},
      'probe/cross/diagonal_alignment': metric('diagonal_alignment', 'cross'),
      'probe/cross/entropy': metric('entropy', 'cross'),
      'probe/decoder/entropy': metric('entropy', 'decoder'),
      'probe/entropy': metric('entropy', 'encoder'),
      'probe/distance': metric('distance', 'encoder'),
    },
    other: {probe: {kind: 'attention', steps: [0]}, 'probe/cross/entropy': metric('entropy', 'cross')},
  };
  assert.deepEqual(metricGroups(t5, 't5', 'probe'), ['encoder', 'cross', 'decoder']); // the first, then by name
  const order = ['encoder', 'decoder', 'cross'];
  const groups = metricGroups(t5, 't5', 'probe', order);
  assert.deepEqual(groups, order); // as the example lists them
  assert.deepEqual(metricGroups(runsTags, 'train', 'probe'), []); // no group named
  assert.equal(metricGroup(groups, null), null);
  assert.equal(metricGroup(groups, 'encoder'), null); // the first group's tags carry no group
  assert.equal(metricGroup(groups, 'cross'), 'cross');
  assert.equal(metricGroup(groups, 'self'), null); // not logged: the first
  assert.deepEqual(probeMetrics(t5, 't5', 'probe'), ['distance', 'entropy']);
  assert.deepEqual(probeMetrics(t5, 't5', 'probe', 'cross'), ['diagonal_alignment', 'entropy']);
  assert.deepEqual(probeMetrics(t5, 't5', 'probe', 'decoder'), ['entropy']);
  assert.deepEqual(runsWithMetric(t5, 'probe', 'entropy', 'cross'), ['other', 't5']);
  assert.deepEqual(runsWithMetric(t5, 'probe', 'entropy'), ['t5']);
});

test('compare: A defaults to the panel run\'s first step, B to the panel\'s step; a chosen run starts at its first (A) or newest (B) step', () => {
  const panel = applyPatch(DEFAULT_STATE, {panel: {run: 'train', step: 25}});
  let {runs, a, b} = compareEndpoints(runsTags, panel, resolveSelection(runsTags, panel)!);
  assert.deepEqual(runs, ['checkpoint-0', 'checkpoint-800', 'train']); // runs with the panel's tag
  assert.deepEqual([a.run, a.step, b.run, b.step], ['train', 0, 'train', 25]);
  const state = applyPatch(DEFAULT_STATE, {panel: {run: 'train'}, compare: {a: {run: 'checkpoint-0', step: null}, b: {run: 'checkpoint-800', step: null}}});
  ({a, b} = compareEndpoints(runsTags, state, resolveSelection(runsTags, state)!));
  assert.deepEqual([a.run, a.step, b.run, b.step], ['checkpoint-0', 0, 'checkpoint-800', 800]);
  const unknown = applyPatch(DEFAULT_STATE, {panel: {run: 'train'}, compare: {b: {run: 'other', step: 7}}});
  ({b} = compareEndpoints(runsTags, unknown, resolveSelection(runsTags, unknown)!));
  assert.deepEqual([b.run, b.step], ['train', 0]); // `other` lacks the tag: the panel's run, nearest step
});

test('selection: the metric views offer every step of the probe; the examples come from the nearest attention step', () => {
  const tags: Tags = {
    r: {
      probe: {kind: 'attention', steps: [0, 100]},
      'probe/distance': {kind: 'metric', probe: 'probe', metric: 'distance', steps: [0, 50, 100, 150]},
      'probe/exemplars': {kind: 'exemplars', probe: 'probe', steps: [0, 100]},
    },
  };
  const state = applyPatch(DEFAULT_STATE, {panel: {step: 60}});
  const forExamples = resolveSelection(tags, state)!;
  assert.deepEqual([forExamples.steps, forExamples.step, forExamples.exampleStep], [[0, 100], 100, 100]);
  const forMetrics = resolveSelection(tags, state, true)!;
  assert.deepEqual([forMetrics.steps, forMetrics.step, forMetrics.exampleStep], [[0, 50, 100, 150], 50, 0]);
  assert.equal(resolveSelection(tags, DEFAULT_STATE, true)!.step, 150);
});

test('selection: the metric views also offer a probe that logged metrics alone (the training monitor); it has no examples', () => {
  const health = (metric: string) => ({kind: 'metric' as const, probe: 'attention_health', metric, steps: [0, 10, 20]});
  const tags: Tags = {
    monitored: {'attention_health/max_logit': health('max_logit'), 'attention_health/attention_entropy': health('attention_entropy')},
    probed: {probe: {kind: 'attention', steps: [0, 100]}},
  };
  assert.equal(resolveSelection({monitored: tags.monitored}, DEFAULT_STATE), null); // no attention: nothing for the head view
  const state = applyPatch(DEFAULT_STATE, {panel: {run: 'monitored', tag: 'attention_health', step: 12}});
  const sel = resolveSelection(tags, state, true)!;
  assert.deepEqual([sel.runs, sel.run, sel.tags, sel.tag, sel.steps, sel.step, sel.hasExamples], [['monitored', 'probed'], 'monitored', ['attention_health'], 'attention_health', [0, 10, 20], 10, false]);
  // The example views fall back to a run with attention.
  const forExamples = resolveSelection(tags, state)!;
  assert.deepEqual([forExamples.run, forExamples.tag, forExamples.hasExamples], ['probed', 'probe', true]);
});
