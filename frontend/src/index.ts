// The module TensorBoard loads in the plugin's iframe: it calls render() once.

import {Api} from './data/api';
import {App} from './app/app';
import {el} from './draw/dom';
import {TensorBoardHost} from './app/host';
import {decodeState} from './state/url_state';
import css from './style.css';

export async function render(): Promise<void> {
  // A constructed stylesheet: no second request, no flash of unstyled layout, and no inline
  // <style> element for the page's content security policy to weigh.
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(css);
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  const host = new TensorBoardHost();
  const root = el('div', {class: 'tba'});
  document.body.append(root);
  await new App(root, host, new Api(), decodeState(host.readParams())).start();
}
