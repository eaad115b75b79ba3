// The dashboard's state: what a link or a reload restores, its URL form, and the store views share.

import type {Tags} from './api';
import {PAIRS, type Pair} from './transforms';

export type ViewId = 'head' | 'model' | 'neuron';
export const VIEW_IDS: readonly ViewId[] = ['head', 'model', 'neuron'];

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
});

function parseIndex(text: string | undefined): number | null {
  return text !== undefined && /^\d{1,9}$/.test(text) ? Number(text) : null;
}

function parseIndexList(text: string | undefined): number[] | null {
  if (text === undefined || text === '') return text === '' ? [] : null;
  const parts = text.split(',').map(parseIndex);
  return parts.every((p) => p !== null) ? [...new Set(parts as number[])].sort((a, b) => a - b) : null;
}

/** The state a set of URL parameters describes; anything malformed falls back to its default. */
export function decodeState(params: Readonly<Record<string, string>>): State {
  const state: State = {...DEFAULT_STATE, heads: null, tokens: []};
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
  return state;
}

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
  steps: number[];
  step: number;
}

/** Resolves a state against `/tags`: unknown or missing choices fall back to the first run, its
 * first attention tag and the newest step; a step that is not stored snaps to the nearest one.
 * Null when no run has an attention tag. */
export function resolveSelection(tags: Tags, state: Readonly<State>): Selection | null {
  const attentionTags = (run: string) =>
    Object.keys(tags[run] ?? {})
      .filter((tag) => tags[run][tag].kind === 'attention' && tags[run][tag].steps.length > 0)
      .sort();
  const runs = Object.keys(tags)
    .filter((run) => attentionTags(run).length > 0)
    .sort();
  if (runs.length === 0) return null;
  const run = state.run !== null && runs.includes(state.run) ? state.run : runs[0];
  const tagNames = attentionTags(run);
  const tag = state.tag !== null && tagNames.includes(state.tag) ? state.tag : tagNames[0];
  const steps = [...tags[run][tag].steps].sort((a, b) => a - b);
  let step = steps[steps.length - 1];
  if (state.step !== null) {
    step = steps.reduce((best, s) => (Math.abs(s - state.step!) < Math.abs(best - state.step!) ? s : best), steps[0]);
  }
  return {runs, run, tags: tagNames, tag, steps, step};
}
