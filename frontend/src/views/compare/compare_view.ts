// Compare view: A and B, two steps of one run or two runs (checkpoints evaluated on the same probe).
// Side by side in the head or the model view, with one selection; as the signed difference B − A
// of every head's weights; and as the heads ranked by how much they changed (attention moved, as
// `/compare` serves it, or any stored metric). Tokens that differ between A and B are listed in a
// banner, never silently aligned.

import type {CompareMoved} from '../../data/api';
import {ChangesPane} from '../../components/changes_pane';
import {DifferencePane} from '../../components/difference_pane';
import {LastAnswer, valueOf, type AnyRequest} from '../../data/cache';
import type {Attention} from '../../data/decode';
import {el} from '../../draw/dom';
import {metricLabel} from '../../model/metrics';
import type {Painter} from '../../draw/painter';
import type {CompareMode, HeadRef} from '../../state/state';
import {Tooltip} from '../../draw/tooltip';
import {pooledDifference, type PooledDifference} from '../../model/transforms';
import {EndpointPicker} from '../shared/endpoint_picker';
import {bannerOf, changeRows, compareNeeds, comparePlan, exampleOf, examplesOf, metricChanges, metricsOf, movedChanges, movedOf, weightsOf, type Banner, type ComparePlan} from './scene';
import {GroupPicker, LayerPicker, Segmented} from '../shared/controls';
import {groupOf, type ExampleModel} from '../shared/example';
import {HeadView} from '../head/head_view';
import {ModelView} from '../model/model_view';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';

export class CompareView implements View {
  readonly id = 'compare' as const;
  readonly title = 'Compare';
  readonly steps = 'attention' as const;
  readonly usesExample = true;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly pickers: [EndpointPicker, EndpointPicker];
  private readonly mode: Segmented<CompareMode>;
  private readonly modeTools: HTMLElement;
  private readonly layerPicker: LayerPicker;
  private readonly groupPicker: GroupPicker;
  private readonly deltaSelect: HTMLSelectElement;
  private readonly deltaControl: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly body: HTMLElement;
  private readonly message: HTMLElement;
  private readonly inspector: HTMLElement;
  private readonly tooltip: Tooltip;
  private readonly heads: [HeadView, HeadView];
  private readonly models: [ModelView, ModelView];
  private readonly panes: HTMLElement;
  private readonly paneLabels: [HTMLElement, HTMLElement];
  private readonly paneSlots: [HTMLElement, HTMLElement];
  private readonly difference: DifferencePane;
  private readonly changes: ChangesPane;
  /** the weights last shown for A and B, kept while the next ones load */
  private readonly weights = [new LastAnswer<Attention>(), new LastAnswer<Attention>()] as const;
  private readonly moved = new LastAnswer<CompareMoved>();
  private plan: ComparePlan | null = null;
  private modeShown: CompareMode = 'diff';
  private diff: {a: Attention; b: Attention; pooled: PooledDifference} | null = null;
  private metricsKey: string | null = null;
  /** why the difference of weights is not defined for A and B, if it is not */
  private blockedDiff: string | null = null;

  constructor(private readonly context: ViewContext) {
    const {store} = context;
    const choose = (side: 'a' | 'b') => (run: string, step: number | null) => store.update({compare: {[side]: {run, step}}});
    this.pickers = [new EndpointPicker('A', choose('a')), new EndpointPicker('B', choose('b'))];
    const swap = el('button', {
      class: 'button swap-button',
      text: '⇄',
      title: 'Swap A and B',
      attrs: {'data-control': 'swap', 'aria-label': 'Swap A and B'},
      on: {
        click: () => {
          const plan = this.plan;
          if (plan) store.update({compare: {a: {run: plan.b.run, step: plan.b.step}, b: {run: plan.a.run, step: plan.a.step}}});
        },
      },
    });
    this.mode = new Segmented<CompareMode>('Show', 'compare', [
      ['head', 'Heads', 'A and B in the head view, side by side, with one selection'],
      ['model', 'Model', 'A and B in the model view, side by side'],
      ['diff', 'Difference', 'B − A of every head’s weights; the selected head in detail'],
      ['changes', 'Changes', 'Heads ranked by how much they changed from A to B'],
    ], (compare) => store.update({compare: {mode: compare}}));
    this.layerPicker = new LayerPicker(store);
    this.groupPicker = new GroupPicker(store);
    this.deltaSelect = el('select', {attrs: {'aria-label': 'Rank heads by', 'data-control': 'delta'}});
    this.deltaSelect.addEventListener('change', () => store.update({compare: {delta: this.deltaSelect.value}}));
    this.deltaControl = el('label', {class: 'control'}, [el('span', {class: 'control-label', text: 'Rank by'}), this.deltaSelect]);
    this.modeTools = el('div', {class: 'toolbar-group'});
    this.toolbar = el('div', {class: 'toolbar-group compare-toolbar'}, [
      el('div', {class: 'toolbar-group'}, [this.pickers[0].element, swap, this.pickers[1].element]),
      this.mode.element,
      this.modeTools,
    ]);

    this.heads = [new HeadView(context), new HeadView(context)];
    const open = (layer: number, head: number) => store.update({compare: {mode: 'head'}, focus: {layer, heads: [head]}});
    this.models = [new ModelView(context, open), new ModelView(context, open)];
    this.paneLabels = [el('div', {class: 'compare-label'}), el('div', {class: 'compare-label'})];
    this.paneSlots = [el('div', {class: 'compare-slot'}), el('div', {class: 'compare-slot'})];
    this.panes = el('div', {class: 'compare-panes'}, [
      el('div', {class: 'compare-pane', attrs: {'data-side': 'A'}}, [this.paneLabels[0], this.paneSlots[0]]),
      el('div', {class: 'compare-pane', attrs: {'data-side': 'B'}}, [this.paneLabels[1], this.paneSlots[1]]),
    ]);
    this.message = el('div', {class: 'message compare-message', attrs: {'data-message': 'compare'}});
    this.body = el('div', {class: 'compare-body'});
    this.banner = el('div', {class: 'compare-banner', attrs: {role: 'status', 'data-banner': ''}});
    this.inspector = el('div', {class: 'inspector'});
    this.element = el('div', {class: 'view view-compare'}, [this.banner, this.body, this.inspector]);
    this.tooltip = new Tooltip(this.element);
    this.difference = new DifferencePane(this.tooltip, ([layer, head]) => store.update({focus: {layer, heads: [head]}}));
    this.changes = new ChangesPane(this.tooltip, (head) => this.openHead(head));
  }

  get width(): number {
    if (this.modeShown === 'head') return this.heads[0].width + this.heads[1].width;
    if (this.modeShown === 'model') return this.models[0].width + this.models[1].width;
    return this.modeShown === 'diff' ? this.difference.width : this.changes.width;
  }

  get height(): number {
    if (this.modeShown === 'head') return Math.max(this.heads[0].height, this.heads[1].height);
    if (this.modeShown === 'model') return Math.max(this.models[0].height, this.models[1].height);
    return this.modeShown === 'diff' ? this.difference.height : this.changes.height;
  }

  exportName(): (string | number)[] {
    const p = this.plan;
    return p ? [p.a.run, `step${p.a.step}`, 'vs', p.b.run, `step${p.b.step}`, this.modeShown, `ex${p.example}`, ...(p.group === null ? [] : [p.group])] : [];
  }

  needs(model: ViewModel): AnyRequest[] {
    return compareNeeds(comparePlan(model), model.state.compare.mode, model.data);
  }

  update(model: ViewModel): ViewStatus | null {
    const {state, data} = model;
    const plan = (this.plan = comparePlan(model));
    const endpoints = [plan.a, plan.b] as const;
    this.pickers.forEach((picker, s) => picker.set(plan.runs, endpoints[s]));
    this.mode.set(state.compare.mode);
    this.modeShown = state.compare.mode;
    this.setDeltaChoices(plan);
    this.paneLabels.forEach((label, s) => {
      label.replaceChildren(el('span', {class: `endpoint-key endpoint-${s ? 'b' : 'a'}`, text: s ? 'B' : 'A'}), el('span', {text: this.label(s)}));
    });

    const lists = endpoints.map((e) => data.get(examplesOf(plan, e)));
    const [ea, eb] = lists.map((l) => exampleOf(l.state === 'ready' ? l.value : null, plan.example));
    const banner = ea && eb ? bannerOf(ea, eb, plan.example, plan.group) : null;
    if (ea) this.groupPicker.set(ea.groups ?? [], plan.group);
    this.setBanner(banner);
    this.blockedDiff = banner?.blocked.diff ?? null;
    this.modeTools.replaceChildren(...this.tools(state.compare.mode, banner));
    const weights = endpoints.map((e, s) => (exampleOf(valueOf(data, examplesOf(plan, e)), plan.example) ? this.weights[s].read(data, weightsOf(plan, e)) : null));
    const error = lists.map((l) => (l.state === 'error' ? l.error : null)).find((e) => e) ?? this.weights.map((w) => w.error).find((e) => e);
    if (error) return this.show(error);
    if (!ea || !eb) {
      if (lists.some((l) => l.state !== 'ready')) return this.show('Loading A and B…');
      return this.show(`Example #${plan.example} is missing from ${!ea ? 'A' : 'B'}: choose another example in the panel.`);
    }
    const [wa, wb] = weights;
    const weightsKey = (e: typeof plan.a) => ({run: e.run, tag: plan.tag, step: e.step, example: plan.example, ...(plan.group === null ? {} : {group: plan.group})});
    if (!wa || !wb) return this.show('Loading the attention of A and B…');
    const models: [ExampleModel, ExampleModel] = [
      {state, key: weightsKey(plan.a), example: ea, group: groupOf(ea, plan.group), attention: wa},
      {state, key: weightsKey(plan.b), example: eb, group: groupOf(eb, plan.group), attention: wb},
    ];
    this.message.hidden = true;
    if (state.compare.mode === 'head' || state.compare.mode === 'model') return this.sideBySide(models);
    if (state.compare.mode === 'diff') return banner?.blocked.diff ? this.show(banner.blocked.diff) : this.showDifference(models);
    return banner?.blocked.heads ? this.show(banner.blocked.heads) : this.showChanges(model, plan);
  }

  private label(side: number): string {
    const e = side ? this.plan?.b : this.plan?.a;
    return e ? `${e.run} · step ${e.step}` : '';
  }

  /** The mode's own controls (none where the mode cannot show A and B), after the group picker
   * (the head view's toolbar has its own). */
  private tools(mode: CompareMode, banner: Banner | null): HTMLElement[] {
    if (mode === 'head') return [this.heads[0].toolbar];
    const group = this.groupPicker.element;
    if (mode === 'diff') return banner?.blocked.diff ? [group] : [group, this.layerPicker.element];
    if (mode === 'changes') return banner?.blocked.heads ? [group] : [group, this.deltaControl];
    return [group];
  }

  private show(message: string): null {
    this.message.hidden = false;
    this.message.textContent = message;
    this.body.replaceChildren(this.message);
    this.tooltip.hide();
    return null;
  }

  /** The banner: what differs between A and B, said plainly. */
  private setBanner(banner: Banner | null): void {
    const lines: HTMLElement[] = (banner?.lines ?? []).map((text) => el('div', {text}));
    if (banner?.differences.length) lines.push(el('ul', {class: 'banner-list'}, banner.differences.map((text) => el('li', {text}))));
    this.banner.hidden = lines.length === 0;
    this.banner.replaceChildren(...lines);
  }

  private setDeltaChoices(plan: ComparePlan): void {
    const key = plan.common.join('\n');
    if (key !== this.metricsKey) {
      this.metricsKey = key;
      this.deltaSelect.replaceChildren(
        el('option', {text: 'Attention moved (all probe inputs)', attrs: {value: 'attention'}}),
        ...plan.common.map((m) => el('option', {text: `${metricLabel(m)} (all probe inputs)`, attrs: {value: m}})),
      );
    }
    this.deltaSelect.value = plan.delta;
  }

  private place(element: HTMLElement): void {
    if (this.body.firstChild !== element) this.body.replaceChildren(element);
  }

  private sideBySide(models: [ExampleModel, ExampleModel]): null {
    const views = models[0].state.compare.mode === 'head' ? this.heads : this.models;
    this.paneSlots.forEach((slot, s) => {
      if (slot.firstChild !== views[s].element) slot.replaceChildren(views[s].element);
    });
    this.place(this.panes);
    views[0].setExample(models[0]);
    views[1].setExample(models[1]);
    this.inspector.replaceChildren(el('span', {class: 'hint', text: 'A and B share the selection: layer, heads and locked tokens apply to both.'}));
    return null;
  }

  private showDifference([ma, mb]: [ExampleModel, ExampleModel]): null {
    const {state} = ma;
    const [a, b] = [ma.attention, mb.attention];
    if (this.diff?.a !== a || this.diff.b !== b) this.diff = {a, b, pooled: pooledDifference(a, b)};
    this.layerPicker.set(a.numLayers, state.focus.layer);
    const selected: HeadRef = [Math.min(state.focus.layer, a.numLayers - 1), Math.min(state.focus.heads?.[0] ?? 0, a.numHeads - 1)];
    this.difference.set({a, b, diff: this.diff.pooled, labels: [this.label(0), this.label(1)], selected});
    this.place(this.difference.canvas);
    this.inspector.replaceChildren(
      el('span', {class: 'hint', text: 'Red: B attends more than A · blue: less · hover the matrix for the weights · click a head to see it in detail'}),
    );
    this.resize();
    return null;
  }

  private showChanges(model: ViewModel, plan: ComparePlan): null {
    const {data, state} = model;
    let scene;
    if (plan.delta === 'attention') {
      const moved = this.moved.read(data, movedOf(plan));
      if (this.moved.error) return this.show(this.moved.error);
      if (!moved || data.get(movedOf(plan)).state === 'loading') return this.show('Measuring how far each head’s attention moved over the probe’s inputs…');
      scene = movedChanges(moved);
      if (typeof scene === 'string') return this.show(scene);
    } else {
      const [pa, pb] = [metricsOf(plan, plan.a), metricsOf(plan, plan.b)].map((r) => data.get(r));
      const failed = [pa, pb].find((p) => p.state === 'error');
      if (failed?.state === 'error') return this.show(`${failed.error} (metrics are logged at the probe's steps; choose steps that have them)`);
      if (pa.state !== 'ready' || pb.state !== 'ready') return this.show('Loading the metrics of A and B…');
      scene = metricChanges(plan.delta, pa.value, pb.value);
    }
    const {header, rows} = changeRows(scene);
    this.changes.set({...scene, labels: [this.label(0), this.label(1)], selected: [state.focus.layer, state.focus.heads?.[0] ?? 0], header, rows});
    this.place(this.changes.element);
    this.inspector.replaceChildren(
      el('span', {
        class: 'hint',
        text: scene.attention
          ? `Attention moved: per query token, the share of its attention that went to other keys from A to B, averaged over tokens (${scene.note}) · click a head to see its difference`
          : 'The metric over all probe inputs, B − A · click a head to see its difference',
      }),
    );
    this.resize();
    return null;
  }

  /** A head of the ranking or the map, in the difference view (or side by side when the tokens
   * differ). */
  private openHead([layer, head]: HeadRef): void {
    this.context.store.update({focus: {layer, heads: [head]}, compare: {mode: this.blockedDiff ? 'head' : 'diff'}});
  }

  resize(): void {
    const mode = this.modeShown;
    if (mode === 'head' || mode === 'model') {
      const views = mode === 'head' ? this.heads : this.models;
      views[0].resize();
      views[1].resize();
    } else if (mode === 'diff' && this.body.firstChild === this.difference.canvas) {
      this.difference.resize(this.body.clientWidth, this.body.clientHeight);
    } else if (mode === 'changes' && this.body.firstChild === this.changes.element) {
      this.changes.resize(this.body.clientHeight);
    }
  }

  paint(painter: Painter): void {
    const mode = this.modeShown;
    if (mode === 'head' || mode === 'model') {
      const views = mode === 'head' ? this.heads : this.models;
      views[0].paint(painter);
      painter.translate(views[0].width, 0, () => views[1].paint(painter));
    } else if (mode === 'diff') {
      this.difference.paint(painter);
    } else {
      this.changes.paint(painter);
    }
  }
}
