// The one typed client of the plugin's routes; mirrors tb_attention/serve/http_api.md.

import {decodeAttention, decodeLayer, joinAttention, type Attention} from './decode';
import {decodeQueryKey, joinQueryKey, type QueryKey} from './decode_qk';
import {checkLongProfile, decodeLongMap, decodeLongRows, type LongLevel, type LongMap, type LongProfile, type LongRows} from './decode_long';

export type TagKind = 'attention' | 'metric' | 'exemplars' | 'unsupported';

export interface TagInfo {
  kind: TagKind;
  steps: number[];
  wall_times?: number[];
  /** metric and exemplars tags: the attention tag (probe) they belong to */
  probe?: string;
  /** metric tags: `entropy`, `pos/NOUN`, ... */
  metric?: string;
  /** metric tags: the attention group they describe, when the writer named one */
  group?: string;
  description?: string;
  display_name?: string;
  /** unsupported tags: why the data is not served */
  error?: string;
}

/** `GET /tags`: run -> tag -> info. */
export type Tags = Record<string, Record<string, TagInfo>>;

/** One attention group of an example (v2): its own query and key tokens. */
export interface GroupInfo {
  name: string;
  num_layers: number;
  num_heads: number;
  /** queries */
  num_tokens: number;
  num_key_tokens: number;
  tokens: string[];
  key_tokens: string[];
  causal: boolean;
  encoding: GroupEncoding;
  has_qk: boolean;
  layer_names?: string[];
  /** `encoding: "long"` only: what is stored of the group (http_api.md, "Long examples") */
  long?: LongInfo;
}

/** How a group's weights are stored: `long` above the dense limit (no N × N anywhere; the long
 * routes and `/attention?window=` serve it). */
export type GroupEncoding = 'dense' | 'causal' | 'topk' | 'long';

/** What a long group stores: top-k rows per query, the block pyramid's levels (coarsest first)
 * and the distance profile. */
export interface LongInfo {
  top_k: number;
  sink_tokens: number;
  /** queries per stored rows blob */
  row_chunk: number;
  /** bytes the writer was allowed per example */
  budget: number;
  levels: LongLevel[];
  distance_bins: number;
}

export interface ExampleInfo {
  index: number;
  tokens: string[];
  num_layers: number;
  num_heads: number;
  num_tokens: number;
  causal: boolean;
  encoding: GroupEncoding;
  has_qk: boolean;
  text?: string | null;
  /** null for one text; `[a_end]` for a sentence pair (tokens [0, a_end) are segment A) */
  segments: number[] | null;
  pos?: (string | null)[];
  /** v2: the example's attention groups, the first being what the fields above describe */
  groups?: GroupInfo[];
  /** an image example's patch layout (`/image` gives its PNG); null or absent for text */
  image?: ImageLayout | null;
  /** a generation probe's decoding (http_api.md, `generation`); null or absent otherwise */
  generation?: Generation | null;
  /** a vision–language example's images inside its sequence (`/image?…&image=i` gives each frame) */
  images?: SequenceImage[] | null;
}

/** One image inside a vision–language example's sequence (http_api.md, `images`): the frame the
 * model saw ([height, width] pixels) and its pieces, each a span of the first group's tokens laid
 * row-major on a rows × cols grid over a box [top, left, bottom, right] of the frame. */
export interface SequenceImage {
  size: [number, number];
  pieces: {span: [number, number]; grid: [number, number]; box: [number, number, number, number]; name?: string}[];
}

/** One decoding of a generation probe: the queries of `group` are the `prompt_length` prompt
 * tokens, then the generated tokens but the last; generated token t was written by query row
 * `prompt_length − 1 + t`. */
export interface Generation {
  group: string;
  prompt_length: number;
  prompt?: string | null;
  /** per generated token: the token, its id, its probability when it was chosen */
  tokens: string[];
  ids: number[];
  probs: number[];
  /** per generated token, the (up to 5) most probable tokens then: [token, id, probability] */
  top: [string, number, number][][];
  /** why decoding stopped: `eos`, `max_new_tokens`, `stop_strings`, `max_length`, `other` */
  stop: string;
  do_sample?: boolean;
  seed?: number | null;
  options?: Record<string, unknown> | null;
}

/** An image example's layout: its tokens are the prefix tokens (CLS, distillation, registers),
 * then the patches row by row, named `r{row}c{col}`. */
export interface ImageLayout {
  /** [rows, cols] of patches */
  grid: [number, number];
  /** [height, width] of a patch in input pixels */
  patch_size: [number, number];
  prefix_tokens: number;
  prefix_names: string[];
}

export interface Examples {
  run: string;
  tag: string;
  step: number;
  wall_time: number;
  examples: ExampleInfo[];
  /** Examples the manifest describes wrongly: each answers 422 with this error; the others are served. */
  unreadable?: {index: number; error: string}[];
}

export interface MetricSeries {
  run: string;
  tag: string;
  steps: number[];
  wall_times: number[];
  /** values[step][layer][head]; null where the value was NaN */
  values: (number | null)[][][];
}

export interface ProbeMetrics {
  run: string;
  probe: string;
  step: number;
  metrics: Record<string, (number | null)[][]>;
}

export interface ExemplarArc {
  input: number;
  score: number;
  from: number;
  to: number;
}

export interface Exemplars {
  run: string;
  tag: string;
  step: number;
  num_layers: number;
  num_heads: number;
  top_k: number;
  inputs: {tokens: string[]; text?: string | null; example: number | null}[];
  /** heads[layer][head]: top inputs, best first */
  heads: ExemplarArc[][][];
}

/** `GET /compare`: per head, the attention moved from A to B over the probe inputs they share. */
export interface CompareMoved {
  /** moved[layer][head]: mean over shared inputs of the mean over queries of ½·Σ_j |b_ij − a_ij| */
  moved: (number | null)[][];
  /** probe inputs compared (same tokens in A and B) */
  used: number;
  /** probe inputs left out (their tokens differ) */
  skipped: number;
}

/** The two (run, step) endpoints of a comparison of one probe tag. */
export interface CompareKey {
  tag: string;
  runA: string;
  stepA: number;
  runB: string;
  stepB: number;
  /** the attention group compared; absent: the examples' first */
  group?: string;
}

/** A route answered with an error; `status` is the HTTP status (0 for a network failure). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export type RouteParams = Record<string, string | number>;

/** Where the routes' answers come from: TensorBoard's server, or a pack embedded in the page
 * (exported files and notebook outputs, data/pack.ts). Either answers a request with a Response as
 * the route would (status, Content-Type, body), so the client reads both through one code path. */
export interface Transport {
  fetch(route: string, params: RouteParams, signal?: AbortSignal): Promise<Response>;
  /** `/attention` and `/qk` are answered one layer at a time only (a pack): the client joins the
   * layers of a whole-group request itself */
  readonly layersOnly: boolean;
}

/** The plugin's routes on a server: `base` is the URL of their root (inside TensorBoard, the
 * document's base). */
export function serverTransport(base: string): Transport {
  return {
    layersOnly: false,
    async fetch(route, params, signal) {
      const url = new URL(route, base);
      for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
      try {
        return await fetch(url.toString(), {signal, credentials: 'same-origin'});
      } catch (e) {
        if ((e as Error).name === 'AbortError') throw e;
        throw new ApiError(0, `cannot reach TensorBoard (${(e as Error).message})`);
      }
    },
  };
}

/** Selects one example of one step of one attention tag. */
export interface ExampleKey {
  run: string;
  tag: string;
  step: number;
  example: number;
  /** an attention group other than the example's first */
  group?: string;
}

/** The route parameters of an example: `group` only when one is named. */
function exampleParams({run, tag, step, example, group}: ExampleKey): RouteParams {
  return group === undefined ? {run, tag, step, example} : {run, tag, step, example, group};
}

export class Api {
  constructor(private readonly transport: Transport = serverTransport(document.baseURI)) {}

  tags(signal?: AbortSignal): Promise<Tags> {
    return this.json('tags', {}, signal);
  }

  examples(run: string, tag: string, step: number, signal?: AbortSignal): Promise<Examples> {
    return this.json('examples', {run, tag, step}, signal);
  }

  async attention(key: ExampleKey, signal?: AbortSignal): Promise<Attention> {
    if (!this.transport.layersOnly) return decodeAttention(await this.binary('attention', exampleParams(key), signal));
    const n = await this.groupLayers(key, signal);
    return joinAttention(await Promise.all(Array.from({length: n}, (_, l) => this.attentionLayer(key, l, n, signal))));
  }

  /** One layer of a group (`layer=`: the stored per-layer blob); `numLayers`: the group's count. */
  async attentionLayer(key: ExampleKey, layer: number, numLayers: number, signal?: AbortSignal): Promise<Attention> {
    return decodeLayer(await this.binary('attention', {...exampleParams(key), layer}, signal), layer, numLayers);
  }

  /** A window of a long group: layer `layer`'s attention of queries [A, B) over keys [A, B)
   * (`/attention?layer=&window=A:B`), decoded as a dense group's layer of B − A tokens. */
  async attentionWindow(key: ExampleKey, layer: number, numLayers: number, window: [number, number], signal?: AbortSignal): Promise<Attention> {
    const [a, b] = window;
    const decoded = decodeLayer(await this.binary('attention', {...exampleParams(key), layer, window: `${a}:${b}`}, signal), layer, numLayers);
    const said = decoded.header.window;
    if (!Array.isArray(said) || said[0] !== a || said[1] !== b) throw new ApiError(422, `asked for the window ${a}:${b} of a long example, got ${JSON.stringify(said ?? null)}`);
    return decoded;
  }

  /** One level of a long group's block pyramid (`/long_map`): head `head`, or null for the layer's
   * mean; cells [rows) × [cols) of the level (at most 2²⁰). */
  async longMap(key: ExampleKey, layer: number, level: number, head: number | null, rows: [number, number], cols: [number, number], signal?: AbortSignal): Promise<LongMap> {
    const params: RouteParams = {...exampleParams(key), layer, level, rows: `${rows[0]}:${rows[1]}`, cols: `${cols[0]}:${cols[1]}`};
    if (head !== null) params.head = head;
    const map = decodeLongMap(await this.binary('long_map', params, signal));
    if (map.layer !== layer || map.level !== level || map.head !== head || map.rows[0] !== rows[0] || map.rows[1] !== rows[1] || map.cols[0] !== cols[0] || map.cols[1] !== cols[1]) {
      throw new ApiError(422, `asked /long_map for layer ${layer}, level ${level}, head ${head ?? 'mean'}, cells ${rows} × ${cols}; the answer holds another`);
    }
    return map;
  }

  /** The exact top-k rows of queries [start, stop) of one head (`/long_rows`, at most 4,096). */
  async longRows(key: ExampleKey, layer: number, head: number, start: number, stop: number, signal?: AbortSignal): Promise<LongRows> {
    const rows = decodeLongRows(await this.binary('long_rows', {...exampleParams(key), layer, head, start, stop}, signal));
    if (rows.layer !== layer || rows.head !== head || rows.start !== start || rows.stop !== stop) {
      throw new ApiError(422, `asked /long_rows for layer ${layer}, head ${head}, queries ${start}..${stop}; the answer holds another`);
    }
    return rows;
  }

  /** A long group's distance profile and sink mass per layer and head (`/long_profile`). */
  async longProfile(key: ExampleKey, signal?: AbortSignal): Promise<LongProfile> {
    return checkLongProfile(await this.json<LongProfile>('long_profile', exampleParams(key), signal));
  }

  /** Rejects with an ApiError of status 404 when no query/key vectors were logged. `layer`: that
   * layer's blob only (a 32-layer, 4,096-token model's q/k would be a gigabyte). */
  async queryKey(key: ExampleKey, layer?: number, signal?: AbortSignal): Promise<QueryKey> {
    if (layer === undefined && this.transport.layersOnly) {
      const n = await this.groupLayers(key, signal);
      return joinQueryKey(await Promise.all(Array.from({length: n}, (_, l) => this.queryKey(key, l, signal))));
    }
    return decodeQueryKey(await this.binary('qk', layer === undefined ? exampleParams(key) : {...exampleParams(key), layer}, signal));
  }

  metric(run: string, tag: string, signal?: AbortSignal): Promise<MetricSeries> {
    return this.json('metric', {run, tag}, signal);
  }

  /** `group`: the metrics of that group (absent: the probe's first group's). */
  metrics(run: string, probe: string, step: number, group?: string, signal?: AbortSignal): Promise<ProbeMetrics> {
    return this.json('metrics', group === undefined ? {run, probe, step} : {run, probe, step, group}, signal);
  }

  exemplars(run: string, tag: string, step: number, signal?: AbortSignal): Promise<Exemplars> {
    return this.json('exemplars', {run, tag, step}, signal);
  }

  /** The PNG an image example was made from (a vision–language example's image `image`); rejects
   * with an ApiError of status 404 when it has none. */
  async image(key: ExampleKey, signal?: AbortSignal, image?: number): Promise<Blob> {
    const {run, tag, step, example} = key; // the route takes no group
    return (await this.fetch('image', image === undefined ? {run, tag, step, example} : {run, tag, step, example, image}, signal)).blob();
  }

  compare(key: CompareKey, signal?: AbortSignal): Promise<CompareMoved> {
    const {tag, runA, stepA, runB, stepB, group} = key;
    const params: RouteParams = {tag, run_a: runA, step_a: stepA, run_b: runB, step_b: stepB};
    return this.json('compare', group === undefined ? params : {...params, group}, signal);
  }

  /** The layer count of an example's group, as `/examples` lists it (a layer's blob counts its own). */
  private async groupLayers(key: ExampleKey, signal?: AbortSignal): Promise<number> {
    const example = (await this.examples(key.run, key.tag, key.step, signal)).examples.find((e) => e.index === key.example);
    // v1 data lists no groups: the example's own fields describe its one group
    const count = key.group === undefined ? (example?.groups?.[0]?.num_layers ?? example?.num_layers) : example?.groups?.find((g) => g.name === key.group)?.num_layers;
    if (count === undefined) throw new ApiError(404, `${key.run}/${key.tag} step ${key.step} has no example ${key.example}${key.group === undefined ? '' : ` with group ${key.group}`}`);
    return count;
  }

  private async fetch(route: string, params: RouteParams, signal?: AbortSignal): Promise<Response> {
    const response = await this.transport.fetch(route, params, signal);
    if (!response.ok) {
      let message = `${route}: HTTP ${response.status}`;
      try {
        const body = (await response.json()) as {error?: unknown};
        if (typeof body.error === 'string') message = body.error;
      } catch {
        // not the JSON error body of the contract; keep the status line
      }
      throw new ApiError(response.status, message);
    }
    return response;
  }

  private async json<T>(route: string, params: RouteParams, signal?: AbortSignal): Promise<T> {
    return (await (await this.fetch(route, params, signal)).json()) as T;
  }

  private async binary(route: string, params: RouteParams, signal?: AbortSignal): Promise<ArrayBuffer> {
    return (await this.fetch(route, params, signal)).arrayBuffer();
  }
}
