// A vision–language example's image as the image view draws it: the cells of its finest pieces put
// together into one grid over the frame (Idefics3's tiles side by side; one piece for LLaVA,
// Qwen2-VL, PaliGemma), each cell naming its token; every other token of the sequence (text, and
// coarser pieces such as Idefics3's global view) becomes a chip. Pure: no DOM.

import type {ImageLayout, SequenceImage} from '../data/api';

/** An image layout over a sequence: cell c of the grid (row-major) is token `cellTokens[c]`; the
 * chips are the other tokens, in sequence order. `prefix_tokens` is 0: nothing precedes the cells. */
export interface SequenceLayout extends ImageLayout {
  cellTokens: Int32Array;
  chipTokens: number[];
  chipNames: string[];
  /** which image of the example */
  index: number;
}

/** The image of the example holding token `token`, or -1 for a text token. */
export function imageOfToken(images: readonly SequenceImage[], token: number): number {
  return images.findIndex((image) => image.pieces.some((p) => token >= p.span[0] && token < p.span[1]));
}

/** Image `index` of an example of `tokens` as one grid and chips, or an error message when its
 * finest pieces do not tile the frame (a layout the view cannot draw). */
export function sequenceLayout(images: readonly SequenceImage[], index: number, tokens: readonly string[]): SequenceLayout | string {
  const image = images[index];
  if (!image) return `the example has no image ${index}`;
  const cell = (p: SequenceImage['pieces'][number]) => [(p.box[2] - p.box[0]) / p.grid[0], (p.box[3] - p.box[1]) / p.grid[1]];
  const finest = Math.min(...image.pieces.map((p) => cell(p)[0] * cell(p)[1]));
  const fine = image.pieces.filter((p) => Math.abs(cell(p)[0] * cell(p)[1] - finest) < 1e-9);
  const [ch, cw] = cell(fine[0]);
  const rows = Math.round(image.size[0] / ch);
  const cols = Math.round(image.size[1] / cw);
  const cellTokens = new Int32Array(rows * cols).fill(-1);
  for (const p of fine) {
    const [r0, c0] = [Math.round(p.box[0] / ch), Math.round(p.box[1] / cw)];
    for (let r = 0; r < p.grid[0]; r++)
      for (let c = 0; c < p.grid[1]; c++) {
        const at = (r0 + r) * cols + c0 + c;
        if (r0 + r >= rows || c0 + c >= cols || cellTokens[at] !== -1) return `the pieces of image ${index} overlap or leave its frame`;
        cellTokens[at] = p.span[0] + r * p.grid[1] + c;
      }
  }
  if (cellTokens.includes(-1)) return `the finest pieces of image ${index} do not cover its frame`;
  const inCells = new Set(cellTokens);
  const coarse = new Map<number, string>();
  for (const p of image.pieces)
    if (!fine.includes(p))
      for (let t = p.span[0]; t < p.span[1]; t++) coarse.set(t, `${p.name ?? 'view'} r${Math.floor((t - p.span[0]) / p.grid[1])}c${(t - p.span[0]) % p.grid[1]}`);
  const other = new Set(images.flatMap((m, i) => (i === index ? [] : m.pieces.flatMap((p) => Array.from({length: p.span[1] - p.span[0]}, (_, k) => p.span[0] + k)))));
  const chipTokens: number[] = [];
  const chipNames: string[] = [];
  tokens.forEach((text, t) => {
    if (inCells.has(t) || other.has(t)) return; // other images' tokens: shown when their image is
    chipTokens.push(t);
    chipNames.push(coarse.get(t) ?? text);
  });
  return {grid: [rows, cols], patch_size: [ch, cw], prefix_tokens: 0, prefix_names: [], cellTokens, chipTokens, chipNames, index};
}
