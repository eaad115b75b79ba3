// The maths of the Generation view, pure: which query row wrote a generated token, that row's
// attention (one head, a layer's mean or every head's), its layer × head summary, the attention
// each generated token paid to one earlier token, and two decodings of one prompt aligned.

import type {Generation} from '../data/api';
import {readColumn, readRow, type Attention} from '../data/decode';
import type {Grid} from './metrics';

/** What the heat strip over the text shows: one head, the mean of a layer's heads, each head of the
 * layer side by side in its colour (`heads`; its mean where one value is needed), or the mean of
 * every head of every layer. */
export type HeatMode = 'head' | 'layer' | 'heads' | 'all';
export const HEAT_MODES: readonly HeatMode[] = ['head', 'layer', 'heads', 'all'];

/** What a cell of the layer × head grid shows of the current token's row: the share of its
 * attention on the prompt, or its largest single weight (how focused the head is). */
export type GridSummary = 'prompt' | 'max';
export const GRID_SUMMARIES: readonly GridSummary[] = ['prompt', 'max'];

/** A layer of the decoding group: its weights once they arrived, else null. */
export type LayerReader = (layer: number) => Attention | null;

/** The query row that wrote generated token t (http_api.md: `prompt_length − 1 + t`). */
export function writerRow(promptLength: number, t: number): number {
  return promptLength - 1 + t;
}

/** The generated token whose row is query `row`, or null for a prompt row that wrote nothing. */
export function tokenOfRow(promptLength: number, row: number): number | null {
  return row >= promptLength - 1 ? row - promptLength + 1 : null;
}

/** The generated token t the state asks for, within the decoding's tokens. */
export function clampToken(t: number, count: number): number {
  return Math.max(0, Math.min(t, count - 1));
}

/** Why a generation cannot be drawn against its group's weights, or null when it can. */
export function generationProblem(g: Generation, numQueries: number | null): string | null {
  const count = g.tokens.length;
  if (!count || g.probs.length !== count || g.top.length !== count) return 'the generation lists no tokens, or not one probability and top list per token';
  if (numQueries !== null && numQueries !== g.prompt_length + count - 1) {
    return `its group has ${numQueries} query tokens, not the prompt's ${g.prompt_length} and ${count - 1} generated ones`;
  }
  return null;
}

/** Which heads a heat mode averages: [layer, head] pairs. */
export function heatHeads(mode: HeatMode, layer: number, head: number, numLayers: number, numHeads: number): [number, number][] {
  if (mode === 'head') return [[layer, head]];
  const layers = mode === 'all' ? Array.from({length: numLayers}, (_, l) => l) : [layer];
  return layers.flatMap((l) => Array.from({length: numHeads}, (_, h) => [l, h] as [number, number]));
}

/** The mean of `read` over the heads, or null while a layer they need has not arrived. */
function meanOf(layers: LayerReader, heads: [number, number][], length: number, read: (a: Attention, l: number, h: number, out: Float32Array<ArrayBuffer>) => unknown): Float32Array | null {
  const sum = new Float32Array(length);
  const scratch = new Float32Array(length);
  for (const [l, h] of heads) {
    const a = layers(l);
    if (!a) return null;
    read(a, l, h, scratch);
    for (let j = 0; j < length; j++) sum[j] += scratch[j];
  }
  for (let j = 0; j < length; j++) sum[j] /= heads.length;
  return sum;
}

/** Query `row`'s attention over every key (numKeys long), for the heads a heat mode averages; null
 * while a layer it needs is loading. */
export function heatRow(layers: LayerReader, heads: [number, number][], row: number, numKeys: number): Float32Array | null {
  return meanOf(layers, heads, numKeys, (a, l, h, out) => readRow(a, l, h, row, out));
}

/** The attention each generated token's row paid to key `key` (count long: generated token t's
 * value is row `writerRow(P, t)`'s weight on the key; null where that row comes before the key). */
export function attendedBy(layers: LayerReader, heads: [number, number][], key: number, promptLength: number, count: number, numQueries: number): (number | null)[] | null {
  const column = meanOf(layers, heads, numQueries, (a, l, h, out) => readColumn(a, l, h, key, out));
  if (!column) return null;
  return Array.from({length: count}, (_, t) => {
    const row = writerRow(promptLength, t);
    return row < key || row >= numQueries ? null : column[row];
  });
}

/** Per layer and head, a summary of query `row`: the share of its weight on the first
 * `promptLength` keys, or its largest weight. null for layers not loaded yet. */
export function rowGrid(layers: LayerReader, numLayers: number, numHeads: number, row: number, promptLength: number, summary: GridSummary): Grid {
  const grid: Grid = [];
  for (let l = 0; l < numLayers; l++) {
    const a = layers(l);
    const cells: (number | null)[] = [];
    const scratch = new Float32Array(a?.numKeyTokens ?? 0);
    for (let h = 0; h < numHeads; h++) {
      if (!a) {
        cells.push(null);
        continue;
      }
      readRow(a, l, h, row, scratch);
      cells.push(summary === 'max' ? maxOf(scratch) : promptShare(scratch, promptLength));
    }
    grid.push(cells);
  }
  return grid;
}

function maxOf(row: Float32Array): number {
  let best = 0;
  for (const w of row) if (w > best) best = w;
  return best;
}

/** Σ row[j < P] / Σ row (the stored `prompt_share` metric, for one row); null for an empty row. */
export function promptShare(row: ArrayLike<number>, promptLength: number): number | null {
  let prompt = 0;
  let all = 0;
  for (let j = 0; j < row.length; j++) {
    all += row[j];
    if (j < promptLength) prompt += row[j];
  }
  return all > 0 ? prompt / all : null;
}

/** The keys of a row, largest weight first (at most `k`), for the inspector. */
export function topKeys(row: ArrayLike<number>, k: number, end = row.length): {index: number; weight: number}[] {
  const order = Array.from({length: Math.min(end, row.length)}, (_, j) => j).filter((j) => row[j] > 0);
  order.sort((x, y) => row[y] - row[x] || x - y);
  return order.slice(0, k).map((index) => ({index, weight: row[index]}));
}

// ---------------------------------------------------------------------------------------------
// Two decodings of one prompt (another step or run), aligned

/** One column of an alignment: the index of a generated token in A and in B (null: a gap). */
export interface AlignedPair {
  a: number | null;
  b: number | null;
  /** both hold the same token */
  same: boolean;
}

export interface Alignment {
  pairs: AlignedPair[];
  /** the first generated position where A and B differ (null: they are the same) */
  divergence: number | null;
  /** columns where they differ (a gap or another token) */
  differing: number;
}

const MAX_ALIGN_CELLS = 4_000_000; // past the divergence, longer pairs are aligned position by position

/** A and B (generated token ids of the same prompt) aligned: the shared beginning position by
 * position, then a longest common subsequence, so that the tokens they share again after
 * diverging line up and only those that differ are marked. */
export function alignGenerations(a: readonly (string | number)[], b: readonly (string | number)[]): Alignment {
  let k = 0;
  while (k < a.length && k < b.length && a[k] === b[k]) k++;
  const pairs: AlignedPair[] = Array.from({length: k}, (_, i) => ({a: i, b: i, same: true}));
  if (k === a.length && k === b.length) return {pairs, divergence: null, differing: 0};
  const n = a.length - k;
  const m = b.length - k;
  const matches = n * m <= MAX_ALIGN_CELLS ? lcsMatches(a.slice(k), b.slice(k)) : [];
  let i = 0;
  let j = 0;
  // Between two matches, the tokens left are paired position by position, then gaps.
  for (const [mi, mj] of [...matches, [n, m]]) {
    while (i < mi || j < mj) {
      pairs.push({a: i < mi ? k + i : null, b: j < mj ? k + j : null, same: false});
      if (i < mi) i++;
      if (j < mj) j++;
    }
    if (mi < n) {
      pairs.push({a: k + mi, b: k + mj, same: true});
      i = mi + 1;
      j = mj + 1;
    }
  }
  return {pairs, divergence: k, differing: pairs.filter((p) => !p.same).length};
}

/** Index pairs of a longest common subsequence of a and b, in order. */
function lcsMatches(a: readonly (string | number)[], b: readonly (string | number)[]): [number, number][] {
  const n = a.length;
  const m = b.length;
  // table[i][j]: LCS length of a[i:] and b[j:], rows of m + 1
  const table = new Uint32Array((n + 1) * (m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      table[i * (m + 1) + j] = a[i] === b[j] ? table[(i + 1) * (m + 1) + j + 1] + 1 : Math.max(table[(i + 1) * (m + 1) + j], table[i * (m + 1) + j + 1]);
    }
  }
  const out: [number, number][] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push([i, j]);
      i++;
      j++;
    } else if (table[(i + 1) * (m + 1) + j] >= table[i * (m + 1) + j + 1]) {
      i++;
    } else {
      j++;
    }
  }
  return out;
}
