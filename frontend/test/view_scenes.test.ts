// The pure parts of the head, neuron, analysis and exemplars views.

import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {ExampleInfo, Exemplars} from '../src/data/api';
import {applyPatch, DEFAULT_STATE} from '../src/state/state';
import {analysisCards} from '../src/views/analysis/scene';
import {bestScores, exemplarRows, layoutTokens} from '../src/views/exemplars/scene';
import {computeArcs} from '../src/views/head/arcs';
import {clickTokens, focusedTokens, focusedWeights, inspection, weightFilter} from '../src/views/head/scene';
import {attentionOf, fixture} from './fixtures';

const info = (n: number, segments: number[] | null = null): ExampleInfo => ({
  index: 0,
  tokens: Array.from({length: n}, (_, i) => `t${i}`),
  num_layers: 1,
  num_heads: 1,
  num_tokens: n,
  causal: false,
  encoding: 'dense',
  has_qk: false,
  segments,
});

test('the head view’s filters come from the state, clamped to the example', () => {
  const a = attentionOf([[1, 0, 0], [0, 1, 0], [0, 0, 1]], 3);
  const f = weightFilter(applyPatch(DEFAULT_STATE, {focus: {layer: 5, heads: [0]}, filters: {pair: 'AB', hide: true, threshold: 0.2}}), a, info(3, [1]).segments);
  assert.equal(f.layer, 0);
  assert.deepEqual(f.heads, [0]);
  assert.deepEqual(f.queries, {start: 0, end: 1});
  assert.deepEqual(f.filter.keys, {start: 1, end: 3});
  assert.deepEqual([...f.filter.hidden!], [1, 0, 0]); // the first token
  assert.deepEqual(f.prune, {threshold: 0.2, topK: 0});
});

test('locked tokens win over the hovered one; the focused weights and the inspector follow them', () => {
  const a = attentionOf([[1, 0, 0], [0.25, 0.75, 0], [0, 0.5, 0.5]], 3);
  const f = weightFilter(DEFAULT_STATE, a, null);
  assert.deepEqual(focusedTokens({...DEFAULT_STATE.focus, tokens: [2, 9]}, {side: 'to', index: 0}, a), {side: 'from', tokens: [2], locked: true});
  const hovered = focusedTokens(DEFAULT_STATE.focus, {side: 'to', index: 1}, a)!;
  assert.deepEqual(hovered, {side: 'to', tokens: [1], locked: false});
  const arcs = computeArcs(a, 0, f.heads, f.filter, f.queries, f.prune);
  const {stripes, arcs: focused} = focusedWeights(a, f, hovered, arcs.kept);
  assert.deepEqual([...stripes[0]].map((v) => +v.toFixed(2)), [0, 0.75, 0.5]); // who attends to token 1
  assert.deepEqual(focused.map((x) => [x.from, x.to]), [[1, 1], [2, 1]]);
  const said = inspection(a, f, {side: 'from', tokens: [1], locked: true});
  assert.equal(said.tokens, '#1 "t1"');
  assert.equal(said.verb, 'attends to');
  assert.deepEqual(said.top.map((e) => e.index), [1, 0]);
});

test('cross attention: decoder queries on the left, encoder keys on the right, each column its own length', () => {
  // 2 decoder queries over 4 encoder keys
  const a = attentionOf([[0.5, 0.5, 0, 0], [0, 0, 0.25, 0.75]], 2);
  const f = weightFilter(applyPatch(DEFAULT_STATE, {filters: {pair: 'AB', hide: true}}), a, [1]);
  assert.deepEqual([f.queries, f.filter.keys], [{start: 0, end: 2}, {start: 0, end: 4}]); // no sentence pair
  assert.deepEqual([...f.filter.hidden!], [1, 0, 0, 0]); // the first key
  // Key 3 can be locked though there are only 2 queries; query 3 cannot.
  assert.deepEqual(focusedTokens({...DEFAULT_STATE.focus, side: 'to', tokens: [3]}, null, a), {side: 'to', tokens: [3], locked: true});
  assert.equal(focusedTokens({...DEFAULT_STATE.focus, side: 'from', tokens: [3]}, null, a), null);
  const plain = weightFilter(DEFAULT_STATE, a, null);
  const arcs = computeArcs(a, 0, plain.heads, plain.filter, plain.queries, plain.prune);
  assert.deepEqual([...arcs.from].map((i, t) => [i, arcs.to[t]]), [[0, 0], [0, 1], [1, 2], [1, 3]]);
  const fromQuery = focusedWeights(a, plain, {side: 'from', tokens: [1], locked: true}, arcs.kept);
  assert.deepEqual([...fromQuery.stripes[0]].map((w) => +w.toFixed(2)), [0, 0, 0.25, 0.75]); // over the 4 keys (quantised)
  const toKey = focusedWeights(a, plain, {side: 'to', tokens: [1], locked: true}, arcs.kept);
  assert.deepEqual([...toKey.stripes[0]].map((w) => +w.toFixed(2)), [0.5, 0]); // over the 2 queries
  const said = inspection(a, plain, {side: 'to', tokens: [3], locked: true});
  assert.equal(said.tokens, '#3 "k3"');
  assert.deepEqual(said.top.map((e) => e.index), [1]);
});

test('a click locks a token, again unlocks it, shift adds or removes one, off the tokens clears', () => {
  const none = DEFAULT_STATE.focus;
  assert.deepEqual(clickTokens(none, {side: 'from', index: 3}, false), {tokens: [3], side: 'from'});
  const one = {...none, tokens: [3]};
  assert.deepEqual(clickTokens(one, {side: 'from', index: 3}, false), {tokens: []});
  assert.deepEqual(clickTokens(one, {side: 'from', index: 1}, true), {tokens: [1, 3], side: 'from'});
  assert.deepEqual(clickTokens({...none, tokens: [1, 3]}, {side: 'from', index: 3}, true), {tokens: [1], side: 'from'});
  assert.deepEqual(clickTokens(one, {side: 'to', index: 1}, true), {tokens: [1], side: 'to'});
  assert.deepEqual(clickTokens(one, null, false), {tokens: []});
  assert.equal(clickTokens(none, null, false), null);
});

test('the analysis overview shows the paper’s metrics, the part of speech chosen, then the scatters', () => {
  const grid = [[1, 2], [3, 4]];
  const metrics = {distance: grid, entropy: [[1, 1], [2, 2.5]], null_attention: grid, previous_token: grid, 'pos/NOUN': grid, 'pos_from/NOUN': grid, 'pos/VERB': grid};
  const {cards, height} = analysisCards(metrics, 'overview', 'NOUN', 900);
  assert.deepEqual(cards.map((c) => c.metric ?? c.kind), ['distance', 'entropy', 'null_attention', 'pos/NOUN', 'pos_from/NOUN', 'scatter']);
  assert.equal(cards[5].subtitle, 'r = 0.95 over 4 heads');
  assert.equal(cards[0].box.y, cards[1].box.y); // side by side at 900 px
  assert.ok(height > cards[cards.length - 1].box.y);
  const pos = analysisCards(metrics, 'pos', 'NOUN', 900).cards;
  assert.deepEqual(pos.map((c) => c.metric ?? c.kind), ['tags', 'pos/NOUN', 'pos/VERB']);
});

const table: Exemplars = {
  run: 'r',
  tag: 'probe/exemplars',
  step: 0,
  num_layers: 1,
  num_heads: 2,
  top_k: 2,
  inputs: [{tokens: ['a', 'b'], example: 0}, {tokens: ['c', 'd', 'e'], text: 'c d e', example: null}],
  heads: [[[{input: 1, score: 0.9, from: 2, to: 1}, {input: 0, score: 0.5, from: 1, to: 0}], []]],
};

test('exemplar rows list a head’s inputs best first; the head map holds each head’s best score', () => {
  assert.deepEqual(bestScores(table), [[0.9, null]]);
  const rows = exemplarRows(table, 0, 0, 16, 96);
  assert.deepEqual(rows.map((r) => [r.input, r.tokens.join(' '), r.example, r.top]), [[1, 'c d e', null, 16], [0, 'a b', 0, 112]]);
  assert.deepEqual(exemplarRows(table, 0, 1, 16, 96), []);
});

test('an input too long for its row keeps a window around its arc, the rest elided', () => {
  const tokens = Array.from({length: 40}, (_, i) => `w${i}`);
  const row = {...exemplarRows(table, 0, 0, 0, 96)[0], tokens, from: 20, to: 18};
  const measure = (text: string) => text.length * 10; // px
  const all = layoutTokens({...row, tokens: tokens.slice(0, 5), from: 3, to: 1}, 1000, 0, measure);
  assert.deepEqual(all.map((it) => it.index), [0, 1, 2, 3, 4]);
  const window = layoutTokens(row, 200, 0, measure);
  const shown = window.map((it) => it.index);
  assert.equal(shown[0], null); // elided before
  assert.equal(shown[shown.length - 1], null); // and after
  assert.ok(shown.includes(18) && shown.includes(19) && shown.includes(20));
  assert.ok(window[window.length - 1].x + window[window.length - 1].w <= 200 + 1e-9);
});

test('the neuron scene recomputes a query’s softmax and says whether it matches the stored weights', async () => {
  const {decodeQueryKey} = await import('../src/data/decode_qk');
  const {neuronScene, neuronCaption, AGREEMENT} = await import('../src/views/neuron/scene');
  const {buffer, expected} = fixture<{causal_softmax: number[][][][]}>('qk');
  const qk = decodeQueryKey(buffer);
  const n = qk.numTokens;
  const stored = attentionOf(expected.causal_softmax[0][0], n);
  const causal = {...stored, header: {...stored.header, causal: true}};
  const scene = neuronScene(qk, causal, 0, 0, n - 1);
  assert.equal(scene.query, n - 1);
  assert.ok(scene.difference <= 0.004, `${scene.difference}`); // the stored weights' quantisation
  assert.match(neuronCaption(scene), /softmax = stored/);
  const uniform = attentionOf(Array.from({length: n}, (_, i) => Array.from({length: n}, (_, j) => (j <= i ? 1 / (i + 1) : 0))), n);
  const off = neuronScene(qk, {...uniform, header: {...uniform.header, causal: true}}, 0, 0, n - 1);
  assert.ok(off.difference > AGREEMENT);
  assert.match(neuronCaption(off), /differs from stored/);
});

test('the neuron scene recomputes cross attention: queries of one sequence over the keys of another', async () => {
  const {decodeQueryKey, keyVectors, queryVectors} = await import('../src/data/decode_qk');
  const {neuronScene, neuronCaption} = await import('../src/views/neuron/scene');
  const qk = decodeQueryKey(fixture('qk').buffer);
  const {numTokens: nq, headDim: d, numKvHeads: kv} = qk;
  const m = nq - 3; // fewer keys than queries, as a source sentence of another length
  const key = new Float32Array(kv * m * d);
  for (let k = 0; k < kv; k++) key.set(qk.key.subarray(k * nq * d, k * nq * d + m * d), k * m * d); // layer 0's first m keys
  const cross: typeof qk = {...qk, numLayers: 1, numKeyTokens: m, key};
  // The reference: softmax over the m keys of scaling * q . k, no causal mask (another sequence).
  const q = queryVectors(qk, 0, 0);
  const keys = keyVectors(qk, 0, 0);
  const reference = Array.from({length: nq}, (_, i) => {
    const scores = Array.from({length: m}, (_, j) => qk.scaling[0] * Array.from({length: d}, (_, t) => q[i * d + t] * keys[j * d + t]).reduce((a, b) => a + b));
    const max = Math.max(...scores);
    const e = scores.map((s) => Math.exp(s - max));
    const sum = e.reduce((a, b) => a + b);
    return e.map((v) => v / sum);
  });
  const stored = attentionOf(reference, nq); // nq queries x m keys
  assert.equal(stored.numKeyTokens, m);
  const scene = neuronScene(cross, stored, 0, 0, 2);
  assert.equal(scene.rows.softmax.length, m);
  assert.ok(scene.rows.masks.every((mask) => mask === null)); // query 2 sees every key, even those after it
  for (let j = 0; j < m; j++) assert.ok(Math.abs(scene.rows.softmax[j] - reference[2][j]) < 1e-5);
  assert.ok(scene.difference <= 0.004, `${scene.difference}`);
  assert.match(neuronCaption(scene), /softmax = stored/);
});
