// An image with a heat overlay, one cell per patch, drawn through a Painter (so exports match the
// screen); and the overlay's colour legend.

import type {Painter, Rect} from '../draw/painter';
import {FONT_SMALL, INK, MUTED_INK} from '../draw/theme';
import {heatColor, heatPixels, patchBox, type Heat, type HeatScale, type Patch} from '../model/image';

/** A canvas holding a decoded image (the Painter draws canvases). */
export function imageCanvas(image: ImageBitmap): HTMLCanvasElement {
  const canvas = document.createElement('canvas');
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext('2d')!.drawImage(image, 0, 0);
  return canvas;
}

/** A canvas of one pixel per patch cell: the heat's colours at `opacity`. */
export function heatCanvas(heat: Heat, scale: HeatScale, opacity: number): HTMLCanvasElement {
  const canvas = document.createElement('canvas');
  canvas.width = heat.cols;
  canvas.height = heat.rows;
  const pixels = new ImageData(heat.cols, heat.rows);
  pixels.data.set(heatPixels(heat, scale, opacity));
  canvas.getContext('2d')!.putImageData(pixels, 0, 0);
  return canvas;
}

export interface OverlayMarks {
  /** the query patch: outlined in the accent colour */
  selected?: Patch | null;
  /** the patch under the pointer: outlined thinly */
  hover?: Patch | null;
}

/** Draws the image in `box`, the heat over it with crisp patch edges, and the marks. */
export function paintOverlay(painter: Painter, box: Rect, grid: [number, number], photo: HTMLCanvasElement, heat: HTMLCanvasElement | null, marks: OverlayMarks = {}): void {
  painter.image(photo, box.x, box.y, box.w, box.h, true);
  if (heat) painter.image(heat, box.x, box.y, box.w, box.h, false);
  painter.strokeRect(box.x, box.y, box.w, box.h, MUTED_INK, 1, 0.6);
  if (marks.hover) {
    const p = patchBox(box, grid, marks.hover);
    painter.strokeRect(p.x, p.y, p.w, p.h, '#ffffff', 1.5, 0.9);
  }
  if (marks.selected) {
    // Dark and white rings: the accent orange would vanish into inferno's oranges.
    const p = patchBox(box, grid, marks.selected);
    painter.strokeRect(p.x + 1, p.y + 1, p.w - 2, p.h - 2, INK, 3);
    painter.strokeRect(p.x + 1, p.y + 1, p.w - 2, p.h - 2, '#ffffff', 1.5);
  }
}

export const HEAT_LEGEND_HEIGHT = 30; // px: title, bar and tick labels
const LEGEND_STEPS = 48; // colour steps of the bar

/** A horizontal legend of the heat scale: 0 … max, or −max … 0 … max for B − A. */
export function paintHeatLegend(painter: Painter, x: number, y: number, w: number, scale: HeatScale, title: string, format: (v: number) => string): void {
  painter.text(title, x, y + 5, {font: FONT_SMALL, color: MUTED_INK});
  const barY = y + 11;
  const step = w / LEGEND_STEPS;
  for (let s = 0; s < LEGEND_STEPS; s++) painter.rect(x + s * step, barY, step + 0.5, 8, heatColor(scale, (s + 0.5) / LEGEND_STEPS));
  painter.strokeRect(x, barY, w, 8, MUTED_INK, 0.5, 0.5);
  const ticks = scale.diverging ? [scale.min, 0, scale.max] : [scale.min, scale.max];
  ticks.forEach((t, i) => {
    const at = x + (w * i) / (ticks.length - 1);
    const align = i === 0 ? 'left' : i === ticks.length - 1 ? 'right' : 'center';
    painter.text(format(t), at, barY + 15, {font: FONT_SMALL, color: INK, align});
  });
}
