// Draws one exemplar: its rank and weight, then the input as running text with the arc of its
// largest weight above the two tokens.

import {valueText} from '../../model/metrics';
import {textWidth, type Painter} from '../../draw/painter';
import {ACCENT, BORDER, FAINT_INK, font, FONT_SMALL, FONT_TITLE, HOVER_FILL, INK, MUTED_INK} from '../../draw/theme';
import {readingPieces, truncate} from '../../model/tokens';
import {BOX_PAD, type Row} from './scene';

export const FONT = font(null, 13);
export const FONT_BOLD = font(600, 13); // the arc's two tokens
export const TOKEN_LINE = 70; // px from a row's top to its tokens' baseline middle

/** Where a row goes and how: its left edge and size, the head's colour, hovered or not. */
export interface RowBox {
  left: number;
  width: number;
  height: number;
  color: string;
  hovered: boolean;
}

export function paintExemplar(painter: Painter, row: Row, box: RowBox): void {
  const top = row.top;
  const right = box.left + box.width;
  if (box.hovered) painter.rect(box.left, top, box.width, box.height, HOVER_FILL);
  painter.strokeRect(box.left + 0.5, top + 0.5, box.width - 1, box.height - 1, BORDER, 1);
  const pieces = readingPieces(row.tokens);
  const q = truncate(pieces[row.from]?.text ?? '', 20);
  const k = truncate(pieces[row.to]?.text ?? '', 20);
  const rank = `#${row.rank + 1}`;
  painter.text(rank, box.left + 8, top + 14, {font: FONT_TITLE, color: INK});
  const headline = `weight ${valueText(row.score)} · from “${q}” (token ${row.from}) to “${k}” (token ${row.to})`;
  painter.text(headline, box.left + 8 + textWidth(rank, FONT_TITLE) + 8, top + 14, {font: FONT_SMALL, color: MUTED_INK});
  painter.text(row.example === null ? 'weights not stored' : 'open in the head view ›', right - 10, top + 14, {
    font: FONT_SMALL,
    color: row.example === null ? FAINT_INK : box.hovered ? ACCENT : MUTED_INK,
    align: 'right',
  });
  const y = top + TOKEN_LINE;
  const center = (index: number) => {
    const item = row.items.find((it) => it.index === index);
    return item ? item.x + item.w / 2 : null;
  };
  for (const item of row.items) {
    const isQuery = item.index === row.from;
    const isKey = item.index === row.to;
    if (isKey || isQuery) painter.rect(item.x - BOX_PAD, y - 10, item.w + 2 * BOX_PAD, 20, box.color, isKey ? 0.22 : 0.08);
    painter.text(item.label, item.x, y, {font: isQuery || isKey ? FONT_BOLD : FONT, color: item.index === null ? MUTED_INK : INK});
  }
  const x1 = center(row.from);
  const x2 = center(row.to);
  if (x1 !== null && x2 !== null) paintArc(painter, x1, x2, y - 12, box.color);
}

/** The arc from x1 to x2 above `base`, an arrowhead at x2 (a loop when they are one token). */
function paintArc(painter: Painter, x1: number, x2: number, base: number, color: string): void {
  if (Math.abs(x1 - x2) < 1) {
    painter.path((c) => {
      c.moveTo(x1 - 4, base);
      c.bezierCurveTo(x1 - 14, base - 26, x1 + 14, base - 26, x1 + 4, base);
    }, {stroke: color, width: 2.25});
  } else {
    const height = Math.min(36, 12 + Math.abs(x2 - x1) * 0.18);
    painter.path((c) => {
      c.moveTo(x1, base);
      c.bezierCurveTo(x1, base - height, x2, base - height, x2, base);
    }, {stroke: color, width: 2.25});
  }
  painter.path((c) => {
    c.moveTo(x2 - 4, base - 6);
    c.lineTo(x2, base);
    c.lineTo(x2 + 4, base - 6);
  }, {stroke: color, width: 2.25});
  painter.path((c) => c.arc(x1, base, 2.5, 0, 2 * Math.PI), {fill: color});
}
