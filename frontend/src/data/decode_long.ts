// The decoders of a long group's answers (http_api.md, "Long examples"): `/long_map` (TBLM), one
// level of a layer's block pyramid, and `/long_rows` (TBLR), exact top-k rows of a query range.
// Nothing here is N × N: a map answer holds at most 2²⁰ cells, a rows answer at most 4,096 rows.

import {checkPayload, DEQUANTIZE, FormatError, positiveInt, unpack} from './decode';

export const LONG_PAD = 0xffffffff; // key index of an unused slot of a top-k row
export const MAX_MAP_CELLS = 1 << 20; // cells one `/long_map` answer may hold
export const MAX_ROWS = 4096; // queries one `/long_rows` answer may hold

/** A rectangle of one level of a layer's block pyramid (cell (r, c) = mean over the block's
 * queries of their mass on the block's keys). */
export interface LongMap {
  layer: number;
  /** null: the mean over the layer's heads */
  head: number | null;
  level: number;
  /** tokens per block side */
  block: number;
  /** the cells held: rows [r0, r1), columns [c0, c1) of the level */
  rows: [number, number];
  cols: [number, number];
  levelRows: number;
  levelCols: number;
  numTokens: number;
  numKeyTokens: number;
  /** sqrt-u8 codes, [r1 − r0, c1 − c0] row-major */
  codes: Uint8Array;
}

/** The exact top-k rows of queries [start, stop) of one head. */
export interface LongRows {
  layer: number;
  head: number;
  start: number;
  stop: number;
  topK: number;
  numKeyTokens: number;
  /** key of each slot, [n, k] (LONG_PAD where unused) */
  index: Uint32Array;
  /** sqrt-u8 weight of each slot, [n, k] */
  codes: Uint8Array;
  /** sqrt-u8 remainder of each row: its mass outside the kept keys */
  remainder: Uint8Array;
}

/** `GET /long_profile`: the example's distance profile and sink mass, per layer and head. */
export interface LongProfile {
  group: string;
  num_layers: number;
  num_heads: number;
  num_tokens: number;
  num_key_tokens: number;
  top_k: number;
  sink_tokens: number;
  levels: LongLevel[];
  /** [lo, hi) distances of each bin */
  bins: [number, number][];
  /** [L][H][B]: mean over queries of the mass at distances in bin b */
  profile: number[][][];
  /** [L][H][s]: mean mass on sink token s */
  sinks: number[][][];
  local_share: number[][];
  sink_share: number[][];
}

/** One stored level of a long group's block pyramid. */
export interface LongLevel {
  block: number;
  rows: number;
  cols: number;
}

function range(header: Record<string, unknown>, field: string): [number, number] {
  const value = header[field];
  if (!Array.isArray(value) || value.length !== 2 || !value.every((v) => Number.isInteger(v) && v >= 0) || value[0] > value[1]) {
    throw new FormatError(`header field ${field} is not a range [start, stop]`);
  }
  return [value[0] as number, value[1] as number];
}

/** Decodes the body of `GET /long_map` (after gzip is undone). */
export function decodeLongMap(buffer: ArrayBuffer): LongMap {
  const {header, payload} = unpack(buffer, 'TBLM');
  const rows = range(header, 'rows');
  const cols = range(header, 'cols');
  const levelRows = positiveInt(header, 'level_rows');
  const levelCols = positiveInt(header, 'level_cols');
  if (rows[1] > levelRows || cols[1] > levelCols) {
    throw new FormatError(`cells [${rows}] × [${cols}] lie outside the level's ${levelRows} × ${levelCols}`);
  }
  const cells = (rows[1] - rows[0]) * (cols[1] - cols[0]);
  if (cells > MAX_MAP_CELLS) throw new FormatError(`a map answer of ${cells} cells (at most ${MAX_MAP_CELLS})`);
  checkPayload(buffer, payload, cells);
  const head = header.head === null ? null : positiveInt(header, 'head');
  return {
    layer: positiveInt(header, 'layer'),
    head,
    level: positiveInt(header, 'level'),
    block: positiveInt(header, 'block'),
    rows,
    cols,
    levelRows,
    levelCols,
    numTokens: positiveInt(header, 'num_tokens'),
    numKeyTokens: positiveInt(header, 'num_key_tokens'),
    codes: new Uint8Array(buffer, payload, cells),
  };
}

/** Decodes the body of `GET /long_rows` (after gzip is undone); checks every key lies inside the keys. */
export function decodeLongRows(buffer: ArrayBuffer): LongRows {
  const {header, payload} = unpack(buffer, 'TBLR');
  const start = positiveInt(header, 'start');
  const stop = positiveInt(header, 'stop');
  if (stop < start || stop - start > MAX_ROWS) throw new FormatError(`rows ${start}..${stop}: at most ${MAX_ROWS} per answer`);
  const topK = positiveInt(header, 'top_k');
  const numKeyTokens = positiveInt(header, 'num_key_tokens');
  const n = stop - start;
  const slots = n * topK;
  checkPayload(buffer, payload, 4 * slots + slots + n);
  // The payload starts 8-byte aligned (the header is padded), and browsers are little-endian.
  const index = new Uint32Array(buffer, payload, slots);
  for (let s = 0; s < slots; s++) {
    if (index[s] >= numKeyTokens && index[s] !== LONG_PAD) throw new FormatError(`row slot ${s} names key ${index[s]} of ${numKeyTokens}`);
  }
  return {
    layer: positiveInt(header, 'layer'),
    head: positiveInt(header, 'head'),
    start,
    stop,
    topK,
    numKeyTokens,
    index,
    codes: new Uint8Array(buffer, payload + 4 * slots, slots),
    remainder: new Uint8Array(buffer, payload + 5 * slots, n),
  };
}

/** The weight of a sqrt-u8 code. */
export function weightOf(code: number): number {
  return DEQUANTIZE[code];
}

/** Checks the shape of a `/long_profile` answer against itself: bins, layers and heads agree. */
export function checkLongProfile(p: LongProfile): LongProfile {
  const fail = (what: string) => {
    throw new FormatError(`the distance profile ${what}`);
  };
  if (!Array.isArray(p.bins) || !Array.isArray(p.profile)) fail('has no bins or profile');
  if (p.profile.length !== p.num_layers) fail(`holds ${p.profile.length} layers, not ${p.num_layers}`);
  for (const layer of p.profile) {
    if (!Array.isArray(layer) || layer.length !== p.num_heads) fail(`holds a layer of ${layer?.length} heads, not ${p.num_heads}`);
    for (const head of layer) if (!Array.isArray(head) || head.length !== p.bins.length) fail(`holds a head of ${head?.length} bins, not ${p.bins.length}`);
  }
  return p;
}
