import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ApiError, type Api} from '../src/data/api';
import {DataCache, LastAnswer, type Request} from '../src/data/cache';

/** A request whose answer the test gives by hand; counts its fetches. */
function manual<T>(key: string, heavy = false, cost?: number) {
  const calls: {resolve: (v: T) => void; reject: (e: unknown) => void}[] = [];
  const request: Request<T> = {
    key,
    what: `the ${key}`,
    heavy,
    cost,
    fetch: () => new Promise<T>((resolve, reject) => calls.push({resolve, reject})),
  };
  return {request, calls};
}

const api = {} as Api;
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

test('a request is fetched once however often it is loaded, and its answer makes the app render', async () => {
  let renders = 0;
  const cache = new DataCache(api, () => renders++);
  const {request, calls} = manual<number>('a');
  cache.load([request]);
  cache.load([request]);
  assert.equal(calls.length, 1);
  assert.deepEqual(cache.get(request), {state: 'loading'});
  assert.ok(cache.busy([request]));
  calls[0].resolve(42);
  await tick();
  assert.deepEqual(cache.get(request), {state: 'ready', value: 42});
  assert.equal(renders, 1);
  assert.ok(!cache.busy([request]));
});

test('a failure is kept with its message and HTTP status, and retried only after a while', async () => {
  const cache = new DataCache(api, () => undefined, 60_000);
  const {request, calls} = manual<number>('b');
  cache.load([request]);
  calls[0].reject(new ApiError(404, 'no q/k vectors'));
  await tick();
  assert.deepEqual(cache.get(request), {state: 'error', error: 'no q/k vectors', status: 404});
  cache.load([request]);
  assert.equal(calls.length, 1); // not hammered on every render
  const soon = new DataCache(api, () => undefined, -1);
  const again = manual<number>('c');
  soon.load([again.request]);
  again.calls[0].reject(new Error('reset'));
  await tick();
  assert.equal((soon.get(again.request) as {error: string}).error, 'Could not read the c: reset');
  soon.load([again.request]);
  assert.equal(again.calls.length, 2);
});

test('decoded examples are evicted least recently used first, never one that is shown', async () => {
  const cache = new DataCache(api, () => undefined);
  const requests = Array.from({length: 12}, (_, i) => manual<number>(`w${i}`, true));
  for (const r of requests) cache.load([r.request, requests[0].request]);
  for (const r of requests) r.calls[0]?.resolve(1);
  await tick();
  assert.equal(cache.get(requests[0].request).state, 'ready'); // wanted by every load
  assert.equal(cache.get(requests[1].request).state, 'loading'); // evicted: asked for again
  assert.equal(cache.get(requests[11].request).state, 'ready');
});

test('layers count as their share of an example: 32 layers cached cost one example', async () => {
  const cache = new DataCache(api, () => undefined);
  const layers = Array.from({length: 32}, (_, l) => manual<number>(`layer ${l}`, true, 1 / 32));
  const examples = Array.from({length: 7}, (_, i) => manual<number>(`example ${i}`, true));
  for (const r of [...layers, ...examples]) cache.load([r.request]);
  for (const r of [...layers, ...examples]) r.calls[0].resolve(1);
  await tick();
  // 7 examples + 32 layers of 1/32 = a budget of 8: every one is kept.
  assert.ok([...layers, ...examples].every((r) => cache.get(r.request).state === 'ready'));
  const more = manual<number>('example 7', true);
  cache.load([more.request]);
  // One more example evicts the least recently used one's worth: the first 32 layers' room.
  assert.equal(cache.get(layers[0].request).state, 'loading');
  assert.equal(cache.get(layers[31].request).state, 'loading');
  assert.equal(cache.get(examples[0].request).state, 'ready');
});

test('the last answer stays readable while the next request loads', async () => {
  const cache = new DataCache(api, () => undefined);
  const first = manual<string>('step 1');
  const second = manual<string>('step 2');
  const last = new LastAnswer<string>();
  cache.load([first.request]);
  first.calls[0].resolve('one');
  await tick();
  assert.equal(last.read(cache, first.request), 'one');
  cache.load([second.request]);
  assert.equal(last.read(cache, second.request), 'one');
  second.calls[0].reject(new Error('gone'));
  await tick();
  assert.equal(last.read(cache, second.request), 'one');
  assert.equal(last.error, 'Could not read the step 2: gone');
});

test('an example view asks for the list, then one request per layer it shows, named by layer', async () => {
  const {layerNeeds, ShownExample} = await import('../src/views/shared/example');
  const {DEFAULT_STATE} = await import('../src/state/state');
  const requests = await import('../src/data/requests');
  const selection = {runs: ['r'], run: 'r', tags: ['t'], tag: 't', steps: [5], step: 5, exampleStep: 5};
  const info = {index: 0, tokens: ['a', 'b'], num_layers: 32, num_heads: 4, num_tokens: 2, causal: true, encoding: 'topk' as const, has_qk: false, segments: null};
  const answers = new Map<string, unknown>();
  const data = {get: (r: {key: string}) => (answers.has(r.key) ? {state: 'ready', value: answers.get(r.key)} : {state: 'loading'})} as never;
  const state = {...DEFAULT_STATE, focus: {...DEFAULT_STATE.focus, layer: 40}};
  const model = {state, tags: {}, selection, data};
  assert.deepEqual(layerNeeds(model, () => [0]).map((r) => r.key), [requests.examples('r', 't', 5).key]); // the list first
  answers.set(requests.examples('r', 't', 5).key, {run: 'r', tag: 't', step: 5, wall_time: 0, examples: [info]});
  const needs = layerNeeds(model, (n) => [n - 1, 3]);
  const key = {run: 'r', tag: 't', step: 5, example: 0};
  assert.deepEqual(needs.slice(1).map((r) => r.key), [requests.attentionLayer(key, 31, 32).key, requests.attentionLayer(key, 3, 32).key]);
  assert.equal(needs[1].cost, 1 / 32);
  // In 'layers' mode the view has the example's shape at once, and each layer as it arrives.
  const shown = new ShownExample('layers').resolve(model);
  assert.ok(!('kind' in shown));
  if ('kind' in shown) return;
  assert.deepEqual([shown.attention.numLayers, shown.attention.numHeads, shown.attention.heldLayers], [32, 4, 0]);
  assert.equal(shown.layer?.(3), null);
  answers.set(requests.attentionLayer(key, 3, 32).key, 'layer 3');
  assert.equal(shown.layer?.(3), 'layer 3');
});
