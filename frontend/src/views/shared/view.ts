// What every view is given and offers; the app switches between views through this interface.
//
// A view never fetches: `needs` names the requests it draws from, the app loads them through the
// one DataCache and calls `update` again whenever one of them arrives.

import type {Tags} from '../../data/api';
import type {RunColors} from '../../model/colors';
import type {AnyRequest, DataReader} from '../../data/cache';
import type {Figure} from '../../draw/export';
import type {Selection} from '../../state/selection';
import type {State, ViewId} from '../../state/state';
import type {Store} from '../../state/store';

/** What every view draws from: the state, the runs and tags it resolves against, and the data
 * loaded so far. */
export interface ViewModel {
  state: Readonly<State>;
  tags: Tags;
  selection: Selection;
  data: DataReader;
}

/** A message the app shows in place of a view (nothing to draw yet, or nothing to draw at all). */
export interface ViewStatus {
  kind: 'loading' | 'empty' | 'error';
  text: string;
}

/** What views are made with: the store they write the user's choices to, and the run colours. */
export interface ViewContext {
  store: Store;
  runColors: RunColors;
  /** A view whose needs changed without a change of state (the model view scrolled to layers it
   * has not loaded) asks the app to load them and draw again, at the next frame. */
  needsChanged?: () => void;
}

export interface View extends Figure {
  readonly id: ViewId;
  readonly title: string;
  /** the view's drawing area, filling the main panel */
  readonly element: HTMLElement;
  /** the view's own controls, shown above it */
  readonly toolbar: HTMLElement;
  /** the steps the slider offers: those of the attention tag, or every step of its probe
   * (attention, metrics, exemplars) */
  readonly steps: 'attention' | 'probe';
  /** whether the view draws the panel's example (the others dim the example list) */
  readonly usesExample: boolean;
  /** The requests the view draws from, for this state and the data loaded so far (a request may
   * depend on the answer of another, e.g. an example's weights on the step's example list). */
  needs(model: ViewModel): AnyRequest[];
  /** Draws what it can; a status is shown by the app in place of the view. Called on every change
   * of state and whenever a request arrives, while the view is shown. */
  update(model: ViewModel): ViewStatus | null;
  /** Called when the view's box changed size. */
  resize(): void;
  /** Parts of the file name of an export (after `attention-<view>`). */
  exportName(): (string | number)[];
  /** Whether the view has anything to show for the panel's choice; its tab is hidden when not
   * (e.g. the image view for an example without an image). Absent: always. */
  available?(model: ViewModel): boolean;
  /** A key pressed over the dashboard (not in a form field); true when the view used it. */
  keydown?(key: string): boolean;
}

export type ViewFactory = (context: ViewContext) => View;
