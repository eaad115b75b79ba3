// The one cache of everything the dashboard fetches: views declare requests, the app loads them
// here, and every answer makes the app render again.

import {ApiError, type Api} from './api';

/** Something to fetch: its cache key, what it is in a user's words, and how to fetch it. */
export interface Request<T> {
  readonly key: string;
  /** e.g. "the attention", for error messages */
  readonly what: string;
  /** decoded attention and q/k: few are kept (see HEAVY_ENTRIES) */
  readonly heavy: boolean;
  /** heavy requests: the share of an example's weights it holds (1: a whole example, 1/L: a layer) */
  readonly cost?: number;
  fetch(api: Api): Promise<T>;
}

export type AnyRequest = Request<unknown>;

/** Where a request stands. */
export type Loaded<T> =
  | {readonly state: 'ready'; readonly value: T}
  | {readonly state: 'loading'}
  | {readonly state: 'error'; readonly error: string; readonly status: number};

/** What views read from the cache: answers only, never a fetch. */
export interface DataReader {
  get<T>(request: Request<T>): Loaded<T>;
}

const HEAVY_ENTRIES = 8; // decoded examples kept (layers count as their share): flipping steps, examples, A and B
const LIGHT_ENTRIES = 96; // answers of the JSON routes kept (metric series, exemplar tables, ...)
const LOADING: Loaded<never> = Object.freeze({state: 'loading'});

interface Entry {
  heavy: boolean;
  cost: number;
  loaded: Loaded<unknown>;
}

/** A least-recently-used map of requests and their answers; a failed request is fetched again
 * the next time it is loaded after `retryAfterMs` (so a 404 is not asked for on every render). */
export class DataCache implements DataReader {
  private readonly entries = new Map<string, Entry>();
  private readonly failedAt = new Map<string, number>();
  /** the keys of the last `load`: what is shown now is never evicted */
  private wanted = new Set<string>();

  /** `arrived`: called after each answer (or failure) comes in. */
  constructor(
    private readonly api: Api,
    private readonly arrived: () => void,
    private readonly retryAfterMs = 5_000,
  ) {}

  /** Starts fetching every request that is neither cached nor in flight. */
  load(requests: readonly AnyRequest[]): void {
    this.wanted = new Set(requests.map((r) => r.key));
    for (const request of requests) {
      const entry = this.entries.get(request.key);
      if (entry) {
        const failed = entry.loaded.state === 'error' && Date.now() - (this.failedAt.get(request.key) ?? 0) > this.retryAfterMs;
        if (!failed) {
          this.touch(request.key, entry);
          continue;
        }
      }
      this.start(request);
    }
  }

  get<T>(request: Request<T>): Loaded<T> {
    return (this.entries.get(request.key)?.loaded as Loaded<T> | undefined) ?? LOADING;
  }

  /** True while any of `requests` is in flight. */
  busy(requests: readonly AnyRequest[]): boolean {
    return requests.some((r) => this.entries.get(r.key)?.loaded.state === 'loading');
  }

  private start(request: AnyRequest): void {
    const entry: Entry = {heavy: request.heavy, cost: request.cost ?? 1, loaded: LOADING};
    this.touch(request.key, entry);
    request.fetch(this.api).then(
      (value) => this.settle(request.key, entry, {state: 'ready', value}),
      (e: unknown) => {
        this.failedAt.set(request.key, Date.now());
        this.settle(request.key, entry, {state: 'error', error: errorText(e, request.what), status: e instanceof ApiError ? e.status : 0});
      },
    );
    this.evict();
  }

  private settle(key: string, entry: Entry, loaded: Loaded<unknown>): void {
    if (this.entries.get(key) !== entry) return; // evicted or replaced meanwhile
    entry.loaded = loaded;
    this.arrived();
  }

  private touch(key: string, entry: Entry): void {
    this.entries.delete(key); // re-insert: most recently used last
    this.entries.set(key, entry);
  }

  /** Drops the least recently used entries not wanted now until each kind fits its budget (light
   * entries count 1 each, heavy ones their cost). */
  private evict(): void {
    for (const heavy of [true, false]) {
      const cost = (e: Entry) => (heavy ? e.cost : 1);
      let total = 0;
      for (const e of this.entries.values()) if (e.heavy === heavy) total += cost(e);
      const limit = heavy ? HEAVY_ENTRIES : LIGHT_ENTRIES;
      for (const [key, e] of [...this.entries]) {
        if (total <= limit + 1e-9) break;
        if (e.heavy !== heavy || this.wanted.has(key)) continue;
        this.entries.delete(key);
        total -= cost(e);
      }
    }
  }
}

/** What a failed load says to a user. */
export function errorText(e: unknown, what: string): string {
  return e instanceof ApiError ? e.message : `Could not read ${what}: ${(e as Error).message}`;
}

/** The value of a request when it is ready, else null. */
export function valueOf<T>(data: DataReader, request: Request<T>): T | null {
  const loaded = data.get(request);
  return loaded.state === 'ready' ? loaded.value : null;
}

/** A view's last answer to a request that changes with the state: while the next request loads,
 * the previous answer stays readable (no flashing while a slider moves). */
export class LastAnswer<T> {
  value: T | null = null;
  error: string | null = null;

  /** Reads `request` from `data`; returns the answer to show (the newest that arrived) or null. */
  read(data: DataReader, request: Request<T>): T | null {
    const loaded = data.get(request);
    if (loaded.state === 'ready') {
      this.value = loaded.value;
      this.error = null;
    } else if (loaded.state === 'error') {
      this.error = loaded.error;
    } else {
      this.error = null;
    }
    return this.value;
  }
}
