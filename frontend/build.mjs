// Builds the dashboard bundles: src/index.ts (and the CSS it imports as text) -> one ES module,
// index.js (TensorBoard's); src/embed.ts -> one classic script, embed.js (exported files and
// notebook outputs inline it in a <script> element). Each comes with its LICENSE.txt.
// Usage: node build.mjs [outdir] [--watch]. Same sources and lockfile give byte-identical output.

import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const watch = args.includes('--watch');
const outdir = path.resolve(args.find((a) => !a.startsWith('--')) ?? path.join(here, '..', 'tb_attention', 'serve', 'static'));

const common = {
  absWorkingDir: here,
  loader: {'.css': 'text'},
  outdir,
  bundle: true,
  target: ['chrome100', 'firefox100', 'safari15'],
  minify: !watch,
  sourcemap: watch ? 'inline' : false,
  legalComments: 'none',
  logLevel: 'info',
  metafile: true,
};

const index = {
  ...common,
  entryPoints: [{in: 'src/index.ts', out: 'index'}],
  format: 'esm',
  charset: 'utf8',
  banner: {
    js: '// tb-attention dashboard. Generated from frontend/ by `npm run build`; do not edit. Licenses: index.js.LICENSE.txt',
  },
};

// A classic script, not UMD: where require.js is loaded (classic Jupyter) a UMD bundle would hand
// itself to `define` instead of setting the global. ASCII only: an exported file is windows-1252.
const embed = {
  ...common,
  entryPoints: [{in: 'src/embed.ts', out: 'embed'}],
  format: 'iife',
  globalName: 'tbAttention',
  charset: 'ascii',
  banner: {
    js: '// tb-attention dashboard for exported files and notebooks: tbAttention.mount(container, packElement). Generated from frontend/ by `npm run build`; do not edit. Licenses: embed.js.LICENSE.txt',
  },
};

if (watch) {
  for (const options of [index, embed]) await (await esbuild.context(options)).watch();
  console.log(`watching frontend/src, writing ${outdir}`);
} else {
  writeLicenses((await esbuild.build(index)).metafile, 'index.js');
  writeLicenses((await esbuild.build(embed)).metafile, 'embed.js');
  checkInlinable(path.join(outdir, 'embed.js'));
}

/** embed.js goes inside an HTML <script> element: `</script` would end it and `<!--` change how the
 * parser reads it; a byte above 0x7F would read differently in a windows-1252 file. */
function checkInlinable(file) {
  const text = fs.readFileSync(file, 'latin1');
  const problems = [
    [/<\/script/i, '"</script"'],
    [/<!--/, '"<!--"'],
    [/[^\x00-\x7f]/, 'a byte that is not ASCII'],
  ].filter(([pattern]) => pattern.test(text));
  if (problems.length) {
    fs.rmSync(file);
    throw new Error(`${file} holds ${problems.map(([, what]) => what).join(' and ')}: it cannot be inlined in an HTML <script> element`);
  }
}

/** <bundle>.LICENSE.txt: the license of every npm package bundled into it. */
function writeLicenses(metafile, bundle) {
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
  const header = `Third-party packages bundled into ${bundle} by esbuild (frontend/build.mjs).\n`;
  fs.writeFileSync(path.join(outdir, `${bundle}.LICENSE.txt`), [header, ...sections].join('\n' + '-'.repeat(72) + '\n\n'));
}
