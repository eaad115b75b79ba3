// Model view: every layer x head as a thumbnail of its attention matrix, on one canvas.
// Click a thumbnail to open that head in the head view.

import {headColors, tintTable} from '../../model/colors';
import {ACCENT, BORDER, font, INK, MUTED_INK, PAPER} from '../../draw/theme';
import {DEQUANTIZE, rowLength, rowStart, TOPK_PAD, type Attention} from '../../data/decode';
import {onPointer, type Point} from '../../components/pointer';
import {el} from '../../draw/dom';
import type {Painter} from '../../draw/painter';
import type {Range, RowFilter} from '../../model/transforms';
import {GroupPicker, HideToggle, PairFilter, shownHeads} from '../shared/controls';
import {weightFilter} from '../head/scene';
import {ScrollingCanvas} from '../shared/scrolling_canvas';
import {WindowBar} from '../shared/window_bar';
import {ExampleFigure, layerNames, layerNeeds, ShownExample, type ExampleModel} from '../shared/example';
import {contentHeight, GAP, HEADER_HEIGHT, LABEL_WIDTH, layerRange, modelGrid, PAD, visibleLayers} from './layout';
import type {View, ViewContext, ViewModel} from '../shared/view';

const AHEAD = 1; // layers fetched beyond the visible ones, each way, so a scroll finds them loaded
const LOADING_FILL = '#f1f1f1'; // a thumbnail whose layer has not arrived yet
const FONT_LABEL = font(500, 11);
const DIM = 0.72; // opacity of the veil over rows (or columns) other than the locked tokens'

/** A head's attention matrix (queries down, keys across) as weight codes, max-pooled to at most
 * `size` cells a side; hidden keys are dropped and rows renormalised as the filter says. */
export function thumbnailCells(
  a: Attention,
  layer: number,
  head: number,
  filter: RowFilter,
  queries: Range,
  size: number,
): {rows: number; cols: number; cells: Uint8Array} {
  const keys = filter.keys;
  const nq = Math.max(1, queries.end - queries.start);
  const nk = Math.max(1, keys.end - keys.start);
  const rows = Math.min(nq, size);
  const cols = Math.min(nk, size);
  const column = new Int32Array(a.numKeyTokens).fill(-1); // key -> pixel column (-1: filtered out)
  for (let j = keys.start; j < keys.end; j++) column[j] = Math.floor(((j - keys.start) * cols) / nk);
  const cells = new Uint8Array(rows * cols);
  const {codes, keys: slots} = a;
  const {hidden, renormalize} = filter;
  for (let i = queries.start; i < queries.end; i++) {
    const start = rowStart(a, layer, head, i);
    const length = rowLength(a, i);
    const base = Math.floor(((i - queries.start) * rows) / nq) * cols;
    if (!slots && !hidden) {
      // The common case (dense or causal rows, nothing hidden): keys are the slots themselves.
      for (let j = keys.start, end = Math.min(length, keys.end); j < end; j++) {
        const code = codes[start + j];
        const cell = base + column[j];
        if (code > cells[cell]) cells[cell] = code;
      }
      continue;
    }
    let scale = 1; // weight multiplier after hiding and renormalising
    if (hidden && renormalize) {
      let kept = 0;
      for (let t = 0; t < length; t++) {
        const j = slots ? slots[start + t] : t;
        if (j !== TOPK_PAD && !hidden[j]) kept += DEQUANTIZE[codes[start + t]];
      }
      scale = kept > 0 ? 1 / kept : 1;
    }
    for (let t = 0; t < length; t++) {
      const j = slots ? slots[start + t] : t;
      if (j === TOPK_PAD || column[j] < 0 || (hidden && hidden[j])) continue;
      let code = codes[start + t];
      if (scale !== 1) code = Math.min(255, Math.round(255 * Math.sqrt(DEQUANTIZE[code] * scale)));
      const cell = base + column[j];
      if (code > cells[cell]) cells[cell] = code;
    }
  }
  return {rows, cols, cells};
}

/** The thumbnails of one layer side by side in one bitmap (one canvas, one pixel upload per
 * layer, not per head): head h occupies columns [h * cols, (h + 1) * cols). */
export function layerThumbnails(
  a: Attention,
  layer: number,
  filter: RowFilter,
  queries: Range,
  size: number,
  tints: Uint8ClampedArray[],
): {canvas: HTMLCanvasElement; rows: number; cols: number} {
  const heads = Array.from({length: a.numHeads}, (_, h) => thumbnailCells(a, layer, h, filter, queries, size));
  const {rows, cols} = heads[0];
  const width = cols * a.numHeads;
  const image = new ImageData(width, rows);
  const pixels = new Uint32Array(image.data.buffer);
  heads.forEach(({cells}, h) => {
    const tint = new Uint32Array(tints[h].buffer);
    for (let r = 0; r < rows; r++) {
      const to = r * width + h * cols;
      for (let c = 0; c < cols; c++) pixels[to + c] = tint[cells[r * cols + c]];
    }
  });
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = rows;
  canvas.getContext('2d')!.putImageData(image, 0, 0);
  return {canvas, rows, cols};
}

interface Grid {
  width: number;
  height: number;
  thumb: number;
  left: number;
  scrollTop: number;
}

export class ModelView extends ExampleFigure implements View {
  readonly id = 'model' as const;
  readonly title = 'Model';
  readonly steps = 'attention' as const;
  readonly usesExample = true;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  protected readonly shown = new ShownExample('layers');
  private readonly area: ScrollingCanvas;
  private readonly inspector: HTMLElement;
  private readonly group: GroupPicker;
  private readonly pair: PairFilter;
  private readonly hide: HideToggle;
  private readonly windowBar: WindowBar;
  private model: ExampleModel | null = null;
  private grid: Grid = {width: 0, height: 0, thumb: 0, left: 0, scrollTop: 0};
  private thumbs = new Map<number, {canvas: HTMLCanvasElement; rows: number; cols: number}>();
  private thumbsKey = '';
  private hover: {layer: number; head: number} | null = null;
  /** the layers the last `needs` asked for, as "first-last" */
  private asked = '';

  /** `open`: what clicking a head does (by default: open it in the head view). */
  constructor(
    protected readonly context: ViewContext,
    private readonly open = (layer: number, head: number) => context.store.update({view: 'head', focus: {layer, heads: [head]}}),
  ) {
    super();
    this.group = new GroupPicker(context.store);
    this.pair = new PairFilter(context.store);
    this.hide = new HideToggle(context.store);
    this.windowBar = new WindowBar(context.store);
    this.toolbar = el('div', {class: 'toolbar-group'}, [this.windowBar.element, this.group.element, this.pair.element, this.hide.element]);
    this.area = new ScrollingCanvas('model', () => this.draw());
    this.inspector = el('div', {class: 'inspector'});
    this.element = el('div', {class: 'view view-model'}, [this.area.element, this.inspector]);
    onPointer(
      this.area.canvas,
      {
        immediate: true,
        move: (at) => this.pointer(at),
        leave: () => this.setHover(null),
        click: (at) => {
          const hit = this.hit(at);
          if (hit) this.open(hit.layer, hit.head);
        },
      },
      (event) => this.area.point(event),
    );
  }

  get width(): number {
    return this.grid.width;
  }

  get height(): number {
    return this.grid.height;
  }

  /** The example list and the layers the scroll area shows, one ahead each way. */
  needs(model: ViewModel): ReturnType<typeof layerNeeds> {
    return layerNeeds(model, (n) => {
      const range = this.wanted(n);
      this.asked = `${range.first}-${range.last}`;
      return layerRange(range);
    });
  }

  /** The layers to have loaded: those visible at the current scroll and size, and AHEAD more. */
  private wanted(numLayers: number): {first: number; last: number} {
    // Before the first layout the grid is not known: measure the area as resize will.
    const width = this.area.element.clientWidth || window.innerWidth;
    const height = this.area.element.clientHeight || window.innerHeight;
    const thumb = this.grid.thumb || modelGrid(width, this.model?.attention.numHeads ?? 1).thumb;
    return visibleLayers(this.area.scrollTop, height, thumb, numLayers, AHEAD, AHEAD);
  }

  /** Draws one example (the Compare view draws A and B through this). */
  setExample(model: ExampleModel): void {
    this.model = model;
    this.group.set(model.example.groups ?? [], model.group?.name ?? null);
    this.windowBar.set(model.window);
    this.pair.set(!model.group && Boolean(model.example.segments?.length), model.state.filters.pair);
    this.hide.set(model.state);
    this.resize();
  }

  resize(): void {
    if (!this.model) return;
    const a = this.model.attention;
    const width = this.area.element.clientWidth;
    const {thumb, left} = modelGrid(width, a.numHeads);
    this.area.fit(contentHeight(a.numLayers, thumb), HEADER_HEIGHT + PAD);
    this.grid = {width, height: this.area.height, thumb, left, scrollTop: this.area.scrollTop};
    this.draw();
  }

  paint(painter: Painter): void {
    const model = this.model;
    if (!model) return;
    const {state, attention: a} = model;
    const {thumb, left, scrollTop, height} = this.grid;
    const colors = headColors(a.numHeads);
    const {filter, queries} = weightFilter(state, a, model.group ? null : model.example.segments);
    const ranges = {queries, keys: filter.keys};
    const resolution = Math.ceil(thumb * (window.devicePixelRatio || 1));
    const key = JSON.stringify([model.key, model.window ?? null, ranges, state.filters.hide, state.filters.renorm, resolution]);
    if (key !== this.thumbsKey) {
      this.thumbsKey = key;
      this.thumbs = new Map();
    }
    const tints = colors.map(tintTable);
    const shown = new Set(shownHeads(state, a.numHeads));
    const cell = thumb + GAP;
    const top = HEADER_HEIGHT + PAD - scrollTop;
    const {first: firstLayer, last: lastLayer} = visibleLayers(scrollTop, height, thumb, a.numLayers);
    const layerOf = model.layer ?? (() => a);
    const names = layerNames(model);
    const x = (h: number) => left + LABEL_WIDTH + h * cell;
    const y = (l: number) => top + l * cell;
    const locked = state.focus.tokens.filter((t) => t < (state.focus.side === 'from' ? a.numTokens : a.numKeyTokens));
    let drawn = 0;
    let missing = 0;
    painter.clip(0, HEADER_HEIGHT, this.grid.width, height - HEADER_HEIGHT, () => {
      for (let l = firstLayer; l <= lastLayer; l++) {
        painter.text(`L${names[l]}`, left + LABEL_WIDTH - 10, y(l) + thumb / 2, {font: FONT_LABEL, color: MUTED_INK, align: 'right'});
        // A layer's thumbnails are pooled once (O(stored weights)) and kept as one bitmap, so a
        // hover or a scroll only copies pixels.
        let strip = this.thumbs.get(l);
        const weights = strip ? null : layerOf(l);
        if (!strip && weights) {
          strip = layerThumbnails(weights, l, filter, ranges.queries, resolution, tints);
          this.thumbs.set(l, strip);
        }
        if (!strip) missing++;
        for (let h = 0; h < a.numHeads; h++) {
          if (strip) {
            painter.image(strip.canvas, x(h), y(l), thumb, thumb, false, {x: h * strip.cols, y: 0, w: strip.cols, h: strip.rows});
            if (locked.length) this.veil(painter, x(h), y(l), thumb, locked, state.focus.side === 'from' ? ranges.queries : ranges.keys, state.focus.side);
            drawn++;
          } else {
            painter.rect(x(h), y(l), thumb, thumb, LOADING_FILL);
          }
          const selected = l === state.focus.layer && shown.has(h);
          const hovered = this.hover?.layer === l && this.hover.head === h;
          if (selected || hovered) painter.strokeRect(x(h) - 1, y(l) - 1, thumb + 2, thumb + 2, hovered ? INK : ACCENT, 2);
          else painter.strokeRect(x(h) - 0.5, y(l) - 0.5, thumb + 1, thumb + 1, BORDER, 1);
        }
      }
    });
    for (let h = 0; h < a.numHeads; h++) {
      painter.rect(x(h) + thumb / 2 - 14, HEADER_HEIGHT / 2 - 4, 8, 8, colors[h]);
      painter.text(String(h), x(h) + thumb / 2 - 2, HEADER_HEIGHT / 2, {font: FONT_LABEL, color: MUTED_INK, align: 'left'});
    }
    painter.text('HEAD →', left + LABEL_WIDTH - 10, HEADER_HEIGHT / 2, {font: FONT_LABEL, color: MUTED_INK, align: 'right'});
    // Set once every visible thumbnail is drawn (tests and tools wait for it).
    if (missing) delete this.area.canvas.dataset.thumbnails;
    else this.area.canvas.dataset.thumbnails = String(drawn);
    this.area.canvas.dataset.layout = JSON.stringify({left: x(0), top: y(0), thumb, step: cell});
    this.area.canvas.dataset.layers = `${firstLayer}-${lastLayer}`;
  }

  /** Veils a thumbnail except the rows (queries) or columns (keys) of the locked tokens. */
  private veil(painter: Painter, x: number, y: number, size: number, tokens: number[], range: Range, side: 'from' | 'to'): void {
    const n = Math.max(1, range.end - range.start);
    const bands = tokens
      .filter((t) => t >= range.start && t < range.end)
      .map((t) => [((t - range.start) / n) * size, ((t - range.start + 1) / n) * size]);
    let at = 0;
    const gap = (from: number, to: number) => {
      if (to <= from) return;
      if (side === 'from') painter.rect(x, y + from, size, to - from, PAPER, DIM);
      else painter.rect(x + from, y, to - from, size, PAPER, DIM);
    };
    for (const [start, end] of bands) {
      gap(at, start);
      at = Math.max(at, Math.max(end, start + 1));
    }
    gap(at, size);
  }

  private draw(): void {
    if (!this.model) return;
    this.grid.scrollTop = this.area.scrollTop;
    this.paint(this.area.painter());
    this.inspect();
    // Scrolled (or resized) to layers not asked for: the app asks `needs` again.
    if (this.model.layer) {
      const range = this.wanted(this.model.attention.numLayers);
      if (`${range.first}-${range.last}` !== this.asked) this.context.needsChanged?.();
    }
  }

  private inspect(): void {
    const text = this.hover
      ? `Layer ${this.model ? layerNames(this.model)[this.hover.layer] : this.hover.layer}, head ${this.hover.head}: click to open it in the head view`
      : 'Each thumbnail is one head: queries down, keys across, stronger colour = more attention · click one to open it in the head view';
    this.inspector.replaceChildren(el('span', {class: 'hint', text}));
  }

  private hit(point: Point): {layer: number; head: number} | null {
    if (!this.model) return null;
    const a = this.model.attention;
    const {thumb, left, scrollTop} = this.grid;
    const cell = thumb + GAP;
    const x = point.x - left - LABEL_WIDTH;
    const y = point.y - HEADER_HEIGHT - PAD + scrollTop;
    if (point.y < HEADER_HEIGHT || x < 0 || y < 0) return null;
    const head = Math.floor(x / cell);
    const layer = Math.floor(y / cell);
    if (head >= a.numHeads || layer >= a.numLayers || x % cell > thumb || y % cell > thumb) return null;
    return {layer, head};
  }

  private pointer(at: Point): void {
    const hit = this.hit(at);
    this.area.canvas.style.cursor = hit ? 'pointer' : 'default';
    this.setHover(hit);
  }

  private setHover(hover: {layer: number; head: number} | null): void {
    if (hover?.layer === this.hover?.layer && hover?.head === this.hover?.head) return;
    this.hover = hover;
    this.draw();
  }
}
