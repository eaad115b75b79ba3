// What the example views (head, model, neuron) share: the panel's example, its requests and the
// keys that move through it.

import type {ExampleInfo, ExampleKey, GroupInfo} from '../../data/api';
import {valueOf, type AnyRequest} from '../../data/cache';
import * as requests from '../../data/requests';
import type {Attention} from '../../data/decode';
import {WINDOW_TOKENS, windowOf} from '../../model/long';
import type {State, StatePatch} from '../../state/state';
import type {Store} from '../../state/store';
import type {ViewContext, ViewModel, ViewStatus} from './view';
import {layerLabels} from '../../model/layers';

/** One loaded example and the state to draw it with. */
export interface ExampleModel {
  state: Readonly<State>;
  key: ExampleKey;
  example: ExampleInfo;
  /** the attention group drawn, when not the example's first (whose fields `example` holds) */
  group: GroupInfo | null;
  attention: Attention;
  /** where the example is fetched per layer (`ShownExample` in mode 'layers'): layer l's weights
   * once they arrived, else null; absent: `attention` holds every layer */
  layer?: (layer: number) => Attention | null;
  /** a long group (no N × N anywhere): `attention` is its window of tokens [start, stop) of
   * `total`, and the state's locked tokens are given relative to `start`; absent: the whole group */
  window?: LongWindow;
}

/** The window of a long group an example view shows. */
export interface LongWindow {
  start: number;
  stop: number;
  /** the group's query tokens */
  total: number;
}

/** The group the state names (or the first) when it is a long one, else null. */
export function longGroup(example: ExampleInfo, wanted: string | null): GroupInfo | null {
  const g = groupOf(example, wanted) ?? example.groups?.[0] ?? null;
  return g?.encoding === 'long' ? g : null;
}

/** The window of a long group the state opens (tokens [start, stop) of its queries). */
export function longWindow(state: Readonly<State>, group: GroupInfo): LongWindow {
  const [start, stop] = windowOf(group.num_tokens, state.long, state.focus.tokens);
  return {start, stop, total: group.num_tokens};
}

/** The state as a view of a long group's window reads it: locked tokens relative to the window,
 * those outside it left out. */
function windowState(state: Readonly<State>, w: LongWindow): Readonly<State> {
  const tokens = state.focus.tokens.filter((t) => t >= w.start && t < w.stop).map((t) => t - w.start);
  return {...state, focus: {...state.focus, tokens}};
}

/** A change of the focus made in a view of `window` (locked tokens relative to it) as a change of
 * the state: tokens made absolute, and the window kept where it is (else it would centre on them). */
export function focusPatch(patch: Partial<State['focus']>, window: LongWindow | undefined): StatePatch {
  if (!window || !patch.tokens) return {focus: patch};
  return {focus: {...patch, tokens: patch.tokens.map((t) => t + window.start)}, long: {window: window.start}};
}

/** The request of one layer of an example's weights: the layer, or its window of a long group. */
function layerRequest(key: ExampleKey, layer: number, numLayers: number, window: LongWindow | null) {
  return window ? requests.attentionWindow(key, layer, numLayers, [window.start, window.stop]) : requests.attentionLayer(key, layer, numLayers);
}

/** How a view fetches the example's weights: whole (`/attention`), only the focused layer, or
 * per layer as the view asks (`layers`: `attention` then only gives the shape). */
export type FetchMode = 'example' | 'focus' | 'layers';

/** What each layer of the drawn group is called (model/layers.ts): the model's index where stored names give it. */
export function layerNames(model: ExampleModel): string[] {
  return layerLabels((model.group ?? model.example.groups?.[0])?.layer_names, model.attention.numLayers);
}

/** The group the state names, when the example has it and it is not the first; null: the first. */
export function groupOf(example: ExampleInfo, wanted: string | null): GroupInfo | null {
  const groups = example.groups ?? [];
  const index = wanted === null ? -1 : groups.findIndex((g) => g.name === wanted);
  return index > 0 ? groups[index] : null;
}

/** The key of one example of the panel's step, in the group the state names. */
export function keyOf(model: ViewModel, example: ExampleInfo | null, index: number): ExampleKey {
  const {selection: sel, state} = model;
  const named = example ? groupOf(example, state.panel.group)?.name : (state.panel.group ?? undefined);
  const key: ExampleKey = {run: sel.run, tag: sel.tag, step: sel.exampleStep, example: index};
  return named === undefined ? key : {...key, group: named};
}

/** The example the panel selects: the state's when the step has it, else the step's first. */
export function panelExample(examples: readonly ExampleInfo[], wanted: number): number {
  return examples.some((e) => e.index === wanted) ? wanted : (examples[0]?.index ?? 0);
}

/** The step's example list and the selected example's weights. The weights of the example the
 * state names are asked for alongside the list (one round trip instead of two); the list then
 * confirms it, or names the example to fetch instead. */
export function exampleNeeds(model: ViewModel): AnyRequest[] {
  const {selection: sel, state, data} = model;
  const list = requests.examples(sel.run, sel.tag, sel.exampleStep);
  const examples = valueOf(data, list);
  if (examples && !examples.examples.length) return [list];
  const index = examples ? panelExample(examples.examples, state.panel.example) : state.panel.example;
  const example = examples?.examples.find((e) => e.index === index) ?? null;
  return [list, requests.attention(keyOf(model, example, index))];
}

/** The shape of a group as the example list describes it: an Attention with no weights (held
 * layers 0), so a view can lay out the example before any layer arrives. */
export function shapeOf(example: ExampleInfo, group: GroupInfo | null): Attention {
  const g = group ?? example.groups?.[0] ?? null;
  let tokens = g?.tokens ?? example.tokens;
  let keyTokens = g?.key_tokens ?? tokens;
  let encoding = g?.encoding ?? example.encoding;
  if (encoding === 'long') {
    // A long group's views show a window of it: its shape is that of the window (set by the caller).
    tokens = keyTokens = [];
    encoding = 'dense';
  }
  const numLayers = g?.num_layers ?? example.num_layers;
  const numHeads = g?.num_heads ?? example.num_heads;
  const causal = g?.causal ?? example.causal;
  return {
    header: {tokens, key_tokens: keyTokens, num_layers: numLayers, num_heads: numHeads, num_tokens: tokens.length, num_key_tokens: keyTokens.length, causal, quantization: 'sqrt-u8', encoding},
    tokens,
    keyTokens,
    numLayers,
    numHeads,
    numTokens: tokens.length,
    numKeyTokens: keyTokens.length,
    encoding,
    codes: new Uint8Array(0),
    keys: null,
    topK: 0,
    firstLayer: 0,
    heldLayers: 0,
  };
}

/** The layer the focus names, within the group's layers. */
export function focusLayer(state: Readonly<State>, numLayers: number): number {
  return Math.max(0, Math.min(state.focus.layer, numLayers - 1));
}

/** The step's example list and, once it arrived, the selected example's layers that `layers`
 * picks (given the group's layer count): each layer is its own request (`/attention?layer=`). */
export function layerNeeds(model: ViewModel, layers: (numLayers: number) => number[]): AnyRequest[] {
  const {selection: sel, state, data} = model;
  const list = requests.examples(sel.run, sel.tag, sel.exampleStep);
  const examples = valueOf(data, list);
  if (!examples?.examples.length) return [list];
  const index = panelExample(examples.examples, state.panel.example);
  const example = examples.examples.find((e) => e.index === index)!;
  const key = keyOf(model, example, index);
  const n = shapeOfCached(example, groupOf(example, state.panel.group)).numLayers;
  const long = longGroup(example, state.panel.group);
  const window = long ? longWindow(state, long) : null;
  return [list, ...layers(n).map((l) => layerRequest(key, l, n, window))];
}

const shapes = new WeakMap<ExampleInfo, Map<string, Attention>>();

/** The shape of a long group's window (one object per example, group and window). */
function windowShape(example: ExampleInfo, group: GroupInfo | null, long: GroupInfo, w: LongWindow): Attention {
  let byGroup = shapes.get(example);
  if (!byGroup) shapes.set(example, (byGroup = new Map()));
  const name = `${long.name}:${w.start}:${w.stop}`;
  let shape = byGroup.get(name);
  if (!shape) {
    const base = shapeOf(example, group);
    const tokens = long.tokens.slice(w.start, w.stop);
    const keyTokens = long.key_tokens.slice(w.start, w.stop);
    shape = {...base, tokens, keyTokens, numTokens: tokens.length, numKeyTokens: keyTokens.length, header: {...base.header, tokens, key_tokens: keyTokens, num_tokens: tokens.length, num_key_tokens: keyTokens.length}};
    byGroup.set(name, shape);
  }
  return shape;
}

/** `shapeOf`, one object per example and group (views key their caches on it). */
function shapeOfCached(example: ExampleInfo, group: GroupInfo | null): Attention {
  let byGroup = shapes.get(example);
  if (!byGroup) shapes.set(example, (byGroup = new Map()));
  const name = group?.name ?? '';
  let shape = byGroup.get(name);
  if (!shape) byGroup.set(name, (shape = shapeOf(example, group)));
  return shape;
}

/** The selected example, loaded; while the next one loads, the last one stays shown (with the
 * current state) so that moving the slider does not flash. */
export class ShownExample {
  private last: Omit<ExampleModel, 'state'> | null = null;

  constructor(private readonly mode: FetchMode = 'example') {}

  resolve(model: ViewModel): ExampleModel | ViewStatus {
    const {selection: sel, state, data} = model;
    const list = data.get(requests.examples(sel.run, sel.tag, sel.exampleStep));
    if (list.state === 'error') return this.fail(list.error);
    if (list.state === 'ready') {
      if (!list.value.examples.length) return this.fail(`Step ${sel.exampleStep} of ${sel.run}/${sel.tag} holds no examples.`);
      const index = panelExample(list.value.examples, state.panel.example);
      const example = list.value.examples.find((e) => e.index === index)!;
      const key = keyOf(model, example, index);
      const group = groupOf(example, state.panel.group);
      const long = longGroup(example, state.panel.group);
      const window = long ? longWindow(state, long) : undefined;
      if (long && this.mode === 'example') {
        return this.fail(`This example's ${long.num_tokens.toLocaleString('en-US')} tokens are stored as a long example (no full attention matrix): open it in the Long view, or in the Head and Model views, which show a window of ${WINDOW_TOKENS} tokens.`);
      }
      if (this.mode === 'layers') {
        const n = shapeOfCached(example, group).numLayers;
        const shape = window ? windowShape(example, group, long!, window) : shapeOfCached(example, group);
        const layer = (l: number) => valueOf(data, layerRequest(key, l, n, window ?? null));
        // A layer that failed fails the view: the others would fail alike.
        const failed = data.get(layerRequest(key, focusLayer(state, n), n, window ?? null));
        if (failed.state === 'error') return this.fail(failed.error);
        this.last = {key, example, group, attention: shape, layer, window};
      } else {
        const n = shapeOfCached(example, group).numLayers;
        const weights = data.get(this.mode === 'focus' ? layerRequest(key, focusLayer(state, n), n, window ?? null) : requests.attention(key));
        if (weights.state === 'error') return this.fail(weights.error);
        if (weights.state === 'ready') this.last = {key, example, group, attention: weights.value, window};
      }
    }
    if (!this.last) return {kind: 'loading', text: 'Loading attention…'};
    return {...this.last, state: this.last.window ? windowState(state, this.last.window) : state};
  }

  /** The long group's window shown, if the example is a long one. */
  get window(): LongWindow | undefined {
    return this.last?.window;
  }

  /** The weights shown (in mode 'layers': the shape only), if any. */
  get attention(): Attention | null {
    return this.last?.attention ?? null;
  }

  /** The file name parts of an export of the example shown. */
  exportName(state: Readonly<State>): (string | number)[] {
    const key = this.last?.key;
    return [key?.run ?? '', key?.tag ?? '', `step${key?.step ?? 0}`, `ex${key?.example ?? 0}`, `layer${state.focus.layer}`];
  }

  private fail(text: string): ViewStatus {
    this.last = null;
    return {kind: 'error', text};
  }
}

/** True when `resolve` gave a status rather than an example. */
export function isStatus(value: ExampleModel | ViewStatus): value is ViewStatus {
  return 'kind' in value && 'text' in value;
}

/** ↑/↓ move a single locked token, ←/→ change layer; in a long group's window, the token moves
 * inside the window. */
export function exampleKey(store: Store, attention: Attention | null, key: string, window?: LongWindow): boolean {
  if (!attention) return false;
  const {tokens, layer} = store.state.focus;
  if ((key === 'ArrowUp' || key === 'ArrowDown') && tokens.length === 1) {
    const next = tokens[0] + (key === 'ArrowUp' ? -1 : 1);
    const [first, last] = window ? [window.start, window.stop] : [0, attention.numTokens];
    if (next >= first && next < last) store.update(window ? {focus: {tokens: [next]}, long: {window: window.start}} : {focus: {tokens: [next]}});
    return true;
  }
  if (key === 'ArrowLeft' || key === 'ArrowRight') {
    const next = Math.min(layer, attention.numLayers - 1) + (key === 'ArrowLeft' ? -1 : 1);
    if (next >= 0 && next < attention.numLayers) store.update({focus: {layer: next}});
    return true;
  }
  return false;
}

/** What the head, model and neuron views share: each draws one example (`setExample`, which the
 * Compare view also calls for A and B) that a ShownExample resolves, exports under its name, and lets
 * the keyboard move the locked token and the layer. */
export abstract class ExampleFigure {
  protected abstract readonly shown: ShownExample;
  protected abstract readonly context: ViewContext;

  abstract setExample(model: ExampleModel): void;

  update(model: ViewModel): ViewStatus | null {
    const example = this.shown.resolve(model);
    if (isStatus(example)) return example;
    this.setExample(example);
    return null;
  }

  exportName(): (string | number)[] {
    return this.shown.exportName(this.context.store.state);
  }

  keydown(key: string): boolean {
    return exampleKey(this.context.store, this.shown.attention, key, this.shown.window);
  }
}
