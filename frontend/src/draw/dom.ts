// A small element builder. Text is always set with textContent: tokens and run names are data.

type Child = Node | string | null | undefined | false;

export interface ElementOptions {
  class?: string;
  text?: string;
  title?: string;
  attrs?: Record<string, string>;
  on?: {[event: string]: (event: Event) => void};
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  options: ElementOptions = {},
  children: Child[] = [],
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (options.class) element.className = options.class;
  if (options.text !== undefined) element.textContent = options.text;
  if (options.title !== undefined) element.title = options.title;
  for (const [name, value] of Object.entries(options.attrs ?? {})) element.setAttribute(name, value);
  for (const [name, handler] of Object.entries(options.on ?? {})) element.addEventListener(name, handler);
  for (const child of children) if (child) element.append(child);
  return element;
}

/** Calls `callback` once per animation frame at most, with the latest arguments. */
export function frameThrottle<A extends unknown[]>(callback: (...args: A) => void): (...args: A) => void {
  let pending: A | null = null;
  return (...args: A) => {
    if (pending === null) requestAnimationFrame(() => {
      const latest = pending!;
      pending = null;
      callback(...latest);
    });
    pending = args;
  };
}

/** Shows `text` in a data view's message element, in place of its drawing (class `view-empty`). */
export function showViewMessage(view: HTMLElement, message: HTMLElement, text: string): void {
  message.hidden = false;
  message.textContent = text;
  view.classList.add('view-empty');
}

/** Hides a data view's message, so that the view draws again. */
export function hideViewMessage(view: HTMLElement, message: HTMLElement): void {
  message.hidden = true;
  view.classList.remove('view-empty');
}

/** True while `element` has the keyboard focus; unlike `document.activeElement`, also inside a
 * shadow root (an embedded dashboard), where the document sees only the shadow's host. */
export function hasFocus(element: Element): boolean {
  return element.matches(':focus');
}
