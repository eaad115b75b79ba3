// What the neuron view draws, as pure functions: one query's vectors, products, scores and softmax
// recomputed from q/k with the model's scoring rules, and how well they match the stored weights.

import {readRow, type Attention} from '../../data/decode';
import {keyHeadOf, keyVectors, queryVectors, type QueryKey} from '../../data/decode_qk';
import {neuronRows, scoringOf, type NeuronRows, type Scoring} from '../../model/transforms';

// Recomputed and stored weights agree within this: the stored weights' 8-bit quantisation (at most
// 2/510 + 1/510² ≈ 0.00393) and float32 rounding. q/k are stored in float16 only where that keeps
// the recomputation inside the same bound (http_api.md, /qk); data written before that may differ by
// up to ~0.005 and is then said to differ.
export const AGREEMENT = 0.004;

export interface NeuronScene {
  qk: QueryKey;
  layer: number;
  head: number;
  query: number;
  scoring: Scoring;
  rows: NeuronRows;
  stored: Float32Array;
  /** the largest |recomputed − stored| weight of the row (stored entries only, for top-k examples) */
  difference: number;
  maxKey: number;
  maxQuery: number;
  maxProduct: number;
  maxScore: number;
}

/** The scene of query token `query` of one head (self or cross attention: the keys are the q/k's). */
export function neuronScene(qk: QueryKey, a: Attention, layer: number, head: number, query: number): NeuronScene {
  const n = qk.numKeyTokens; // cross attention: keys from another sequence than the queries
  const keys = keyVectors(qk, layer, head);
  const scoring = scoringOf(qk, layer, head, a.header.causal);
  const rows = neuronRows(queryVectors(qk, layer, head), keys, qk.headDim, query, scoring);
  const maxAbs = (values: Float32Array) => values.reduce((m, v) => (Number.isFinite(v) ? Math.max(m, Math.abs(v)) : m), 0);
  const stored = readRow(a, layer, head, query);
  let difference = 0;
  for (let j = 0; j < n; j++) {
    if (a.encoding !== 'topk' || stored[j] > 0) difference = Math.max(difference, Math.abs(rows.softmax[j] - stored[j]));
  }
  return {
    qk,
    layer,
    head,
    query,
    scoring,
    rows,
    stored,
    difference,
    maxKey: maxAbs(keys),
    maxQuery: maxAbs(rows.query),
    maxProduct: maxAbs(rows.products),
    maxScore: Math.max(1e-6, maxAbs(rows.scores)),
  };
}

/** The inspector's words: the head, its key head, the scoring rules, and whether the recomputed
 * softmax matches the stored weights. */
export function neuronCaption(c: NeuronScene): string {
  const kvHead = keyHeadOf(c.qk, c.head);
  const grouped = c.qk.numKvHeads < c.qk.numHeads ? ` (key head ${kvHead} of ${c.qk.numKvHeads}, grouped-query attention)` : '';
  const {softcap, window, sink, chunk, spans, keyBias, relativeBias} = c.scoring;
  const rules = [
    softcap ? `logits soft-capped at ±${softcap}` : '',
    keyBias ? 'a bias per key added to the logits (ALiBi)' : '',
    relativeBias ? 'a bias per distance j − i added to the logits (relative positions)' : '',
    window ? `sliding window of ${window} tokens` : '',
    chunk ? `chunks of ${chunk} tokens` : '',
    spans ? `causal but bidirectional within ${spans.map(([a, b]) => `tokens ${a}–${b - 1}`).join(', ') || 'no span'} (prefix-LM)` : '',
    sink !== null ? `a sink logit of ${sink.toPrecision(3)} takes ${(c.rows.sinkShare * 100).toFixed(1)}% of the softmax` : '',
  ]
    .filter((rule) => rule)
    .map((rule) => ` · ${rule}`)
    .join('');
  const points = (c.difference * 100).toFixed(1);
  const agreement =
    c.difference <= AGREEMENT
      ? ` · softmax = stored (±${points} pt)`
      : ` · softmax differs from stored by up to ${points} pt: the model scores in a way this view does not recompute (a rule not logged with its q/k); stored is what it used`;
  return `layer ${c.layer}, head ${c.head}${grouped} · d = ${c.qk.headDim}${rules}${agreement}`;
}
