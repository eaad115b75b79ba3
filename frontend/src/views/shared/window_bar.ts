// The note and buttons over a long example's window in the head and model views: which tokens of
// how many are shown, and moving the window (the Long view shows the whole example).

import {el} from '../../draw/dom';
import {movedWindow} from '../../model/long';
import type {Store} from '../../state/store';
import type {LongWindow} from './example';

const count = (n: number) => n.toLocaleString('en-US');

export class WindowBar {
  readonly element: HTMLElement;
  private readonly note: HTMLElement;
  private readonly earlier: HTMLButtonElement;
  private readonly later: HTMLButtonElement;
  private window: LongWindow | undefined;

  constructor(private readonly store: Store) {
    this.note = el('span', {class: 'window-note', attrs: {'data-window': ''}});
    const move = (direction: number) => () => {
      const w = this.window;
      if (w) this.store.update({long: {window: movedWindow(w.total, [w.start, w.stop], (direction * (w.stop - w.start)) / 2)}});
    };
    this.earlier = el('button', {class: 'button', text: '◀', title: 'Show earlier tokens (half a window back)', attrs: {'data-control': 'window-earlier'}, on: {click: move(-1)}});
    this.later = el('button', {class: 'button', text: '▶', title: 'Show later tokens (half a window on)', attrs: {'data-control': 'window-later'}, on: {click: move(1)}});
    const long = el('button', {
      class: 'link-button',
      text: 'Long view',
      title: 'The whole example: its block map, top-k rows and distance profile',
      on: {click: () => this.store.update({view: 'long'})},
    });
    this.element = el('div', {class: 'control window-bar', title: 'A long example is shown in a window of its tokens'}, [this.earlier, this.note, this.later, long]);
    this.element.hidden = true;
  }

  set(window: LongWindow | undefined): void {
    this.window = window;
    this.element.hidden = !window;
    if (!window) return;
    this.note.textContent = `tokens ${count(window.start)}–${count(window.stop - 1)} of ${count(window.total)} (window)`;
    this.note.dataset.window = `${window.start}:${window.stop}`;
    this.earlier.disabled = window.start === 0;
    this.later.disabled = window.stop >= window.total;
  }
}
