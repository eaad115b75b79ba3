// The state's URL form: the keys a link or a reload restores (BUILD.md, "Where the URL state lives").

import {PAIRS, type Pair} from '../model/transforms';
import {FUSIONS, MAX_DISCARD, type Fusion} from '../model/rollout';
import {IMAGE_MODES, type ImageMode} from '../model/image';
import {GRID_SUMMARIES, HEAT_MODES, type GridSummary, type HeatMode} from '../model/generation';
import {
  COMPARE_MODES,
  DEFAULT_STATE,
  MAX_SMOOTHING,
  RANKS,
  SECTIONS,
  VIEW_IDS,
  type CompareMode,
  type HeadRef,
  type LongZoom,
  type Rank,
  type Section,
  type State,
  type ViewId,
} from './state';

/** A number in [0, max] from the URL, or null. */
function parseBounded(text: string | undefined, max: number): number | null {
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

const MAX_ZOOM = 1 << 20; // a long map's zoom: one token a side of 2²⁰

/** `k,x,y` of a long map's zoom (k ≥ 1, x and y token positions), or null. */
function parseZoom(text: string | undefined): LongZoom | null {
  const match = /^(\d{1,7}(?:\.\d{1,4})?),(\d{1,7}),(\d{1,7})$/.exec(text ?? '');
  if (!match) return null;
  const k = Number(match[1]);
  return k >= 1 && k <= MAX_ZOOM ? {k, x: Number(match[2]), y: Number(match[3])} : null;
}

/** `A:B` with A < B, or null. */
function parseRange(text: string | undefined): [number, number] | null {
  const match = /^(\d{1,9}):(\d{1,9})$/.exec(text ?? '');
  return match && Number(match[1]) < Number(match[2]) ? [Number(match[1]), Number(match[2])] : null;
}

/** The state a set of URL parameters describes; anything malformed falls back to its default. */
export function decodeState(params: Readonly<Record<string, string>>): State {
  const d = DEFAULT_STATE;
  const threshold = Number(params.min);
  const smoothing = Number(params.smooth);
  return {
    view: VIEW_IDS.includes(params.view as ViewId) ? (params.view as ViewId) : d.view,
    panel: {run: params.run ?? null, tag: params.tag ?? null, step: parseIndex(params.step), example: parseIndex(params.example) ?? 0, group: params.group && /^[a-z_]{1,64}$/.test(params.group) ? params.group : null},
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
    image: {
      mode: IMAGE_MODES.includes(params.imode as ImageMode) ? (params.imode as ImageMode) : d.image.mode,
      split: params.isplit === '1',
      opacity: parseBounded(params.opacity, 1) ?? d.image.opacity,
      fusion: FUSIONS.includes(params.fusion as Fusion) ? (params.fusion as Fusion) : d.image.fusion,
      discard: parseBounded(params.discard, MAX_DISCARD) ?? d.image.discard,
      diff: params.idiff === '1',
      picture: parseIndex(params.picture) ?? d.image.picture,
    },
    health: {
      source: params.hsource || null,
      logitGrowth: parseBounded(params.lgrow, Infinity) ?? d.health.logitGrowth,
      logitLevel: parseBounded(params.llevel, Infinity) ?? d.health.logitLevel,
      entropyDrop: parseBounded(params.edrop, 1) ?? d.health.entropyDrop,
      entropyFloor: parseBounded(params.efloor, Infinity) ?? d.health.entropyFloor,
    },
    generation: {
      token: parseIndex(params.gtoken) ?? d.generation.token,
      heat: HEAT_MODES.includes(params.gheat as HeatMode) ? (params.gheat as HeatMode) : d.generation.heat,
      grid: GRID_SUMMARIES.includes(params.ggrid as GridSummary) ? (params.ggrid as GridSummary) : d.generation.grid,
    },
    long: {zoom: parseZoom(params.lzoom), brush: parseRange(params.lbrush), window: parseIndex(params.lwin)},
  };
}

/** URL parameters for a state: only what differs from the defaults, in a fixed order. */
export function encodeState(state: Readonly<State>): Record<string, string> {
  const d = DEFAULT_STATE;
  const {panel, focus, filters, metrics, analysis, compare, image, health, generation, long} = state;
  const params: Record<string, string> = {};
  if (panel.run !== null) params.run = panel.run;
  if (panel.tag !== null) params.tag = panel.tag;
  if (panel.step !== null) params.step = String(panel.step);
  if (panel.example !== 0) params.example = String(panel.example);
  if (panel.group !== null) params.group = panel.group;
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
  if (image.mode !== d.image.mode) params.imode = image.mode;
  if (image.split) params.isplit = '1';
  if (image.opacity !== d.image.opacity) params.opacity = String(image.opacity);
  if (image.fusion !== d.image.fusion) params.fusion = image.fusion;
  if (image.discard !== d.image.discard) params.discard = String(image.discard);
  if (image.diff) params.idiff = '1';
  if (image.picture !== d.image.picture) params.picture = String(image.picture);
  if (health.source !== null) params.hsource = health.source;
  if (health.logitGrowth !== d.health.logitGrowth) params.lgrow = String(health.logitGrowth);
  if (health.logitLevel !== d.health.logitLevel) params.llevel = String(health.logitLevel);
  if (health.entropyDrop !== d.health.entropyDrop) params.edrop = String(health.entropyDrop);
  if (health.entropyFloor !== d.health.entropyFloor) params.efloor = String(health.entropyFloor);
  if (generation.token !== d.generation.token) params.gtoken = String(generation.token);
  if (generation.heat !== d.generation.heat) params.gheat = generation.heat;
  if (generation.grid !== d.generation.grid) params.ggrid = generation.grid;
  if (long.zoom !== null) params.lzoom = `${Math.round(long.zoom.k * 1e4) / 1e4},${Math.round(long.zoom.x)},${Math.round(long.zoom.y)}`;
  if (long.brush !== null) params.lbrush = `${long.brush[0]}:${long.brush[1]}`;
  if (long.window !== null) params.lwin = String(long.window);
  return params;
}

export function sameState(a: Readonly<State>, b: Readonly<State>): boolean {
  const x = encodeState(a);
  const y = encodeState(b);
  const keys = Object.keys(x);
  return keys.length === Object.keys(y).length && keys.every((k) => x[k] === y[k]);
}

