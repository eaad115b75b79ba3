// The decoder of the binary body of `/attention` (TBAT), and what every blob shares; see
// http_api.md (q/k: decode_qk.ts).

// Weights stay as their one-byte codes (1 byte per weight instead of 4) and are decoded per row
// on demand: 12 x 12 heads of 1024 tokens would take 600 MB as float32.

export const FORMAT_VERSION = 2; // the newest storage format this dashboard reads (v2: groups with their own key tokens)
export const TOPK_PAD = 0xffff; // key index of an unused slot of a sparse row

/** code -> weight: b = round(255 sqrt(a)), so a = (b / 255)^2 (quantization "sqrt-u8"). */
export const DEQUANTIZE = Float32Array.from({length: 256}, (_, b) => (b / 255) ** 2);

export type Encoding = 'dense' | 'causal' | 'topk';

export interface AttentionHeader {
  tokens: string[];
  /** v2: the key tokens (v1: the tokens) */
  key_tokens?: string[];
  num_layers: number;
  num_heads: number;
  num_tokens: number;
  /** v2: keys per query row (v1: num_tokens) */
  num_key_tokens?: number;
  causal: boolean;
  quantization: string;
  encoding: Encoding;
  top_k?: number;
  segments?: number[] | null;
  text?: string | null;
  pos?: (string | null)[];
  [field: string]: unknown;
}

export interface Attention {
  header: AttentionHeader;
  /** the query tokens */
  tokens: string[];
  /** the key tokens: the query tokens but for cross attention */
  keyTokens: string[];
  numLayers: number;
  numHeads: number;
  /** query rows */
  numTokens: number;
  /** keys per row */
  numKeyTokens: number;
  encoding: Encoding;
  /** weight codes, laid out by `encoding` (layer, head, query row) */
  codes: Uint8Array;
  /** topk only: the key of each code slot (TOPK_PAD where unused) */
  keys: Uint16Array | null;
  /** topk only: slots per row */
  topK: number;
  /** the group's layer of `codes`' first layer (a one-layer blob of `/attention?layer=L` holds L) */
  firstLayer: number;
  /** layers `codes` holds: [firstLayer, firstLayer + heldLayers); `numLayers` counts the group's */
  heldLayers: number;
}

export class FormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FormatError';
  }
}

const PREAMBLE_BYTES = 12; // magic, version, header length

export function unpack(buffer: ArrayBuffer, magic: string): {header: Record<string, unknown>; payload: number} {
  if (buffer.byteLength < PREAMBLE_BYTES) throw new FormatError('blob is shorter than its header');
  const view = new DataView(buffer);
  const found = String.fromCharCode(...new Uint8Array(buffer, 0, 4));
  if (found !== magic) throw new FormatError(`blob starts with ${JSON.stringify(found)}, expected ${magic}`);
  const version = view.getUint32(4, true);
  if (version > FORMAT_VERSION) {
    throw new FormatError(`storage format v${version}; this dashboard reads up to v${FORMAT_VERSION}: upgrade tb-attention`);
  }
  const length = view.getUint32(8, true);
  const payload = PREAMBLE_BYTES + length;
  if (payload > buffer.byteLength) throw new FormatError('blob header runs past its end');
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', {fatal: true}).decode(new Uint8Array(buffer, PREAMBLE_BYTES, length)));
  } catch (e) {
    throw new FormatError(`blob header is not JSON: ${(e as Error).message}`);
  }
  if (typeof header !== 'object' || header === null) throw new FormatError('blob header is not a JSON object');
  return {header: header as Record<string, unknown>, payload};
}

export function positiveInt(header: Record<string, unknown>, field: string): number {
  const value = header[field];
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new FormatError(`header field ${field} is not a non-negative integer`);
  }
  return value;
}

export function checkPayload(buffer: ArrayBuffer, offset: number, bytes: number): void {
  if (offset + bytes > buffer.byteLength) {
    throw new FormatError(`payload of ${buffer.byteLength - offset} bytes, expected ${bytes}`);
  }
}

/** Decodes the body of `GET /attention` (the blob after gzip is undone). */
export function decodeAttention(buffer: ArrayBuffer): Attention {
  const {header, payload} = unpack(buffer, 'TBAT');
  const numLayers = positiveInt(header, 'num_layers');
  const firstLayer = header.first_layer === undefined ? 0 : positiveInt(header, 'first_layer');
  const numHeads = positiveInt(header, 'num_heads');
  const numTokens = positiveInt(header, 'num_tokens');
  const numKeyTokens = header.num_key_tokens === undefined ? numTokens : positiveInt(header, 'num_key_tokens');
  const tokens = header.tokens;
  if (!Array.isArray(tokens) || tokens.length !== numTokens) throw new FormatError('header tokens do not match num_tokens');
  const keyTokens = header.key_tokens ?? tokens;
  if (!Array.isArray(keyTokens) || keyTokens.length !== numKeyTokens) throw new FormatError('header key_tokens do not match num_key_tokens');
  const heads = numLayers * numHeads;
  const encoding = header.encoding as Encoding;
  let codes: Uint8Array;
  let keys: Uint16Array | null = null;
  let topK = 0;
  if (encoding === 'dense') {
    checkPayload(buffer, payload, heads * numTokens * numKeyTokens);
    codes = new Uint8Array(buffer, payload, heads * numTokens * numKeyTokens);
  } else if (encoding === 'causal') {
    if (numKeyTokens !== numTokens) throw new FormatError(`causal attention over ${numTokens} queries x ${numKeyTokens} keys: it must be square`);
    const perHead = (numTokens * (numTokens + 1)) / 2;
    checkPayload(buffer, payload, heads * perHead);
    codes = new Uint8Array(buffer, payload, heads * perHead);
  } else if (encoding === 'topk') {
    topK = positiveInt(header, 'top_k');
    const slots = heads * numTokens * topK;
    checkPayload(buffer, payload, 3 * slots);
    // Little-endian uint16 read in place: the payload starts 8-byte aligned, and every browser
    // this runs in is little-endian.
    keys = new Uint16Array(buffer, payload, slots);
    codes = new Uint8Array(buffer, payload + 2 * slots, slots);
  } else {
    throw new FormatError(`unknown attention encoding ${JSON.stringify(encoding)}`);
  }
  return {
    header: header as AttentionHeader,
    tokens: tokens.map(String),
    keyTokens: keyTokens.map(String),
    numLayers,
    numHeads,
    numTokens,
    numKeyTokens,
    encoding,
    codes,
    keys,
    topK,
    firstLayer,
    heldLayers: numLayers,
  };
}

/** One layer of a group, decoded from the body of `/attention?layer=L`: `numLayers` says the
 * group's count (the blob's header counts its own), so views size their pickers and grids by it. */
export function decodeLayer(buffer: ArrayBuffer, layer: number, numLayers: number): Attention {
  const a = decodeAttention(buffer);
  if (a.heldLayers !== 1 || a.firstLayer !== layer) {
    throw new FormatError(`asked for layer ${layer}, got layers ${a.firstLayer}..${a.firstLayer + a.heldLayers - 1}`);
  }
  if (layer >= numLayers) throw new FormatError(`layer ${layer} of a group of ${numLayers} layers`);
  return {...a, numLayers};
}

/** A whole group from its layers, each decoded from its own blob (a pack stores `/attention` one
 * layer at a time): `layers[l]` must hold layer l alone, all of one shape. */
export function joinAttention(layers: readonly Attention[]): Attention {
  const first = layers[0];
  if (!first) throw new FormatError('a group of no layers');
  for (const [l, a] of layers.entries()) {
    if (a.firstLayer !== l || a.heldLayers !== 1) throw new FormatError(`layer ${l} of the group: got layers ${a.firstLayer}..${a.firstLayer + a.heldLayers - 1}`);
    if (a.numHeads !== first.numHeads || a.numTokens !== first.numTokens || a.numKeyTokens !== first.numKeyTokens || a.encoding !== first.encoding || a.topK !== first.topK) {
      throw new FormatError(`layer ${l} is not of the shape of layer 0`);
    }
  }
  const numLayers = layers.length;
  const codes = new Uint8Array(numLayers * first.codes.length);
  layers.forEach((a, l) => codes.set(a.codes, l * first.codes.length));
  let keys: Uint16Array | null = null;
  if (first.keys) {
    keys = new Uint16Array(numLayers * first.keys.length);
    layers.forEach((a, l) => keys!.set(a.keys!, l * first.keys!.length));
  }
  const header = {...first.header, num_layers: numLayers, first_layer: 0};
  return {...first, header, numLayers, codes, keys, firstLayer: 0, heldLayers: numLayers};
}

/** True when `a` holds the weights of `layer` (a per-layer blob holds one). */
export function holdsLayer(a: Attention, layer: number): boolean {
  return layer >= a.firstLayer && layer < a.firstLayer + a.heldLayers;
}

/** Offset in `codes` (and `keys`) of query row i of head (layer, head). */
export function rowStart(a: Attention, layer: number, head: number, i: number): number {
  const n = a.numTokens;
  const h = (layer - a.firstLayer) * a.numHeads + head;
  switch (a.encoding) {
    case 'dense':
      return (h * n + i) * a.numKeyTokens;
    case 'causal':
      return (h * n * (n + 1)) / 2 + (i * (i + 1)) / 2;
    case 'topk':
      return (h * n + i) * a.topK;
  }
}

/** Number of code slots of query row i: its keys are `keys[start + t]`, or `t` where keys is null. */
export function rowLength(a: Attention, i: number): number {
  return a.encoding === 'dense' ? a.numKeyTokens : a.encoding === 'causal' ? i + 1 : a.topK;
}

/** The weights of query i over every key, as a dense row of numKeyTokens (missing weights are 0). */
export function readRow(a: Attention, layer: number, head: number, i: number, out = new Float32Array(a.numKeyTokens)): Float32Array {
  out.fill(0);
  const start = rowStart(a, layer, head, i);
  const length = rowLength(a, i);
  const {codes, keys} = a;
  if (keys === null) {
    for (let t = 0; t < length; t++) out[t] = DEQUANTIZE[codes[start + t]];
  } else {
    for (let t = 0; t < length; t++) {
      const j = keys[start + t];
      if (j !== TOPK_PAD) out[j] = DEQUANTIZE[codes[start + t]];
    }
  }
  return out;
}

/** The weights of every query to key j (column j of the head, numTokens long). */
export function readColumn(a: Attention, layer: number, head: number, j: number, out = new Float32Array(a.numTokens)): Float32Array {
  out.fill(0);
  const n = a.numTokens;
  const {codes, keys} = a;
  if (a.encoding === 'dense') {
    const base = rowStart(a, layer, head, 0) + j;
    for (let i = 0; i < n; i++) out[i] = DEQUANTIZE[codes[base + i * a.numKeyTokens]];
  } else if (a.encoding === 'causal') {
    const base = rowStart(a, layer, head, 0);
    for (let i = j; i < n; i++) out[i] = DEQUANTIZE[codes[base + (i * (i + 1)) / 2 + j]];
  } else {
    const k = a.topK;
    const base = rowStart(a, layer, head, 0);
    for (let i = 0; i < n; i++) {
      const start = base + i * k;
      for (let t = 0; t < k; t++) {
        if (keys![start + t] === j) {
          out[i] = DEQUANTIZE[codes[start + t]];
          break;
        }
      }
    }
  }
  return out;
}
