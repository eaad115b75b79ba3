// The Long view's pure geometry: where the block map sits and how a zoom maps tokens to pixels,
// which tiles of which level to draw, the token list's lines, the overview rail and the profile grid.

import type {LongLevel} from '../../data/decode_long';
import {clampZoom, levelFor, mapView, tilesFor, type MapView, type Tile} from '../../model/long';
import type {LongZoom} from '../../state/state';

export const AXIS_LEFT = 58; // px left of the map: query positions (and the brush handle)
export const AXIS_TOP = 26; // px above the map: key positions
export const MAP_PAD = 12; // px around the map

/** The map's square on its canvas, and the group's size. */
export interface MapBox {
  x: number;
  y: number;
  side: number;
  nq: number;
  nk: number;
}

/** The largest square that fits a canvas of width × height with its axes. */
export function mapBox(width: number, height: number, nq: number, nk: number): MapBox {
  const side = Math.max(64, Math.floor(Math.min(width - AXIS_LEFT - MAP_PAD, height - AXIS_TOP - MAP_PAD)));
  return {x: AXIS_LEFT, y: AXIS_TOP, side, nq, nk};
}

/** d3-zoom's transform (content coordinates are the map's own pixels at zoom 1, offset by the
 * box's corner) for a zoom, and back. */
export interface Transform {
  k: number;
  x: number;
  y: number;
}

export function transformOf(zoom: LongZoom | null, box: MapBox): Transform {
  const z = clampZoom(zoom ?? {k: 1, x: 0, y: 0}, box.nq, box.nk);
  return {k: z.k, x: box.x - z.k * (box.x + (z.x * box.side) / box.nk), y: box.y - z.k * (box.y + (z.y * box.side) / box.nq)};
}

export function zoomOf(t: Transform, box: MapBox): LongZoom {
  const x = ((box.x - t.x) / t.k - box.x) * (box.nk / box.side);
  const y = ((box.y - t.y) / t.k - box.y) * (box.nq / box.side);
  return clampZoom({k: t.k, x, y}, box.nq, box.nk);
}

/** Pixel of key position j (x) and query position i (y) under a zoom. */
export function keyX(box: MapBox, zoom: LongZoom, j: number): number {
  return box.x + ((j - zoom.x) * zoom.k * box.side) / box.nk;
}

export function queryY(box: MapBox, zoom: LongZoom, i: number): number {
  return box.y + ((i - zoom.y) * zoom.k * box.side) / box.nq;
}

/** Token positions (fractional) under a pixel of the map, or null outside it. */
export function tokenAt(box: MapBox, zoom: LongZoom, px: number, py: number): {key: number; query: number} | null {
  if (px < box.x || py < box.y || px >= box.x + box.side || py >= box.y + box.side) return null;
  return {key: zoom.x + ((px - box.x) * box.nk) / (zoom.k * box.side), query: zoom.y + ((py - box.y) * box.nq) / (zoom.k * box.side)};
}

/** What to draw for a zoom: the coarsest level whole (the background, always at hand), the level
 * the zoom asks for and its visible tiles. */
export interface MapPlan {
  view: MapView;
  level: number;
  /** tiles of level 0 (the background) */
  background: Tile[];
  /** tiles of `level` that cover the view (none when level is 0) */
  tiles: Tile[];
}

export function mapPlan(levels: readonly LongLevel[], zoom: LongZoom | null, box: MapBox): MapPlan {
  const view = mapView(zoom, box.nq, box.nk);
  const level = levelFor(levels, view, box.side);
  const whole = {k0: 0, k1: box.nk, q0: 0, q1: box.nq};
  return {view, level, background: tilesFor(levels[0], whole), tiles: level > 0 ? tilesFor(levels[level], view) : []};
}

/** The token list's layout: `perLine` tokens a line. */
export interface TextLayout {
  perLine: number;
  lines: number;
}

export const LINE_HEIGHT = 22; // px of one line of tokens
const TOKEN_WIDTH = 46; // px: the width a token is given on average when choosing tokens a line

export function textLayout(width: number, numTokens: number): TextLayout {
  const perLine = Math.max(4, Math.min(32, Math.floor((width - 64) / TOKEN_WIDTH)));
  return {perLine, lines: Math.ceil(numTokens / perLine)};
}

/** The rail: the whole example top to bottom, token i at y(i). */
export function railY(i: number, numTokens: number, height: number): number {
  return (i / Math.max(1, numTokens)) * height;
}

export function railToken(y: number, numTokens: number, height: number): number {
  return Math.max(0, Math.min(numTokens - 1, Math.floor((y / Math.max(1, height)) * numTokens)));
}

/** The key bins of the rail (one per pixel row): the largest mean weight a brushed range gave a key
 * in each, and the key that took it. O(Nk). */
export function railBins(mass: Float32Array, height: number): {weight: Float32Array; key: Int32Array} {
  const bins = Math.max(1, Math.floor(height));
  const weight = new Float32Array(bins);
  const key = new Int32Array(bins).fill(-1);
  const n = mass.length;
  for (let j = 0; j < n; j++) {
    const w = mass[j];
    if (w <= 0) continue;
    const b = Math.min(bins - 1, Math.floor((j / n) * bins));
    if (w > weight[b]) {
      weight[b] = w;
      key[b] = j;
    }
  }
  return {weight, key};
}

/** Ticks of an axis over [lo, hi) tokens: round positions, about `count` of them. */
export function tokenTicks(lo: number, hi: number, count: number): number[] {
  const span = Math.max(1, hi - lo);
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t < hi; t += step) ticks.push(t);
  return ticks;
}
