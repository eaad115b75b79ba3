// A filmstrip: a layer × head heatmap at a few steps spread over a run, so heads can be seen
// specialising at a glance; a frame is a step to go to.

import type {ColorScale, Grid} from '../model/metrics';
import {textWidth, type Painter} from '../draw/painter';
import {ACCENT, FONT_SMALL, FONT_TITLE, INK, MUTED_INK} from '../draw/theme';
import {HeatmapGeometry, paintHeatmap} from './heatmap';
import type {Point} from './pointer';

export const MAX_FRAMES = 10; // heatmaps in the strip
const FRAME_GAP = 14; // px between frames
const FRAME_LABEL = 16; // px under a frame: its step
const TITLE = 22; // px above the frames
const BOTTOM_GAP = 16; // px below the labels

/** One heatmap of the strip: the values at one step. */
export interface Frame {
  step: number;
  /** the step's index in the series */
  index: number;
  geometry: HeatmapGeometry;
}

/** Frames at up to MAX_FRAMES steps (evenly spread, first and last included) that fit `width` px
 * from (x, y); none for fewer than two steps. Returns the frames and the height they take. */
export function layoutFilmstrip(steps: readonly number[], numLayers: number, numHeads: number, x: number, y: number, width: number): {frames: Frame[]; height: number} {
  if (steps.length < 2) return {frames: [], height: 0};
  const cellW = Math.max(2, Math.min(10, Math.floor(110 / numHeads)));
  const cellH = Math.max(2, Math.min(cellW, Math.floor(80 / numLayers)));
  const frameW = cellW * numHeads;
  const count = Math.max(2, Math.min(MAX_FRAMES, steps.length, Math.floor((width + FRAME_GAP) / (frameW + FRAME_GAP))));
  const indices = [...new Set(Array.from({length: count}, (_, i) => Math.round((i * (steps.length - 1)) / (count - 1))))];
  const spread = indices.length > 1 ? (width - frameW) / (indices.length - 1) : 0;
  const top = y + TITLE;
  const frames = indices.map((index, i) => ({
    step: steps[index],
    index,
    geometry: new HeatmapGeometry(x + Math.round(i * Math.min(spread, frameW + 4 * FRAME_GAP)), top, numLayers, numHeads, cellW, cellH),
  }));
  return {frames, height: TITLE + cellH * numLayers + FRAME_LABEL + BOTTOM_GAP};
}

/** The frame under a point (frame and label included), or null. */
export function frameAt(frames: readonly Frame[], at: Point): number | null {
  const i = frames.findIndex(({geometry: g}) => at.x >= g.x - 3 && at.x <= g.x + g.width + 3 && at.y >= g.y - 3 && at.y <= g.y + g.height + FRAME_LABEL);
  return i < 0 ? null : i;
}

/** Paints the strip: its title, each frame (the current step outlined) and its step. */
export function paintFilmstrip(painter: Painter, frames: readonly Frame[], values: readonly Grid[], scale: ColorScale, title: string, current: number, hover: number | null): void {
  if (!frames.length) return;
  const x = frames[0].geometry.x + 4;
  const y = frames[0].geometry.y - TITLE + 6;
  painter.text(title, x, y, {font: FONT_TITLE, color: INK});
  painter.text('each head at a few steps · click one to show it', x + textWidth(title, FONT_TITLE) + 8, y, {font: FONT_SMALL, color: MUTED_INK});
  frames.forEach((frame, i) => {
    const g = frame.geometry;
    paintHeatmap(painter, g, values[frame.index], scale, {labels: false});
    const isCurrent = frame.step === current;
    if (isCurrent || hover === i) painter.strokeRect(g.x - 2.5, g.y - 2.5, g.width + 5, g.height + 5, isCurrent ? ACCENT : MUTED_INK, isCurrent ? 2 : 1);
    painter.text(`step ${frame.step}`, g.x + g.width / 2, g.y + g.height + 10, {font: FONT_SMALL, color: isCurrent ? INK : MUTED_INK, align: 'center'});
  });
}
