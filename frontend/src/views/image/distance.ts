// The image view's pixel-distance scatter: each head's stored mean attention distance (input
// pixels) by layer at one step, as in the ViT paper's figure 7; never recomputed here.

import type {MetricSeries} from '../../data/api';
import {headColors} from '../../model/colors';
import {LineChart, paintAxisTitles, type Dot} from '../../components/line_chart';
import {textWidth, type Painter, type Rect} from '../../draw/painter';
import {nearestStep} from '../../state/selection';
import {FONT_SMALL, INK} from '../../draw/theme';
import {distancePoints, type ImageInfo} from '../../model/image';

const MAX_WIDTH = 720; // px
const MAX_HEIGHT = 440; // px
const KEY_HEIGHT = 24; // px under the chart: the heads' colours

/** The stored series, the step the panel shows and the image it belongs to. */
export interface DistanceData {
  series: MetricSeries;
  step: number;
  info: ImageInfo;
}

export interface Scatter {
  chart: LineChart;
  dots: Dot[];
  /** the stored step drawn (nearest to the panel's) */
  step: number;
  /** per head */
  colors: string[];
}

/** The scatter at the stored step nearest to the panel's, fitted into `box`. */
export function distanceScatter({series, step: wanted, info}: DistanceData, box: Rect): Scatter {
  const step = nearestStep(series.steps, wanted);
  const grid = series.values[series.steps.indexOf(step)];
  const points = distancePoints(grid);
  const colors = headColors(grid[0]?.length ?? 1);
  const dots = points.map((p) => ({x: p.layer, y: p.value, color: colors[p.head], head: [p.layer, p.head] as [number, number], r: 4}));
  const top = Math.max(1, ...points.map((p) => p.value)) * 1.08;
  const input = `${info.grid[1] * info.patch_size[1]} × ${info.grid[0] * info.patch_size[0]} px`;
  const chartBox = {x: box.x, y: box.y, w: Math.min(box.w, MAX_WIDTH), h: Math.min(box.h - KEY_HEIGHT, MAX_HEIGHT)};
  const subtitle = `each head, by layer (ViT paper, fig. 7) · step ${step} · input ${input}`;
  const chart = new LineChart(chartBox, 'Mean attention distance', {domain: [-0.5, grid.length - 0.5], integer: true}, [0, top], subtitle);
  return {chart, dots, step, colors};
}

/** Draws the scatter, its axis titles and the heads' key under it. */
export function paintDistance(painter: Painter, scatter: Scatter, hoverDot: Dot | null): void {
  scatter.chart.paint(painter, [], scatter.dots, {hoverDot});
  paintAxisTitles(painter, scatter.chart, 'layer', 'pixels');
  let x = scatter.chart.plot.x;
  const y = scatter.chart.box.y + scatter.chart.box.h + 10;
  scatter.colors.forEach((color, h) => {
    painter.path((c) => c.arc(x + 4, y, 4, 0, 2 * Math.PI), {fill: color});
    painter.text(`head ${h}`, x + 12, y, {font: FONT_SMALL, color: INK});
    x += textWidth(`head ${h}`, FONT_SMALL) + 26;
  });
}
