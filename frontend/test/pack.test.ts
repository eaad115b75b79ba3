// The pack of exported files and notebook outputs (http_api.md, "Exported files and notebook
// outputs: the pack"): its two text encodings, its checks, its KEYs, and the client answering
// from it, whole groups joined from their layers.

import assert from 'node:assert/strict';
import {test} from 'node:test';
import zlib from 'node:zlib';
import {Api, ApiError, type ExampleInfo, type Examples} from '../src/data/api';
import {decodeAttention, joinAttention, readRow, type Attention} from '../src/data/decode';
import {decodeQueryKey, joinQueryKey, keyVectors, queryVectors, type QueryKey} from '../src/data/decode_qk';
import {packBytes, packKey, packTransport, PackError, parsePack, readPack, type PackType} from '../src/data/pack';
import {EmbedHost, optionParams} from '../src/app/embed_host';
import {fixture} from './fixtures';

// ---- the writer's side, written here from the contract ----

/** WHATWG's windows-1252, bytes 0x80–0x9F (the spec's index; the others are U+0000–U+00FF). */
const WINDOWS_1252 = '€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8DŽ\x8F\x90‘’“”•–—˜™š›œ\x9DžŸ';
const decodeCp1252 = (bytes: Uint8Array) => Array.from(bytes, (b) => (b >= 0x80 && b < 0xa0 ? WINDOWS_1252[b - 0x80] : String.fromCharCode(b))).join('');

/** The page's text of a `latin1` pack as a browser reads it: escaped, then decoded as windows-1252. */
function latin1Text(bytes: Uint8Array): string {
  const out: number[] = [];
  for (const b of bytes) {
    if (b === 0x00 || b === 0x0d || b === 0x3c || b === 0x7e) out.push(0x7e, b ^ 0x40);
    else out.push(b);
  }
  return decodeCp1252(Uint8Array.from(out));
}

const base64Text = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64').replace(/.{76}/g, '$&\n');

/** A pack of answers: KEY -> [body, type]. */
function pack(answers: Record<string, [Uint8Array | object, PackType]>, runOrder: string[] = [], version = 1): Uint8Array {
  const entries: Record<string, [number, number, PackType]> = {};
  const bodies: Uint8Array[] = [];
  let offset = 0;
  for (const [key, [body, type]] of Object.entries(answers)) {
    const bytes = body instanceof Uint8Array ? body : new TextEncoder().encode(JSON.stringify(body));
    entries[key] = [offset, bytes.length, type];
    bodies.push(bytes);
    offset += bytes.length;
  }
  const index = new TextEncoder().encode(JSON.stringify({entries, run_order: runOrder, title: 't', source: 's'}));
  const preamble = new Uint8Array(12);
  preamble.set([0x54, 0x42, 0x41, 0x50]); // TBAP
  new DataView(preamble.buffer).setUint32(4, version, true);
  new DataView(preamble.buffer).setUint32(8, index.length, true);
  return Buffer.concat([preamble, index, ...bodies]);
}

const gzip = (bytes: Uint8Array) => new Uint8Array(zlib.gzipSync(bytes));

/** A blob (`TBAT`, `TBQK`) of a header and payload parts, as the writer frames it. */
function blob(magic: string, header: object, parts: ArrayBufferView[]): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Buffer.concat([json, Buffer.alloc((8 - ((12 + json.length) % 8)) % 8, ' ')]);
  const head = new Uint8Array(12);
  head.set(Array.from(magic, (c) => c.charCodeAt(0)));
  new DataView(head.buffer).setUint32(4, 2, true);
  new DataView(head.buffer).setUint32(8, padded.length, true);
  return Buffer.concat([head, padded, ...parts.map((p) => new Uint8Array(p.buffer, p.byteOffset, p.byteLength))]);
}

/** One layer of a whole-group attention fixture, as `/attention?layer=` serves it. */
function attentionLayerBlob(a: Attention, l: number): Uint8Array {
  const perLayer = a.codes.length / a.numLayers;
  const codes = a.codes.subarray(l * perLayer, (l + 1) * perLayer);
  const keys = a.keys?.subarray(l * perLayer, (l + 1) * perLayer);
  return blob('TBAT', {...a.header, num_layers: 1, first_layer: l}, keys ? [keys, codes] : [codes]);
}

/** One layer of a whole-group q/k fixture, as `/qk?layer=` serves it (its values as the decoder holds them: float32). */
function queryKeyLayerBlob(qk: QueryKey, l: number): Uint8Array {
  const q = qk.query.length / qk.numLayers;
  const k = qk.key.length / qk.numLayers;
  const rules = {softcap: [qk.softcap[l]], sliding_window: [qk.slidingWindow[l]], sinks: [qk.sinks[l]], attention_chunk: [qk.attentionChunk[l]],
    bidirectional_spans: [qk.bidirectionalSpans[l]], key_bias: [qk.keyBias[l]], relative_bias: [qk.relativeBias[l]]};
  return blob('TBQK', {...qk.header, ...rules, dtype: 'float32', num_layers: 1, first_layer: l, scaling: [qk.scaling[l]]}, [qk.query.subarray(l * q, (l + 1) * q), qk.key.subarray(l * k, (l + 1) * k)]);
}

const bufferOf = (bytes: Uint8Array) => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;

const ALL_BYTES = Uint8Array.from({length: 256}, (_, b) => b);

// ---- KEYs ----

test('a KEY is the route, then its parameters sorted by name, values encoded as encodeURIComponent does', () => {
  assert.equal(packKey('attention', {run: 'train', tag: 'probe', step: 100, example: 0, layer: 3}), 'attention?example=0&layer=3&run=train&step=100&tag=probe');
  assert.equal(packKey('examples', {run: 'a b/c&d=é', tag: "x-_.!~*'()", step: 0}), "examples?run=a%20b%2Fc%26d%3D%C3%A9&step=0&tag=x-_.!~*'()");
  assert.equal(packKey('compare', {tag: 't', run_a: 'r', step_a: 1, run_b: 'r', step_b: 2, group: 'cross'}), 'compare?group=cross&run_a=r&run_b=r&step_a=1&step_b=2&tag=t');
  assert.equal(packKey('tags', {}), 'tags?');
});

// ---- the two encodings and their checks ----

test('every byte value comes back through the latin1 escape and windows-1252', () => {
  const bytes = Uint8Array.from({length: 4 * 256}, (_, i) => (i * 7 + (i >> 8)) & 0xff); // each value, in several neighbourhoods
  const text = latin1Text(bytes);
  assert.ok(!/[\x00\r<]/.test(text), 'no NUL, CR or < reaches the page');
  assert.deepEqual(packBytes(text, 'latin1', String(bytes.length)), bytes);
  assert.deepEqual(packBytes(latin1Text(ALL_BYTES), 'latin1', '256'), ALL_BYTES);
  // 0x7E escapes, 0x80 is U+20AC in the page: both map back
  assert.deepEqual(packBytes('~>~@~M~|\u20ac\x81', 'latin1', '6'), Uint8Array.from([0x7e, 0x00, 0x0d, 0x3c, 0x80, 0x81]));
});

test('every byte value comes back through base64, line breaks and all', () => {
  assert.deepEqual(packBytes(base64Text(Uint8Array.from([...ALL_BYTES, ...ALL_BYTES])), 'base64', '512'), Uint8Array.from([...ALL_BYTES, ...ALL_BYTES]));
});

test('a page relabelled as UTF-8, a changed length or a foreign character says so and what to do', () => {
  const bytes = Uint8Array.from([0x1f, 0x8b, 0xe9, 0x80]);
  // A UTF-8 reading turns the invalid bytes into U+FFFD.
  const asUtf8 = new TextDecoder('utf-8').decode(bytes);
  assert.throws(() => packBytes(asUtf8, 'latin1', '4'), (e: Error) => e instanceof PackError && /read as UTF-8/.test(e.message) && /--encoding base64/.test(e.message));
  assert.throws(() => packBytes(latin1Text(bytes), 'latin1', '5'), /is 4 bytes, not the 5 it was written with.*windows-1252/);
  assert.throws(() => packBytes('ab\u4e00', 'latin1', '3'), /U\+4E00, which is no byte of windows-1252/);
  assert.throws(() => packBytes('ab~', 'latin1', '2'), /ends inside an escape/);
  assert.throws(() => packBytes('!!!!', 'base64', '3'), /not valid base64/);
  assert.throws(() => packBytes('', 'utf16', '0'), /data-encoding "utf16"/);
  assert.throws(() => packBytes('', 'base64', undefined), /no data-bytes/);
});

test('a pack reads back from either encoding: its index, run order and answers', async () => {
  const bytes = gzip(pack({'tags?': [{train: {}}, 'json']}, ['b', 'a']));
  for (const [text, encoding] of [[latin1Text(bytes), 'latin1'], [base64Text(bytes), 'base64']]) {
    const read = await readPack(text, encoding, String(bytes.length));
    assert.deepEqual(read.index.run_order, ['b', 'a']);
    assert.deepEqual(await new Api(packTransport(read)).tags(), {train: {}});
  }
});

test('bad gzip, a cut-short or changed one, a foreign magic or a newer version fail with what is wrong', async () => {
  const good = gzip(pack({}));
  const read = (bytes: Uint8Array) => readPack(base64Text(bytes), 'base64', String(bytes.length));
  await assert.rejects(read(Uint8Array.from([1, 2, 3, 4])), (e: Error) => e instanceof PackError && /not valid gzip/.test(e.message));
  await assert.rejects(read(good.subarray(0, good.length - 6)), /not valid gzip/);
  const changed = good.slice();
  changed[changed.length - 8] ^= 1; // the CRC
  await assert.rejects(read(changed), /not valid gzip/);
  await assert.rejects(read(gzip(new TextEncoder().encode('<html>not a pack</html>'))), /not a tb-attention pack/);
  await assert.rejects(read(gzip(pack({}, [], 2))), /pack version 2; this dashboard reads version 1/);
  const outside = pack({'tags?': [{}, 'json']});
  assert.throws(() => parsePack(outside.subarray(0, outside.length - 1)), /entry tags\? is not \[offset, length, type\] inside its payload/);
});

// ---- the client over a pack ----

const KEY = {run: 'train', tag: 'probe', step: 100, example: 5};
const at = (route: string, params: Record<string, string | number>) => packKey(route, params);

function examplesOf(...examples: Partial<ExampleInfo>[]): Examples {
  return {run: 'train', tag: 'probe', step: 100, wall_time: 0, examples: examples as ExampleInfo[]};
}

test('an answer comes with its route\'s content type; a request outside the export is a 404 that says so', async () => {
  const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47]);
  const transport = packTransport(parsePack(pack({[at('image', KEY)]: [png, 'png']})));
  const answer = await transport.fetch('image', KEY);
  assert.equal(answer.headers.get('Content-Type'), 'image/png');
  assert.deepEqual(new Uint8Array(await answer.arrayBuffer()), png);
  const api = new Api(transport);
  assert.equal((await api.image({...KEY, group: 'cross'})).size, 4); // /image takes no group
  await assert.rejects(api.examples('train', 'probe', 0), (e: Error) => e instanceof ApiError && e.status === 404 && e.message === 'not in this export: /examples (run train, tag probe, step 0)');
});

for (const name of ['dense', 'causal', 'topk']) {
  test(`a whole group is joined from its layers like the writer's whole blob (${name})`, async () => {
    const whole = decodeAttention(fixture(name).buffer);
    const layers = Array.from({length: whole.numLayers}, (_, l) => attentionLayerBlob(whole, l));
    const joined = joinAttention(layers.map((b) => decodeAttention(bufferOf(b))));
    assert.deepEqual([joined.firstLayer, joined.heldLayers, joined.numLayers], [0, whole.numLayers, whole.numLayers]);
    assert.deepEqual(joined.codes, whole.codes);
    assert.deepEqual(joined.keys, whole.keys);
    // and through the client: the layer count comes from /examples (a layer's blob counts itself)
    const answers: Record<string, [Uint8Array | object, PackType]> = {[at('examples', {run: 'train', tag: 'probe', step: 100})]: [examplesOf({index: 2}, {index: 5, num_layers: whole.numLayers}), 'json']};
    layers.forEach((b, l) => (answers[at('attention', {...KEY, layer: l})] = [b, 'binary']));
    const a = await new Api(packTransport(parsePack(pack(answers)))).attention(KEY);
    for (let l = 0; l < whole.numLayers; l++) {
      for (let h = 0; h < whole.numHeads; h++) for (let i = 0; i < whole.numTokens; i++) assert.deepEqual(readRow(a, l, h, i), readRow(whole, l, h, i));
    }
  });
}

test('layers that are not one group of one shape are not joined', () => {
  const whole = decodeAttention(fixture('dense').buffer);
  const [l0, l1] = [0, 1].map((l) => decodeAttention(bufferOf(attentionLayerBlob(whole, l))));
  assert.throws(() => joinAttention([l1, l0]), /layer 0 of the group: got layers 1\.\.1/);
  assert.throws(() => joinAttention([l0, {...l1, numHeads: 1}]), /layer 1 is not of the shape of layer 0/);
  assert.throws(() => joinAttention([]), /no layers/);
});

test('a whole group\'s query and key vectors are joined from their layers, scoring rules per layer', async () => {
  for (const name of ['qk', 'qk_float32', 'qk_no_dtype', 'qk_rules', 'qk_bias', 'qk_bias_cross', 'qk_spans']) {
    const whole = decodeQueryKey(fixture(name).buffer);
    const layers = Array.from({length: whole.numLayers}, (_, l) => queryKeyLayerBlob(whole, l));
    const joined = joinQueryKey(layers.map((b) => decodeQueryKey(bufferOf(b))));
    assert.deepEqual([joined.firstLayer, joined.numLayers], [0, whole.numLayers]);
    assert.deepEqual(joined.query, whole.query);
    assert.deepEqual(joined.key, whole.key);
    assert.deepEqual([joined.scaling, joined.softcap, joined.slidingWindow, joined.sinks], [whole.scaling, whole.softcap, whole.slidingWindow, whole.sinks]);
    const asJson = (qk: QueryKey) => JSON.stringify([qk.attentionChunk, qk.bidirectionalSpans, qk.keyBias, qk.relativeBias]); // (a blob's JSON header writes -0 as 0)
    assert.equal(asJson(joined), asJson(whole));
    const answers: Record<string, [Uint8Array | object, PackType]> = {[at('examples', {run: 'train', tag: 'probe', step: 100})]: [examplesOf({index: 5, num_layers: 99, groups: [{name: 'self', num_layers: whole.numLayers} as never]}), 'json']};
    layers.forEach((b, l) => (answers[at('qk', {...KEY, layer: l})] = [b, 'binary']));
    const qk = await new Api(packTransport(parsePack(pack(answers)))).queryKey(KEY);
    const last = whole.numLayers - 1;
    assert.deepEqual([queryVectors(qk, last, 3), keyVectors(qk, last, 3)], [queryVectors(whole, last, 3), keyVectors(whole, last, 3)]);
  }
});

test('a whole group of an example the export left out is a 404 naming it', async () => {
  const api = new Api(packTransport(parsePack(pack({[at('examples', {run: 'train', tag: 'probe', step: 100})]: [examplesOf({index: 2}, {index: 5}), 'json']}))));
  await assert.rejects(api.attention({...KEY, example: 0}), (e: Error) => e instanceof ApiError && e.status === 404 && /has no example 0/.test(e.message));
  await assert.rejects(api.attention({...KEY, group: 'cross'}), /has no example 5 with group cross/);
});

// ---- the embed host ----

test('the embed host keeps the state in memory and gives the pack\'s run order; nothing else changes it', async () => {
  const host = new EmbedHost({view: 'model', run: 'train'}, ['train', 'ckpt']);
  let called = 0;
  host.onDataReloaded(() => called++);
  host.onUrlChanged(() => called++);
  assert.deepEqual(host.readParams(), {view: 'model', run: 'train'});
  host.writeParams({view: 'head', step: '100'});
  assert.deepEqual(host.readParams(), {view: 'head', step: '100'});
  host.readParams().view = 'changed'; // a copy
  assert.equal(host.readParams().view, 'head');
  assert.deepEqual(await host.runOrder(), ['train', 'ckpt']);
  assert.equal(called, 0);
});

test('data-options params are taken in their URL form: strings, numbers as their text, the rest left out', () => {
  assert.deepEqual(optionParams({view: 'model', step: 100, layer: '2', heads: [0, 1], hide: true, bad: null}), {view: 'model', step: '100', layer: '2'});
  assert.deepEqual(optionParams(undefined), {});
});
