// The Generation view's pure parts: the row that wrote a token, heat rows and columns, the
// layer × head summary, two decodings aligned, the text laid out, and its URL state.

import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {Examples, Generation, Tags} from '../src/data/api';
import type {Attention} from '../src/data/decode';
import {alignGenerations, attendedBy, clampToken, generationProblem, heatHeads, heatRow, promptShare, rowGrid, tokenOfRow, topKeys, writerRow} from '../src/model/generation';
import {probabilityScale} from '../src/model/metrics';
import {resolveSelection} from '../src/state/selection';
import {applyPatch, DEFAULT_STATE} from '../src/state/state';
import {decodeState, encodeState} from '../src/state/url_state';
import {decodingOf, flowText, otherEndpoint, samePrompt, sourceOf, sourceRequests, textTokens} from '../src/views/generation/scene';
import {close} from './fixtures';

/** A dense attention of `layers` × `heads`, head (l, h)'s rows given by rows(l, h). */
function attentionOf(layers: number, heads: number, n: number, rows: (l: number, h: number) => number[][]): Attention {
  const codes: number[] = [];
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) codes.push(...rows(l, h).flat().map((w) => Math.round(Math.sqrt(w) * 255)));
  const tokens = Array.from({length: n}, (_, i) => `t${i}`);
  return {
    header: {tokens, num_layers: layers, num_heads: heads, num_tokens: n, causal: true, quantization: 'sqrt-u8', encoding: 'dense'},
    tokens,
    keyTokens: tokens,
    numLayers: layers,
    numHeads: heads,
    numTokens: n,
    numKeyTokens: n,
    encoding: 'dense',
    codes: Uint8Array.from(codes),
    keys: null,
    topK: 0,
    firstLayer: 0,
    heldLayers: layers,
  };
}

// 4 queries (prompt of 2, then 3 generated tokens of which 2 were read back), causal rows.
const ROWS_A = [[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25, 0.25, 0.5, 0], [0, 0.25, 0.25, 0.5]];
const ROWS_B = [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0.5, 0, 0, 0.5]];
const weights = attentionOf(2, 2, 4, (l, h) => (l === 0 && h === 0 ? ROWS_A : ROWS_B));
const layers = (l: number) => (l < 2 ? weights : null);

test('generated token t was written by query row P − 1 + t; a prompt row before the last wrote nothing', () => {
  assert.equal(writerRow(5, 0), 4);
  assert.equal(writerRow(5, 3), 7);
  assert.equal(tokenOfRow(5, 7), 3);
  assert.equal(tokenOfRow(5, 3), null);
  assert.equal(clampToken(9, 4), 3);
  assert.equal(clampToken(-1, 4), 0);
});

test('the heat row is one head’s row, a layer’s mean or every head’s mean; null while a layer loads', () => {
  assert.deepEqual(heatHeads('head', 1, 0, 2, 2), [[1, 0]]);
  assert.deepEqual(heatHeads('layer', 1, 0, 2, 2), [[1, 0], [1, 1]]);
  assert.deepEqual(heatHeads('heads', 1, 0, 2, 2), [[1, 0], [1, 1]]);
  assert.equal(heatHeads('all', 0, 0, 2, 2).length, 4);
  const one = heatRow(layers, [[0, 0]], 2, 4)!;
  assert.ok([...one].every((w, j) => close(w, ROWS_A[2][j], 5e-3)), String([...one]));
  const mean = heatRow(layers, heatHeads('layer', 0, 0, 2, 2), 3, 4)!;
  assert.ok([...mean].every((w, j) => close(w, (ROWS_A[3][j] + ROWS_B[3][j]) / 2, 5e-3)), String([...mean]));
  assert.equal(heatRow((l) => (l === 0 ? weights : null), heatHeads('all', 0, 0, 2, 2), 3, 4), null);
});

test('who attended to a token: each generated token’s row at that key, none for rows before it', () => {
  // P = 2, 3 generated tokens: rows 1, 2, 3 wrote them.
  const paid = attendedBy(layers, [[0, 0]], 1, 2, 3, 4)!;
  assert.deepEqual(paid.map((v) => (v === null ? null : Math.round(v * 100) / 100)), [0.5, 0.25, 0.25]);
  const later = attendedBy(layers, [[0, 0]], 3, 2, 3, 4)!;
  assert.equal(later[0], null);
  assert.equal(later[1], null);
  assert.ok(close(later[2]!, 0.5, 5e-3));
});

test('the layer × head grid: the row’s share on the prompt, or its largest weight; null for layers not loaded', () => {
  const share = rowGrid(layers, 3, 2, 3, 2, 'prompt');
  assert.ok(close(share[0][0]!, 0.25, 5e-3) && close(share[0][1]!, 0.5, 5e-3), JSON.stringify(share));
  assert.deepEqual(share[2], [null, null]);
  const max = rowGrid(layers, 2, 2, 2, 2, 'max');
  assert.ok(close(max[0][0]!, 0.5, 5e-3) && close(max[1][1]!, 1, 5e-3), JSON.stringify(max));
  assert.equal(promptShare([0, 0], 1), null);
  assert.deepEqual(topKeys([0.1, 0.6, 0, 0.3], 2), [{index: 1, weight: 0.6}, {index: 3, weight: 0.3}]);
});

test('two decodings of one prompt: the first difference is the divergence, and tokens shared later line up', () => {
  const same = alignGenerations([1, 2, 3], [1, 2, 3]);
  assert.equal(same.divergence, null);
  assert.equal(same.differing, 0);
  // B inserts one token after diverging, then continues as A.
  const a = alignGenerations([1, 2, 7, 4, 5], [1, 2, 8, 9, 4, 5]);
  assert.equal(a.divergence, 2);
  assert.deepEqual(a.pairs.map((p) => [p.a, p.b, p.same]), [
    [0, 0, true], [1, 1, true], [2, 2, false], [null, 3, false], [3, 4, true], [4, 5, true],
  ]);
  assert.equal(a.differing, 2);
  // One stops early.
  const short = alignGenerations(['x', 'y'], ['x']);
  assert.equal(short.divergence, 1);
  assert.deepEqual(short.pairs.map((p) => [p.a, p.b]), [[0, 0], [1, null]]);
  // Diverging at once.
  assert.equal(alignGenerations([5], [6]).divergence, 0);
});

test('probability shading: a sure token is near white, an unsure one dark orange', () => {
  const scale = probabilityScale();
  const lightness = (c: string) => parseInt(c.slice(1, 3), 16) + parseInt(c.slice(3, 5), 16) + parseInt(c.slice(5, 7), 16);
  assert.ok(lightness(scale.color(1)) > lightness(scale.color(0.5)) && lightness(scale.color(0.5)) > lightness(scale.color(0.05)));
  assert.deepEqual(scale.domain, [0, 1]);
});

const GENERATION: Generation = {
  group: 'self', prompt_length: 2, prompt: 'Hi there', tokens: ['Ġfriend', '!', '<|endoftext|>'], ids: [10, 11, 12],
  probs: [0.5, 0.9, 0.2], top: [[['Ġfriend', 10, 0.5]], [['!', 11, 0.9]], [['<|endoftext|>', 12, 0.2]]], stop: 'eos',
};

function examples(generation: Generation | null, queries = ['Hi', 'Ġthere', 'Ġfriend', '!']): Examples {
  const group = {name: 'self', num_layers: 2, num_heads: 2, num_tokens: queries.length, num_key_tokens: queries.length, tokens: queries, key_tokens: queries, causal: true, encoding: 'causal' as const, has_qk: false};
  return {
    run: 'train', tag: 'gen', step: 0, wall_time: 0,
    examples: [{index: 0, tokens: queries, num_layers: 2, num_heads: 2, num_tokens: queries.length, causal: true, encoding: 'causal', has_qk: false, segments: null, groups: [group], generation}],
  };
}

test('a decoding: its group’s rows, checked against the generation; the text is the prompt then every generated token', () => {
  const d = decodingOf(examples(GENERATION), 'train', 'gen', 0, 0)!;
  assert.equal(d.problem, null);
  assert.deepEqual(d.key, {run: 'train', tag: 'gen', step: 0, example: 0});
  assert.equal(d.shape.numLayers, 2);
  const text = textTokens(d);
  assert.deepEqual(text.map((x) => [x.label, x.generated]), [['Hi', null], ['there', null], ['friend', 0], ['!', 1], ['<|endoftext|>', 2]]);
  assert.equal(decodingOf(examples(null), 'train', 'gen', 0, 0), null);
  assert.match(decodingOf(examples(GENERATION, ['Hi', 'Ġthere']), 'train', 'gen', 0, 0)!.problem!, /2 query tokens, not the prompt's 2 and 2 generated/);
  assert.match(decodingOf(examples({...GENERATION, group: 'decoder'}), 'train', 'gen', 0, 0)!.problem!, /group "decoder"/);
  assert.equal(generationProblem({...GENERATION, probs: [1]}, null) !== null, true);
  const other = decodingOf(examples({...GENERATION, tokens: ['Ġyou', '<|endoftext|>', '!']}), 'train', 'gen', 0, 0)!;
  assert.ok(samePrompt(d, other));
});

test('text flows into lines: a token that does not fit starts the next line', () => {
  const flow = flowText([30, 30, 30, 50], [false, true, true, true], 100, 2, 5);
  assert.deepEqual([...flow.x], [0, 37, 0, 37]);
  assert.deepEqual([...flow.line], [0, 0, 1, 1]);
  assert.equal(flow.lines, 2);
  assert.equal(flowText([], [], 100, 2, 5).lines, 0);
  // A token wider than a line gets a line of its own.
  assert.deepEqual([...flowText([10, 500, 10], [false, false, false], 100, 2, 5).line], [0, 1, 2]);
});

test('the decoding compared: the Compare view’s A, or the newest other step while A is the panel’s own', () => {
  const tags: Tags = {train: {gen: {kind: 'attention', steps: [0, 50, 100]}}, other: {gen: {kind: 'attention', steps: [7]}}};
  const at = (patch: Parameters<typeof applyPatch>[1]) => {
    const state = applyPatch(DEFAULT_STATE, patch);
    return otherEndpoint(tags, state, resolveSelection(tags, state)!).endpoint;
  };
  assert.deepEqual(at({panel: {run: 'train'}}), {run: 'train', steps: [0, 50, 100], step: 0});
  assert.equal(at({panel: {run: 'train', step: 0}})!.step, 100);
  assert.equal(at({panel: {run: 'train'}, compare: {a: {run: 'other', step: null}}})!.run, 'other');
  const lone: Tags = {train: {gen: {kind: 'attention', steps: [3]}}};
  assert.equal(otherEndpoint(lone, DEFAULT_STATE, resolveSelection(lone, DEFAULT_STATE)!).endpoint, null);
});

test('the Generation view’s state survives its URL form; defaults stay out of it', () => {
  const state = applyPatch(DEFAULT_STATE, {view: 'generation', generation: {token: 7, heat: 'head', grid: 'max'}});
  const params = encodeState(state);
  assert.deepEqual([params.view, params.gtoken, params.gheat, params.ggrid], ['generation', '7', 'head', 'max']);
  assert.equal(decodeState({gheat: 'heads'}).generation.heat, 'heads');
  assert.deepEqual(decodeState(params).generation, state.generation);
  assert.deepEqual(encodeState(applyPatch(DEFAULT_STATE, {view: 'generation'})), {view: 'generation'});
  assert.deepEqual(decodeState({gtoken: '-1', gheat: 'x', ggrid: '<'}).generation, DEFAULT_STATE.generation);
});

test('an encoder–decoder’s decoding: the decoder group’s rows, and the cross group as the source they attended to', () => {
  const group = (name: string, queries: string[], keys: string[], causal: boolean) =>
    ({name, num_layers: 2, num_heads: 2, num_tokens: queries.length, num_key_tokens: keys.length, tokens: queries, key_tokens: keys, causal, encoding: 'dense' as const, has_qk: false});
  const source = ['▁Le', '▁chat', '.'];
  const decoder = ['<pad>', '▁The'];
  const list: Examples = {
    run: 'r', tag: 'gen', step: 3, wall_time: 0,
    examples: [{
      index: 4, tokens: source, num_layers: 2, num_heads: 2, num_tokens: 3, causal: false, encoding: 'dense', has_qk: false, segments: null,
      groups: [group('encoder', source, source, false), group('decoder', decoder, decoder, true), group('cross', decoder, source, false)],
      generation: {...GENERATION, group: 'decoder', prompt_length: 1, tokens: ['▁The', '▁cat'], ids: [1, 2], probs: [0.5, 0.5], top: [[], []]},
    }],
  };
  const d = decodingOf(list, 'r', 'gen', 3, 4)!;
  assert.equal(d.problem, null);
  assert.deepEqual(d.key, {run: 'r', tag: 'gen', step: 3, example: 4, group: 'decoder'});
  assert.deepEqual(d.shape.tokens, decoder);
  const s = sourceOf(d)!;
  assert.deepEqual(s.key, {run: 'r', tag: 'gen', step: 3, example: 4, group: 'cross'});
  assert.deepEqual(s.shape.keyTokens, source);
  assert.equal(sourceRequests(s, DEFAULT_STATE).length, 2); // every layer for the mean of every head
  assert.equal(sourceRequests(s, applyPatch(DEFAULT_STATE, {generation: {heat: 'layer'}, focus: {layer: 1}})).length, 1);
  // A decoder-only decoding has no source.
  assert.equal(sourceOf(decodingOf(examples(GENERATION), 'train', 'gen', 0, 0)!), null);
});
