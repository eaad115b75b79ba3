// Where the dashboard lives (`Host`): TensorBoard (`TensorBoardHost`, here: its plugin message
// channel, and the URL that carries the state) or a page that embeds a pack (embed_host.ts).
//
// Where the state lives. TensorBoard loads the dashboard in a same-origin iframe
// (data/plugin_entry.html?name=attention). A user shares and reloads the *top-level* URL, never
// the iframe's, so the state must live in TensorBoard's own hash. TensorBoard reserves keys of
// the form `p.<plugin>.<key>` there for its plugins (its host answers the guest message
// `experimental.GetURLPluginData` with exactly those keys). So a deep link is
//   http://host:6006/#attention&p.attention.run=train&p.attention.step=100&p.attention.view=model
// We read and write those keys in the parent's live hash directly (same origin allows it):
// - reading: GetURLPluginData answers from a copy of the hash that TensorBoard 2.21 refreshes
//   only on `hashchange`, so on a fresh page load it is empty and a deep link would be lost;
// - writing: the plugin API has no setter. history.replaceState leaves no history entry per
//   click and fires no hashchange, so TensorBoard does not re-route; TensorBoard's own hash
//   writers (tf_storage) re-read the live hash and keep our keys.
// The message channel is still used for `experimental.DataReloaded` (TensorBoard's reload button
// and timer). Outside TensorBoard (the dashboard opened on its own, as the benchmark does) the
// iframe's own hash holds the same keys without the prefix.

const PLUGIN_NAME = 'attention';
const URL_PREFIX = `p.${PLUGIN_NAME}.`;
const PROTOCOL = 'experimental'; // TensorBoard's plugin message protocol version

interface Message {
  type: string;
  id: number;
  payload: unknown;
  error: string | null;
  isReply: boolean;
}

export type Params = Record<string, string>;

/** ms between polls of `/tags` while the page is visible: a run being written shows its new steps
 * without TensorBoard's reload (whose timer is off by default and 30 s when on). */
export const LIVE_POLL_MS = 10_000;

/** What the app asks of the page it lives in. */
export interface Host {
  /** The state parameters the dashboard opens with (the URL form of the state). */
  readParams(): Params;
  /** Keeps the state parameters: in the URL a user would share, or in memory. */
  writeParams(params: Params): void;
  /** The run names in the order run colours follow; empty when unknown. */
  runOrder(): Promise<string[]>;
  /** Calls `callback` when the data may have changed (TensorBoard's reload, a run being written). */
  onDataReloaded(callback: () => void): void;
  /** Calls `callback` with new state parameters when the user edits or navigates the URL. */
  onUrlChanged(callback: (params: Params) => void): void;
}

/** Splits a TensorBoard hash (`#tab&key=value&...`) into its items, in order. */
export function parseHostHash(hash: string): [string, string | null][] {
  return hash
    .replace(/^#/, '')
    .split('&')
    .filter((item) => item !== '')
    .map((item) => {
      const parts = item.split('=');
      if (parts.length !== 2) return [item, null]; // the tab name (TensorBoard's format)
      try {
        return [decodeURIComponent(parts[0]), decodeURIComponent(parts[1])];
      } catch {
        return [item, null];
      }
    });
}

/** The plugin's keys (prefix removed) in a TensorBoard hash. */
export function pluginParams(hash: string): Params {
  const params: Params = {};
  for (const [key, value] of parseHostHash(hash)) {
    if (value !== null && key.startsWith(URL_PREFIX)) params[key.slice(URL_PREFIX.length)] = value;
  }
  return params;
}

/** A TensorBoard hash with the plugin's keys replaced by `params`, other items kept in order. The
 * tab name is added when missing, so that the link opens this dashboard. */
export function withPluginParams(hash: string, params: Params): string {
  const items = hash
    .replace(/^#/, '')
    .split('&')
    .filter((item) => item !== '' && !decodeKey(item).startsWith(URL_PREFIX));
  if (!items.some((item) => !item.includes('='))) items.unshift(PLUGIN_NAME);
  for (const [key, value] of Object.entries(params)) {
    items.push(`${encodeURIComponent(URL_PREFIX + key)}=${encodeURIComponent(value)}`);
  }
  return items.join('&');
}

function decodeKey(item: string): string {
  try {
    return decodeURIComponent(item.split('=')[0]);
  } catch {
    return item;
  }
}

export class TensorBoardHost implements Host {
  private port: MessagePort | null = null;
  private readonly handlers = new Map<string, () => void>();
  private readonly parent: Window | null;

  constructor() {
    this.parent = sameOriginParent();
    if (this.parent) this.connect(this.parent);
  }

  /** The state parameters of the URL: TensorBoard's `p.attention.*` keys, or our own hash. */
  readParams(): Params {
    return this.paramsOf((this.parent ?? window).location.hash);
  }

  private paramsOf(hash: string): Params {
    return this.parent ? pluginParams(hash) : Object.fromEntries(new URLSearchParams(hash.replace(/^#/, '')));
  }

  /** Puts the state parameters in the URL a user would share, without adding a history entry. */
  writeParams(params: Params): void {
    const target = this.parent ?? window;
    const url = new URL(target.location.href);
    url.hash = this.parent ? withPluginParams(url.hash, params) : new URLSearchParams(params).toString();
    if (url.href !== target.location.href) target.history.replaceState(target.history.state, '', url.href);
  }

  /** TensorBoard's run list in its own order (`data/runs`: by start time, then name), which is the
   * order its run colours follow; empty when it cannot be read. */
  async runOrder(): Promise<string[]> {
    try {
      const response = await fetch(new URL('../../runs', document.baseURI), {credentials: 'same-origin'});
      const runs = (await response.json()) as unknown;
      return Array.isArray(runs) ? runs.filter((r): r is string => typeof r === 'string') : [];
    } catch {
      return [];
    }
  }

  /** Calls `callback` when TensorBoard has reloaded its data (its reload button or timer), and every
   * LIVE_POLL_MS while the dashboard is shown. */
  onDataReloaded(callback: () => void): void {
    this.handlers.set(`${PROTOCOL}.DataReloaded`, callback);
    setInterval(() => {
      // Not while the browser tab is in the background, nor while TensorBoard shows another
      // dashboard (it hides this frame: no width).
      if (document.visibilityState === 'visible' && window.innerWidth > 0) callback();
    }, LIVE_POLL_MS);
  }

  /** Calls `callback` with the new state parameters when the user edits or navigates the URL's
   * hash. They are read from the event, not the live hash: a state change of the same frame may
   * already have rewritten the live hash with the state the user is leaving. */
  onUrlChanged(callback: (params: Params) => void): void {
    (this.parent ?? window).addEventListener('hashchange', (event) => callback(this.paramsOf(new URL((event as HashChangeEvent).newURL).hash)));
  }

  private connect(parent: Window): void {
    const channel = new MessageChannel();
    this.port = channel.port1;
    this.port.onmessage = (event: MessageEvent) => this.receive(event);
    parent.postMessage(`${PROTOCOL}.bootstrap`, location.origin, [channel.port2]);
  }

  private receive(event: MessageEvent): void {
    let message: Message;
    try {
      message = JSON.parse(event.data as string) as Message;
    } catch {
      return;
    }
    if (message.isReply) return; // we send no requests
    this.handlers.get(message.type)?.();
    // The host awaits an answer from every guest it broadcasts to.
    this.port?.postMessage(JSON.stringify({type: message.type, id: message.id, payload: null, error: null, isReply: true}));
  }
}

function sameOriginParent(): Window | null {
  if (window.parent === window) return null;
  try {
    void window.parent.location.href; // throws when the parent is another origin
    return window.parent;
  } catch {
    return null;
  }
}
