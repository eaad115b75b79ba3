// Readable labels for tokens of any tokenizer; the exact token stays available (exactToken).

// GPT-2's byte-level BPE writes each byte as a printable character: bytes that are printable
// Latin-1 stand for themselves, the 68 others (controls, space, ...) for U+0100 + n, in order.
const BYTE_OF_CHAR = new Map<number, number>();
{
  let next = 0;
  for (let byte = 0; byte < 256; byte++) {
    const printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174;
    BYTE_OF_CHAR.set(printable ? byte : 256 + next++, byte);
  }
}

const SPACE_MARK = '·'; // U+00B7, shown for a leading or trailing space
const CONTROL_MARKS: Record<string, string> = {'\n': '↵', '\t': '⇥', '\r': '␍'};

const BYTE_LEVEL_SHARE = 0.5; // of tokens that must read as byte-level for the example to be so

/** True when the tokens look GPT-2 byte-level encoded (a space or newline byte shows as Ġ / Ċ). */
export function isByteLevel(tokens: readonly string[]): boolean {
  if (!tokens.some((t) => /[\u0120\u010a]/.test(t))) return false;
  return tokens.filter((t) => byteLevelBytes(t) !== null).length >= BYTE_LEVEL_SHARE * tokens.length;
}

function byteLevelBytes(token: string): Uint8Array | null {
  const bytes = new Uint8Array(token.length);
  for (let t = 0; t < token.length; t++) {
    const byte = BYTE_OF_CHAR.get(token.charCodeAt(t));
    if (byte === undefined) return null;
    bytes[t] = byte;
  }
  return bytes;
}

const UTF8 = new TextDecoder('utf-8', {fatal: true});

/** The text a byte-level token stands for; a token that is part of a multi-byte character keeps
 * its undecodable bytes as \xNN, and one that is not byte-level (a special token with a raw
 * space, say) stays as it is. */
export function decodeByteLevel(token: string): string {
  const bytes = byteLevelBytes(token);
  if (bytes === null) return token;
  try {
    return UTF8.decode(bytes);
  } catch {
    let out = '';
    for (const byte of bytes) out += byte < 0x80 ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
    return out;
  }
}

// Characters that change how text around them displays but show nothing themselves: bidi overrides
// and isolates (U+202E makes "\u202eevil.exe" read "exe.live"), zero-width spaces and joiners, the BOM,
// soft hyphens, line and paragraph separators. A token made of them would spoof another or show blank.
const INVISIBLE = /[\p{Cf}\p{Zl}\p{Zp}]/u;

/** A token as shown: spaces at either end, newlines, tabs, controls and format characters made visible. */
export function displayToken(token: string, byteLevel = false): string {
  const text = byteLevel ? decodeByteLevel(token) : token;
  if (text === '') return '∅';
  let out = '';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (char in CONTROL_MARKS) out += CONTROL_MARKS[char];
    else if (code < 0x20 || (code >= 0x7f && code < 0xa0) || INVISIBLE.test(char)) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += char;
  }
  const lead = out.length - out.trimStart().length;
  const trail = out.trimStart().length - out.trim().length;
  if (lead === out.length) return SPACE_MARK.repeat(out.length);
  return SPACE_MARK.repeat(lead) + out.slice(lead, out.length - trail) + SPACE_MARK.repeat(trail);
}

/** Running text (an example's input) with its format characters shown as escapes, as displayToken shows them. */
export function visibleText(text: string): string {
  return text.replace(/[\p{Cf}\p{Zl}\p{Zp}]/gu, (char) => `\\u${char.codePointAt(0)!.toString(16).padStart(4, '0')}`);
}

/** The token exactly as logged, quoted and escaped (for tooltips and the inspector): JSON, with format
 * characters escaped too (JSON.stringify leaves a bidi override to reorder the quotes around it). */
export function exactToken(token: string): string {
  return visibleText(JSON.stringify(token));
}

/** Shortens a label to at most `max` characters (code points) with an ellipsis. */
export function truncate(label: string, max: number): string {
  const chars = Array.from(label);
  return chars.length <= max ? label : chars.slice(0, max - 1).join('') + '…';
}

/** A token as it reads in running text: its characters, and whether a space comes before it. */
export interface Piece {
  text: string;
  space: boolean;
}

/** Tokens as running text, for drawing a sentence: byte-level BPE (Ġ), SentencePiece (▁) and
 * WordPiece (##) markers become spaces or joins; other tokenizers get a space between tokens.
 * Special tokens and controls stay visible (displayToken). */
export function readingPieces(tokens: readonly string[]): Piece[] {
  const byteLevel = isByteLevel(tokens);
  const sentencePiece = !byteLevel && tokens.some((t) => t.startsWith('\u2581'));
  const wordPiece = !byteLevel && !sentencePiece && tokens.some((t) => t.startsWith('##'));
  return tokens.map((token, i) => {
    let text = byteLevel ? decodeByteLevel(token) : token;
    let space = i > 0;
    if (byteLevel || sentencePiece) {
      const marker = sentencePiece ? '\u2581' : ' ';
      space = text.startsWith(marker) && text.length > 1;
      if (space) text = text.slice(1);
      if (sentencePiece) text = text.replaceAll('\u2581', ' ');
    } else if (wordPiece && token.startsWith('##') && token.length > 2) {
      space = false;
      text = token.slice(2);
    }
    // A token of spaces alone (a digit-by-digit tokenizer's " ") reads as the spaces it is.
    return {text: /^ +$/.test(text) ? text : displayToken(text), space};
  });
}
