// The pack: the routes' answers embedded in an exported page or a notebook output, read back into
// a Transport (http_api.md, "Exported files and notebook outputs: the pack").

import type {RouteParams, Transport} from './api';

export const PACK_VERSION = 1; // the pack layout this dashboard reads
const MAGIC = 'TBAP';
const PREAMBLE_BYTES = 12; // magic, version, index length

export type PackType = 'json' | 'binary' | 'png';

export interface PackIndex {
  /** KEY (packKey) -> [offset in the payload, length, type] */
  entries: Record<string, [number, number, PackType]>;
  /** the runs in the order their colours follow */
  run_order: string[];
  title: string;
  source: string;
}

export interface Pack {
  index: PackIndex;
  payload: Uint8Array;
}

const CONTENT_TYPES: Record<PackType, string> = {json: 'application/json', binary: 'application/octet-stream', png: 'image/png'};

/** Why the embedded data cannot be read; the message says what to do about it. */
export class PackError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PackError';
  }
}

// What to do when the page's bytes were changed on the way (latin1 packs only survive byte for byte).
const REENCODED = 'Open the file from disk, serve it as windows-1252 (Content-Type: text/html; charset=windows-1252), or export it with --encoding base64.';

/** WHATWG's windows-1252 for bytes 0x80–0x9F (the rest of the 256 bytes read as U+0000–U+00FF). */
const CP1252_HIGH = '\u20ac\x81\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\x8d\u017d\x8f\x90\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\x9d\u017e\u0178';
const CP1252_BYTES = new Map([...CP1252_HIGH].map((c, i) => [c.charCodeAt(0), 0x80 + i]));
const ESCAPE = 0x7e; // latin1: 0x00, 0x0D, 0x3C and 0x7E are written as 0x7E, then the byte XOR 0x40
const ESCAPED = 0x40;

/** The KEY of a request in the pack's index: the route, `?`, then its parameters sorted by name
 * as `name=value` (the value as encodeURIComponent writes it) joined by `&`. */
export function packKey(route: string, params: RouteParams): string {
  const query = Object.keys(params)
    .sort()
    .map((name) => `${name}=${encodeURIComponent(String(params[name]))}`)
    .join('&');
  return `${route}?${query}`;
}

/** The bytes of a `latin1` pack: the text the page decoded as windows-1252, mapped back to its
 * bytes, with the escapes undone. */
export function latin1Bytes(text: string): Uint8Array {
  if (text.includes('\ufffd')) {
    throw new PackError(`This page was read as UTF-8 (a server or an editor relabelled it), which corrupts the data it embeds. ${REENCODED}`);
  }
  const out = new Uint8Array(text.length);
  let n = 0;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const byte = code < 0x100 ? code : CP1252_BYTES.get(code);
    if (byte === undefined) {
      const name = `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
      throw new PackError(`The embedded data holds ${name}, which is no byte of windows-1252: the page was read in another character set. ${REENCODED}`);
    }
    if (escaped) out[n++] = byte ^ ESCAPED;
    else if (byte !== ESCAPE) out[n++] = byte;
    escaped = !escaped && byte === ESCAPE;
  }
  if (escaped) throw new PackError(`The embedded data ends inside an escape: it was cut short. ${REENCODED}`);
  return out.subarray(0, n);
}

/** The bytes of a `base64` pack (line breaks and spaces are ignored). */
export function base64Bytes(text: string): Uint8Array {
  let binary: string;
  try {
    binary = atob(text.replace(/\s+/g, ''));
  } catch {
    throw new PackError('The embedded data is not valid base64: the output was changed after it was written. Run the cell again.');
  }
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** The compressed pack of an element's text, checked against the length it was written with. */
export function packBytes(text: string, encoding: string | undefined, expectedBytes: string | undefined): Uint8Array {
  let bytes: Uint8Array;
  if (encoding === 'latin1') bytes = latin1Bytes(text);
  else if (encoding === 'base64') bytes = base64Bytes(text);
  else throw new PackError(`The embedded data has data-encoding ${JSON.stringify(encoding ?? null)}; this dashboard reads base64 and latin1. Export it again with one tb-attention.`);
  const expected = Number(expectedBytes);
  if (!Number.isInteger(expected)) throw new PackError('The embedded data has no data-bytes length to check it against. Export it again.');
  if (bytes.length !== expected) {
    throw new PackError(`The embedded data is ${bytes.length} bytes, not the ${expected} it was written with: the file was changed after export. ${REENCODED}`);
  }
  return bytes;
}

/** Undoes gzip (the browser's DecompressionStream; no fetch of a data: URL, which a page's
 * connect-src could forbid). Bad or cut-short data fails here: gzip checks its length and CRC. */
export async function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  if (typeof DecompressionStream === 'undefined') {
    throw new PackError('This browser cannot decompress the embedded data (it has no DecompressionStream): open the page in a current Chrome, Edge, Firefox or Safari.');
  }
  try {
    const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('gzip'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch {
    // (the browser's reason says no more: Chromium's is "Failed to fetch")
    throw new PackError(`The embedded data is not valid gzip: the file was changed or cut short after export. ${REENCODED}`);
  }
}

/** The index and payload of an uncompressed pack. */
export function parsePack(bytes: Uint8Array): Pack {
  const magic = String.fromCharCode(...bytes.subarray(0, 4));
  if (bytes.length < PREAMBLE_BYTES || magic !== MAGIC) throw new PackError(`The embedded data is not a tb-attention pack (it starts with ${JSON.stringify(magic)}). Export it again.`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(4, true);
  if (version !== PACK_VERSION) throw new PackError(`The embedded data is pack version ${version}; this dashboard reads version ${PACK_VERSION}. Export it again with one tb-attention.`);
  const length = view.getUint32(8, true);
  if (PREAMBLE_BYTES + length > bytes.length) throw new PackError('The pack\'s index runs past its end. Export it again.');
  let index: PackIndex;
  try {
    index = JSON.parse(new TextDecoder('utf-8', {fatal: true}).decode(bytes.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + length))) as PackIndex;
  } catch (e) {
    throw new PackError(`The pack's index is not JSON (${(e as Error).message}). Export it again.`);
  }
  const payload = bytes.subarray(PREAMBLE_BYTES + length);
  checkIndex(index, payload.length);
  return {index: {...index, run_order: Array.isArray(index.run_order) ? index.run_order.filter((r) => typeof r === 'string') : []}, payload};
}

function checkIndex(index: PackIndex, payloadBytes: number): void {
  if (typeof index !== 'object' || index === null || typeof index.entries !== 'object' || index.entries === null) {
    throw new PackError('The pack\'s index has no entries. Export it again.');
  }
  for (const [key, entry] of Object.entries(index.entries) as [string, unknown][]) {
    const [offset, length, type] = (Array.isArray(entry) ? entry : []) as unknown[];
    const inside = isCount(offset) && isCount(length) && offset + length <= payloadBytes;
    if (!inside || typeof type !== 'string' || !Object.hasOwn(CONTENT_TYPES, type)) {
      throw new PackError(`The pack's entry ${key} is not [offset, length, type] inside its payload. Export it again.`);
    }
  }
}

const isCount = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0;

/** The pack a page embeds, from its element's text, `data-encoding` and `data-bytes`. */
export async function readPack(text: string, encoding: string | undefined, expectedBytes: string | undefined): Promise<Pack> {
  return parsePack(await gunzip(packBytes(text, encoding, expectedBytes)));
}

/** The routes answered from a pack: its entries as the server would answer them, and 404 (with
 * the contract's JSON error body) for a request the export did not include. */
export function packTransport(pack: Pack): Transport {
  return {
    layersOnly: true,
    async fetch(route, params) {
      const key = packKey(route, params);
      if (!Object.hasOwn(pack.index.entries, key)) {
        const what = Object.entries(params).map(([name, value]) => `${name} ${value}`).join(', ');
        const error = `not in this export: /${route}${what ? ` (${what})` : ''}`;
        return new Response(JSON.stringify({error}), {status: 404, headers: {'Content-Type': 'application/json'}});
      }
      const [offset, length, type] = pack.index.entries[key];
      return new Response(pack.payload.subarray(offset, offset + length) as Uint8Array<ArrayBuffer>, {status: 200, headers: {'Content-Type': CONTENT_TYPES[type]}});
    },
  };
}
