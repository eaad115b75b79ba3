// Long examples in the browser: the TBLM/TBLR decoders (frames built here per http_api.md's layout),
// the window the head and model views open, level and tile choice for a zoom, brushes, the
// virtualised list's rows, what brushed rows say, and the Long view's map geometry.

import assert from 'node:assert/strict';
import {test} from 'node:test';
import {FormatError} from '../src/data/decode';
import {checkLongProfile, decodeLongMap, decodeLongRows, LONG_PAD, type LongProfile} from '../src/data/decode_long';
import {
  brushRange,
  cellRange,
  clampZoom,
  levelCodes,
  levelFor,
  mapView,
  maxZoom,
  movedWindow,
  summariseRows,
  tilesFor,
  visibleCells,
  visibleRows,
  windowOf,
} from '../src/model/long';
import {applyPatch, DEFAULT_STATE} from '../src/state/state';
import {decodeState, encodeState} from '../src/state/url_state';
import {keyX, mapBox, mapPlan, queryY, railBins, textLayout, tokenAt, tokenTicks, transformOf, zoomOf} from '../src/views/long/scene';

/** A frame as http_api.md lays it out: magic, u32 version, u32 header length, JSON padded to 8, payload. */
function frame(magic: string, header: object, payload: Uint8Array, version = 1): ArrayBuffer {
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - ((12 + json.length) % 8)) % 8;
  json = Uint8Array.from([...json, ...new Array(pad).fill(0x20)]);
  const out = new Uint8Array(12 + json.length + payload.length);
  out.set(new TextEncoder().encode(magic), 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, version, true);
  view.setUint32(8, json.length, true);
  out.set(json, 12);
  out.set(payload, 12 + json.length);
  return out.buffer;
}

const code = (w: number) => Math.round(255 * Math.sqrt(w));

/** A TBLR body: n rows of k slots, `rows[i]` the (key, weight) pairs of row i (padded), remainders. */
function rowsFrame(start: number, rows: [number, number][][], k: number, remainders: number[], numKeys: number, extra: object = {}): ArrayBuffer {
  const n = rows.length;
  const index = new Uint32Array(n * k).fill(LONG_PAD);
  const codes = new Uint8Array(n * k);
  rows.forEach((row, i) => row.forEach(([j, w], t) => ((index[i * k + t] = j), (codes[i * k + t] = code(w)))));
  const payload = new Uint8Array(5 * n * k + n);
  payload.set(new Uint8Array(index.buffer), 0);
  payload.set(codes, 4 * n * k);
  payload.set(Uint8Array.from(remainders.map(code)), 5 * n * k);
  return frame('TBLR', {layer: 1, head: 2, start, stop: start + n, top_k: k, num_key_tokens: numKeys, ...extra}, payload);
}

test('decodes a /long_map frame: its header, and its cells row-major', () => {
  const cells = Uint8Array.from([0, 255, code(0.25), code(0.5), 10, 20]);
  const header = {layer: 3, head: null, level: 1, block: 32, rows: [4, 6], cols: [8, 11], level_rows: 1024, level_cols: 1024, num_tokens: 32768, num_key_tokens: 32768};
  const map = decodeLongMap(frame('TBLM', header, cells));
  assert.equal(map.head, null);
  assert.deepEqual([map.layer, map.level, map.block, map.levelRows, map.levelCols], [3, 1, 32, 1024, 1024]);
  assert.deepEqual([map.rows, map.cols], [[4, 6], [8, 11]]);
  assert.deepEqual([...map.codes], [...cells]);
  const head = decodeLongMap(frame('TBLM', {...header, head: 5}, cells));
  assert.equal(head.head, 5);
});

test('a /long_map frame that is short, outside its level or over 2²⁰ cells is a FormatError naming it', () => {
  const header = {layer: 0, head: 0, level: 0, block: 64, rows: [0, 2], cols: [0, 2], level_rows: 512, level_cols: 512, num_tokens: 32768, num_key_tokens: 32768};
  assert.throws(() => decodeLongMap(frame('TBLM', header, new Uint8Array(3))), /payload of 3 bytes, expected 4/);
  assert.throws(() => decodeLongMap(frame('TBLM', {...header, rows: [511, 513]}, new Uint8Array(4))), /outside the level's 512 × 512/);
  assert.throws(() => decodeLongMap(frame('TBLM', {...header, rows: [0, 1025], cols: [0, 1024], level_rows: 2048, level_cols: 2048}, new Uint8Array(0))), /at most 1048576/);
  assert.throws(() => decodeLongMap(frame('TBLR', header, new Uint8Array(4))), FormatError);
  assert.throws(() => decodeLongMap(frame('TBLM', {...header, rows: [2, 1]}, new Uint8Array(4))), /rows is not a range/);
});

test('decodes a /long_rows frame: indices, weights, padding and remainders', () => {
  const buffer = rowsFrame(100, [[[99, 0.5], [0, 0.25]], [[31000, 0.81]]], 2, [0.25, 0.19], 32768);
  const rows = decodeLongRows(buffer);
  assert.deepEqual([rows.start, rows.stop, rows.topK, rows.layer, rows.head], [100, 102, 2, 1, 2]);
  assert.deepEqual([...rows.index], [99, 0, 31000, LONG_PAD]);
  assert.deepEqual([...rows.codes], [code(0.5), code(0.25), code(0.81), 0]);
  assert.deepEqual([...rows.remainder], [code(0.25), code(0.19)]);
});

test('a /long_rows frame naming a key outside the keys, or of more than 4,096 rows, is refused', () => {
  assert.throws(() => decodeLongRows(rowsFrame(0, [[[40, 1]]], 1, [0], 40)), /names key 40 of 40/);
  assert.throws(() => decodeLongRows(frame('TBLR', {layer: 0, head: 0, start: 0, stop: 4097, top_k: 1, num_key_tokens: 8}, new Uint8Array(0))), /at most 4096/);
  assert.throws(() => decodeLongRows(rowsFrame(0, [[[1, 1]]], 1, [0], 8).slice(0, -1)), /payload of/);
});

test('a distance profile whose layers, heads or bins disagree is refused', () => {
  const good: LongProfile = {
    group: 'self', num_layers: 1, num_heads: 2, num_tokens: 8, num_key_tokens: 8, top_k: 2, sink_tokens: 1, levels: [],
    bins: [[0, 1], [1, 2], [2, 4], [4, 8], [8, 16]], profile: [[[1, 0, 0, 0, 0], [0, 0, 0, 0.5, 0.5]]], sinks: [[[0], [0.5]]],
    local_share: [[1, 1]], sink_share: [[0, 0.5]],
  };
  assert.equal(checkLongProfile(good), good);
  assert.throws(() => checkLongProfile({...good, num_heads: 3}), /layer of 2 heads, not 3/);
  assert.throws(() => checkLongProfile({...good, bins: good.bins.slice(1)}), /head of 5 bins, not 4/);
});

test('the head and model views open a long example in a window around the locked token, else the brush, else its start', () => {
  const choice = {zoom: null, brush: null, window: null};
  assert.deepEqual(windowOf(32768, choice, [20000]), [19744, 20256]);
  assert.deepEqual(windowOf(32768, choice, [3]), [0, 512]); // kept inside the example
  assert.deepEqual(windowOf(32768, choice, [32767]), [32256, 32768]);
  assert.deepEqual(windowOf(32768, {...choice, brush: [30000, 30100]}, []), [29794, 30306]);
  assert.deepEqual(windowOf(32768, choice, []), [0, 512]);
  assert.deepEqual(windowOf(32768, {...choice, window: 1000}, [20000]), [1000, 1512]); // moved by the user
  assert.deepEqual(windowOf(300, choice, [200]), [0, 300]); // a group shorter than a window
  assert.equal(movedWindow(32768, [1000, 1512], 256), 1256);
  assert.equal(movedWindow(32768, [32000, 32512], 512), 32256);
  assert.equal(movedWindow(32768, [100, 612], -256), 0);
});

const LEVELS = [
  {block: 64, rows: 512, cols: 512},
  {block: 32, rows: 1024, cols: 1024},
  {block: 16, rows: 2048, cols: 2048},
];

test('a zoom picks the coarsest level whose cells are at most 1.5 px wide, within 2²⁰ visible cells', () => {
  const N = 32768;
  assert.equal(levelFor(LEVELS, mapView(null, N, N), 600), 0); // 512 cells on 600 px
  assert.equal(levelFor(LEVELS, mapView(null, N, N), 800), 1); // 512 cells on 800 px: 1.56 px each
  assert.equal(levelFor(LEVELS, mapView({k: 2, x: 0, y: 0}, N, N), 600), 1); // 256 cells of level 0, 512 of level 1
  assert.equal(levelFor(LEVELS, mapView({k: 2, x: 0, y: 0}, N, N), 400), 1); // 512 cells of level 1 on 400 px
  assert.equal(levelFor(LEVELS, mapView({k: 4, x: 8192, y: 8192}, N, N), 600), 2);
  assert.equal(levelFor(LEVELS, mapView({k: 64, x: 16000, y: 16000}, N, N), 600), 2); // deeper than the finest: the finest
  // 1,100 px would want level 2 at zoom 2 (1,024 cells of 16 tokens), but 1,024² cells visible is the most
  assert.equal(visibleCells(LEVELS[2], mapView({k: 2, x: 0, y: 0}, N, N)), 1024 * 1024);
  assert.equal(levelFor(LEVELS, mapView({k: 1.9, x: 0, y: 0}, N, N), 1100), 1); // 1,078² cells of level 2: over 2²⁰
});

test('a zoomed view fetches only the aligned tiles that cover it, each at most 2²⁰ cells', () => {
  const view = mapView({k: 8, x: 10000, y: 20000}, 32768, 32768); // keys 10,000–14,096, queries 20,000–24,096
  assert.deepEqual(cellRange(LEVELS[2], view), {rows: [1250, 1506], cols: [625, 881]});
  const tiles = tilesFor(LEVELS[2], view);
  assert.deepEqual(tiles, [
    {rows: [1024, 1536], cols: [512, 1024]},
  ]);
  const wide = tilesFor(LEVELS[1], mapView(null, 32768, 32768));
  assert.equal(wide.length, 4);
  assert.ok(wide.every((t) => (t.rows[1] - t.rows[0]) * (t.cols[1] - t.cols[0]) <= 1 << 20));
  // The last tile of a level that does not divide evenly stops at its edge.
  assert.deepEqual(tilesFor({block: 64, rows: 600, cols: 600}, mapView(null, 38400, 38400)).at(-1), {rows: [512, 600], cols: [512, 600]});
});

test('a finer level is tinted as mass per coarsest block, so a region looks alike at every level', () => {
  const same = levelCodes(64, 64);
  assert.deepEqual([same[0], same[128], same[255]], [0, 128, 255]);
  const half = levelCodes(32, 64); // a cell of half the keys: twice its mass, capped at 1
  assert.ok(Math.abs(half[code(0.25)] - code(0.5)) <= 1);
  assert.equal(half[code(0.75)], 255);
});

test('zooms stay inside the map and deep zooms stop at 16 tokens a side', () => {
  assert.deepEqual(clampZoom({k: 0.5, x: -10, y: 5}, 1000, 1000), {k: 1, x: 0, y: 0});
  assert.equal(maxZoom(32768, 32768), 2048);
  assert.deepEqual(clampZoom({k: 1e6, x: 1e9, y: 0}, 32768, 32768), {k: 2048, x: 32752, y: 0});
  assert.deepEqual(clampZoom({k: 4, x: 30000, y: 100}, 32768, 32768), {k: 4, x: 24576, y: 100});
});

test('d3-zoom transforms and the URL zoom convert both ways over the map box', () => {
  const box = mapBox(800, 700, 32768, 32768);
  assert.deepEqual([box.x, box.y, box.side], [58, 26, 662]);
  const zoom = {k: 8, x: 4096, y: 12288};
  const t = transformOf(zoom, box);
  const back = zoomOf(t, box);
  assert.ok(Math.abs(back.k - 8) < 1e-9 && Math.abs(back.x - 4096) < 1e-6 && Math.abs(back.y - 12288) < 1e-6);
  assert.equal(keyX(box, zoom, 4096), box.x);
  assert.ok(Math.abs(queryY(box, zoom, 12288 + 4096) - (box.y + box.side)) < 1e-9);
  const at = tokenAt(box, zoom, box.x + box.side / 2, box.y + box.side / 4)!;
  assert.deepEqual([at.key, at.query], [4096 + 2048, 12288 + 1024]);
  assert.equal(tokenAt(box, zoom, box.x - 1, box.y), null);
  assert.deepEqual(transformOf(null, box), {k: 1, x: 0, y: 0});
  const plan = mapPlan(LEVELS, zoom, box);
  assert.equal(plan.level, 2);
  assert.equal(plan.background.length, 1); // the coarsest level whole: one tile
  assert.ok(plan.tiles.length >= 1 && plan.tiles.length <= 4);
});

test('a brush is the query range between two positions, at most 4,096 rows from where it began', () => {
  assert.deepEqual(brushRange(10.7, 3.2, 100), [3, 11]);
  assert.deepEqual(brushRange(5, 5, 100), [5, 6]);
  assert.deepEqual(brushRange(-4, 200, 100), [0, 100]);
  assert.deepEqual(brushRange(1000, 9000, 32768), [1000, 5096]);
  assert.deepEqual(brushRange(9000, 1000, 32768), [4905, 9001]);
});

test('the token list puts only the visible lines (and a few either side) in the DOM', () => {
  assert.deepEqual(visibleRows(0, 440, 22, 3000), [0, 24]);
  assert.deepEqual(visibleRows(22 * 1000, 440, 22, 3000), [996, 1024]);
  assert.deepEqual(visibleRows(22 * 2990, 440, 22, 3000), [2986, 3000]);
  const layout = textLayout(520, 32768);
  assert.equal(layout.perLine, 9);
  assert.equal(layout.lines, Math.ceil(32768 / 9));
});

test('brushed rows say which keys took their attention, and how much the kept keys hold', () => {
  const rows = decodeLongRows(rowsFrame(10, [[[31000, 0.64], [9, 0.25]], [[31000, 0.81], [10, 0.09]], [[31000, 0.49]]], 2, [0.09, 0.09, 0.49], 32768));
  const s = summariseRows(rows, 2);
  assert.equal(s.top[0].key, 31000);
  assert.ok(Math.abs(s.top[0].weight - (0.64 + 0.81 + 0.49) / 3) < 0.01);
  assert.equal(s.top[1].key, 9);
  assert.equal(s.top.length, 2);
  assert.ok(Math.abs(s.kept - (0.89 + 0.9 + 0.49) / 3) < 0.01);
  assert.ok(Math.abs(s.remainder - (0.09 + 0.09 + 0.49) / 3) < 0.01);
  assert.equal(s.mass.length, 32768);
  const bins = railBins(s.mass, 100);
  assert.equal(bins.key[Math.floor((31000 / 32768) * 100)], 31000);
  assert.equal(bins.key[0], 9);
});

test('axis ticks of a token range are round positions inside it', () => {
  assert.deepEqual(tokenTicks(0, 32768, 6), [0, 10000, 20000, 30000]);
  assert.deepEqual(tokenTicks(12290, 12300, 5), [12290, 12292, 12294, 12296, 12298]);
});

test('the Long view state (zoom, brush, window) survives its URL form', () => {
  const state = applyPatch(DEFAULT_STATE, {view: 'long', focus: {layer: 2, heads: [3]}, long: {zoom: {k: 8, x: 4096, y: 12288}, brush: [30000, 30064], window: 29800}});
  const params = encodeState(state);
  assert.deepEqual([params.view, params.lzoom, params.lbrush, params.lwin], ['long', '8,4096,12288', '30000:30064', '29800']);
  assert.deepEqual(decodeState(params), state);
  const bad = decodeState({lzoom: '0.5,1,2', lbrush: '9:3', lwin: '-1'});
  assert.deepEqual(bad.long, DEFAULT_STATE.long);
});
