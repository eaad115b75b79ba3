// The dashboard: the left panel, the view tabs, and the loading of what the state selects.

import type {Api, ExampleInfo, ExampleKey, Examples, Tags} from './api';
import {RunColors} from './colors';
import {DataCache, errorText} from './data';
import type {Attention} from './decode';
import {el, frameThrottle} from './dom';
import {exportFigure, exportName} from './export';
import type {Host} from './host';
import {Panel} from './panel';
import {decodeState, encodeState, resolveSelection, Store, type Selection, type State, type ViewId} from './state';
import {AnalysisView} from './views/analysis_view';
import {CompareView} from './views/compare_view';
import {ExemplarsView} from './views/exemplars_view';
import {HeadView} from './views/head_view';
import {MetricsView} from './views/metrics_view';
import {ModelView} from './views/model_view';
import {NeuronView} from './views/neuron_view';
import type {View, ViewContext, ViewFactory} from './views/view';

// The views, in tab order.
const VIEWS: ViewFactory[] = [
  (c) => new HeadView(c),
  (c) => new ModelView(c),
  (c) => new NeuronView(c),
  (c) => new MetricsView(c),
  (c) => new AnalysisView(c),
  (c) => new ExemplarsView(c),
  (c) => new CompareView(c),
];

/** ms between polls of `/tags` while the page is visible: a run being written shows its new steps
 * without TensorBoard's reload (whose timer is off by default and 30 s when on). */
export const LIVE_POLL_MS = 10_000;

type Status = {kind: 'loading' | 'empty' | 'error'; text: string} | null;

export class App {
  private readonly store: Store;
  private readonly context: ViewContext;
  private readonly views: View[];
  private readonly panel: Panel;
  private readonly tabs: HTMLElement;
  private readonly toolbar: HTMLElement;
  private readonly body: HTMLElement;
  private readonly status: HTMLElement;
  private readonly progress: HTMLElement;
  private view: View;
  private tags: Tags | null = null;
  private tagsText = '';
  private selection: Selection | null = null;
  private examples: Examples | null = null;
  /** what an example view draws; kept while the next selection loads */
  private shown: {key: ExampleKey; example: ExampleInfo; attention: Attention} | null = null;
  /** `/tags` could not be read */
  private tagsError: string | null = null;
  /** the selected example could not be read */
  private exampleError: string | null = null;
  private loads = 0;

  constructor(
    root: HTMLElement,
    private readonly host: Host,
    api: Api,
    initial: State,
  ) {
    this.store = new Store(initial);
    this.context = {store: this.store, api, data: new DataCache(api), runColors: new RunColors()};
    this.views = VIEWS.map((create) => create(this.context));
    this.view = this.viewOf(initial.view);
    this.panel = new Panel(this.store);
    this.tabs = el(
      'nav',
      {class: 'tabs', attrs: {role: 'tablist'}},
      this.views.map((view) =>
        el('button', {
          class: 'tab',
          text: view.title,
          attrs: {role: 'tab', 'data-view': view.id},
          on: {click: () => this.store.update({view: view.id})},
        }),
      ),
    );
    this.toolbar = el('div', {class: 'toolbar'});
    const exportButton = (format: 'svg' | 'png') =>
      el('button', {
        class: 'button',
        text: format.toUpperCase(),
        title: `Save the view as ${format.toUpperCase()}, as shown (press ${format === 'svg' ? 'S' : 'P'} while hovering to keep the hover too)`,
        attrs: {'data-export': format},
        on: {click: () => void this.export(format)},
      });
    this.status = el('div', {class: 'status', attrs: {'data-status': ''}});
    this.progress = el('div', {class: 'progress'});
    this.body = el('div', {class: 'body'}, [this.status]);
    const header = el('header', {class: 'header'}, [
      el('div', {class: 'header-row'}, [
        this.tabs,
        el('div', {class: 'export'}, [el('span', {class: 'control-label', text: 'Export'}), exportButton('svg'), exportButton('png')]),
      ]),
      this.toolbar,
    ]);
    root.append(this.panel.element, el('main', {class: 'main'}, [this.progress, header, this.body]));

    const writeUrl = frameThrottle(() => host.writeParams(encodeState(this.store.state)));
    this.store.subscribe((state, previous) => {
      writeUrl();
      this.changed(state, previous);
    });
    host.onDataReloaded(() => void this.loadTags());
    host.onUrlChanged((params) => this.store.update(decodeState(params)));
    document.addEventListener('keydown', (event) => this.key(event));
    new ResizeObserver(frameThrottle(() => this.view.resize())).observe(this.body);
    setInterval(() => {
      // Not while the browser tab is in the background, nor while TensorBoard shows another
      // dashboard (it hides this frame: no width).
      if (document.visibilityState === 'visible' && window.innerWidth > 0) void this.loadTags();
    }, LIVE_POLL_MS);
  }

  async start(): Promise<void> {
    this.showView();
    await this.loadTags();
  }

  private viewOf(id: ViewId): View {
    return this.views.find((v) => v.id === id) ?? this.views[0];
  }

  private changed(state: Readonly<State>, previous: Readonly<State>): void {
    const switched = state.view !== previous.view;
    if (switched) this.showView();
    const moved = state.run !== previous.run || state.tag !== previous.tag || state.step !== previous.step || state.example !== previous.example;
    const kindChanged = switched && this.viewOf(previous.view).needs !== this.view.needs;
    if (moved || kindChanged || (switched && this.view.needs === 'example' && !this.showsSelection())) void this.load();
    else if (!switched) this.render();
  }

  /** True when the example drawn is the one the state selects. */
  private showsSelection(): boolean {
    const sel = this.selection;
    const key = this.shown?.key;
    return Boolean(sel && key && key.run === sel.run && key.tag === sel.tag && key.step === sel.exampleStep && key.example === this.panelExample());
  }

  private panelExample(): number {
    const examples = this.examples?.examples ?? [];
    const wanted = this.store.state.example;
    return examples.some((e) => e.index === wanted) ? wanted : (examples[0]?.index ?? 0);
  }

  private showView(): void {
    this.view = this.viewOf(this.store.state.view);
    for (const tab of this.tabs.children) tab.setAttribute('aria-selected', String((tab as HTMLElement).dataset.view === this.view.id));
    this.toolbar.replaceChildren(this.view.toolbar);
    this.body.replaceChildren(this.status, this.view.element);
    this.panel.setExampleUsed(this.view.needs === 'example' || this.view.id === 'compare');
    this.render();
  }

  /** Fetches `/tags` (at start, on TensorBoard's reload and every LIVE_POLL_MS), then what the
   * state selects. Unchanged tags change nothing. */
  private async loadTags(): Promise<void> {
    let changed: boolean;
    try {
      const tags = await this.context.api.tags();
      const text = JSON.stringify(tags);
      changed = text !== this.tagsText || this.tagsError !== null;
      this.tags = tags;
      this.tagsText = text;
      this.tagsError = null;
    } catch (e) {
      changed = this.tagsError === null;
      this.tagsError = `Could not list the runs: ${(e as Error).message}`;
    }
    if (!changed) return;
    if (this.tags) this.context.runColors.add(await this.host.runOrder());
    await this.load();
  }

  /** Resolves the state against the data, loads the step's example list for the panel and, for an
   * example view, the selected example's weights. */
  private async load(): Promise<void> {
    const load = ++this.loads;
    const state = this.store.state;
    this.selection = this.tags ? resolveSelection(this.tags, state, this.view.needs === 'data') : null;
    const sel = this.selection;
    if (!sel) return this.render();
    const {data} = this.context;
    const sameStep = this.examples && this.examples.run === sel.run && this.examples.tag === sel.tag && this.examples.step === sel.exampleStep;
    const wantsWeights = this.view.needs === 'example';
    this.setBusy(true);
    // The weights of the example the state names are fetched alongside the step's example list
    // (one round trip instead of two); they are used once the list confirms the example exists.
    const guess: ExampleKey = {run: sel.run, tag: sel.tag, step: sel.exampleStep, example: state.example};
    const early = !sameStep && wantsWeights ? data.attention(guess) : null;
    early?.catch(() => undefined); // a wrong guess is fetched again below
    try {
      if (!sameStep) {
        this.panel.set({...sel, examples: null, example: state.example});
        if (this.view.needs === 'data') this.render(); // data views need no example list
        const examples = await data.examples(sel.run, sel.tag, sel.exampleStep);
        if (load !== this.loads) return;
        this.examples = examples;
      }
      const examples = this.examples!.examples;
      const index = this.panelExample();
      this.panel.set({...sel, examples, example: index});
      if (!examples.length) {
        this.exampleError = `Step ${sel.exampleStep} of ${sel.run}/${sel.tag} holds no examples.`;
        return this.render();
      }
      if (wantsWeights) {
        const key: ExampleKey = {...guess, example: index};
        const attention = await (early && index === guess.example ? early : data.attention(key));
        if (load !== this.loads) return;
        this.shown = {key, example: examples.find((e) => e.index === index)!, attention};
      }
      this.exampleError = null;
    } catch (e) {
      if (load !== this.loads) return;
      this.exampleError = errorText(e, 'the attention');
      this.shown = null;
    } finally {
      if (load === this.loads) this.setBusy(false);
    }
    this.render();
  }

  private render(): void {
    const state = this.store.state;
    const exampleView = this.view.needs === 'example';
    let status: Status = null;
    if (this.tagsError) status = {kind: 'error', text: this.tagsError};
    else if (!this.tags) status = {kind: 'loading', text: 'Loading runs…'};
    else if (!this.selection) {
      status = {
        kind: 'empty',
        text: 'No attention data was found in this log directory. Log some with tb_attention (see its README), then reload.',
      };
    } else if (exampleView && this.exampleError) status = {kind: 'error', text: this.exampleError};
    else if (exampleView && !this.shown) status = {kind: 'loading', text: 'Loading attention…'};
    this.status.hidden = status === null;
    this.status.className = `status status-${status?.kind ?? 'none'}`;
    this.status.textContent = status?.text ?? '';
    this.view.element.hidden = status !== null;
    if (status) return;
    const model = {state, tags: this.tags!, selection: this.selection!};
    if (this.view.needs === 'example') this.view.update({...model, ...this.shown!});
    else this.view.update(model);
  }

  private setBusy(busy: boolean): void {
    this.progress.classList.toggle('active', busy);
    this.panel.setBusy(busy);
  }

  private async export(format: 'svg' | 'png'): Promise<void> {
    const state = this.store.state;
    let parts: (string | number)[];
    if (this.view.exportName) {
      parts = this.view.exportName();
    } else {
      const key = this.shown?.key;
      parts = [key?.run ?? '', key?.tag ?? '', `step${key?.step ?? 0}`, `ex${key?.example ?? 0}`, `layer${state.layer}`];
    }
    await exportFigure(this.view, format, exportName(['attention', this.view.id, ...parts]));
  }

  /** Keys: Esc clears the locked tokens (the picked heads), ↑/↓ move a locked token, ←/→ change
   * layer (in the metric views: step), S/P export. */
  private key(event: KeyboardEvent): void {
    const typing = event.target instanceof Element && event.target.closest('input, select, textarea');
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const {tokens, layer, picks} = this.store.state;
    const attention = this.view.needs === 'example' ? this.shown?.attention : undefined;
    const steps = this.selection?.steps ?? [];
    if (event.key === 'Escape' && tokens.length) {
      this.store.update({tokens: []});
    } else if (event.key === 'Escape' && this.view.needs === 'data' && picks.length) {
      this.store.update({picks: []});
    } else if ((event.key === 'ArrowLeft' || event.key === 'ArrowRight') && this.view.needs === 'data' && steps.length > 1) {
      const next = steps.indexOf(this.selection!.step) + (event.key === 'ArrowLeft' ? -1 : 1);
      if (next >= 0 && next < steps.length) this.store.update({step: next === steps.length - 1 ? null : steps[next]});
    } else if ((event.key === 'ArrowUp' || event.key === 'ArrowDown') && tokens.length === 1 && attention) {
      const next = tokens[0] + (event.key === 'ArrowUp' ? -1 : 1);
      if (next >= 0 && next < attention.numTokens) this.store.update({tokens: [next]});
    } else if ((event.key === 'ArrowLeft' || event.key === 'ArrowRight') && attention) {
      const next = Math.min(layer, attention.numLayers - 1) + (event.key === 'ArrowLeft' ? -1 : 1);
      if (next >= 0 && next < attention.numLayers) this.store.update({layer: next});
    } else if (event.key === 's' || event.key === 'p') {
      void this.export(event.key === 's' ? 'svg' : 'png');
    } else {
      return;
    }
    event.preventDefault();
  }
}
