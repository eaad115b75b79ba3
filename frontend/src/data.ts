// What the views load, fetched once and shared: examples, attention, metric series, exemplars.

import {ApiError, type Api, type Examples, type ExampleKey, type Exemplars, type MetricSeries, type ProbeMetrics} from './api';
import type {Attention} from './decode';

const ATTENTION_CACHE_SIZE = 8; // decoded examples kept: flipping steps, examples, A and B
const JSON_CACHE_SIZE = 64; // answers of the JSON routes kept (metric series, exemplar tables, ...)

/** A least-recently-used map of promises; a rejected promise is dropped so that a retry refetches. */
class PromiseCache<T> {
  private readonly entries = new Map<string, {version: string; promise: Promise<T>}>();

  constructor(private readonly size: number) {}

  get(key: string, version: string, fetch: () => Promise<T>): Promise<T> {
    const entry = this.entries.get(key);
    if (entry && entry.version === version) {
      this.entries.delete(key); // re-insert: most recently used last
      this.entries.set(key, entry);
      return entry.promise;
    }
    const promise = fetch();
    this.entries.delete(key);
    this.entries.set(key, {version, promise});
    promise.catch(() => {
      if (this.entries.get(key)?.promise === promise) this.entries.delete(key);
    });
    while (this.entries.size > this.size) this.entries.delete(this.entries.keys().next().value!);
    return promise;
  }
}

export class DataCache {
  private readonly attentions = new PromiseCache<Attention>(ATTENTION_CACHE_SIZE);
  private readonly examplesCache = new PromiseCache<Examples>(JSON_CACHE_SIZE);
  private readonly series = new PromiseCache<MetricSeries>(JSON_CACHE_SIZE);
  private readonly probes = new PromiseCache<ProbeMetrics>(JSON_CACHE_SIZE);
  private readonly exemplarTables = new PromiseCache<Exemplars>(JSON_CACHE_SIZE);

  constructor(readonly api: Api) {}

  attention(key: ExampleKey): Promise<Attention> {
    return this.attentions.get(JSON.stringify(key), '', () => this.api.attention(key));
  }

  examples(run: string, tag: string, step: number): Promise<Examples> {
    return this.examplesCache.get(JSON.stringify([run, tag, step]), '', () => this.api.examples(run, tag, step));
  }

  /** Every step of a metric tag; `version` (e.g. the steps /tags lists) refetches when it changes. */
  metric(run: string, tag: string, version: string): Promise<MetricSeries> {
    return this.series.get(JSON.stringify([run, tag]), version, () => this.api.metric(run, tag));
  }

  metrics(run: string, probe: string, step: number, version: string): Promise<ProbeMetrics> {
    return this.probes.get(JSON.stringify([run, probe, step]), version, () => this.api.metrics(run, probe, step));
  }

  exemplars(run: string, tag: string, step: number): Promise<Exemplars> {
    return this.exemplarTables.get(JSON.stringify([run, tag, step]), '', () => this.api.exemplars(run, tag, step));
  }
}

/** What a failed load says to a user. */
export function errorText(e: unknown, what: string): string {
  return e instanceof ApiError ? e.message : `Could not read ${what}: ${(e as Error).message}`;
}

/** Holds the answer of the latest request of a view: an older request answering late is dropped,
 * and the previous value stays shown while the next one loads (no flashing while a slider moves). */
export class Latest<T> {
  value: T | null = null;
  /** the key `value` was loaded for (the newest request may still be unanswered) */
  valueKey: string | null = null;
  error: string | null = null;
  private key: string | null = null;

  /** Starts a request unless `key` is the current one; calls `done` when it is answered. */
  load(key: string, fetch: () => Promise<T>, done: () => void, what: string): void {
    if (key === this.key) return;
    this.key = key;
    fetch().then(
      (value) => {
        if (this.key !== key) return;
        this.value = value;
        this.valueKey = key;
        this.error = null;
        done();
      },
      (e: unknown) => {
        if (this.key !== key) return;
        this.error = errorText(e, what);
        done();
      },
    );
  }

  reset(): void {
    this.key = null;
    this.value = null;
    this.valueKey = null;
    this.error = null;
  }
}
