// What every view is given and offers; the app switches between views through this interface.

import type {Api, ExampleInfo, ExampleKey} from '../api';
import type {Attention} from '../decode';
import type {Figure} from '../export';
import type {State, Store, ViewId} from '../state';

/** Everything a view draws from: the state and the example it selects. */
export interface Model {
  state: Readonly<State>;
  key: ExampleKey;
  example: ExampleInfo;
  attention: Attention;
}

export interface ViewContext {
  store: Store;
  api: Api;
}

export interface View extends Figure {
  readonly id: ViewId;
  readonly title: string;
  /** the view's drawing area, filling the main panel */
  readonly element: HTMLElement;
  /** the view's own controls, shown above it */
  readonly toolbar: HTMLElement;
  /** Called on every change of state or data while the view is shown. */
  update(model: Model): void;
  /** Called when the view's box changed size. */
  resize(): void;
}

export type ViewFactory = (context: ViewContext) => View;
