import assert from 'node:assert/strict';
import {test} from 'node:test';
import {decodeAttention, readRow} from '../src/data/decode';
import {filterRow, pruneRow, specialTokenMask, type Prune, type RowFilter} from '../src/model/transforms';
import {computeArcs} from '../src/views/head/arcs';
import {fixture} from './fixtures';

/** The arcs by definition: each shown head's filtered rows, pruned. */
function expectedArcs(name: string, heads: number[], filter: RowFilter, prune: Prune): string[] {
  const a = decodeAttention(fixture(name).buffer);
  const out: string[] = [];
  const order = new Int32Array(a.numTokens);
  heads.forEach((head, s) => {
    for (let i = 0; i < a.numTokens; i++) {
      const row = filterRow(readRow(a, 1 % a.numLayers, head, i), filter);
      const count = pruneRow(row, prune, order);
      for (let t = 0; t < count; t++) out.push(`${s}:${i}->${order[t]}=${row[order[t]].toFixed(6)}`);
    }
  });
  return out.sort();
}

function computed(name: string, heads: number[], filter: RowFilter, prune: Prune): string[] {
  const a = decodeAttention(fixture(name).buffer);
  const arcs = computeArcs(a, 1 % a.numLayers, heads, filter, {start: 0, end: a.numTokens}, prune);
  return Array.from({length: arcs.count}, (_, t) => `${arcs.slot[t]}:${arcs.from[t]}->${arcs.to[t]}=${arcs.weight[t].toFixed(6)}`).sort();
}

for (const name of ['dense', 'causal', 'topk', 'topk_causal']) {
  test(`the head view's arcs are the pruned, filtered weights of each shown head (${name})`, () => {
    const a = decodeAttention(fixture(name).buffer);
    const n = a.numTokens;
    const heads = [1, 0];
    for (const prune of [{threshold: 0, topK: 0}, {threshold: 0.1, topK: 0}, {threshold: 0.01, topK: 2}]) {
      const plain: RowFilter = {hidden: null, renormalize: false, keys: {start: 1, end: n}};
      assert.deepEqual(computed(name, heads, plain, prune), expectedArcs(name, heads, plain, prune));
      const hiding: RowFilter = {hidden: specialTokenMask(a.tokens), renormalize: true, keys: {start: 0, end: n}};
      assert.deepEqual(computed(name, heads, hiding, prune), expectedArcs(name, heads, hiding, prune));
    }
  });
}
