// Where the head view puts things: two token columns with the arcs between them, one row per
// token; and which token a point falls on.

import type {Attention} from '../../data/decode';
import type {Side} from '../../state/state';

export const ROW_HEIGHT = 20; // px per token
export const HEADER_HEIGHT = 30; // px above the first token: the column titles
export const PAD = 8; // px of padding around the figure
const STRIP_PER_HEAD = 6; // px per head in the heat strip beside the focused tokens' targets
const MAX_STRIP = 72; // px
const MIN_GAP = 140; // px between the columns, where the arcs run
const MAX_GAP = 460;

export interface Layout {
  width: number;
  height: number;
  column: number; // a token column: label, then a heat strip on the side of the arcs
  strip: number; // heat strip width: one cell per shown head, the weight as its opacity
  leftX: number; // left edge of the query column
  rightX: number; // left edge of the key column
  scrollTop: number;
}

/** The columns in a box of `width` × `height` px scrolled to `scrollTop`: `label` px of token
 * label (padding included), a heat strip per head, `gutter` px of token positions on the left. */
export function headLayout(box: {width: number; height: number; scrollTop: number}, numHeads: number, label: number, gutter: number): Layout {
  const {width, height, scrollTop} = box;
  const strip = Math.min(MAX_STRIP, STRIP_PER_HEAD * numHeads);
  const column = label + strip;
  const gap = Math.max(MIN_GAP, Math.min(MAX_GAP, width - 2 * column - 2 * PAD - 2 * gutter));
  const leftX = Math.max(PAD + gutter, Math.round((width - 2 * column - gap) / 2));
  return {width, height, column, strip, leftX, rightX: leftX + column + gap, scrollTop};
}

/** The token under a point: a query in the left column, a key in the right one, or null. */
export function tokenAt(layout: Layout, {x, y}: {x: number; y: number}, a: Pick<Attention, 'numTokens' | 'numKeyTokens'>): {side: Side; index: number} | null {
  const index = Math.floor((y - HEADER_HEIGHT - PAD + layout.scrollTop) / ROW_HEIGHT);
  if (y < HEADER_HEIGHT || index < 0) return null;
  if (x >= layout.leftX && x <= layout.leftX + layout.column && index < a.numTokens) return {side: 'from', index};
  if (x >= layout.rightX && x <= layout.rightX + layout.column && index < a.numKeyTokens) return {side: 'to', index};
  return null;
}
