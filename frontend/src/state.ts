// The dashboard's state: what a link or a reload restores, its URL form, and the store views share.

import type {Tags} from './api';
import {metricTag} from './schema';
import {PAIRS, type Pair} from './transforms';

export type ViewId = 'head' | 'model' | 'neuron' | 'metrics' | 'analysis' | 'exemplars' | 'compare';
export const VIEW_IDS: readonly ViewId[] = ['head', 'model', 'neuron', 'metrics', 'analysis', 'exemplars', 'compare'];

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

/** The panel's choice: which data (owner: the left panel). */
export interface PanelChoice {
  run: string | null;
  tag: string | null;
  /** null: follow the newest step as training logs more */
  step: number | null;
  example: number;
}

/** What is selected in the model, shared by every view (owner: the view the user clicks in). */
export interface Focus {
  layer: number;
  /** heads shown; null: all */
  heads: number[] | null;
  /** locked tokens (more than one: their attention is summed) */
  tokens: number[];
  side: Side;
}

/** How the head and model views filter the weights (owner: their toolbars). */
export interface Filters {
  pair: Pair;
  /** hide attention to the first and special tokens */
  hide: boolean;
  /** with `hide`, renormalise each row over the tokens left */
  renorm: boolean;
  /** arcs below this weight are not drawn */
  threshold: number;
  /** draw at most this many arcs per token and head (0: no limit) */
  topk: number;
}

/** The Metrics view's choices. */
export interface MetricsChoice {
  /** the metric plotted (`distance`, `pos/NOUN`, ...) */
  metric: string;
  /** runs overlaid on the panel's run in the curves */
  runs: string[];
  /** TensorBoard's exponential moving average weight for curves, 0 (none) to 0.99 */
  smoothing: number;
  /** a logarithmic step axis */
  xlog: boolean;
  /** heads plotted over steps; empty: the focus's shown heads (when a subset is shown) */
  picks: HeadRef[];
  rank: Rank;
}

/** The Analysis view's choices. */
export interface AnalysisChoice {
  section: Section;
  /** part of speech of the POS heatmaps */
  pos: string;
}

/** The Compare view's choices. */
export interface CompareChoice {
  /** A (reference) and B */
  a: CompareSide;
  b: CompareSide;
  mode: CompareMode;
  /** what heads are ranked by: `attention` (how much their weights moved) or a metric */
  delta: string;
}

/** The dashboard's state, grouped by the part of it that owns each choice. */
export interface State {
  view: ViewId;
  panel: PanelChoice;
  focus: Focus;
  filters: Filters;
  metrics: MetricsChoice;
  analysis: AnalysisChoice;
  compare: CompareChoice;
}

/** A change of state: any groups, each in part. */
export interface StatePatch {
  view?: ViewId;
  panel?: Partial<PanelChoice>;
  focus?: Partial<Focus>;
  filters?: Partial<Filters>;
  metrics?: Partial<MetricsChoice>;
  analysis?: Partial<AnalysisChoice>;
  compare?: Partial<CompareChoice>;
}

const GROUPS = ['panel', 'focus', 'filters', 'metrics', 'analysis', 'compare'] as const;

/** `state` with `patch` applied. */
export function applyPatch(state: Readonly<State>, patch: StatePatch): State {
  const next: State = {...state, view: patch.view ?? state.view};
  for (const group of GROUPS) if (patch[group]) (next as unknown as Record<string, object>)[group] = {...state[group], ...patch[group]};
  return next;
}

export const DEFAULT_STATE: Readonly<State> = Object.freeze({
  view: 'head',
  panel: Object.freeze({run: null, tag: null, step: null, example: 0}),
  focus: Object.freeze({layer: 0, heads: null, tokens: [], side: 'from'}),
  filters: Object.freeze({pair: 'all', hide: false, renorm: false, threshold: 0.01, topk: 0}),
  metrics: Object.freeze({metric: 'distance', runs: [], smoothing: 0, xlog: false, picks: [], rank: 'low'}),
  analysis: Object.freeze({section: 'overview', pos: 'NOUN'}),
  compare: Object.freeze({a: Object.freeze({run: null, step: null}), b: Object.freeze({run: null, step: null}), mode: 'diff', delta: 'attention'}),
} as State);

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
  const d = DEFAULT_STATE;
  const threshold = Number(params.min);
  const smoothing = Number(params.smooth);
  return {
    view: VIEW_IDS.includes(params.view as ViewId) ? (params.view as ViewId) : d.view,
    panel: {run: params.run ?? null, tag: params.tag ?? null, step: parseIndex(params.step), example: parseIndex(params.example) ?? 0},
    focus: {
      layer: parseIndex(params.layer) ?? 0,
      heads: params.heads === 'all' ? null : parseIndexList(params.heads),
      tokens: parseIndexList(params.tokens) ?? [],
      side: params.side === 'to' ? 'to' : 'from',
    },
    filters: {
      pair: PAIRS.includes(params.pair as Pair) ? (params.pair as Pair) : d.filters.pair,
      hide: params.hide === '1',
      renorm: params.renorm === '1',
      threshold: params.min !== undefined && params.min !== '' && threshold >= 0 && threshold <= 1 ? threshold : d.filters.threshold,
      topk: parseIndex(params.topk) ?? 0,
    },
    metrics: {
      metric: params.metric || d.metrics.metric,
      runs: parseNameList(params.runs),
      smoothing: params.smooth !== undefined && params.smooth !== '' && smoothing >= 0 && smoothing <= MAX_SMOOTHING ? smoothing : d.metrics.smoothing,
      xlog: params.xaxis === 'log',
      picks: parsePicks(params.picks),
      rank: RANKS.includes(params.rank as Rank) ? (params.rank as Rank) : d.metrics.rank,
    },
    analysis: {
      section: SECTIONS.includes(params.section as Section) ? (params.section as Section) : d.analysis.section,
      pos: params.pos && /^[A-Z]{1,8}$/.test(params.pos) ? params.pos : d.analysis.pos,
    },
    compare: {
      a: {run: params.a_run ?? null, step: parseIndex(params.a_step)},
      b: {run: params.b_run ?? null, step: parseIndex(params.b_step)},
      mode: COMPARE_MODES.includes(params.compare as CompareMode) ? (params.compare as CompareMode) : d.compare.mode,
      delta: params.delta || d.compare.delta,
    },
  };
}

export const MAX_SMOOTHING = 0.99;

/** URL parameters for a state: only what differs from the defaults, in a fixed order. */
export function encodeState(state: Readonly<State>): Record<string, string> {
  const d = DEFAULT_STATE;
  const {panel, focus, filters, metrics, analysis, compare} = state;
  const params: Record<string, string> = {};
  if (panel.run !== null) params.run = panel.run;
  if (panel.tag !== null) params.tag = panel.tag;
  if (panel.step !== null) params.step = String(panel.step);
  if (panel.example !== 0) params.example = String(panel.example);
  if (state.view !== d.view) params.view = state.view;
  if (focus.layer !== 0) params.layer = String(focus.layer);
  if (focus.heads !== null) params.heads = focus.heads.join(',');
  if (focus.tokens.length) params.tokens = focus.tokens.join(',');
  if (focus.side !== 'from') params.side = focus.side;
  if (filters.pair !== 'all') params.pair = filters.pair;
  if (filters.hide) params.hide = '1';
  if (filters.renorm) params.renorm = '1';
  if (filters.threshold !== d.filters.threshold) params.min = String(filters.threshold);
  if (filters.topk !== 0) params.topk = String(filters.topk);
  if (metrics.metric !== d.metrics.metric) params.metric = metrics.metric;
  if (metrics.runs.length) params.runs = metrics.runs.map(encodeURIComponent).join(',');
  if (metrics.smoothing !== d.metrics.smoothing) params.smooth = String(metrics.smoothing);
  if (metrics.xlog) params.xaxis = 'log';
  if (metrics.picks.length) params.picks = metrics.picks.map(([l, h]) => `${l}.${h}`).join(',');
  if (metrics.rank !== d.metrics.rank) params.rank = metrics.rank;
  if (analysis.pos !== d.analysis.pos) params.pos = analysis.pos;
  if (analysis.section !== d.analysis.section) params.section = analysis.section;
  if (compare.a.run !== null) params.a_run = compare.a.run;
  if (compare.a.step !== null) params.a_step = String(compare.a.step);
  if (compare.b.run !== null) params.b_run = compare.b.run;
  if (compare.b.step !== null) params.b_step = String(compare.b.step);
  if (compare.mode !== d.compare.mode) params.compare = compare.mode;
  if (compare.delta !== d.compare.delta) params.delta = compare.delta;
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

  update(patch: StatePatch): void {
    const previous = this.current;
    const next = applyPatch(previous, patch);
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
}

/** Resolves a state against `/tags`: unknown or missing choices fall back to the first run, its
 * first attention tag and the newest step; a step that is not stored snaps to the nearest one.
 * `probeSteps`: offer every step of the probe (the metric views), not only its attention's.
 * Null when no run has an attention tag. */
export function resolveSelection(tags: Tags, state: Readonly<State>, probeSteps = false): Selection | null {
  const attentionTags = (run: string) =>
    Object.keys(tags[run] ?? {})
      .filter((tag) => tags[run][tag].kind === 'attention' && tags[run][tag].steps.length > 0)
      .sort();
  const runs = Object.keys(tags)
    .filter((run) => attentionTags(run).length > 0)
    .sort();
  if (runs.length === 0) return null;
  const {panel} = state;
  const run = panel.run !== null && runs.includes(panel.run) ? panel.run : runs[0];
  const tagNames = attentionTags(run);
  const tag = panel.tag !== null && tagNames.includes(panel.tag) ? panel.tag : tagNames[0];
  const attentionSteps = [...tags[run][tag].steps].sort((a, b) => a - b);
  let steps = attentionSteps;
  if (probeSteps) {
    const all = new Set(attentionSteps);
    for (const info of Object.values(tags[run])) if (info.probe === tag && info.kind !== 'unsupported') info.steps.forEach((s) => all.add(s));
    steps = [...all].sort((a, b) => a - b);
  }
  const step = panel.step === null ? steps[steps.length - 1] : nearestStep(steps, panel.step);
  return {runs, run, tags: tagNames, tag, steps, step, exampleStep: nearestStep(attentionSteps, step)};
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
  const {picks} = state.metrics;
  const {heads, layer} = state.focus;
  if (picks.length) return picks.map(([l, h]) => [l, h]);
  return heads === null ? [] : heads.map((h) => [layer, h]);
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
  return {runs, a: resolve(state.compare.a, 'a'), b: resolve(state.compare.b, 'b')};
}
