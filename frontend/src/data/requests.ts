// The requests views declare: one builder per route, each with its cache key.

import type {Api, CompareKey, CompareMoved, ExampleKey, Examples, Exemplars, MetricSeries, ProbeMetrics} from './api';
import type {Attention} from './decode';
import type {QueryKey} from './decode_qk';
import type {Request} from './cache';

function request<T>(route: string, parts: unknown[], what: string, heavy: boolean, fetch: (api: Api) => Promise<T>, cost = 1): Request<T> {
  return {key: JSON.stringify([route, ...parts]), what, heavy, cost, fetch};
}

/** The examples of one step of an attention tag (`/examples`). */
export function examples(run: string, tag: string, step: number): Request<Examples> {
  return request('examples', [run, tag, step], 'the examples', false, (api) => api.examples(run, tag, step));
}

/** One example's decoded weights (`/attention`). */
export function attention(key: ExampleKey): Request<Attention> {
  return request('attention', [key.run, key.tag, key.step, key.example, key.group ?? null], 'the attention', true, (api) => api.attention(key));
}

/** One layer of an example's weights (`/attention?layer=`): what the head and model views fetch,
 * so a 32-layer, 4,096-token example never travels whole. It costs 1/numLayers of an example in
 * the cache, so a model view's layers stay cached as a few examples would. */
export function attentionLayer(key: ExampleKey, layer: number, numLayers: number): Request<Attention> {
  const parts = [key.run, key.tag, key.step, key.example, key.group ?? null, layer, numLayers];
  return request('attention-layer', parts, `the attention of layer ${layer}`, true, (api) => api.attentionLayer(key, layer, numLayers), 1 / numLayers);
}

/** One example's query and key vectors (`/qk`; 404 when none were logged); `layer`: one layer's. */
export function queryKey(key: ExampleKey, layer?: number, numLayers = 1): Request<QueryKey> {
  const parts = [key.run, key.tag, key.step, key.example, key.group ?? null, layer ?? null];
  return request('qk', parts, 'the query/key vectors', true, (api) => api.queryKey(key, layer), layer === undefined ? 1 : 1 / numLayers);
}

/** Every step of one metric tag (`/metric`); `version` (the steps `/tags` lists) refetches when it changes. */
export function metricSeries(run: string, tag: string, version: string): Request<MetricSeries> {
  return request('metric', [run, tag, version], `${tag} of ${run}`, false, (api) => api.metric(run, tag));
}

/** Every metric of a probe at one step (`/metrics`), of `group` (absent: the probe's first). */
export function probeMetrics(run: string, probe: string, step: number, group?: string): Request<ProbeMetrics> {
  return request('metrics', [run, probe, step, group ?? null], 'the metrics', false, (api) => api.metrics(run, probe, step, group));
}

/** A probe's exemplar table at one step (`/exemplars`). */
export function exemplars(run: string, tag: string, step: number): Request<Exemplars> {
  return request('exemplars', [run, tag, step], 'the exemplars', false, (api) => api.exemplars(run, tag, step));
}

/** The attention moved per head between two endpoints (`/compare`). */
export function compareMoved(key: CompareKey): Request<CompareMoved> {
  return request('compare', [key.tag, key.runA, key.stepA, key.runB, key.stepB, key.group ?? null], 'the attention of A and B', false, (api) => api.compare(key));
}

/** An image example's PNG, decoded (`/image`; a vision–language example's image `index`). */
export function image(key: ExampleKey, index?: number): Request<ImageBitmap> {
  const parts = index === undefined ? [key.run, key.tag, key.step, key.example] : [key.run, key.tag, key.step, key.example, index];
  return request('image', parts, 'the image', true, async (api) => createImageBitmap(await api.image(key, undefined, index)));
}
