// The Health panel's ranking: which heads' max logit grew, or attention entropy fell, past the
// user's thresholds, with the figures that flagged them. Pure: no DOM.

import type {MetricSeries} from '../data/api';

/** The two health signals the panel flags (metrics `max_logit`, `attention_entropy`). */
export type HealthMetric = 'max_logit' | 'attention_entropy';

export interface HealthThresholds {
  /** flag a head whose max logit exceeds this many times its first logged value (0: off) */
  logitGrowth: number;
  /** flag a head whose max logit exceeds this level (0: off) */
  logitLevel: number;
  /** flag a head whose entropy fell below this share of its first logged value (0: off) */
  entropyDrop: number;
  /** flag a head whose entropy fell below this many nats (0: off) */
  entropyFloor: number;
}

/** The defaults, and why (the panel and the README repeat these reasons). Measured on the demo's
 * GPT-2 (4 layers × 4 heads, 64 tokens; demo/train.py): the run `train` (1,200 steps, and a 300-step
 * one) and its 10× learning-rate twin `train-high-lr` (150 steps).
 * - logit growth × first: off. A head's first max logit is its initialisation's (~0.2); healthy
 *   heads' grow 200–300× from it (0.2 → 41 by step 200), so any factor flags a healthy run. Growth
 *   over the last half of the steps does not separate the runs either (healthy heads 3–16× at
 *   steps 100–200, diverging ones 1.5–5.9× at steps 80–145). The rule stays for runs that start
 *   from a trained model (fine-tuning), whose first value is meaningful;
 * - logit 100: Kimi K2's QK-Clip threshold τ (Kimi Team 2025), the level at which it rescales a
 *   head's queries and keys; the demo's healthy heads stay under 42 (64 in the 300-step run), the
 *   diverging run's pass 100 by step 10 and reach 1,430;
 * - entropy × 0.1: e^H is the number of keys a query effectively attends to; a tenth of the
 *   starting entropy (uniform attention, the mean log context length) leaves e^0.32 ≈ 1.4 keys of
 *   the ~25 it started with: attention collapsed onto one key, as Zhai et al. 2023 saw before
 *   divergence. The healthy run's heads stay above 0.31× (0.13× in the 300-step run), the diverging
 *   run's fall to 0.002×;
 * - entropy 0.1 nats: the query's largest weight is then about 0.98 (2 keys) to 0.99 (100 keys):
 *   one-hot, whatever the head started from. */
export const HEALTH_DEFAULTS: Readonly<HealthThresholds> = Object.freeze({logitGrowth: 0, logitLevel: 100, entropyDrop: 0.1, entropyFloor: 0.1});

/** Why a head is flagged. */
export type FlagReason = 'growth' | 'level' | 'drop' | 'floor';

export interface HeadFlag {
  run: string;
  metric: HealthMetric;
  layer: number;
  head: number;
  firstStep: number;
  first: number;
  step: number;
  value: number;
  /** value / first; null when the first value is not positive */
  ratio: number | null;
  reasons: FlagReason[];
  /** how far past its nearest threshold (> 1 when flagged): the ranking key */
  severity: number;
}

/** One head's values over the steps, null where missing. */
export function headSeries(series: MetricSeries, layer: number, head: number): (number | null)[] {
  return series.values.map((grid) => {
    const v = grid[layer]?.[head];
    return v === null || v === undefined || !Number.isFinite(v) ? null : v;
  });
}

/** Index of the last stored step at or before `step` (the first step when all are later); -1 when
 * there are none. */
export function stepIndex(steps: readonly number[], step: number | null): number {
  if (!steps.length) return -1;
  if (step === null) return steps.length - 1;
  let index = 0;
  for (let i = 0; i < steps.length; i++) if (steps[i] <= step) index = i;
  return index;
}

/** The heads of one run's series that are past a threshold at `step` (null: the newest), most
 * severe first. A head is judged on its value at that step against its first logged value. */
export function flagHeads(run: string, series: MetricSeries, metric: HealthMetric, thresholds: HealthThresholds, step: number | null = null): HeadFlag[] {
  const at = stepIndex(series.steps, step);
  if (at < 0) return [];
  const flags: HeadFlag[] = [];
  const layers = series.values[at]?.length ?? 0;
  for (let layer = 0; layer < layers; layer++) {
    const heads = series.values[at][layer].length;
    for (let head = 0; head < heads; head++) {
      const values = headSeries(series, layer, head);
      const value = values[at];
      const firstIndex = values.findIndex((v) => v !== null);
      if (value === null || firstIndex < 0 || firstIndex > at) continue;
      const first = values[firstIndex]!;
      const ratio = first > 0 ? value / first : null;
      const judged = judge(metric, value, first, ratio, firstIndex === at, thresholds);
      if (!judged.reasons.length) continue;
      flags.push({run, metric, layer, head, firstStep: series.steps[firstIndex], first, step: series.steps[at], value, ratio, ...judged});
    }
  }
  return flags.sort((a, b) => b.severity - a.severity || a.layer - b.layer || a.head - b.head);
}

function judge(metric: HealthMetric, value: number, first: number, ratio: number | null, isFirst: boolean, t: HealthThresholds): {reasons: FlagReason[]; severity: number} {
  const reasons: FlagReason[] = [];
  let severity = 0;
  // A head is never flagged for growth or a drop at its first logged step: there is nothing to
  // compare with.
  if (metric === 'max_logit') {
    if (t.logitGrowth > 0 && ratio !== null && !isFirst && value > t.logitGrowth * first) {
      reasons.push('growth');
      severity = Math.max(severity, ratio / t.logitGrowth);
    }
    if (t.logitLevel > 0 && value > t.logitLevel) {
      reasons.push('level');
      severity = Math.max(severity, value / t.logitLevel);
    }
  } else {
    if (t.entropyDrop > 0 && first > 0 && !isFirst && value < t.entropyDrop * first) {
      reasons.push('drop');
      severity = Math.max(severity, (t.entropyDrop * first) / Math.max(value, 1e-9));
    }
    if (t.entropyFloor > 0 && value < t.entropyFloor) {
      reasons.push('floor');
      severity = Math.max(severity, t.entropyFloor / Math.max(value, 1e-9));
    }
  }
  return {reasons, severity};
}

/** The flags of several runs and both signals in one list, most severe first. */
export function rankFlags(flags: readonly HeadFlag[][]): HeadFlag[] {
  return flags.flat().sort((a, b) => b.severity - a.severity || a.run.localeCompare(b.run) || a.layer - b.layer || a.head - b.head);
}

/** The probes whose metrics hold a health signal (`attention_health`, or a probe with
 * `max_logit`), from the tags' metric names, sorted; `attention_health` first. */
export function healthSources(metricsByProbe: ReadonlyMap<string, readonly string[]>): string[] {
  const out = [...metricsByProbe.entries()].filter(([, metrics]) => metrics.includes('max_logit') || metrics.includes('attention_entropy')).map(([probe]) => probe);
  return out.sort((a, b) => Number(b === 'attention_health') - Number(a === 'attention_health') || a.localeCompare(b));
}
