// The one pointer helper: mouse events on a figure, in the figure's own coordinates, moves
// throttled to one per frame (unless asked otherwise).

import {frameThrottle} from '../draw/dom';

/** A point in CSS pixels from an element's top-left corner. */
export interface Point {
  x: number;
  y: number;
}

export interface PointerHandlers {
  /** moves come at most once per frame, unless `immediate` (figures whose hover is cheap and
   * that tests read right after a move: the head, model and neuron views) */
  immediate?: boolean;
  move?(at: Point, event: MouseEvent): void;
  leave?(): void;
  click?(at: Point, event: MouseEvent): void;
  dblclick?(at: Point, event: MouseEvent): void;
}

/** Where a mouse event falls on an element, in CSS pixels from its top-left corner. */
export function pointIn(element: Element, event: MouseEvent): Point {
  const box = element.getBoundingClientRect();
  return {x: event.clientX - box.left, y: event.clientY - box.top};
}

/** Listens to the pointer on `element`; `locate` maps an event to figure coordinates (default: the
 * element's own; a scrolling figure adds its scroll offset). */
export function onPointer(element: HTMLElement, handlers: PointerHandlers, locate: (event: MouseEvent) => Point = (e) => pointIn(element, e)): void {
  const {move, leave, click, dblclick, immediate} = handlers;
  const onMove = (event: MouseEvent) => move!(locate(event), event);
  if (move) element.addEventListener('mousemove', immediate ? onMove : frameThrottle(onMove));
  if (leave) element.addEventListener('mouseleave', () => leave());
  if (click) element.addEventListener('click', (event) => click(locate(event), event));
  if (dblclick) element.addEventListener('dblclick', (event) => dblclick(locate(event), event));
}

/** True when a click asks to add to a selection rather than replace it. */
export function isAdditive(event: MouseEvent): boolean {
  return event.shiftKey || event.metaKey || event.ctrlKey;
}
