// The store the views share: holds the state, applies patches, tells the listeners.

import {applyPatch, type State, type StatePatch} from './state';
import {sameState} from './url_state';

export type Listener = (state: Readonly<State>, previous: Readonly<State>) => void;

/** Holds the state; every change notifies the listeners (the views and the URL writer). */
export class Store {
  private current: State;
  private readonly listeners: Listener[] = [];

  constructor(initial: State) {
    this.current = initial;
  }

  get state(): Readonly<State> {
    return this.current;
  }

  update(patch: StatePatch): void {
    const previous = this.current;
    const next = applyPatch(previous, patch);
    if (sameState(previous, next)) return;
    this.current = next;
    for (const listener of this.listeners) listener(next, previous);
  }

  subscribe(listener: Listener): void {
    this.listeners.push(listener);
  }
}
