// Metrics view: one metric of a probe over training steps. A layer × head heatmap at the step the
// panel chooses (play steps through them), the heads ranked, and curves over steps: the mean of all
// heads, the mean of each layer, and the heads picked in the heatmap, with other runs overlaid in
// TensorBoard's run colours. Every value is a stored metric: the view computes none.

import type {MetricSeries} from '../../data/api';
import {RankedList} from '../../components/ranked_list';
import {valueOf, type AnyRequest} from '../../data/cache';
import * as requests from '../../data/requests';
import {el, hideViewMessage, showViewMessage} from '../../draw/dom';
import {metricLabel} from '../../model/metrics';
import type {Painter} from '../../draw/painter';
import {metricTag} from '../../data/schema';
import {plottedHeads, type HeadRef, type Rank} from '../../state/state';
import {Tooltip} from '../../draw/tooltip';
import {GroupPicker, Segmented} from '../shared/controls';
import {panelExample} from '../shared/example';
import {CurveControls, MetricPicker, RunsPicker} from './controls';
import {CurvesPane} from './curves_pane';
import {HeatmapPane} from './heatmap_pane';
import {metricRanking, metricsPlan, metricsScene, PREVIOUS_TOKEN, previousRanking, seriesRequest, seriesStats, type MetricsScene, type SeriesStats} from './scene';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';

/** The panel example's attention groups, once its step's example list is loaded (they order and
 * size the group picker); empty otherwise. */
function exampleGroups(model: ViewModel): {name: string; num_tokens: number; num_key_tokens: number}[] {
  const {selection: sel, state, data} = model;
  if (!sel.hasExamples) return [];
  const list = valueOf(data, requests.examples(sel.run, sel.tag, sel.exampleStep));
  if (!list?.examples.length) return [];
  const index = panelExample(list.examples, state.panel.example);
  return list.examples.find((e) => e.index === index)?.groups ?? [];
}

export class MetricsView implements View {
  readonly id = 'metrics' as const;
  readonly title = 'Metrics';
  readonly steps = 'probe' as const;
  readonly usesExample = false;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly groupPicker: GroupPicker;
  private readonly metricPicker: MetricPicker;
  private readonly runsPicker: RunsPicker;
  private readonly curveControls: CurveControls;
  private readonly rankControl: Segmented<Rank>;
  private readonly side: HTMLElement;
  private readonly heatmap: HeatmapPane;
  private readonly rankTitle: HTMLElement;
  private readonly ranking: RankedList;
  private readonly curves: CurvesPane;
  private readonly message: HTMLElement;
  private readonly tooltip: Tooltip;
  /** run -> the last series drawn for it (kept while the next version loads) */
  private readonly last = new Map<string, MetricSeries>();
  private readonly stats = new WeakMap<MetricSeries, SeriesStats>();
  private scene: MetricsScene | null = null;
  /** rank `previous`: the stored previous_token series, or why there is none */
  private previous: MetricSeries | string | null = null;

  constructor(private readonly context: ViewContext) {
    const {store} = context;
    this.groupPicker = new GroupPicker(store);
    this.metricPicker = new MetricPicker(store);
    this.runsPicker = new RunsPicker(store);
    this.curveControls = new CurveControls(store);
    this.toolbar = el('div', {class: 'toolbar-group'}, [this.groupPicker.element, this.metricPicker.element, this.curveControls.element, this.runsPicker.element]);
    this.rankControl = new Segmented<Rank>('', 'rank', [
      ['low', 'Lowest', 'Heads with the lowest value at this step first'],
      ['high', 'Highest', 'Heads with the highest value at this step first'],
      ['change', 'Changed', 'Heads whose value changed most since the first step first'],
      ['previous', 'Prev. token', 'Heads by the stored previous_token metric at this step: the share of attention each token pays to the token just before it; a previous-token head scores near 100 %'],
    ], (rank) => store.update({metrics: {rank}}));
    this.message = el('div', {class: 'message', attrs: {'data-message': 'metrics'}});
    const inspector = el('div', {class: 'inspector'}, [
      el('span', {
        class: 'hint',
        text: 'Hover a cell for its value · click a head to plot it over steps (shift: add) · double-click: open it in the head view · click a curve: go to that step',
      }),
    ]);
    const layout = el('div', {class: 'metrics-layout'});
    this.element = el('div', {class: 'view view-metrics'}, [this.message, layout, inspector]);
    this.tooltip = new Tooltip(this.element);
    const open = ([layer, head]: HeadRef) => store.update({view: 'head', focus: {layer, heads: [head]}, metrics: {picks: []}});
    const hover = (head: HeadRef | null) => {
      this.heatmap.setHover(head);
      this.curves.setHoverLayer(head?.[0] ?? null);
    };
    this.heatmap = new HeatmapPane(this.tooltip, {pick: (head, add) => this.pick(head, add), open, hover});
    this.rankTitle = el('div', {class: 'rank-title'});
    this.ranking = new RankedList('ranking', 'rank-row', 'rank-header', {
      choose: (head, add) => this.pick(head, add),
      open,
      hover: (head) => {
        this.tooltip.hide();
        hover(head);
      },
    });
    this.side = el('div', {class: 'metrics-side'}, [
      this.heatmap.canvas,
      el('div', {class: 'rank'}, [el('div', {class: 'rank-head'}, [this.rankTitle, this.rankControl.element]), this.ranking.element]),
    ]);
    this.curves = new CurvesPane(this.tooltip, {
      choose: (step, layer) => {
        const steps = this.scene?.steps ?? [];
        store.update({...(layer === null ? {} : {layer}), panel: {step: step === steps[steps.length - 1] ? null : step}});
      },
    });
    layout.append(this.side, this.curves.area.element);
  }

  get width(): number {
    return this.heatmap.width + this.curves.width;
  }

  get height(): number {
    return Math.max(this.heatmap.height, this.curves.contentHeight);
  }

  exportName(): (string | number)[] {
    const s = this.scene;
    return s ? [s.primary, s.probe, ...(s.group === null ? [] : [s.group]), s.metric, `step${s.step}`] : [];
  }

  needs(model: ViewModel): AnyRequest[] {
    const {tags, state, selection} = model;
    const plan = metricsPlan(tags, state, selection, exampleGroups(model).map((g) => g.name));
    // The example list (the panel's, so usually cached) orders the group picker as the example views do.
    const list = selection.hasExamples ? [requests.examples(selection.run, selection.tag, selection.exampleStep)] : [];
    if (!plan) return list;
    const wanted = [...list, ...plan.runs.map((run) => seriesRequest(tags, run, plan.tag))];
    if (state.metrics.rank === 'previous') wanted.push(seriesRequest(tags, selection.run, metricTag(selection.tag, PREVIOUS_TOKEN, plan.group)));
    return wanted.filter((r) => r !== null);
  }

  update(model: ViewModel): ViewStatus | null {
    const {state, selection, data, tags} = model;
    const probe = selection.tag;
    const sized = exampleGroups(model);
    const plan = metricsPlan(tags, state, selection, sized.map((g) => g.name));
    if (!plan) {
      this.scene = null;
      return this.show(`Run ${JSON.stringify(selection.run)} logged no metrics for ${JSON.stringify(probe)}. A Probe logs them with metrics=True (the default); tb-attention analyze logs them for a corpus.`);
    }
    const {metric, tag, group} = plan;
    this.groupPicker.set(plan.groups.map((name) => sized.find((g) => g.name === name) ?? {name}), group ?? plan.groups[0] ?? null);
    this.metricPicker.set(plan.metrics, metric);
    this.runsPicker.set(plan.available, selection.run, state.metrics.runs, (run) => this.context.runColors.color(run));
    this.curveControls.set(state);
    this.rankControl.set(state.metrics.rank);
    const ready: {run: string; series: MetricSeries}[] = [];
    for (const run of plan.runs) {
      const loaded = data.get(seriesRequest(tags, run, tag)!);
      if (loaded.state === 'error' && run === selection.run) return this.show(`Could not read ${tag} of ${run}: ${loaded.error}`);
      if (loaded.state === 'ready') this.last.set(run, loaded.value);
      const series = this.last.get(run);
      if (series && series.tag === tag) ready.push({run, series});
    }
    if (!ready.length || ready[0].run !== selection.run) {
      if (!this.scene || this.scene.metric !== metric || this.scene.group !== group || this.scene.primary !== selection.run) return this.show(`Loading ${metricLabel(metric)}…`);
      return null; // the previous figure stays until the new series is here
    }
    if (!ready[0].series.steps.length) return this.show(`${tag} of ${selection.run} holds no steps yet.`);
    this.scene = metricsScene(state, probe, group, metric, ready, (series) => this.statsOf(series, metric));
    this.previous = null;
    if (state.metrics.rank === 'previous') {
      const request = seriesRequest(tags, selection.run, metricTag(probe, PREVIOUS_TOKEN, group));
      const loaded = request ? data.get(request) : null;
      if (!loaded) this.previous = `${selection.run} logged no ${PREVIOUS_TOKEN} metric for ${JSON.stringify(probe)}${group === null ? '' : ` (${group} attention)`}.`;
      else if (loaded.state === 'error') this.previous = loaded.error;
      else if (loaded.state === 'ready') this.previous = loaded.value;
    }
    hideViewMessage(this.element, this.message);
    this.resize();
    return null;
  }

  private show(message: string): null {
    showViewMessage(this.element, this.message, message);
    this.tooltip.hide();
    return null;
  }

  private statsOf(series: MetricSeries, metric: string): SeriesStats {
    let stats = this.stats.get(series);
    if (!stats) this.stats.set(series, (stats = seriesStats(series, metric)));
    return stats;
  }

  resize(): void {
    const scene = this.scene;
    if (!scene) return;
    this.side.style.width = `${this.heatmap.set(scene, this.element.clientHeight)}px`;
    this.curves.set(scene, (run) => this.context.runColors.color(run));
    this.drawRanking(scene);
  }

  private drawRanking(scene: MetricsScene): void {
    const rank = scene.state.metrics.rank;
    if (rank === 'previous' && typeof this.previous === 'string') {
      this.rankTitle.textContent = 'Previous-token heads';
      return this.ranking.message(this.previous);
    }
    const ranking = rank === 'previous' ? previousRanking(scene, this.previous as MetricSeries | null) : metricRanking(scene, rank);
    this.rankTitle.textContent = ranking.title;
    if (!ranking.rows.length && ranking.message && rank === 'previous') return this.ranking.message(ranking.message);
    this.ranking.set(ranking.header, ranking.rows, scene.picks, ranking.message ?? '');
  }

  /** Plots a head over steps (alone, or added/removed with `add`); it becomes the selected head of
   * the other views too. */
  private pick(head: HeadRef, add: boolean): void {
    const {store} = this.context;
    const [l, h] = head;
    if (!add) return store.update({metrics: {picks: []}, focus: {layer: l, heads: [h]}});
    const current = plottedHeads(store.state);
    const has = current.some(([a, b]) => a === l && b === h);
    const picks = has ? current.filter(([a, b]) => a !== l || b !== h) : [...current, head];
    store.update(has ? {metrics: {picks}} : {metrics: {picks}, focus: {layer: l, heads: [h]}});
  }

  /** The export: the heatmap with its legend on the left, every chart on the right. */
  paint(painter: Painter): void {
    if (!this.scene) return;
    this.heatmap.paint(painter);
    painter.translate(this.heatmap.width, 0, () => this.curves.paint(painter));
  }
}
