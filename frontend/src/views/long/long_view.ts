// Long view: an example stored without any N × N array (http_api.md, "Long examples"), explored as
// a map. The block map of the focused head (or the layer's mean) zooms and pans, fetching the
// visible tiles of a finer level; a brushed query range fetches its exact top-k rows, drawn on the
// map, over the text and on its rail; the distance profile shows every head at the panel's step.

import type {ExampleInfo, GroupInfo} from '../../data/api';
import {valueOf, type AnyRequest, type DataReader} from '../../data/cache';
import type {LongRows} from '../../data/decode_long';
import * as requests from '../../data/requests';
import {el} from '../../draw/dom';
import type {Painter} from '../../draw/painter';
import {headColors} from '../../model/colors';
import {summariseRows, type RowsSummary} from '../../model/long';
import {isByteLevel} from '../../model/tokens';
import type {ExampleKey} from '../../data/api';
import type {State} from '../../state/state';
import {HeadPicker, LayerPicker} from '../shared/controls';
import {focusLayer, keyOf, longGroup, panelExample} from '../shared/example';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';
import {MapPane} from './map_pane';
import {ProfilePane} from './profile_pane';
import {mapPlan} from './scene';
import {TextPane} from './text_pane';

const MEAN_INK = '#37474f'; // the layer mean's map colour

/** The example shown and what of it the state picks. */
interface Shown {
  key: ExampleKey;
  example: ExampleInfo;
  group: GroupInfo;
  layer: number;
  /** null: the layer's mean */
  head: number | null;
}

/** The head a state shows on the map: its one shown head, else null (the layer's mean). */
export function mapHead(state: Readonly<State>, numHeads: number): number | null {
  const heads = state.focus.heads;
  return heads !== null && heads.length === 1 && heads[0] < numHeads ? heads[0] : null;
}

export class LongView implements View {
  readonly id = 'long' as const;
  readonly title = 'Long';
  readonly steps = 'attention' as const;
  readonly usesExample = true;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly layer: LayerPicker;
  private readonly heads: HeadPicker;
  private readonly mean: HTMLButtonElement;
  private readonly map: MapPane;
  private readonly text: TextPane;
  private readonly profile: ProfilePane;
  private readonly profileMessage: HTMLElement;
  private readonly summaries = new WeakMap<LongRows, RowsSummary>();
  private scrolledTo: number | null = null;
  private brushShown = '';

  constructor(private readonly context: ViewContext) {
    const {store} = context;
    this.layer = new LayerPicker(store);
    this.heads = new HeadPicker(store, true);
    this.mean = el('button', {
      class: 'link-button',
      text: 'mean',
      title: 'The mean over the layer’s heads',
      attrs: {'data-control': 'mean'},
      on: {click: () => store.update({focus: {heads: null}})},
    });
    this.heads.element.append(this.mean);
    this.toolbar = el('div', {class: 'toolbar-group'}, [
      this.layer.element,
      this.heads.element,
      el('span', {class: 'hint', text: 'Scroll: zoom · drag: pan · shift-drag or drag the query axis: brush queries · drag across the text: brush'}),
    ]);
    this.map = new MapPane({
      zoomed: (zoom) => store.update({long: {zoom}}),
      brushed: (brush) => store.update({long: {brush, window: null}}),
    });
    this.text = new TextPane({
      brushed: (brush) => store.update({long: {brush, window: null}}),
      picked: (token) => store.update({focus: {tokens: [token], side: 'from'}, long: {window: null}}),
    });
    this.profile = new ProfilePane({picked: (layer, head) => store.update({focus: {layer, heads: [head]}})});
    this.profileMessage = el('div', {class: 'hint long-profile-message'});
    this.element = el('div', {class: 'view view-long'}, [
      this.map.element,
      el('div', {class: 'long-side'}, [this.text.element, this.profile.element, this.profileMessage]),
    ]);
  }

  get width(): number {
    return this.map.size.width;
  }

  get height(): number {
    return this.map.size.height;
  }

  paint(painter: Painter): void {
    this.map.paint(painter);
  }

  exportName(): (string | number)[] {
    const {panel, focus} = this.context.store.state;
    return [panel.run ?? '', panel.tag ?? '', `step${panel.step ?? ''}`, `ex${panel.example}`, `layer${focus.layer}`];
  }

  available(model: ViewModel): boolean {
    return this.resolve(model) !== null;
  }

  /** The example list, the profile, the map's tiles for the state's zoom and the brushed rows. */
  needs(model: ViewModel): AnyRequest[] {
    const {selection: sel, state} = model;
    const list = requests.examples(sel.run, sel.tag, sel.exampleStep);
    const shown = this.resolve(model);
    if (!shown) return [list];
    const {key, group, layer, head} = shown;
    const long = group.long!;
    const box = this.map.boxFor(group.num_tokens, group.num_key_tokens);
    const plan = mapPlan(long.levels, state.long.zoom, box);
    const tiles = [
      ...plan.background.map((t) => requests.longMap(key, layer, 0, head, t.rows, t.cols)),
      ...plan.tiles.map((t) => requests.longMap(key, layer, plan.level, head, t.rows, t.cols)),
    ];
    const brush = state.long.brush;
    const rows = brush && head !== null ? [requests.longRows(key, layer, head, brush[0], Math.min(brush[1], group.num_tokens))] : [];
    return [list, requests.longProfile(key), ...tiles, ...rows];
  }

  update(model: ViewModel): ViewStatus | null {
    const {selection: sel, state, data} = model;
    const list = data.get(requests.examples(sel.run, sel.tag, sel.exampleStep));
    if (list.state === 'error') return {kind: 'error', text: list.error};
    if (list.state === 'loading') return {kind: 'loading', text: 'Loading the examples…'};
    const shown = this.resolve(model);
    if (!shown) {
      const index = panelExample(list.value.examples, state.panel.example);
      const example = list.value.examples.find((e) => e.index === index);
      return {
        kind: 'empty',
        text: `The Long view shows examples stored as long inputs (above the dense limit, Probe(long_tokens=…)); example ${index}${example ? ` has ${example.num_tokens.toLocaleString('en-US')} tokens and` : ''} is stored whole: open it in the Head or Model view.`,
      };
    }
    const {key, group, layer, head} = shown;
    const long = group.long!;
    if (!long.levels.length) return {kind: 'error', text: `The long example ${key.example} lists no levels of its block map: the writer stored none; log it again with a larger Probe(long_budget=…).`};
    const first = data.get(requests.longMap(key, layer, 0, head, [0, Math.min(long.levels[0].rows, 512)], [0, Math.min(long.levels[0].cols, 512)]));
    if (first.state === 'error') return {kind: 'error', text: first.error};

    this.layer.set(group.num_layers, layer, group.layer_names);
    const colors = headColors(group.num_heads);
    this.heads.set(colors, head === null ? [] : [head]);
    this.mean.setAttribute('aria-pressed', String(head === null));

    const tile = (level: number, t: {rows: [number, number]; cols: [number, number]}) => valueOf(data, requests.longMap(key, layer, level, head, t.rows, t.cols));
    const brush = state.long.brush ? ([state.long.brush[0], Math.min(state.long.brush[1], group.num_tokens)] as [number, number]) : null;
    const rows = this.rows(data, key, layer, head, brush);
    const token = state.focus.tokens.length ? state.focus.tokens[0] : null;
    const title = `layer ${layer}, ${head === null ? 'mean of the heads' : `head ${head}`}`;
    this.map.set({levels: long.levels, nq: group.num_tokens, nk: group.num_key_tokens, color: head === null ? MEAN_INK : colors[head], tile, rows: rows.value, brush, token, title}, state.long.zoom);
    this.text.set({
      tokens: group.key_tokens,
      byteLevel: isByteLevel(group.key_tokens.slice(0, 2048)),
      offset: group.num_key_tokens - group.num_tokens,
      numQueries: group.num_tokens,
      brush,
      summary: rows.value ? this.summary(rows.value) : null,
      note: rows.note,
      token,
    });
    // A new brush (on the map, or from the URL) brings its queries into view in the text.
    const brushKey = String(brush);
    if (brush && brushKey !== this.brushShown) this.text.reveal(brush[0] + group.num_key_tokens - group.num_tokens);
    this.brushShown = brushKey;
    // A token locked elsewhere (the head view, the URL) is brought into view once.
    if (token !== null && token !== this.scrolledTo) {
      this.scrolledTo = token;
      this.text.scrollTo(token + group.num_key_tokens - group.num_tokens);
    }
    const profile = data.get(requests.longProfile(key));
    this.profileMessage.hidden = profile.state === 'ready';
    this.profileMessage.textContent = profile.state === 'error' ? profile.error : 'Loading the distance profile…';
    if (profile.state === 'ready') this.profile.set(profile.value, layer, head);
    return null;
  }

  resize(): void {
    this.map.resize();
    this.text.resize();
    this.profile.resize();
  }

  keydown(key: string): boolean {
    const state = this.context.store.state;
    if (key === 'Escape' && state.long.brush) {
      this.context.store.update({long: {brush: null}});
      return true;
    }
    return false;
  }

  /** The panel's example when its group (the state's, or the first) is a long one. */
  private resolve(model: ViewModel): Shown | null {
    const {selection: sel, state, data} = model;
    const examples = valueOf(data, requests.examples(sel.run, sel.tag, sel.exampleStep));
    if (!examples?.examples.length) return null;
    const index = panelExample(examples.examples, state.panel.example);
    const example = examples.examples.find((e) => e.index === index)!;
    const group = longGroup(example, state.panel.group);
    if (!group?.long) return null;
    const key = keyOf(model, example, index);
    const layer = focusLayer(state, group.num_layers);
    return {key, example, group, layer, head: mapHead(state, group.num_heads)};
  }

  /** The brushed rows when they can be shown, or a note saying why not. */
  private rows(data: DataReader, key: ExampleKey, layer: number, head: number | null, brush: [number, number] | null): {value: LongRows | null; note: string} {
    if (!brush) return {value: null, note: 'Brush queries (shift-drag on the map, drag its query axis, or drag across the text) to see where their exact top-k rows point.'};
    if (head === null) return {value: null, note: 'The map shows the mean of the heads: pick one head (Head, above) to see its top-k rows of the brushed queries.'};
    const loaded = data.get(requests.longRows(key, layer, head, brush[0], brush[1]));
    if (loaded.state === 'error') return {value: null, note: loaded.error};
    if (loaded.state === 'loading') return {value: null, note: `Loading the top-k rows of queries ${brush[0].toLocaleString('en-US')}–${(brush[1] - 1).toLocaleString('en-US')}…`};
    return {value: loaded.value, note: ''};
  }

  private summary(rows: LongRows): RowsSummary {
    let s = this.summaries.get(rows);
    if (!s) this.summaries.set(rows, (s = summariseRows(rows)));
    return s;
  }
}
