// Saves the current view, as drawn (hover and locked tokens included), as SVG or PNG.

import {PAPER} from './theme';
import {CanvasPainter, SvgPainter, type Painter} from './painter';

/** What a view offers to export: its visible figure, drawn through a painter. */
export interface Figure {
  readonly width: number;
  readonly height: number;
  paint(painter: Painter): void;
}

const PNG_SCALE = 2; // device pixels per CSS pixel in exported PNGs

export function figureSvg(figure: Figure): string {
  const painter = new SvgPainter(figure.width, figure.height);
  painter.rect(0, 0, figure.width, figure.height, PAPER);
  figure.paint(painter);
  return painter.toString();
}

export function figurePng(figure: Figure): Promise<Blob> {
  const canvas = document.createElement('canvas');
  const painter = new CanvasPainter(canvas, figure.width, figure.height, PNG_SCALE);
  painter.rect(0, 0, figure.width, figure.height, PAPER);
  figure.paint(painter);
  return new Promise((resolve, reject) =>
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('the browser could not encode the PNG'))), 'image/png'),
  );
}

export function download(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  link.style.display = 'none';
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export async function exportFigure(figure: Figure, format: 'svg' | 'png', basename: string): Promise<void> {
  const blob = format === 'svg' ? new Blob([figureSvg(figure)], {type: 'image/svg+xml'}) : await figurePng(figure);
  download(blob, `${basename}.${format}`);
}

/** A file name from the selection: letters, digits, dots, dashes and underscores only. */
export function exportName(parts: (string | number)[]): string {
  return parts
    .map((p) => String(p).replace(/[^A-Za-z0-9._-]+/g, '_'))
    .filter((p) => p !== '')
    .join('-');
}
