// Colours: one per head (distinct for any number of heads), weight tints and a diverging scale.

import {hcl, rgb} from 'd3-color';
import {scaleDiverging} from 'd3-scale';
import {interpolateRdBu, schemeTableau10} from 'd3-scale-chromatic';

const CHROMA = 52; // CIE LCh chroma of generated head colours
const HUE_OFFSET = 30; // degrees: start the hue circle at an orange-red, not at magenta

/** A distinct colour for each of `numHeads` heads, as #rrggbb; none repeat. */
export function headColors(numHeads: number): string[] {
  if (numHeads <= schemeTableau10.length) return schemeTableau10.slice(0, numHeads);
  // More heads than a categorical scheme holds: equal hue steps around the CIE LCh circle in two
  // (three past 20 heads) lightness bands; neighbouring heads sit in different bands, so they
  // differ in lightness as well as hue. Any two of 16 heads are >= 25 apart in CIELAB, of 32 >= 16.
  const lightness = numHeads <= 20 ? [45, 68] : [40, 58, 76];
  const bands = lightness.length;
  const perBand = Math.ceil(numHeads / bands);
  return Array.from({length: numHeads}, (_, h) => {
    const band = h % bands;
    const hue = HUE_OFFSET + (360 * Math.floor(h / bands)) / perBand + (360 * band) / (perBand * bands);
    return hcl(hue % 360, CHROMA, lightness[band]).formatHex();
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

/** TensorBoard's default run palette (2.x, light theme): its runs table and charts colour the run
 * at position i of its run list (`data/runs`, oldest first) with colour i mod 7. */
export const TENSORBOARD_RUN_PALETTE = ['#425066', '#12b5cb', '#e52592', '#f9ab00', '#9334e6', '#7cb342', '#e8710a'];

/** Run colours as TensorBoard gives them: each run keeps the index it got when first seen, and
 * runs appearing later take the next ones (as TensorBoard's run store does). */
export class RunColors {
  private readonly index = new Map<string, number>();

  /** Registers runs in TensorBoard's order (its `data/runs` answer). */
  add(runs: readonly string[]): void {
    for (const run of runs) if (!this.index.has(run)) this.index.set(run, this.index.size);
  }

  color(run: string): string {
    if (!this.index.has(run)) this.index.set(run, this.index.size);
    return TENSORBOARD_RUN_PALETTE[this.index.get(run)! % TENSORBOARD_RUN_PALETTE.length];
  }
}
