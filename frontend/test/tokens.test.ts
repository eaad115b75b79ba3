import assert from 'node:assert/strict';
import {test} from 'node:test';
import {decodeByteLevel, displayToken, exactToken, isByteLevel, readingPieces, truncate} from '../src/model/tokens';

test('spaces at the ends of a token become visible; inner spaces stay', () => {
  assert.equal(displayToken(' cat'), '·cat');
  assert.equal(displayToken('a b '), 'a b·');
  assert.equal(displayToken('  '), '··');
});

test('newlines, tabs and control characters are shown, not lost', () => {
  assert.equal(displayToken('\n'), '↵');
  assert.equal(displayToken('a\tb'), 'a⇥b');
  assert.equal(displayToken('\u0007'), '\\u0007');
  // Format characters: a bidi override cannot reverse what follows, a zero-width token is not blank.
  assert.equal(displayToken('\u202eevil.exe\u202c'), '\\u202eevil.exe\\u202c');
  assert.equal(displayToken('\u200b'), '\\u200b');
  assert.equal(displayToken('a\u200db\ufeff\u2066'), 'a\\u200db\\ufeff\\u2066');
  assert.equal(displayToken('caf\u00e9 \u4e2d'), 'café 中');  // letters of any script stay as they are
  assert.equal(displayToken(''), '∅');
});

test('GPT-2 byte-level tokens read as text: Ġ is a space, Ċ a newline, multi-byte characters decode', () => {
  const tokens = ['The', 'Ġcat', 'Ċ', 'Ã©', 'âĢĻ'];
  assert.ok(isByteLevel(tokens));
  assert.equal(displayToken('Ġcat', true), '·cat');
  assert.equal(displayToken('Ċ', true), '↵');
  assert.equal(decodeByteLevel('Ã©'), 'é');
  assert.equal(decodeByteLevel('âĢĻ'), '\u2019');
  assert.equal(decodeByteLevel('âĢ'), '\\xe2\\x80'); // half of a character keeps its bytes
  assert.ok(!isByteLevel(['The', ' cat', '日本']));
  // A token with a raw space (not byte-level) among byte-level ones stays as logged.
  const mixed = ['<|endoftext|>', 'Hello', '<img src=x>', 'Ġworld', 'Ġ!', 'Ġa', 'Ġb', 'Ġc', 'Ġd', 'Ġe'];
  assert.ok(isByteLevel(mixed));
  assert.deepEqual(mixed.map((t) => displayToken(t, true)).slice(2, 4), ['<img src=x>', '·world']);
});

test('any Unicode token is kept; the exact token is available quoted', () => {
  assert.equal(displayToken('日本語'), '日本語');
  assert.equal(displayToken('<img src=x onerror=alert(1)>'), '<img src=x onerror=alert(1)>');
  assert.equal(exactToken(' a"\n'), '" a\\"\\n"');
  assert.equal(exactToken('\u202eexe'), '"\\u202eexe"');  // still the JSON of the token, its override escaped
  assert.equal(JSON.parse(exactToken('\u202eexe')), '\u202eexe');
});

test('long labels are shortened by code points, never splitting a character', () => {
  assert.equal(truncate('abcdef', 4), 'abc…');
  assert.equal(truncate('😀😀😀😀', 3), '😀😀…');
  assert.equal(truncate('abc', 3), 'abc');
});

test('tokens read as running text: byte-level spaces, WordPiece joins, other tokens spaced', () => {
  assert.deepEqual(readingPieces(['The', 'Ġcat', 'Ġsat', 'ting', '.']), [
    {text: 'The', space: false},
    {text: 'cat', space: true},
    {text: 'sat', space: true},
    {text: 'ting', space: false},
    {text: '.', space: false},
  ]);
  assert.deepEqual(readingPieces(['[CLS]', 'play', '##ing', '[SEP]']).map((p) => [p.text, p.space]), [['[CLS]', false], ['play', true], ['ing', false], ['[SEP]', true]]);
  assert.deepEqual(readingPieces(['a', 'b']).map((p) => p.space), [false, true]);
  assert.equal(readingPieces(['x', 'Ġ<script>', 'Ċ'])[2].text, '↵');
});
