// Pure maths on attention rows and query/key vectors: what the views draw, without drawing.

import {readRow, type Attention} from '../data/decode';
import {type QueryKey} from '../data/decode_qk';

/** Half-open range of token positions. */
export interface Range {
  start: number;
  end: number;
}

/** Sentence-pair filter: which segment the queries (first letter) and keys (second) come from. */
export type Pair = 'all' | 'AA' | 'AB' | 'BA' | 'BB';
export const PAIRS: readonly Pair[] = ['all', 'AA', 'AB', 'BA', 'BB'];

/** The query and key ranges a pair filter keeps; `segments` is `[a_end]` or null (one text). */
export function pairRanges(numTokens: number, segments: readonly number[] | null | undefined, pair: Pair): {queries: Range; keys: Range} {
  const all = {start: 0, end: numTokens};
  if (pair === 'all' || !segments || segments.length === 0) return {queries: all, keys: all};
  const aEnd = Math.max(0, Math.min(numTokens, segments[0]));
  const segment = (letter: string): Range => (letter === 'A' ? {start: 0, end: aEnd} : {start: aEnd, end: numTokens});
  return {queries: segment(pair[0]), keys: segment(pair[1])};
}

// Special tokens of the common tokenizers: [CLS] [SEP] [PAD] [MASK], <s> </s> <pad> <unk> <mask>,
// <|endoftext|> <|im_start|> <|begin_of_text|> ...
const SPECIAL_TOKEN = /^(\[(CLS|SEP|PAD|MASK|UNK|BOS|EOS)\]|<\/?(s|pad|unk|mask|bos|eos)>|<\|[^|<>]{1,40}\|>)$/i;

export function isSpecialToken(token: string): boolean {
  return SPECIAL_TOKEN.test(token.trim());
}

/** 1 for the keys that "hide first/special tokens" hides: the first token and any special token. */
export function specialTokenMask(tokens: readonly string[]): Uint8Array {
  const mask = new Uint8Array(tokens.length);
  tokens.forEach((token, j) => (mask[j] = j === 0 || isSpecialToken(token) ? 1 : 0));
  return mask;
}

export interface RowFilter {
  /** keys whose weight is set to 0 (null: none) */
  hidden: Uint8Array | null;
  /** after hiding, divide the row by what is left of its sum */
  renormalize: boolean;
  /** keys outside this range are set to 0 (the pair filter); not renormalised */
  keys: Range;
}

/** Applies a filter to a dense row in place and returns it. */
export function filterRow(row: Float32Array, filter: RowFilter): Float32Array {
  const {hidden, renormalize, keys} = filter;
  if (hidden) {
    let kept = 0;
    for (let j = 0; j < row.length; j++) {
      if (hidden[j]) row[j] = 0;
      else kept += row[j];
    }
    if (renormalize && kept > 0) for (let j = 0; j < row.length; j++) row[j] /= kept;
  }
  row.fill(0, 0, keys.start);
  row.fill(0, keys.end);
  return row;
}

export interface Prune {
  /** weights below this are dropped */
  threshold: number;
  /** keep at most this many weights per row (0: no limit) */
  topK: number;
}

/** The keys of a row that survive pruning, written to `out`; returns their count. Keys come in
 * order, except under a top-k limit, which keeps the k largest weights, largest first. */
export function pruneRow(row: Float32Array, prune: Prune, out: Int32Array): number {
  let count = 0;
  for (let j = 0; j < row.length; j++) if (row[j] > 0 && row[j] >= prune.threshold) out[count++] = j;
  if (prune.topK <= 0 || count <= prune.topK) return count; // drawing needs no order: skip the sort
  out.subarray(0, count).sort((x, y) => row[y] - row[x] || x - y);
  return prune.topK;
}

/** The k largest entries of a row, largest first (ties: lower index first). */
export function topEntries(row: ArrayLike<number>, k: number): {index: number; weight: number}[] {
  const entries: {index: number; weight: number}[] = [];
  for (let j = 0; j < row.length; j++) if (row[j] > 0) entries.push({index: j, weight: row[j]});
  entries.sort((x, y) => y.weight - x.weight || x.index - y.index);
  return entries.slice(0, k);
}

/** Why a key is hidden from a query: not at all, by the causal mask, the sliding window or the chunks. */
export type Mask = 'causal' | 'window' | 'chunk' | null;

/** How one head turns q·k into weights (http_api.md, `/qk`): scaling, then the optional rules. */
export interface Scoring {
  scaling: number;
  causal: boolean;
  /** logits become softcap · tanh(x / softcap) */
  softcap: number | null;
  /** keys |i − j| ≥ window away are masked */
  window: number | null;
  /** a logit that takes part in the softmax and is then dropped */
  sink: number | null;
  /** keys of another chunk (⌊i / chunk⌋ ≠ ⌊j / chunk⌋) are masked */
  chunk: number | null;
  /** [a, b] spans: causal (window, chunk too) but for the keys of the query's own span (PaliGemma's prefix) */
  spans: number[][] | null;
  /** this head's: added to the logit of key j (ALiBi) */
  keyBias: number[] | null;
  /** this head's: added to the logit of query i and key j at index j − i + numQueries − 1 (T5) */
  relativeBias: number[] | null;
  /** the query tokens (relativeBias's offset) */
  numQueries: number;
}

type Rules = 'scaling' | 'softcap' | 'slidingWindow' | 'sinks' | 'attentionChunk' | 'bidirectionalSpans' | 'keyBias' | 'relativeBias' | 'numTokens';

/** The scoring of head `head` of `layer`, from a /qk header's per-layer rules. */
export function scoringOf(qk: Pick<QueryKey, Rules> & {firstLayer?: number}, layer: number, head: number, causal: boolean): Scoring {
  const l = layer - (qk.firstLayer ?? 0); // the rules list the layers the blob holds
  const sinks = qk.sinks[l];
  return {
    scaling: qk.scaling[l],
    causal,
    softcap: qk.softcap[l],
    window: qk.slidingWindow[l],
    sink: sinks ? sinks[head] : null,
    chunk: qk.attentionChunk[l],
    spans: qk.bidirectionalSpans[l],
    keyBias: qk.keyBias[l]?.[head] ?? null,
    relativeBias: qk.relativeBias[l]?.[head] ?? null,
    numQueries: qk.numTokens,
  };
}

/** Whether head `scoring` adds a bias (ALiBi, T5's relative positions) to its logits. */
export function hasBias(scoring: Scoring): boolean {
  return scoring.keyBias !== null || scoring.relativeBias !== null;
}

/** What bertviz's neuron view shows for query i of one head. */
export interface NeuronRows {
  /** q_i, [d] */
  query: Float32Array;
  /** k_j for every key j, [N, d] (the input, not a copy) */
  keys: Float32Array;
  /** q_i ∘ k_j, [N, d] */
  products: Float32Array;
  /** scaling · q_i · k_j, soft-capped where the model caps, plus the bias; -Infinity where a mask hides key j */
  scores: Float32Array;
  /** why key j is hidden (null: it is not) */
  masks: Mask[];
  /** softmax of scores (with the sink, when the head has one), [N] */
  softmax: Float32Array;
  /** the share of the softmax the sink took (0 without one) */
  sinkShare: number;
}

/** queries and keys: [N, d] of one head (the key head the query head uses). */
export function neuronRows(queries: Float32Array, keys: Float32Array, headDim: number, i: number, scoring: Scoring): NeuronRows {
  const {scaling, causal, softcap, window, sink, chunk, spans, keyBias, relativeBias, numQueries} = scoring;
  const span = spans?.find(([a, b]) => a <= i && i < b) ?? null; // the query's own: every key of it is seen
  const n = keys.length / headDim;
  const query = queries.slice(i * headDim, (i + 1) * headDim);
  const products = new Float32Array(n * headDim);
  const scores = new Float32Array(n);
  const masks: Mask[] = new Array<Mask>(n).fill(null);
  let max = sink ?? -Infinity;
  for (let j = 0; j < n; j++) {
    masks[j] =
      span !== null && span[0] <= j && j < span[1]
        ? null
        : (causal || spans !== null) && j > i
          ? 'causal'
          : window !== null && Math.abs(i - j) >= window
            ? 'window'
            : chunk !== null && Math.floor(i / chunk) !== Math.floor(j / chunk)
              ? 'chunk'
              : null;
    if (masks[j]) {
      scores[j] = -Infinity;
      continue;
    }
    let dot = 0;
    for (let t = 0; t < headDim; t++) {
      const p = query[t] * keys[j * headDim + t];
      products[j * headDim + t] = p;
      dot += p;
    }
    const scaled = dot * scaling;
    const bias = (keyBias ? keyBias[j] : 0) + (relativeBias ? relativeBias[j - i + numQueries - 1] : 0);
    scores[j] = (softcap ? softcap * Math.tanh(scaled / softcap) : scaled) + bias;
    if (scores[j] > max) max = scores[j];
  }
  const softmax = new Float32Array(n);
  const sinkWeight = sink === null ? 0 : Math.exp(sink - max);
  let sum = sinkWeight;
  for (let j = 0; j < n; j++) {
    softmax[j] = scores[j] === -Infinity ? 0 : Math.exp(scores[j] - max);
    sum += softmax[j];
  }
  if (sum > 0) for (let j = 0; j < n; j++) softmax[j] /= sum;
  return {query, keys, products, scores, masks, softmax, sinkShare: sum > 0 ? sinkWeight / sum : 0};
}

/** One head's weights as a dense N x N matrix, queries by rows. */
export function headMatrix(a: Attention, layer: number, head: number): Float32Array {
  const n = a.numTokens;
  const out = new Float32Array(n * n);
  for (let i = 0; i < n; i++) readRow(a, layer, head, i, out.subarray(i * n, (i + 1) * n));
  return out;
}

/** How much one head's attention moved between A and B (same tokens): per query token, half the
 * summed absolute difference of its row (the share of attention that went elsewhere, 0 to 1),
 * averaged over query tokens. */
export function attentionChange(a: Attention, b: Attention, layer: number, head: number): number {
  const n = a.numTokens;
  const ra = new Float32Array(n);
  const rb = new Float32Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    readRow(a, layer, head, i, ra);
    readRow(b, layer, head, i, rb);
    let moved = 0;
    for (let j = 0; j < n; j++) moved += Math.abs(rb[j] - ra[j]);
    total += moved / 2;
  }
  return n ? total / n : 0;
}

/** B − A of every head (same tokens), pooled to `size` × `size` cells (at most `maxSize`), each
 * the largest change it covers: the thumbnails of the Compare view's difference. */
export interface PooledDifference {
  numLayers: number;
  numHeads: number;
  size: number;
  /** per head, layer-major */
  pooled: Float32Array[];
  maxAbs: number;
}

export function pooledDifference(a: Attention, b: Attention, maxSize = 48): PooledDifference {
  const n = a.numTokens;
  const size = Math.min(n, maxSize);
  const ra = new Float32Array(n);
  const rb = new Float32Array(n);
  let maxAbs = 0;
  const pooled: Float32Array[] = [];
  for (let l = 0; l < a.numLayers; l++) {
    for (let h = 0; h < a.numHeads; h++) {
      const cells = new Float32Array(size * size);
      for (let i = 0; i < n; i++) {
        readRow(a, l, h, i, ra);
        readRow(b, l, h, i, rb);
        const base = Math.floor((i * size) / n) * size;
        for (let j = 0; j < n; j++) {
          const d = rb[j] - ra[j];
          const cell = base + Math.floor((j * size) / n);
          if (Math.abs(d) > Math.abs(cells[cell])) cells[cell] = d;
          if (Math.abs(d) > maxAbs) maxAbs = Math.abs(d);
        }
      }
      pooled.push(cells);
    }
  }
  return {numLayers: a.numLayers, numHeads: a.numHeads, size, pooled, maxAbs};
}

/** Positions where two token lists differ (a position one list lacks counts, with null). */
export function tokenDifferences(a: readonly string[], b: readonly string[]): {position: number; a: string | null; b: string | null}[] {
  const out: {position: number; a: string | null; b: string | null}[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) out.push({position: i, a: a[i] ?? null, b: b[i] ?? null});
  }
  return out;
}
