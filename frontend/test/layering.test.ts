// The layering of src/: every file's imports (type-only ones too) are read from its source, and a
// file may import only its own layer or the layers below it, never a layer above; no files may
// import each other in a cycle. The layers, bottom-up, are src/'s folders (BUILD.md, "Modules"):
//
//   generated → data → model → state → draw → components → views/shared → views/<view> → app shell
//
// A file in a folder this order does not name fails the test: a new folder needs a place in it.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';

/** The layers, lowest first: folder patterns relative to src/ (`*` matches one folder name; `.`
 * is the files directly in src/). A file belongs to the first pattern matching its folder. */
export const LAYERS: readonly (readonly string[])[] = [
  ['generated'], // written by scripts/gen_schema.py from the backend's schema
  ['data'], // the typed API client, its decoders, the request cache
  ['model'], // pure maths on the data: no DOM, no drawing, no state
  ['state'], // the dashboard's state, its URL form, the store, run/tag/step resolution
  ['draw'], // the Painter, theme, DOM helpers, tooltip, export
  ['components'], // figures and panes shared by views
  ['views/shared'], // the View interface and what every view uses (toolbar controls, the example)
  ['views/*'], // one folder per view
  ['.', 'app'], // the app shell: the entry points (index.ts, embed.ts), layout, hosts, left panel
];

/** The layer of a file (a path relative to src/, with `/`), or -1 when no layer names its folder. */
export function layerOf(file: string, layers: readonly (readonly string[])[] = LAYERS): number {
  const dir = path.posix.dirname(file);
  const parts = dir === '.' ? ['.'] : dir.split('/');
  return layers.findIndex((patterns) =>
    patterns.some((pattern) => {
      const want = pattern === '.' ? ['.'] : pattern.split('/');
      // A pattern matches its folder and everything below it (views/head/x/y.ts is in views/*).
      return want.length <= parts.length && want.every((w, i) => w === '*' || w === parts[i]);
    }),
  );
}

/** The module specifiers a TypeScript source imports or re-exports: `import … from`, `import type
 * … from`, `import '…'`, `export … from`, `import('…')`. Reads tokens, so that strings, template
 * literals, regular expressions and comments that merely contain such text are not taken. */
export function importsOf(source: string): string[] {
  const tokens = tokenize(source);
  const specs: string[] = [];
  const isString = (t: Token | undefined) => t?.kind === 'string';
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind !== 'word' || (t.text !== 'import' && t.text !== 'export')) continue;
    if (tokens[i - 1]?.text === '.') continue; // a property named `import`
    const next = tokens[i + 1];
    if (t.text === 'import' && next?.text === '(' && isString(tokens[i + 2])) {
      specs.push(tokens[i + 2].text);
      continue;
    }
    if (t.text === 'import' && isString(next)) {
      specs.push(next.text);
      continue;
    }
    // import a, {b as c, type d} from '…' / import * as a from '…' / export {…} from '…' / export * from '…'
    if (t.text === 'export' && !(next?.text === '{' || next?.text === '*' || (next?.text === 'type' && (tokens[i + 2]?.text === '{' || tokens[i + 2]?.text === '*')))) continue;
    for (let j = i + 1; j < tokens.length; j++) {
      const u = tokens[j];
      if (u.kind === 'word' && u.text === 'from' && isString(tokens[j + 1]) && !(tokens[j - 1]?.text === ',' || tokens[j - 1]?.text === '{')) {
        specs.push(tokens[j + 1].text);
        break;
      }
      if (!(u.kind === 'word' || u.text === '{' || u.text === '}' || u.text === ',' || u.text === '*')) break;
    }
  }
  return specs;
}

interface Token {
  kind: 'word' | 'string' | 'punct';
  text: string;
}

/** Identifiers, string literals (their value) and punctuation; comments, template literals and
 * regular expressions are skipped (code inside a template's `${…}` is read). */
function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  const templateDepths: number[] = []; // brace depth at which each open `${` returns to its template
  let depth = 0;
  let i = 0;
  const n = source.length;
  const regexMayStart = () => {
    const prev = tokens[tokens.length - 1];
    if (!prev) return true;
    if (prev.kind === 'word') return /^(return|typeof|case|do|else|in|of|new|delete|void|throw|yield|await|instanceof)$/.test(prev.text);
    if (prev.kind === 'string') return false;
    return !(prev.text === ')' || prev.text === ']' || prev.text === '}');
  };
  const skipTemplate = () => {
    // at the character after a backtick or after the `}` closing a `${`
    while (i < n) {
      const c = source[i];
      if (c === '\\') i += 2;
      else if (c === '`') {
        i++;
        tokens.push({kind: 'string', text: '`…`'});
        return;
      } else if (c === '$' && source[i + 1] === '{') {
        i += 2;
        templateDepths.push(depth);
        depth++;
        return;
      } else i++;
    }
  };
  while (i < n) {
    const c = source[i];
    if (/\s/.test(c)) i++;
    else if (c === '/' && source[i + 1] === '/') while (i < n && source[i] !== '\n') i++;
    else if (c === '/' && source[i + 1] === '*') {
      const end = source.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === "'" || c === '"') {
      let text = '';
      i++;
      while (i < n && source[i] !== c) {
        if (source[i] === '\\') i++;
        text += source[i];
        i++;
      }
      i++;
      tokens.push({kind: 'string', text});
    } else if (c === '`') {
      i++;
      skipTemplate();
    } else if (c === '/' && regexMayStart()) {
      i++;
      let inClass = false;
      while (i < n && (source[i] !== '/' || inClass) && source[i] !== '\n') {
        if (source[i] === '\\') i++;
        else if (source[i] === '[') inClass = true;
        else if (source[i] === ']') inClass = false;
        i++;
      }
      i++;
      while (i < n && /[a-z]/i.test(source[i])) i++; // flags
      tokens.push({kind: 'punct', text: '/regex/'});
    } else if (/[A-Za-z_$]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w$]/.test(source[j])) j++;
      tokens.push({kind: 'word', text: source.slice(i, j)});
      i = j;
    } else if (/[0-9]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w.]/.test(source[j])) j++;
      tokens.push({kind: 'word', text: source.slice(i, j)});
      i = j;
    } else {
      if (c === '{') depth++;
      else if (c === '}') {
        depth--;
        if (templateDepths.length && templateDepths[templateDepths.length - 1] === depth) {
          templateDepths.pop();
          i++;
          skipTemplate();
          continue;
        }
      }
      tokens.push({kind: 'punct', text: c});
      i++;
    }
  }
  return tokens;
}

/** Every file under `dir` (relative, with `/`). */
function listFiles(dir: string, prefix = ''): string[] {
  return fs
    .readdirSync(path.join(dir, prefix), {withFileTypes: true})
    .flatMap((e) => (e.isDirectory() ? listFiles(dir, path.posix.join(prefix, e.name)) : [path.posix.join(prefix, e.name)]))
    .sort();
}

/** The file a relative specifier names (as esbuild resolves it: `.ts`, then `/index.ts`), or null. */
function resolveImport(files: ReadonlySet<string>, from: string, spec: string): string | null {
  const base = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec));
  for (const candidate of [base, `${base}.ts`, `${base}/index.ts`]) if (files.has(candidate)) return candidate;
  return null;
}

/** src/'s import graph: file → the src/ files it imports (packages left out). Fails on a relative
 * import that names no file of src/. */
export function importGraph(sources: ReadonlyMap<string, string>): Map<string, string[]> {
  const files = new Set(sources.keys());
  const graph = new Map<string, string[]>();
  for (const [file, source] of sources) {
    const targets: string[] = [];
    if (file.endsWith('.ts')) {
      for (const spec of importsOf(source)) {
        if (!spec.startsWith('.')) continue;
        const target = resolveImport(files, file, spec);
        assert.ok(target, `${file} imports '${spec}', which is no file of src/`);
        targets.push(target);
      }
    }
    graph.set(file, targets);
  }
  return graph;
}

/** Imports of a higher layer, and files in no layer. */
export function layerViolations(graph: ReadonlyMap<string, readonly string[]>, layers: readonly (readonly string[])[] = LAYERS): string[] {
  const out: string[] = [];
  const name = (layer: number) => layers[layer].join(' + ');
  for (const [file, targets] of graph) {
    const own = layerOf(file, layers);
    if (own < 0) {
      out.push(`${file} is in no layer: give its folder a place in LAYERS (test/layering.test.ts)`);
      continue;
    }
    for (const target of targets) {
      const their = layerOf(target, layers);
      if (their > own) out.push(`${file} (layer ${name(own)}) imports ${target} (layer ${name(their)}, above it)`);
    }
  }
  return out;
}

/** The import cycles: each strongly connected component of more than one file, or a file that
 * imports itself (Tarjan's algorithm). */
export function importCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  let counter = 0;
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return cycles;
}

const SRC = process.env.TBA_SRC ?? path.resolve(process.env.TBA_FIXTURES ?? 'test/fixtures', '..', '..', 'src');

function srcGraph(): Map<string, string[]> {
  const sources = new Map(listFiles(SRC).map((f) => [f, fs.readFileSync(path.join(SRC, f), 'utf8')] as [string, string]));
  return importGraph(sources);
}

test('no file of src/ imports a layer above its own', () => {
  const graph = srcGraph();
  assert.ok(graph.size > 40 && graph.has('index.ts') && graph.has('state/state.ts'), `read src/ at ${SRC}`);
  assert.ok([...graph.values()].flat().length > 200, 'read the imports');
  assert.deepEqual(layerViolations(graph), []);
});

test('no files of src/ import each other in a cycle', () => {
  assert.deepEqual(importCycles(srcGraph()), []);
});

test('the layering check reads every form of import, and nothing that only looks like one', () => {
  const source = [
    "import {a, type B} from './one';",
    "import type {C} from '../two';",
    'import D, {e as f} from "./three";',
    "import * as g from './four';",
    "import './five.css';",
    "export {h} from './six';",
    "export * from './seven';",
    "export type {I} from './eight';",
    "const nine = await import('./nine');",
    "import {\n  j,\n  k,\n} from './ten';",
    "// import {x} from './comment';",
    "/* export * from './block'; */",
    "const s = \"import {y} from './string'\";",
    "const t = `import {z} from './template' ${fn('./inside')} import('./tpl')`;",
    "const r = /from '.\\/regex'/g; const half = 1 / 2; const q = 3 / 4;",
    "export function from(): void {}",
    "export const m = {import: 1}; m.import;",
    "const u = import.meta.url;",
  ].join('\n');
  assert.deepEqual(importsOf(source), ['./one', '../two', './three', './four', './five.css', './six', './seven', './eight', './nine', './ten']);
});

test('the layering check fails on a back-edge, a file in no layer, and a cycle', () => {
  const sources = new Map([
    ['index.ts', "import {App} from './app/app';"],
    ['app/app.ts', "import {view} from '../views/head/head_view';"],
    ['views/head/head_view.ts', "import type {State} from '../../state/state';\nimport {box} from '../shared/view';"],
    ['views/shared/view.ts', "import {head} from '../head/head_view';"], // shared → a view: above it
    ['state/state.ts', "import type {Fusion} from '../views/image/image_view';"], // state → views
    ['views/image/image_view.ts', "import {Painter} from '../../draw/painter';"],
    ['draw/painter.ts', "import type {Rect} from '../model/geometry';"],
    ['model/geometry.ts', ''],
    ['misc/thing.ts', ''],
    ['model/a.ts', "import {b} from './b';"],
    ['model/b.ts', "import {a} from './a';"],
  ]);
  const graph = importGraph(sources);
  assert.deepEqual(layerViolations(graph), [
    'views/shared/view.ts (layer views/shared) imports views/head/head_view.ts (layer views/*, above it)',
    'state/state.ts (layer state) imports views/image/image_view.ts (layer views/*, above it)',
    'misc/thing.ts is in no layer: give its folder a place in LAYERS (test/layering.test.ts)',
  ]);
  assert.deepEqual(importCycles(graph), [
    ['views/head/head_view.ts', 'views/shared/view.ts'],
    ['model/a.ts', 'model/b.ts'],
  ]);
  assert.throws(() => importGraph(new Map([['data/api.ts', "import {x} from './gone';"]])), /no file of src/);
});
