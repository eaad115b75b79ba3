// A floating box of text next to the pointer. Its lines are set with textContent: token text and
// run names are data, never markup.

import {el} from './dom';

/** A tooltip line: plain text, or a colour key, a label and a value. */
export type TooltipLine = string | {color?: string; label: string; value?: string; strong?: boolean};

const OFFSET = 14; // px between the pointer and the box

export class Tooltip {
  readonly element: HTMLElement;

  /** `container` must be positioned (the box is placed in its coordinates). */
  constructor(private readonly container: HTMLElement) {
    this.element = el('div', {class: 'tooltip', attrs: {role: 'tooltip', 'data-tooltip': ''}});
    this.element.hidden = true;
    container.append(this.element);
  }

  /** Shows `lines` near the client point (x, y), kept inside the container. */
  show(clientX: number, clientY: number, lines: TooltipLine[]): void {
    this.element.replaceChildren(
      ...lines.map((line) => {
        if (typeof line === 'string') return el('div', {class: 'tooltip-line', text: line});
        return el('div', {class: `tooltip-line${line.strong ? ' tooltip-strong' : ''}`}, [
          line.color ? colorKey(line.color) : null,
          el('span', {class: 'tooltip-label', text: line.label}),
          line.value !== undefined ? el('span', {class: 'tooltip-value', text: line.value}) : null,
        ]);
      }),
    );
    this.element.hidden = false;
    const box = this.container.getBoundingClientRect();
    const width = this.element.offsetWidth;
    const height = this.element.offsetHeight;
    let x = clientX - box.left + OFFSET;
    let y = clientY - box.top + OFFSET;
    if (x + width > box.width - 4) x = Math.max(4, clientX - box.left - OFFSET - width);
    if (y + height > box.height - 4) y = Math.max(4, clientY - box.top - OFFSET - height);
    this.element.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
  }

  hide(): void {
    this.element.hidden = true;
  }

  get text(): string {
    return this.element.hidden ? '' : (this.element.textContent ?? '');
  }
}

function colorKey(color: string): HTMLElement {
  const key = el('span', {class: 'tooltip-key'});
  key.style.background = color;
  return key;
}
