// The Long view's distance profile: one row per (layer, head), one column per log2 distance bin,
// the share of the head's attention at those distances; the sink share beside it. Click a row to
// show that head's map.

import {el} from '../../draw/dom';
import {CanvasPainter, type Painter} from '../../draw/painter';
import {ACCENT, FONT_SMALL, INK, MUTED_INK} from '../../draw/theme';
import {Tooltip} from '../../draw/tooltip';
import {paintLegend, LEGEND_HEIGHT} from '../../components/heatmap';
import type {LongProfile} from '../../data/decode_long';
import {binLabel} from '../../model/long';
import {shareScale} from '../../model/metrics';

const LEFT = 44; // px: layer and head labels
const TOP = 30; // px: bin labels
const SINK_GAP = 10; // px between the bins and the sink column
const MAX_CELL = 26; // px
const MIN_ROW = 2; // px

export interface ProfileHandlers {
  picked(layer: number, head: number): void;
}

interface Geometry {
  cellW: number;
  rowH: number;
  x: number;
  y: number;
  bins: number;
  rows: number;
  sinkX: number;
}

export class ProfilePane {
  readonly element: HTMLElement;
  readonly canvas: HTMLCanvasElement;
  private readonly tooltip: Tooltip;
  private profile: LongProfile | null = null;
  private chosen: [number, number | null] = [0, null];
  private geometry: Geometry | null = null;
  private hover: [number, number, number] | null = null;
  private width = 0;
  private height = 0;

  constructor(private readonly handlers: ProfileHandlers) {
    this.canvas = el('canvas', {class: 'figure', attrs: {'data-figure': 'long-profile'}});
    this.element = el('div', {class: 'long-profile-pane'}, [el('div', {class: 'long-pane-title', text: 'Distance profile: share of each head’s attention by query–key distance'}), this.canvas]);
    this.tooltip = new Tooltip(this.element);
    this.canvas.addEventListener('mousemove', (event) => this.pointer(event));
    this.canvas.addEventListener('mouseleave', () => {
      this.hover = null;
      this.tooltip.hide();
      this.draw();
    });
    this.canvas.addEventListener('click', (event) => {
      const hit = this.hit(event.offsetX, event.offsetY);
      if (hit) this.handlers.picked(hit[0], hit[1]);
    });
  }

  /** `layer`, `head` (null: the layer's mean): what the map shows, outlined. */
  set(profile: LongProfile, layer: number, head: number | null): void {
    this.profile = profile;
    this.chosen = [layer, head];
    this.resize();
  }

  resize(): void {
    if (!this.profile) return;
    this.width = this.canvas.parentElement!.clientWidth;
    const p = this.profile;
    const bins = p.bins.length;
    const rows = p.num_layers * p.num_heads;
    const cellW = Math.max(6, Math.min(MAX_CELL, Math.floor((this.width - LEFT - SINK_GAP - 8) / (bins + 1))));
    const rowH = Math.max(MIN_ROW, Math.min(14, Math.floor(480 / rows)));
    this.geometry = {cellW, rowH, x: LEFT, y: TOP, bins, rows, sinkX: LEFT + bins * cellW + SINK_GAP};
    this.height = TOP + rows * rowH + 12 + LEGEND_HEIGHT;
    this.canvas.style.width = `${this.width}px`;
    this.canvas.style.height = `${this.height}px`;
    this.draw();
  }

  private draw(): void {
    if (!this.profile || !this.width) return;
    this.paint(new CanvasPainter(this.canvas, this.width, this.height));
  }

  paint(painter: Painter): void {
    const p = this.profile;
    const g = this.geometry;
    if (!p || !g) return;
    const scale = shareScale(1);
    const gap = g.rowH >= 6 ? 1 : 0;
    for (let l = 0; l < p.num_layers; l++) {
      for (let h = 0; h < p.num_heads; h++) {
        const r = l * p.num_heads + h;
        const y = g.y + r * g.rowH;
        const values = p.profile[l][h];
        for (let b = 0; b < g.bins; b++) painter.rect(g.x + b * g.cellW, y, g.cellW - 1, g.rowH - gap, scale.color(values[b]));
        painter.rect(g.sinkX, y, g.cellW, g.rowH - gap, scale.color(p.sink_share[l][h]));
      }
      const y = g.y + l * p.num_heads * g.rowH;
      painter.text(`L${l}`, g.x - 6, y + Math.min(7, (p.num_heads * g.rowH) / 2), {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
      if (l > 0) painter.lines([g.x - 30, y - 0.5, g.sinkX + g.cellW, y - 0.5], 1, '#ffffff', 1, 1);
    }
    const every = Math.max(1, Math.ceil(34 / g.cellW));
    for (let b = 0; b < g.bins; b += every) {
      painter.text(binLabel(p.bins[b]), g.x + (b + 0.5) * g.cellW, g.y - 8, {font: FONT_SMALL, color: MUTED_INK, align: 'left', rotate: -Math.PI / 4});
    }
    painter.text('sink', g.sinkX + g.cellW / 2, g.y - 8, {font: FONT_SMALL, color: MUTED_INK, align: 'left', rotate: -Math.PI / 4});
    const [layer, head] = this.chosen;
    const top = g.y + layer * p.num_heads * g.rowH;
    if (head === null) painter.strokeRect(g.x - 1, top - 1, g.bins * g.cellW + 1, p.num_heads * g.rowH + 1, ACCENT, 2);
    else painter.strokeRect(g.x - 1, top + head * g.rowH - 1, g.bins * g.cellW + 1, g.rowH + 1, ACCENT, 2);
    if (this.hover) {
      const [l, h, b] = this.hover;
      const x = b < g.bins ? g.x + b * g.cellW : g.sinkX;
      painter.strokeRect(x - 0.5, g.y + (l * p.num_heads + h) * g.rowH - 0.5, g.cellW, g.rowH, INK, 1.5);
    }
    paintLegend(painter, g.x, g.y + g.rows * g.rowH + 12, Math.min(220, this.width - g.x - 8), scale);
    this.canvas.dataset.layout = JSON.stringify(g);
    this.canvas.dataset.values = String(g.rows * (g.bins + 1));
  }

  /** [layer, head, bin] under a point (bin === bins: the sink column). */
  private hit(x: number, y: number): [number, number, number] | null {
    const p = this.profile;
    const g = this.geometry;
    if (!p || !g) return null;
    const r = Math.floor((y - g.y) / g.rowH);
    if (r < 0 || r >= g.rows) return null;
    let b = Math.floor((x - g.x) / g.cellW);
    if (x >= g.sinkX && x < g.sinkX + g.cellW) b = g.bins;
    else if (b < 0 || b >= g.bins) return null;
    return [Math.floor(r / p.num_heads), r % p.num_heads, b];
  }

  private pointer(event: MouseEvent): void {
    const hit = this.hit(event.offsetX, event.offsetY);
    this.hover = hit;
    this.canvas.style.cursor = hit ? 'pointer' : 'default';
    const p = this.profile!;
    if (!hit) this.tooltip.hide();
    else {
      const [l, h, b] = hit;
      const sink = b === p.bins.length;
      const [lo, hi] = sink ? [0, 0] : p.bins[b];
      this.tooltip.show(event.clientX, event.clientY, [
        {label: `Layer ${l}, head ${h}`, strong: true},
        sink
          ? {label: `Sink tokens 0–${p.sink_tokens - 1}`, value: `${(p.sink_share[l][h] * 100).toFixed(1)}%`}
          : {label: hi - lo <= 1 ? `Distance ${lo}` : `Distance ${lo.toLocaleString('en-US')}–${(hi - 1).toLocaleString('en-US')}`, value: `${(p.profile[l][h][b] * 100).toFixed(1)}%`},
        `Within 127 tokens: ${(p.local_share[l][h] * 100).toFixed(1)}% · click: show this head`,
      ]);
    }
    this.draw();
  }
}
