// What the image view draws from: the panel's example (weights and image), A and B for the
// difference, the stored pixel_distance metric; and the heats it shows, computed from them.

import type {ExampleInfo, ExampleKey, SequenceImage} from '../../data/api';
import {valueOf, type AnyRequest} from '../../data/cache';
import * as requests from '../../data/requests';
import {readRow, type Attention} from '../../data/decode';
import {metricTag} from '../../data/schema';
import {compareEndpoints} from '../../state/selection';
import type {ImageChoice, State} from '../../state/state';
import {exampleNeeds, panelExample} from '../shared/example';
import {rolloutLayer, rolloutRow, type Fusion, type Matrix} from '../../model/rollout';
import {shownHeads} from '../shared/controls';
import {heatDifference, isSequence, meanRows, patchHeat, tokenName, tokenPatch, type Heat, type ImageInfo} from '../../model/image';
import {imageOfToken, sequenceLayout} from '../../model/sequence_image';
import type {ViewModel, ViewStatus} from '../shared/view';

export const PIXEL_DISTANCE = 'pixel_distance'; // the stored metric the scatter reads

/** The image example the panel selects, when its example list has loaded and it has an image. A
 * vision–language example shows the image of its query token (a text token: the picked image). */
export function shownImage(model: ViewModel): {example: ExampleInfo; key: ExampleKey; info: ImageInfo} | null {
  const {selection: sel, state, data} = model;
  const list = valueOf(data, requests.examples(sel.run, sel.tag, sel.exampleStep));
  if (!list) return null;
  const index = panelExample(list.examples, state.panel.example);
  const example = list.examples.find((e) => e.index === index);
  const key = {run: sel.run, tag: sel.tag, step: sel.exampleStep, example: index};
  if (example?.images?.length) {
    const which = pictureOf(example.images, state.focus.tokens[0] ?? -1, state.image.picture);
    const info = sequenceLayout(example.images, which, example.groups?.[0]?.tokens ?? example.tokens);
    return typeof info === 'string' ? null : {example, key, info};
  }
  if (!example?.image) return null;
  return {example, key, info: example.image};
}

/** Which of an example's images is shown: a patch token's own, else the picked one (within range). */
export function pictureOf(images: readonly SequenceImage[], token: number, picked: number): number {
  const own = imageOfToken(images, token);
  return own >= 0 ? own : Math.min(Math.max(0, picked), images.length - 1);
}

/** The request of the picture `info` is drawn over. */
export function pictureRequest(key: ExampleKey, info: ImageInfo): ReturnType<typeof requests.image> {
  return isSequence(info) ? requests.image(key, info.index) : requests.image(key);
}

/** The stored pixel_distance of the panel's run and tag over steps (`/metric`); null when it was
 * not logged. */
export function distanceRequest(model: ViewModel): ReturnType<typeof requests.metricSeries> | null {
  const {tags, selection: sel} = model;
  const tag = metricTag(sel.tag, PIXEL_DISTANCE);
  const info = tags[sel.run]?.[tag];
  if (info?.kind !== 'metric' || !info.steps.length) return null;
  return requests.metricSeries(sel.run, tag, info.steps.join(','));
}

/** A and B of the difference: the panel's example at the Compare view's endpoints. */
export function endpointKeys(model: ViewModel, example: number): {a: ExampleKey; b: ExampleKey} {
  const {a, b} = compareEndpoints(model.tags, model.state, model.selection);
  const tag = model.selection.tag;
  return {a: {run: a.run, tag, step: a.step, example}, b: {run: b.run, tag, step: b.step, example}};
}

/** Everything the view needs for the state: the example (list, weights, image), and per mode the
 * metric series or A's and B's weights. */
export function imageNeeds(model: ViewModel): AnyRequest[] {
  const needs = exampleNeeds(model);
  const shown = shownImage(model);
  if (!shown) return needs;
  const {mode, diff} = model.state.image;
  if (mode === 'distance') {
    const series = distanceRequest(model);
    return series ? [...needs, pictureRequest(shown.key, shown.info), series] : [...needs, pictureRequest(shown.key, shown.info)];
  }
  needs.push(pictureRequest(shown.key, shown.info));
  if (diff) {
    const {a, b} = endpointKeys(model, shown.key.example);
    needs.push(requests.attention(a), requests.attention(b));
  }
  return needs;
}

/** The query token the state picks: its first locked token, else the first prefix token (CLS),
 * else the centre patch; a vision–language example's last token (the end of its text). */
export function queryToken(state: Readonly<State>, info: ImageInfo, numTokens: number): number {
  const locked = state.focus.tokens[0];
  if (locked !== undefined && locked < numTokens) return locked;
  if (isSequence(info)) return numTokens - 1;
  if (info.prefix_tokens > 0) return 0;
  return info.prefix_tokens + Math.floor(info.grid[0] / 2) * info.grid[1] + Math.floor(info.grid[1] / 2);
}

/** The query's attention in each of `heads` of `layer`, as heats. A vision–language patch query's
 * chips hold the attention each token pays to it (its column: which text tokens look at the patch). */
export function headHeats(attention: Attention, info: ImageInfo, layer: number, heads: readonly number[], query: number): Heat[] {
  return heads.map((h) => withColumn(patchHeat(readRow(attention, layer, h, query), info), info, query, (t) => readRow(attention, layer, h, t)[query]));
}

/** The mean over `heads` of the query's attention, as one heat (chips as in headHeats). */
export function meanHeat(attention: Attention, info: ImageInfo, layer: number, heads: readonly number[], query: number): Heat {
  const column = (t: number) => heads.reduce((sum, h) => sum + readRow(attention, layer, h, t)[query], 0) / heads.length;
  return withColumn(patchHeat(meanRows(heads.map((h) => readRow(attention, layer, h, query))), info), info, query, column);
}

/** A vision–language heat whose query is a patch: its chips replaced by `column(token)`, the
 * attention each chip token pays to the patch. Other heats as they are. */
export function withColumn(heat: Heat, info: ImageInfo, query: number, column: (token: number) => number): Heat {
  if (!isSequence(info) || !tokenPatch(info, query)) return heat;
  return {...heat, prefix: Float32Array.from(info.chipTokens, column)};
}

/** Rollout factors per layer, kept for the last weights and settings: a click on another patch
 * reuses them (only the row product is redone). */
export class RolloutFactors {
  private key = '';
  private attention: Attention | null = null;
  private factors: Matrix[] = [];

  /** The factors of layers 0..`through` for `heads` fused by `fusion`, `discard` dropped. */
  get(attention: Attention, through: number, heads: readonly number[], fusion: Fusion, discard: number): Matrix[] {
    const key = JSON.stringify([heads, fusion, discard]);
    if (attention !== this.attention || key !== this.key) {
      this.attention = attention;
      this.key = key;
      this.factors = [];
    }
    const n = attention.numTokens;
    for (let l = this.factors.length; l <= through; l++) {
      const matrices = heads.map((h) => {
        const m = new Float32Array(n * n);
        for (let i = 0; i < n; i++) readRow(attention, l, h, i, m.subarray(i * n, (i + 1) * n));
        return m;
      });
      this.factors.push(rolloutLayer(matrices, n, {fusion, discard}));
    }
    return this.factors.slice(0, through + 1);
  }
}

/** The rollout of the query through layer `through`, as a heat. */
export function rolloutHeat(cache: RolloutFactors, attention: Attention, info: ImageInfo, through: number, heads: readonly number[], query: number, settings: ImageChoice): Heat {
  const factors = cache.get(attention, through, heads, settings.fusion, settings.discard);
  const heat = patchHeat(rolloutRow(factors, attention.numTokens, query), info);
  return withColumn(heat, info, query, (t) => rolloutRow(factors, attention.numTokens, t)[query]);
}

/** What the attention and rollout modes draw: one heat per overlay (the mean or each chosen head,
 * or the rollout; B − A when asked), the heads, the query, and a caption saying what it is. */
export interface Overlays {
  heats: Heat[];
  heads: number[];
  query: number;
  /** one overlay per head */
  split: boolean;
  caption: string;
}

/** The rollout factors kept for the shown example and for A and B. */
export interface RolloutCaches {
  shown: RolloutFactors;
  a: RolloutFactors;
  b: RolloutFactors;
}

/** The overlays for the state, or why there are none yet (A and B loading, or not comparable). */
export function overlayHeats(model: ViewModel, settings: ImageChoice, info: ImageInfo, attention: Attention, layer: number, example: number, caches: RolloutCaches): Overlays | ViewStatus {
  const heads = shownHeads(model.state, attention.numHeads);
  const query = queryToken(model.state, info, attention.numTokens);
  const split = settings.mode === 'attention' && settings.split;
  const heatsOf = (weights: Attention, cache: RolloutFactors): Heat[] => {
    if (settings.mode === 'rollout') return [rolloutHeat(cache, weights, info, layer, heads, query, settings)];
    return split ? headHeats(weights, info, layer, heads, query) : [meanHeat(weights, info, layer, heads, query)];
  };
  let heats: Heat[];
  let endpoints = '';
  if (settings.diff) {
    const keys = endpointKeys(model, example);
    const a = model.data.get(requests.attention(keys.a));
    const b = model.data.get(requests.attention(keys.b));
    if (a.state === 'error') return {kind: 'error', text: `A: ${a.error}`};
    if (b.state === 'error') return {kind: 'error', text: `B: ${b.error}`};
    if (a.state !== 'ready' || b.state !== 'ready') return {kind: 'loading', text: 'Loading A and B…'};
    for (const [name, w] of [['A', a.value], ['B', b.value]] as const) {
      if (w.numTokens !== attention.numTokens || w.numLayers !== attention.numLayers || w.numHeads !== attention.numHeads) {
        const shape = (x: Attention) => `${x.numLayers} × ${x.numHeads} heads over ${x.numTokens} tokens`;
        return {kind: 'error', text: `${name} has ${shape(w)}, this example ${shape(attention)}: they cannot be subtracted.`};
      }
    }
    heats = heatDifferences(heatsOf(a.value, caches.a), heatsOf(b.value, caches.b));
    endpoints = ` · B − A: ${keys.b.run} step ${keys.b.step} − ${keys.a.run} step ${keys.a.step}`;
  } else {
    heats = heatsOf(attention, caches.shown);
  }
  const headText = heads.length === attention.numHeads ? 'all heads' : `head${heads.length > 1 ? 's' : ''} ${heads.join(', ')}`;
  const what =
    settings.mode === 'rollout'
      ? `Rollout through layers 0–${layer} · ${headText} fused by ${settings.fusion} · ${Math.round(settings.discard * 100)}% discarded`
      : `Layer ${layer} · ${split ? headText : `mean of ${headText}`}`;
  const chips = isSequence(info) ? (tokenPatch(info, query) ? ' · tokens: their attention to it' : ' · tokens: its attention to them') : '';
  return {heats, heads, query, split, caption: `${what} · query ${tokenName(info, query)}${chips}${endpoints}`};
}

/** B − A of two lists of heats, one by one. */
export function heatDifferences(a: readonly Heat[], b: readonly Heat[]): Heat[] {
  return b.map((heat, i) => heatDifference(a[i], heat));
}
