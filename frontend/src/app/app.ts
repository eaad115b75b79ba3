// The dashboard: the left panel, the view tabs, and the loading of what the shown view needs.

import type {Api, Tags} from '../data/api';
import {RunColors} from '../model/colors';
import {DataCache, type AnyRequest} from '../data/cache';
import * as requests from '../data/requests';
import {el, frameThrottle} from '../draw/dom';
import {exportFigure, exportName} from '../draw/export';
import type {Host} from './host';
import {Panel} from './panel';
import {resolveSelection, type Selection} from '../state/selection';
import type {State, ViewId} from '../state/state';
import {Store} from '../state/store';
import {decodeState, encodeState} from '../state/url_state';
import {AnalysisView} from '../views/analysis/analysis_view';
import {CompareView} from '../views/compare/compare_view';
import {ExemplarsView} from '../views/exemplars/exemplars_view';
import {GenerationView} from '../views/generation/generation_view';
import {HeadView} from '../views/head/head_view';
import {HealthView} from '../views/health/health_view';
import {ImageView} from '../views/image/image_view';
import {LongView} from '../views/long/long_view';
import {MetricsView} from '../views/metrics/metrics_view';
import {ModelView} from '../views/model/model_view';
import {NeuronView} from '../views/neuron/neuron_view';
import {panelExample} from '../views/shared/example';
import type {View, ViewContext, ViewFactory, ViewModel, ViewStatus} from '../views/shared/view';

// The views, in tab order.
const VIEWS: ViewFactory[] = [
  (c) => new HeadView(c),
  (c) => new ModelView(c),
  (c) => new NeuronView(c),
  (c) => new ImageView(c),
  (c) => new GenerationView(c),
  (c) => new LongView(c),
  (c) => new MetricsView(c),
  (c) => new AnalysisView(c),
  (c) => new ExemplarsView(c),
  (c) => new CompareView(c),
  (c) => new HealthView(c),
];

export class App {
  private readonly store: Store;
  private readonly context: ViewContext;
  private readonly data: DataCache;
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
  /** `/tags` could not be read */
  private tagsError: string | null = null;
  private selection: Selection | null = null;

  constructor(
    root: HTMLElement,
    private readonly host: Host,
    private readonly api: Api,
    initial: State,
  ) {
    this.store = new Store(initial);
    // Answers come in one by one; a frame's worth of them is drawn once.
    const rerender = frameThrottle(() => this.render());
    this.context = {store: this.store, runColors: new RunColors(), needsChanged: rerender};
    this.data = new DataCache(api, rerender);
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
      if (state.view !== previous.view) this.showView();
      else this.render();
    });
    host.onDataReloaded(() => void this.loadTags());
    host.onUrlChanged((params) => this.store.update(decodeState(params)));
    // Keys reach the document or the shadow root the dashboard lives in: a notebook page holds
    // other outputs, and arrow keys of its own.
    root.getRootNode().addEventListener('keydown', (event) => this.key(event as KeyboardEvent));
    new ResizeObserver(frameThrottle(() => this.view.resize())).observe(this.body);
  }

  async start(): Promise<void> {
    this.showView();
    await this.loadTags();
  }

  private viewOf(id: ViewId): View {
    return this.views.find((v) => v.id === id) ?? this.views[0];
  }

  private showView(): void {
    this.view = this.viewOf(this.store.state.view);
    for (const tab of this.tabs.children) tab.setAttribute('aria-selected', String((tab as HTMLElement).dataset.view === this.view.id));
    this.toolbar.replaceChildren(this.view.toolbar);
    this.body.replaceChildren(this.status, this.view.element);
    this.panel.setExampleUsed(this.view.usesExample);
    this.render();
  }

  /** Fetches `/tags` (at start, and when the host says the data may have changed); unchanged tags
   * change nothing. */
  private async loadTags(): Promise<void> {
    let changed: boolean;
    try {
      const tags = await this.api.tags();
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
    this.render();
  }

  /** Resolves the state against `/tags`, loads what the panel and the view need, and draws what
   * has arrived. Runs on every change of state and on every answer. */
  private render(): void {
    const state = this.store.state;
    this.selection = this.tags ? resolveSelection(this.tags, state, this.view.steps === 'probe') : null;
    const sel = this.selection;
    let status: ViewStatus | null = null;
    if (this.tagsError) status = {kind: 'error', text: this.tagsError};
    else if (!this.tags) status = {kind: 'loading', text: 'Loading runs…'};
    else if (!sel) {
      status = {kind: 'empty', text: 'No attention data was found in this log directory. Log some with tb_attention (see its README), then reload.'};
    }
    let needs: AnyRequest[] = [];
    if (sel && !status) {
      const model: ViewModel = {state, tags: this.tags!, selection: sel, data: this.data};
      const list = sel.hasExamples ? requests.examples(sel.run, sel.tag, sel.exampleStep) : null;
      needs = [...(list ? [list] : []), ...this.view.needs(model)];
      this.data.load(needs);
      // A probe without attention (metrics alone) has no examples to list.
      const examples = list ? this.data.get(list) : null;
      const listed = examples === null ? [] : examples.state === 'ready' ? examples.value.examples : null;
      const index = listed ? panelExample(listed, state.panel.example) : state.panel.example;
      this.panel.set({...sel, examples: listed, example: index});
      this.showTabs(model);
      // The view lays itself out as it updates: it must be shown (measurable) by then.
      this.showStatus(null);
      status = this.view.update(model);
    }
    this.setBusy(this.data.busy(needs));
    this.showStatus(status);
  }

  /** Hides the tabs of views that have nothing to show for the panel's choice (`available`). */
  private showTabs(model: ViewModel): void {
    for (const tab of this.tabs.children) {
      const view = this.viewOf((tab as HTMLElement).dataset.view as ViewId);
      (tab as HTMLElement).hidden = view !== this.view && view.available !== undefined && !view.available(model);
    }
  }

  /** Shows a status in place of the view, or (null) the view. */
  private showStatus(status: ViewStatus | null): void {
    this.status.hidden = status === null;
    this.status.className = `status status-${status?.kind ?? 'none'}`;
    this.status.textContent = status?.text ?? '';
    this.view.element.hidden = status !== null;
  }

  private setBusy(busy: boolean): void {
    this.progress.classList.toggle('active', busy);
    this.panel.setBusy(busy);
  }

  private async export(format: 'svg' | 'png'): Promise<void> {
    await exportFigure(this.view, format, exportName(['attention', this.view.id, ...this.view.exportName()]));
  }

  /** Keys: Esc clears the locked tokens (the picked heads), ←/→ change step where the slider offers
   * every step of the probe, S/P export; the view takes the others (e.g. ←/→: layer). */
  private key(event: KeyboardEvent): void {
    const typing = event.target instanceof Element && event.target.closest('input, select, textarea');
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const {tokens} = this.store.state.focus;
    const {picks} = this.store.state.metrics;
    const steps = this.selection?.steps ?? [];
    if (event.key === 'Escape' && tokens.length) {
      this.store.update({focus: {tokens: []}});
    } else if (event.key === 'Escape' && this.view.steps === 'probe' && picks.length) {
      this.store.update({metrics: {picks: []}});
    } else if ((event.key === 'ArrowLeft' || event.key === 'ArrowRight') && this.view.steps === 'probe' && steps.length > 1) {
      const next = steps.indexOf(this.selection!.step) + (event.key === 'ArrowLeft' ? -1 : 1);
      if (next >= 0 && next < steps.length) this.store.update({panel: {step: next === steps.length - 1 ? null : steps[next]}});
    } else if (event.key === 's' || event.key === 'p') {
      void this.export(event.key === 's' ? 'svg' : 'png');
    } else if (!this.view.keydown?.(event.key)) {
      return;
    }
    event.preventDefault();
    event.stopPropagation(); // taken: not also the page's (a notebook's command keys)
  }
}
