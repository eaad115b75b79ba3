// Analysis view: the aggregate analysis of Vig & Belinkov's poster, interactive, for one step of a
// probe (a corpus run's step 0, or any training step). Layer x head heatmaps of each metric with
// their per-layer curves, parts of speech received and paid, and scatters of heads (distance
// against entropy and against dependency alignment) with their correlation. Hover reads a value;
// click opens the head in the head view.

import type {ProbeMetrics} from '../api';
import {hasMissing, HEATMAP_LEFT, HeatmapGeometry, HEATMAP_TOP, LEGEND_HEIGHT, paintHeatmap, paintLegend} from '../components/heatmap';
import {inside, LineChart, paintAxisTitles, type Dot, type Line} from '../components/line_chart';
import {FONT_SMALL, FONT_TITLE, INK, MUTED_INK} from '../theme';
import {type Rect} from '../painter';
import {headColors} from '../colors';
import {LastAnswer, type AnyRequest} from '../data/cache';
import * as requests from '../data/requests';
import {el, frameThrottle, hideViewMessage, showViewMessage} from '../dom';
import {
  CORE_METRICS,
  layerColor,
  layerMeans,
  metricAbout,
  metricLabel,
  metricScale,
  missingText,
  pearson,
  posParts,
  UPOS_NAMES,
  valueText,
  type ColorScale,
  type Grid,
} from '../metrics';
import {textWidth, type Painter} from '../painter';
import {metricTag} from '../schema';
import {nearestStep, plottedHeads, probeMetrics, type HeadRef, type Section, type State} from '../state';
import {truncate} from '../tokens';
import {Tooltip, type TooltipLine} from '../tooltip';
import {Segmented} from './controls';
import {ScrollingCanvas} from './scrolling_canvas';
import type {View, ViewContext, ViewModel, ViewStatus} from './view';

const PAD = 14; // px around the cards
const GAP = 18; // px between cards
const MIN_CARD = 250; // px: narrowest card
const CARD_TITLE = 34; // px: title and description above a heatmap
const MAX_HEATMAP = 210; // px: tallest heatmap
const LAYER_CHART = 130; // px: the per-layer chart under a heatmap
const MAX_CELL = 30; // px

interface Card {
  kind: 'metric' | 'scatter' | 'tags';
  box: Rect;
  title: string;
  subtitle: string;
  /** metric cards */
  metric?: string;
  grid?: Grid;
  scale?: ColorScale;
  geometry?: HeatmapGeometry;
  /** per-layer chart (metric cards), scatter, or curves of every tag */
  chart?: LineChart;
  dots?: Dot[];
  lines?: Line[];
  /** scatter cards: the metrics on x and y */
  axes?: [string, string];
}

interface Hover {
  card: number;
  head: HeadRef | null;
  line: string | null;
}

export class AnalysisView implements View {
  readonly id = 'analysis' as const;
  readonly title = 'Analysis';
  readonly steps = 'probe' as const;
  readonly usesExample = false;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly section: Segmented<Section>;
  private readonly posSelect: HTMLSelectElement;
  private readonly posControl: HTMLElement;
  private readonly area: ScrollingCanvas;
  private readonly message: HTMLElement;
  private readonly caption: HTMLElement;
  private readonly tooltip: Tooltip;
  private readonly metrics = new LastAnswer<ProbeMetrics>();
  private model: ViewModel | null = null;
  private cards: Card[] = [];
  private contentHeight = 0;
  private hover: Hover | null = null;
  private tagsKey = '';
  private shown: {run: string; probe: string; step: number} | null = null;

  constructor(context: ViewContext) {
    const {store} = context;
    this.section = new Segmented<Section>('Show', 'section', [
      ['overview', 'Metrics', 'Every metric as a layer × head heatmap with its per-layer curve, and scatters of heads'],
      ['pos', 'POS received', 'For each part of speech, the share of attention its tokens receive'],
      ['pos_from', 'POS paid', 'For each part of speech, the share of attention its tokens pay'],
    ], (section) => store.update({section}));
    this.posSelect = el('select', {attrs: {'aria-label': 'Part of speech', 'data-control': 'pos'}});
    this.posSelect.addEventListener('change', () => store.update({pos: this.posSelect.value}));
    this.posControl = el('label', {class: 'control', title: 'The part of speech of the two POS heatmaps (attention to and from its tokens)'}, [
      el('span', {class: 'control-label', text: 'Part of speech'}),
      this.posSelect,
    ]);
    this.toolbar = el('div', {class: 'toolbar-group'}, [this.section.element, this.posControl]);
    this.area = new ScrollingCanvas('analysis', () => this.draw());
    this.message = el('div', {class: 'message', attrs: {'data-message': 'analysis'}});
    this.caption = el('div', {class: 'inspector'});
    this.element = el('div', {class: 'view view-analysis'}, [this.message, this.area.element, this.caption]);
    this.tooltip = new Tooltip(this.element);
    this.area.canvas.addEventListener('mousemove', frameThrottle((event: MouseEvent) => this.pointer(event)));
    this.area.canvas.addEventListener('mouseleave', () => this.setHover(null, null));
    this.area.canvas.addEventListener('click', (event) => {
      const hover = this.hit(event);
      if (hover?.head) store.update({view: 'head', layer: hover.head[0], heads: [hover.head[1]], picks: []});
    });
  }

  get width(): number {
    return this.area.width;
  }

  get height(): number {
    return this.contentHeight;
  }

  exportName(): (string | number)[] {
    const s = this.shown;
    return s ? [s.run, s.probe, `step${s.step}`, this.model?.state.section ?? ''] : [];
  }

  /** The probe's metrics at the state's step (the newest when none), snapped to the steps they
   * were logged at; null when the run logged none. */
  private request(model: ViewModel): ReturnType<typeof requests.probeMetrics> | null {
    const {state, tags, selection} = model;
    const names = probeMetrics(tags, selection.run, selection.tag);
    if (!names.length) return null;
    const metricSteps = [...tags[selection.run][metricTag(selection.tag, names[0])].steps].sort((a, b) => a - b);
    const step = state.step === null ? metricSteps[metricSteps.length - 1] : nearestStep(metricSteps, state.step);
    return requests.probeMetrics(selection.run, selection.tag, step);
  }

  needs(model: ViewModel): AnyRequest[] {
    const request = this.request(model);
    return request ? [request] : [];
  }

  update(model: ViewModel): ViewStatus | null {
    this.model = model;
    const {state, tags, selection} = model;
    const probe = selection.tag;
    const names = probeMetrics(tags, selection.run, probe);
    this.section.set(state.section);
    const request = this.request(model);
    if (!request) {
      this.shown = null;
      return this.show(`Run ${JSON.stringify(selection.run)} logged no metrics for ${JSON.stringify(probe)}.`);
    }
    this.metrics.read(model.data, request);
    const posTags = [...new Set(names.flatMap((m) => posParts(m)?.tag ?? []))].sort();
    const tagsKey = posTags.join(',');
    if (tagsKey !== this.tagsKey) {
      this.tagsKey = tagsKey;
      this.posSelect.replaceChildren(...posTags.map((t) => el('option', {text: `${t} (${UPOS_NAMES[t] ?? t})`, attrs: {value: t}})));
    }
    this.posControl.hidden = !posTags.length || state.section !== 'overview';
    if (posTags.length) this.posSelect.value = posTags.includes(state.pos) ? state.pos : posTags.includes('NOUN') ? 'NOUN' : posTags[0];
    const loaded = this.metrics.value;
    if (this.metrics.error) return this.show(this.metrics.error);
    if (!loaded || loaded.run !== selection.run || loaded.probe !== probe) return this.show('Loading the metrics…');
    if (state.section !== 'overview' && !Object.keys(loaded.metrics).some((m) => posParts(m)?.direction === state.section)) {
      return this.show(`${loaded.run} logged no part-of-speech metrics for ${JSON.stringify(probe)}: they need spaCy and an English pipeline where the probe or analysis ran.`);
    }
    this.shown = {run: loaded.run, probe, step: loaded.step};
    hideViewMessage(this.element, this.message);
    this.caption.replaceChildren(
      el('span', {class: 'inspector-token', text: `${loaded.run} · ${probe} · step ${loaded.step}`}),
      el('span', {class: 'hint', text: ' · hover a head for its value · click it to open its arcs in the head view'}),
    );
    this.resize();
    return null;
  }

  private show(message: string): null {
    showViewMessage(this.element, this.message, message);
    this.tooltip.hide();
    return null;
  }

  resize(): void {
    const loaded = this.metrics.value;
    if (!this.model || !loaded || this.element.classList.contains('view-empty')) return;
    this.layout(loaded, this.model.state, this.area.element.clientWidth);
    this.area.fit(this.contentHeight, 0);
    this.draw();
  }

  /** The cards of the section, placed in a grid as wide as the view allows. */
  private layout(loaded: ProbeMetrics, state: Readonly<State>, areaWidth: number): void {
    const metrics = loaded.metrics;
    const first = Object.values(metrics)[0] ?? [];
    const numLayers = first.length;
    const numHeads = first[0]?.length ?? 0;
    const width = areaWidth - 2 * PAD;
    const columns = Math.max(1, Math.floor((width + GAP) / (MIN_CARD + GAP)));
    const cardW = Math.floor((width - (columns - 1) * GAP) / columns);
    const cell = Math.max(4, Math.min(MAX_CELL, Math.floor((cardW - HEATMAP_LEFT - 8) / Math.max(1, numHeads))));
    const cellH = Math.max(3, Math.min(cell, Math.floor(MAX_HEATMAP / Math.max(1, numLayers))));
    const heatH = HEATMAP_TOP + numLayers * cellH;
    const cardH = CARD_TITLE + heatH + 12 + LEGEND_HEIGHT + LAYER_CHART;
    const specs: Omit<Card, 'box'>[] = [];
    const metricCard = (metric: string, title = metricLabel(metric), subtitle = metricAbout(metric)): Omit<Card, 'box'> | null => {
      const grid = metrics[metric];
      return grid ? {kind: 'metric', metric, grid, title, subtitle, scale: metricScale(metric, grid.flat())} : null;
    };
    if (state.section === 'overview') {
      for (const m of CORE_METRICS) {
        const card = metricCard(m);
        if (card) specs.push(card);
      }
      const pos = this.posSelect.value;
      for (const direction of ['pos', 'pos_from'] as const) {
        const card = metricCard(`${direction}/${pos}`);
        if (card) specs.push(card);
      }
      for (const y of ['entropy', 'dependency_alignment']) {
        if (!metrics.distance || !metrics[y]) continue;
        const {r, n} = pearson(metrics.distance.flat(), metrics[y].flat());
        specs.push({
          kind: 'scatter',
          axes: ['distance', y],
          title: `Distance vs ${metricLabel(y).toLowerCase()}`,
          subtitle: r === null ? `${n} heads` : `r = ${r.toFixed(2)} over ${n} heads`,
        });
      }
    } else {
      const direction = state.section;
      const names = Object.keys(metrics)
        .filter((m) => posParts(m)?.direction === direction)
        .sort();
      const colors = headColors(names.length);
      specs.push({
        kind: 'tags',
        title: direction === 'pos' ? 'Attention received, per layer' : 'Attention paid, per layer',
        subtitle: 'mean over heads, one line per part of speech',
        lines: names.map((m, i) => ({
          key: m,
          label: posParts(m)!.tag,
          color: colors[i],
          xs: Array.from({length: numLayers}, (_, l) => l),
          ys: layerMeans(metrics[m]),
          width: 1.5,
        })),
      });
      for (const m of names) {
        const tag = posParts(m)!.tag;
        const card = metricCard(m, `${tag}`, `${UPOS_NAMES[tag] ?? tag}: ${direction === 'pos' ? 'attention received' : 'attention paid'}`);
        if (card) specs.push(card);
      }
    }
    // Layers on x, half a layer of room at each end so that the first and last heads' dots show whole.
    const layerAxis = {domain: [-0.4, Math.max(1, numLayers - 1) + 0.4] as [number, number], integer: true};
    this.cards = specs.map((spec, i) => {
      const box: Rect = {x: PAD + (i % columns) * (cardW + GAP), y: PAD + Math.floor(i / columns) * (cardH + GAP), w: cardW, h: cardH};
      const card: Card = {...spec, box};
      if (card.kind === 'metric') {
        const g = new HeatmapGeometry(box.x + HEATMAP_LEFT, box.y + CARD_TITLE + HEATMAP_TOP, numLayers, numHeads, cell, cellH);
        card.geometry = g;
        const chartBox = {x: box.x - 6, y: box.y + cardH - LAYER_CHART, w: box.w + 6, h: LAYER_CHART};
        const grid = card.grid!;
        card.dots = grid.flatMap((row, l) =>
          row.flatMap((v, h) => (v === null || !Number.isFinite(v) ? [] : [{x: l, y: v, head: [l, h] as HeadRef, color: '#9e9e9e', r: 2}])),
        );
        card.lines = [{key: 'mean', label: 'mean over heads', color: INK, xs: grid.map((_, l) => l), ys: layerMeans(grid), width: 1.75}];
        const ys = card.dots.map((d) => d.y);
        card.chart = new LineChart(chartBox, 'per layer', layerAxis, ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1], 'heads · mean');
      } else if (card.kind === 'scatter') {
        const [xm, ym] = card.axes!;
        const xs = metrics[xm];
        const ysGrid = metrics[ym];
        card.dots = xs.flatMap((row, l) =>
          row.flatMap((x, h) => {
            const y = ysGrid[l]?.[h];
            return x === null || y === null || y === undefined || !Number.isFinite(x) || !Number.isFinite(y)
              ? []
              : [{x, y, head: [l, h] as HeadRef, color: layerColor(l, numLayers), r: 3}];
          }),
        );
        const xv = card.dots.map((d) => d.x);
        const yv = card.dots.map((d) => d.y);
        const pad = (lo: number, hi: number): [number, number] => [lo - (hi - lo) * 0.05 || lo - 0.5, hi + (hi - lo) * 0.05 || hi + 0.5];
        card.chart = new LineChart(
          {x: box.x - 6, y: box.y + 4, w: box.w + 6, h: box.h - 4},
          card.title,
          {domain: xv.length ? pad(Math.min(...xv), Math.max(...xv)) : [0, 1]},
          yv.length ? pad(Math.min(...yv), Math.max(...yv)) : [0, 1],
          card.subtitle,
        );
      } else {
        const ys = card.lines!.flatMap((l) => l.ys).filter((v): v is number => v !== null && Number.isFinite(v));
        card.chart = new LineChart(
          {x: box.x - 6, y: box.y + 4, w: box.w + 6, h: box.h - 4},
          card.title,
          layerAxis,
          ys.length ? [0, Math.max(...ys) * 1.05] : [0, 1],
          '',
        );
      }
      return card;
    });
    const rows = Math.ceil(this.cards.length / columns);
    this.contentHeight = PAD + rows * (cardH + GAP) - GAP + PAD;
  }

  paint(painter: Painter): void {
    const state = this.model?.state;
    if (!state) return;
    const picked = plottedHeads(state);
    const hoverHead = this.hover?.head ?? null;
    this.cards.forEach((card, i) => {
      const hovered = this.hover?.card === i ? this.hover : null;
      if (card.kind === 'metric') {
        const g = card.geometry!;
        painter.text(card.title, card.box.x, card.box.y + 8, {font: FONT_TITLE, color: INK});
        painter.text(truncate(card.subtitle, Math.floor(card.box.w / 5.2)), card.box.x, card.box.y + 23, {font: FONT_SMALL, color: MUTED_INK});
        paintHeatmap(painter, g, card.grid!, card.scale!, {picked, hover: hoverHead});
        paintLegend(painter, g.x, g.y + g.height + 10, Math.min(card.box.w - HEATMAP_LEFT, 240), card.scale!, hasMissing(card.grid!), missingText(card.metric!));
        const hoverDot = hoverHead ? (card.dots!.find((d) => d.head[0] === hoverHead[0] && d.head[1] === hoverHead[1]) ?? null) : null;
        const dots = card.dots!.map((d) => (picked.some(([l, h]) => l === d.head[0] && h === d.head[1]) ? {...d, color: '#f57c00', r: 3} : d));
        card.chart!.paint(painter, card.lines!, dots, {hoverDot});
        paintAxisTitles(painter, card.chart!, 'layer', '');
      } else if (card.kind === 'scatter') {
        const hoverDot = hoverHead ? (card.dots!.find((d) => d.head[0] === hoverHead[0] && d.head[1] === hoverHead[1]) ?? null) : null;
        // The selected heads on top, ringed in the accent colour.
        const isPicked = (d: Dot) => picked.some(([l, h]) => l === d.head[0] && h === d.head[1]);
        const dots = [...card.dots!.filter((d) => !isPicked(d)), ...card.dots!.filter(isPicked).map((d) => ({...d, r: 4.5}))];
        card.chart!.paint(painter, [], dots, {hoverDot});
        paintAxisTitles(painter, card.chart!, metricLabel(card.axes![0]).toLowerCase(), metricLabel(card.axes![1]).toLowerCase());
        this.paintLayerKey(painter, card.chart!.box, card.dots!.length ? Math.max(...card.dots!.map((d) => d.head[0])) + 1 : 1);
      } else {
        card.chart!.paint(painter, card.lines!, [], {highlight: hovered?.line ?? null});
        paintAxisTitles(painter, card.chart!, 'layer', '');
        this.paintTagKey(painter, card);
      }
    });
  }

  /** Dots of a scatter are coloured by layer: the key, first to last. */
  private paintLayerKey(painter: Painter, box: Rect, numLayers: number): void {
    const w = 70;
    const x = box.x + box.w - w - 28;
    const y = box.y + 24;
    const steps = 20;
    for (let s = 0; s < steps; s++) painter.rect(x + (s * w) / steps, y, w / steps + 0.5, 6, layerColor((s / (steps - 1)) * (numLayers - 1), numLayers));
    painter.text('L0', x - 4, y + 3, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    painter.text(`L${numLayers - 1}`, x + w + 4, y + 3, {font: FONT_SMALL, color: MUTED_INK});
  }

  /** The key of the tags chart: each part of speech's colour, in rows along the top. */
  private paintTagKey(painter: Painter, card: Card): void {
    const plot = card.chart!.plot;
    let x = plot.x + 8;
    let y = plot.y + 16;
    for (const l of card.lines!) {
      const w = textWidth(l.label, FONT_SMALL) + 18;
      if (x + w > plot.x + plot.w) {
        x = plot.x + 8;
        y += 13;
      }
      painter.rect(x, y - 3, 9, 6, l.color);
      painter.text(l.label, x + 12, y, {font: FONT_SMALL, color: MUTED_INK});
      x += w;
    }
  }

  private draw(): void {
    if (!this.cards.length) return;
    const painter = this.area.painter();
    painter.translate(0, -this.area.scrollTop, () => this.paint(painter));
    const data = this.area.canvas.dataset;
    const shown = this.shown;
    data.step = String(shown?.step ?? '');
    data.cards = JSON.stringify(
      this.cards.map((c) => ({
        kind: c.kind,
        metric: c.metric ?? c.axes?.join(' vs ') ?? null,
        heatmap: c.geometry ? {x: c.geometry.x, y: c.geometry.y, cellW: c.geometry.cellW, cellH: c.geometry.cellH} : null,
        subtitle: c.subtitle,
      })),
    );
    data.scrollTop = String(this.area.scrollTop);
  }

  private hit(event: MouseEvent): Hover | null {
    const {x, y: sy} = this.area.point(event);
    const y = sy + this.area.scrollTop;
    const index = this.cards.findIndex((c) => inside(c.box, x, y));
    if (index < 0) return null;
    const card = this.cards[index];
    if (card.geometry) {
      const head = card.geometry.hit(x, y);
      if (head) return {card: index, head, line: null};
    }
    if (card.chart && card.dots?.length) {
      const dot = card.chart.nearestDot(x, y, card.dots);
      if (dot) return {card: index, head: dot.head, line: null};
    }
    if (card.kind === 'tags' && card.chart) {
      const near = card.chart.nearestLine(x, y, card.lines!);
      if (near) return {card: index, head: null, line: near.line.key};
    }
    return null;
  }

  private pointer(event: MouseEvent): void {
    const hover = this.hit(event);
    this.area.canvas.style.cursor = hover?.head ? 'pointer' : 'default';
    this.setHover(hover, event);
  }

  private setHover(hover: Hover | null, event: MouseEvent | null): void {
    const loaded = this.metrics.value;
    const same = hover?.card === this.hover?.card && hover?.head?.[0] === this.hover?.head?.[0] && hover?.head?.[1] === this.hover?.head?.[1] && hover?.line === this.hover?.line;
    this.hover = hover;
    if (hover && event && loaded) {
      const card = this.cards[hover.card];
      const lines: TooltipLine[] = [];
      if (hover.head) {
        const [l, h] = hover.head;
        lines.push({label: `Layer ${l} · head ${h}`, strong: true});
        const shown = card.kind === 'scatter' ? card.axes! : card.metric ? [card.metric] : [];
        for (const m of shown) {
          const v = loaded.metrics[m]?.[l]?.[h];
          lines.push({label: metricLabel(m), value: v === null || v === undefined ? missingText(m) : valueText(v)});
        }
        if (card.kind === 'metric' && !card.metric!.startsWith('pos')) {
          for (const m of ['distance', 'entropy'].filter((m) => m !== card.metric && loaded.metrics[m])) {
            lines.push({label: metricLabel(m), value: valueText(loaded.metrics[m][l]?.[h])});
          }
        }
        lines.push('click: open its arcs in the head view');
      } else if (hover.line) {
        const line = card.lines!.find((l) => l.key === hover.line)!;
        lines.push({label: `${line.label} (${UPOS_NAMES[line.label] ?? ''})`, strong: true, color: line.color});
        const x = card.chart!.nearestX(this.area.point(event).x, line.xs);
        if (x !== null) lines.push({label: `layer ${x}, mean over heads`, value: valueText(line.ys[line.xs.indexOf(x)])});
      }
      this.tooltip.show(event.clientX, event.clientY, lines);
    } else {
      this.tooltip.hide();
    }
    if (!same) this.draw();
  }
}
