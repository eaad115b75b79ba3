// Layer × head heatmaps and their colour legend, drawn through a Painter (screen, PNG and SVG).

import type {ColorScale, Grid} from '../model/metrics';
import {textWidth, type Painter, type Rect} from '../draw/painter';
import type {HeadRef} from '../state/state';
import {ACCENT, AXIS_LINE, BORDER, FONT_SMALL, INK, MISSING_FILL, MISSING_MARK, MUTED_INK} from '../draw/theme';

// ---------------------------------------------------------------------------------------------
// Heatmap: layers down, heads across (as the poster and the model view lay them out)

export const HEATMAP_LEFT = 30; // px left of the cells: layer labels
export const HEATMAP_TOP = 16; // px above the cells: head labels

export class HeatmapGeometry {
  constructor(
    /** top-left corner of the cells */
    readonly x: number,
    readonly y: number,
    readonly rows: number,
    readonly cols: number,
    readonly cellW: number,
    readonly cellH: number,
  ) {}

  get width(): number {
    return this.cols * this.cellW;
  }

  get height(): number {
    return this.rows * this.cellH;
  }

  /** The figure's whole box, labels included. */
  get outer(): Rect {
    return {x: this.x - HEATMAP_LEFT, y: this.y - HEATMAP_TOP, w: this.width + HEATMAP_LEFT, h: this.height + HEATMAP_TOP};
  }

  cell(layer: number, head: number): Rect {
    return {x: this.x + head * this.cellW, y: this.y + layer * this.cellH, w: this.cellW, h: this.cellH};
  }

  hit(px: number, py: number): HeadRef | null {
    const head = Math.floor((px - this.x) / this.cellW);
    const layer = Math.floor((py - this.y) / this.cellH);
    return head >= 0 && head < this.cols && layer >= 0 && layer < this.rows ? [layer, head] : null;
  }
}

/** Cells as large as fit in `box` (labels included), at most `maxCell` px, at least 3 px tall. */
export function fitHeatmap(box: Rect, rows: number, cols: number, maxCell = 34): HeatmapGeometry {
  const cellW = Math.max(4, Math.min(maxCell, Math.floor((box.w - HEATMAP_LEFT) / cols)));
  const cellH = Math.max(3, Math.min(cellW, Math.floor((box.h - HEATMAP_TOP) / rows)));
  return new HeatmapGeometry(box.x + HEATMAP_LEFT, box.y + HEATMAP_TOP, rows, cols, cellW, cellH);
}

export interface HeatmapMarks {
  /** outlined in the accent colour */
  picked?: readonly HeadRef[];
  hover?: HeadRef | null;
  /** layer and head numbers around the cells (default true) */
  labels?: boolean;
}

const labelEvery = (size: number, minimum: number) => Math.max(1, Math.ceil(minimum / size));

export function paintHeatmap(painter: Painter, g: HeatmapGeometry, grid: Grid, scale: ColorScale, marks: HeatmapMarks = {}): void {
  const gap = g.cellW >= 10 && g.cellH >= 6 ? 1 : 0;
  const missing: number[] = [];
  for (let l = 0; l < g.rows; l++) {
    for (let h = 0; h < g.cols; h++) {
      const c = g.cell(l, h);
      const v = grid[l]?.[h];
      if (v === null || v === undefined || !Number.isFinite(v)) {
        painter.rect(c.x, c.y, c.w - gap, c.h - gap, MISSING_FILL);
        missing.push(c.x + 1, c.y + c.h - gap - 1, c.x + c.w - gap - 1, c.y + 1);
      } else {
        painter.rect(c.x, c.y, c.w - gap, c.h - gap, scale.color(v));
      }
    }
  }
  painter.lines(missing, missing.length / 4, MISSING_MARK, 1, 1);
  if (marks.labels ?? true) {
    const everyHead = labelEvery(g.cellW, 16);
    for (let h = 0; h < g.cols; h += everyHead) {
      painter.text(String(h), g.x + (h + 0.5) * g.cellW, g.y - 8, {font: FONT_SMALL, color: MUTED_INK, align: 'center'});
    }
    const everyLayer = labelEvery(g.cellH, 12);
    for (let l = 0; l < g.rows; l += everyLayer) {
      painter.text(`L${l}`, g.x - 5, g.y + (l + 0.5) * g.cellH, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    }
  }
  const line = g.cellW >= 6 ? 2 : 1;
  for (const [l, h] of marks.picked ?? []) {
    if (l >= g.rows || h >= g.cols) continue;
    const c = g.cell(l, h);
    painter.strokeRect(c.x - line / 2, c.y - line / 2, c.w - gap + line, c.h - gap + line, ACCENT, line);
  }
  if (marks.hover) {
    const c = g.cell(marks.hover[0], marks.hover[1]);
    painter.strokeRect(c.x - 0.5, c.y - 0.5, c.w - gap + 1, c.h - gap + 1, INK, 1.5);
  }
}

export function hasMissing(grid: Grid): boolean {
  return grid.some((row) => row.some((v) => v === null || !Number.isFinite(v)));
}

// ---------------------------------------------------------------------------------------------
// Colour legend

export const LEGEND_HEIGHT = 34; // px: bar, ticks and labels

const rampCanvases = new Map<string, HTMLCanvasElement>();

function rampCanvas(scale: ColorScale): HTMLCanvasElement {
  let canvas = rampCanvases.get(scale.scheme);
  if (!canvas) {
    canvas = document.createElement('canvas');
    canvas.width = 128;
    canvas.height = 1;
    const ctx = canvas.getContext('2d')!;
    for (let i = 0; i < 128; i++) {
      ctx.fillStyle = scale.ramp(i / 127);
      ctx.fillRect(i, 0, 1, 1);
    }
    rampCanvases.set(scale.scheme, canvas);
  }
  return canvas;
}

/** A horizontal colour bar with ticks; `missing` adds the key of cells without a value. */
export function paintLegend(painter: Painter, x: number, y: number, w: number, scale: ColorScale, missing = false, missingText = 'no value'): void {
  let barW = w;
  if (missing) {
    const text = textWidth(missingText, FONT_SMALL);
    barW = Math.max(60, w - text - 26);
    const mx = x + barW + 12;
    painter.rect(mx, y, 10, 8, MISSING_FILL);
    painter.lines([mx + 1, y + 7, mx + 9, y + 1], 1, MISSING_MARK, 1, 1);
    painter.text(missingText, mx + 14, y + 4, {font: FONT_SMALL, color: MUTED_INK});
  }
  painter.image(rampCanvas(scale), x, y, barW, 8, true);
  painter.strokeRect(x + 0.5, y + 0.5, barW - 1, 7, BORDER, 1);
  const [lo, hi] = scale.domain;
  const ticks = scale.ticks.filter((t) => t >= lo && t <= hi);
  const at = (v: number) => x + scale.position(v) * barW;
  const xy: number[] = [];
  for (const t of ticks) xy.push(at(t), y + 8, at(t), y + 12);
  painter.lines(xy, ticks.length, AXIS_LINE, 1, 1);
  for (const t of ticks) painter.text(scale.format(t), at(t), y + 19, {font: FONT_SMALL, color: MUTED_INK, align: 'center'});
}

