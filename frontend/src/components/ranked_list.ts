// A list of heads, best first: one row per head with its values, a click or Enter chooses it,
// hovering it highlights it in the figure next to the list.

import {el} from '../draw/dom';
import type {HeadRef} from '../state/state';

/** One cell of a row: text and an optional class (e.g. `rank-value`, `rank-change up`). */
export interface RankedCell {
  text: string;
  class?: string;
}

export interface RankedRow {
  head: HeadRef;
  cells: RankedCell[];
  /** the row's tooltip */
  title: string;
  /** a bar after the cells: its length as a fraction of the track, and its direction */
  bar?: {fraction: number; down: boolean};
}

export interface RankedListHandlers {
  /** a click (`add`: with shift) or Enter on a row */
  choose(head: HeadRef, add: boolean): void;
  /** a double click on a row */
  open?(head: HeadRef): void;
  hover(head: HeadRef | null): void;
}

export class RankedList {
  readonly element: HTMLElement;

  /** `control`: the list's `data-control` name; `rowClass`: the class of its rows. */
  constructor(
    control: string,
    private readonly rowClass: string,
    private readonly headerClass: string,
    private readonly handlers: RankedListHandlers,
  ) {
    this.element = el('div', {class: `rank-list ${rowClass === 'change-row' ? 'change-list' : ''}`.trim(), attrs: {role: 'list', 'data-control': control}});
  }

  /** Shows a header row and the rows; `picked` heads are marked selected; `empty` is said when
   * there are no rows. */
  set(header: RankedCell[], rows: RankedRow[], picked: readonly HeadRef[] = [], empty = ''): void {
    const chosen = new Set(picked.map(([l, h]) => `${l}.${h}`));
    const {choose, open, hover} = this.handlers;
    const items = rows.map((row, rank) => {
      const [l, h] = row.head;
      const name = `${l}.${h}`;
      const cells = row.cells.map((c) => el('span', {class: c.class, text: c.text}));
      if (row.bar) {
        const bar = el('span', {class: `change-bar ${row.bar.down ? 'down' : 'up'}`});
        bar.style.width = `${Math.round(row.bar.fraction * 100)}%`;
        cells.push(el('span', {class: 'change-bar-track'}, [bar]));
      }
      return el('div', {
        class: this.rowClass,
        attrs: {role: 'listitem', tabindex: '0', 'data-head': name, 'data-rank': String(rank), 'aria-selected': String(chosen.has(name))},
        title: row.title,
        on: {
          click: (event) => choose([l, h], (event as MouseEvent).shiftKey),
          dblclick: () => open?.([l, h]),
          keydown: (event) => {
            if ((event as KeyboardEvent).key === 'Enter') choose([l, h], false);
          },
          mouseenter: () => hover([l, h]),
          mouseleave: () => hover(null),
        },
      }, [el('span', {class: 'rank-head-name', text: `L${l} H${h}`}), ...cells]);
    });
    const head = el('div', {class: `${this.rowClass} ${this.headerClass}`}, header.map((c) => el('span', {class: c.class, text: c.text})));
    this.element.replaceChildren(head, ...items);
    if (!items.length && empty) this.element.append(el('div', {class: 'hint rank-empty', text: empty}));
  }

  /** Shows only a message (loading, or why there is nothing to rank). */
  message(text: string): void {
    this.element.replaceChildren(el('div', {class: 'hint rank-empty', text}));
  }
}
