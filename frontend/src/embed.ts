// The dashboard outside TensorBoard (an exported HTML file, a notebook output), built into
// embed.js: one classic script defining `tbAttention.mount`, which reads the pack the page embeds
// and renders into the container's shadow root (http_api.md, "Exported files and notebook outputs").

import {Api} from './data/api';
import {packTransport, readPack} from './data/pack';
import {App} from './app/app';
import {EmbedHost, optionParams} from './app/embed_host';
import type {Params} from './app/host';
import {el} from './draw/dom';
import {decodeState} from './state/url_state';
import css from './style.css';

export interface EmbedOptions {
  /** the state parameters the dashboard opens on (the URL form: `view`, `run`, `step`, ...) */
  params: Params;
  theme: 'light' | 'dark';
}

let sheet: CSSStyleSheet | null = null; // one for every mount of the page

/** Renders the dashboard of `packElement`'s pack into `container` (its shadow root, made open so
 * that tests can find the figures). Resolves once it shows; on failure, the container says what is
 * wrong and what to do, and the promise rejects with the same error. */
export async function mount(container: HTMLElement, packElement: HTMLScriptElement): Promise<void> {
  const root = el('div', {class: 'tba', attrs: {tabindex: '-1'}});
  try {
    showIn(container, root);
  } catch (e) {
    container.textContent = `${FAILED} ${(e as Error).message}`; // an element that cannot hold a shadow root
    throw e;
  }
  try {
    const options = readOptions(container);
    root.classList.toggle('dark', options.theme === 'dark');
    // JupyterLab would take the keys the dashboard answers (its notebook shortcuts) otherwise.
    container.setAttribute('data-lm-suppress-shortcuts', 'true');
    const pack = await readPack(packElement.textContent ?? '', packElement.dataset.encoding, packElement.dataset.bytes);
    const host = new EmbedHost(options.params, pack.index.run_order);
    await new App(root, host, new Api(packTransport(pack)), decodeState(host.readParams())).start();
  } catch (e) {
    root.replaceChildren(el('div', {class: 'status status-error', text: `${FAILED} ${(e as Error).message}`, attrs: {'data-status': '', role: 'alert'}}));
    throw e;
  }
}

const FAILED = 'tb-attention cannot show this dashboard.';

/** The container's `data-options`: `{"params": {...}, "theme": "light" | "dark"}`, both optional. */
function readOptions(container: HTMLElement): EmbedOptions {
  const text = container.dataset.options;
  let options: unknown = {};
  try {
    if (text) options = JSON.parse(text);
  } catch {
    throw new Error('The dashboard\'s data-options attribute is not JSON. Export it again.');
  }
  const {params, theme} = (typeof options === 'object' && options !== null ? options : {}) as {params?: unknown; theme?: unknown};
  return {params: optionParams(params), theme: theme === 'dark' ? 'dark' : 'light'};
}

/** Puts `root` in the container's shadow root (the one it has, when mounted again), with our style. */
function showIn(container: HTMLElement, root: HTMLElement): void {
  const shadow = container.shadowRoot ?? container.attachShadow({mode: 'open'});
  if (!sheet) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
  }
  shadow.adoptedStyleSheets = [sheet];
  shadow.replaceChildren(root);
}
