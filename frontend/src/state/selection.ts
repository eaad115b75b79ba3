// The state resolved against the data (`/tags`): the run, tag and steps it selects, and the
// comparisons' endpoints; the metrics a run logged.

import type {Tags} from '../data/api';
import {metricTag} from '../data/schema';
import type {CompareSide, State} from './state';

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
  const {panel} = state;
  const run = panel.run !== null && runs.includes(panel.run) ? panel.run : runs[0];
  const tagNames = tagsOf(run);
  const tag = panel.tag !== null && tagNames.includes(panel.tag) ? panel.tag : tagNames[0];
  const info = tags[run][tag];
  const attentionSteps = info?.kind === 'attention' ? [...info.steps].sort((a, b) => a - b) : [];
  let steps = attentionSteps;
  if (probeSteps) {
    const all = new Set(attentionSteps);
    for (const info of Object.values(tags[run])) if (info.probe === tag && info.kind !== 'unsupported') info.steps.forEach((s) => all.add(s));
    steps = [...all].sort((a, b) => a - b);
  }
  const step = panel.step === null ? steps[steps.length - 1] : nearestStep(steps, panel.step);
  const hasExamples = attentionSteps.length > 0;
  return {runs, run, tags: tagNames, tag, steps, step, exampleStep: hasExamples ? nearestStep(attentionSteps, step) : step, hasExamples};
}

/** The stored step nearest to `step` (steps sorted, not empty). */
export function nearestStep(steps: readonly number[], step: number): number {
  return steps.reduce((best, s) => (Math.abs(s - step) < Math.abs(best - step) ? s : best), steps[0]);
}

/** The attention groups `run` logged metrics of for `probe`: the first group (the one tagged
 * `<probe>/<metric>`) first, then the others in the order of `order` (e.g. the example's groups),
 * else by name. Empty when the metrics name no group (one group, or data without groups). */
export function metricGroups(tags: Tags, run: string, probe: string, order: readonly string[] = []): string[] {
  let first: string | null = null;
  const others = new Set<string>();
  for (const [tag, info] of Object.entries(tags[run] ?? {})) {
    if (info.kind !== 'metric' || info.probe !== probe || !info.metric || !info.group || info.steps.length === 0) continue;
    if (tag === metricTag(probe, info.metric)) first ??= info.group;
    else if (tag === metricTag(probe, info.metric, info.group)) others.add(info.group);
  }
  const rank = (g: string) => (order.includes(g) ? order.indexOf(g) : order.length);
  const rest = [...others].filter((g) => g !== first).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  return first === null ? rest : [first, ...rest];
}

/** The group whose metrics to show for the state's `wanted` group: null (the first group's
 * `<probe>/<metric>` tags) unless `wanted` is another group with metrics in `groups`. */
export function metricGroup(groups: readonly string[], wanted: string | null): string | null {
  return wanted !== null && groups.indexOf(wanted) > 0 ? wanted : null;
}

/** The metrics (`distance`, `pos/NOUN`, ...) that `run` logged for attention tag `probe` and
 * `group` (null: the first group, tagged `<probe>/<metric>`; others `<probe>/<group>/<metric>`), sorted. */
export function probeMetrics(tags: Tags, run: string, probe: string, group: string | null = null): string[] {
  return Object.entries(tags[run] ?? {})
    .filter(([tag, info]) => info.kind === 'metric' && info.probe === probe && info.metric && info.steps.length > 0 && tag === metricTag(probe, info.metric, group))
    .map(([, info]) => info.metric!)
    .sort();
}

/** The runs that logged `metric` for `probe` and `group` (null: the first), sorted. */
export function runsWithMetric(tags: Tags, probe: string, metric: string, group: string | null = null): string[] {
  const tag = metricTag(probe, metric, group);
  return Object.keys(tags)
    .filter((run) => tags[run][tag]?.kind === 'metric' && tags[run][tag].steps.length > 0)
    .sort();
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
