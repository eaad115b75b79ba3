// The changes pane: a layer × head map of how much each head changed from A to B, and the heads
// ranked beside it; a click on either opens the head.

import {el} from '../draw/dom';
import {valueText, type ColorScale, type Grid} from '../model/metrics';
import {CanvasPainter, type Painter} from '../draw/painter';
import type {HeadRef} from '../state/state';
import {FONT_SMALL, FONT_TITLE, INK, MUTED_INK} from '../draw/theme';
import type {Tooltip} from '../draw/tooltip';
import {fitHeatmap, HEATMAP_LEFT, LEGEND_HEIGHT, paintHeatmap, paintLegend, type HeatmapGeometry} from './heatmap';
import {onPointer} from './pointer';
import {RankedList, type RankedCell, type RankedRow} from './ranked_list';

const PAD = 14;
const MAX_CELL = 34; // px

/** What the pane shows. */
export interface ChangesScene {
  /** attention moved (a share) rather than a metric's B − A */
  attention: boolean;
  label: string;
  grid: Grid;
  scale: ColorScale;
  /** the metric at A and at B (metric changes only) */
  a: Grid | null;
  b: Grid | null;
  /** "run · step N" of A and of B */
  labels: [string, string];
  selected: HeadRef;
  header: RankedCell[];
  rows: RankedRow[];
}

export class ChangesPane {
  readonly element: HTMLElement;
  readonly canvas: HTMLCanvasElement;
  private readonly list: RankedList;
  private scene: ChangesScene | null = null;
  private map: HeatmapGeometry | null = null;
  private size = {width: 0, height: 0};
  private hover: HeadRef | null = null;

  constructor(
    private readonly tooltip: Tooltip,
    open: (head: HeadRef) => void,
  ) {
    this.canvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'compare-changes'}});
    this.list = new RankedList('changes', 'change-row', 'change-header', {
      choose: (head) => open(head),
      hover: (head) => this.setHover(head),
    });
    this.element = el('div', {class: 'changes-layout'}, [this.canvas, el('div', {class: 'rank changes-rank'}, [this.list.element])]);
    onPointer(this.canvas, {
      move: (at, event) => {
        const head = this.map?.hit(at.x, at.y) ?? null;
        this.canvas.style.cursor = head ? 'pointer' : 'default';
        this.showTooltip(head, event);
        this.setHover(head);
      },
      leave: () => {
        this.tooltip.hide();
        this.setHover(null);
      },
      click: (at) => {
        const head = this.map?.hit(at.x, at.y);
        if (head) open(head);
      },
    });
  }

  get width(): number {
    return this.size.width;
  }

  get height(): number {
    return this.size.height;
  }

  set(scene: ChangesScene): void {
    this.scene = scene;
    this.list.set(scene.header, scene.rows);
  }

  /** Fits the map to a body `height` px tall and draws it. */
  resize(height: number): void {
    const c = this.scene;
    if (!c) return;
    const rows = c.grid.length;
    const cols = c.grid[0]?.length ?? 0;
    const width = Math.max(260, Math.min(420, HEATMAP_LEFT + cols * MAX_CELL + 2 * PAD));
    this.map = fitHeatmap({x: PAD, y: 48, w: width - 2 * PAD, h: Math.max(120, height - 48 - LEGEND_HEIGHT - 30)}, rows, cols, MAX_CELL);
    this.size = {width, height: this.map.y + this.map.height + 16 + LEGEND_HEIGHT};
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${this.size.height}px`;
    this.draw();
    this.canvas.dataset.values = JSON.stringify(c.grid);
  }

  paint(painter: Painter): void {
    const {scene: c, map: g} = this;
    if (!c || !g) return;
    painter.text(c.label, PAD, 16, {font: FONT_TITLE, color: INK});
    painter.text(`A: ${c.labels[0]}   B: ${c.labels[1]}`, PAD, 33, {font: FONT_SMALL, color: MUTED_INK});
    paintHeatmap(painter, g, c.grid, c.scale, {picked: [c.selected], hover: this.hover});
    paintLegend(painter, g.x, g.y + g.height + 12, Math.min(g.width, 240), c.scale);
  }

  private draw(): void {
    if (this.map) this.paint(new CanvasPainter(this.canvas, this.size.width, this.size.height));
  }

  private setHover(head: HeadRef | null): void {
    if (head?.[0] === this.hover?.[0] && head?.[1] === this.hover?.[1]) return;
    this.hover = head;
    this.draw();
  }

  private showTooltip(head: HeadRef | null, event: MouseEvent): void {
    const c = this.scene;
    if (!head || !c) return this.tooltip.hide();
    const [l, h] = head;
    this.tooltip.show(event.clientX, event.clientY, [
      {label: `Layer ${l} · head ${h}`, strong: true},
      ...(c.attention
        ? [{label: 'attention moved', value: `${((c.grid[l][h] ?? 0) * 100).toFixed(1)}%`}]
        : [
            {label: 'A', value: valueText(c.a?.[l]?.[h])},
            {label: 'B', value: valueText(c.b?.[l]?.[h])},
            {label: 'B − A', value: valueText(c.grid[l]?.[h], true)},
          ]),
      'click: see its difference',
    ]);
  }
}
