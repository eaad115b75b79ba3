// Token labels for a figure: displayed as text (byte-level tokens decoded), shortened to a number
// of characters and, when `maxWidth` is given, to a width in `font`.

import {textWidth} from '../draw/painter';
import {displayToken, isByteLevel, truncate} from '../model/tokens';

export interface TokenLabels {
  labels: string[];
  /** the widest label, px */
  width: number;
}

export function tokenLabels(tokens: readonly string[], font: string, maxChars: number, maxWidth = Infinity): TokenLabels {
  const byteLevel = isByteLevel(tokens);
  const labels = tokens.map((t) => {
    let label = truncate(displayToken(t, byteLevel), maxChars);
    for (let max = maxChars - 1; max > 1 && textWidth(label, font) > maxWidth; max--) label = truncate(label, max);
    return label;
  });
  return {labels, width: labels.reduce((max, label) => Math.max(max, textWidth(label, font)), 0)};
}
