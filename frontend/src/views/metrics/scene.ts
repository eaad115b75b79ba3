// What the Metrics view draws, as pure functions of the state and the data: the metric and runs it
// shows, their series, the heatmap at the chosen step and the heads ranked.

import type {MetricSeries, Tags} from '../../data/api';
import type {RankedCell, RankedRow} from '../../components/ranked_list';
import * as requests from '../../data/requests';
import {mean, metricLabel, metricScale, percentText, rankHeads, sortMetrics, valueText, type ColorScale, type Grid} from '../../model/metrics';
import {metricTag} from '../../data/schema';
import {metricGroup, metricGroups, nearestStep, probeMetrics, runsWithMetric, type Selection} from '../../state/selection';
import {plottedHeads, type HeadRef, type Rank, type State} from '../../state/state';

export const PREVIOUS_TOKEN = 'previous_token'; // the stored metric the `previous` ranking reads
export const MAX_RANKED = 60; // heads listed in the ranking

/** What the view shows: the state's metric (or a default) and the runs overlaid that logged it. */
export interface MetricsPlan {
  /** the attention groups the panel's run logged metrics of, the first group first (empty: none named) */
  groups: string[];
  /** the group shown: null for the first (its tags are `<probe>/<metric>`) */
  group: string | null;
  /** every metric the panel's run logged for its probe, in menu order */
  metrics: string[];
  metric: string;
  tag: string;
  /** runs that logged the metric (the overlay choices) */
  available: string[];
  /** runs drawn: the panel's first */
  runs: string[];
}

/** `order`: the example's groups in order (they order the picker), when known. */
export function metricsPlan(tags: Tags, state: Readonly<State>, selection: Selection, order: readonly string[] = []): MetricsPlan | null {
  const probe = selection.tag;
  const groups = metricGroups(tags, selection.run, probe, order);
  const group = metricGroup(groups, state.panel.group);
  const metrics = sortMetrics(probeMetrics(tags, selection.run, probe, group));
  if (!metrics.length) return null;
  const metric = metrics.includes(state.metrics.metric) ? state.metrics.metric : metrics.includes('distance') ? 'distance' : metrics[0];
  const available = runsWithMetric(tags, probe, metric, group);
  const runs = [selection.run, ...state.metrics.runs.filter((r) => r !== selection.run && available.includes(r))];
  return {groups, group, metrics, metric, tag: metricTag(probe, metric, group), available, runs};
}

/** A metric tag's series, versioned by the steps `/tags` lists (a live run refetches); null when
 * the run has no such tag. */
export function seriesRequest(tags: Tags, run: string, tag: string): ReturnType<typeof requests.metricSeries> | null {
  const steps = tags[run]?.[tag]?.steps;
  return steps ? requests.metricSeries(run, tag, `${steps.length}:${steps[steps.length - 1]}`) : null;
}

/** What a metric series gives the charts, computed once per series. */
export interface SeriesStats {
  /** per step: the mean of all heads */
  all: (number | null)[];
  /** per layer, per step: the mean of the layer's heads */
  layers: (number | null)[][];
  /** every value of every step, for the colour scale */
  scale: ColorScale;
}

export function seriesStats(series: MetricSeries, metric: string): SeriesStats {
  const numLayers = series.values[0]?.length ?? 0;
  return {
    all: series.values.map((grid) => mean(grid.flat())),
    layers: Array.from({length: numLayers}, (_, l) => series.values.map((grid) => mean(grid[l] ?? []))),
    scale: metricScale(metric, series.values.flat(2)),
  };
}

export interface MetricsScene {
  state: Readonly<State>;
  probe: string;
  /** the attention group: null for the probe's first */
  group: string | null;
  metric: string;
  primary: string;
  /** runs drawn, the panel's first, each with its series of this metric */
  runs: {run: string; series: MetricSeries; stats: SeriesStats}[];
  steps: number[];
  step: number;
  grid: Grid;
  baseline: Grid;
  numLayers: number;
  numHeads: number;
  picks: HeadRef[];
}

/** The scene from the runs' series (the panel's run first, not empty); `stats` computes a series'
 * statistics (the view keeps them per series). */
export function metricsScene(
  state: Readonly<State>,
  probe: string,
  group: string | null,
  metric: string,
  runs: {run: string; series: MetricSeries}[],
  stats: (series: MetricSeries) => SeriesStats,
): MetricsScene {
  const series = runs[0].series;
  const steps = series.steps;
  const step = state.panel.step === null ? steps[steps.length - 1] : nearestStep(steps, state.panel.step);
  const grid = series.values[steps.indexOf(step)];
  const numHeads = grid[0]?.length ?? 0;
  return {
    state,
    probe,
    group,
    metric,
    primary: runs[0].run,
    runs: runs.map((r) => ({...r, stats: stats(r.series)})),
    steps,
    step,
    grid,
    baseline: series.values[0],
    numLayers: grid.length,
    numHeads,
    picks: plottedHeads(state).filter(([l, h]) => l < grid.length && h < numHeads),
  };
}

/** The ranking's title, header and rows. */
export interface Ranking {
  title: string;
  header: RankedCell[];
  rows: RankedRow[];
  /** said instead of rows (loading, or why there is nothing to rank) */
  message: string | null;
}

const VALUE = 'rank-value';

/** Heads by the metric at the step (lowest or highest), or by change since the first step. */
export function metricRanking(scene: MetricsScene, rank: Exclude<Rank, 'previous'>): Ranking {
  const first = scene.steps[0];
  const ranked = rankHeads(scene.grid, rank, rank === 'change' || scene.steps.length > 1 ? scene.baseline : null).slice(0, MAX_RANKED);
  const several = scene.steps.length > 1;
  return {
    title: rank === 'change' ? `Heads by change, step ${first} → ${scene.step}` : `Heads at step ${scene.step}`,
    header: [{text: 'head'}, {text: 'value', class: VALUE}, {text: several ? `since step ${first}` : '', class: 'rank-change'}],
    rows: ranked.map((r) => {
      const [l, h] = r.head;
      return {
        head: r.head,
        title: `Layer ${l}, head ${h}: click to plot it over steps (shift: add), double-click to open it in the head view`,
        cells: [
          {text: valueText(r.value), class: VALUE},
          {text: r.change === null || !several ? '' : valueText(r.change, true), class: `rank-change ${r.change === null ? '' : r.change < 0 ? 'down' : 'up'}`},
        ],
      };
    }),
    message: ranked.length ? null : 'No head has a value at this step.',
  };
}

/** Heads by the stored previous_token metric at (the nearest logged step to) the scene's step,
 * highest first; `previous`: that metric's series, null while it loads. */
export function previousRanking(scene: MetricsScene, previous: MetricSeries | null): Ranking {
  const title = 'Previous-token heads';
  const header: RankedCell[] = [{text: 'head'}, {text: 'to prev.', class: VALUE}, {text: metricLabel(scene.metric), class: 'rank-change'}];
  if (!previous) return {title, header, rows: [], message: 'Reading the stored previous_token metric…'};
  if (!previous.steps.length) return {title, header, rows: [], message: `${previous.tag} holds no steps yet.`};
  const step = nearestStep(previous.steps, scene.step);
  const ranked = rankHeads(previous.values[previous.steps.indexOf(step)], 'high').slice(0, MAX_RANKED);
  return {
    title: `${title}, step ${step}`,
    header,
    rows: ranked.map((r) => {
      const [l, h] = r.head;
      return {
        head: r.head,
        title: `Layer ${l}, head ${h}: each token pays ${percentText(r.value)} of its attention to the token before it (the stored previous_token metric)`,
        cells: [
          {text: percentText(r.value), class: VALUE},
          {text: valueText(scene.grid[l]?.[h]), class: 'rank-change'},
        ],
      };
    }),
    message: ranked.length ? null : 'No head has a value at this step.',
  };
}
