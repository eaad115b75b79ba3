// What the head view draws, as pure functions of the state and the weights: the filters, the
// focused tokens and their arcs, what the inspector says, and what a click on a token selects.

import {holdsLayer, readColumn, readRow, type Attention} from '../../data/decode';
import type {Focus, Side, State} from '../../state/state';
import {exactToken} from '../../model/tokens';
import {filterRow, pairRanges, pruneRow, specialTokenMask, topEntries, type Prune, type Range, type RowFilter} from '../../model/transforms';
import {shownHeads} from '../shared/controls';

export const TOP_ENTRIES = 5; // keys listed by the inspector

/** What the head and model views filter the weights by, resolved against one example. */
export interface WeightFilter {
  layer: number;
  heads: number[];
  queries: Range;
  filter: RowFilter;
  prune: Prune;
}

/** `segments`: the sentence pair of the example's first group (other groups have none). The layer
 * is the focus's when `a` holds it, else the one `a` holds (a per-layer fetch keeps the last layer
 * shown while the next loads). */
export function weightFilter(state: Readonly<State>, a: Attention, segments: readonly number[] | null | undefined): WeightFilter {
  const {filters} = state;
  const wanted = Math.min(state.focus.layer, a.numLayers - 1);
  const square = a.numKeyTokens === a.numTokens;
  const ranges = square ? pairRanges(a.numTokens, segments, filters.pair) : {queries: {start: 0, end: a.numTokens}, keys: {start: 0, end: a.numKeyTokens}};
  return {
    layer: holdsLayer(a, wanted) || a.heldLayers === 0 ? wanted : a.firstLayer,
    heads: shownHeads(state, a.numHeads),
    queries: ranges.queries,
    filter: {hidden: filters.hide ? specialTokenMask(a.keyTokens) : null, renormalize: filters.hide && filters.renorm, keys: ranges.keys},
    prune: {threshold: filters.threshold, topK: filters.topk},
  };
}

/** The tokens whose attention is shown: the locked ones, else the hovered one. */
export interface FocusedTokens {
  side: Side;
  tokens: number[];
  locked: boolean;
}

export function focusedTokens(focus: Readonly<Focus>, hover: {side: Side; index: number} | null, a: Pick<Attention, 'numTokens' | 'numKeyTokens'>): FocusedTokens | null {
  const count = focus.side === 'from' ? a.numTokens : a.numKeyTokens;
  const locked = focus.tokens.filter((t) => t < count);
  if (locked.length) return {side: focus.side, tokens: locked, locked: true};
  if (hover) return {side: hover.side, tokens: [hover.index], locked: false};
  return null;
}

/** The focused tokens' weights, per shown head: a stripe over the other column (each token's summed
 * weight given or received, for the heat strip) and the arcs that survive pruning. `kept`: per
 * shown head, each query row's weight left after hiding (computeArcs), to renormalise columns. */
export function focusedWeights(a: Attention, f: WeightFilter, focus: FocusedTokens, kept: readonly Float32Array[]): {stripes: Float32Array[]; arcs: {slot: number; from: number; to: number; weight: number}[]} {
  const n = focus.side === 'from' ? a.numKeyTokens : a.numTokens; // the other column's tokens
  const {filter, queries, prune, layer} = f;
  const row = new Float32Array(n);
  const order = new Int32Array(n);
  const stripes: Float32Array[] = [];
  const arcs: {slot: number; from: number; to: number; weight: number}[] = [];
  f.heads.forEach((head, s) => {
    const sum = new Float32Array(n);
    stripes.push(sum);
    for (const t of focus.tokens) {
      if (focus.side === 'from') {
        if (t < queries.start || t >= queries.end) continue;
        filterRow(readRow(a, layer, head, t, row), filter);
      } else {
        if (t < filter.keys.start || t >= filter.keys.end || filter.hidden?.[t]) continue;
        readColumn(a, layer, head, t, row);
        for (let i = 0; i < n; i++) {
          if (i < queries.start || i >= queries.end) row[i] = 0;
          else if (filter.renormalize && kept[s][i] > 0) row[i] /= kept[s][i];
        }
      }
      for (let j = 0; j < n; j++) sum[j] += row[j];
      const count = pruneRow(row, prune, order);
      for (let u = 0; u < count; u++) {
        const other = order[u];
        arcs.push(focus.side === 'from' ? {slot: s, from: t, to: other, weight: row[other]} : {slot: s, from: other, to: t, weight: row[other]});
      }
    }
  });
  return {stripes, arcs};
}

/** What the inspector says of the focused tokens: their text, and the keys (queries) they attend
 * to (are attended by) most, averaged over the shown heads. */
export function inspection(a: Attention, f: WeightFilter, focus: FocusedTokens): {tokens: string; verb: string; top: {index: number; weight: number}[]} {
  const n = focus.side === 'from' ? a.numKeyTokens : a.numTokens; // the other column's tokens
  const mean = new Float32Array(n);
  const row = new Float32Array(n);
  for (const head of f.heads) {
    for (const t of focus.tokens) {
      if (focus.side === 'from') filterRow(readRow(a, f.layer, head, t, row), f.filter);
      else readColumn(a, f.layer, head, t, row);
      for (let j = 0; j < row.length; j++) mean[j] += row[j] / f.heads.length;
    }
  }
  return {
    tokens: focus.tokens.map((t) => `#${t} ${exactToken((focus.side === 'from' ? a.tokens : a.keyTokens)[t])}`).join(' + '),
    verb: focus.side === 'from' ? 'attends to' : 'is attended by',
    top: topEntries(mean, TOP_ENTRIES),
  };
}

/** The locked tokens after a click on a token (`hit`; null: off the tokens), with shift (`add`):
 * a click locks a token, clicking it again or off the tokens unlocks, shift adds or removes one. */
export function clickTokens(focus: Readonly<Focus>, hit: {side: Side; index: number} | null, add: boolean): Partial<Focus> | null {
  const {tokens, side} = focus;
  if (!hit) return tokens.length ? {tokens: []} : null;
  if (add) {
    const current = side === hit.side ? tokens : [];
    const next = current.includes(hit.index) ? current.filter((t) => t !== hit.index) : [...current, hit.index].sort((x, y) => x - y);
    return {tokens: next, side: hit.side};
  }
  if (tokens.length === 1 && tokens[0] === hit.index && side === hit.side) return {tokens: []};
  return {tokens: [hit.index], side: hit.side};
}
