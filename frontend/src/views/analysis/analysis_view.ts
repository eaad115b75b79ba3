// Analysis view: the aggregate analysis of Vig & Belinkov's poster, interactive, for one step of a
// probe (a corpus run's step 0, or any training step). Layer x head heatmaps of each metric with
// their per-layer curves, parts of speech received and paid, and scatters of heads (distance
// against entropy and against dependency alignment) with their correlation. Hover reads a value;
// click opens the head in the head view.

import type {ProbeMetrics} from '../../data/api';
import {hasMissing, HEATMAP_LEFT, paintHeatmap, paintLegend} from '../../components/heatmap';
import {inside, paintAxisTitles, type Dot} from '../../components/line_chart';
import {onPointer, type Point} from '../../components/pointer';
import {LastAnswer, type AnyRequest} from '../../data/cache';
import * as requests from '../../data/requests';
import {el, hideViewMessage, showViewMessage} from '../../draw/dom';
import {layerColor, metricLabel, missingText, posParts, UPOS_NAMES, valueText} from '../../model/metrics';
import {textWidth, type Painter, type Rect} from '../../draw/painter';
import {metricTag} from '../../data/schema';
import {nearestStep, probeMetrics} from '../../state/selection';
import {plottedHeads, type HeadRef, type Section} from '../../state/state';
import {ACCENT, FONT_SMALL, FONT_TITLE, INK, MUTED_INK} from '../../draw/theme';
import {truncate} from '../../model/tokens';
import {Tooltip, type TooltipLine} from '../../draw/tooltip';
import {analysisCards, type Card} from './scene';
import {Segmented} from '../shared/controls';
import {ScrollingCanvas} from '../shared/scrolling_canvas';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';

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
    ], (section) => store.update({analysis: {section}}));
    this.posSelect = el('select', {attrs: {'aria-label': 'Part of speech', 'data-control': 'pos'}});
    this.posSelect.addEventListener('change', () => store.update({analysis: {pos: this.posSelect.value}}));
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
    onPointer(
      this.area.canvas,
      {
        move: (at, event) => this.pointer(at, event),
        leave: () => this.setHover(null, null),
        click: (at) => {
          const hover = this.hit(at);
          if (hover?.head) store.update({view: 'head', focus: {layer: hover.head[0], heads: [hover.head[1]]}, metrics: {picks: []}});
        },
      },
      (event) => {
        const {x, y} = this.area.point(event);
        return {x, y: y + this.area.scrollTop};
      },
    );
  }

  get width(): number {
    return this.area.width;
  }

  get height(): number {
    return this.contentHeight;
  }

  exportName(): (string | number)[] {
    const s = this.shown;
    return s ? [s.run, s.probe, `step${s.step}`, this.model?.state.analysis.section ?? ''] : [];
  }

  /** The probe's metrics at the state's step (the newest when none), snapped to the steps they
   * were logged at; null when the run logged none. */
  private request(model: ViewModel): ReturnType<typeof requests.probeMetrics> | null {
    const {state, tags, selection} = model;
    const names = probeMetrics(tags, selection.run, selection.tag);
    if (!names.length) return null;
    const metricSteps = [...tags[selection.run][metricTag(selection.tag, names[0])].steps].sort((a, b) => a - b);
    const step = state.panel.step === null ? metricSteps[metricSteps.length - 1] : nearestStep(metricSteps, state.panel.step);
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
    this.section.set(state.analysis.section);
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
    this.posControl.hidden = !posTags.length || state.analysis.section !== 'overview';
    if (posTags.length) this.posSelect.value = posTags.includes(state.analysis.pos) ? state.analysis.pos : posTags.includes('NOUN') ? 'NOUN' : posTags[0];
    const loaded = this.metrics.value;
    if (this.metrics.error) return this.show(this.metrics.error);
    if (!loaded || loaded.run !== selection.run || loaded.probe !== probe) return this.show('Loading the metrics…');
    if (state.analysis.section !== 'overview' && !Object.keys(loaded.metrics).some((m) => posParts(m)?.direction === state.analysis.section)) {
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
    ({cards: this.cards, height: this.contentHeight} = analysisCards(loaded.metrics, this.model.state.analysis.section, this.posSelect.value, this.area.element.clientWidth));
    this.area.fit(this.contentHeight, 0);
    this.draw();
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
        const dots = card.dots!.map((d) => (picked.some(([l, h]) => l === d.head[0] && h === d.head[1]) ? {...d, color: ACCENT, r: 3} : d));
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

  /** What lies under a point of the content (scroll included). */
  private hit({x, y}: Point): Hover | null {
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

  private pointer(at: Point, event: MouseEvent): void {
    const hover = this.hit(at);
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
