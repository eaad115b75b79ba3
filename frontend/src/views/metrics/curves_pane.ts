// The Metrics view's curves over steps: a filmstrip of the heatmap over the run, then the mean of
// all heads (one line per run), the mean of each layer, and one chart per picked head. Hover reads
// a step; a click goes to it (on the per-layer chart, to the layer pointed at too).

import {frameAt, layoutFilmstrip, paintFilmstrip, type Frame} from '../../components/filmstrip';
import {extentOf, LineChart, type Line} from '../../components/line_chart';
import {onPointer} from '../../components/pointer';
import {layerColor, metricLabel, smooth, valueText} from '../../model/metrics';
import {textWidth, type Painter, type Rect} from '../../draw/painter';
import type {HeadRef} from '../../state/state';
import {BORDER, FONT_SMALL, FONT_TITLE, MUTED_INK} from '../../draw/theme';
import type {Tooltip, TooltipLine} from '../../draw/tooltip';
import {ScrollingCanvas} from '../shared/scrolling_canvas';
import type {MetricsScene} from './scene';

const PAD = 14; // px around the figures
const CHART_HEIGHT = 220; // px per chart
const CHART_GAP = 16; // px between charts
const TWO_COLUMNS = 720; // px of chart area from which charts sit two per row

interface Card {
  kind: 'all' | 'layers' | 'head';
  chart: LineChart;
  lines: Line[];
  head?: HeadRef;
}

export interface CurvesPaneHandlers {
  /** a click on a step (and, on the per-layer chart, the layer of the line pointed at) */
  choose(step: number, layer: number | null): void;
}

export class CurvesPane {
  readonly area: ScrollingCanvas;
  contentHeight = 0;
  private scene: MetricsScene | null = null;
  private color: (run: string) => string = () => MUTED_INK;
  private cards: Card[] = [];
  private frames: Frame[] = [];
  private hoverFrame: number | null = null;
  private hoverChart: {card: number; x: number; line: string | null} | null = null;
  /** the layer hovered in the heatmap: its line stands out in the per-layer chart */
  private hoverLayer: number | null = null;

  constructor(
    private readonly tooltip: Tooltip,
    private readonly handlers: CurvesPaneHandlers,
  ) {
    this.area = new ScrollingCanvas('metric-curves', () => this.draw());
    onPointer(
      this.area.canvas,
      {
        move: (at, event) => this.pointer(at, event),
        leave: () => {
          this.hoverChart = null;
          this.hoverFrame = null;
          this.tooltip.hide();
          this.draw();
        },
        click: (at) => this.click(at),
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

  /** Lays the charts out for `scene` (`color`: a run's colour) and draws them. */
  set(scene: MetricsScene, color: (run: string) => string): void {
    this.scene = scene;
    this.color = color;
    this.layout();
    this.draw();
  }

  setHoverLayer(layer: number | null): void {
    if (layer === this.hoverLayer) return;
    this.hoverLayer = layer;
    this.draw();
  }

  private layout(): void {
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
    const x = {domain: xDomain, log: state.metrics.xlog};
    const smoothing = state.metrics.smoothing;
    const runLine = (run: string, xs: number[], values: (number | null)[]): Line => ({
      key: run,
      label: run,
      color: this.color(run),
      xs,
      ys: smooth(values, smoothing),
      raw: smoothing > 0 ? values : undefined,
      width: run === scene.primary ? 1.75 : 1.5,
    });
    const label = metricLabel(scene.metric);
    const strip = layoutFilmstrip(scene.steps, scene.numLayers, scene.numHeads, PAD, PAD, width);
    this.frames = strip.frames;
    const top = PAD + strip.height;
    const primary = scene.runs[0];
    const specs: {kind: Card['kind']; title: string; subtitle: string; lines: Line[]; head?: HeadRef}[] = [
      {
        kind: 'all',
        title: `${label}: mean of all heads`,
        subtitle: scene.runs.length > 1 ? `${scene.runs.length} runs` : scene.primary,
        lines: scene.runs.map((r) => runLine(r.run, r.series.steps, r.stats.all)),
      },
      {
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
      },
      ...scene.picks.map(([l, h]) => ({
        kind: 'head' as const,
        head: [l, h] as HeadRef,
        title: `Layer ${l} · head ${h}`,
        subtitle: label,
        lines: scene.runs.map((r) => runLine(r.run, r.series.steps, r.series.values.map((grid) => grid[l]?.[h] ?? null))),
      })),
    ];
    this.cards = specs.map((spec, i) => {
      const box: Rect = {x: PAD + (i % columns) * (chartW + CHART_GAP), y: top + Math.floor(i / columns) * (CHART_HEIGHT + CHART_GAP), w: chartW, h: CHART_HEIGHT};
      const y = extentOf(spec.lines.flatMap((l) => [l.ys, l.raw ?? []]));
      return {kind: spec.kind, head: spec.head, lines: spec.lines, chart: new LineChart(box, spec.title, x, y, spec.subtitle, positiveMin)};
    });
    const rows = Math.ceil((this.cards.length + (scene.picks.length ? 0 : 1)) / columns);
    this.contentHeight = top + rows * (CHART_HEIGHT + CHART_GAP) + PAD;
    this.area.fit(this.contentHeight, 0);
  }

  paint(painter: Painter): void {
    const scene = this.scene;
    if (!scene) return;
    const hover = this.hoverChart;
    const primary = scene.runs[0];
    paintFilmstrip(painter, this.frames, primary.series.values, primary.stats.scale, `${metricLabel(scene.metric)} over the run`, scene.step, this.hoverFrame);
    this.cards.forEach((card, i) => {
      const cursor = hover?.card === i ? hover.x : null;
      const highlight = hover?.card === i ? hover.line : card.kind === 'layers' && this.hoverLayer !== null ? `L${this.hoverLayer}` : null;
      card.chart.paint(painter, card.lines, [], {marker: scene.step, cursor, highlight});
      if (card.kind === 'layers') paintLayerKey(painter, card.chart, scene.numLayers);
    });
    if (!scene.picks.length && this.cards.length) this.paintPickHint(painter);
  }

  /** Where the first picked head's chart will go: how to pick one. */
  private paintPickHint(painter: Painter): void {
    const first = this.cards[0].chart.box;
    const columns = this.cards.length > 1 && this.cards[1].chart.box.y === first.y ? 2 : 1;
    const at = this.cards.length;
    const box = {x: PAD + (at % columns) * (first.w + CHART_GAP), y: first.y + Math.floor(at / columns) * (CHART_HEIGHT + CHART_GAP), w: first.w, h: CHART_HEIGHT};
    painter.strokeRect(box.x + 0.5, box.y + 0.5, box.w - 1, box.h - 1, BORDER, 1);
    const style = {font: FONT_SMALL, color: MUTED_INK, align: 'center' as const};
    painter.text('Click heads in the heatmap (or the list) to plot them over steps here.', box.x + box.w / 2, box.y + box.h / 2 - 9, style);
    painter.text('Shift-click adds a head; other runs overlay from the toolbar.', box.x + box.w / 2, box.y + box.h / 2 + 9, style);
  }

  draw(): void {
    const scene = this.scene;
    if (!scene) return;
    const painter = this.area.painter();
    if (!this.cards.length) {
      const x = this.area.width / 2;
      const y = Math.min(160, this.area.height / 2);
      painter.text(`${scene.primary} has one step of ${scene.probe}: there is nothing to follow over steps.`, x, y, {font: FONT_TITLE, color: MUTED_INK, align: 'center'});
      painter.text('The Analysis view shows every metric of this step; runs with more steps can be overlaid from the toolbar.', x, y + 20, {
        font: FONT_SMALL,
        color: MUTED_INK,
        align: 'center',
      });
      this.area.canvas.dataset.charts = '[]';
      return;
    }
    painter.translate(0, -this.area.scrollTop, () => this.paint(painter));
    this.area.canvas.dataset.charts = JSON.stringify(this.cards.map((c) => ({kind: c.kind, head: c.head ?? null, lines: c.lines.length, box: c.chart.box})));
  }

  private cardAt(at: {x: number; y: number}): number | null {
    const index = this.cards.findIndex(({chart: {plot: p}}) => at.x >= p.x - 6 && at.x <= p.x + p.w + 6 && at.y >= p.y - 6 && at.y <= p.y + p.h + 6);
    return index < 0 ? null : index;
  }

  private pointer(at: {x: number; y: number}, event: MouseEvent): void {
    const frame = frameAt(this.frames, at);
    if (frame !== this.hoverFrame) {
      this.hoverFrame = frame;
      this.draw();
    }
    if (frame !== null) {
      this.area.canvas.style.cursor = 'pointer';
      this.tooltip.show(event.clientX, event.clientY, [{label: `step ${this.frames[frame].step}`, strong: true}, 'click: show this step']);
      return;
    }
    const index = this.scene ? this.cardAt(at) : null;
    if (index === null) {
      if (this.hoverChart) {
        this.hoverChart = null;
        this.tooltip.hide();
        this.draw();
      }
      return;
    }
    const card = this.cards[index];
    const xs = [...new Set(card.lines.flatMap((l) => l.xs))].sort((a, b) => a - b);
    const step = card.chart.nearestX(at.x, xs);
    if (step === null) return;
    let lineKey: string | null = null;
    const lines: TooltipLine[] = [{label: `step ${step}`, strong: true}];
    const entry = (l: Line) => {
      const i = l.xs.indexOf(step);
      if (i < 0) return null;
      const raw = l.raw?.[i];
      return {color: l.color, label: l.label, value: valueText(l.ys[i]) + (raw !== undefined && raw !== l.ys[i] ? ` (raw ${valueText(raw)})` : '')};
    };
    if (card.kind === 'layers') {
      const near = card.chart.nearestLine(at.x, at.y, card.lines);
      lineKey = near?.line.key ?? null;
      const e = near ? entry(near.line) : null;
      if (e) lines.push({...e, label: `${near!.line.label}, mean of heads`});
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
    this.hoverChart = {card: index, x: step, line: lineKey};
    this.draw();
  }

  private click(at: {x: number; y: number}): void {
    const frame = frameAt(this.frames, at);
    if (frame !== null) return this.handlers.choose(this.frames[frame].step, null);
    const scene = this.scene;
    const index = scene ? this.cardAt(at) : null;
    if (!scene || index === null) return;
    const card = this.cards[index];
    const step = card.chart.nearestX(at.x, scene.steps);
    if (step === null) return;
    const line = card.kind === 'layers' ? this.hoverChart?.line : null;
    this.handlers.choose(step, line ? Number(line.slice(1)) : null);
  }
}

/** The colour key of the per-layer chart: first to last layer. */
function paintLayerKey(painter: Painter, chart: LineChart, numLayers: number): void {
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
