import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ApiError, type Api} from '../src/api';
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
