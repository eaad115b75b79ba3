// The per-head metrics as the views show them: names, colour scales, and the maths on [L, H] grids
// and step series (smoothing, layer means, correlation, ranking). Pure: no DOM, no drawing.

import {rgb} from 'd3-color';
import {format} from 'd3-format';
import {scaleLinear} from 'd3-scale';
import {interpolateBlues, interpolateOranges, interpolatePlasma, interpolateRdBu, interpolateViridis} from 'd3-scale-chromatic';
import {METRICS} from '../data/schema';

/** [layer][head]; null where the value was NaN (e.g. no token of a part of speech). */
export type Grid = (number | null)[][];

/** The metrics of Vig & Belinkov's analysis, in the order the views list them: the Analysis view's
 * overview shows these. */
export const CORE_METRICS = ['distance', 'entropy', 'dependency_alignment', 'variability', 'null_attention'] as const;

/** How the views name and explain each stored metric (every name of the backend's schema:
 * test/metrics.test.ts fails when one is missing). */
export const METRIC_INFO: Record<string, {label: string; unit: string; about: string}> = {
  distance: {label: 'Distance', unit: 'tokens', about: 'mean distance between query and key, weighted by attention'},
  entropy: {label: 'Entropy', unit: 'nats', about: 'how spread out a query token’s attention is'},
  dependency_alignment: {label: 'Dependency alignment', unit: 'share', about: 'share of attention between tokens in a dependency relation'},
  variability: {label: 'Variability', unit: 'share', about: 'how much attention changes from input to input (low: positional)'},
  null_attention: {label: 'Null attention', unit: 'share', about: 'share of attention on the first token (queries after the first)'},
  previous_token: {label: 'Previous token', unit: 'share', about: 'share of attention each token pays to the token just before it'},
  attention_entropy: {label: 'Attention entropy', unit: 'nats', about: 'entropy of each query’s weights, nothing left out'},
  max_weight: {label: 'Max weight', unit: 'share', about: 'a query’s largest weight, on average (sink strength)'},
  max_logit: {label: 'Max logit', unit: 'logit', about: 'largest pre-softmax logit after scaling, soft cap and masks'},
  pixel_distance: {label: 'Pixel distance', unit: 'patches', about: 'mean distance between query and key patches on the image grid'},
  image_share: {label: 'Image share', unit: 'share', about: 'share of the text queries’ attention on image tokens (vision–language models)'},
  prefix_attention: {label: 'Prefix attention', unit: 'share', about: 'share of attention on the prefix tokens (CLS, registers)'},
  diagonal_alignment: {label: 'Diagonal alignment', unit: 'share', about: 'share of a target query’s attention near the length-scaled diagonal'},
  prompt_share: {label: 'Prompt share', unit: 'share', about: 'share of the attention of the queries that wrote generated tokens on the prompt'},
  induction: {label: 'Induction', unit: 'share', about: 'attention of a generated query to the token after an earlier occurrence of its own token'},
};

/** Universal POS tags (spaCy's coarse tags), for labels. */
export const UPOS_NAMES: Record<string, string> = {
  ADJ: 'adjective',
  ADP: 'adposition',
  ADV: 'adverb',
  AUX: 'auxiliary',
  CCONJ: 'coord. conjunction',
  DET: 'determiner',
  INTJ: 'interjection',
  NOUN: 'noun',
  NUM: 'numeral',
  PART: 'particle',
  PRON: 'pronoun',
  PROPN: 'proper noun',
  PUNCT: 'punctuation',
  SCONJ: 'subord. conjunction',
  SYM: 'symbol',
  VERB: 'verb',
  X: 'other',
};

/** `pos/NOUN` -> {direction: 'pos', tag: 'NOUN'}; null for the core metrics. */
export function posParts(metric: string): {direction: 'pos' | 'pos_from'; tag: string} | null {
  const match = /^(pos|pos_from)\/(.+)$/.exec(metric);
  return match ? {direction: match[1] as 'pos' | 'pos_from', tag: match[2]} : null;
}

export function metricLabel(metric: string): string {
  const pos = posParts(metric);
  if (pos) return `${pos.direction === 'pos' ? 'Attention to' : 'Attention from'} ${pos.tag}`;
  return METRIC_INFO[metric]?.label ?? metric;
}

export function metricAbout(metric: string): string {
  const pos = posParts(metric);
  if (pos) {
    const name = UPOS_NAMES[pos.tag] ?? pos.tag;
    return pos.direction === 'pos' ? `share of attention received by ${name} tokens` : `share of the attention that ${name} tokens pay`;
  }
  return METRIC_INFO[metric]?.about ?? '';
}

/** What a missing (NaN) value of a metric means, for legends and tooltips. */
export function missingText(metric: string): string {
  if (posParts(metric)) return 'no tokens of this tag';
  if (metric === 'entropy') return 'all on the first token';
  return 'no value';
}

/** Shares (0..1) are coloured from 0; distances and entropies from their smallest value. */
export function isShare(metric: string): boolean {
  return posParts(metric) !== null || (METRIC_INFO[metric]?.unit ?? 'share') === 'share';
}

/** The metrics of a probe in display order: the analysis metrics, the other stored metrics in the
 * schema's order, then POS received, then POS paid. */
export function sortMetrics(metrics: readonly string[]): string[] {
  const rank = (m: string) => {
    const core = (CORE_METRICS as readonly string[]).indexOf(m);
    if (core >= 0) return core;
    const stored = (METRICS as readonly string[]).indexOf(m);
    if (stored >= 0) return 10 + stored;
    return posParts(m)?.direction === 'pos' ? 100 : posParts(m) ? 200 : 300;
  };
  return [...metrics].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

export const formatValue = format('.3f');
const formatSigned = format('+.3f');

/** A value for a tooltip: 3 decimals, `no value` for NaN. */
export function valueText(value: number | null | undefined, signed = false): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return 'no value';
  return (signed ? formatSigned : formatValue)(value);
}

/** A colour scale with what its legend needs. */
/** A share as the dashboard writes it: 12.3%. */
export function percentText(share: number): string {
  return `${(share * 100).toFixed(1)}%`;
}

export interface ColorScale {
  domain: [number, number];
  color(value: number): string;
  /** colour at t in [0, 1] along the legend */
  ramp(t: number): string;
  /** the colour scheme's name: scales of one scheme share their ramp */
  scheme: Scheme;
  /** where a value sits along the legend, 0 to 1 */
  position(value: number): number;
  ticks: number[];
  format(value: number): string;
  diverging: boolean;
}

const RAMP_STEPS = 256; // colours precomputed per scheme

/** The colour schemes of the metric views (d3-scale-chromatic), by name. */
const SCHEMES = {
  viridis: (t: number) => interpolateViridis(t),
  blues: (t: number) => interpolateBlues(0.06 + 0.94 * t), // 0 stays distinct from the page
  redBlue: (t: number) => interpolateRdBu(1 - t), // blue low, red high
  surprise: (t: number) => interpolateOranges(0.85 * (1 - t)), // a probability: dark orange low, white at 1
};
export type Scheme = keyof typeof SCHEMES;

const ramps = new Map<Scheme, string[]>();

function rampOf(scheme: Scheme): string[] {
  let ramp = ramps.get(scheme);
  if (!ramp) {
    ramp = Array.from({length: RAMP_STEPS}, (_, i) => rgb(SCHEMES[scheme](i / (RAMP_STEPS - 1))).formatHex());
    ramps.set(scheme, ramp);
  }
  return ramp;
}

function rampScale(
  domain: [number, number],
  scheme: Scheme,
  diverging: boolean,
  position?: (value: number) => number,
  ticks: number | number[] = 4,
): ColorScale {
  const [lo, hi] = domain[0] === domain[1] ? [domain[0] - 0.5, domain[1] + 0.5] : domain;
  const ramp = rampOf(scheme);
  const at = (t: number) => ramp[Math.max(0, Math.min(RAMP_STEPS - 1, Math.round(t * (RAMP_STEPS - 1))))];
  const axis = scaleLinear().domain([lo, hi]);
  const where = position ?? ((value: number) => (value - lo) / (hi - lo));
  return {
    domain: [lo, hi],
    color: (value: number) => at(where(value)),
    ramp: at,
    scheme,
    position: where,
    ticks: typeof ticks === 'number' ? axis.ticks(ticks) : ticks,
    format: typeof ticks === 'number' ? axis.tickFormat(ticks) : format('.2~f'),
    diverging,
  };
}

/** The colour scale of a metric over the values it will show (all steps, so colours compare across
 * steps). Shares: light (none) to dark blue (all); distance, entropy: viridis, dark = low (a
 * previous-token head has distance ~1 and low entropy: it shows dark). */
export function metricScale(metric: string, values: Iterable<number | null>): ColorScale {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v === null || !Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo > hi) [lo, hi] = [0, 1];
  if (isShare(metric)) return shareScale(scaleLinear().domain([0, Math.max(hi, 1e-6)]).nice(4).domain()[1]);
  return rampScale([lo, hi], 'viridis', false);
}

/** Shares from 0 (light) to `top` (dark blue); `top` at most 1. */
export function shareScale(top = 1): ColorScale {
  return rampScale([0, Math.min(1, top)], 'blues', false);
}

/** A generated token's probability, 0 (dark orange: the model was unsure) to 1 (white: sure). */
export function probabilityScale(): ColorScale {
  return rampScale([0, 1], 'surprise', false, undefined, [0, 0.25, 0.5, 0.75, 1]);
}

/** Blue (B below A) to red (B above A), symmetric around 0. */
export function deltaScale(maxAbs: number): ColorScale {
  const m = maxAbs > 0 ? maxAbs : 1;
  return rampScale([-m, m], 'redBlue', true);
}

/** B − A of attention weights, ±`maxAbs`, on a signed square-root scale (as the weights' tint):
 * a change of a few percent stays visible next to one of 0.9. */
export function weightDeltaScale(maxAbs: number): ColorScale {
  const m = maxAbs > 0 ? maxAbs : 1;
  const position = (v: number) => 0.5 + 0.5 * Math.sign(v) * Math.sqrt(Math.min(1, Math.abs(v) / m));
  // Ticks at round values: the largest one-digit value within ±m, and one near m/4.
  const round = (v: number) => Math.floor(v / 10 ** Math.floor(Math.log10(v))) * 10 ** Math.floor(Math.log10(v));
  const outer = round(m);
  const inner = round(m / 4);
  return rampScale([-m, m], 'redBlue', true, position, [-outer, -inner, 0, inner, outer]);
}

/** A colour per layer, dark (first) to light (last), for curves and dots by depth. */
export function layerColor(layer: number, numLayers: number): string {
  return interpolatePlasma(numLayers > 1 ? (0.82 * layer) / (numLayers - 1) : 0);
}

/** TensorBoard's smoothing of scalar curves (its line chart's debiased exponential moving
 * average): non-finite values pass through, and a constant series is left as it is. */
export function smooth(values: readonly (number | null)[], weight: number): (number | null)[] {
  if (weight <= 0) return [...values];
  const finite = values.filter((v): v is number => v !== null && Number.isFinite(v));
  if (finite.every((v) => v === finite[0])) return [...values];
  let last = 0;
  let count = 0;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return v;
    last = last * weight + (1 - weight) * v;
    count++;
    return last / (weight === 1 ? 1 : 1 - Math.pow(weight, count));
  });
}

/** The mean of the finite values; null when there are none. */
export function mean(values: Iterable<number | null>): number | null {
  let sum = 0;
  let count = 0;
  for (const v of values) {
    if (v === null || !Number.isFinite(v)) continue;
    sum += v;
    count++;
  }
  return count ? sum / count : null;
}

/** Per layer, the mean over heads. */
export function layerMeans(grid: Grid): (number | null)[] {
  return grid.map((row) => mean(row));
}

/** Pearson's correlation of the pairs where both values are finite; null below 3 pairs. */
export function pearson(xs: readonly (number | null)[], ys: readonly (number | null)[]): {r: number | null; n: number} {
  const pairs: [number, number][] = [];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
    const x = xs[i];
    const y = ys[i];
    if (x !== null && y !== null && Number.isFinite(x) && Number.isFinite(y)) pairs.push([x, y]);
  }
  const n = pairs.length;
  if (n < 3) return {r: null, n};
  const mx = pairs.reduce((s, p) => s + p[0], 0) / n;
  const my = pairs.reduce((s, p) => s + p[1], 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (const [x, y] of pairs) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
    syy += (y - my) ** 2;
  }
  return {r: sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : null, n};
}

/** A head: [layer, head]. */
export type HeadRef = [number, number];

export interface RankedHead {
  head: HeadRef;
  value: number;
  /** the sort key: the value, or for `change` the change since `baseline` */
  key: number;
  change: number | null;
}

/** Heads sorted by value (lowest or highest first) or by how much they changed since `baseline`
 * (largest absolute change first); heads without a value are left out. */
export function rankHeads(grid: Grid, order: 'low' | 'high' | 'change', baseline: Grid | null = null): RankedHead[] {
  const out: RankedHead[] = [];
  grid.forEach((row, l) =>
    row.forEach((value, h) => {
      if (value === null || !Number.isFinite(value)) return;
      const base = baseline?.[l]?.[h];
      const change = base !== null && base !== undefined && Number.isFinite(base) ? value - base : null;
      if (order === 'change' && change === null) return;
      out.push({head: [l, h], value, key: order === 'change' ? Math.abs(change!) : value, change});
    }),
  );
  out.sort((x, y) => (order === 'low' ? x.key - y.key : y.key - x.key) || x.head[0] - y.head[0] || x.head[1] - y.head[1]);
  return out;
}

/** B − A per head; null where either is missing or the shapes differ. */
export function gridDelta(a: Grid, b: Grid): Grid {
  return b.map((row, l) =>
    row.map((vb, h) => {
      const va = a[l]?.[h];
      return va === null || va === undefined || vb === null || !Number.isFinite(va) || !Number.isFinite(vb) ? null : vb - va;
    }),
  );
}
