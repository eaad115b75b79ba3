// Colours: one per head (distinct for any number of heads), weight tints and a diverging scale.

import {hcl, rgb} from 'd3-color';
import {scaleDiverging} from 'd3-scale';
import {interpolateRdBu, schemeTableau10} from 'd3-scale-chromatic';

const LIGHTNESS_BANDS = [52, 70, 38]; // CIE L* of successive heads past the categorical scheme
const CHROMA = 62;

/** A distinct colour for each of `numHeads` heads, as #rrggbb; none repeat. */
export function headColors(numHeads: number): string[] {
  if (numHeads <= schemeTableau10.length) return schemeTableau10.slice(0, numHeads);
  // More heads than a categorical scheme holds: walk the hue circle in equal steps, alternating
  // lightness so that neighbouring heads differ in two dimensions, not one small hue step.
  const golden = 137.508; // degrees: successive heads land far apart on the circle
  return Array.from({length: numHeads}, (_, h) => {
    const hue = (h * golden) % 360;
    return hcl(hue, CHROMA, LIGHTNESS_BANDS[h % LIGHTNESS_BANDS.length]).formatHex();
  });
}

/** RGBA for every weight code 0..255 (weight = (code / 255)^2): white tinted towards `color`. */
export function tintTable(color: string): Uint8ClampedArray {
  const {r, g, b} = rgb(color);
  const table = new Uint8ClampedArray(256 * 4);
  for (let code = 0; code < 256; code++) {
    // The code is sqrt(weight): the tint follows a square-root scale, so that weights of a few
    // percent stay visible next to a 0.9 on the first token.
    const t = code / 255;
    table[code * 4] = 255 + (r - 255) * t;
    table[code * 4 + 1] = 255 + (g - 255) * t;
    table[code * 4 + 2] = 255 + (b - 255) * t;
    table[code * 4 + 3] = 255;
  }
  return table;
}

/** A diverging colour scale for signed values in [-maxAbs, maxAbs]: blue negative, red positive. */
export function divergingColor(maxAbs: number): (value: number) => string {
  const m = maxAbs > 0 ? maxAbs : 1;
  const scale = scaleDiverging((t: number) => interpolateRdBu(1 - t)).domain([-m, 0, m]).clamp(true);
  // Cache a 257-step ramp: the neuron view colours tens of thousands of cells per draw.
  const ramp = Array.from({length: 257}, (_, s) => rgb(scale(((s - 128) / 128) * m)).formatHex());
  return (value: number) => ramp[Math.max(0, Math.min(256, Math.round((value / m) * 128) + 128))];
}

/** Tableau blue-grey used for neutral marks (selection outlines, axes). */
export const INK = '#212121';
export const MUTED_INK = '#757575';
export const ACCENT = '#f57c00'; // TensorBoard's orange
