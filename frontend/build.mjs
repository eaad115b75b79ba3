// Builds the dashboard bundle: src/index.ts (and the CSS it imports as text) -> one ES module, index.js.
// Usage: node build.mjs [outdir] [--watch]. Same sources and lockfile give byte-identical output.

import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const watch = args.includes('--watch');
const outdir = path.resolve(args.find((a) => !a.startsWith('--')) ?? path.join(here, '..', 'tb_attention', 'serve', 'static'));

const options = {
  absWorkingDir: here,
  entryPoints: [{in: 'src/index.ts', out: 'index'}],
  loader: {'.css': 'text'},
  outdir,
  bundle: true,
  format: 'esm',
  target: ['chrome100', 'firefox100', 'safari15'],
  minify: !watch,
  sourcemap: watch ? 'inline' : false,
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'info',
  metafile: true,
  banner: {
    js: '// tb-attention dashboard. Generated from frontend/ by `npm run build`; do not edit. Licenses: index.js.LICENSE.txt',
  },
};

if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
  console.log(`watching frontend/src, writing ${outdir}`);
} else {
  const result = await esbuild.build(options);
  writeLicenses(result.metafile);
}

/** index.js.LICENSE.txt: the license of every npm package bundled into index.js. */
function writeLicenses(metafile) {
  const packages = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (match) packages.add(match[1]);
  }
  const sections = [...packages].sort().map((name) => {
    const dir = path.join(here, 'node_modules', name);
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    const file = fs.readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
    const text = file ? fs.readFileSync(path.join(dir, file), 'utf8').trim() : `License: ${manifest.license}`;
    return `${name}@${manifest.version} (${manifest.license})\n\n${text}\n`;
  });
  const header = 'Third-party packages bundled into index.js by esbuild (frontend/build.mjs).\n';
  fs.writeFileSync(path.join(outdir, 'index.js.LICENSE.txt'), [header, ...sections].join('\n' + '-'.repeat(72) + '\n\n'));
}
