// The decoder of the binary body of `/qk` (TBQK): query and key vectors as float16 or float32 (the
// header's `dtype`; float16 when absent), and the per-layer scoring rules; see http_api.md.

import {checkPayload, FormatError, positiveInt, unpack} from './decode';

export interface QueryKeyHeader {
  num_layers: number;
  num_heads: number;
  num_kv_heads: number;
  num_tokens: number;
  /** v2: key vectors per head (v1: num_tokens) */
  num_key_tokens?: number;
  head_dim: number;
  /** "float16" or "float32"; absent in blobs written before it could be float32 (then float16) */
  dtype?: string;
  scaling: number[];
  [field: string]: unknown;
}

export interface QueryKey {
  header: QueryKeyHeader;
  /** layers held: [firstLayer, firstLayer + numLayers) of the group (`/qk?layer=L`: one, L) */
  numLayers: number;
  firstLayer: number;
  numHeads: number;
  numKvHeads: number;
  /** query vectors per head */
  numTokens: number;
  /** key vectors per head */
  numKeyTokens: number;
  headDim: number;
  /** per layer, the factor on q·k before the softmax */
  scaling: number[];
  /** per layer, the soft cap c of the logits (c · tanh(x / c)), or null */
  softcap: (number | null)[];
  /** per layer, the window: keys |i − j| ≥ window away are masked; or null */
  slidingWindow: (number | null)[];
  /** per layer, one sink logit per head that takes part in the softmax; or null */
  sinks: (number[] | null)[];
  /** per layer, the chunk size C: keys with ⌊i / C⌋ ≠ ⌊j / C⌋ are masked (Llama 4); or null */
  attentionChunk: (number | null)[];
  /** per layer, [a, b] spans: the layer is causal (window and chunk too) but for the keys of a query's own span; or null */
  bidirectionalSpans: (number[][] | null)[];
  /** per layer, per head, Nk numbers: keyBias[h][j] is added to every query's logit of key j (ALiBi); or null */
  keyBias: (number[][] | null)[];
  /** per layer, per head, Nq + Nk − 1 numbers: [h][j − i + Nq − 1] is added to the logit of (i, j) (T5); or null */
  relativeBias: (number[][] | null)[];
  /** [L, H, N, d], the stored float16 or float32 values */
  query: Float32Array;
  /** [L, K, Nk, d] */
  key: Float32Array;
}

// float16 -> float32 through a table of all 65536 bit patterns (256 KiB, built on first use).
let halfTable: Float32Array | null = null;

function buildHalfTable(): Float32Array {
  const table = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const fraction = bits & 0x3ff;
    table[bits] =
      exponent === 0
        ? sign * 2 ** -14 * (fraction / 1024)
        : exponent === 31
          ? fraction
            ? NaN
            : sign * Infinity
          : sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
  }
  return table;
}

/** float16 bit patterns as float32 values. */
export function halvesToFloats(bits: Uint16Array, out = new Float32Array(bits.length)): Float32Array {
  halfTable ??= buildHalfTable();
  for (let t = 0; t < bits.length; t++) out[t] = halfTable[bits[t]];
  return out;
}

/** One of the optional per-layer scoring rules of a q/k header (see http_api.md): all null when absent. */
function scoringRule(header: Record<string, unknown>, field: string, numLayers: number, valid: (v: unknown) => boolean): unknown[] {
  const values = header[field];
  if (values === undefined || values === null) return new Array<null>(numLayers).fill(null);
  if (!Array.isArray(values) || values.length !== numLayers || !values.every((v) => v === null || valid(v))) {
    throw new FormatError(`header ${field} is not one valid entry (or null) per layer`);
  }
  return values;
}

/** Decodes the body of `GET /qk`. */
export function decodeQueryKey(buffer: ArrayBuffer): QueryKey {
  const {header, payload} = unpack(buffer, 'TBQK');
  const numLayers = positiveInt(header, 'num_layers');
  const firstLayer = header.first_layer === undefined ? 0 : positiveInt(header, 'first_layer');
  const numHeads = positiveInt(header, 'num_heads');
  const numKvHeads = positiveInt(header, 'num_kv_heads');
  const numTokens = positiveInt(header, 'num_tokens');
  const numKeyTokens = header.num_key_tokens === undefined ? numTokens : positiveInt(header, 'num_key_tokens');
  const headDim = positiveInt(header, 'head_dim');
  const dtype = header.dtype ?? 'float16';
  if (dtype !== 'float16' && dtype !== 'float32') throw new FormatError(`unknown query/key dtype ${JSON.stringify(header.dtype)}`);
  const itemSize = dtype === 'float16' ? 2 : 4;
  if (numKvHeads === 0 || numHeads % numKvHeads !== 0) {
    throw new FormatError(`${numHeads} query heads are not a multiple of ${numKvHeads} key heads`);
  }
  const scaling = header.scaling;
  if (!Array.isArray(scaling) || scaling.length !== numLayers) throw new FormatError('header scaling is not one number per layer');
  const positive = (v: unknown) => typeof v === 'number' && v > 0 && Number.isFinite(v);
  const softcap = scoringRule(header, 'softcap', numLayers, positive) as (number | null)[];
  const slidingWindow = scoringRule(header, 'sliding_window', numLayers, (v) => positive(v) && Number.isInteger(v)) as (number | null)[];
  const sinks = scoringRule(header, 'sinks', numLayers, (v) => Array.isArray(v) && v.length === numHeads && v.every(Number.isFinite)) as (number[] | null)[];
  const attentionChunk = scoringRule(header, 'attention_chunk', numLayers, (v) => positive(v) && Number.isInteger(v)) as (number | null)[];
  const spans = (v: unknown) => {
    if (!Array.isArray(v) || numTokens !== numKeyTokens) return false;
    const ends = v.flatMap((pair) => (Array.isArray(pair) && pair.length === 2 ? pair : [NaN])) as number[];
    return ends.every((x, t) => Number.isInteger(x) && x >= 0 && x <= numTokens && (t === 0 || x >= ends[t - 1]) && (t % 2 === 0 || x > ends[t - 1]));
  };
  const bidirectionalSpans = scoringRule(header, 'bidirectional_spans', numLayers, spans) as (number[][] | null)[];
  const table = (length: number) => (v: unknown) =>
    Array.isArray(v) && v.length === numHeads && v.every((row) => Array.isArray(row) && row.length === length && row.every(Number.isFinite));
  const keyBias = scoringRule(header, 'key_bias', numLayers, table(numKeyTokens)) as (number[][] | null)[];
  const relativeBias = scoringRule(header, 'relative_bias', numLayers, table(numTokens + numKeyTokens - 1)) as (number[][] | null)[];
  const queryCount = numLayers * numHeads * numTokens * headDim;
  const keyCount = numLayers * numKvHeads * numKeyTokens * headDim;
  checkPayload(buffer, payload, itemSize * (queryCount + keyCount));
  // float32 values are copied out: the payload need not start on a multiple of 4 bytes.
  const values = (offset: number, count: number) =>
    dtype === 'float16' ? halvesToFloats(new Uint16Array(buffer.slice(payload + offset, payload + offset + 2 * count))) : new Float32Array(buffer.slice(payload + offset, payload + offset + 4 * count));
  return {
    header: header as QueryKeyHeader,
    numLayers,
    firstLayer,
    numHeads,
    numKvHeads,
    numTokens,
    numKeyTokens,
    headDim,
    scaling: scaling.map(Number),
    softcap,
    slidingWindow,
    sinks,
    attentionChunk,
    bidirectionalSpans,
    keyBias,
    relativeBias,
    query: values(0, queryCount),
    key: values(itemSize * queryCount, keyCount),
  };
}

/** A whole group's vectors from its layers, each decoded from its own blob (a pack stores `/qk`
 * one layer at a time): `layers[l]` must hold layer l alone, all of one shape. */
export function joinQueryKey(layers: readonly QueryKey[]): QueryKey {
  const first = layers[0];
  if (!first) throw new FormatError('a group of no layers');
  for (const [l, qk] of layers.entries()) {
    if (qk.firstLayer !== l || qk.numLayers !== 1) throw new FormatError(`layer ${l} of the group: got layers ${qk.firstLayer}..${qk.firstLayer + qk.numLayers - 1}`);
    if (qk.numHeads !== first.numHeads || qk.numKvHeads !== first.numKvHeads || qk.numTokens !== first.numTokens || qk.numKeyTokens !== first.numKeyTokens || qk.headDim !== first.headDim) {
      throw new FormatError(`layer ${l} is not of the shape of layer 0`);
    }
  }
  const numLayers = layers.length;
  const concat = (part: (qk: QueryKey) => Float32Array) => {
    const out = new Float32Array(numLayers * part(first).length);
    layers.forEach((qk, l) => out.set(part(qk), l * part(first).length));
    return out;
  };
  // Every per-layer list, the scoring rules of schema.SCORING_RULES included, over all the layers.
  const rules = {
    scaling: layers.flatMap((qk) => qk.scaling),
    softcap: layers.flatMap((qk) => qk.softcap),
    slidingWindow: layers.flatMap((qk) => qk.slidingWindow),
    sinks: layers.flatMap((qk) => qk.sinks),
    attentionChunk: layers.flatMap((qk) => qk.attentionChunk),
    bidirectionalSpans: layers.flatMap((qk) => qk.bidirectionalSpans),
    keyBias: layers.flatMap((qk) => qk.keyBias),
    relativeBias: layers.flatMap((qk) => qk.relativeBias),
  };
  // The header as a whole-group blob would give it: the per-layer rules listed for every layer.
  const header: QueryKeyHeader = {
    ...first.header, num_layers: numLayers, first_layer: 0, scaling: rules.scaling, softcap: rules.softcap, sliding_window: rules.slidingWindow,
    sinks: rules.sinks, attention_chunk: rules.attentionChunk, bidirectional_spans: rules.bidirectionalSpans, key_bias: rules.keyBias, relative_bias: rules.relativeBias,
  };
  return {...first, ...rules, header, numLayers, firstLayer: 0, query: concat((qk) => qk.query), key: concat((qk) => qk.key)};
}

/** The key head that query head `head` reads (grouped-query attention: h // (H / K)). */
export function keyHeadOf(qk: QueryKey, head: number): number {
  return Math.floor(head / (qk.numHeads / qk.numKvHeads));
}

/** Query vectors of one head as float32 [N, d]. */
export function queryVectors(qk: QueryKey, layer: number, head: number): Float32Array {
  const size = qk.numTokens * qk.headDim;
  const start = ((layer - qk.firstLayer) * qk.numHeads + head) * size;
  return qk.query.slice(start, start + size);
}

/** Key vectors used by query head `head`, as float32 [Nk, d]. */
export function keyVectors(qk: QueryKey, layer: number, head: number): Float32Array {
  const size = qk.numKeyTokens * qk.headDim;
  const start = ((layer - qk.firstLayer) * qk.numKvHeads + keyHeadOf(qk, head)) * size;
  return qk.key.slice(start, start + size);
}
