// What the Generation view draws, as pure functions of the state and the data: the decoding of the
// panel's example and its requests, the decoding it is compared with, and the text laid out in lines.

import type {ExampleInfo, ExampleKey, Examples, Generation, Tags} from '../../data/api';
import {valueOf, type AnyRequest, type DataReader, type Request} from '../../data/cache';
import type {Attention} from '../../data/decode';
import * as requests from '../../data/requests';
import {generationProblem} from '../../model/generation';
import {readingPieces} from '../../model/tokens';
import {compareEndpoints, type Endpoint, type Selection} from '../../state/selection';
import type {State} from '../../state/state';
import {groupOf, panelExample, shapeOf} from '../shared/example';
import type {ViewModel} from '../shared/view';

/** One decoding: the example, its generation, and the group whose query rows hold it. */
export interface Decoding {
  example: ExampleInfo;
  generation: Generation;
  /** the decoding group's key (its name only when it is not the example's first group) */
  key: ExampleKey;
  /** the decoding group as `/attention` describes it, before any layer arrived */
  shape: Attention;
  /** why it cannot be drawn, or null */
  problem: string | null;
}

/** The decoding of example `index` of a step's list; null when the example has no generation. */
export function decodingOf(list: Examples, run: string, tag: string, step: number, index: number): Decoding | null {
  const example = list.examples.find((e) => e.index === index);
  const generation = example?.generation;
  if (!example || !generation) return null;
  const names = (example.groups ?? []).map((g) => g.name);
  const group = groupOf(example, generation.group);
  const key: ExampleKey = group ? {run, tag, step, example: index, group: group.name} : {run, tag, step, example: index};
  const shape = shapeOf(example, group);
  const known = names.length === 0 || names.includes(generation.group);
  const problem = known ? generationProblem(generation, shape.numTokens) : `it names group ${JSON.stringify(generation.group)}, which the example does not have`;
  return {example, generation, key, shape, problem};
}

/** The panel's example list request and, once it arrived, the panel's example and its decoding. */
export function shownDecoding(model: ViewModel): {list: Request<Examples>; examples: Examples | null; example: ExampleInfo | null; decoding: Decoding | null} {
  const {selection: sel, state, data} = model;
  const list = requests.examples(sel.run, sel.tag, sel.exampleStep);
  const examples = valueOf(data, list);
  if (!examples) return {list, examples, example: null, decoding: null};
  const index = panelExample(examples.examples, state.panel.example);
  const example = examples.examples.find((e) => e.index === index) ?? null;
  return {list, examples, example, decoding: decodingOf(examples, sel.run, sel.tag, sel.exampleStep, index)};
}

/** Every layer of the decoding group, one request each (the grid shows them all). */
export function layerRequests(d: Decoding): Request<Attention>[] {
  const n = d.shape.numLayers;
  return Array.from({length: n}, (_, l) => requests.attentionLayer(d.key, l, n));
}

/** The decoding compared with the panel's: the Compare view's A (run and step), or, while A is
 * the panel's own step, the run's newest other step; null when the tag has one step in one run. */
export function otherEndpoint(tags: Tags, state: Readonly<State>, selection: Selection): {runs: string[]; endpoint: Endpoint | null} {
  const {runs, a} = compareEndpoints(tags, state, selection);
  if (a.run !== selection.run || a.step !== selection.exampleStep) return {runs, endpoint: a};
  const others = a.steps.filter((s) => s !== selection.exampleStep);
  return {runs, endpoint: others.length ? {...a, step: others[others.length - 1]} : null};
}

export const CROSS_GROUP = 'cross'; // an encoder–decoder's attention of the decoder's queries over the source

/** The source a decoding attended to (an encoder–decoder's `cross` group: the decoder's queries over
 * the encoder's tokens), or null when the example has none. */
export function sourceOf(d: Decoding): {key: ExampleKey; shape: Attention} | null {
  const cross = (d.example.groups ?? []).find((g) => g.name === CROSS_GROUP);
  if (!cross || d.key.group === CROSS_GROUP || cross.num_tokens !== d.shape.numTokens) return null;
  const {group: _, ...rest} = d.key;
  return {key: {...rest, group: CROSS_GROUP}, shape: shapeOf(d.example, cross)};
}

/** The source's layers a heat mode reads: the focused layer's, or every layer's. */
export function sourceRequests(source: {key: ExampleKey; shape: Attention}, state: Readonly<State>): Request<Attention>[] {
  const n = source.shape.numLayers;
  const layers = state.generation.heat === 'all' ? Array.from({length: n}, (_, l) => l) : [Math.min(state.focus.layer, n - 1)];
  return layers.map((l) => requests.attentionLayer(source.key, l, n));
}

/** What the view loads: the panel's list, the decoding group's layers (and the source's a heat mode
 * reads), and the other endpoint's list. */
export function generationNeeds(model: ViewModel): AnyRequest[] {
  const {list, decoding} = shownDecoding(model);
  const wanted: AnyRequest[] = [list];
  if (decoding && !decoding.problem) {
    wanted.push(...layerRequests(decoding));
    const source = sourceOf(decoding);
    if (source) wanted.push(...sourceRequests(source, model.state));
  }
  const {endpoint} = otherEndpoint(model.tags, model.state, model.selection);
  if (decoding && endpoint) wanted.push(requests.examples(endpoint.run, model.selection.tag, endpoint.step));
  return wanted;
}

/** The other endpoint's decoding of the same example index, when its list arrived and has one. */
export function otherDecoding(data: DataReader, tag: string, endpoint: Endpoint, index: number): Decoding | 'loading' | null {
  const list = data.get(requests.examples(endpoint.run, tag, endpoint.step));
  if (list.state === 'loading') return 'loading';
  if (list.state === 'error') return null;
  return decodingOf(list.value, endpoint.run, tag, endpoint.step, index);
}

/** Whether two decodings start from the same prompt (their prompt rows hold the same tokens). */
export function samePrompt(a: Decoding, b: Decoding): boolean {
  const p = a.generation.prompt_length;
  if (p !== b.generation.prompt_length) return false;
  for (let i = 0; i < p; i++) if (a.shape.tokens[i] !== b.shape.tokens[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// The text: the prompt, then every generated token

/** A token of the text as shown. */
export interface TextToken {
  label: string;
  /** a space before it in running text */
  space: boolean;
  /** its generated index t, or null for a prompt token */
  generated: number | null;
}

/** The prompt's tokens (the group's first P queries) then the generated tokens, as running text. */
export function textTokens(d: Decoding): TextToken[] {
  const p = d.generation.prompt_length;
  const tokens = [...d.shape.tokens.slice(0, p), ...d.generation.tokens];
  return readingPieces(tokens).map((piece, i) => ({label: piece.text, space: piece.space, generated: i < p ? null : i - p}));
}

/** Tokens laid out in lines: token i's box starts at x[i] on line line[i]. */
export interface Flow {
  x: Float64Array;
  line: Int32Array;
  lines: number;
}

/** Boxes of `widths` laid out left to right in lines of at most `width` px (a box wider than a
 * line gets a line of its own), `gap` px apart, more where a space precedes a token. */
export function flowText(widths: ArrayLike<number>, spaces: ArrayLike<boolean>, width: number, gap: number, space: number): Flow {
  const n = widths.length;
  const x = new Float64Array(n);
  const line = new Int32Array(n);
  let at = 0;
  let current = 0;
  for (let i = 0; i < n; i++) {
    const before = at === 0 ? 0 : gap + (spaces[i] ? space : 0);
    if (at > 0 && at + before + widths[i] > width) {
      current++;
      at = 0;
      x[i] = 0;
    } else {
      x[i] = at + before;
    }
    line[i] = current;
    at = x[i] + widths[i];
  }
  return {x, line, lines: n ? current + 1 : 0};
}
