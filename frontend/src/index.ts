// The module TensorBoard loads in the plugin's iframe: it calls render() once.

import {Api} from './api';
import {App} from './app';
import {el} from './dom';
import {Host} from './host';
import {decodeState} from './state';

const STYLESHEET = 'static/index.css'; // relative to the plugin's route root (the iframe's base URL)
const STYLESHEET_TIMEOUT_MS = 3000;

function loadStylesheet(href: string): Promise<void> {
  return new Promise((resolve) => {
    const link = el('link', {attrs: {rel: 'stylesheet', href}});
    const done = () => resolve();
    link.addEventListener('load', done);
    link.addEventListener('error', done);
    setTimeout(done, STYLESHEET_TIMEOUT_MS);
    document.head.append(link);
  });
}

export async function render(): Promise<void> {
  const host = new Host();
  await loadStylesheet(new URL(STYLESHEET, document.baseURI).href);
  const root = el('div', {class: 'tba'});
  document.body.append(root);
  await new App(root, host, new Api(), decodeState(host.readParams())).start();
}
