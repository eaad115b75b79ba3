// TensorBoard as our host: its plugin message channel, and the URL that carries the state.
//
// Where the state lives. TensorBoard loads the dashboard in a same-origin iframe
// (data/plugin_entry.html?name=attention). A user shares and reloads the *top-level* URL, never
// the iframe's, so the state must live in TensorBoard's own hash. TensorBoard already reserves
// keys of the form `p.<plugin>.<key>` there for its plugins: its host answers the guest message
// `experimental.GetURLPluginData` with exactly those keys (prefix removed). So a deep link is
//   http://host:6006/#attention&p.attention.run=train&p.attention.step=100&p.attention.view=model
// On load we read the keys through that message (the documented plugin API). The API has no
// setter, so we write them back into the parent's hash ourselves, with history.replaceState: same
// origin allows it, TensorBoard's own hash writers (tf_storage) re-read the live hash and keep
// other keys, and replaceState fires no hashchange, so TensorBoard does not re-route. Outside
// TensorBoard (the dashboard opened on its own, or in the benchmark) the iframe's own hash is used.

const PLUGIN_NAME = 'attention';
const URL_PREFIX = `p.${PLUGIN_NAME}.`;
const PROTOCOL = 'experimental'; // TensorBoard's plugin message protocol version
const HOST_REPLY_TIMEOUT_MS = 1500;

interface Message {
  type: string;
  id: number;
  payload: unknown;
  error: string | null;
  isReply: boolean;
}

export type Params = Record<string, string>;

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

/** A TensorBoard hash with the plugin's keys replaced by `params`, other items kept in order. */
export function withPluginParams(hash: string, params: Params): string {
  const items = hash
    .replace(/^#/, '')
    .split('&')
    .filter((item) => item !== '' && !decodeKey(item).startsWith(URL_PREFIX));
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

export class Host {
  private port: MessagePort | null = null;
  private nextId = 0;
  private readonly waiting = new Map<number, (message: Message) => void>();
  private readonly handlers = new Map<string, () => void>();
  private readonly parent: Window | null;

  constructor() {
    this.parent = sameOriginParent();
    if (this.parent) this.connect(this.parent);
  }

  /** True inside TensorBoard's plugin iframe. */
  get embedded(): boolean {
    return this.parent !== null;
  }

  /** The state parameters of the URL: TensorBoard's `p.attention.*` keys, or our own hash. */
  async readParams(): Promise<Params> {
    if (!this.parent) return this.currentParams();
    try {
      const payload = await this.request('GetURLPluginData');
      if (payload && typeof payload === 'object') return payload as Params;
    } catch {
      // an older or busy host: read its hash directly below
    }
    return this.currentParams();
  }

  /** The state parameters as the URL holds them now (read directly, for hash changes). */
  currentParams(): Params {
    return this.parent ? pluginParams(this.parent.location.hash) : Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
  }

  /** Puts the state parameters in the URL a user would share, without adding a history entry. */
  writeParams(params: Params): void {
    const target = this.parent ?? window;
    const url = new URL(target.location.href);
    url.hash = this.parent ? withPluginParams(url.hash, params) : new URLSearchParams(params).toString();
    if (url.href !== target.location.href) target.history.replaceState(target.history.state, '', url.href);
  }

  /** Calls `callback` when TensorBoard has reloaded its data (its reload button or timer). */
  onDataReloaded(callback: () => void): void {
    this.handlers.set(`${PROTOCOL}.DataReloaded`, callback);
  }

  /** Calls `callback` when the user edits or navigates the URL's hash. */
  onUrlChanged(callback: () => void): void {
    (this.parent ?? window).addEventListener('hashchange', callback);
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
    if (message.isReply) {
      this.waiting.get(message.id)?.(message);
      this.waiting.delete(message.id);
      return;
    }
    this.handlers.get(message.type)?.();
    // The host awaits an answer from every guest it broadcasts to.
    this.post({type: message.type, id: message.id, payload: null, error: null, isReply: true});
  }

  private request(name: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (!this.port) return reject(new Error('not in TensorBoard'));
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`TensorBoard did not answer ${name}`));
      }, HOST_REPLY_TIMEOUT_MS);
      this.waiting.set(id, (message) => {
        clearTimeout(timer);
        if (message.error) reject(new Error(message.error));
        else resolve(message.payload);
      });
      this.post({type: `${PROTOCOL}.${name}`, id, payload: null, error: null, isReply: false});
    });
  }

  private post(message: Message): void {
    this.port?.postMessage(JSON.stringify(message));
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
