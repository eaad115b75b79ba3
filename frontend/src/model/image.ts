// The image view's maths (its overlay component and the state share it): tokens ↔ patches,
// attention → heat per patch cell → pixels, layout and hit-testing. Pure: no DOM (colours come
// from d3-scale-chromatic).

import {rgb} from 'd3-color';
import {interpolateInferno, interpolateRdBu} from 'd3-scale-chromatic';
import type {ImageLayout} from '../data/api';
import type {Rect} from './geometry';
import type {SequenceLayout} from './sequence_image';

/** An image example's layout (`/examples` → `image`): the prefix tokens, then the patches; or a
 * vision–language example's image (`images`), whose cells name their tokens (sequence_image.ts). */
export type ImageInfo = ImageLayout | SequenceLayout;

/** Whether the layout is a vision–language image inside a sequence. */
export function isSequence(info: ImageInfo): info is SequenceLayout {
  return 'cellTokens' in info;
}

/** What the image view shows: attention of one query, its rollout, or heads' pixel distances. */
export type ImageMode = 'attention' | 'rollout' | 'distance';
export const IMAGE_MODES: readonly ImageMode[] = ['attention', 'rollout', 'distance'];

export interface Patch {
  row: number;
  col: number;
}

/** Number of tokens an image example has: prefix tokens plus one per patch. */
export function imageTokenCount(info: ImageInfo): number {
  return info.prefix_tokens + info.grid[0] * info.grid[1];
}

/** Why an example's tokens do not fit its image layout, or null when they do. */
export function imageMismatch(info: ImageInfo, numTokens: number): string | null {
  if (isSequence(info)) {
    const last = Math.max(...info.cellTokens, ...info.chipTokens);
    return last < numTokens ? null : `image ${info.index} names token ${last}, but the example has ${numTokens} tokens`;
  }
  const [rows, cols] = info.grid;
  if (!(rows > 0 && cols > 0) || info.prefix_tokens < 0) return `the image grid ${rows} × ${cols} (prefix ${info.prefix_tokens}) is not a patch grid`;
  const expected = imageTokenCount(info);
  if (numTokens !== expected)
    return `the example has ${numTokens} tokens, but its image has ${info.prefix_tokens} prefix tokens and ${rows} × ${cols} patches (${expected})`;
  return null;
}

/** The token of a patch. */
export function patchToken(info: ImageInfo, patch: Patch): number {
  if (isSequence(info)) return info.cellTokens[patch.row * info.grid[1] + patch.col];
  return info.prefix_tokens + patch.row * info.grid[1] + patch.col;
}

/** The patch of a token; null for a prefix token or a token past the grid. */
export function tokenPatch(info: ImageInfo, token: number): Patch | null {
  const [rows, cols] = info.grid;
  const p = isSequence(info) ? info.cellTokens.indexOf(token) : token - info.prefix_tokens;
  if (p < 0 || p >= rows * cols) return null;
  return {row: Math.floor(p / cols), col: p % cols};
}

/** A token's name: the prefix token's name, or `r{row}c{col}` for a patch. */
export function tokenName(info: ImageInfo, token: number): string {
  const patch = tokenPatch(info, token);
  if (patch) return `r${patch.row}c${patch.col}`;
  if (isSequence(info)) return info.chipNames[info.chipTokens.indexOf(token)] ?? `token ${token}`;
  return info.prefix_names[token] ?? `prefix ${token}`;
}

/** A weight row over all tokens split into the patch cells (row-major) and the prefix tokens. */
export interface Heat {
  rows: number;
  cols: number;
  cells: Float32Array;
  prefix: Float32Array;
}

export function patchHeat(weights: ArrayLike<number>, info: ImageInfo): Heat {
  const [rows, cols] = info.grid;
  if (isSequence(info)) {
    if (weights.length < imageMismatchBound(info)) throw new Error(`patchHeat: ${weights.length} weights for image ${info.index}'s tokens`);
    return {rows, cols, cells: Float32Array.from(info.cellTokens, (t) => weights[t]), prefix: Float32Array.from(info.chipTokens, (t) => weights[t])};
  }
  const p = info.prefix_tokens;
  if (weights.length < p + rows * cols) throw new Error(`patchHeat: ${weights.length} weights for ${p} prefix tokens and ${rows * cols} patches`);
  const cells = new Float32Array(rows * cols);
  for (let c = 0; c < cells.length; c++) cells[c] = weights[p + c];
  const prefix = new Float32Array(p);
  for (let t = 0; t < p; t++) prefix[t] = weights[t];
  return {rows, cols, cells, prefix};
}

function imageMismatchBound(info: SequenceLayout): number {
  return Math.max(...info.cellTokens, ...info.chipTokens) + 1;
}

/** The mean of some rows of weights (the chosen heads' attention of one query). */
export function meanRows(rows: readonly ArrayLike<number>[]): Float32Array {
  if (!rows.length) throw new Error('meanRows: no rows');
  const out = new Float32Array(rows[0].length);
  for (const row of rows) for (let j = 0; j < out.length; j++) out[j] += row[j];
  for (let j = 0; j < out.length; j++) out[j] /= rows.length;
  return out;
}

/** B − A, cell by cell and prefix token by prefix token. */
export function heatDifference(a: Heat, b: Heat): Heat {
  if (a.cells.length !== b.cells.length || a.prefix.length !== b.prefix.length) throw new Error('heatDifference: A and B have different image layouts');
  return {
    rows: a.rows,
    cols: a.cols,
    cells: b.cells.map((v, c) => v - a.cells[c]),
    prefix: b.prefix.map((v, t) => v - a.prefix[t]),
  };
}

/** How heat maps to colour: a sequential ramp from `min` to `max` (weights), or a diverging one
 * over [−max, max] (B − A; `min` is −max). */
export interface HeatScale {
  diverging: boolean;
  min: number;
  max: number;
}

/** The scale of some heats: diverging up to the largest |value|; sequential from 0 (`fromZero`:
 * attention weights) or from the smallest cell (a rollout, whose weights all sit well above 0)
 * up to the largest. The range is never empty. */
export function heatScale(heats: readonly Heat[], diverging: boolean, fromZero = true): HeatScale {
  let [lo, hi] = [Infinity, -Infinity];
  for (const heat of heats) for (const v of heat.cells) [lo, hi] = [Math.min(lo, diverging ? -Math.abs(v) : v), Math.max(hi, diverging ? Math.abs(v) : v)];
  if (!(lo <= hi)) [lo, hi] = [0, 0];
  if (diverging) return {diverging, min: -(hi > 0 ? hi : 1), max: hi > 0 ? hi : 1};
  const min = fromZero ? 0 : lo;
  return {diverging, min, max: hi > min ? hi : min + 1};
}

/** Where a value sits on the scale, 0..1 (diverging: 0.5 is no change). */
export function heatPosition(scale: HeatScale, value: number): number {
  const t = (value - scale.min) / (scale.max - scale.min);
  return Math.min(1, Math.max(0, t));
}

/** The colour at a position of the scale: inferno (dark: little attention, bright: much) or
 * blue–white–red (blue: B lower, red: B higher). */
export function heatColor(scale: HeatScale, t: number): string {
  return scale.diverging ? interpolateRdBu(1 - t) : interpolateInferno(t);
}

/** RGBA pixels, one per patch cell (rows × cols), at `opacity` (0..1). Drawn scaled up with crisp
 * edges over the image, each pixel covers its patch exactly. */
export function heatPixels(heat: Heat, scale: HeatScale, opacity: number): Uint8ClampedArray {
  const out = new Uint8ClampedArray(heat.cells.length * 4);
  const alpha = Math.round(255 * Math.min(1, Math.max(0, opacity)));
  for (let c = 0; c < heat.cells.length; c++) {
    const {r, g, b} = rgb(heatColor(scale, heatPosition(scale, heat.cells[c])));
    out.set([r, g, b, alpha], c * 4);
  }
  return out;
}

/** The largest box of the image's aspect ratio that fits in `box`, centred. */
export function fitImage(box: Rect, width: number, height: number): Rect {
  if (!(width > 0 && height > 0) || box.w <= 0 || box.h <= 0) return {x: box.x, y: box.y, w: 0, h: 0};
  const scale = Math.min(box.w / width, box.h / height);
  const w = width * scale;
  const h = height * scale;
  return {x: box.x + (box.w - w) / 2, y: box.y + (box.h - h) / 2, w, h};
}

/** The box of one patch of an image drawn in `image`. */
export function patchBox(image: Rect, grid: [number, number], patch: Patch): Rect {
  const w = image.w / grid[1];
  const h = image.h / grid[0];
  return {x: image.x + patch.col * w, y: image.y + patch.row * h, w, h};
}

/** The patch under a point of an image drawn in `image`, or null outside it. */
export function patchAt(image: Rect, grid: [number, number], x: number, y: number): Patch | null {
  if (x < image.x || y < image.y || x >= image.x + image.w || y >= image.y + image.h) return null;
  const col = Math.min(grid[1] - 1, Math.floor(((x - image.x) / image.w) * grid[1]));
  const row = Math.min(grid[0] - 1, Math.floor(((y - image.y) / image.h) * grid[0]));
  return {row, col};
}

/** A grid of `count` boxes of aspect `aspect` (w / h) in `box`, as large as fit, each with `label`
 * px of room above it and `gap` px between; returns the boxes for the images (without labels). */
export function tileBoxes(box: Rect, count: number, aspect: number, label: number, gap: number): Rect[] {
  let best: {cols: number; w: number} = {cols: 1, w: 0};
  for (let cols = 1; cols <= count; cols++) {
    const rows = Math.ceil(count / cols);
    const cellW = (box.w - gap * (cols - 1)) / cols;
    const cellH = (box.h - gap * (rows - 1)) / rows - label;
    const w = Math.min(cellW, cellH * aspect);
    if (w > best.w) best = {cols, w};
  }
  const w = Math.max(0, best.w);
  const h = w / aspect;
  const rows = Math.ceil(count / best.cols);
  const totalW = best.cols * w + (best.cols - 1) * gap;
  const totalH = rows * (h + label) + (rows - 1) * gap;
  const x0 = box.x + Math.max(0, (box.w - totalW) / 2);
  const y0 = box.y + Math.max(0, (box.h - totalH) / 2);
  return Array.from({length: count}, (_, i) => ({
    x: x0 + (i % best.cols) * (w + gap),
    y: y0 + Math.floor(i / best.cols) * (h + label + gap) + label,
    w,
    h,
  }));
}

/** One dot of the ViT paper's figure 7: a head's mean attention distance at a layer. */
export interface DistancePoint {
  layer: number;
  head: number;
  /** input pixels */
  value: number;
}

/** The dots of the pixel-distance scatter from a stored `pixel_distance` [L][H] grid (missing
 * values left out). */
export function distancePoints(grid: readonly (readonly (number | null)[])[]): DistancePoint[] {
  const points: DistancePoint[] = [];
  grid.forEach((heads, layer) =>
    heads.forEach((value, head) => {
      if (value !== null && Number.isFinite(value)) points.push({layer, head, value});
    }),
  );
  return points;
}

/** The largest distance two patch centres of the image can have, in input pixels: the scatter's
 * natural upper bound (the diagonal between corner patch centres). */
export function maxPixelDistance(info: ImageInfo): number {
  const [rows, cols] = info.grid;
  const [ph, pw] = info.patch_size;
  return Math.hypot((rows - 1) * ph, (cols - 1) * pw);
}
