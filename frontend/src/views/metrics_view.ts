// Metrics view: one metric of a probe over training steps. A layer x head heatmap at the step the
// panel chooses (play steps through them), the heads ranked, and curves over steps: the mean of all
// heads, the mean of each layer, and the heads picked in the heatmap, with other runs overlaid in
// TensorBoard's run colours.

import type {MetricSeries} from '../api';
import {
  extentOf,
  fitHeatmap,
  FONT_SMALL,
  HeatmapGeometry,
  FONT_TITLE,
  hasMissing,
  HEATMAP_LEFT,
  LEGEND_HEIGHT,
  LineChart,
  paintHeatmap,
  paintLegend,
  type Line,
  type Rect,
} from '../charts';
import {ACCENT, INK, MUTED_INK} from '../colors';
import {Latest} from '../data';
import {el, frameThrottle, hideViewMessage, pointIn, showViewMessage} from '../dom';
import {
  layerColor,
  mean,
  metricAbout,
  metricLabel,
  metricScale,
  missingText,
  rankHeads,
  smooth,
  sortMetrics,
  valueText,
  type ColorScale,
  type Grid,
} from '../metrics';
import {CanvasPainter, textWidth, type Painter} from '../painter';
import {previousTokenShare} from '../transforms';
import {metricTag, nearestStep, plottedHeads, probeMetrics, runsWithMetric, type HeadRef, type Rank, type State} from '../state';
import {truncate} from '../tokens';
import {Tooltip, type TooltipLine} from '../tooltip';
import {CurveControls, MetricPicker, RunsPicker, Segmented} from './controls';
import {ScrollingCanvas} from './scrolling_canvas';
import type {DataModel, DataView, ViewContext} from './view';

const PAD = 14; // px around the figures
const SIDE_PAD = 14;
const TARGET_HEATMAP_WIDTH = 300; // px of cells the heatmap aims for
const MIN_SIDE = 330; // px: the heatmap's column, wide enough for the ranking
const HEATMAP_TITLE = 44; // px above the heatmap: title and description
const CHART_HEIGHT = 220; // px per curve chart
const CHART_GAP = 16; // px between charts
const TWO_COLUMNS = 720; // px of chart area from which charts sit two per row
const MAX_RANKED = 60; // heads listed in the ranking
const MAX_FRAMES = 10; // heatmaps in the filmstrip of steps
const FRAME_GAP = 14; // px between them
const FRAME_LABEL = 16; // px under a frame: its step

/** What a metric series gives the charts, computed once per series. */
interface SeriesStats {
  /** per step: the mean of all heads */
  all: (number | null)[];
  /** per layer, per step: the mean of the layer's heads */
  layers: (number | null)[][];
  /** every value of every step, for the colour scale */
  scale: ColorScale;
}

interface Scene {
  state: Readonly<State>;
  probe: string;
  metric: string;
  primary: string;
  /** runs drawn, the panel's first, each with its series of this metric */
  runs: {run: string; series: MetricSeries; stats: SeriesStats}[];
  steps: number[];
  step: number;
  grid: Grid;
  baseline: Grid;
  numLayers: number;
  numHeads: number;
  picks: HeadRef[];
}

/** One heatmap of the filmstrip: the metric at one step. */
interface Frame {
  step: number;
  index: number;
  geometry: HeatmapGeometry;
}

interface Card {
  kind: 'all' | 'layers' | 'head';
  chart: LineChart;
  lines: Line[];
  head?: HeadRef;
}

export class MetricsView implements DataView {
  readonly id = 'metrics' as const;
  readonly title = 'Metrics';
  readonly needs = 'data' as const;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly metricPicker: MetricPicker;
  private readonly runsPicker: RunsPicker;
  private readonly curveControls: CurveControls;
  private readonly rankControl: Segmented<Rank>;
  private readonly side: HTMLElement;
  private readonly heatCanvas: HTMLCanvasElement;
  private readonly rankTitle: HTMLElement;
  private readonly rankList: HTMLElement;
  private readonly area: ScrollingCanvas;
  private readonly message: HTMLElement;
  private readonly inspector: HTMLElement;
  private readonly tooltip: Tooltip;
  private model: DataModel | null = null;
  /** run -> the series loaded for it, and the request it answers */
  private readonly loaded = new Map<string, {key: string; series: MetricSeries | null; error: string | null}>();
  private readonly stats = new WeakMap<MetricSeries, SeriesStats>();
  private scene: Scene | null = null;
  private geometry: HeatmapGeometry | null = null;
  private sideWidth = 0;
  private heatHeight = 0;
  private cards: Card[] = [];
  private frames: Frame[] = [];
  private hoverFrame: number | null = null;
  private contentHeight = 0;
  private hoverCell: HeadRef | null = null;
  private hoverChart: {card: number; x: number; line: string | null} | null = null;
  private valuesKey = '';
  /** rank `previous`: each head's previous-token share at a step, from the probe's stored attention */
  private readonly previous = new Latest<{step: number; grid: number[][]}>();

  constructor(private readonly context: ViewContext) {
    const {store} = context;
    this.metricPicker = new MetricPicker(store);
    this.runsPicker = new RunsPicker(store);
    this.curveControls = new CurveControls(store);
    this.toolbar = el('div', {class: 'toolbar-group'}, [this.metricPicker.element, this.curveControls.element, this.runsPicker.element]);
    this.rankControl = new Segmented<Rank>('', 'rank', [
      ['low', 'Lowest', 'Heads with the lowest value at this step first'],
      ['high', 'Highest', 'Heads with the highest value at this step first'],
      ['change', 'Changed', 'Heads whose value changed most since the first step first'],
      ['previous', 'Prev. token', 'Heads by the share of attention each token pays to the token just before it, read from the probe’s stored attention at this step: a previous-token head scores near 100 %'],
    ], (rank) => store.update({rank}));
    this.heatCanvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'metric-heatmap'}});
    this.rankTitle = el('div', {class: 'rank-title'});
    this.rankList = el('div', {class: 'rank-list', attrs: {role: 'list', 'data-control': 'ranking'}});
    this.side = el('div', {class: 'metrics-side'}, [
      this.heatCanvas,
      el('div', {class: 'rank'}, [el('div', {class: 'rank-head'}, [this.rankTitle, this.rankControl.element]), this.rankList]),
    ]);
    this.area = new ScrollingCanvas('metric-curves', () => this.drawCharts());
    this.message = el('div', {class: 'message', attrs: {'data-message': 'metrics'}});
    this.inspector = el('div', {class: 'inspector'}, [
      el('span', {
        class: 'hint',
        text: 'Hover a cell for its value · click a head to plot it over steps (shift: add) · double-click: open it in the head view · click a curve: go to that step',
      }),
    ]);
    const layout = el('div', {class: 'metrics-layout'}, [this.side, this.area.element]);
    this.element = el('div', {class: 'view view-metrics'}, [this.message, layout, this.inspector]);
    this.tooltip = new Tooltip(this.element);

    const heatMove = frameThrottle((event: MouseEvent) => this.heatPointer(event));
    this.heatCanvas.addEventListener('mousemove', heatMove);
    this.heatCanvas.addEventListener('mouseleave', () => this.setHoverCell(null, null));
    this.heatCanvas.addEventListener('click', (event) => this.heatClick(event));
    this.heatCanvas.addEventListener('dblclick', (event) => {
      const cell = this.cellAt(event);
      if (cell) store.update({view: 'head', layer: cell[0], heads: [cell[1]], picks: []});
    });
    const chartMove = frameThrottle((event: MouseEvent) => this.chartPointer(event));
    this.area.canvas.addEventListener('mousemove', chartMove);
    this.area.canvas.addEventListener('mouseleave', () => {
      this.hoverChart = null;
      this.hoverFrame = null;
      this.tooltip.hide();
      this.drawCharts();
    });
    this.area.canvas.addEventListener('click', (event) => this.chartClick(event));
  }

  get width(): number {
    return this.sideWidth + this.area.width;
  }

  get height(): number {
    return Math.max(this.heatHeight, this.contentHeight);
  }

  exportName(): (string | number)[] {
    const s = this.scene;
    return s ? [s.primary, s.probe, s.metric, `step${s.step}`] : [];
  }

  update(model: DataModel): void {
    this.model = model;
    const {state, tags, selection} = model;
    const probe = selection.tag;
    const metrics = sortMetrics(probeMetrics(tags, selection.run, probe));
    if (!metrics.length) {
      this.scene = null;
      return this.show(`Run ${JSON.stringify(selection.run)} logged no metrics for ${JSON.stringify(probe)}. A Probe logs them with metrics=True (the default); tb-attention analyze logs them for a corpus.`);
    }
    const metric = metrics.includes(state.metric) ? state.metric : metrics.includes('distance') ? 'distance' : metrics[0];
    const tag = metricTag(probe, metric);
    const available = runsWithMetric(tags, probe, metric);
    const runs = [selection.run, ...state.runs.filter((r) => r !== selection.run && available.includes(r))];
    this.metricPicker.set(metrics, metric);
    this.runsPicker.set(available, selection.run, state.runs, (run) => this.context.runColors.color(run));
    this.curveControls.set(state);
    this.rankControl.set(state.rank);
    for (const run of runs) {
      const steps = tags[run][tag].steps;
      const key = JSON.stringify([tag, steps.length, steps[steps.length - 1]]);
      if (this.loaded.get(run)?.key === key) continue;
      const entry = {key, series: this.loaded.get(run)?.series ?? null, error: null as string | null};
      this.loaded.set(run, entry);
      this.context.data.metric(run, tag, key).then(
        (series) => {
          if (this.loaded.get(run) !== entry) return;
          entry.series = series;
          if (this.model) this.update(this.model);
        },
        (e: Error) => {
          if (this.loaded.get(run) !== entry) return;
          entry.error = `Could not read ${tag} of ${run}: ${e.message}`;
          if (this.model) this.update(this.model);
        },
      );
    }
    const primary = this.loaded.get(selection.run)!;
    if (primary.error) return this.show(primary.error);
    const ready = runs
      .map((run) => ({run, series: this.loaded.get(run)?.series ?? null}))
      .filter((r): r is {run: string; series: MetricSeries} => r.series !== null && r.series.tag === tag);
    if (!ready.length || ready[0].run !== selection.run) {
      if (!this.scene || this.scene.metric !== metric || this.scene.primary !== selection.run) return this.show(`Loading ${metricLabel(metric)}…`);
      return; // the previous figure stays until the new series is here
    }
    const series = ready[0].series;
    if (!series.steps.length) return this.show(`${tag} of ${selection.run} holds no steps yet.`);
    const steps = series.steps;
    const step = state.step === null ? steps[steps.length - 1] : nearestStep(steps, state.step);
    const grid = series.values[steps.indexOf(step)];
    this.scene = {
      state,
      probe,
      metric,
      primary: selection.run,
      runs: ready.map((r) => ({...r, stats: this.statsOf(r.series, metric)})),
      steps,
      step,
      grid,
      baseline: series.values[0],
      numLayers: grid.length,
      numHeads: grid[0]?.length ?? 0,
      picks: plottedHeads(state).filter(([l, h]) => l < grid.length && h < (grid[0]?.length ?? 0)),
    };
    if (state.rank === 'previous') this.loadPrevious(selection.run, probe, nearestStep([...tags[selection.run][probe].steps].sort((a, b) => a - b), step));
    hideViewMessage(this.element, this.message);
    this.resize();
  }

  /** The previous-token share of every head at a step: the mean over the probe's stored examples. */
  private loadPrevious(run: string, tag: string, step: number): void {
    const {data} = this.context;
    this.previous.load(
      JSON.stringify([run, tag, step]),
      async () => {
        const examples = (await data.examples(run, tag, step)).examples;
        const shares = await Promise.all(examples.map(async (e) => previousTokenShare(await data.attention({run, tag, step, example: e.index}))));
        const grid = shares[0].map((row, l) => row.map((_, h) => shares.reduce((s, g) => s + (g[l]?.[h] ?? 0), 0) / shares.length));
        return {step, grid};
      },
      () => this.scene && this.drawRanking(),
      'the probe’s attention',
    );
  }

  private show(message: string): void {
    showViewMessage(this.element, this.message, message);
    this.tooltip.hide();
  }

  private statsOf(series: MetricSeries, metric: string): SeriesStats {
    let stats = this.stats.get(series);
    if (!stats) {
      const numLayers = series.values[0]?.length ?? 0;
      stats = {
        all: series.values.map((grid) => mean(grid.flat())),
        layers: Array.from({length: numLayers}, (_, l) => series.values.map((grid) => mean(grid[l] ?? []))),
        scale: metricScale(metric, series.values.flat(2)),
      };
      this.stats.set(series, stats);
    }
    return stats;
  }

  resize(): void {
    const scene = this.scene;
    if (!scene) return;
    // The heatmap: cells about TARGET_HEATMAP_WIDTH px across, at most half the height tall.
    const cell = Math.max(10, Math.min(34, Math.floor(TARGET_HEATMAP_WIDTH / scene.numHeads)));
    this.sideWidth = Math.max(MIN_SIDE, HEATMAP_LEFT + scene.numHeads * cell + 2 * SIDE_PAD);
    this.side.style.width = `${this.sideWidth}px`;
    const maxHeight = Math.max(120, this.element.clientHeight * 0.55 - HEATMAP_TITLE - LEGEND_HEIGHT);
    const cellH = Math.max(5, Math.min(cell, Math.floor(maxHeight / scene.numLayers)));
    const box: Rect = {x: SIDE_PAD, y: HEATMAP_TITLE, w: HEATMAP_LEFT + scene.numHeads * cell, h: scene.numLayers * cellH + 16};
    this.geometry = fitHeatmap(box, scene.numLayers, scene.numHeads, cell);
    this.heatHeight = this.geometry.y + this.geometry.height + 14 + LEGEND_HEIGHT;
    this.heatCanvas.style.height = `${this.heatHeight}px`;
    this.layoutCharts();
    this.drawHeatmap();
    this.drawRanking();
    this.drawCharts();
  }

  // -------------------------------------------------------------------------------------------
  // The heatmap and the ranking

  private paintHeatmap(painter: Painter): void {
    const scene = this.scene!;
    const g = this.geometry!;
    const scale = scene.runs[0].stats.scale;
    painter.text(metricLabel(scene.metric), SIDE_PAD, 12, {font: FONT_TITLE, color: INK});
    const sub = `step ${scene.step} · ${scene.primary}`;
    painter.text(sub, SIDE_PAD + textWidth(metricLabel(scene.metric), FONT_TITLE) + 8, 12, {font: FONT_SMALL, color: MUTED_INK});
    const about = scene.steps.length > 1 ? `${metricAbout(scene.metric)} · colours span all steps` : metricAbout(scene.metric);
    painter.text(truncate(about, Math.floor((this.sideWidth - 2 * SIDE_PAD) / 4.8)), SIDE_PAD, 28, {font: FONT_SMALL, color: MUTED_INK});
    paintHeatmap(painter, g, scene.grid, scale, {picked: scene.picks, hover: this.hoverCell});
    paintLegend(painter, g.x, g.y + g.height + 12, Math.max(160, Math.min(g.width, 260)), scale, hasMissing(scene.grid), missingText(scene.metric));
  }

  private drawHeatmap(): void {
    const scene = this.scene!;
    const painter = new CanvasPainter(this.heatCanvas, this.sideWidth, this.heatHeight);
    this.paintHeatmap(painter);
    const g = this.geometry!;
    const data = this.heatCanvas.dataset;
    data.run = scene.primary;
    data.metric = scene.metric;
    data.step = String(scene.step);
    data.picks = scene.picks.map(([l, h]) => `${l}.${h}`).join(',');
    data.layout = JSON.stringify({x: g.x, y: g.y, cellW: g.cellW, cellH: g.cellH, layers: g.rows, heads: g.cols});
    // The values drawn, for tests and tools (set only when they change: hovering redraws).
    const valuesKey = `${scene.primary}\0${scene.metric}\0${scene.step}\0${scene.runs[0].series.steps.length}`;
    if (valuesKey !== this.valuesKey) {
      this.valuesKey = valuesKey;
      data.values = JSON.stringify(scene.grid);
    }
  }

  private drawRanking(): void {
    const scene = this.scene!;
    const rank = scene.state.rank;
    const first = scene.steps[0];
    if (rank === 'previous') return this.drawPreviousRanking(scene);
    this.rankTitle.textContent = rank === 'change' ? `Heads by change, step ${first} → ${scene.step}` : `Heads at step ${scene.step}`;
    const ranked = rankHeads(scene.grid, rank, rank === 'change' || scene.steps.length > 1 ? scene.baseline : null).slice(0, MAX_RANKED);
    const picked = new Set(scene.picks.map(([l, h]) => `${l}.${h}`));
    const rows = ranked.map((r) => {
      const [l, h] = r.head;
      const row = el('div', {
        class: 'rank-row',
        attrs: {role: 'listitem', tabindex: '0', 'data-head': `${l}.${h}`, 'aria-selected': String(picked.has(`${l}.${h}`))},
        title: `Layer ${l}, head ${h}: click to plot it over steps (shift: add), double-click to open it in the head view`,
        on: {
          click: (event) => this.pick([l, h], (event as MouseEvent).shiftKey),
          dblclick: () => this.context.store.update({view: 'head', layer: l, heads: [h], picks: []}),
          keydown: (event) => {
            if ((event as KeyboardEvent).key === 'Enter') this.pick([l, h], false);
          },
          mouseenter: () => this.setHoverCell([l, h], null),
          mouseleave: () => this.setHoverCell(null, null),
        },
      }, [
        el('span', {class: 'rank-head-name', text: `L${l} H${h}`}),
        el('span', {class: 'rank-value', text: valueText(r.value)}),
        el('span', {
          class: `rank-change ${r.change === null ? '' : r.change < 0 ? 'down' : 'up'}`,
          text: r.change === null || scene.steps.length < 2 ? '' : valueText(r.change, true),
        }),
      ]);
      return row;
    });
    const header = el('div', {class: 'rank-row rank-header'}, [
      el('span', {text: 'head'}),
      el('span', {class: 'rank-value', text: 'value'}),
      el('span', {class: 'rank-change', text: scene.steps.length > 1 ? `since step ${first}` : ''}),
    ]);
    this.rankList.replaceChildren(header, ...rows);
    if (!rows.length) this.rankList.append(el('div', {class: 'hint rank-empty', text: 'No head has a value at this step.'}));
  }

  private drawPreviousRanking(scene: Scene): void {
    const loaded = this.previous.value;
    this.rankTitle.textContent = `Previous-token heads${loaded ? `, step ${loaded.step}` : ''}`;
    if (this.previous.error) return this.rankList.replaceChildren(el('div', {class: 'hint rank-empty', text: this.previous.error}));
    if (!loaded) return this.rankList.replaceChildren(el('div', {class: 'hint rank-empty', text: 'Reading the probe’s attention…'}));
    const ranked = rankHeads(loaded.grid, 'high').slice(0, MAX_RANKED);
    const picked = new Set(scene.picks.map(([l, h]) => `${l}.${h}`));
    const header = el('div', {class: 'rank-row rank-header'}, [
      el('span', {text: 'head'}),
      el('span', {class: 'rank-value', text: 'to prev.'}),
      el('span', {class: 'rank-change', text: metricLabel(scene.metric)}),
    ]);
    const rows = ranked.map((r) => {
      const [l, h] = r.head;
      return el('div', {
        class: 'rank-row',
        attrs: {role: 'listitem', tabindex: '0', 'data-head': `${l}.${h}`, 'aria-selected': String(picked.has(`${l}.${h}`))},
        title: `Layer ${l}, head ${h}: each token pays ${(r.value * 100).toFixed(1)} % of its attention to the token before it (mean over the probe’s inputs)`,
        on: {
          click: (event) => this.pick([l, h], (event as MouseEvent).shiftKey),
          dblclick: () => this.context.store.update({view: 'head', layer: l, heads: [h], picks: []}),
          mouseenter: () => this.setHoverCell([l, h], null),
          mouseleave: () => this.setHoverCell(null, null),
        },
      }, [
        el('span', {class: 'rank-head-name', text: `L${l} H${h}`}),
        el('span', {class: 'rank-value', text: `${(r.value * 100).toFixed(1)}%`}),
        el('span', {class: 'rank-change', text: valueText(scene.grid[l]?.[h])}),
      ]);
    });
    this.rankList.replaceChildren(header, ...rows);
  }

  private cellAt(event: MouseEvent): HeadRef | null {
    if (!this.geometry) return null;
    const {x, y} = pointIn(this.heatCanvas, event);
    return this.geometry.hit(x, y);
  }

  private heatPointer(event: MouseEvent): void {
    const cell = this.cellAt(event);
    this.heatCanvas.style.cursor = cell ? 'pointer' : 'default';
    this.setHoverCell(cell, cell ? event : null);
  }

  private setHoverCell(cell: HeadRef | null, event: MouseEvent | null): void {
    const scene = this.scene;
    if (!scene) return;
    const same = cell?.[0] === this.hoverCell?.[0] && cell?.[1] === this.hoverCell?.[1];
    const sameLayer = cell?.[0] === this.hoverCell?.[0];
    this.hoverCell = cell;
    if (cell && event) {
      const [l, h] = cell;
      const value = scene.grid[l]?.[h];
      const base = scene.baseline[l]?.[h];
      const lines: TooltipLine[] = [
        {label: `Layer ${l} · head ${h}`, strong: true},
        {label: `${metricLabel(scene.metric)} at step ${scene.step}`, value: valueText(value)},
      ];
      if (scene.steps.length > 1 && value !== null && base !== null && Number.isFinite(value) && Number.isFinite(base)) {
        lines.push({label: `change since step ${scene.steps[0]}`, value: valueText(value - base, true)});
      }
      if (value === null || !Number.isFinite(value)) lines.push(`no value: ${missingText(scene.metric)}`);
      lines.push('click: plot over steps · double-click: head view');
      this.tooltip.show(event.clientX, event.clientY, lines);
    } else {
      this.tooltip.hide();
    }
    if (!same) this.drawHeatmap();
    if (!sameLayer) this.drawCharts(); // the per-layer chart highlights the hovered layer
  }

  private heatClick(event: MouseEvent): void {
    const cell = this.cellAt(event);
    if (cell) this.pick(cell, event.shiftKey || event.metaKey || event.ctrlKey);
  }

  /** Plots a head over steps (alone, or added/removed with `add`); it becomes the selected head of
   * the other views too. */
  private pick(head: HeadRef, add: boolean): void {
    const {store} = this.context;
    const [l, h] = head;
    if (!add) return store.update({picks: [], layer: l, heads: [h]});
    const current = plottedHeads(store.state);
    const has = current.some(([a, b]) => a === l && b === h);
    const picks = has ? current.filter(([a, b]) => a !== l || b !== h) : [...current, head];
    store.update(has ? {picks} : {picks, layer: l, heads: [h]});
  }

  // -------------------------------------------------------------------------------------------
  // Curves over steps

  private layoutCharts(): void {
    const scene = this.scene!;
    const {state} = scene;
    this.area.fit(this.contentHeight, 0); // measure the width first
    const width = this.area.width - 2 * PAD;
    if (scene.runs.every((r) => r.series.steps.length < 2)) {
      // One step (a corpus analysis): nothing to follow over steps.
      this.cards = [];
      this.frames = [];
      this.contentHeight = 0;
      this.area.fit(this.contentHeight, 0);
      return;
    }
    const columns = width >= TWO_COLUMNS ? 2 : 1;
    const chartW = (width - (columns - 1) * CHART_GAP) / columns;
    const allSteps = [...new Set(scene.runs.flatMap((r) => r.series.steps))].sort((a, b) => a - b);
    const xDomain: [number, number] = [allSteps[0] ?? 0, allSteps[allSteps.length - 1] ?? 1];
    const positiveMin = allSteps.find((s) => s > 0) ?? 1;
    const x = {domain: xDomain, log: state.xlog};
    const smoothing = state.smoothing;
    const color = (run: string) => this.context.runColors.color(run);
    const runLine = (run: string, xs: number[], values: (number | null)[], key = run): Line => ({
      key,
      label: run,
      color: color(run),
      xs,
      ys: smooth(values, smoothing),
      raw: smoothing > 0 ? values : undefined,
      width: run === scene.primary ? 1.75 : 1.5,
    });
    const label = metricLabel(scene.metric);
    const top = this.layoutFilmstrip(width);
    const specs: {kind: Card['kind']; title: string; subtitle: string; lines: Line[]; head?: HeadRef}[] = [];
    specs.push({
      kind: 'all',
      title: `${label}: mean of all heads`,
      subtitle: scene.runs.length > 1 ? `${scene.runs.length} runs` : scene.primary,
      lines: scene.runs.map((r) => runLine(r.run, r.series.steps, r.stats.all)),
    });
    const primary = scene.runs[0];
    specs.push({
      kind: 'layers',
      title: `${label}: mean per layer`,
      subtitle: scene.primary,
      lines: primary.stats.layers.map((values, l) => ({
        key: `L${l}`,
        label: `Layer ${l}`,
        color: layerColor(l, scene.numLayers),
        xs: primary.series.steps,
        ys: smooth(values, smoothing),
        raw: smoothing > 0 ? values : undefined,
        width: 1.25,
      })),
    });
    for (const [l, h] of scene.picks) {
      specs.push({
        kind: 'head',
        head: [l, h],
        title: `Layer ${l} · head ${h}`,
        subtitle: label,
        lines: scene.runs.map((r) => runLine(r.run, r.series.steps, r.series.values.map((grid) => grid[l]?.[h] ?? null))),
      });
    }
    this.cards = specs.map((spec, i) => {
      const row = Math.floor(i / columns);
      const column = i % columns;
      const box: Rect = {x: PAD + column * (chartW + CHART_GAP), y: top + row * (CHART_HEIGHT + CHART_GAP), w: chartW, h: CHART_HEIGHT};
      const y = extentOf(spec.lines.flatMap((l) => [l.ys, l.raw ?? []]));
      return {kind: spec.kind, head: spec.head, lines: spec.lines, chart: new LineChart(box, spec.title, x, y, spec.subtitle, positiveMin)};
    });
    const rows = Math.ceil((this.cards.length + (scene.picks.length ? 0 : 1)) / columns);
    this.contentHeight = top + rows * (CHART_HEIGHT + CHART_GAP) + PAD;
    this.area.fit(this.contentHeight, 0);
  }

  /** The filmstrip: the heatmap at up to MAX_FRAMES steps spread over the run, so heads can be
   * seen specialising at a glance; returns where the charts start. */
  private layoutFilmstrip(width: number): number {
    const scene = this.scene!;
    const {steps, numLayers, numHeads} = scene;
    this.frames = [];
    if (steps.length < 2) return PAD;
    const cellW = Math.max(2, Math.min(10, Math.floor(110 / numHeads)));
    const cellH = Math.max(2, Math.min(cellW, Math.floor(80 / numLayers)));
    const frameW = cellW * numHeads;
    const count = Math.max(2, Math.min(MAX_FRAMES, steps.length, Math.floor((width + FRAME_GAP) / (frameW + FRAME_GAP))));
    const indices = [...new Set(Array.from({length: count}, (_, i) => Math.round((i * (steps.length - 1)) / (count - 1))))];
    const spread = indices.length > 1 ? (width - frameW) / (indices.length - 1) : 0;
    const y = PAD + 22;
    this.frames = indices.map((index, i) => ({
      step: steps[index],
      index,
      geometry: new HeatmapGeometry(PAD + Math.round(i * Math.min(spread, frameW + 4 * FRAME_GAP)), y, numLayers, numHeads, cellW, cellH),
    }));
    return y + cellH * numLayers + FRAME_LABEL + CHART_GAP;
  }

  private paintFilmstrip(painter: Painter): void {
    const scene = this.scene!;
    if (!this.frames.length) return;
    const scale = scene.runs[0].stats.scale;
    const values = scene.runs[0].series.values;
    painter.text(`${metricLabel(scene.metric)} over the run`, PAD + 4, PAD + 6, {font: FONT_TITLE, color: INK});
    painter.text('each head at a few steps · click one to show it', PAD + 4 + textWidth(`${metricLabel(scene.metric)} over the run`, FONT_TITLE) + 8, PAD + 6, {
      font: FONT_SMALL,
      color: MUTED_INK,
    });
    this.frames.forEach((frame, i) => {
      const g = frame.geometry;
      paintHeatmap(painter, g, values[frame.index], scale, {labels: false});
      const current = frame.step === scene.step;
      if (current || this.hoverFrame === i) painter.strokeRect(g.x - 2.5, g.y - 2.5, g.width + 5, g.height + 5, current ? ACCENT : MUTED_INK, current ? 2 : 1);
      painter.text(`step ${frame.step}`, g.x + g.width / 2, g.y + g.height + 10, {
        font: FONT_SMALL,
        color: current ? INK : MUTED_INK,
        align: 'center',
      });
    });
  }

  private paintCharts(painter: Painter): void {
    const scene = this.scene!;
    const hover = this.hoverChart;
    const hoverLayer = this.hoverCell ? `L${this.hoverCell[0]}` : null;
    this.paintFilmstrip(painter);
    this.cards.forEach((card, i) => {
      const cursor = hover?.card === i ? hover.x : null;
      const highlight = hover?.card === i ? hover.line : card.kind === 'layers' ? hoverLayer : null;
      card.chart.paint(painter, card.lines, [], {marker: scene.step, cursor, highlight});
      if (card.kind === 'layers') this.paintLayerKey(painter, card.chart, scene.numLayers);
    });
    if (!scene.picks.length) {
      const columns = this.cards.length > 1 && this.cards[1].chart.box.y === this.cards[0].chart.box.y ? 2 : 1;
      const at = this.cards.length;
      const first = this.cards[0].chart.box;
      const box = {
        x: PAD + (at % columns) * (first.w + CHART_GAP),
        y: first.y + Math.floor(at / columns) * (CHART_HEIGHT + CHART_GAP),
        w: first.w,
        h: CHART_HEIGHT,
      };
      painter.strokeRect(box.x + 0.5, box.y + 0.5, box.w - 1, box.h - 1, '#e0e0e0', 1);
      painter.text('Click heads in the heatmap (or the list) to plot them over steps here.', box.x + box.w / 2, box.y + box.h / 2 - 9, {
        font: FONT_SMALL,
        color: MUTED_INK,
        align: 'center',
      });
      painter.text('Shift-click adds a head; other runs overlay from the toolbar.', box.x + box.w / 2, box.y + box.h / 2 + 9, {
        font: FONT_SMALL,
        color: MUTED_INK,
        align: 'center',
      });
    }
  }

  /** The colour key of the per-layer chart: first to last layer. */
  private paintLayerKey(painter: Painter, chart: LineChart, numLayers: number): void {
    const box = chart.box;
    const w = 90;
    const x = box.x + box.w - w - 30;
    // In the title row when the title leaves room, else along the top of the plot.
    const title = textWidth(chart.title, FONT_TITLE) + textWidth(chart.subtitle, FONT_SMALL) + 30;
    const y = title < x - box.x - 20 ? box.y + 6 : chart.plot.y + 6;
    const steps = 24;
    for (let s = 0; s < steps; s++) painter.rect(x + (s * w) / steps, y, w / steps + 0.5, 7, layerColor((s / (steps - 1)) * (numLayers - 1), numLayers));
    painter.text('L0', x - 4, y + 4, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    painter.text(`L${numLayers - 1}`, x + w + 4, y + 4, {font: FONT_SMALL, color: MUTED_INK});
  }

  private drawCharts(): void {
    if (!this.scene) return;
    const painter = this.area.painter();
    if (!this.cards.length) {
      const x = this.area.width / 2;
      const y = Math.min(160, this.area.height / 2);
      painter.text(`${this.scene.primary} has one step of ${this.scene.probe}: there is nothing to follow over steps.`, x, y, {font: FONT_TITLE, color: MUTED_INK, align: 'center'});
      painter.text('The Analysis view shows every metric of this step; runs with more steps can be overlaid from the toolbar.', x, y + 20, {
        font: FONT_SMALL,
        color: MUTED_INK,
        align: 'center',
      });
      this.area.canvas.dataset.charts = '[]';
      return;
    }
    painter.translate(0, -this.area.scrollTop, () => this.paintCharts(painter));
    const data = this.area.canvas.dataset;
    data.charts = JSON.stringify(this.cards.map((c) => ({kind: c.kind, head: c.head ?? null, lines: c.lines.length, box: c.chart.box})));
  }

  private cardAt(event: MouseEvent): {index: number; x: number; y: number} | null {
    const {x, y} = this.area.point(event);
    const cy = y + this.area.scrollTop;
    const index = this.cards.findIndex((c) => {
      const p = c.chart.plot;
      return x >= p.x - 6 && x <= p.x + p.w + 6 && cy >= p.y - 6 && cy <= p.y + p.h + 6;
    });
    return index < 0 ? null : {index, x, y: cy};
  }

  private frameAt(event: MouseEvent): number | null {
    const {x, y} = this.area.point(event);
    const cy = y + this.area.scrollTop;
    const i = this.frames.findIndex((f) => {
      const g = f.geometry;
      return x >= g.x - 3 && x <= g.x + g.width + 3 && cy >= g.y - 3 && cy <= g.y + g.height + FRAME_LABEL;
    });
    return i < 0 ? null : i;
  }

  private chartPointer(event: MouseEvent): void {
    const frame = this.frameAt(event);
    if (frame !== this.hoverFrame) {
      this.hoverFrame = frame;
      this.drawCharts();
    }
    if (frame !== null) {
      this.area.canvas.style.cursor = 'pointer';
      this.tooltip.show(event.clientX, event.clientY, [{label: `step ${this.frames[frame].step}`, strong: true}, 'click: show this step']);
      return;
    }
    const scene = this.scene;
    const at = scene ? this.cardAt(event) : null;
    if (!scene || !at) {
      if (this.hoverChart) {
        this.hoverChart = null;
        this.tooltip.hide();
        this.drawCharts();
      }
      return;
    }
    const card = this.cards[at.index];
    const xs = [...new Set(card.lines.flatMap((l) => l.xs))].sort((a, b) => a - b);
    const step = card.chart.nearestX(at.x, xs);
    if (step === null) return;
    let lineKey: string | null = null;
    const lines: TooltipLine[] = [{label: `step ${step}`, strong: true}];
    const entry = (l: Line) => {
      const i = l.xs.indexOf(step);
      if (i < 0) return null;
      const raw = l.raw?.[i];
      const value = valueText(l.ys[i]) + (raw !== undefined && raw !== l.ys[i] ? ` (raw ${valueText(raw)})` : '');
      return {color: l.color, label: l.label, value};
    };
    if (card.kind === 'layers') {
      const near = card.chart.nearestLine(at.x, at.y, card.lines);
      lineKey = near?.line.key ?? null;
      const shown = near ? [near.line] : [];
      for (const l of shown) {
        const e = entry(l);
        if (e) lines.push({...e, label: `${l.label}, mean of heads`});
      }
      if (!near) lines.push('point at a line to read it');
    } else {
      for (const l of card.lines) {
        const e = entry(l);
        if (e) lines.push(e);
      }
    }
    lines.push('click: show this step');
    this.tooltip.show(event.clientX, event.clientY, lines);
    this.area.canvas.style.cursor = 'crosshair';
    this.hoverChart = {card: at.index, x: step, line: lineKey};
    this.drawCharts();
  }

  private chartClick(event: MouseEvent): void {
    const frame = this.frameAt(event);
    if (frame !== null && this.scene) {
      const step = this.frames[frame].step;
      const steps = this.scene.steps;
      return this.context.store.update({step: step === steps[steps.length - 1] ? null : step});
    }
    const scene = this.scene;
    const at = scene ? this.cardAt(event) : null;
    if (!scene || !at) return;
    const card = this.cards[at.index];
    const step = card.chart.nearestX(at.x, scene.steps);
    if (step === null) return;
    const newest = scene.steps[scene.steps.length - 1];
    this.context.store.update({step: step === newest ? null : step});
    if (card.kind === 'layers' && this.hoverChart?.line) {
      const layer = Number(this.hoverChart.line.slice(1));
      this.context.store.update({layer});
    }
  }

  /** The export: the heatmap with its legend on the left, every chart on the right. */
  paint(painter: Painter): void {
    if (!this.scene) return;
    this.paintHeatmap(painter);
    painter.translate(this.sideWidth, 0, () => this.paintCharts(painter));
  }
}
