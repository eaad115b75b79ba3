// The arcs of one layer: every (head, query, key) weight that survives filtering and pruning,
// plus each row's kept sum for renormalising columns. Computed once per selection, not per frame.

import {DEQUANTIZE, readRow, rowLength, rowStart, TOPK_PAD, type Attention} from '../../data/decode';
import {filterRow, pruneRow, type Prune, type Range, type RowFilter} from '../../model/transforms';

export interface ArcSet {
  count: number;
  /** index into the shown heads (not the head number) */
  slot: Uint16Array;
  from: Int32Array;
  to: Int32Array;
  weight: Float32Array;
  /** per shown head and query row: the row's weight left after hiding (renormalisation divisor) */
  kept: Float32Array[];
}

export function computeArcs(
  a: Attention,
  layer: number,
  heads: readonly number[],
  filter: RowFilter,
  queries: Range,
  prune: Prune,
): ArcSet {
  const n = a.numTokens;
  const nk = a.numKeyTokens;
  const row = new Float32Array(nk);
  const order = new Int32Array(nk);
  const slot: number[] = [];
  const from: number[] = [];
  const to: number[] = [];
  const weight: number[] = [];
  const unfiltered: RowFilter = {hidden: filter.hidden, renormalize: false, keys: {start: 0, end: nk}};
  const push = (s: number, i: number, count: number) => {
    for (let t = 0; t < count; t++) {
      slot.push(s);
      from.push(i);
      to.push(order[t]);
      weight.push(row[order[t]]);
    }
  };
  const kept = heads.map((head, s) => {
    const sums = new Float32Array(n);
    if (!filter.hidden) {
      // Nothing hidden: read the stored slots of each row directly, without a dense row.
      sums.fill(1);
      const {codes, keys} = a;
      for (let i = queries.start; i < queries.end; i++) {
        const start = rowStart(a, layer, head, i);
        const length = rowLength(a, i);
        let count = 0;
        for (let t = 0; t < length; t++) {
          const j = keys ? keys[start + t] : t;
          if (j === TOPK_PAD || j < filter.keys.start || j >= filter.keys.end) continue;
          const w = DEQUANTIZE[codes[start + t]];
          if (w > 0 && w >= prune.threshold) {
            order[count++] = j;
            row[j] = w; // `row` holds only these entries, cleared below
          }
        }
        if (prune.topK > 0 && count > prune.topK) {
          order.subarray(0, count).sort((x, y) => row[y] - row[x] || x - y);
          for (let t = prune.topK; t < count; t++) row[order[t]] = 0;
          count = prune.topK;
        }
        push(s, i, count);
        for (let t = 0; t < count; t++) row[order[t]] = 0;
      }
      return sums;
    }
    for (let i = 0; i < n; i++) {
      const shown = i >= queries.start && i < queries.end;
      readRow(a, layer, head, i, row);
      filterRow(row, unfiltered);
      let sum = 0;
      for (let j = 0; j < nk; j++) sum += row[j];
      sums[i] = sum;
      if (filter.renormalize && sum > 0) for (let j = 0; j < nk; j++) row[j] /= sum;
      if (!shown) continue;
      row.fill(0, 0, filter.keys.start);
      row.fill(0, filter.keys.end);
      push(s, i, pruneRow(row, prune, order));
    }
    row.fill(0);
    return sums;
  });
  return {
    count: from.length,
    slot: Uint16Array.from(slot),
    from: Int32Array.from(from),
    to: Int32Array.from(to),
    weight: Float32Array.from(weight),
    kept,
  };
}

const ALPHA_LEVELS = 32; // arcs are batched by opacity: one canvas path per head and level

/** Collects segments per (head slot, opacity level) so that a frame needs few strokes. */
export class ArcBatch {
  private readonly groups: number[][];

  constructor(private readonly slots: number) {
    this.groups = Array.from({length: slots * ALPHA_LEVELS}, () => []);
  }

  add(slot: number, weight: number, x1: number, y1: number, x2: number, y2: number): void {
    const level = Math.min(ALPHA_LEVELS - 1, Math.floor(Math.min(1, weight) * ALPHA_LEVELS));
    this.groups[slot * ALPHA_LEVELS + level].push(x1, y1, x2, y2);
  }

  get count(): number {
    return this.groups.reduce((sum, g) => sum + g.length / 4, 0);
  }

  /** Draws every group: `draw(slot, alpha, coordinates, segments)`. */
  flush(draw: (slot: number, alpha: number, xy: number[], count: number) => void): void {
    for (let slot = 0; slot < this.slots; slot++) {
      for (let level = 0; level < ALPHA_LEVELS; level++) {
        const xy = this.groups[slot * ALPHA_LEVELS + level];
        if (xy.length) draw(slot, (level + 1) / ALPHA_LEVELS, xy, xy.length / 4);
      }
    }
  }
}
