// Where the model view's thumbnails lie, and which layers a scroll position shows: pure, so the
// view fetches exactly the layers it draws (plus a few ahead) and tests can check the maths.

export const LABEL_WIDTH = 40; // px: the layer labels on the left
export const HEADER_HEIGHT = 28; // px: the head labels on top
export const PAD = 12; // px around the grid
export const GAP = 6; // px between thumbnails
const MIN_THUMB = 24; // px: many heads shrink thumbnails rather than scroll sideways
const MAX_THUMB = 150; // px

/** The grid of a view `width` px wide: thumbnail side, left edge of the layer labels. */
export function modelGrid(width: number, numHeads: number): {thumb: number; left: number} {
  const fit = Math.floor((width - LABEL_WIDTH - 2 * PAD) / Math.max(1, numHeads)) - GAP;
  const thumb = Math.max(MIN_THUMB, Math.min(MAX_THUMB, fit));
  const gridWidth = LABEL_WIDTH + numHeads * (thumb + GAP);
  return {thumb, left: Math.max(PAD, Math.floor((width - gridWidth) / 2))};
}

/** Height of the scrolling content for `numLayers` rows of thumbnails. */
export function contentHeight(numLayers: number, thumb: number): number {
  return HEADER_HEIGHT + numLayers * (thumb + GAP) + 2 * PAD;
}

/** The layers [first, last] whose rows meet a canvas `height` px tall scrolled by `scrollTop`
 * (the header covers its top), widened by `ahead` layers below (and `behind` above). */
export function visibleLayers(scrollTop: number, height: number, thumb: number, numLayers: number, ahead = 0, behind = 0): {first: number; last: number} {
  const cell = thumb + GAP;
  // Row l spans [l * cell, l * cell + thumb) below the header and the top pad, moved up by scrollTop.
  const first = Math.max(0, Math.floor((scrollTop - PAD) / cell) - behind);
  const last = Math.min(numLayers - 1, Math.floor((scrollTop + height - HEADER_HEIGHT - PAD) / cell) + ahead);
  return {first: Math.min(first, Math.max(0, last)), last};
}

/** The layers of a range, in order. */
export function layerRange({first, last}: {first: number; last: number}): number[] {
  return Array.from({length: Math.max(0, last - first + 1)}, (_, i) => first + i);
}
