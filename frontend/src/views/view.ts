// What every view is given and offers; the app switches between views through this interface.

import type {Api, ExampleInfo, ExampleKey, Tags} from '../api';
import type {RunColors} from '../colors';
import type {DataCache} from '../data';
import type {Attention} from '../decode';
import type {Figure} from '../export';
import type {Selection, State, Store, ViewId} from '../state';

/** What every view draws from: the state, and the runs and tags it resolves against. */
export interface DataModel {
  state: Readonly<State>;
  tags: Tags;
  selection: Selection;
}

/** An example view's model: the data model and the example the state selects, loaded. */
export interface Model extends DataModel {
  key: ExampleKey;
  example: ExampleInfo;
  attention: Attention;
}

export interface ViewContext {
  store: Store;
  api: Api;
  data: DataCache;
  runColors: RunColors;
}

interface ViewBase extends Figure {
  readonly id: ViewId;
  readonly title: string;
  /** the view's drawing area, filling the main panel */
  readonly element: HTMLElement;
  /** the view's own controls, shown above it */
  readonly toolbar: HTMLElement;
  /** Called when the view's box changed size. */
  resize(): void;
  /** Parts of the file name of an export (after `attention-<view>`); example views are named by
   * the app from their example. */
  exportName?(): (string | number)[];
}

/** A view of the selected example (head, model, neuron): the app loads its weights first. */
export interface ExampleView extends ViewBase {
  readonly needs: 'example';
  /** Called on every change of state or data while the view is shown. */
  update(model: Model): void;
}

/** A view that loads what it draws itself (metrics, analysis, exemplars, compare). */
export interface DataView extends ViewBase {
  readonly needs: 'data';
  /** Called on every change of state or of the runs' data while the view is shown. */
  update(model: DataModel): void;
}

export type View = ExampleView | DataView;

export type ViewFactory = (context: ViewContext) => View;
