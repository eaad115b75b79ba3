// The dashboard's state: what a link or a reload restores, grouped by the part that owns each choice.

import type {HeadRef} from '../model/metrics';
import type {Pair} from '../model/transforms';
import {HEALTH_DEFAULTS, type HealthThresholds} from '../model/health';
import type {Fusion} from '../model/rollout';
import type {ImageMode} from '../model/image';
import type {GridSummary, HeatMode} from '../model/generation';
import type {LongChoice, LongZoom} from '../model/long';

export type {LongChoice, LongZoom};

export type ViewId = 'head' | 'model' | 'neuron' | 'image' | 'generation' | 'long' | 'metrics' | 'analysis' | 'exemplars' | 'compare' | 'health';
export const VIEW_IDS: readonly ViewId[] = ['head', 'model', 'neuron', 'image', 'generation', 'long', 'metrics', 'analysis', 'exemplars', 'compare', 'health'];

/** How the Metrics view ranks heads at the chosen step. */
export type Rank = 'low' | 'high' | 'change' | 'previous';
export const RANKS: readonly Rank[] = ['low', 'high', 'change', 'previous'];

/** What the Analysis view shows: the metric overview, or every part of speech (received, paid). */
export type Section = 'overview' | 'pos' | 'pos_from';
export const SECTIONS: readonly Section[] = ['overview', 'pos', 'pos_from'];

/** What the Compare view shows of A and B. */
export type CompareMode = 'head' | 'model' | 'diff' | 'changes';
export const COMPARE_MODES: readonly CompareMode[] = ['head', 'model', 'diff', 'changes'];

/** A head: [layer, head] (defined with the metrics maths that ranks heads). */
export type {HeadRef};

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
  /** the example's attention group (`encoder`, `decoder`, `cross`, ...); null: its first */
  group: string | null;
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

/** The image view's choices (the query patch is the focus's locked token). */
export interface ImageChoice {
  mode: ImageMode;
  /** each chosen head on its own overlay, rather than their mean */
  split: boolean;
  /** of the heat over the image, 0..1 */
  opacity: number;
  /** how the rollout fuses a layer's heads */
  fusion: Fusion;
  /** share of each fused layer's smallest weights the rollout drops, 0..MAX_DISCARD */
  discard: number;
  /** B − A (the Compare view's endpoints) instead of the panel's step */
  diff: boolean;
  /** of a vision–language example with several images: the one a text token's attention is shown over */
  picture: number;
}

/** The Health panel's choices: its source (null: the first that logged health metrics) and its
 * thresholds (model/health.ts says why the defaults are what they are). */
export interface HealthChoice extends HealthThresholds {
  source: string | null;
}

/** The Generation view's choices (the layer and head of its heat strip are the focus's; the
 * decoding it is compared with is the Compare view's A). */
export interface GenerationChoice {
  /** the generated token shown, 0-based */
  token: number;
  heat: HeatMode;
  grid: GridSummary;
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
  image: ImageChoice;
  health: HealthChoice;
  generation: GenerationChoice;
  long: LongChoice;
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
  image?: Partial<ImageChoice>;
  health?: Partial<HealthChoice>;
  generation?: Partial<GenerationChoice>;
  long?: Partial<LongChoice>;
}

const GROUPS = ['panel', 'focus', 'filters', 'metrics', 'analysis', 'compare', 'image', 'health', 'generation', 'long'] as const;

/** `state` with `patch` applied. */
export function applyPatch(state: Readonly<State>, patch: StatePatch): State {
  const next: State = {...state, view: patch.view ?? state.view};
  for (const group of GROUPS) if (patch[group]) (next as unknown as Record<string, object>)[group] = {...state[group], ...patch[group]};
  return next;
}

export const DEFAULT_STATE: Readonly<State> = Object.freeze({
  view: 'head',
  panel: Object.freeze({run: null, tag: null, step: null, example: 0, group: null}),
  focus: Object.freeze({layer: 0, heads: null, tokens: [], side: 'from'}),
  filters: Object.freeze({pair: 'all', hide: false, renorm: false, threshold: 0.01, topk: 0}),
  metrics: Object.freeze({metric: 'distance', runs: [], smoothing: 0, xlog: false, picks: [], rank: 'low'}),
  analysis: Object.freeze({section: 'overview', pos: 'NOUN'}),
  compare: Object.freeze({a: Object.freeze({run: null, step: null}), b: Object.freeze({run: null, step: null}), mode: 'diff', delta: 'attention'}),
  image: Object.freeze({mode: 'attention', split: false, opacity: 0.6, fusion: 'mean', discard: 0, diff: false, picture: 0}),
  health: Object.freeze({source: null, ...HEALTH_DEFAULTS}),
  generation: Object.freeze({token: 0, heat: 'all', grid: 'prompt'}),
  long: Object.freeze({zoom: null, brush: null, window: null}),
} as State);

export const MAX_SMOOTHING = 0.99;

/** The heads plotted over steps: the picked ones, else the shown heads of the layer when they are
 * a subset (a head opened in another view carries over). */
export function plottedHeads(state: Readonly<State>): HeadRef[] {
  const {picks} = state.metrics;
  const {heads, layer} = state.focus;
  if (picks.length) return picks.map(([l, h]) => [l, h]);
  return heads === null ? [] : heads.map((h) => [layer, h]);
}

