// The dashboard's look in one place: fonts and the colours of ink, lines and marks. Data colours
// (heads, runs, metric scales) live in model/colors.ts and model/metrics.ts.

export const FONT_FAMILY = 'Roboto, "Segoe UI", system-ui, -apple-system, "Helvetica Neue", Arial, sans-serif';


/** `weight size family`, e.g. font(600, 13) */
export function font(weight: number | null, size: number): string {
  return `${weight === null ? '' : `${weight} `}${size}px ${FONT_FAMILY}`;
}

export const FONT_TITLE = font(500, 12); // a figure's title
export const FONT_LABEL = font(null, 11); // token labels of small figures
export const FONT_SMALL = font(null, 10); // axes, legends, captions

export const INK = '#212121'; // text and the hovered mark
export const MUTED_INK = '#757575'; // secondary text
export const FAINT_INK = '#bdbdbd'; // disabled text, masked tokens, hover outlines
export const ACCENT = '#f57c00'; // TensorBoard's orange: the selection
export const BORDER = '#e0e0e0'; // frames around figures
export const GRID_LINE = '#eeeeee';
export const AXIS_LINE = '#bdbdbd';
export const MISSING_FILL = '#f1f1f1'; // a cell without a value
export const MISSING_MARK = '#bdbdbd'; // its slash
export const HIGHLIGHT_FILL = '#e8eaed'; // behind a focused token
export const HOVER_FILL = '#f5f5f5'; // behind a hovered row
export const NEUTRAL_MARK = '#9e9e9e'; // marks without a colour of their own (dots, bars)
export const PAPER = '#ffffff'; // the figures' background
