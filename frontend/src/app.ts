// The dashboard: the left panel, the view tabs, and the loading of what the state selects.

import {ApiError, type Api, type ExampleInfo, type ExampleKey, type Examples, type Tags} from './api';
import type {Attention} from './decode';
import {el, frameThrottle} from './dom';
import {exportFigure, exportName} from './export';
import type {Host} from './host';
import {Panel} from './panel';
import {decodeState, encodeState, resolveSelection, Store, type Selection, type State, type ViewId} from './state';
import {HeadView} from './views/head_view';
import {ModelView} from './views/model_view';
import {NeuronView} from './views/neuron_view';
import type {View, ViewContext, ViewFactory} from './views/view';

// The views, in tab order. Metrics, Analysis, Exemplars and Compare join here.
const VIEWS: ViewFactory[] = [(c) => new HeadView(c), (c) => new ModelView(c), (c) => new NeuronView(c)];

const ATTENTION_CACHE_SIZE = 6; // decoded examples kept, for flipping between steps and examples

type Status = {kind: 'loading' | 'empty' | 'error'; text: string} | null;

export class App {
  private readonly store: Store;
  private readonly views: View[];
  private readonly panel: Panel;
  private readonly tabs: HTMLElement;
  private readonly toolbar: HTMLElement;
  private readonly body: HTMLElement;
  private readonly status: HTMLElement;
  private readonly progress: HTMLElement;
  private view: View;
  private tags: Tags | null = null;
  private selection: Selection | null = null;
  private examples: Examples | null = null;
  private readonly attention = new Map<string, Attention>();
  /** what the view draws; kept while the next selection loads */
  private shown: {key: ExampleKey; example: ExampleInfo; attention: Attention} | null = null;
  private error: string | null = null;
  private loads = 0;
  private controller: AbortController | null = null;

  constructor(
    root: HTMLElement,
    host: Host,
    private readonly api: Api,
    initial: State,
  ) {
    this.store = new Store(initial);
    const context: ViewContext = {store: this.store, api};
    this.views = VIEWS.map((create) => create(context));
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
        title: `Save the view as ${format.toUpperCase()}, with the locked tokens (press ${format === 'svg' ? 'S' : 'P'} while hovering to keep the hover too)`,
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
    host.onUrlChanged(() => this.store.update(decodeState(host.readParams())));
    document.addEventListener('keydown', (event) => this.key(event));
    new ResizeObserver(frameThrottle(() => this.view.resize())).observe(this.body);
  }

  async start(): Promise<void> {
    this.showView();
    await this.loadTags();
  }

  private viewOf(id: ViewId): View {
    return this.views.find((v) => v.id === id) ?? this.views[0];
  }

  private changed(state: Readonly<State>, previous: Readonly<State>): void {
    if (state.view !== previous.view) this.showView();
    if (state.run !== previous.run || state.tag !== previous.tag || state.step !== previous.step || state.example !== previous.example) {
      void this.load();
    } else {
      this.render();
    }
  }

  private showView(): void {
    this.view = this.viewOf(this.store.state.view);
    for (const tab of this.tabs.children) tab.setAttribute('aria-selected', String((tab as HTMLElement).dataset.view === this.view.id));
    this.toolbar.replaceChildren(this.view.toolbar);
    this.body.replaceChildren(this.status, this.view.element);
    this.render();
  }

  /** Fetches `/tags` (at start and whenever TensorBoard reloads), then what the state selects. */
  private async loadTags(): Promise<void> {
    try {
      this.tags = await this.api.tags();
      this.error = null;
    } catch (e) {
      this.error = `Could not list the runs: ${(e as Error).message}`;
    }
    await this.load();
  }

  /** Resolves the state against the data and loads the examples and weights it selects. */
  private async load(): Promise<void> {
    const load = ++this.loads;
    this.controller?.abort();
    const controller = (this.controller = new AbortController());
    const state = this.store.state;
    this.selection = this.tags ? resolveSelection(this.tags, state) : null;
    const sel = this.selection;
    if (!sel) return this.render();
    const sameStep = this.examples && this.examples.run === sel.run && this.examples.tag === sel.tag && this.examples.step === sel.step;
    this.setBusy(true);
    // The weights of the example the state names are fetched alongside the step's example list
    // (one round trip instead of two); they are used once the list confirms the example exists.
    const guess: ExampleKey = {run: sel.run, tag: sel.tag, step: sel.step, example: state.example};
    const early = sameStep ? null : this.fetchAttention(guess, controller.signal);
    early?.catch(() => undefined); // a wrong guess is fetched again below
    try {
      if (!sameStep) {
        this.panel.set({...sel, examples: null, example: state.example});
        const examples = await this.api.examples(sel.run, sel.tag, sel.step, controller.signal);
        if (load !== this.loads) return;
        this.examples = examples;
      }
      const examples = this.examples!.examples;
      const index = examples.some((e) => e.index === state.example) ? state.example : (examples[0]?.index ?? 0);
      this.panel.set({...sel, examples, example: index});
      if (!examples.length) {
        this.error = `Step ${sel.step} of ${sel.run}/${sel.tag} holds no examples.`;
        return this.render();
      }
      const key: ExampleKey = {...guess, example: index};
      const attention = await (early && index === guess.example ? early : this.fetchAttention(key, controller.signal));
      if (load !== this.loads) return;
      this.shown = {key, example: examples.find((e) => e.index === index)!, attention};
      this.error = null;
    } catch (e) {
      if ((e as Error).name === 'AbortError' || load !== this.loads) return;
      this.error = e instanceof ApiError ? e.message : `Could not read the attention: ${(e as Error).message}`;
      this.shown = null;
    } finally {
      if (load === this.loads) this.setBusy(false);
    }
    this.render();
  }

  /** An example's weights, from the cache or the server. */
  private async fetchAttention(key: ExampleKey, signal: AbortSignal): Promise<Attention> {
    const cacheKey = JSON.stringify(key);
    let attention = this.attention.get(cacheKey);
    if (!attention) {
      attention = await this.api.attention(key, signal);
      this.attention.set(cacheKey, attention);
      if (this.attention.size > ATTENTION_CACHE_SIZE) this.attention.delete(this.attention.keys().next().value!);
    }
    return attention;
  }

  private render(): void {
    const state = this.store.state;
    let status: Status = null;
    if (this.error) status = {kind: 'error', text: this.error};
    else if (!this.tags) status = {kind: 'loading', text: 'Loading runs…'};
    else if (!this.selection) {
      status = {
        kind: 'empty',
        text: 'No attention data was found in this log directory. Log some with tb_attention (see its README), then reload.',
      };
    } else if (!this.shown) status = {kind: 'loading', text: 'Loading attention…'};
    this.status.hidden = status === null;
    this.status.className = `status status-${status?.kind ?? 'none'}`;
    this.status.textContent = status?.text ?? '';
    this.view.element.hidden = status !== null;
    if (status || !this.shown) return;
    this.view.update({state, ...this.shown});
  }

  private setBusy(busy: boolean): void {
    this.progress.classList.toggle('active', busy);
  }

  private async export(format: 'svg' | 'png'): Promise<void> {
    const key = this.shown?.key;
    const state = this.store.state;
    const name = exportName(['attention', this.view.id, key?.run ?? '', key?.tag ?? '', `step${key?.step ?? 0}`, `ex${key?.example ?? 0}`, `layer${state.layer}`]);
    await exportFigure(this.view, format, name);
  }

  /** Keys: Esc clears the locked tokens, ↑/↓ move a locked token, ←/→ change layer, S/P export. */
  private key(event: KeyboardEvent): void {
    const typing = event.target instanceof Element && event.target.closest('input, select, textarea');
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const {tokens, layer} = this.store.state;
    const attention = this.shown?.attention;
    if (event.key === 'Escape' && tokens.length) {
      this.store.update({tokens: []});
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
