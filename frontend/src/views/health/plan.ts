// The Health panel's data: which sources and runs logged health metrics, the series to request,
// and the flagged heads with their sparklines. Pure: no DOM.

import type {MetricSeries, Tags} from '../../data/api';
import type {SparkSeries} from '../../components/sparkline';
import type {DataReader} from '../../data/cache';
import * as requests from '../../data/requests';
import {metricTag} from '../../data/schema';
import {flagHeads, headSeries, healthSources, rankFlags, type HeadFlag, type HealthMetric, type HealthThresholds} from '../../model/health';
import type {ViewStatus} from '../shared/view';

export const SIGNALS: readonly HealthMetric[] = ['max_logit', 'attention_entropy'];

/** A flagged head with the series its sparkline draws. */
export interface Row {
  flag: HeadFlag;
  series: SparkSeries[];
  threshold: number | null;
}

/** Which runs logged a source's health metrics, and their series requests. */
export interface Plan {
  sources: string[];
  source: string | null;
  runs: string[];
  series: {run: string; metric: HealthMetric; request: ReturnType<typeof requests.metricSeries>}[];
}

/** Probe → its metrics, over every run. */
function metricsByProbe(tags: Tags): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const run of Object.values(tags)) {
    for (const info of Object.values(run)) {
      if (info.kind !== 'metric' || !info.probe || !info.metric || !info.steps.length) continue;
      const list = out.get(info.probe) ?? [];
      if (!list.includes(info.metric)) list.push(info.metric);
      out.set(info.probe, list);
    }
  }
  return out;
}

export function healthPlan(tags: Tags, wanted: string | null): Plan {
  const sources = healthSources(metricsByProbe(tags));
  const source = wanted !== null && sources.includes(wanted) ? wanted : (sources[0] ?? null);
  const series: Plan['series'] = [];
  const runs: string[] = [];
  if (source !== null) {
    for (const run of Object.keys(tags).sort()) {
      for (const metric of SIGNALS) {
        const info = tags[run][metricTag(source, metric)];
        if (info?.kind !== 'metric' || !info.steps.length) continue;
        series.push({run, metric, request: requests.metricSeries(run, metricTag(source, metric), info.steps.join(','))});
        if (!runs.includes(run)) runs.push(run);
      }
    }
  }
  return {sources, source, runs, series};
}

/** The flagged heads of every run, with sparklines of the head in every run. */
export function healthRows(plan: Plan, data: DataReader, thresholds: HealthThresholds, color: (run: string) => string): Row[] | ViewStatus {
  const loaded = new Map<string, MetricSeries>();
  for (const {run, metric, request} of plan.series) {
    const answer = data.get(request);
    if (answer.state === 'error') return {kind: 'error', text: answer.error};
    if (answer.state === 'loading') return {kind: 'loading', text: 'Loading the health metrics…'};
    loaded.set(`${run}\u0000${metric}`, answer.value);
  }
  const flags = rankFlags(plan.series.map(({run, metric}) => flagHeads(run, loaded.get(`${run}\u0000${metric}`)!, metric, thresholds)));
  return flags.map((flag) => {
    const series = plan.runs.flatMap((run) => {
      const s = loaded.get(`${run}\u0000${flag.metric}`);
      if (!s) return [];
      const own = run === flag.run;
      return [{steps: s.steps, values: headSeries(s, flag.layer, flag.head), color: color(run), width: own ? 2 : 1, alpha: own ? 1 : 0.6}];
    });
    // Own run last: drawn on top.
    series.sort((a, b) => a.width - b.width);
    return {flag, series, threshold: thresholdLine(flag, thresholds)};
  });
}

/** Where the sparkline's dashed line goes: the threshold nearest to what flagged the head. */
function thresholdLine(flag: HeadFlag, t: HealthThresholds): number | null {
  if (flag.metric === 'max_logit') return flag.reasons.includes('growth') ? t.logitGrowth * flag.first : t.logitLevel || null;
  return flag.reasons.includes('drop') ? t.entropyDrop * flag.first : t.entropyFloor || null;
}
