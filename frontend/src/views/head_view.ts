// Head view: two token columns joined by one arc per (head, query, key), as bertviz draws it,
// on one canvas with only the visible rows drawn, so 1024 tokens stay as fluid as 128.

import {headColors} from '../colors';
import {INK, MUTED_INK, font} from '../theme';
import {readColumn, readRow, type Attention} from '../decode';
import {el} from '../dom';
import {textWidth, type Painter} from '../painter';
import type {Side, State} from '../state';
import {displayToken, exactToken, isByteLevel, truncate} from '../tokens';
import {
  filterRow,
  pairRanges,
  pruneRow,
  specialTokenMask,
  topEntries,
  type Prune,
  type Range,
  type RowFilter,
} from '../transforms';
import {ArcBatch, computeArcs, type ArcSet} from './arcs';
import {HeadPicker, HideToggle, LayerPicker, PairFilter, PruneControls, shownHeads} from './controls';
import {ScrollingCanvas} from './scrolling_canvas';
import {exampleKey, exampleNeeds, isStatus, ShownExample, type ExampleModel} from './example';
import type {View, ViewContext, ViewModel, ViewStatus} from './view';

const FONT = font(null, 13);
const FONT_FOCUS = font(600, 13);
const FONT_HEADER = font(500, 11);
const FONT_INDEX = font(null, 10); // token positions, left of the query column
const ROW_HEIGHT = 20; // px per token
const HEADER_HEIGHT = 30; // px above the first token: the column titles
const PAD = 8; // px of padding around the figure
const LABEL_PAD = 6; // px between a token's box edge and its text
const MIN_LABEL = 36; // px: narrowest token label
const MAX_LABEL = 170; // px: widest token label (longer tokens are shortened)
const STRIP_PER_HEAD = 6; // px per head in the heat strip beside the focused tokens' targets
const MAX_STRIP = 72; // px
const MIN_GAP = 140; // px between the columns, where the arcs run
const MAX_GAP = 460;
const MAX_LABEL_CHARS = 28;
const FOCUS_ARC_WIDTH = 2; // px
const ARC_WIDTH = 1.5; // px
const TOP_ENTRIES = 5; // keys listed by the inspector

interface Focus {
  side: Side;
  tokens: number[];
  locked: boolean;
}

interface Layout {
  width: number;
  height: number;
  column: number; // a token column: label, then a heat strip on the side of the arcs
  strip: number; // heat strip width: one cell per shown head, the weight as its opacity
  leftX: number; // left edge of the query column
  rightX: number; // left edge of the key column
  scrollTop: number;
}

/** Everything derived from the model that the frame loop reads. */
interface Scene {
  model: ExampleModel;
  attention: Attention;
  labels: string[];
  labelWidth: number;
  colors: string[];
  heads: number[];
  filter: RowFilter;
  queries: Range;
  prune: Prune;
  arcs: ArcSet;
}

export class HeadView implements View {
  readonly id = 'head' as const;
  readonly title = 'Head';
  readonly steps = 'attention' as const;
  readonly usesExample = true;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly shown = new ShownExample();
  private readonly area: ScrollingCanvas;
  private readonly inspector: HTMLElement;
  private readonly layer: LayerPicker;
  private readonly heads: HeadPicker;
  private readonly pair: PairFilter;
  private readonly hide: HideToggle;
  private readonly prune: PruneControls;
  private scene: Scene | null = null;
  private sceneKey = '';
  private labelsKey: Attention | null = null;
  private labelCache: {labels: string[]; width: number} = {labels: [], width: 0};
  private hover: {side: Side; index: number} | null = null;
  private layout: Layout = {width: 0, height: 0, column: 0, strip: 0, leftX: 0, rightX: 0, scrollTop: 0};
  private row = new Float32Array(0);

  constructor(private readonly context: ViewContext) {
    const {store} = context;
    this.layer = new LayerPicker(store);
    this.heads = new HeadPicker(store);
    this.pair = new PairFilter(store);
    this.hide = new HideToggle(store);
    this.prune = new PruneControls(store);
    this.toolbar = el('div', {class: 'toolbar-group'}, [
      this.layer.element,
      this.heads.element,
      this.pair.element,
      this.hide.element,
      this.prune.element,
    ]);
    this.area = new ScrollingCanvas('head', () => this.draw());
    this.inspector = el('div', {class: 'inspector', attrs: {'aria-live': 'polite'}});
    this.element = el('div', {class: 'view view-head'}, [this.area.element, this.inspector]);
    this.area.canvas.addEventListener('mousemove', (event) => this.pointer(event));
    this.area.canvas.addEventListener('mouseleave', () => this.setHover(null));
    this.area.canvas.addEventListener('click', (event) => this.click(event));
  }

  get width(): number {
    return this.layout.width;
  }

  get height(): number {
    return this.layout.height;
  }

  needs(model: ViewModel): ReturnType<typeof exampleNeeds> {
    return exampleNeeds(model);
  }

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
    return exampleKey(this.context.store, this.shown.attention, key);
  }

  /** Draws one example (the Compare view draws A and B through this). */
  setExample(model: ExampleModel): void {
    const {state, attention: a} = model;
    const colors = headColors(a.numHeads);
    const heads = shownHeads(state, a.numHeads);
    const layer = Math.min(state.layer, a.numLayers - 1);
    this.layer.set(a.numLayers, layer);
    this.heads.set(colors, heads);
    const segments = model.example.segments;
    this.pair.set(Boolean(segments?.length), state.pair);
    this.hide.set(state);
    this.prune.set(state);

    const ranges = pairRanges(a.numTokens, segments, state.pair);
    const filter: RowFilter = {
      hidden: state.hide ? specialTokenMask(a.tokens) : null,
      renormalize: state.hide && state.renorm,
      keys: ranges.keys,
    };
    const prune = {threshold: state.threshold, topK: state.topk};
    const key = JSON.stringify([model.key, layer, heads, ranges, state.hide, state.renorm, prune]);
    if (key !== this.sceneKey || this.scene?.attention !== a) {
      this.sceneKey = key;
      const {labels, width} = this.labels(a);
      this.scene = {
        model,
        attention: a,
        labels,
        labelWidth: width,
        colors,
        heads,
        filter,
        queries: ranges.queries,
        prune,
        arcs: computeArcs(a, layer, heads, filter, ranges.queries, prune),
      };
    } else {
      this.scene!.model = model;
    }
    if (this.hover && this.hover.index >= a.numTokens) this.hover = null;
    const first = state.tokens.length ? state.tokens[0] * ROW_HEIGHT : null;
    this.area.revealOnChange(`${state.side}:${state.tokens}`, first, ROW_HEIGHT);
    this.resize();
  }

  resize(): void {
    if (!this.scene) return;
    const n = this.scene.attention.numTokens;
    this.area.fit(HEADER_HEIGHT + n * ROW_HEIGHT + 2 * PAD, HEADER_HEIGHT + 2 * PAD);
    const {width, height} = this.area;
    const strip = Math.min(MAX_STRIP, STRIP_PER_HEAD * this.scene.attention.numHeads);
    const column = Math.max(MIN_LABEL, Math.min(MAX_LABEL, this.scene.labelWidth)) + 2 * LABEL_PAD + strip;
    const gutter = textWidth(String(n - 1), FONT_INDEX) + 2 * LABEL_PAD;
    const gap = Math.max(MIN_GAP, Math.min(MAX_GAP, width - 2 * column - 2 * PAD - 2 * gutter));
    const leftX = Math.max(PAD + gutter, Math.round((width - 2 * column - gap) / 2));
    this.layout = {width, height, column, strip, leftX, rightX: leftX + column + gap, scrollTop: this.area.scrollTop};
    this.draw();
  }

  /** The figure as shown; the export buttons call this with an SVG or PNG painter. */
  paint(painter: Painter): void {
    if (!this.scene) return;
    const scene = this.scene;
    const {layout} = this;
    const a = scene.attention;
    const state = scene.model.state;
    const first = Math.max(0, Math.floor((layout.scrollTop - PAD) / ROW_HEIGHT));
    const last = Math.min(a.numTokens - 1, Math.floor((layout.scrollTop + layout.height - HEADER_HEIGHT - PAD) / ROW_HEIGHT));
    const y = (i: number) => HEADER_HEIGHT + PAD + i * ROW_HEIGHT + ROW_HEIGHT / 2 - layout.scrollTop;
    const leftEdge = layout.leftX + layout.column;
    const rightEdge = layout.rightX;
    const focus = this.focus(state);
    const batch = new ArcBatch(scene.heads.length);
    const stripes: Float32Array[] = [];

    if (focus) {
      this.focusArcs(scene, focus, batch, stripes, y, leftEdge, rightEdge);
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
          if (i >= first && i <= last) painter.rect(labelBox(focus.side), y(i) - ROW_HEIGHT / 2 + 1, labelBoxWidth, ROW_HEIGHT - 2, '#e8eaed');
        }
        const stripX = focus.side === 'from' ? layout.rightX : leftEdge - layout.strip;
        const cell = layout.strip / scene.heads.length;
        for (let j = first; j <= last; j++) {
          for (let s = 0; s < scene.heads.length; s++) {
            const w = stripes[s][j];
            if (w > 0) painter.rect(stripX + s * cell, y(j) - ROW_HEIGHT / 2 + 2, cell, ROW_HEIGHT - 4, scene.colors[scene.heads[s]], Math.min(1, w));
          }
        }
      }
      batch.flush((slot, alpha, xy, count) =>
        painter.lines(xy, count, scene.colors[scene.heads[slot]], alpha, focus ? FOCUS_ARC_WIDTH : ARC_WIDTH),
      );
      const {queries} = scene;
      const keys = scene.filter.keys;
      const focused = new Set(focus?.tokens ?? []);
      for (let i = first; i <= last; i++) {
        const label = scene.labels[i];
        const leftFocus = focus?.side === 'from' && focused.has(i);
        const rightFocus = focus?.side === 'to' && focused.has(i);
        const hoverLeft = this.hover?.side === 'from' && this.hover.index === i;
        const hoverRight = this.hover?.side === 'to' && this.hover.index === i;
        if (hoverLeft && !leftFocus) painter.strokeRect(labelBox('from') + 0.5, y(i) - ROW_HEIGHT / 2 + 1.5, labelBoxWidth - 1, ROW_HEIGHT - 3, '#bdbdbd');
        if (hoverRight && !rightFocus) painter.strokeRect(labelBox('to') + 0.5, y(i) - ROW_HEIGHT / 2 + 1.5, labelBoxWidth - 1, ROW_HEIGHT - 3, '#bdbdbd');
        painter.text(String(i), layout.leftX - LABEL_PAD, y(i), {font: FONT_INDEX, color: '#bdbdbd', align: 'right'});
        const hidden = scene.filter.hidden?.[i] === 1;
        painter.text(label, leftEdge - layout.strip - LABEL_PAD, y(i), {
          font: leftFocus ? FONT_FOCUS : FONT,
          color: i >= queries.start && i < queries.end ? INK : '#bdbdbd',
          align: 'right',
        });
        painter.text(label, rightEdge + layout.strip + LABEL_PAD, y(i), {
          font: rightFocus ? FONT_FOCUS : FONT,
          color: hidden || i < keys.start || i >= keys.end ? '#bdbdbd' : INK,
          align: 'left',
        });
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

  /** Arcs and per-head stripes of the focused tokens (locked, else hovered). */
  private focusArcs(
    scene: Scene,
    focus: Focus,
    batch: ArcBatch,
    stripes: Float32Array[],
    y: (i: number) => number,
    leftEdge: number,
    rightEdge: number,
  ): void {
    const a = scene.attention;
    const n = a.numTokens;
    const layer = Math.min(scene.model.state.layer, a.numLayers - 1);
    const {filter, queries, prune} = scene;
    if (this.row.length !== n) this.row = new Float32Array(n);
    const {row} = this;
    const order = new Int32Array(n);
    scene.heads.forEach((head, s) => {
      const sum = new Float32Array(n);
      stripes.push(sum);
      for (const t of focus.tokens) {
        if (focus.side === 'from') {
          if (t < queries.start || t >= queries.end) continue;
          filterRow(readRow(a, layer, head, t, row), filter);
        } else {
          if (t < filter.keys.start || t >= filter.keys.end || filter.hidden?.[t]) continue;
          readColumn(a, layer, head, t, row);
          const kept = scene.arcs.kept[s];
          for (let i = 0; i < n; i++) {
            if (i < queries.start || i >= queries.end) row[i] = 0;
            else if (filter.renormalize && kept[i] > 0) row[i] /= kept[i];
          }
        }
        for (let j = 0; j < n; j++) sum[j] += row[j];
        const count = pruneRow(row, prune, order);
        for (let u = 0; u < count; u++) {
          const other = order[u];
          const [i, j] = focus.side === 'from' ? [t, other] : [other, t];
          batch.add(s, row[other], leftEdge, y(i), rightEdge, y(j));
        }
      }
    });
  }

  private focus(state: Readonly<State>): Focus | null {
    const n = this.scene!.attention.numTokens;
    const locked = state.tokens.filter((t) => t < n);
    if (locked.length) return {side: state.side, tokens: locked, locked: true};
    if (this.hover) return {side: this.hover.side, tokens: [this.hover.index], locked: false};
    return null;
  }

  private focusLabel(): string {
    const focus = this.scene && this.focus(this.scene.model.state);
    return focus ? `${focus.locked ? 'locked' : 'hover'}:${focus.side}:${focus.tokens.join(',')}` : '';
  }

  /** The text line under the figure: the focused tokens, exactly as logged, and what they attend to. */
  private inspect(): void {
    const scene = this.scene!;
    const focus = this.focus(scene.model.state);
    if (!focus) {
      this.inspector.replaceChildren(
        el('span', {
          class: 'hint',
          text: 'Hover a token to see its attention · click: lock (shift: add) · ↑↓: move · Esc: clear · ←→: layer · S / P: save SVG / PNG',
        }),
      );
      return;
    }
    const a = scene.attention;
    const layer = Math.min(scene.model.state.layer, a.numLayers - 1);
    const mean = new Float32Array(a.numTokens);
    const row = new Float32Array(a.numTokens);
    for (const head of scene.heads) {
      for (const t of focus.tokens) {
        if (focus.side === 'from') filterRow(readRow(a, layer, head, t, row), scene.filter);
        else readColumn(a, layer, head, t, row);
        for (let j = 0; j < row.length; j++) mean[j] += row[j] / scene.heads.length;
      }
    }
    const tokens = focus.tokens.map((t) => `#${t} ${exactToken(a.tokens[t])}`).join(' + ');
    const verb = focus.side === 'from' ? 'attends to' : 'is attended by';
    const top = topEntries(mean, TOP_ENTRIES);
    this.inspector.replaceChildren(
      el('span', {class: 'inspector-token', attrs: {'data-inspector': 'tokens'}, text: tokens}),
      el('span', {class: 'hint', text: ` ${verb} (mean of ${scene.heads.length} head${scene.heads.length > 1 ? 's' : ''}): `}),
      ...top.map(({index, weight}) =>
        el('span', {class: 'inspector-entry', text: `${truncate(scene.labels[index], 16)} ${(weight * 100).toFixed(1)}%`}),
      ),
    );
  }

  private hit(event: MouseEvent): {side: Side; index: number} | null {
    const {x, y: yy} = this.area.point(event);
    const {layout} = this;
    const index = Math.floor((yy - HEADER_HEIGHT - PAD + layout.scrollTop) / ROW_HEIGHT);
    if (yy < HEADER_HEIGHT || index < 0 || index >= this.scene!.attention.numTokens) return null;
    if (x >= layout.leftX && x <= layout.leftX + layout.column) return {side: 'from', index};
    if (x >= layout.rightX && x <= layout.rightX + layout.column) return {side: 'to', index};
    return null;
  }

  private pointer(event: MouseEvent): void {
    if (!this.scene) return;
    const hit = this.hit(event);
    this.area.canvas.style.cursor = hit ? 'pointer' : 'default';
    this.setHover(hit);
  }

  private setHover(hover: {side: Side; index: number} | null): void {
    if (hover?.side === this.hover?.side && hover?.index === this.hover?.index) return;
    this.hover = hover;
    this.draw();
  }

  private click(event: MouseEvent): void {
    if (!this.scene) return;
    const hit = this.hit(event);
    const {store} = this.context;
    const {tokens, side} = store.state;
    if (!hit) {
      if (tokens.length) store.update({tokens: []});
      return;
    }
    if (event.shiftKey || event.metaKey || event.ctrlKey) {
      const current = side === hit.side ? tokens : [];
      const next = current.includes(hit.index) ? current.filter((t) => t !== hit.index) : [...current, hit.index].sort((x, y) => x - y);
      store.update({tokens: next, side: hit.side});
    } else if (tokens.length === 1 && tokens[0] === hit.index && side === hit.side) {
      store.update({tokens: []});
    } else {
      store.update({tokens: [hit.index], side: hit.side});
    }
  }

  private labels(a: Attention): {labels: string[]; width: number} {
    if (this.labelsKey !== a) {
      const byteLevel = isByteLevel(a.tokens);
      const labels = a.tokens.map((t) => {
        let label = truncate(displayToken(t, byteLevel), MAX_LABEL_CHARS);
        for (let max = MAX_LABEL_CHARS - 1; max > 1 && textWidth(label, FONT_FOCUS) > MAX_LABEL; max--) {
          label = truncate(label, max);
        }
        return label;
      });
      const width = labels.reduce((max, label) => Math.max(max, textWidth(label, FONT_FOCUS)), 0);
      this.labelsKey = a;
      this.labelCache = {labels, width};
    }
    return this.labelCache;
  }
}
