// The dashboard's state: what a link or a reload restores, its URL form, and the store views share.

import type {Tags} from './api';
import {metricTag} from './schema';
import {PAIRS, type Pair} from './transforms';
import {HEALTH_DEFAULTS} from './views/health_rank';
import {FUSIONS, MAX_DISCARD, type Fusion} from './views/image_view_rollout';
import {IMAGE_MODES, type ImageMode} from './views/image_view_scene';

export type ViewId = 'head' | 'model' | 'neuron' | 'image' | 'metrics' | 'analysis' | 'exemplars' | 'compare' | 'health';
export const VIEW_IDS: readonly ViewId[] = ['head', 'model', 'neuron', 'image', 'metrics', 'analysis', 'exemplars', 'compare', 'health'];

/** How the Metrics view ranks heads at the chosen step. */
export type Rank = 'low' | 'high' | 'change' | 'previous';
export const RANKS: readonly Rank[] = ['low', 'high', 'change', 'previous'];

/** What the Analysis view shows: the metric overview, or every part of speech (received, paid). */
export type Section = 'overview' | 'pos' | 'pos_from';
export const SECTIONS: readonly Section[] = ['overview', 'pos', 'pos_from'];

/** What the Compare view shows of A and B. */
export type CompareMode = 'head' | 'model' | 'diff' | 'changes';
export const COMPARE_MODES: readonly CompareMode[] = ['head', 'model', 'diff', 'changes'];

/** A head: [layer, head]. */
export type HeadRef = [number, number];

/** One side of a comparison; null fields follow the panel (see compareSides). */
export interface CompareSide {
  run: string | null;
  step: number | null;
}

/** Which column selected tokens sit in: queries ("from", left) or keys ("to", right). */
export type Side = 'from' | 'to';

export interface State {
  run: string | null;
  tag: string | null;
  /** null: follow the newest step as training logs more */
  step: number | null;
  example: number;
  view: ViewId;
  layer: number;
  /** heads shown; null: all */
  heads: number[] | null;
  /** locked tokens (more than one: their attention is summed) */
  tokens: number[];
  side: Side;
  pair: Pair;
  /** hide attention to the first and special tokens */
  hide: boolean;
  /** with `hide`, renormalise each row over the tokens left */
  renorm: boolean;
  /** arcs below this weight are not drawn */
  threshold: number;
  /** draw at most this many arcs per token and head (0: no limit) */
  topk: number;
  /** the metric the Metrics view plots (`distance`, `pos/NOUN`, ...) */
  metric: string;
  /** runs overlaid on the panel's run in the Metrics view's curves */
  runs: string[];
  /** TensorBoard's exponential moving average weight for curves, 0 (none) to 0.99 */
  smoothing: number;
  /** a logarithmic step axis */
  xlog: boolean;
  /** heads plotted over steps; empty: the layer's shown heads (when a subset is shown) */
  picks: HeadRef[];
  rank: Rank;
  /** part of speech of the Analysis view's POS heatmaps */
  pos: string;
  section: Section;
  /** the Compare view's A (reference) and B */
  a: CompareSide;
  b: CompareSide;
  compare: CompareMode;
  /** what the Compare view ranks heads by: `attention` (how much their weights moved) or a metric */
  delta: string;
  /** the image view: what it shows, heads as their mean or each, heat opacity, the rollout's head
   * fusion and discard ratio, B − A */
  imode: ImageMode;
  isplit: boolean;
  opacity: number;
  fusion: Fusion;
  discard: number;
  idiff: boolean;
  /** the Health panel: its source (null: the first), and its thresholds (health_rank.ts) */
  hsource: string | null;
  lgrow: number;
  llevel: number;
  edrop: number;
  efloor: number;
}

export const DEFAULT_STATE: Readonly<State> = Object.freeze({
  run: null,
  tag: null,
  step: null,
  example: 0,
  view: 'head',
  layer: 0,
  heads: null,
  tokens: [],
  side: 'from',
  pair: 'all',
  hide: false,
  renorm: false,
  threshold: 0.01,
  topk: 0,
  metric: 'distance',
  runs: [],
  smoothing: 0,
  xlog: false,
  picks: [],
  rank: 'low',
  pos: 'NOUN',
  section: 'overview',
  a: Object.freeze({run: null, step: null}),
  b: Object.freeze({run: null, step: null}),
  compare: 'diff',
  delta: 'attention',
  imode: 'attention',
  isplit: false,
  opacity: 0.6,
  fusion: 'mean',
  discard: 0,
  idiff: false,
  hsource: null,
  lgrow: HEALTH_DEFAULTS.logitGrowth,
  llevel: HEALTH_DEFAULTS.logitLevel,
  edrop: HEALTH_DEFAULTS.entropyDrop,
  efloor: HEALTH_DEFAULTS.entropyFloor,
});

/** A number in [0, max] from the URL, or null. */
function parseShare(text: string | undefined, max: number): number | null {
  if (text === undefined || text === '') return null;
  const value = Number(text);
  return Number.isFinite(value) && value >= 0 && value <= max ? value : null;
}

function parseIndex(text: string | undefined): number | null {
  return text !== undefined && /^\d{1,9}$/.test(text) ? Number(text) : null;
}

function parseIndexList(text: string | undefined): number[] | null {
  if (text === undefined || text === '') return text === '' ? [] : null;
  const parts = text.split(',').map(parseIndex);
  return parts.every((p) => p !== null) ? [...new Set(parts as number[])].sort((a, b) => a - b) : null;
}

function parseNameList(text: string | undefined): string[] {
  if (!text) return [];
  const names: string[] = [];
  for (const part of text.split(',')) {
    try {
      const name = decodeURIComponent(part);
      if (name && !names.includes(name)) names.push(name);
    } catch {
      // a malformed escape: skip the name
    }
  }
  return names;
}

function parsePicks(text: string | undefined): HeadRef[] {
  const picks: HeadRef[] = [];
  for (const part of (text ?? '').split(',')) {
    const match = /^(\d{1,6})\.(\d{1,6})$/.exec(part);
    if (match && !picks.some(([l, h]) => l === Number(match[1]) && h === Number(match[2]))) picks.push([Number(match[1]), Number(match[2])]);
  }
  return picks;
}

/** The state a set of URL parameters describes; anything malformed falls back to its default. */
export function decodeState(params: Readonly<Record<string, string>>): State {
  const state: State = {...DEFAULT_STATE, heads: null, tokens: [], runs: [], picks: [], a: {run: null, step: null}, b: {run: null, step: null}};
  if (params.run !== undefined) state.run = params.run;
  if (params.tag !== undefined) state.tag = params.tag;
  state.step = parseIndex(params.step);
  state.example = parseIndex(params.example) ?? 0;
  if (VIEW_IDS.includes(params.view as ViewId)) state.view = params.view as ViewId;
  state.layer = parseIndex(params.layer) ?? 0;
  state.heads = params.heads === 'all' ? null : parseIndexList(params.heads);
  state.tokens = parseIndexList(params.tokens) ?? [];
  if (params.side === 'to') state.side = 'to';
  if (PAIRS.includes(params.pair as Pair)) state.pair = params.pair as Pair;
  state.hide = params.hide === '1';
  state.renorm = params.renorm === '1';
  const threshold = Number(params.min);
  if (params.min !== undefined && params.min !== '' && threshold >= 0 && threshold <= 1) state.threshold = threshold;
  state.topk = parseIndex(params.topk) ?? 0;
  if (params.metric) state.metric = params.metric;
  state.runs = parseNameList(params.runs);
  const smoothing = Number(params.smooth);
  if (params.smooth !== undefined && params.smooth !== '' && smoothing >= 0 && smoothing <= MAX_SMOOTHING) state.smoothing = smoothing;
  state.xlog = params.xaxis === 'log';
  state.picks = parsePicks(params.picks);
  if (RANKS.includes(params.rank as Rank)) state.rank = params.rank as Rank;
  if (params.pos && /^[A-Z]{1,8}$/.test(params.pos)) state.pos = params.pos;
  if (SECTIONS.includes(params.section as Section)) state.section = params.section as Section;
  state.a = {run: params.a_run ?? null, step: parseIndex(params.a_step)};
  state.b = {run: params.b_run ?? null, step: parseIndex(params.b_step)};
  if (COMPARE_MODES.includes(params.compare as CompareMode)) state.compare = params.compare as CompareMode;
  if (params.delta) state.delta = params.delta;
  if (IMAGE_MODES.includes(params.imode as ImageMode)) state.imode = params.imode as ImageMode;
  state.isplit = params.isplit === '1';
  state.opacity = parseShare(params.opacity, 1) ?? DEFAULT_STATE.opacity;
  if (FUSIONS.includes(params.fusion as Fusion)) state.fusion = params.fusion as Fusion;
  state.discard = parseShare(params.discard, MAX_DISCARD) ?? 0;
  state.idiff = params.idiff === '1';
  if (params.hsource) state.hsource = params.hsource;
  state.lgrow = parseShare(params.lgrow, Infinity) ?? DEFAULT_STATE.lgrow;
  state.llevel = parseShare(params.llevel, Infinity) ?? DEFAULT_STATE.llevel;
  state.edrop = parseShare(params.edrop, 1) ?? DEFAULT_STATE.edrop;
  state.efloor = parseShare(params.efloor, Infinity) ?? DEFAULT_STATE.efloor;
  return state;
}

export const MAX_SMOOTHING = 0.99;

/** URL parameters for a state: only what differs from the defaults, in a fixed order. */
export function encodeState(state: Readonly<State>): Record<string, string> {
  const params: Record<string, string> = {};
  if (state.run !== null) params.run = state.run;
  if (state.tag !== null) params.tag = state.tag;
  if (state.step !== null) params.step = String(state.step);
  if (state.example !== 0) params.example = String(state.example);
  if (state.view !== DEFAULT_STATE.view) params.view = state.view;
  if (state.layer !== 0) params.layer = String(state.layer);
  if (state.heads !== null) params.heads = state.heads.join(',');
  if (state.tokens.length) params.tokens = state.tokens.join(',');
  if (state.side !== 'from') params.side = state.side;
  if (state.pair !== 'all') params.pair = state.pair;
  if (state.hide) params.hide = '1';
  if (state.renorm) params.renorm = '1';
  if (state.threshold !== DEFAULT_STATE.threshold) params.min = String(state.threshold);
  if (state.topk !== 0) params.topk = String(state.topk);
  if (state.metric !== DEFAULT_STATE.metric) params.metric = state.metric;
  if (state.runs.length) params.runs = state.runs.map(encodeURIComponent).join(',');
  if (state.smoothing !== DEFAULT_STATE.smoothing) params.smooth = String(state.smoothing);
  if (state.xlog) params.xaxis = 'log';
  if (state.picks.length) params.picks = state.picks.map(([l, h]) => `${l}.${h}`).join(',');
  if (state.rank !== DEFAULT_STATE.rank) params.rank = state.rank;
  if (state.pos !== DEFAULT_STATE.pos) params.pos = state.pos;
  if (state.section !== DEFAULT_STATE.section) params.section = state.section;
  if (state.a.run !== null) params.a_run = state.a.run;
  if (state.a.step !== null) params.a_step = String(state.a.step);
  if (state.b.run !== null) params.b_run = state.b.run;
  if (state.b.step !== null) params.b_step = String(state.b.step);
  if (state.compare !== DEFAULT_STATE.compare) params.compare = state.compare;
  if (state.delta !== DEFAULT_STATE.delta) params.delta = state.delta;
  if (state.imode !== DEFAULT_STATE.imode) params.imode = state.imode;
  if (state.isplit) params.isplit = '1';
  if (state.opacity !== DEFAULT_STATE.opacity) params.opacity = String(state.opacity);
  if (state.fusion !== DEFAULT_STATE.fusion) params.fusion = state.fusion;
  if (state.discard !== DEFAULT_STATE.discard) params.discard = String(state.discard);
  if (state.idiff) params.idiff = '1';
  if (state.hsource !== null) params.hsource = state.hsource;
  for (const key of ['lgrow', 'llevel', 'edrop', 'efloor'] as const) if (state[key] !== DEFAULT_STATE[key]) params[key] = String(state[key]);
  return params;
}

export type Listener = (state: Readonly<State>, previous: Readonly<State>) => void;

/** Holds the state; every change notifies the listeners (the views and the URL writer). */
export class Store {
  private current: State;
  private readonly listeners: Listener[] = [];

  constructor(initial: State) {
    this.current = initial;
  }

  get state(): Readonly<State> {
    return this.current;
  }

  update(patch: Partial<State>): void {
    const previous = this.current;
    const next = {...previous, ...patch};
    if (sameState(previous, next)) return;
    this.current = next;
    for (const listener of this.listeners) listener(next, previous);
  }

  subscribe(listener: Listener): void {
    this.listeners.push(listener);
  }
}

export function sameState(a: Readonly<State>, b: Readonly<State>): boolean {
  const x = encodeState(a);
  const y = encodeState(b);
  const keys = Object.keys(x);
  return keys.length === Object.keys(y).length && keys.every((k) => x[k] === y[k]);
}

/** The run, tag and step a state selects among the attention tags that exist. */
export interface Selection {
  runs: string[];
  run: string;
  tags: string[];
  tag: string;
  /** the steps the slider offers: the attention tag's, or for the metric views every step of its
   * probe (attention, metrics, exemplars) */
  steps: number[];
  step: number;
  /** the stored attention step nearest to `step`: the examples the panel lists */
  exampleStep: number;
  /** false for a probe that logged metrics but no attention (the training monitor's
   * `attention_health`): there are no examples to list */
  hasExamples: boolean;
}

/** Resolves a state against `/tags`: unknown or missing choices fall back to the first run, its
 * first attention tag and the newest step; a step that is not stored snaps to the nearest one.
 * `probeSteps` (the metric views): offer every step of the probe, not only its attention's, and
 * offer probes that logged metrics alone (e.g. `attention_health`) among the tags.
 * Null when no run has a tag to offer. */
export function resolveSelection(tags: Tags, state: Readonly<State>, probeSteps = false): Selection | null {
  const tagsOf = (run: string) => {
    const infos = Object.entries(tags[run] ?? {});
    const names = new Set(infos.filter(([, info]) => info.kind === 'attention' && info.steps.length > 0).map(([tag]) => tag));
    if (probeSteps) for (const [, info] of infos) if (info.kind === 'metric' && info.probe && info.steps.length > 0) names.add(info.probe);
    return [...names].sort();
  };
  const runs = Object.keys(tags)
    .filter((run) => tagsOf(run).length > 0)
    .sort();
  if (runs.length === 0) return null;
  const run = state.run !== null && runs.includes(state.run) ? state.run : runs[0];
  const tagNames = tagsOf(run);
  const tag = state.tag !== null && tagNames.includes(state.tag) ? state.tag : tagNames[0];
  const info = tags[run][tag];
  const attentionSteps = info?.kind === 'attention' ? [...info.steps].sort((a, b) => a - b) : [];
  let steps = attentionSteps;
  if (probeSteps) {
    const all = new Set(attentionSteps);
    for (const info of Object.values(tags[run])) if (info.probe === tag && info.kind !== 'unsupported') info.steps.forEach((s) => all.add(s));
    steps = [...all].sort((a, b) => a - b);
  }
  const step = state.step === null ? steps[steps.length - 1] : nearestStep(steps, state.step);
  const hasExamples = attentionSteps.length > 0;
  return {runs, run, tags: tagNames, tag, steps, step, exampleStep: hasExamples ? nearestStep(attentionSteps, step) : step, hasExamples};
}

/** The stored step nearest to `step` (steps sorted, not empty). */
export function nearestStep(steps: readonly number[], step: number): number {
  return steps.reduce((best, s) => (Math.abs(s - step) < Math.abs(best - step) ? s : best), steps[0]);
}

/** The metrics (`distance`, `pos/NOUN`, ...) that `run` logged for attention tag `probe`, sorted. */
export function probeMetrics(tags: Tags, run: string, probe: string): string[] {
  return Object.values(tags[run] ?? {})
    .filter((info) => info.kind === 'metric' && info.probe === probe && info.metric && info.steps.length > 0)
    .map((info) => info.metric!)
    .sort();
}

/** The runs that logged `metric` for `probe`, sorted. */
export function runsWithMetric(tags: Tags, probe: string, metric: string): string[] {
  const tag = metricTag(probe, metric);
  return Object.keys(tags)
    .filter((run) => tags[run][tag]?.kind === 'metric' && tags[run][tag].steps.length > 0)
    .sort();
}

/** The heads plotted over steps: the picked ones, else the shown heads of the layer when they are
 * a subset (a head opened in another view carries over). */
export function plottedHeads(state: Readonly<State>): HeadRef[] {
  if (state.picks.length) return state.picks.map(([l, h]) => [l, h]);
  return state.heads === null ? [] : state.heads.map((h) => [state.layer, h]);
}

/** One side of a comparison, resolved against the data. */
export interface Endpoint {
  run: string;
  steps: number[];
  step: number;
}

/** A and B of the Compare view. Defaults: A is the panel's run at its first step, B the panel's run
 * and step; a run chosen without a step starts at its first (A) or newest (B) step. Runs lacking
 * the panel's tag fall back to the panel's run. */
export function compareEndpoints(tags: Tags, state: Readonly<State>, selection: Selection): {runs: string[]; a: Endpoint; b: Endpoint} {
  const runs = selection.runs.filter((run) => tags[run][selection.tag]?.kind === 'attention' && tags[run][selection.tag].steps.length > 0);
  const resolve = (side: CompareSide, which: 'a' | 'b'): Endpoint => {
    const run = side.run !== null && runs.includes(side.run) ? side.run : selection.run;
    const steps = [...tags[run][selection.tag].steps].sort((x, y) => x - y);
    let step: number;
    if (side.step !== null) step = nearestStep(steps, side.step);
    else if (which === 'b' && side.run === null) step = nearestStep(steps, selection.step);
    else step = which === 'a' ? steps[0] : steps[steps.length - 1];
    return {run, steps, step};
  };
  return {runs, a: resolve(state.a, 'a'), b: resolve(state.b, 'b')};
}
