// Draws the Generation view's three figures through a Painter (screen, PNG, SVG): the text with
// the heat strip of the current token's attention, the side pane (the token's top-5, the
// layer × head grid, the attention each generated token paid to a clicked token), and the
// comparison with another step or run.

import {fitHeatmap, LEGEND_HEIGHT, paintHeatmap, paintLegend, type HeatmapGeometry} from '../../components/heatmap';
import {textWidth, type Painter} from '../../draw/painter';
import {ACCENT, BORDER, FAINT_INK, font, FONT_SMALL, FONT_TITLE, HIGHLIGHT_FILL, INK, MISSING_FILL, MUTED_INK, NEUTRAL_MARK} from '../../draw/theme';
import type {Alignment} from '../../model/generation';
import {percentText, type ColorScale, type Grid} from '../../model/metrics';
import {truncate} from '../../model/tokens';
import type {HeadRef} from '../../state/state';
import type {Flow, TextToken} from './scene';

export const FONT = font(null, 14);
export const FONT_BOLD = font(600, 14);
export const PAD = 16; // px around each figure
export const LINE = 32; // px per line of text
export const BOX_PAD = 4; // px between a token's text and its box
export const TOKEN_GAP = 2; // px between token boxes
export const SPACE = 5; // px more where a space precedes a token
export const SIDE_WIDTH = 340; // px: the side pane
const BOX_HEIGHT = 22; // px: a token's box
const PROB_BAR = 4; // px: the probability bar under a generated token
const DIVERGE = '#d93025'; // where two decodings part
const DIFFER_FILL = '#fce8e6'; // a token that differs

/** `text` shortened with an ellipsis to fit `width` px in `font`. */
export function fitText(text: string, font: string, width: number): string {
  if (textWidth(text, font) <= width) return text;
  const chars = Array.from(text);
  let n = chars.length;
  while (n > 1 && textWidth(chars.slice(0, n - 1).join('') + '…', font) > width) n--;
  return chars.slice(0, n - 1).join('') + '…';
}

/** What the text figure shows. */
export interface TextFigure {
  tokens: TextToken[];
  widths: number[];
  flow: Flow;
  /** the generated token shown, and its index in the text */
  current: number;
  /** keys 0..heat.length−1 of the current token's row (the text's first tokens), or null while loading */
  heat: Float32Array | null;
  heatScale: ColorScale;
  /** heat mode `heads`: each head's row and colour, drawn side by side in a token's box instead */
  split: {rows: Float32Array[]; colors: string[]; top: number} | null;
  probs: number[];
  probScale: ColorScale;
  /** the clicked earlier token (a key), or null */
  locked: number | null;
  hover: number | null;
}

/** The text index of the first token of each line, for the rows a scroll position shows. */
export function lineTop(line: number): number {
  return PAD + line * LINE;
}

/** Paints the lines [first, last] of the text, scrolled up by `scrollTop`. */
export function paintText(painter: Painter, f: TextFigure, width: number, height: number, scrollTop: number): {first: number; last: number} {
  const firstLine = Math.max(0, Math.floor((scrollTop - PAD) / LINE));
  const lastLine = Math.floor((scrollTop + height - PAD) / LINE);
  let first = -1;
  let last = -1;
  painter.clip(0, 0, width, height, () => {
    for (let i = 0; i < f.tokens.length; i++) {
      const line = f.flow.line[i];
      if (line < firstLine) continue;
      if (line > lastLine) break;
      if (first < 0) first = i;
      last = i;
      const token = f.tokens[i];
      const x = PAD + f.flow.x[i];
      const y = lineTop(line) - scrollTop + (LINE - BOX_HEIGHT) / 2;
      const w = f.widths[i];
      const t = token.generated;
      const isCurrent = t === f.current;
      const weight = f.heat && i < f.heat.length ? f.heat[i] : 0;
      if (f.split) {
        // One stripe per head, its opacity the head's weight over the largest shown.
        const stripe = w / f.split.rows.length;
        if (isCurrent) painter.rect(x, y, w, BOX_HEIGHT, HIGHLIGHT_FILL);
        f.split.rows.forEach((r, h) => {
          if (i < r.length && r[i] > 0) painter.rect(x + h * stripe, y, stripe, BOX_HEIGHT, f.split!.colors[h], Math.min(1, r[i] / f.split!.top) * 0.75);
        });
      } else if (weight > 0) painter.rect(x, y, w, BOX_HEIGHT, f.heatScale.color(weight));
      else if (isCurrent) painter.rect(x, y, w, BOX_HEIGHT, HIGHLIGHT_FILL);
      if (t !== null) painter.rect(x, y + BOX_HEIGHT + 1, w, PROB_BAR, f.probScale.color(f.probs[t]));
      else painter.rect(x, y + BOX_HEIGHT + 2, w, 1, BORDER);
      if (isCurrent) painter.strokeRect(x - 1, y - 1, w + 2, BOX_HEIGHT + 2, ACCENT, 2);
      else if (i === f.locked) painter.strokeRect(x - 0.5, y - 0.5, w + 1, BOX_HEIGHT + 1, INK, 1.5);
      else if (i === f.hover) painter.strokeRect(x + 0.5, y + 0.5, w - 1, BOX_HEIGHT - 1, FAINT_INK, 1);
      const later = t !== null && t > f.current; // not written yet at the current token
      const dark = !f.split && weight > f.heatScale.domain[1] * 0.55;
      painter.text(token.label, x + BOX_PAD, y + BOX_HEIGHT / 2, {font: isCurrent ? FONT_BOLD : FONT, color: later ? FAINT_INK : dark ? '#ffffff' : INK});
    }
  });
  return {first, last};
}

/** The token card: the current token, its probability, and the top alternatives. */
export interface TokenCard {
  title: string;
  subtitle: string;
  /** [label, probability, is the chosen token] */
  top: [string, number, boolean][];
}

/** The side pane's contents, laid out from top to bottom. */
export interface SideFigure {
  card: TokenCard;
  gridTitle: string;
  gridSubtitle: string;
  grid: Grid;
  gridScale: ColorScale;
  picked: HeadRef[];
  hover: HeadRef | null;
  /** the attention paid to the clicked token by each generated token, or a hint */
  attendedTitle: string;
  attendedSubtitle: string;
  attended: (number | null)[] | null;
  current: number;
  legendTitle: string;
  /** the text's heat scale; null when each head is a stripe of its own colour */
  heatScale: ColorScale | null;
  probScale: ColorScale;
}

const CARD_ROW = 18; // px per alternative
const TITLE = 20; // px per title line
const CHART_HEIGHT = 90; // px: the attended-by chart

export interface SideLayout {
  height: number;
  grid: HeatmapGeometry;
  /** the attended-by chart's box */
  chart: {x: number; y: number; w: number; h: number; bar: number};
}

export function sideLayout(f: SideFigure, width: number): SideLayout {
  let y = PAD + TITLE * 2 + f.card.top.length * CARD_ROW + 12;
  y += TITLE * 2;
  const rows = f.grid.length;
  const cols = f.grid[0]?.length ?? 1;
  const grid = fitHeatmap({x: PAD, y, w: width - 2 * PAD, h: Math.max(60, rows * 22 + 16)}, rows, cols, 26);
  y += grid.outer.h + 8 + LEGEND_HEIGHT + 8;
  y += TITLE * 2;
  const count = f.attended?.length ?? 0;
  const chartW = width - 2 * PAD;
  const chart = {x: PAD, y, w: chartW, h: CHART_HEIGHT, bar: count ? chartW / count : 0};
  y += CHART_HEIGHT + 18;
  y += TITLE + 2 * LEGEND_HEIGHT + 16;
  return {height: y + PAD, grid, chart};
}

export function paintSide(painter: Painter, f: SideFigure, layout: SideLayout, width: number): void {
  const x = PAD;
  let y = PAD;
  const room = width - 2 * PAD;
  const title = (text: string, at: number) => painter.text(fitText(text, FONT_TITLE, room), x, at + 6, {font: FONT_TITLE, color: INK});
  const subtitle = (text: string, at: number) => painter.text(fitText(text, FONT_SMALL, room), x, at + 6 + TITLE - 2, {font: FONT_SMALL, color: MUTED_INK});
  title(f.card.title, y);
  subtitle(f.card.subtitle, y);
  y += TITLE * 2;
  const barX = x + 130;
  const barW = width - barX - PAD - 48;
  for (const [label, p, chosen] of f.card.top) {
    painter.text(truncate(label, 18), x, y + CARD_ROW / 2, {font: chosen ? font(600, 12) : font(null, 12), color: chosen ? INK : MUTED_INK});
    painter.rect(barX, y + 4, barW, CARD_ROW - 8, MISSING_FILL);
    painter.rect(barX, y + 4, Math.max(1, barW * p), CARD_ROW - 8, chosen ? ACCENT : NEUTRAL_MARK);
    painter.text(percentText(p), width - PAD, y + CARD_ROW / 2, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    y += CARD_ROW;
  }
  y += 12;
  title(f.gridTitle, y);
  subtitle(f.gridSubtitle, y);
  const g = layout.grid;
  paintHeatmap(painter, g, f.grid, f.gridScale, {picked: f.picked, hover: f.hover});
  paintLegend(painter, x, g.y + g.height + 8, Math.min(width - 2 * PAD, 220), f.gridScale, f.grid.some((r) => r.some((v) => v === null)), 'loading');
  const c = layout.chart;
  y = c.y - TITLE * 2;
  title(f.attendedTitle, y);
  subtitle(f.attendedSubtitle, y);
  painter.strokeRect(c.x + 0.5, c.y + 0.5, c.w - 1, c.h - 1, BORDER, 1);
  if (f.attended) {
    const top = Math.max(1e-6, ...f.attended.map((v) => v ?? 0));
    const gap = c.bar >= 4 ? 1 : 0;
    f.attended.forEach((v, t) => {
      if (v === null) return;
      const h = (c.h - 4) * (v / top);
      painter.rect(c.x + t * c.bar + gap / 2, c.y + c.h - 2 - h, Math.max(0.5, c.bar - gap), h, t === f.current ? ACCENT : NEUTRAL_MARK);
    });
    painter.text(`max ${percentText(top)}`, c.x + c.w, c.y + c.h + 10, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
  }
  y = c.y + c.h + 18;
  title(f.legendTitle, y);
  y += TITLE;
  if (f.heatScale) paintLegend(painter, x, y, Math.min(width - 2 * PAD, 220), f.heatScale);
  else painter.text('a stripe per head, in its colour; opacity: its weight ÷ the largest', x, y + 8, {font: FONT_SMALL, color: MUTED_INK});
  y += LEGEND_HEIGHT;
  painter.text('token probability (bar under a generated token)', x, y + 4, {font: FONT_SMALL, color: MUTED_INK});
  paintLegend(painter, x, y + 12, Math.min(width - 2 * PAD, 220), f.probScale);
}

/** The comparison of two decodings of one prompt, one above the other. */
export interface CompareFigure {
  title: string;
  labels: [string, string];
  tokens: [string[], string[]];
  alignment: Alignment;
  /** the generated token shown (in the panel's decoding, A) */
  current: number;
}

export interface CompareLayout {
  height: number;
  /** per aligned column: x, the top of its block, its width */
  columns: {x: number; y: number; w: number}[];
}

export const MAX_COMPARED = 2_000; // aligned columns drawn (a canvas cannot be taller than 32,767 px)
const COMPARE_ROW = 24; // px per decoding row
const COMPARE_LABEL = 90; // px: the row labels
const BLOCK_GAP = 12; // px between wrapped blocks

export function compareLayout(f: CompareFigure, width: number): CompareLayout {
  const columns: {x: number; y: number; w: number}[] = [];
  let x = PAD + COMPARE_LABEL;
  let y = PAD + TITLE;
  for (const p of f.alignment.pairs.slice(0, MAX_COMPARED)) {
    const label = (side: 0 | 1, i: number | null) => (i === null ? '—' : truncate(f.tokens[side][i], 24));
    const w = Math.max(textWidth(label(0, p.a), FONT), textWidth(label(1, p.b), FONT)) + 2 * BOX_PAD;
    if (x + w > width - PAD && x > PAD + COMPARE_LABEL) {
      x = PAD + COMPARE_LABEL;
      y += 2 * COMPARE_ROW + BLOCK_GAP;
    }
    columns.push({x, y, w});
    x += w + TOKEN_GAP;
  }
  return {height: y + 2 * COMPARE_ROW + PAD, columns};
}

export function paintCompare(painter: Painter, f: CompareFigure, layout: CompareLayout): void {
  painter.text(f.title, PAD, PAD + 6, {font: FONT_TITLE, color: INK});
  const blocks = new Set(layout.columns.map((c) => c.y));
  for (const y of blocks) {
    painter.text(f.labels[0], PAD, y + COMPARE_ROW / 2, {font: FONT_SMALL, color: MUTED_INK});
    painter.text(f.labels[1], PAD, y + COMPARE_ROW * 1.5, {font: FONT_SMALL, color: MUTED_INK});
  }
  f.alignment.pairs.slice(0, layout.columns.length).forEach((p, k) => {
    const c = layout.columns[k];
    for (const side of [0, 1] as const) {
      const i = side === 0 ? p.a : p.b;
      const y = c.y + side * COMPARE_ROW + 2;
      if (!p.same) painter.rect(c.x, y, c.w, COMPARE_ROW - 4, DIFFER_FILL);
      const text = i === null ? '—' : truncate(f.tokens[side][i], 24);
      painter.text(text, c.x + BOX_PAD, y + (COMPARE_ROW - 4) / 2, {font: FONT, color: i === null ? FAINT_INK : INK});
    }
    if (p.a === f.current) painter.strokeRect(c.x - 1, c.y + 1, c.w + 2, COMPARE_ROW - 2, ACCENT, 2);
    if (f.alignment.divergence !== null && p.a === f.alignment.divergence && !p.same) {
      painter.lines([c.x - 1.5, c.y - 2, c.x - 1.5, c.y + 2 * COMPARE_ROW], 1, DIVERGE, 1, 2);
      painter.text('diverge', c.x, c.y - 5, {font: FONT_SMALL, color: DIVERGE});
    }
  });
}

/** The column of a comparison at a point, or null. */
export function compareHit(layout: CompareLayout, x: number, y: number): number | null {
  const k = layout.columns.findIndex((c) => x >= c.x && x < c.x + c.w && y >= c.y && y < c.y + 2 * COMPARE_ROW);
  return k < 0 ? null : k;
}

/** The text token at a point of the text figure (in content coordinates), or null. */
export function textHit(f: Pick<TextFigure, 'flow' | 'widths'>, x: number, y: number): number | null {
  const line = Math.floor((y - PAD) / LINE);
  for (let i = 0; i < f.widths.length; i++) {
    if (f.flow.line[i] !== line) continue;
    const left = PAD + f.flow.x[i];
    if (x >= left && x < left + f.widths[i]) return i;
  }
  return null;
}

/** The source a decoder attended to (cross attention): the current token's row as one heat strip. */
export interface SourceFigure {
  title: string;
  labels: string[];
  /** one weight per source token, or null while loading */
  heat: Float32Array | null;
  scale: ColorScale;
}

export const SOURCE_HEIGHT = 76; // px: title, strip and labels
const STRIP_TOP = 30; // px from the figure's top to the strip
const STRIP_HEIGHT = 20;
const MIN_LABELLED_CELL = 28; // px: narrower cells get a label every few cells

function sourceCell(width: number, n: number): number {
  return (width - 2 * PAD) / Math.max(1, n);
}

export function paintSource(painter: Painter, f: SourceFigure, width: number): void {
  const legend = Math.min(200, width / 4);
  painter.text(fitText(f.title, FONT_TITLE, width - 3 * PAD - legend), PAD, PAD, {font: FONT_TITLE, color: INK});
  paintLegend(painter, width - PAD - legend, 4, legend, f.scale);
  const n = f.labels.length;
  const cell = sourceCell(width, n);
  for (let j = 0; j < n; j++) {
    const w = f.heat ? f.heat[j] : null;
    if (w === null) painter.rect(PAD + j * cell, STRIP_TOP, cell, STRIP_HEIGHT, MISSING_FILL);
    else if (w > 0) painter.rect(PAD + j * cell, STRIP_TOP, cell, STRIP_HEIGHT, f.scale.color(w));
  }
  painter.strokeRect(PAD + 0.5, STRIP_TOP + 0.5, width - 2 * PAD - 1, STRIP_HEIGHT - 1, BORDER, 1);
  const every = Math.max(1, Math.ceil(MIN_LABELLED_CELL / cell));
  for (let j = 0; j < n; j += every) {
    const room = cell * every - 2;
    painter.text(fitText(f.labels[j], FONT_SMALL, Math.max(room, 8)), PAD + j * cell + 1, STRIP_TOP + STRIP_HEIGHT + 10, {font: FONT_SMALL, color: MUTED_INK});
  }
}

/** The source token at a point of the source figure, or null. */
export function sourceHit(width: number, n: number, x: number, y: number): number | null {
  if (y < STRIP_TOP || y >= STRIP_TOP + STRIP_HEIGHT || x < PAD || x >= width - PAD) return null;
  const j = Math.floor((x - PAD) / sourceCell(width, n));
  return j >= 0 && j < n ? j : null;
}
