// What the Exemplars view draws, as pure functions of the exemplar table: a head's top inputs as
// rows, every head's best score, and an input's tokens laid out as running text around its arc.

import type {Exemplars} from '../../data/api';
import type {Grid} from '../../model/metrics';
import {readingPieces, truncate} from '../../model/tokens';

const MAX_TOKEN_CHARS = 24;
export const ELLIPSIS = '…';
export const BOX_PAD = 3; // px around a highlighted token

/** One drawn token or an elision mark, at x (left edge) with its width. */
export interface Item {
  index: number | null;
  label: string;
  x: number;
  w: number;
}

export interface Row {
  rank: number;
  input: number;
  score: number;
  from: number;
  to: number;
  tokens: string[];
  text: string | null;
  example: number | null;
  items: Item[];
  top: number;
}

/** Each head's best score (its first exemplar's), the head map's values. */
export function bestScores(table: Exemplars): Grid {
  return table.heads.map((row) => row.map((list) => list[0]?.score ?? null));
}

/** The rows of one head, best first, `rowHeight` px apart from `top`. */
export function exemplarRows(table: Exemplars, layer: number, head: number, top: number, rowHeight: number): Row[] {
  return (table.heads[layer]?.[head] ?? []).map((e, rank) => {
    const input = table.inputs[e.input];
    return {
      rank,
      input: e.input,
      score: e.score,
      from: e.from,
      to: e.to,
      tokens: input?.tokens ?? [],
      text: input?.text ?? null,
      example: input?.example ?? null,
      items: [],
      top: top + rank * rowHeight,
    };
  });
}

/** The tokens of one input on one line from x = `left`, as running text: all of them when they fit
 * in `width`, else a window around the arc (and when the arc itself is too long, its two ends, the
 * middle elided). `measure`: a text's width, bold for the arc's ends. */
export function layoutTokens(row: Row, width: number, left: number, measure: (text: string, bold: boolean) => number): Item[] {
  const pieces = readingPieces(row.tokens).map((p) => ({...p, text: truncate(p.text, MAX_TOKEN_CHARS)}));
  const space = measure(' ', false);
  const bold = (i: number) => i === row.from || i === row.to;
  // Highlighted tokens get a little room on each side for their box.
  const w = pieces.map((p, i) => measure(p.text, bold(i)) + (p.space ? space : 0) + (bold(i) ? 2 * BOX_PAD : 0));
  const ellipsis = measure(ELLIPSIS, false) + 2 * space;
  const sum = (a: number, b: number) => w.slice(a, b + 1).reduce((s, x) => s + x, 0);
  const n = row.tokens.length;
  const lo = Math.max(0, Math.min(row.from, row.to, n - 1));
  const hi = Math.max(0, Math.min(Math.max(row.from, row.to), n - 1));
  let indices: (number | null)[];
  if (sum(0, n - 1) <= width) {
    indices = Array.from({length: n}, (_, i) => i);
  } else if (sum(lo, hi) + 2 * ellipsis <= width) {
    let a = lo;
    let b = hi;
    for (let grew = true; grew; ) {
      grew = false;
      if (a > 0 && sum(a - 1, b) + 2 * ellipsis <= width) [a, grew] = [a - 1, true];
      if (b < n - 1 && sum(a, b + 1) + 2 * ellipsis <= width) [b, grew] = [b + 1, true];
    }
    indices = [...(a > 0 ? [null] : []), ...Array.from({length: b - a + 1}, (_, i) => a + i), ...(b < n - 1 ? [null] : [])];
  } else {
    let k = 0;
    while (lo + k + 1 < hi - k - 1 && sum(lo, lo + k + 1) + sum(hi - k - 1, hi) + 3 * ellipsis <= width) k++;
    indices = [
      ...(lo > 0 ? [null] : []),
      ...Array.from({length: k + 1}, (_, i) => lo + i),
      null,
      ...Array.from({length: k + 1}, (_, i) => hi - k + i),
      ...(hi < n - 1 ? [null] : []),
    ];
  }
  let x = left;
  return indices.map((index, t) => {
    if (index === null) {
      const item = {index, label: ELLIPSIS, x: x + space, w: ellipsis - 2 * space};
      x += ellipsis;
      return item;
    }
    const piece = pieces[index];
    if (piece.space && t > 0) x += space;
    if (bold(index)) x += BOX_PAD;
    const item = {index, label: piece.text, x, w: measure(piece.text, bold(index))};
    x += item.w + (bold(index) ? BOX_PAD : 0);
    return item;
  });
}
