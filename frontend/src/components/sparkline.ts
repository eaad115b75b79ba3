// A sparkline: a few series over steps in a small box, no axes; an optional dashed threshold.

import {line} from 'd3-shape';
import {scaleLinear} from 'd3-scale';
import type {Painter, Rect} from '../draw/painter';
import {AXIS_LINE} from '../draw/theme';

export interface SparkSeries {
  steps: readonly number[];
  values: readonly (number | null)[];
  color: string;
  width: number;
  alpha?: number;
}

/** Draws `series` in `box` on shared scales (steps and values of all series, plus `threshold`). */
export function paintSparkline(painter: Painter, box: Rect, series: readonly SparkSeries[], threshold: number | null = null): void {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const s of series) {
    s.steps.forEach((step, i) => {
      const v = s.values[i];
      if (v === null || !Number.isFinite(v)) return;
      [x0, x1, y0, y1] = [Math.min(x0, step), Math.max(x1, step), Math.min(y0, v), Math.max(y1, v)];
    });
  }
  if (!(x0 <= x1)) return;
  if (threshold !== null) [y0, y1] = [Math.min(y0, threshold), Math.max(y1, threshold)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const x = scaleLinear().domain(x0 === x1 ? [x0 - 1, x1 + 1] : [x0, x1]).range([box.x, box.x + box.w]);
  const y = scaleLinear().domain([y0, y1]).range([box.y + box.h, box.y]);
  painter.lines([box.x, box.y + box.h, box.x + box.w, box.y + box.h], 1, AXIS_LINE, 1, 1);
  if (threshold !== null) {
    painter.path((c) => {
      c.moveTo(box.x, y(threshold));
      c.lineTo(box.x + box.w, y(threshold));
    }, {stroke: AXIS_LINE, width: 1, dash: [3, 3]});
  }
  for (const s of series) {
    const points = s.steps.map((step, i) => [step, s.values[i]] as [number, number | null]);
    painter.path(
      (c) =>
        line<[number, number | null]>()
          .defined((p) => p[1] !== null && Number.isFinite(p[1]))
          .x((p) => x(p[0]))
          .y((p) => y(p[1]!))
          .context(c as unknown as CanvasRenderingContext2D)(points),
      {stroke: s.color, width: s.width, alpha: s.alpha ?? 1},
    );
  }
}
