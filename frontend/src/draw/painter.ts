// One drawing interface, two targets: the screen canvas (and PNG export) and SVG export.
// Views draw through a Painter only, so an export shows exactly what the screen shows.

import {pathRound} from 'd3-path';
import type {Rect} from '../model/geometry';

export interface TextStyle {
  font: string;
  color: string;
  align?: 'left' | 'right' | 'center';
  baseline?: 'middle' | 'alphabetic' | 'top' | 'bottom';
  alpha?: number;
  /** radians, clockwise, around (x, y) */
  rotate?: number;
}

// Rect lives in model/geometry.ts (pure layout maths uses it too); drawing code takes it from here.
export type {Rect};

/** The path-building calls that a canvas context and d3-path's `path()` share. */
export interface PathContext {
  moveTo(x: number, y: number): void;
  lineTo(x: number, y: number): void;
  quadraticCurveTo(cpx: number, cpy: number, x: number, y: number): void;
  bezierCurveTo(cpx1: number, cpy1: number, cpx2: number, cpy2: number, x: number, y: number): void;
  arc(x: number, y: number, radius: number, startAngle: number, endAngle: number, anticlockwise?: boolean): void;
  closePath(): void;
}

export interface PathStyle {
  stroke?: string;
  fill?: string;
  /** px */
  width?: number;
  alpha?: number;
  /** dash and gap lengths, px */
  dash?: number[];
}

export interface Painter {
  readonly width: number;
  readonly height: number;
  rect(x: number, y: number, w: number, h: number, fill: string, alpha?: number): void;
  strokeRect(x: number, y: number, w: number, h: number, stroke: string, lineWidth?: number, alpha?: number): void;
  text(text: string, x: number, y: number, style: TextStyle): void;
  /** `count` segments in one colour and opacity; xy holds x1, y1, x2, y2 per segment. */
  lines(xy: ArrayLike<number>, count: number, color: string, alpha: number, width: number): void;
  /** Draws a bitmap (e.g. a heatmap), or the `crop` of it, scaled into a box; `smooth` false keeps
   * pixels crisp. */
  image(source: HTMLCanvasElement, x: number, y: number, w: number, h: number, smooth: boolean, crop?: Rect): void;
  /** Runs `draw` with drawing restricted to a box. */
  clip(x: number, y: number, w: number, h: number, draw: () => void): void;
  /** One path (lines, curves, circles), built by `build`, then stroked and/or filled. */
  path(build: (context: PathContext) => void, style: PathStyle): void;
  /** Runs `draw` with the origin moved to (x, y). */
  translate(x: number, y: number, draw: () => void): void;
}

// Text widths come from a canvas in both painters: SVG output keeps the screen's layout.
let measureContext: CanvasRenderingContext2D | null = null;
const widthCache = new Map<string, number>();

export function textWidth(text: string, font: string): number {
  const key = `${font}\u0000${text}`;
  let width = widthCache.get(key);
  if (width === undefined) {
    measureContext ??= document.createElement('canvas').getContext('2d')!;
    measureContext.font = font;
    width = measureContext.measureText(text).width;
    if (widthCache.size > 50_000) widthCache.clear();
    widthCache.set(key, width);
  }
  return width;
}

/** Draws on a canvas; sizes it for the device pixel ratio. */
export class CanvasPainter implements Painter {
  readonly ctx: CanvasRenderingContext2D;

  constructor(
    readonly canvas: HTMLCanvasElement,
    readonly width: number,
    readonly height: number,
    readonly scale = window.devicePixelRatio || 1,
  ) {
    const pixelWidth = Math.max(1, Math.round(width * scale));
    const pixelHeight = Math.max(1, Math.round(height * scale));
    if (canvas.width !== pixelWidth) canvas.width = pixelWidth;
    if (canvas.height !== pixelHeight) canvas.height = pixelHeight;
    this.ctx = canvas.getContext('2d')!;
    this.ctx.setTransform(scale, 0, 0, scale, 0, 0);
    this.ctx.clearRect(0, 0, width, height);
  }

  rect(x: number, y: number, w: number, h: number, fill: string, alpha = 1): void {
    const {ctx} = this;
    ctx.globalAlpha = alpha;
    ctx.fillStyle = fill;
    ctx.fillRect(x, y, w, h);
    ctx.globalAlpha = 1;
  }

  strokeRect(x: number, y: number, w: number, h: number, stroke: string, lineWidth = 1, alpha = 1): void {
    const {ctx} = this;
    ctx.globalAlpha = alpha;
    ctx.strokeStyle = stroke;
    ctx.lineWidth = lineWidth;
    ctx.strokeRect(x, y, w, h);
    ctx.globalAlpha = 1;
  }

  text(text: string, x: number, y: number, style: TextStyle): void {
    const {ctx} = this;
    ctx.globalAlpha = style.alpha ?? 1;
    ctx.font = style.font;
    ctx.fillStyle = style.color;
    ctx.textAlign = style.align ?? 'left';
    ctx.textBaseline = style.baseline ?? 'middle';
    if (style.rotate) {
      ctx.save();
      ctx.translate(x, y);
      ctx.rotate(style.rotate);
      ctx.fillText(text, 0, 0);
      ctx.restore();
    } else {
      ctx.fillText(text, x, y);
    }
    ctx.globalAlpha = 1;
  }

  lines(xy: ArrayLike<number>, count: number, color: string, alpha: number, width: number): void {
    if (count === 0) return;
    const {ctx} = this;
    ctx.globalAlpha = alpha;
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.lineCap = 'round';
    ctx.beginPath();
    for (let s = 0; s < count; s++) {
      ctx.moveTo(xy[4 * s], xy[4 * s + 1]);
      ctx.lineTo(xy[4 * s + 2], xy[4 * s + 3]);
    }
    ctx.stroke();
    ctx.globalAlpha = 1;
  }

  image(source: HTMLCanvasElement, x: number, y: number, w: number, h: number, smooth: boolean, crop?: Rect): void {
    const {ctx} = this;
    ctx.imageSmoothingEnabled = smooth;
    ctx.imageSmoothingQuality = 'high';
    const c = crop ?? {x: 0, y: 0, w: source.width, h: source.height};
    ctx.drawImage(source, c.x, c.y, c.w, c.h, x, y, w, h);
  }

  clip(x: number, y: number, w: number, h: number, draw: () => void): void {
    const {ctx} = this;
    ctx.save();
    ctx.beginPath();
    ctx.rect(x, y, w, h);
    ctx.clip();
    draw();
    ctx.restore();
  }

  path(build: (context: PathContext) => void, style: PathStyle): void {
    const {ctx} = this;
    ctx.beginPath();
    build(ctx);
    ctx.globalAlpha = style.alpha ?? 1;
    if (style.fill) {
      ctx.fillStyle = style.fill;
      ctx.fill();
    }
    if (style.stroke) {
      ctx.strokeStyle = style.stroke;
      ctx.lineWidth = style.width ?? 1;
      ctx.lineJoin = 'round';
      ctx.lineCap = 'round';
      ctx.setLineDash(style.dash ?? []);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.globalAlpha = 1;
  }

  translate(x: number, y: number, draw: () => void): void {
    const {ctx} = this;
    ctx.save();
    ctx.translate(x, y);
    draw();
    ctx.restore();
  }
}

function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const round = (v: number) => Math.round(v * 10) / 10;

const SVG_BASELINE: Record<string, string> = {middle: 'central', alphabetic: 'alphabetic', top: 'hanging', bottom: 'text-after-edge'};
const SVG_ANCHOR: Record<string, string> = {left: 'start', right: 'end', center: 'middle'};

/** Records drawing as an SVG document. Text is escaped: tokens are data. */
export class SvgPainter implements Painter {
  private readonly parts: string[] = [];
  private clipCount = 0;

  constructor(
    readonly width: number,
    readonly height: number,
  ) {}

  rect(x: number, y: number, w: number, h: number, fill: string, alpha = 1): void {
    const opacity = alpha < 1 ? ` fill-opacity="${round(alpha * 100) / 100}"` : '';
    this.parts.push(`<rect x="${round(x)}" y="${round(y)}" width="${round(w)}" height="${round(h)}" fill="${escapeXml(fill)}"${opacity}/>`);
  }

  strokeRect(x: number, y: number, w: number, h: number, stroke: string, lineWidth = 1, alpha = 1): void {
    this.parts.push(
      `<rect x="${round(x)}" y="${round(y)}" width="${round(w)}" height="${round(h)}" fill="none" stroke="${escapeXml(stroke)}" ` +
        `stroke-width="${lineWidth}" stroke-opacity="${round(alpha * 100) / 100}"/>`,
    );
  }

  text(text: string, x: number, y: number, style: TextStyle): void {
    const opacity = style.alpha !== undefined && style.alpha < 1 ? ` fill-opacity="${style.alpha}"` : '';
    const rotate = style.rotate ? ` transform="rotate(${round((style.rotate * 180) / Math.PI)} ${round(x)} ${round(y)})"` : '';
    this.parts.push(
      `<text x="${round(x)}" y="${round(y)}" style="font: ${escapeXml(style.font)}; white-space: pre" fill="${escapeXml(style.color)}" ` +
        `text-anchor="${SVG_ANCHOR[style.align ?? 'left']}" dominant-baseline="${SVG_BASELINE[style.baseline ?? 'middle']}"${opacity}${rotate}>` +
        `${escapeXml(text)}</text>`,
    );
  }

  lines(xy: ArrayLike<number>, count: number, color: string, alpha: number, width: number): void {
    if (count === 0) return;
    const d: string[] = [];
    for (let s = 0; s < count; s++) {
      d.push(`M${round(xy[4 * s])} ${round(xy[4 * s + 1])}L${round(xy[4 * s + 2])} ${round(xy[4 * s + 3])}`);
    }
    this.parts.push(
      `<path d="${d.join('')}" fill="none" stroke="${escapeXml(color)}" stroke-opacity="${round(alpha * 1000) / 1000}" ` +
        `stroke-width="${width}" stroke-linecap="round"/>`,
    );
  }

  image(source: HTMLCanvasElement, x: number, y: number, w: number, h: number, smooth: boolean, crop?: Rect): void {
    if (crop) {
      const piece = document.createElement('canvas');
      piece.width = crop.w;
      piece.height = crop.h;
      piece.getContext('2d')!.drawImage(source, crop.x, crop.y, crop.w, crop.h, 0, 0, crop.w, crop.h);
      source = piece;
    }
    const rendering = smooth ? '' : ' style="image-rendering: pixelated"';
    this.parts.push(
      `<image href="${source.toDataURL('image/png')}" x="${round(x)}" y="${round(y)}" width="${round(w)}" height="${round(h)}" ` +
        `preserveAspectRatio="none"${rendering}/>`,
    );
  }

  clip(x: number, y: number, w: number, h: number, draw: () => void): void {
    const id = `clip${this.clipCount++}`;
    this.parts.push(`<clipPath id="${id}"><rect x="${round(x)}" y="${round(y)}" width="${round(w)}" height="${round(h)}"/></clipPath>`);
    this.parts.push(`<g clip-path="url(#${id})">`);
    draw();
    this.parts.push('</g>');
  }

  path(build: (context: PathContext) => void, style: PathStyle): void {
    const context = pathRound(1);
    build(context);
    const d = context.toString();
    if (!d) return;
    const alpha = style.alpha ?? 1;
    const fill = style.fill ? `fill="${escapeXml(style.fill)}"${alpha < 1 ? ` fill-opacity="${round(alpha * 100) / 100}"` : ''}` : 'fill="none"';
    const stroke = style.stroke
      ? ` stroke="${escapeXml(style.stroke)}" stroke-width="${style.width ?? 1}" stroke-linejoin="round" stroke-linecap="round"` +
        `${alpha < 1 ? ` stroke-opacity="${round(alpha * 100) / 100}"` : ''}${style.dash?.length ? ` stroke-dasharray="${style.dash.join(' ')}"` : ''}`
      : '';
    this.parts.push(`<path d="${d}" ${fill}${stroke}/>`);
  }

  translate(x: number, y: number, draw: () => void): void {
    this.parts.push(`<g transform="translate(${round(x)} ${round(y)})">`);
    draw();
    this.parts.push('</g>');
  }

  toString(): string {
    return (
      `<svg xmlns="http://www.w3.org/2000/svg" width="${this.width}" height="${this.height}" ` +
      `viewBox="0 0 ${this.width} ${this.height}">\n${this.parts.join('\n')}\n</svg>\n`
    );
  }
}
