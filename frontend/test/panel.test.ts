import assert from 'node:assert/strict';
import {test} from 'node:test';

import type {ExampleInfo} from '../src/data/api';
import {examplePreview} from '../src/app/panel';

const base = {index: 0, num_layers: 1, num_heads: 1, num_tokens: 3, causal: false, encoding: 'dense', has_qk: false, segments: null, pos: null} as const;

test('an image example is listed by its patch grid and prefix tokens, not its patch names', () => {
  const example = {...base, tokens: ['[CLS]', 'r0c0', 'r0c1'], text: null,
    image: {grid: [1, 2], patch_size: [14, 14], prefix_tokens: 1, prefix_names: ['[CLS]']}} as unknown as ExampleInfo;
  assert.equal(examplePreview(example), 'image: 1 × 2 patches + [CLS]');
});

test('a text example is listed by its text; a logged text wins over the image summary', () => {
  const example = {...base, tokens: ['The', ' cat'], text: 'The  cat\n sat', image: null} as unknown as ExampleInfo;
  assert.equal(examplePreview(example), 'The cat sat');
  const named = {...base, tokens: ['[CLS]', 'r0c0', 'r0c1'], text: 'astronaut',
    image: {grid: [1, 2], patch_size: [14, 14], prefix_tokens: 1, prefix_names: ['[CLS]']}} as unknown as ExampleInfo;
  assert.equal(examplePreview(named), 'astronaut');
});

test('an example listed by its text cannot reverse or hide what it shows', () => {
  const spoof = {...base, tokens: ['x'], text: 'Open \u202eevil.exe\u202c\u200b now', image: null} as unknown as ExampleInfo;
  assert.equal(examplePreview(spoof), 'Open \\u202eevil.exe\\u202c\\u200b now');
});
