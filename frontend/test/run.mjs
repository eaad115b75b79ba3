// Runs the unit tests: bundles each test/*.test.ts with esbuild, then runs them with `node --test`.

import * as esbuild from 'esbuild';
import {spawnSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const tests = fs.readdirSync(here).filter((f) => f.endsWith('.test.ts')).sort();
const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'tba-test-'));
try {
  await esbuild.build({
    entryPoints: tests.map((f) => path.join(here, f)),
    outdir,
    outExtension: {'.js': '.mjs'},
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
  });
  const files = tests.map((f) => path.join(outdir, f.replace(/\.ts$/, '.mjs')));
  const result = spawnSync(process.execPath, ['--test', ...files], {stdio: 'inherit', env: {...process.env, TBA_FIXTURES: path.join(here, 'fixtures'), TBA_SRC: path.join(here, '..', 'src')}});
  process.exitCode = result.status ?? 1;
} finally {
  fs.rmSync(outdir, {recursive: true, force: true});
}
