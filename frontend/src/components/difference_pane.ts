// The difference pane: B − A of every head as thumbnails (click one to select it) and the selected
// head's B − A as a matrix with its tokens; hover a cell for A's and B's weights.

import type {Attention} from '../data/decode';
import {el} from '../draw/dom';
import {valueText, weightDeltaScale, type ColorScale} from '../model/metrics';
import {CanvasPainter, type Painter} from '../draw/painter';
import type {HeadRef} from '../state/state';
import {ACCENT, BORDER, font, FONT_SMALL, FONT_TITLE, INK, MUTED_INK} from '../draw/theme';
import {displayToken, exactToken, isByteLevel, truncate} from '../model/tokens';
import type {Tooltip} from '../draw/tooltip';
import {attentionChange, headMatrix, type PooledDifference} from '../model/transforms';
import {LEGEND_HEIGHT, paintLegend} from './heatmap';
import {onPointer, type Point} from './pointer';

const PAD = 14;
const FONT_LABEL = font(null, 11);
const LABEL_CHARS = 14; // characters of a token label beside the matrix
const MIN_LABELLED_CELL = 9; // px: smaller matrix cells get no token labels
const GAP = 4; // px between thumbnails
const LABEL_ROOM = 110; // px for token labels left of and above the matrix

/** What the pane shows. */
export interface DifferenceScene {
  a: Attention;
  b: Attention;
  diff: PooledDifference;
  /** "run · step N" of A and of B */
  labels: [string, string];
  selected: HeadRef;
}

interface Layout {
  width: number;
  height: number;
  thumb: number;
  left: number;
  top: number;
  matrix: {x: number; y: number; cell: number; n: number; labels: boolean};
}

export class DifferencePane {
  readonly canvas: HTMLCanvasElement;
  private scene: DifferenceScene | null = null;
  private strips: {diff: PooledDifference; scale: ColorScale; canvases: HTMLCanvasElement[]} | null = null;
  private detail: {key: string; a: Float32Array; b: Float32Array} | null = null;
  private layout: Layout | null = null;
  private hoverCell: {i: number; j: number} | null = null;
  private hoverHead: HeadRef | null = null;

  constructor(
    private readonly tooltip: Tooltip,
    select: (head: HeadRef) => void,
  ) {
    this.canvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'compare-diff'}});
    onPointer(this.canvas, {
      move: (at, event) => this.pointer(at, event),
      leave: () => {
        this.hoverCell = null;
        this.hoverHead = null;
        this.tooltip.hide();
        this.draw();
      },
      click: (at) => {
        const head = this.thumbAt(at);
        if (head) select(head);
      },
    });
  }

  get width(): number {
    return this.layout?.width ?? 0;
  }

  get height(): number {
    return this.layout?.height ?? 0;
  }

  set(scene: DifferenceScene): void {
    this.scene = scene;
    const [l, h] = scene.selected;
    const key = JSON.stringify([l, h]);
    if (this.detail?.key !== key || this.strips?.diff !== scene.diff) this.detail = {key, a: headMatrix(scene.a, l, h), b: headMatrix(scene.b, l, h)};
    if (this.strips?.diff !== scene.diff) {
      const scale = weightDeltaScale(scene.diff.maxAbs);
      this.strips = {diff: scene.diff, scale, canvases: stripCanvases(scene.diff, scale)};
    }
  }

  /** Lays the pane out in a box of `width` × `height` px and draws it. */
  resize(width: number, height: number): void {
    const scene = this.scene;
    if (!scene) return;
    const d = scene.diff;
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    const leftW = Math.max(220, Math.floor(width * 0.42));
    const thumb = Math.max(8, Math.min(80, Math.floor((leftW - 40 - PAD) / d.numHeads) - GAP, Math.floor((height - 70) / d.numLayers) - GAP));
    // The selected head's matrix: cells as large as fit right of the thumbnails.
    const n = scene.a.numTokens;
    const mx = PAD + 40 + d.numHeads * (thumb + GAP) + 40;
    const availW = width - mx - LABEL_ROOM - PAD;
    const availH = height - 60 - LABEL_ROOM - LEGEND_HEIGHT;
    const cell = Math.max(1, Math.min(26, Math.floor(Math.min(availW, availH) / n)));
    const labels = cell >= MIN_LABELLED_CELL;
    this.layout = {
      width,
      height,
      thumb,
      left: PAD + 40,
      top: 56,
      matrix: {x: mx + (labels ? LABEL_ROOM : 10), y: 56 + (labels ? LABEL_ROOM - 20 : 10), cell, n, labels},
    };
    this.draw();
  }

  paint(painter: Painter): void {
    const {scene, layout: lay, detail, strips} = this;
    if (!scene || !lay || !detail || !strips) return;
    const d = scene.diff;
    const [layer, head] = scene.selected;
    const [A, B] = scene.labels;
    painter.text('B − A, every head', PAD, 16, {font: FONT_TITLE, color: INK});
    painter.text(`A: ${A}   B: ${B}`, PAD, 33, {font: FONT_SMALL, color: MUTED_INK});
    const step = lay.thumb + GAP;
    for (let h = 0; h < d.numHeads; h++) {
      painter.text(String(h), lay.left + h * step + lay.thumb / 2, lay.top - 8, {font: FONT_SMALL, color: MUTED_INK, align: 'center'});
    }
    for (let l = 0; l < d.numLayers; l++) {
      const y = lay.top + l * step;
      if (lay.thumb >= 10 || l % Math.ceil(10 / lay.thumb) === 0) painter.text(`L${l}`, lay.left - 6, y + lay.thumb / 2, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
      for (let h = 0; h < d.numHeads; h++) {
        const x = lay.left + h * step;
        painter.image(strips.canvases[l], x, y, lay.thumb, lay.thumb, false, {x: h * d.size, y: 0, w: d.size, h: d.size});
        const selected = l === layer && h === head;
        const hovered = this.hoverHead?.[0] === l && this.hoverHead[1] === h;
        if (selected || hovered) painter.strokeRect(x - 1, y - 1, lay.thumb + 2, lay.thumb + 2, hovered ? INK : ACCENT, 2);
        else painter.strokeRect(x - 0.5, y - 0.5, lay.thumb + 1, lay.thumb + 1, BORDER, 1);
      }
    }
    paintLegend(painter, lay.left, lay.top + d.numLayers * step + 8, Math.min(220, d.numHeads * step), strips.scale);
    // The selected head in detail.
    const m = lay.matrix;
    const tokens = scene.b.tokens;
    const byteLevel = isByteLevel(tokens);
    const moved = attentionChange(scene.a, scene.b, layer, head);
    const titleX = m.labels ? m.x - 100 : m.x;
    painter.text(`Layer ${layer} · head ${head}: B − A`, titleX, 16, {font: FONT_TITLE, color: INK});
    painter.text(`queries down, keys across · attention moved in this example: ${(moved * 100).toFixed(1)}% of each query’s, on average`, titleX, 33, {
      font: FONT_SMALL,
      color: MUTED_INK,
    });
    const n = m.n;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const v = detail.b[i * n + j] - detail.a[i * n + j];
        if (v !== 0) painter.rect(m.x + j * m.cell, m.y + i * m.cell, m.cell, m.cell, strips.scale.color(v));
      }
    }
    painter.strokeRect(m.x - 0.5, m.y - 0.5, n * m.cell + 1, n * m.cell + 1, BORDER, 1);
    if (this.hoverCell) {
      const {i, j} = this.hoverCell;
      painter.strokeRect(m.x, m.y + i * m.cell, n * m.cell, m.cell, MUTED_INK, 1, 0.6);
      painter.strokeRect(m.x + j * m.cell, m.y, m.cell, n * m.cell, MUTED_INK, 1, 0.6);
      painter.strokeRect(m.x + j * m.cell - 0.5, m.y + i * m.cell - 0.5, m.cell + 1, m.cell + 1, INK, 1.5);
    }
    if (m.labels) {
      for (let i = 0; i < n; i++) {
        const label = truncate(displayToken(tokens[i], byteLevel), LABEL_CHARS);
        painter.text(label, m.x - 6, m.y + (i + 0.5) * m.cell, {font: FONT_LABEL, color: this.hoverCell?.i === i ? INK : MUTED_INK, align: 'right'});
        painter.text(label, m.x + (i + 0.5) * m.cell, m.y - 6, {font: FONT_LABEL, color: this.hoverCell?.j === i ? INK : MUTED_INK, align: 'left', rotate: -Math.PI / 3});
      }
    }
    painter.text('QUERY ↓  KEY →', m.x - 6, m.y - 8, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    paintLegend(painter, m.x, m.y + n * m.cell + 22, Math.min(240, Math.max(160, n * m.cell)), strips.scale);
  }

  private draw(): void {
    const lay = this.layout;
    if (!lay || !this.scene) return;
    this.paint(new CanvasPainter(this.canvas, lay.width, lay.height));
    const [layer, head] = this.scene.selected;
    const data = this.canvas.dataset;
    data.head = `${layer}.${head}`;
    data.layout = JSON.stringify({matrix: lay.matrix, thumbs: {left: lay.left, top: lay.top, thumb: lay.thumb, step: lay.thumb + GAP}});
    data.maxAbs = String(this.scene.diff.maxAbs);
  }

  private thumbAt(at: Point): HeadRef | null {
    const {layout: lay, scene} = this;
    if (!lay || !scene) return null;
    const x = at.x - lay.left;
    const y = at.y - lay.top;
    const step = lay.thumb + GAP;
    const h = Math.floor(x / step);
    const l = Math.floor(y / step);
    return x >= 0 && y >= 0 && h < scene.diff.numHeads && l < scene.diff.numLayers && x % step < lay.thumb && y % step < lay.thumb ? [l, h] : null;
  }

  private pointer(at: Point, event: MouseEvent): void {
    const {layout: lay, detail, scene} = this;
    if (!lay || !detail || !scene) return;
    const m = lay.matrix;
    const j = Math.floor((at.x - m.x) / m.cell);
    const i = Math.floor((at.y - m.y) / m.cell);
    const head = this.thumbAt(at);
    const cell = i >= 0 && j >= 0 && i < m.n && j < m.n ? {i, j} : null;
    this.canvas.style.cursor = head ? 'pointer' : cell ? 'crosshair' : 'default';
    if (cell) {
      const n = m.n;
      const va = detail.a[i * n + j];
      const vb = detail.b[i * n + j];
      const [ta, tb] = [scene.a.tokens, scene.b.tokens];
      this.tooltip.show(event.clientX, event.clientY, [
        {label: `query #${i} ${exactToken(tb[i])} → key #${j} ${exactToken(tb[j])}`, strong: true},
        ...(ta[i] !== tb[i] || ta[j] !== tb[j] ? [`in A: ${exactToken(ta[i])} → ${exactToken(ta[j])}`] : []),
        {label: 'A', value: valueText(va)},
        {label: 'B', value: valueText(vb)},
        {label: 'B − A', value: valueText(vb - va, true)},
      ]);
    } else if (head) {
      const moved = attentionChange(scene.a, scene.b, head[0], head[1]);
      this.tooltip.show(event.clientX, event.clientY, [
        {label: `Layer ${head[0]} · head ${head[1]}`, strong: true},
        {label: 'attention moved in this example', value: `${(moved * 100).toFixed(1)}%`},
        'click: show it in detail',
      ]);
    } else {
      this.tooltip.hide();
    }
    const changed = cell?.i !== this.hoverCell?.i || cell?.j !== this.hoverCell?.j || head?.[0] !== this.hoverHead?.[0] || head?.[1] !== this.hoverHead?.[1];
    this.hoverCell = cell;
    this.hoverHead = head;
    if (changed) this.draw();
  }
}

/** Per layer, the heads' pooled differences side by side as one bitmap. */
function stripCanvases(d: PooledDifference, scale: ColorScale): HTMLCanvasElement[] {
  return Array.from({length: d.numLayers}, (_, l) => {
    const canvas = document.createElement('canvas');
    canvas.width = d.size * d.numHeads;
    canvas.height = d.size;
    const ctx = canvas.getContext('2d')!;
    for (let h = 0; h < d.numHeads; h++) {
      const cells = d.pooled[l * d.numHeads + h];
      for (let r = 0; r < d.size; r++) {
        for (let c = 0; c < d.size; c++) {
          ctx.fillStyle = scale.color(cells[r * d.size + c]);
          ctx.fillRect(h * d.size + c, r, 1, 1);
        }
      }
    }
    return canvas;
  });
}
