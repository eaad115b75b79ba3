// Charts over steps or layers, drawn through a Painter: lines, and dots for heads (a scatter plot is
// a chart of dots alone). Axes take their ticks and labels from d3-scale (d3-axis draws SVG
// elements, and these figures are drawn on a canvas).

import {format} from 'd3-format';
import {line} from 'd3-shape';
import {scaleLinear, scaleLog} from 'd3-scale';
import {textWidth, type Painter, type Rect} from '../draw/painter';
import type {HeadRef} from '../state/state';
import {ACCENT, AXIS_LINE, FONT_SMALL, FONT_TITLE, GRID_LINE, INK, MUTED_INK} from '../draw/theme';

/** True when (x, y) lies in `r`. */
export function inside(r: Rect, x: number, y: number): boolean {
  return x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h;
}

// ---------------------------------------------------------------------------------------------
// Line charts: over steps (linear or log axis) or over layers

export interface Line {
  key: string;
  label: string;
  color: string;
  xs: readonly number[];
  /** what is drawn: smoothed values when smoothing is on */
  ys: readonly (number | null)[];
  /** the values before smoothing, drawn faint behind (TensorBoard's style) */
  raw?: readonly (number | null)[];
  width?: number;
  dash?: number[];
  alpha?: number;
}

export interface Dot {
  x: number;
  y: number;
  color: string;
  head: HeadRef;
  r?: number;
}

export interface AxisSpec {
  domain: [number, number];
  log?: boolean;
  /** ticks at integers only (layers) */
  integer?: boolean;
  label?: string;
}

const MARGIN = {top: 24, right: 12, bottom: 30, left: 46};
const LOG_ZERO_GAP = 12; // px between step 0 (drawn at the axis start) and the log scale

const siFormat = format('~s');

/** A step as an axis label: exact up to 9999 (as TensorBoard writes steps), then 12k, 1.5M. */
export function stepText(step: number): string {
  return Math.abs(step) < 10_000 ? String(Math.round(step * 1000) / 1000) : siFormat(step);
}

/** An x axis over steps or layers. A log axis starts at the smallest positive value; values <= 0
 * (step 0) sit at its left end, marked `0`. */
class XAxis {
  private readonly linear;
  private readonly logScale;
  private readonly hasZero: boolean;

  constructor(
    private readonly spec: AxisSpec,
    private readonly x0: number,
    x1: number,
    positiveMin: number,
  ) {
    const [lo, hi] = spec.domain;
    this.linear = scaleLinear().domain(lo === hi ? [lo - 1, hi + 1] : [lo, hi]).range([x0, x1]);
    this.hasZero = lo <= 0;
    const min = Math.max(positiveMin, 1e-9);
    this.logScale = scaleLog()
      .domain(min >= hi ? [min, min * 10] : [min, hi])
      .range([this.hasZero ? x0 + LOG_ZERO_GAP : x0, x1]);
  }

  x(value: number): number {
    if (!this.spec.log) return this.linear(value);
    return value <= 0 ? this.x0 : this.logScale(value);
  }

  ticks(width: number): {value: number; label: string}[] {
    if (this.spec.log) {
      const out = this.logScale
        .ticks()
        .filter((t) => Math.abs(Math.log10(t) - Math.round(Math.log10(t))) < 1e-9)
        .map((t) => ({value: t, label: stepText(t)}));
      return this.hasZero ? [{value: 0, label: '0'}, ...out] : out;
    }
    const count = Math.max(2, Math.floor(width / 70));
    let ticks = this.linear.ticks(count);
    if (this.spec.integer) ticks = ticks.filter((t) => Number.isInteger(t));
    return ticks.map((t) => ({value: t, label: stepText(t)}));
  }

  invert(px: number): number {
    if (!this.spec.log) return this.linear.invert(px);
    return px <= this.x0 + LOG_ZERO_GAP / 2 && this.hasZero ? 0 : this.logScale.invert(px);
  }
}

/** The smallest finite and largest finite value of some series, padded; [0, 1] when empty. */
export function extentOf(series: Iterable<readonly (number | null)[]>, pad = 0.06): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const values of series) {
    for (const v of values) {
      if (v === null || !Number.isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (lo > hi) return [0, 1];
  if (lo === hi) return [lo - (Math.abs(lo) || 1) * 0.1, hi + (Math.abs(hi) || 1) * 0.1];
  const p = (hi - lo) * pad;
  return [lo - p, hi + p];
}

export interface ChartMarks {
  /** a dashed vertical line at this x (the step shown elsewhere) */
  marker?: number | null;
  /** a solid vertical line at this x (the hovered step) */
  cursor?: number | null;
  /** the line drawn on top, thicker; others fade */
  highlight?: string | null;
  /** the dot outlined */
  hoverDot?: Dot | null;
}

export class LineChart {
  readonly plot: Rect;
  readonly xAxis: XAxis;
  readonly y;

  constructor(
    readonly box: Rect,
    readonly title: string,
    x: AxisSpec,
    yDomain: [number, number],
    readonly subtitle = '',
    positiveMin = 1,
  ) {
    this.plot = {x: box.x + MARGIN.left, y: box.y + MARGIN.top, w: box.w - MARGIN.left - MARGIN.right, h: box.h - MARGIN.top - MARGIN.bottom};
    this.xAxis = new XAxis(x, this.plot.x, this.plot.x + this.plot.w, positiveMin);
    this.y = scaleLinear().domain(yDomain).range([this.plot.y + this.plot.h, this.plot.y]).nice(4);
  }

  x(value: number): number {
    return this.xAxis.x(value);
  }

  paint(painter: Painter, lines: readonly Line[], dots: readonly Dot[] = [], marks: ChartMarks = {}): void {
    const {plot, y} = this;
    painter.text(this.title, this.box.x + 4, this.box.y + 10, {font: FONT_TITLE, color: INK});
    if (this.subtitle) {
      const at = this.box.x + 4 + textWidth(this.title, FONT_TITLE) + 8;
      painter.text(this.subtitle, at, this.box.y + 10, {font: FONT_SMALL, color: MUTED_INK});
    }
    // y grid and labels
    const yTicks = y.ticks(Math.max(2, Math.floor(plot.h / 40)));
    const yFormat = y.tickFormat(Math.max(2, Math.floor(plot.h / 40)));
    const grid: number[] = [];
    for (const t of yTicks) grid.push(plot.x, y(t), plot.x + plot.w, y(t));
    for (const t of this.xAxis.ticks(plot.w)) grid.push(this.x(t.value), plot.y, this.x(t.value), plot.y + plot.h);
    painter.lines(grid, grid.length / 4, GRID_LINE, 1, 1);
    painter.lines([plot.x, plot.y + plot.h, plot.x + plot.w, plot.y + plot.h, plot.x, plot.y, plot.x, plot.y + plot.h], 2, AXIS_LINE, 1, 1);
    for (const t of yTicks) painter.text(yFormat(t), plot.x - 5, y(t), {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    for (const t of this.xAxis.ticks(plot.w)) {
      painter.text(t.label, this.x(t.value), plot.y + plot.h + 10, {font: FONT_SMALL, color: MUTED_INK, align: 'center'});
    }
    if (marks.marker !== null && marks.marker !== undefined) {
      const mx = this.x(marks.marker);
      painter.path((c) => {
        c.moveTo(mx, plot.y);
        c.lineTo(mx, plot.y + plot.h);
      }, {stroke: ACCENT, width: 1, dash: [3, 3]});
    }
    painter.clip(plot.x - 4, plot.y - 4, plot.w + 8, plot.h + 8, () => {
      const highlight = marks.highlight ?? null;
      const ordered = highlight ? [...lines.filter((l) => l.key !== highlight), ...lines.filter((l) => l.key === highlight)] : lines;
      for (const l of ordered) {
        const faded = highlight !== null && l.key !== highlight;
        if (l.raw) this.polyline(painter, l.xs, l.raw, {stroke: l.color, width: 1, alpha: 0.25 * (faded ? 0.4 : 1)});
        this.polyline(painter, l.xs, l.ys, {
          stroke: l.color,
          width: (l.width ?? 1.5) + (l.key === highlight ? 1 : 0),
          alpha: (l.alpha ?? 1) * (faded ? 0.25 : 1),
          dash: l.dash,
        });
      }
      // One path per colour and size: hundreds of heads' dots in a few fills.
      const groups = new Map<string, Dot[]>();
      for (const d of dots) {
        const key = `${d.color}\u0000${d.r ?? 2.5}`;
        const group = groups.get(key);
        if (group) group.push(d);
        else groups.set(key, [d]);
      }
      for (const group of groups.values()) {
        const r = group[0].r ?? 2.5;
        painter.path((c) => {
          for (const d of group) {
            c.moveTo(this.x(d.x) + r, y(d.y));
            c.arc(this.x(d.x), y(d.y), r, 0, 2 * Math.PI);
          }
        }, {fill: group[0].color, alpha: 0.85});
      }
      if (marks.hoverDot) {
        const d = marks.hoverDot;
        painter.path((c) => c.arc(this.x(d.x), y(d.y), (d.r ?? 2.5) + 2, 0, 2 * Math.PI), {stroke: INK, width: 1.5});
      }
    });
    if (marks.cursor !== null && marks.cursor !== undefined) {
      const cx = this.x(marks.cursor);
      painter.lines([cx, plot.y, cx, plot.y + plot.h], 1, MUTED_INK, 0.6, 1);
    }
  }

  /** A series as a line; gaps at missing values; a lone point as a dot. */
  private polyline(painter: Painter, xs: readonly number[], ys: readonly (number | null)[], style: {stroke: string; width: number; alpha: number; dash?: number[]}): void {
    const points: [number, number | null][] = xs.map((x, i) => [x, ys[i] ?? null]);
    const defined = (p: [number, number | null]) => p[1] !== null && Number.isFinite(p[1]);
    painter.path(
      (c) =>
        line<[number, number | null]>()
          .defined(defined)
          .x((p) => this.x(p[0]))
          .y((p) => this.y(p[1]!))
          .context(c as unknown as CanvasRenderingContext2D)(points),
      style,
    );
    // Points with no defined neighbour draw nothing as a line: show them as dots.
    points.forEach((p, i) => {
      if (!defined(p) || (i > 0 && defined(points[i - 1])) || (i + 1 < points.length && defined(points[i + 1]))) return;
      painter.path((c) => c.arc(this.x(p[0]), this.y(p[1]!), Math.max(2.5, style.width + 1), 0, 2 * Math.PI), {fill: style.stroke, alpha: style.alpha});
    });
  }

  /** The x value under a pointer, snapped to the nearest of `xs`. */
  nearestX(px: number, xs: readonly number[]): number | null {
    if (!xs.length) return null;
    let best = xs[0];
    for (const x of xs) if (Math.abs(this.x(x) - px) < Math.abs(this.x(best) - px)) best = x;
    return best;
  }

  /** The line passing closest (vertically) to a pointer at the x of `xs` nearest to it. */
  nearestLine(px: number, py: number, lines: readonly Line[]): {line: Line; index: number} | null {
    let best: {line: Line; index: number; distance: number} | null = null;
    for (const l of lines) {
      const x = this.nearestX(px, l.xs);
      if (x === null) continue;
      const index = l.xs.indexOf(x);
      const v = l.ys[index];
      if (v === null || v === undefined || !Number.isFinite(v)) continue;
      const distance = Math.hypot(this.x(x) - px, this.y(v) - py);
      if (!best || distance < best.distance) best = {line: l, index, distance};
    }
    return best && best.distance < 40 ? best : null;
  }

  nearestDot(px: number, py: number, dots: readonly Dot[]): Dot | null {
    let best: Dot | null = null;
    let distance = 10; // px
    for (const d of dots) {
      const dd = Math.hypot(this.x(d.x) - px, this.y(d.y) - py);
      if (dd < distance) [best, distance] = [d, dd];
    }
    return best;
  }
}

/** Axis titles: x below the ticks, y along the left edge (as text above the axis). */
export function paintAxisTitles(painter: Painter, chart: LineChart, x: string, y: string): void {
  const {plot} = chart;
  if (x) painter.text(x, plot.x + plot.w, plot.y + plot.h + 22, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
  if (y) painter.text(y, plot.x + 4, plot.y + 6, {font: FONT_SMALL, color: MUTED_INK, align: 'left'});
}
