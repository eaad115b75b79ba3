// The Metrics view's heatmap: the metric of every head at the panel's step, its colour legend,
// the picked heads outlined; hover reads a head, click picks it, double-click opens it.

import {fitHeatmap, hasMissing, HEATMAP_LEFT, LEGEND_HEIGHT, paintHeatmap, paintLegend, type HeatmapGeometry} from '../../components/heatmap';
import {isAdditive, onPointer} from '../../components/pointer';
import {el} from '../../draw/dom';
import {metricAbout, metricLabel, missingText, valueText} from '../../model/metrics';
import {CanvasPainter, textWidth, type Painter} from '../../draw/painter';
import type {HeadRef} from '../../state/state';
import {FONT_SMALL, FONT_TITLE, INK, MUTED_INK} from '../../draw/theme';
import {truncate} from '../../model/tokens';
import type {Tooltip, TooltipLine} from '../../draw/tooltip';
import type {MetricsScene} from './scene';

const PAD = 14;
const TARGET_WIDTH = 300; // px of cells the heatmap aims for
const MIN_WIDTH = 330; // px: the heatmap's column, wide enough for the ranking
const TITLE = 44; // px above the heatmap: title and description

export interface HeatmapPaneHandlers {
  pick(head: HeadRef, add: boolean): void;
  open(head: HeadRef): void;
  /** the hovered head changed (the ranking and the per-layer chart follow it) */
  hover(head: HeadRef | null): void;
}

export class HeatmapPane {
  readonly canvas: HTMLCanvasElement;
  width = 0;
  height = 0;
  private scene: MetricsScene | null = null;
  private geometry: HeatmapGeometry | null = null;
  private hover: HeadRef | null = null;
  private valuesKey = '';

  constructor(
    private readonly tooltip: Tooltip,
    handlers: HeatmapPaneHandlers,
  ) {
    this.canvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'metric-heatmap'}});
    onPointer(this.canvas, {
      move: (at, event) => {
        const cell = this.geometry?.hit(at.x, at.y) ?? null;
        this.canvas.style.cursor = cell ? 'pointer' : 'default';
        this.showTooltip(cell, event);
        handlers.hover(cell);
      },
      leave: () => {
        this.tooltip.hide();
        handlers.hover(null);
      },
      click: (at, event) => {
        const cell = this.geometry?.hit(at.x, at.y);
        if (cell) handlers.pick(cell, isAdditive(event));
      },
      dblclick: (at) => {
        const cell = this.geometry?.hit(at.x, at.y);
        if (cell) handlers.open(cell);
      },
    });
  }

  /** Lays the heatmap out (cells about TARGET_WIDTH px across, at most about half of `maxHeight`
   * tall) and draws it; returns its column's width. */
  set(scene: MetricsScene, maxHeight: number): number {
    this.scene = scene;
    const cell = Math.max(10, Math.min(34, Math.floor(TARGET_WIDTH / scene.numHeads)));
    this.width = Math.max(MIN_WIDTH, HEATMAP_LEFT + scene.numHeads * cell + 2 * PAD);
    const room = Math.max(120, maxHeight * 0.55 - TITLE - LEGEND_HEIGHT);
    const cellH = Math.max(5, Math.min(cell, Math.floor(room / scene.numLayers)));
    this.geometry = fitHeatmap({x: PAD, y: TITLE, w: HEATMAP_LEFT + scene.numHeads * cell, h: scene.numLayers * cellH + 16}, scene.numLayers, scene.numHeads, cell);
    this.height = this.geometry.y + this.geometry.height + 14 + LEGEND_HEIGHT;
    this.canvas.style.height = `${this.height}px`;
    this.draw();
    return this.width;
  }

  setHover(head: HeadRef | null): void {
    if (head?.[0] === this.hover?.[0] && head?.[1] === this.hover?.[1]) return;
    this.hover = head;
    this.draw();
  }

  paint(painter: Painter): void {
    const {scene, geometry: g} = this;
    if (!scene || !g) return;
    const scale = scene.runs[0].stats.scale;
    const label = metricLabel(scene.metric);
    painter.text(label, PAD, 12, {font: FONT_TITLE, color: INK});
    painter.text(`step ${scene.step} · ${scene.primary}${scene.group === null ? '' : ` · ${scene.group} attention`}`, PAD + textWidth(label, FONT_TITLE) + 8, 12, {font: FONT_SMALL, color: MUTED_INK});
    const about = scene.steps.length > 1 ? `${metricAbout(scene.metric)} · colours span all steps` : metricAbout(scene.metric);
    painter.text(truncate(about, Math.floor((this.width - 2 * PAD) / 4.8)), PAD, 28, {font: FONT_SMALL, color: MUTED_INK});
    paintHeatmap(painter, g, scene.grid, scale, {picked: scene.picks, hover: this.hover});
    paintLegend(painter, g.x, g.y + g.height + 12, Math.max(160, Math.min(g.width, 260)), scale, hasMissing(scene.grid), missingText(scene.metric));
  }

  private draw(): void {
    const {scene, geometry: g} = this;
    if (!scene || !g) return;
    this.paint(new CanvasPainter(this.canvas, this.width, this.height));
    const data = this.canvas.dataset;
    data.run = scene.primary;
    data.metric = scene.metric;
    data.group = scene.group ?? '';
    data.step = String(scene.step);
    data.picks = scene.picks.map(([l, h]) => `${l}.${h}`).join(',');
    data.layout = JSON.stringify({x: g.x, y: g.y, cellW: g.cellW, cellH: g.cellH, layers: g.rows, heads: g.cols});
    // The values drawn, for tests and tools (set only when they change: hovering redraws).
    const valuesKey = `${scene.primary}\0${scene.group}\0${scene.metric}\0${scene.step}\0${scene.runs[0].series.steps.length}`;
    if (valuesKey !== this.valuesKey) {
      this.valuesKey = valuesKey;
      data.values = JSON.stringify(scene.grid);
    }
  }

  private showTooltip(cell: HeadRef | null, event: MouseEvent): void {
    const scene = this.scene;
    if (!cell || !scene) return this.tooltip.hide();
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
  }
}
