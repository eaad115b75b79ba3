// Head view: two token columns joined by one arc per (head, query, key), as bertviz draws it,
// on one canvas with only the visible rows drawn, so 1024 tokens stay as fluid as 128.

import {headColors} from '../../model/colors';
import {isAdditive, onPointer, type Point} from '../../components/pointer';
import {tokenLabels, type TokenLabels} from '../../components/token_labels';
import type {Attention} from '../../data/decode';
import {el} from '../../draw/dom';
import {textWidth, type Painter} from '../../draw/painter';
import type {Side} from '../../state/state';
import {FAINT_INK, font, HIGHLIGHT_FILL, INK, MUTED_INK} from '../../draw/theme';
import {truncate} from '../../model/tokens';
import {GroupPicker, HeadPicker, HideToggle, LayerPicker, PairFilter, PruneControls} from '../shared/controls';
import {ArcBatch, computeArcs, type ArcSet} from './arcs';
import {HEADER_HEIGHT, headLayout, PAD, ROW_HEIGHT, tokenAt, type Layout} from './layout';
import {clickTokens, focusedTokens, focusedWeights, inspection, weightFilter, type FocusedTokens, type WeightFilter} from './scene';
import {ScrollingCanvas} from '../shared/scrolling_canvas';
import {WindowBar} from '../shared/window_bar';
import {ExampleFigure, focusLayer, focusPatch, layerNames, layerNeeds, ShownExample, type ExampleModel} from '../shared/example';
import type {View, ViewContext, ViewModel} from '../shared/view';

const FONT = font(null, 13);
const FONT_FOCUS = font(600, 13);
const FONT_HEADER = font(500, 11);
const FONT_INDEX = font(null, 10); // token positions, left of the query column
const LABEL_PAD = 6; // px between a token's box edge and its text
const MIN_LABEL = 36; // px: narrowest token label
const MAX_LABEL = 170; // px: widest token label (longer tokens are shortened)
const MAX_LABEL_CHARS = 28;
const FOCUS_ARC_WIDTH = 2; // px
const ARC_WIDTH = 1.5; // px


/** Everything derived from the model that the frame loop reads. */
interface Scene {
  model: ExampleModel;
  attention: Attention;
  /** query labels */
  labels: string[];
  /** key labels (the query labels but for cross attention) */
  keyLabels: string[];
  labelWidth: number;
  /** rows drawn: the longer of the two columns */
  rows: number;
  colors: string[];
  weights: WeightFilter;
  arcs: ArcSet;
}

export class HeadView extends ExampleFigure implements View {
  readonly id = 'head' as const;
  readonly title = 'Head';
  readonly steps = 'attention' as const;
  readonly usesExample = true;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  protected readonly shown = new ShownExample('focus');
  private readonly area: ScrollingCanvas;
  private readonly inspector: HTMLElement;
  private readonly group: GroupPicker;
  private readonly layer: LayerPicker;
  private readonly heads: HeadPicker;
  private readonly pair: PairFilter;
  private readonly hide: HideToggle;
  private readonly prune: PruneControls;
  private readonly windowBar: WindowBar;
  private scene: Scene | null = null;
  private sceneKey = '';
  private labelsKey: Attention | null = null;
  private labelCache: {queries: TokenLabels; keys: TokenLabels} = {queries: {labels: [], width: 0}, keys: {labels: [], width: 0}};
  private hover: {side: Side; index: number} | null = null;
  private layout: Layout = {width: 0, height: 0, column: 0, strip: 0, leftX: 0, rightX: 0, scrollTop: 0};

  constructor(protected readonly context: ViewContext) {
    super();
    const {store} = context;
    this.group = new GroupPicker(store);
    this.layer = new LayerPicker(store);
    this.heads = new HeadPicker(store);
    this.pair = new PairFilter(store);
    this.hide = new HideToggle(store);
    this.prune = new PruneControls(store);
    this.windowBar = new WindowBar(store);
    this.toolbar = el('div', {class: 'toolbar-group'}, [
      this.windowBar.element,
      this.group.element,
      this.layer.element,
      this.heads.element,
      this.pair.element,
      this.hide.element,
      this.prune.element,
    ]);
    this.area = new ScrollingCanvas('head', () => this.draw());
    this.inspector = el('div', {class: 'inspector', attrs: {'aria-live': 'polite'}});
    this.element = el('div', {class: 'view view-head'}, [this.area.element, this.inspector]);
    onPointer(
      this.area.canvas,
      {
        immediate: true,
        move: (at) => this.pointer(at),
        leave: () => this.setHover(null),
        click: (at, event) => {
          const model = this.scene?.model;
          const patch = model && clickTokens(model.state.focus, this.hit(at), isAdditive(event));
          if (patch) this.context.store.update(focusPatch(patch, model.window));
        },
      },
      (event) => this.area.point(event),
    );
  }

  get width(): number {
    return this.layout.width;
  }

  get height(): number {
    return this.layout.height;
  }

  /** The example list and the one layer shown. */
  needs(model: ViewModel): ReturnType<typeof layerNeeds> {
    return layerNeeds(model, (n) => [focusLayer(model.state, n)]);
  }

  /** Draws one example (the Compare view draws A and B through this). */
  setExample(model: ExampleModel): void {
    const {state, attention: a} = model;
    const colors = headColors(a.numHeads);
    const weights = weightFilter(state, a, model.group ? null : model.example.segments);
    this.group.set(model.example.groups ?? [], model.group?.name ?? null);
    this.windowBar.set(model.window);
    this.layer.set(a.numLayers, Math.min(state.focus.layer, a.numLayers - 1), layerNames(model)); // the layer asked for, even while it loads
    this.heads.set(colors, weights.heads);
    this.pair.set(!model.group && Boolean(model.example.segments?.length), state.filters.pair);
    this.hide.set(state);
    this.prune.set(state);
    const {layer, heads, filter, queries, prune} = weights;
    const key = JSON.stringify([model.key, layer, heads, queries, filter.keys, state.filters.hide, state.filters.renorm, prune]);
    if (key !== this.sceneKey || this.scene?.attention !== a) {
      this.sceneKey = key;
      const {queries: q, keys: k} = this.labels(a);
      const arcs = computeArcs(a, layer, heads, filter, queries, prune);
      const rows = Math.max(a.numTokens, a.numKeyTokens);
      this.scene = {model, attention: a, labels: q.labels, keyLabels: k.labels, labelWidth: Math.max(q.width, k.width), rows, colors, weights, arcs};
    } else {
      this.scene!.model = model;
    }
    if (this.hover && this.hover.index >= (this.hover.side === 'from' ? a.numTokens : a.numKeyTokens)) this.hover = null;
    const first = state.focus.tokens.length ? state.focus.tokens[0] * ROW_HEIGHT : null;
    this.area.revealOnChange(`${state.focus.side}:${state.focus.tokens}`, first, ROW_HEIGHT);
    this.resize();
  }

  resize(): void {
    if (!this.scene) return;
    const n = this.scene.rows;
    this.area.fit(HEADER_HEIGHT + n * ROW_HEIGHT + 2 * PAD, HEADER_HEIGHT + 2 * PAD);
    const gutter = textWidth(String((this.scene.model.window?.stop ?? n) - 1), FONT_INDEX) + 2 * LABEL_PAD;
    this.layout = headLayout(this.area, this.scene.attention.numHeads, Math.max(MIN_LABEL, Math.min(MAX_LABEL, this.scene.labelWidth)) + 2 * LABEL_PAD, gutter);
    this.draw();
  }

  /** The figure as shown; the export buttons call this with an SVG or PNG painter. */
  paint(painter: Painter): void {
    if (!this.scene) return;
    const scene = this.scene;
    const {layout} = this;
    const a = scene.attention;
    const first = Math.max(0, Math.floor((layout.scrollTop - PAD) / ROW_HEIGHT));
    const last = Math.min(scene.rows - 1, Math.floor((layout.scrollTop + layout.height - HEADER_HEIGHT - PAD) / ROW_HEIGHT));
    const y = (i: number) => HEADER_HEIGHT + PAD + i * ROW_HEIGHT + ROW_HEIGHT / 2 - layout.scrollTop;
    const leftEdge = layout.leftX + layout.column;
    const rightEdge = layout.rightX;
    const focus = this.focus();
    const offset = scene.model.window?.start ?? 0; // a long example's window: positions in the example
    const {heads} = scene.weights;
    const batch = new ArcBatch(heads.length);
    let stripes: Float32Array[] = [];

    if (focus) {
      const focused = focusedWeights(a, scene.weights, focus, scene.arcs.kept);
      stripes = focused.stripes;
      for (const arc of focused.arcs) batch.add(arc.slot, arc.weight, leftEdge, y(arc.from), rightEdge, y(arc.to));
    } else {
      const {arcs} = scene;
      for (let t = 0; t < arcs.count; t++) {
        const i = arcs.from[t];
        const j = arcs.to[t];
        if ((i < first || i > last) && (j < first || j > last)) continue;
        batch.add(arcs.slot[t], arcs.weight[t], leftEdge, y(i), rightEdge, y(j));
      }
    }
    const drawn = batch.count;

    painter.clip(0, HEADER_HEIGHT, layout.width, layout.height - HEADER_HEIGHT, () => {
      // Focused tokens, and beside their targets a heat strip: one cell per head, the weight
      // given (or received) as its opacity.
      const labelBox = (side: Side) => (side === 'from' ? layout.leftX : layout.rightX + layout.strip);
      const labelBoxWidth = layout.column - layout.strip;
      if (focus) {
        for (const i of focus.tokens) {
          if (i >= first && i <= last) painter.rect(labelBox(focus.side), y(i) - ROW_HEIGHT / 2 + 1, labelBoxWidth, ROW_HEIGHT - 2, HIGHLIGHT_FILL);
        }
        const stripX = focus.side === 'from' ? layout.rightX : leftEdge - layout.strip;
        const cell = layout.strip / heads.length;
        for (let j = first; j <= Math.min(last, (stripes[0]?.length ?? 0) - 1); j++) {
          for (let s = 0; s < heads.length; s++) {
            const w = stripes[s][j];
            if (w > 0) painter.rect(stripX + s * cell, y(j) - ROW_HEIGHT / 2 + 2, cell, ROW_HEIGHT - 4, scene.colors[heads[s]], Math.min(1, w));
          }
        }
      }
      batch.flush((slot, alpha, xy, count) =>
        painter.lines(xy, count, scene.colors[heads[slot]], alpha, focus ? FOCUS_ARC_WIDTH : ARC_WIDTH),
      );
      const {queries, filter} = scene.weights;
      const keys = filter.keys;
      const focused = new Set(focus?.tokens ?? []);
      for (let i = first; i <= last; i++) {
        const leftFocus = focus?.side === 'from' && focused.has(i);
        const rightFocus = focus?.side === 'to' && focused.has(i);
        const hoverLeft = this.hover?.side === 'from' && this.hover.index === i;
        const hoverRight = this.hover?.side === 'to' && this.hover.index === i;
        if (hoverLeft && !leftFocus) painter.strokeRect(labelBox('from') + 0.5, y(i) - ROW_HEIGHT / 2 + 1.5, labelBoxWidth - 1, ROW_HEIGHT - 3, FAINT_INK);
        if (hoverRight && !rightFocus) painter.strokeRect(labelBox('to') + 0.5, y(i) - ROW_HEIGHT / 2 + 1.5, labelBoxWidth - 1, ROW_HEIGHT - 3, FAINT_INK);
        const hidden = filter.hidden?.[i] === 1;
        if (i < a.numTokens) {
          painter.text(String(i + offset), layout.leftX - LABEL_PAD, y(i), {font: FONT_INDEX, color: FAINT_INK, align: 'right'});
          painter.text(scene.labels[i], leftEdge - layout.strip - LABEL_PAD, y(i), {
            font: leftFocus ? FONT_FOCUS : FONT,
            color: i >= queries.start && i < queries.end ? INK : FAINT_INK,
            align: 'right',
          });
        }
        if (i < a.numKeyTokens) {
          painter.text(scene.keyLabels[i], rightEdge + layout.strip + LABEL_PAD, y(i), {
            font: rightFocus ? FONT_FOCUS : FONT,
            color: hidden || i < keys.start || i >= keys.end ? FAINT_INK : INK,
            align: 'left',
          });
        }
      }
    });
    const header = {font: FONT_HEADER, color: MUTED_INK, baseline: 'middle' as const};
    painter.text('QUERY', leftEdge - layout.strip - LABEL_PAD, HEADER_HEIGHT / 2 + 2, {...header, align: 'right'});
    painter.text('KEY', rightEdge + layout.strip + LABEL_PAD, HEADER_HEIGHT / 2 + 2, {...header, align: 'left'});
    this.area.canvas.dataset.arcs = String(drawn);
    this.area.canvas.dataset.rows = `${first}-${last}`;
    // Where things are, for tests and tools that point at tokens: y of token i is top + i * row.
    this.area.canvas.dataset.layout = JSON.stringify({
      query: [layout.leftX, layout.leftX + layout.column],
      key: [layout.rightX, layout.rightX + layout.column],
      top: HEADER_HEIGHT + PAD + ROW_HEIGHT / 2 - layout.scrollTop,
      row: ROW_HEIGHT,
    });
  }

  private draw(): void {
    if (!this.scene) return;
    this.layout.scrollTop = this.area.scrollTop;
    this.paint(this.area.painter());
    this.area.canvas.dataset.tokens = String(this.scene.attention.numTokens);
    this.area.canvas.dataset.focus = this.focusLabel();
    this.inspect();
  }

  private focus(): FocusedTokens | null {
    const scene = this.scene;
    return scene ? focusedTokens(scene.model.state.focus, this.hover, scene.attention) : null;
  }

  private focusLabel(): string {
    const focus = this.focus();
    return focus ? `${focus.locked ? 'locked' : 'hover'}:${focus.side}:${focus.tokens.join(',')}` : '';
  }

  /** The text line under the figure: the focused tokens, exactly as logged, and what they attend to. */
  private inspect(): void {
    const scene = this.scene!;
    const focus = this.focus();
    if (!focus) {
      this.inspector.replaceChildren(
        el('span', {
          class: 'hint',
          text: 'Hover a token to see its attention · click: lock (shift: add) · ↑↓: move · Esc: clear · ←→: layer · S / P: save SVG / PNG',
        }),
      );
      return;
    }
    const {tokens, verb, top} = inspection(scene.attention, scene.weights, focus);
    const count = scene.weights.heads.length;
    this.inspector.replaceChildren(
      el('span', {class: 'inspector-token', attrs: {'data-inspector': 'tokens'}, text: tokens}),
      el('span', {class: 'hint', text: ` ${verb} (mean of ${count} head${count > 1 ? 's' : ''}): `}),
      ...top.map(({index, weight}) =>
        el('span', {class: 'inspector-entry', text: `${truncate((focus.side === 'from' ? scene.keyLabels : scene.labels)[index], 16)} ${(weight * 100).toFixed(1)}%`}),
      ),
    );
  }

  private hit(at: Point): {side: Side; index: number} | null {
    return tokenAt(this.layout, at, this.scene!.attention);
  }

  private pointer(at: Point): void {
    if (!this.scene) return;
    const hit = this.hit(at);
    this.area.canvas.style.cursor = hit ? 'pointer' : 'default';
    this.setHover(hit);
  }

  private setHover(hover: {side: Side; index: number} | null): void {
    if (hover?.side === this.hover?.side && hover?.index === this.hover?.index) return;
    this.hover = hover;
    this.draw();
  }

  private labels(a: Attention): {queries: TokenLabels; keys: TokenLabels} {
    if (this.labelsKey !== a) {
      this.labelsKey = a;
      const queries = tokenLabels(a.tokens, FONT_FOCUS, MAX_LABEL_CHARS, MAX_LABEL);
      this.labelCache = {queries, keys: a.keyTokens === a.tokens ? queries : tokenLabels(a.keyTokens, FONT_FOCUS, MAX_LABEL_CHARS, MAX_LABEL)};
    }
    return this.labelCache;
  }
}
