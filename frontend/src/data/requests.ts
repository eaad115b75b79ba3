// The requests views declare: one builder per route, each with its cache key.

import type {Api, CompareKey, CompareMoved, ExampleKey, Examples, Exemplars, MetricSeries, ProbeMetrics} from './api';
import type {Attention} from './decode';
import type {LongMap, LongProfile, LongRows} from './decode_long';
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

/** A window of a long example's layer (`/attention?layer=&window=A:B`, at most 512 tokens): what the
 * head and model views fetch of a long group. Costs its share of a 4,096-token layer. */
export function attentionWindow(key: ExampleKey, layer: number, numLayers: number, window: [number, number]): Request<Attention> {
  const parts = [key.run, key.tag, key.step, key.example, key.group ?? null, layer, numLayers, window[0], window[1]];
  const cost = (window[1] - window[0]) ** 2 / 4096 ** 2 / numLayers;
  return request('attention-window', parts, `tokens ${window[0]}–${window[1]} of layer ${layer}`, true, (api) => api.attentionWindow(key, layer, numLayers, window), cost);
}

const MAP_CELLS_COST = 1 << 24; // cells that count as one example in the heavy cache: 16 tiles of 2²⁰

/** Cells [rows) × [cols) of one level of a long example's block pyramid (`/long_map`); `head`
 * null: the layer's mean. */
export function longMap(key: ExampleKey, layer: number, level: number, head: number | null, rows: [number, number], cols: [number, number]): Request<LongMap> {
  const parts = [key.run, key.tag, key.step, key.example, key.group ?? null, layer, level, head, rows[0], rows[1], cols[0], cols[1]];
  const cost = ((rows[1] - rows[0]) * (cols[1] - cols[0])) / MAP_CELLS_COST;
  return request('long-map', parts, `the block map of layer ${layer}`, true, (api) => api.longMap(key, layer, level, head, rows, cols), cost);
}

/** The exact top-k rows of queries [start, stop) of one head of a long example (`/long_rows`). */
export function longRows(key: ExampleKey, layer: number, head: number, start: number, stop: number): Request<LongRows> {
  const parts = [key.run, key.tag, key.step, key.example, key.group ?? null, layer, head, start, stop];
  return request('long-rows', parts, `the top-k rows of queries ${start}–${stop}`, true, (api) => api.longRows(key, layer, head, start, stop), 1 / 64);
}

/** A long example's distance profile and sink mass (`/long_profile`). */
export function longProfile(key: ExampleKey): Request<LongProfile> {
  return request('long-profile', [key.run, key.tag, key.step, key.example, key.group ?? null], 'the distance profile', false, (api) => api.longProfile(key));
}
