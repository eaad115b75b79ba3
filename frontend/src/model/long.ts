// The maths of long examples in the browser (http_api.md, "Long examples"): which window the head and
// model views open, which level of the block pyramid a zoom shows and which of its cells to fetch,
// brushes, the rows of a virtualised token list, and what a brushed range's top-k rows say.
// Nothing here is N × N: every array is O(N) or O(visible cells).

import type {LongLevel, LongRows} from '../data/decode_long';
import {LONG_PAD, MAX_MAP_CELLS, MAX_ROWS} from '../data/decode_long';
import {DEQUANTIZE} from '../data/decode';

/** What part of a long example's block map is shown: keys [x, x + Nk / k) across, queries
 * [y, y + Nq / k) down, at zoom k ≥ 1 (1: the whole map). */
export interface LongZoom {
  k: number;
  x: number;
  y: number;
}

/** The Long view's choices, and the window the head and model views open a long example in
 * (the layer and head of its map are the focus's: one shown head, else the layer's mean). */
export interface LongChoice {
  /** null: the whole map */
  zoom: LongZoom | null;
  /** queries [start, stop) whose exact top-k rows are drawn (at most 4,096); null: none */
  brush: [number, number] | null;
  /** first token of the head and model views' window; null: around the locked token (or the brush) */
  window: number | null;
}

export const WINDOW_TOKENS = 512; // the head and model views' window of a long example
export const CELL_PX = 1.5; // px a cell may be wide before the next finer level is fetched
export const TILE_CELLS = 512; // cells a side of one `/long_map` request (2¹⁸ cells, under 2²⁰)
export const MIN_VIEW_TOKENS = 16; // zoom in until the map shows this many tokens a side, no further

/** The window [A, B) of a long group of `numTokens` the head and model views show: from the
 * state's `window` when set, else centred on the locked token, else on the brushed range. */
export function windowOf(numTokens: number, choice: Readonly<LongChoice>, tokens: readonly number[]): [number, number] {
  const size = Math.min(WINDOW_TOKENS, numTokens);
  let start: number;
  if (choice.window !== null) start = choice.window;
  else if (tokens.length) start = tokens[0] - Math.floor(size / 2);
  else if (choice.brush) start = Math.floor((choice.brush[0] + choice.brush[1]) / 2) - Math.floor(size / 2);
  else start = 0;
  start = Math.max(0, Math.min(numTokens - size, start));
  return [start, start + size];
}

/** The window moved by `by` tokens (clamped inside the group). */
export function movedWindow(numTokens: number, window: readonly [number, number], by: number): number {
  const size = window[1] - window[0];
  return Math.max(0, Math.min(numTokens - size, window[0] + by));
}

/** Token ranges a map shows: keys [k0, k1) across, queries [q0, q1) down (fractional). */
export interface MapView {
  k0: number;
  k1: number;
  q0: number;
  q1: number;
}

/** The view of a zoom over a map of nq queries × nk keys (null: the whole map), kept inside it. */
export function mapView(zoom: LongZoom | null, nq: number, nk: number): MapView {
  const z = clampZoom(zoom ?? {k: 1, x: 0, y: 0}, nq, nk);
  return {k0: z.x, k1: z.x + nk / z.k, q0: z.y, q1: z.y + nq / z.k};
}

/** The largest zoom of a map of nq × nk: MIN_VIEW_TOKENS a side. */
export function maxZoom(nq: number, nk: number): number {
  return Math.max(1, Math.max(nq, nk) / MIN_VIEW_TOKENS);
}

/** A zoom kept in bounds: k from 1 to maxZoom, the view inside the map. */
export function clampZoom(zoom: LongZoom, nq: number, nk: number): LongZoom {
  const most = maxZoom(nq, nk);
  const k = Math.max(1, Math.min(most, zoom.k));
  return {k, x: Math.max(0, Math.min(nk - nk / k, zoom.x)), y: Math.max(0, Math.min(nq - nq / k, zoom.y))};
}

/** The level to draw a view with, of `levels` (coarsest first) on `pixels` CSS px a side: the
 * coarsest whose cells are at most 1.5 px wide (finer ones add little to see), else the finest.
 * A level whose visible cells would pass 2²⁰ is skipped for the one before it. */
export function levelFor(levels: readonly LongLevel[], view: MapView, pixels: number): number {
  const span = Math.max(view.k1 - view.k0, view.q1 - view.q0);
  let chosen = 0;
  for (let l = 0; l < levels.length; l++) {
    const cells = span / levels[l].block;
    if (l > 0 && visibleCells(levels[l], view) > MAX_MAP_CELLS) break;
    chosen = l;
    if (cells * CELL_PX >= pixels) break;
  }
  return chosen;
}

/** How many cells of a level a view covers. */
export function visibleCells(level: LongLevel, view: MapView): number {
  const c = cellRange(level, view);
  return (c.rows[1] - c.rows[0]) * (c.cols[1] - c.cols[0]);
}

/** The cells of a level a view covers: rows [r0, r1), columns [c0, c1). */
export function cellRange(level: LongLevel, view: MapView): {rows: [number, number]; cols: [number, number]} {
  const b = level.block;
  const clip = (v: number, n: number) => Math.max(0, Math.min(n, v));
  return {
    rows: [clip(Math.floor(view.q0 / b), level.rows), clip(Math.ceil(view.q1 / b), level.rows)],
    cols: [clip(Math.floor(view.k0 / b), level.cols), clip(Math.ceil(view.k1 / b), level.cols)],
  };
}

/** One `/long_map` request: cells [rows) × [cols) of a level. */
export interface Tile {
  rows: [number, number];
  cols: [number, number];
}

/** The tiles (TILE_CELLS a side, aligned, so a pan refetches only the new ones) that cover a view
 * of a level. */
export function tilesFor(level: LongLevel, view: MapView, tile = TILE_CELLS): Tile[] {
  const {rows, cols} = cellRange(level, view);
  const tiles: Tile[] = [];
  for (let r = Math.floor(rows[0] / tile) * tile; r < rows[1]; r += tile) {
    for (let c = Math.floor(cols[0] / tile) * tile; c < cols[1]; c += tile) {
      tiles.push({rows: [r, Math.min(level.rows, r + tile)], cols: [c, Math.min(level.cols, c + tile)]});
    }
  }
  return tiles;
}

/** A level's codes → intensities scaled to the coarsest level's block (so a region looks alike at
 * every level: a cell of half the keys holds about half the mass), as sqrt-u8 codes again. */
export function levelCodes(block: number, coarsestBlock: number): Uint8Array {
  const scale = coarsestBlock / block;
  return Uint8Array.from({length: 256}, (_, c) => Math.round(255 * Math.sqrt(Math.min(1, DEQUANTIZE[c] * scale))));
}

/** A brush from one query position to another (either order), as the range [start, stop) of at
 * most MAX_ROWS queries inside [0, nq) (a longer drag keeps its first MAX_ROWS from where it began). */
export function brushRange(from: number, to: number, nq: number): [number, number] {
  const a = Math.max(0, Math.min(nq - 1, Math.floor(Math.min(from, to))));
  const b = Math.max(a + 1, Math.min(nq, Math.floor(Math.max(from, to)) + 1));
  if (b - a <= MAX_ROWS) return [a, b];
  return from <= to ? [a, a + MAX_ROWS] : [b - MAX_ROWS, b];
}

/** Rows of a virtualised list of `count` rows of `rowHeight` px shown in `height` px scrolled by
 * `scrollTop`: [first, last) with `overscan` rows either side. */
export function visibleRows(scrollTop: number, height: number, rowHeight: number, count: number, overscan = 4): [number, number] {
  const first = Math.max(0, Math.floor(scrollTop / rowHeight) - overscan);
  const last = Math.min(count, Math.ceil((scrollTop + height) / rowHeight) + overscan);
  return [first, Math.max(first, last)];
}

/** What a brushed range's top-k rows say: each key's mean weight over the rows (O(Nk)), the keys
 * that took the most, and how much of the rows' mass the kept keys hold. */
export interface RowsSummary {
  /** mean over the rows of the weight on key j (0 where no row kept j) */
  mass: Float32Array;
  /** keys by mean weight, largest first (at most `top`) */
  top: {key: number; weight: number}[];
  /** mean over the rows of the kept keys' total weight */
  kept: number;
  /** mean over the rows of their remainder (mass on keys not kept) */
  remainder: number;
}

export function summariseRows(rows: LongRows, top = 8): RowsSummary {
  const n = rows.stop - rows.start;
  const k = rows.topK;
  const mass = new Float32Array(rows.numKeyTokens);
  let kept = 0;
  let remainder = 0;
  for (let i = 0; i < n; i++) {
    for (let t = 0; t < k; t++) {
      const j = rows.index[i * k + t];
      if (j === LONG_PAD) continue;
      const w = DEQUANTIZE[rows.codes[i * k + t]];
      mass[j] += w;
      kept += w;
    }
    remainder += DEQUANTIZE[rows.remainder[i]];
  }
  const keys: number[] = [];
  for (let j = 0; j < mass.length; j++) {
    if (mass[j] > 0) {
      mass[j] /= n;
      keys.push(j);
    }
  }
  keys.sort((a, b) => mass[b] - mass[a] || a - b);
  return {mass, top: keys.slice(0, top).map((key) => ({key, weight: mass[key]})), kept: n ? kept / n : 0, remainder: n ? remainder / n : 0};
}

/** The distance bins' labels: `0`, `1`, `2–3`, `4–7`, …, from [lo, hi) pairs. */
export function binLabel([lo, hi]: readonly [number, number]): string {
  return hi - lo <= 1 ? String(lo) : `${lo}–${hi - 1}`;
}
