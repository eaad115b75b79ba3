// The Long view's block map: one canvas, zoomed and panned with d3-zoom like a map. The coarsest
// level is always drawn (scaled), the finer level a zoom asks for over it as its tiles arrive; a
// brushed range's exact top-k rows are drawn as dots; shift-drag (or a drag on the query axis) brushes.

import {format} from 'd3-format';
import {select} from 'd3-selection';
import {zoom as d3zoom, zoomIdentity, type ZoomBehavior} from 'd3-zoom';
import {tintTable} from '../../model/colors';
import {DEQUANTIZE} from '../../data/decode';
import {LONG_PAD, type LongLevel, type LongMap, type LongRows} from '../../data/decode_long';
import {el, frameThrottle} from '../../draw/dom';
import {CanvasPainter, type Painter} from '../../draw/painter';
import {ACCENT, AXIS_LINE, BORDER, FONT_SMALL, INK, MUTED_INK, PAPER} from '../../draw/theme';
import {Tooltip} from '../../draw/tooltip';
import {brushRange, cellRange, levelCodes, maxZoom, tilesFor, type Tile} from '../../model/long';
import type {LongZoom} from '../../state/state';
import {keyX, mapBox, mapPlan, queryY, tokenAt, tokenTicks, transformOf, zoomOf, type MapBox, type MapPlan, type Transform} from './scene';

const count = format(',');
const ZOOM_WRITE_MS = 120; // a gesture writes its zoom to the state (and so fetches) this often
const ZOOM_STEP = 2; // the + / − buttons' factor

/** What the map draws, as the view resolved it from the state and the cache. */
export interface MapData {
  levels: readonly LongLevel[];
  nq: number;
  nk: number;
  /** the head's colour, or the ink of the layer's mean */
  color: string;
  /** a tile of a level, when it has arrived */
  tile(level: number, tile: Tile): LongMap | null;
  /** the brushed range's top-k rows (of the shown head), when they have arrived */
  rows: LongRows | null;
  brush: [number, number] | null;
  /** the locked token, as an absolute position */
  token: number | null;
  /** text naming what the map shows, e.g. "layer 2, head 3" */
  title: string;
}

export interface MapHandlers {
  zoomed(zoom: LongZoom | null): void;
  brushed(range: [number, number]): void;
}

interface Hovered {
  level: number;
  block: number;
  row: number;
  col: number;
  mass: number;
}

export class MapPane {
  readonly element: HTMLElement;
  readonly canvas: HTMLCanvasElement;
  private readonly tooltip: Tooltip;
  private readonly behavior: ZoomBehavior<HTMLCanvasElement, unknown>;
  private data: MapData | null = null;
  private box: MapBox = {x: 0, y: 0, side: 0, nq: 1, nk: 1};
  private width = 0;
  private height = 0;
  private live: LongZoom = {k: 1, x: 0, y: 0};
  /** the zoom last written to the state (what comes back from it is not applied again) */
  private written: LongZoom | null = null;
  private applying = false;
  private writeTimer = 0;
  private brushing: {from: number; to: number} | null = null;
  private hover: {x: number; y: number; clientX: number; clientY: number} | null = null;
  private readonly tiles = new WeakMap<LongMap, {table: Uint8ClampedArray; canvas: HTMLCanvasElement}>();
  private readonly tables = new Map<string, Uint8ClampedArray>();
  /** the last frame's drawing time, ms (the benchmark reads it) */
  frameMs = 0;

  constructor(private readonly handlers: MapHandlers) {
    this.canvas = el('canvas', {class: 'figure long-map', attrs: {'data-figure': 'long-map', tabindex: '0', 'aria-label': 'Block map: scroll to zoom, drag to pan, shift-drag to brush queries'}});
    const zoomIn = el('button', {class: 'button', text: '+', title: 'Zoom in', attrs: {'data-control': 'zoom-in'}, on: {click: () => this.zoomBy(ZOOM_STEP)}});
    const zoomOut = el('button', {class: 'button', text: '−', title: 'Zoom out', attrs: {'data-control': 'zoom-out'}, on: {click: () => this.zoomBy(1 / ZOOM_STEP)}});
    const reset = el('button', {class: 'button', text: 'Whole map', title: 'Show the whole example', attrs: {'data-control': 'zoom-reset'}, on: {click: () => this.setZoom(null, true)}});
    this.element = el('div', {class: 'long-map-pane'}, [this.canvas, el('div', {class: 'long-map-buttons'}, [zoomIn, zoomOut, reset])]);
    this.tooltip = new Tooltip(this.element);
    this.behavior = d3zoom<HTMLCanvasElement, unknown>()
      // Pan and zoom on the map; a drag on the query axis or with shift brushes instead.
      .filter((event: MouseEvent | WheelEvent) => event.type === 'wheel' || (!event.button && !event.shiftKey && !event.ctrlKey && event.offsetX >= this.box.x))
      .on('zoom', (event: {transform: Transform}) => {
        this.live = zoomOf(event.transform, this.box);
        this.drawSoon();
        if (!this.applying) this.writeSoon();
      })
      .on('end', () => {
        if (!this.applying) this.writeNow();
      });
    select(this.canvas).call(this.behavior).on('dblclick.zoom', null);
    this.canvas.addEventListener('mousedown', (event) => this.brushStart(event));
    this.canvas.addEventListener('mousemove', (event) => {
      this.hover = {x: event.offsetX, y: event.offsetY, clientX: event.clientX, clientY: event.clientY};
      this.drawSoon();
    });
    this.canvas.addEventListener('mouseleave', () => {
      this.hover = null;
      this.tooltip.hide();
      this.drawSoon();
    });
  }

  /** The map's square for a canvas of the pane's size (an estimate before the first layout). */
  boxFor(nq: number, nk: number): MapBox {
    const width = this.element.clientWidth || window.innerWidth * 0.5;
    const height = this.element.clientHeight || window.innerHeight * 0.8;
    return mapBox(width, height, nq, nk);
  }

  /** New data or state; `zoom` is the state's (applied unless it is what the map wrote). */
  set(data: MapData, zoom: LongZoom | null): void {
    const resized = !this.data || this.data.nq !== data.nq || this.data.nk !== data.nk;
    this.data = data;
    if (resized) this.layout();
    const same = (a: LongZoom | null, b: LongZoom | null) =>
      (a ?? {k: 1, x: 0, y: 0}).k.toFixed(3) === (b ?? {k: 1, x: 0, y: 0}).k.toFixed(3) &&
      Math.abs((a?.x ?? 0) - (b?.x ?? 0)) < 1 &&
      Math.abs((a?.y ?? 0) - (b?.y ?? 0)) < 1;
    if (resized || (!same(zoom, this.written) && !same(zoom, this.live))) this.setZoom(zoom, false);
    this.draw();
  }

  resize(): void {
    if (!this.data) return;
    this.layout();
    this.setZoom(this.live, false);
    this.draw();
  }

  private layout(): void {
    const data = this.data!;
    this.width = this.element.clientWidth;
    this.height = this.element.clientHeight;
    this.box = mapBox(this.width, this.height, data.nq, data.nk);
    const {x, y, side} = this.box;
    this.behavior
      .extent([[x, y], [x + side, y + side]])
      .translateExtent([[x, y], [x + side, y + side]])
      .scaleExtent([1, maxZoom(data.nq, data.nk)]);
    this.canvas.style.width = `${this.width}px`;
    this.canvas.style.height = `${this.height}px`;
  }

  /** Moves the map to `zoom` (null: whole); `write`: and tells the state. */
  private setZoom(zoom: LongZoom | null, write: boolean): void {
    const t = transformOf(zoom, this.box);
    this.applying = !write;
    this.behavior.transform(select(this.canvas), zoomIdentity.translate(t.x, t.y).scale(t.k));
    this.applying = false;
    if (write) this.writeNow();
  }

  private zoomBy(factor: number): void {
    this.behavior.scaleBy(select(this.canvas), factor, [this.box.x + this.box.side / 2, this.box.y + this.box.side / 2]);
    this.writeNow();
  }

  private writeSoon(): void {
    if (!this.writeTimer) this.writeTimer = window.setTimeout(() => this.writeNow(), ZOOM_WRITE_MS);
  }

  private writeNow(): void {
    window.clearTimeout(this.writeTimer);
    this.writeTimer = 0;
    const z = this.live;
    const whole = z.k <= 1.0001;
    this.written = whole ? null : {k: Math.round(z.k * 1e4) / 1e4, x: Math.round(z.x), y: Math.round(z.y)};
    this.handlers.zoomed(this.written);
  }

  private readonly drawSoon = frameThrottle(() => this.draw());

  private brushStart(event: MouseEvent): void {
    if (event.button || !this.data || !(event.shiftKey || event.offsetX < this.box.x)) return;
    const query = this.queryAt(event.offsetY);
    if (query === null) return;
    event.preventDefault();
    this.brushing = {from: query, to: query};
    const move = (e: MouseEvent) => {
      const box = this.canvas.getBoundingClientRect();
      const q = this.queryAt(e.clientY - box.top);
      if (q !== null && this.brushing) this.brushing.to = q;
      this.drawSoon();
    };
    const up = () => {
      window.removeEventListener('mousemove', move);
      window.removeEventListener('mouseup', up);
      const b = this.brushing;
      this.brushing = null;
      if (b && this.data) this.handlers.brushed(brushRange(b.from, b.to, this.data.nq));
      this.draw();
    };
    window.addEventListener('mousemove', move);
    window.addEventListener('mouseup', up);
  }

  private queryAt(y: number): number | null {
    const {box} = this;
    const yy = Math.max(box.y, Math.min(box.y + box.side - 1e-6, y));
    return tokenAt(box, this.live, box.x, yy)?.query ?? null;
  }

  draw(): void {
    if (!this.data || !this.width) return;
    const started = performance.now();
    this.paint(new CanvasPainter(this.canvas, this.width, this.height));
    this.frameMs = performance.now() - started;
    this.canvas.dataset.frameMs = this.frameMs.toFixed(2);
  }

  get size(): {width: number; height: number} {
    return {width: this.width, height: this.height};
  }

  /** The figure as shown (screen, PNG and SVG export). */
  paint(painter: Painter): void {
    const data = this.data;
    if (!data) return;
    const {box, live: zoom} = this;
    const plan = mapPlan(data.levels, zoom, box);
    painter.rect(box.x, box.y, box.side, box.side, PAPER);
    let loaded = 0;
    let wanted = 0;
    painter.clip(box.x, box.y, box.side, box.side, () => {
      // Coarsest first, then every finer level up to the one asked for, as far as they have arrived.
      for (let level = 0; level <= plan.level; level++) {
        const tiles = level === 0 ? plan.background : tilesFor(data.levels[level], plan.view);
        for (const tile of tiles) {
          const map = data.tile(level, tile);
          if (level === plan.level) wanted++;
          if (!map) continue;
          if (level === plan.level) loaded++;
          this.paintTile(painter, map, plan);
        }
      }
      this.paintRows(painter, data, plan);
      this.paintMarks(painter, data);
    });
    painter.strokeRect(box.x - 0.5, box.y - 0.5, box.side + 1, box.side + 1, BORDER);
    this.paintAxes(painter, plan);
    const hovered = this.paintHover(painter, data, plan);
    const c = this.canvas.dataset;
    c.level = String(plan.level);
    c.block = String(data.levels[plan.level].block);
    c.tiles = `${loaded}/${wanted}`;
    c.view = [plan.view.k0, plan.view.k1, plan.view.q0, plan.view.q1].map((v) => Math.round(v)).join(':');
    c.layout = JSON.stringify({x: box.x, y: box.y, side: box.side, nq: box.nq, nk: box.nk, zoom});
    c.hover = hovered ? JSON.stringify(hovered) : '';
    c.map = data.title;
  }

  /** One tile: only its visible cells are drawn (a tile at a deep zoom would be far larger than the screen). */
  private paintTile(painter: Painter, map: LongMap, plan: MapPlan): void {
    const {box, live: zoom} = this;
    const b = map.block;
    const visible = cellRange({block: b, rows: map.levelRows, cols: map.levelCols}, plan.view);
    const r0 = Math.max(map.rows[0], visible.rows[0]);
    const r1 = Math.min(map.rows[1], visible.rows[1]);
    const c0 = Math.max(map.cols[0], visible.cols[0]);
    const c1 = Math.min(map.cols[1], visible.cols[1]);
    if (r0 >= r1 || c0 >= c1) return;
    const source = this.tileCanvas(map);
    const x0 = keyX(box, zoom, c0 * b);
    const y0 = queryY(box, zoom, r0 * b);
    painter.image(source, x0, y0, keyX(box, zoom, c1 * b) - x0, queryY(box, zoom, r1 * b) - y0, false, {
      x: c0 - map.cols[0],
      y: r0 - map.rows[0],
      w: c1 - c0,
      h: r1 - r0,
    });
  }

  private tileCanvas(map: LongMap): HTMLCanvasElement {
    const table = this.table(this.data!.color, map.block);
    const cached = this.tiles.get(map);
    if (cached && cached.table === table) return cached.canvas;
    const w = map.cols[1] - map.cols[0];
    const h = map.rows[1] - map.rows[0];
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, w);
    canvas.height = Math.max(1, h);
    const image = new ImageData(canvas.width, canvas.height);
    const pixels = new Uint32Array(image.data.buffer);
    const rgba = new Uint32Array(table.buffer);
    for (let i = 0; i < w * h; i++) pixels[i] = rgba[map.codes[i]];
    canvas.getContext('2d')!.putImageData(image, 0, 0);
    this.tiles.set(map, {table, canvas});
    return canvas;
  }

  /** RGBA per code of a level: the colour's tint of the mass scaled to the coarsest block. */
  private table(color: string, block: number): Uint8ClampedArray {
    const key = `${color}:${block}`;
    let table = this.tables.get(key);
    if (!table) {
      const tint = tintTable(color);
      const codes = levelCodes(block, this.data!.levels[0].block);
      table = new Uint8ClampedArray(256 * 4);
      for (let c = 0; c < 256; c++) table.set(tint.subarray(codes[c] * 4, codes[c] * 4 + 4), c * 4);
      this.tables.set(key, table);
    }
    return table;
  }

  /** The brushed rows' kept keys as dots, darker for larger weights; drawn only where visible. */
  private paintRows(painter: Painter, data: MapData, plan: MapPlan): void {
    const rows = data.rows;
    if (!rows) return;
    const {box, live: zoom} = this;
    const px = (zoom.k * box.side) / box.nk; // a key's width
    const pq = (zoom.k * box.side) / box.nq; // a query's height
    const size = Math.max(2, px, pq);
    const buckets: number[][] = [[], [], [], []];
    const k = rows.topK;
    const first = Math.max(rows.start, Math.floor(plan.view.q0));
    const last = Math.min(rows.stop, Math.ceil(plan.view.q1));
    let drawn = 0;
    for (let i = first; i < last; i++) {
      const y = queryY(box, zoom, i);
      for (let t = 0; t < k; t++) {
        const slot = (i - rows.start) * k + t;
        const j = rows.index[slot];
        if (j === LONG_PAD || j < plan.view.k0 - 1 || j > plan.view.k1) continue;
        const w = DEQUANTIZE[rows.codes[slot]];
        buckets[w >= 0.5 ? 0 : w >= 0.2 ? 1 : w >= 0.05 ? 2 : 3].push(keyX(box, zoom, j), y);
        drawn++;
      }
    }
    const alphas = [1, 0.75, 0.5, 0.25];
    buckets.forEach((xy, b) => {
      if (!xy.length) return;
      painter.path(
        (ctx) => {
          for (let s = 0; s < xy.length; s += 2) {
            const x = xy[s] - (size - px) / 2;
            const y = xy[s + 1] - (size - pq) / 2;
            ctx.moveTo(x, y);
            ctx.lineTo(x + size, y);
            ctx.lineTo(x + size, y + size);
            ctx.lineTo(x, y + size);
            ctx.closePath();
          }
        },
        {fill: ACCENT, alpha: alphas[b]},
      );
    });
    this.canvas.dataset.rows = String(drawn);
  }

  /** The brushed range (and a brush being dragged) and the locked token's row and column. */
  private paintMarks(painter: Painter, data: MapData): void {
    const {box, live: zoom} = this;
    const brush = this.brushing ? brushRange(this.brushing.from, this.brushing.to, data.nq) : data.brush;
    if (brush) {
      const y0 = queryY(box, zoom, brush[0]);
      const y1 = Math.max(y0 + 1, queryY(box, zoom, brush[1]));
      painter.rect(box.x, y0, box.side, y1 - y0, ACCENT, 0.08);
      painter.lines([box.x, y0, box.x + box.side, y0, box.x, y1, box.x + box.side, y1], 2, ACCENT, 0.8, 1);
    }
    if (data.token !== null) {
      const x = keyX(box, zoom, data.token + 0.5);
      const y = queryY(box, zoom, data.token + 0.5);
      painter.lines([box.x, y, box.x + box.side, y, x, box.y, x, box.y + box.side], 2, INK, 0.35, 1);
    }
  }

  private paintAxes(painter: Painter, plan: MapPlan): void {
    const {box, live: zoom, data} = this;
    const {view} = plan;
    const xy: number[] = [];
    for (const t of tokenTicks(view.k0, view.k1, box.side / 90)) {
      const x = keyX(box, zoom, t);
      xy.push(x, box.y - 4, x, box.y);
      painter.text(count(t), x, box.y - 12, {font: FONT_SMALL, color: MUTED_INK, align: 'center'});
    }
    for (const t of tokenTicks(view.q0, view.q1, box.side / 60)) {
      const y = queryY(box, zoom, t);
      xy.push(box.x - 4, y, box.x, y);
      painter.text(count(t), box.x - 7, y, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    }
    painter.lines(xy, xy.length / 4, AXIS_LINE, 1, 1);
    painter.text('key →', box.x + box.side, 8, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    painter.text('query ↓', 4, 8, {font: FONT_SMALL, color: MUTED_INK, align: 'left'});
    const brush = this.brushing ? brushRange(this.brushing.from, this.brushing.to, box.nq) : data?.brush;
    if (brush) {
      const y0 = queryY(box, zoom, brush[0]);
      const y1 = Math.max(y0 + 2, queryY(box, zoom, brush[1]));
      painter.clip(0, box.y, box.x, box.side, () => painter.rect(box.x - 5, y0, 4, y1 - y0, ACCENT));
    }
  }

  /** The hovered block: outlined, and its token ranges and mass in the tooltip. */
  private paintHover(painter: Painter, data: MapData, plan: MapPlan): Hovered | null {
    const at = this.hover && !this.brushing ? tokenAt(this.box, this.live, this.hover.x, this.hover.y) : null;
    if (!at || !this.hover) {
      this.tooltip.hide();
      return null;
    }
    for (let level = plan.level; level >= 0; level--) {
      const info = data.levels[level];
      const row = Math.floor(at.query / info.block);
      const col = Math.floor(at.key / info.block);
      const tiles = tilesFor(info, {k0: col * info.block, k1: col * info.block + 1, q0: row * info.block, q1: row * info.block + 1});
      const map = tiles.length ? data.tile(level, tiles[0]) : null;
      if (!map) continue;
      const mass = DEQUANTIZE[map.codes[(row - map.rows[0]) * (map.cols[1] - map.cols[0]) + (col - map.cols[0])]];
      const {box, live: zoom} = this;
      const q = [row * info.block, Math.min(data.nq, (row + 1) * info.block)];
      const k = [col * info.block, Math.min(data.nk, (col + 1) * info.block)];
      const x0 = keyX(box, zoom, k[0]);
      const y0 = queryY(box, zoom, q[0]);
      painter.clip(box.x, box.y, box.side, box.side, () =>
        painter.strokeRect(x0, y0, Math.max(2, keyX(box, zoom, k[1]) - x0), Math.max(2, queryY(box, zoom, q[1]) - y0), INK, 1.5),
      );
      const range = ([a, b]: number[]) => (b - a === 1 ? count(a) : `${count(a)}–${count(b - 1)}`);
      this.tooltip.show(this.hover.clientX, this.hover.clientY, [
        {label: 'Queries', value: range(q), strong: true},
        {label: 'Keys', value: range(k), strong: true},
        {label: 'Mass', value: `${(mass * 100).toFixed(mass < 0.01 ? 2 : 1)}% (mean over the queries)`},
        `Level ${level}: blocks of ${info.block} token${info.block > 1 ? 's' : ''} · ${data.title}`,
      ]);
      return {level, block: info.block, row, col, mass};
    }
    this.tooltip.hide();
    return null;
  }
}
