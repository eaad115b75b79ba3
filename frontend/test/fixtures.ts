// Reads the decoder fixtures written by make_fixtures.py.

import fs from 'node:fs';
import path from 'node:path';
import type {Attention} from '../src/data/decode';

const dir = process.env.TBA_FIXTURES ?? path.join(process.cwd(), 'test', 'fixtures');

export function fixture<T>(name: string): {buffer: ArrayBuffer; expected: T} {
  const bytes = fs.readFileSync(path.join(dir, `${name}.bin`));
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  return {buffer, expected: JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8')) as T};
}

export function close(actual: number, expected: number, tolerance = 1e-6): boolean {
  return Math.abs(actual - expected) <= tolerance;
}

/** A one-layer, one-head dense attention of the given weights (rows: queries; as many keys as a
 * row has, named k0, k1, ... when they are not the queries). */
export function attentionOf(rows: number[][], n: number): Attention {
  const codes = Uint8Array.from(rows.flat().map((w) => Math.round(Math.sqrt(w) * 255)));
  const tokens = Array.from({length: n}, (_, i) => `t${i}`);
  const nk = rows[0]?.length ?? n;
  const keyTokens = nk === n ? tokens : Array.from({length: nk}, (_, j) => `k${j}`);
  return {
    header: {tokens, num_layers: 1, num_heads: 1, num_tokens: n, num_key_tokens: nk, causal: false, quantization: 'sqrt-u8', encoding: 'dense'},
    tokens,
    keyTokens,
    numLayers: 1,
    numHeads: 1,
    numTokens: n,
    numKeyTokens: nk,
    encoding: 'dense',
    codes,
    keys: null,
    topK: 0,
    firstLayer: 0,
    heldLayers: 1,
  };
}
