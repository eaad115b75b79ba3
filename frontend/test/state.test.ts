import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {Tags} from '../src/api';
import {pluginParams, withPluginParams} from '../src/host';
import {DEFAULT_STATE, decodeState, encodeState, resolveSelection, type State} from '../src/state';

test('a state survives its URL form', () => {
  const state: State = {
    ...DEFAULT_STATE,
    run: 'train/a b&c',
    tag: 'probe',
    step: 100,
    example: 2,
    view: 'neuron',
    layer: 3,
    heads: [0, 5],
    tokens: [4, 7],
    side: 'to',
    pair: 'AB',
    hide: true,
    renorm: true,
    threshold: 0.05,
    topk: 3,
  };
  assert.deepEqual(decodeState(encodeState(state)), state);
});

test('the default state has an empty URL form, and malformed parameters fall back to defaults', () => {
  assert.deepEqual(encodeState(DEFAULT_STATE), {});
  const state = decodeState({step: '-1', layer: 'x', heads: '1,a', view: 'nope', pair: 'AC', min: '7', tokens: '3,3,1'});
  assert.equal(state.step, null);
  assert.equal(state.layer, 0);
  assert.equal(state.heads, null);
  assert.equal(state.view, 'head');
  assert.equal(state.pair, 'all');
  assert.equal(state.threshold, DEFAULT_STATE.threshold);
  assert.deepEqual(state.tokens, [1, 3]);
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
  const sel = resolveSelection(tags, {...DEFAULT_STATE, run: 'c', tag: 'nope', step: 2})!;
  assert.equal(sel.tag, 'y');
  assert.equal(sel.step, 2);
  assert.equal(resolveSelection(tags, {...DEFAULT_STATE, run: 'b', step: 70})!.step, 50);
  assert.equal(resolveSelection({}, DEFAULT_STATE), null);
});
