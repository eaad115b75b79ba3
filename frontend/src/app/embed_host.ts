// A page that embeds a pack as our host (an exported file, a notebook output): the state lives in
// memory, the data never changes, and nothing outside the container is touched (no URL, history,
// parent window or network: a sandboxed iframe allows none of them, and a notebook holds other
// outputs).

import type {Host, Params} from './host';

export class EmbedHost implements Host {
  private params: Params;

  /** `params`: the state the page opens on; `runs`: the run order of the pack's index. */
  constructor(
    params: Params,
    private readonly runs: readonly string[],
  ) {
    this.params = {...params};
  }

  readParams(): Params {
    return {...this.params};
  }

  writeParams(params: Params): void {
    this.params = {...params};
  }

  async runOrder(): Promise<string[]> {
    return [...this.runs];
  }

  onDataReloaded(): void {
    // a pack never changes
  }

  onUrlChanged(): void {
    // no URL holds the state
  }
}

/** The state parameters of a page's `data-options` (`{"params": {...}}`), in their URL form:
 * strings (a number is taken as its base-10 text); anything else is left out. */
export function optionParams(params: unknown): Params {
  if (typeof params !== 'object' || params === null) return {};
  const out: Params = {};
  for (const [name, value] of Object.entries(params)) {
    if (typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value))) out[name] = String(value);
  }
  return out;
}
