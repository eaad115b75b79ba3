// Reads the decoder fixtures written by make_fixtures.py.

import fs from 'node:fs';
import path from 'node:path';

const dir = process.env.TBA_FIXTURES ?? path.join(process.cwd(), 'test', 'fixtures');

export function fixture<T>(name: string): {buffer: ArrayBuffer; expected: T} {
  const bytes = fs.readFileSync(path.join(dir, `${name}.bin`));
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  return {buffer, expected: JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8')) as T};
}

export function close(actual: number, expected: number, tolerance = 1e-6): boolean {
  return Math.abs(actual - expected) <= tolerance;
}
