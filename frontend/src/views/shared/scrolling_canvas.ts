// A canvas that stays put over a tall scrolling area, so a view draws only what is visible.

import {el, frameThrottle} from '../../draw/dom';
import {CanvasPainter} from '../../draw/painter';

export class ScrollingCanvas {
  /** the scrolling element, to put in the view */
  readonly element: HTMLElement;
  readonly canvas: HTMLCanvasElement;
  width = 0;
  height = 0;
  private readonly spacer: HTMLElement;
  /** the canvas's place in the viewport, measured again only when it may have moved: reading it on
   * every mouse move would force a layout of the page per event. It moves without a fit when the
   * page around scrolls (a notebook's outputs) or reflows, so the pointer's entering and any scroll
   * of the page mark it stale. */
  private origin = new DOMRect();
  private stale = true;
  private revealed = '';
  private pending: {top: number; size: number} | null = null;

  constructor(figure: string, draw: () => void) {
    this.canvas = el('canvas', {class: 'figure', attrs: {'data-figure': figure}});
    this.spacer = el('div', {class: 'spacer'}, [this.canvas]);
    this.element = el('div', {class: 'scroller'}, [this.spacer]);
    this.element.addEventListener('scroll', frameThrottle(draw), {passive: true});
    const moved = () => (this.stale = true);
    this.canvas.addEventListener('mouseenter', moved);
    document.addEventListener('scroll', moved, {capture: true, passive: true}); // scroll does not bubble
  }

  get scrollTop(): number {
    return this.element.scrollTop;
  }

  /** Sizes the scrolling area for `contentHeight` px; `covered` px at the top of the canvas are
   * taken by fixed titles. Call it whenever the view's box or content changed. */
  fit(contentHeight: number, covered: number): void {
    this.width = this.element.clientWidth;
    this.height = this.element.clientHeight;
    this.spacer.style.height = `${Math.max(this.height, contentHeight)}px`;
    this.canvas.style.height = `${this.height}px`;
    const visible = this.height - covered;
    if (this.pending && visible > 0) {
      const {top, size} = this.pending;
      if (top < this.scrollTop || top + size > this.scrollTop + visible) this.element.scrollTop = Math.max(0, top - (visible - size) / 2);
      this.pending = null;
    }
    this.stale = true;
  }

  /** When what is locked (`key`) changed, brings content [top, top + size) into view at the next fit:
   * a token locked from the URL or the keyboard may lie outside the visible rows. */
  revealOnChange(key: string, top: number | null, size: number): void {
    if (key === this.revealed) return;
    this.revealed = key;
    this.pending = top === null ? null : {top, size};
  }

  /** A mouse event's position in canvas coordinates. */
  point(event: MouseEvent): {x: number; y: number} {
    if (this.stale) {
      this.origin = this.canvas.getBoundingClientRect();
      this.stale = false;
    }
    return {x: event.clientX - this.origin.left, y: event.clientY - this.origin.top};
  }

  painter(): CanvasPainter {
    return new CanvasPainter(this.canvas, this.width, this.height);
  }
}
