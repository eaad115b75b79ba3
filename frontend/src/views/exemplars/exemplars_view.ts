// Exemplars view: for one head, the inputs that excite it most (their largest weight between two
// tokens after the first), each drawn as a sentence with that arc of maximum attention above it,
// as the poster shows them. A map of every head's best score picks the head; clicking an input
// opens it in the head view, where its attention is stored.

import type {Exemplars} from '../../data/api';
import {HeatmapGeometry, HEATMAP_LEFT, HEATMAP_TOP, LEGEND_HEIGHT, paintHeatmap, paintLegend} from '../../components/heatmap';
import {ACCENT, FONT_SMALL, FONT_TITLE, INK, MUTED_INK} from '../../draw/theme';
import {headColors} from '../../model/colors';
import {LastAnswer, type AnyRequest} from '../../data/cache';
import * as requests from '../../data/requests';
import {onPointer, type Point} from '../../components/pointer';
import {el, hideViewMessage, showViewMessage} from '../../draw/dom';
import {shareScale, valueText, type Grid} from '../../model/metrics';
import {CanvasPainter, textWidth, type Painter} from '../../draw/painter';
import {exemplarsTag} from '../../data/schema';
import {nearestStep} from '../../state/selection';
import type {HeadRef} from '../../state/state';
import {exactToken, truncate} from '../../model/tokens';
import {Tooltip} from '../../draw/tooltip';
import {HeadPicker, LayerPicker} from '../shared/controls';
import {FONT, FONT_BOLD, paintExemplar, TOKEN_LINE} from './paint';
import {bestScores, exemplarRows, layoutTokens, type Row} from './scene';
import {ScrollingCanvas} from '../shared/scrolling_canvas';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';

const PAD = 16; // px around the list
const ROW_HEIGHT = 96; // px per exemplar
const SIDE_WIDTH = 250; // px: the head map
const MAP_CELL = 22; // px, at most

export class ExemplarsView implements View {
  readonly id = 'exemplars' as const;
  readonly title = 'Exemplars';
  readonly steps = 'probe' as const;
  readonly usesExample = false;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly layerPicker: LayerPicker;
  private readonly headPicker: HeadPicker;
  private readonly mapCanvas: HTMLCanvasElement;
  private readonly side: HTMLElement;
  private readonly area: ScrollingCanvas;
  private readonly message: HTMLElement;
  private readonly inspector: HTMLElement;
  private readonly tooltip: Tooltip;
  private readonly table = new LastAnswer<Exemplars>();
  private model: ViewModel | null = null;
  private head: HeadRef = [0, 0];
  private rows: Row[] = [];
  private best: Grid = [];
  private map: HeatmapGeometry | null = null;
  private mapHeight = 0;
  private hoverRow: number | null = null;
  private hoverHead: HeadRef | null = null;
  private contentHeight = 0;

  constructor(private readonly context: ViewContext) {
    const {store} = context;
    this.layerPicker = new LayerPicker(store);
    this.headPicker = new HeadPicker(store, true);
    this.toolbar = el('div', {class: 'toolbar-group'}, [this.layerPicker.element, this.headPicker.element]);
    this.mapCanvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'exemplar-heads'}});
    this.side = el('div', {class: 'metrics-side exemplars-side'}, [this.mapCanvas]);
    this.area = new ScrollingCanvas('exemplars', () => this.draw());
    this.message = el('div', {class: 'message', attrs: {'data-message': 'exemplars'}});
    this.inspector = el('div', {class: 'inspector'});
    this.element = el('div', {class: 'view view-exemplars'}, [this.message, el('div', {class: 'metrics-layout'}, [this.side, this.area.element]), this.inspector]);
    this.tooltip = new Tooltip(this.element);
    onPointer(
      this.area.canvas,
      {
        move: (at, event) => this.pointer(at, event),
        leave: () => {
          this.hoverRow = null;
          this.tooltip.hide();
          this.draw();
        },
        click: (at) => this.open(this.rowAt(at)),
      },
      (event) => {
        const {x, y} = this.area.point(event);
        return {x, y: y + this.area.scrollTop};
      },
    );
    onPointer(this.mapCanvas, {
      move: (at, event) => this.mapPointer(at, event),
      leave: () => {
        this.hoverHead = null;
        this.tooltip.hide();
        this.drawMap();
      },
      click: (at) => {
        const head = this.map?.hit(at.x, at.y);
        if (head) store.update({focus: {layer: head[0], heads: [head[1]]}});
      },
    });
  }

  get width(): number {
    return SIDE_WIDTH + this.area.width;
  }

  get height(): number {
    return Math.max(this.mapHeight, this.contentHeight);
  }

  exportName(): (string | number)[] {
    const t = this.table.value;
    return t ? [t.run, t.tag, `step${t.step}`, `layer${this.head[0]}`, `head${this.head[1]}`] : [];
  }

  /** The probe's exemplar table at the state's step (snapped to the steps it was logged at); null
   * when the run logged none. */
  private request(model: ViewModel): ReturnType<typeof requests.exemplars> | null {
    const {state, tags, selection} = model;
    const tag = exemplarsTag(selection.tag);
    const info = tags[selection.run][tag];
    if (info?.kind !== 'exemplars' || !info.steps.length) return null;
    const steps = [...info.steps].sort((a, b) => a - b);
    const step = state.panel.step === null ? steps[steps.length - 1] : nearestStep(steps, state.panel.step);
    return requests.exemplars(selection.run, tag, step);
  }

  needs(model: ViewModel): AnyRequest[] {
    const request = this.request(model);
    return request ? [request] : [];
  }

  update(model: ViewModel): ViewStatus | null {
    this.model = model;
    const {state, selection} = model;
    const tag = exemplarsTag(selection.tag);
    const request = this.request(model);
    if (!request) {
      return this.show(`Run ${JSON.stringify(selection.run)} logged no exemplars for ${JSON.stringify(selection.tag)}. A Probe logs them with its metrics; tb-attention analyze logs them for a corpus.`);
    }
    this.table.read(model.data, request);
    if (this.table.error) return this.show(this.table.error);
    const table = this.table.value;
    if (!table || table.run !== selection.run || table.tag !== tag) return this.show('Loading the exemplars…');
    const layer = Math.min(state.focus.layer, table.num_layers - 1);
    const head = Math.min(state.focus.heads?.[0] ?? 0, table.num_heads - 1);
    this.head = [layer, head];
    this.layerPicker.set(table.num_layers, layer);
    this.headPicker.set(headColors(table.num_heads), [head]);
    this.best = bestScores(table);
    const list = table.heads[layer]?.[head] ?? [];
    this.rows = exemplarRows(table, layer, head, PAD, ROW_HEIGHT);
    hideViewMessage(this.element, this.message);
    this.inspector.replaceChildren(
      el('span', {class: 'inspector-token', text: `${table.run} · ${selection.tag} · step ${table.step} · layer ${layer}, head ${head}`}),
      el('span', {
        class: 'hint',
        text: list.length
          ? ` · its top ${list.length} input${list.length > 1 ? 's' : ''} by largest weight · click one to open it in the head view`
          : ' · no exemplars for this head',
      }),
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
    if (!this.model || !this.table.value || this.element.classList.contains('view-empty')) return;
    const table = this.table.value;
    const cell = Math.max(6, Math.min(MAP_CELL, Math.floor((SIDE_WIDTH - 28 - HEATMAP_LEFT) / table.num_heads)));
    const cellH = Math.max(4, Math.min(cell, Math.floor((this.element.clientHeight * 0.6) / table.num_layers)));
    this.map = new HeatmapGeometry(14 + HEATMAP_LEFT, 44 + HEATMAP_TOP, table.num_layers, table.num_heads, cell, cellH);
    this.mapHeight = this.map.y + this.map.height + 14 + LEGEND_HEIGHT + 40;
    this.side.style.width = `${SIDE_WIDTH}px`;
    this.mapCanvas.style.height = `${this.mapHeight}px`;
    this.contentHeight = PAD + this.rows.length * ROW_HEIGHT + PAD;
    this.area.fit(this.contentHeight, 0);
    const measure = (text: string, bold: boolean) => textWidth(text, bold ? FONT_BOLD : FONT);
    for (const row of this.rows) row.items = layoutTokens(row, this.area.width - 2 * PAD - 16, PAD + 10, measure);
    this.drawMap();
    this.draw();
  }

  // -------------------------------------------------------------------------------------------

  private paintMap(painter: Painter): void {
    const table = this.table.value!;
    const g = this.map!;
    painter.text('Heads', 14, 12, {font: FONT_TITLE, color: INK});
    painter.text('colour: each head’s largest weight', 14, 28, {font: FONT_SMALL, color: MUTED_INK});
    const scale = shareScale(1);
    paintHeatmap(painter, g, this.best, scale, {picked: [this.head], hover: this.hoverHead});
    paintLegend(painter, g.x, g.y + g.height + 12, Math.min(g.width, 180), scale);
    painter.text(`${table.num_layers} layers × ${table.num_heads} heads · click one`, 14, g.y + g.height + 12 + LEGEND_HEIGHT + 8, {
      font: FONT_SMALL,
      color: MUTED_INK,
    });
  }

  private drawMap(): void {
    if (!this.map) return;
    this.paintMap(new CanvasPainter(this.mapCanvas, SIDE_WIDTH, this.mapHeight));
  }

  /** The export: the head map, then the exemplars. */
  paint(painter: Painter): void {
    if (!this.map) return;
    this.paintMap(painter);
    painter.translate(SIDE_WIDTH, 0, () => this.paintList(painter));
  }

  private paintList(painter: Painter): void {
    const [layer, head] = this.head;
    const color = headColors(this.table.value?.num_heads ?? 1)[head] ?? ACCENT;
    const width = this.area.width;
    if (!this.rows.length) {
      painter.text(`Layer ${layer}, head ${head} has no exemplars at this step.`, PAD, PAD + 10, {font: FONT, color: MUTED_INK});
    }
    for (const row of this.rows) paintExemplar(painter, row, {left: PAD, width: width - 2 * PAD, height: ROW_HEIGHT - 8, color, hovered: this.hoverRow === row.rank});
  }


  private draw(): void {
    if (!this.table.value) return;
    const painter = this.area.painter();
    painter.translate(0, -this.area.scrollTop, () => this.paintList(painter));
    const data = this.area.canvas.dataset;
    data.head = `${this.head[0]}.${this.head[1]}`;
    data.step = String(this.table.value.step);
    data.rows = JSON.stringify(this.rows.map((r) => ({input: r.input, score: r.score, from: r.from, to: r.to, example: r.example, top: r.top - this.area.scrollTop, height: ROW_HEIGHT})));
  }

  /** The row under a point of the content (scroll included). */
  private rowAt({x, y: cy}: Point): Row | null {
    return this.rows.find((r) => cy >= r.top && cy < r.top + ROW_HEIGHT - 8 && x >= PAD && x <= this.area.width - PAD) ?? null;
  }

  private pointer(at: Point, event: MouseEvent): void {
    const row = this.rowAt(at);
    const rank = row?.rank ?? null;
    this.area.canvas.style.cursor = row && row.example !== null ? 'pointer' : 'default';
    if (row) {
      const {x, y: cy} = at;
      const item = Math.abs(cy - (row.top + TOKEN_LINE)) < 12 ? row.items.find((it) => it.index !== null && x >= it.x && x < it.x + it.w) : undefined;
      const lines = item
        ? [{label: `token ${item.index}`, strong: true}, exactToken(row.tokens[item.index!])]
        : [
            {label: `#${row.rank + 1} · weight ${valueText(row.score)}`, strong: true},
            truncate(row.text ?? row.tokens.join(''), 140),
            row.example === null ? 'its weights were not stored' : `click: open example #${row.example} in the head view`,
          ];
      this.tooltip.show(event.clientX, event.clientY, lines);
    } else {
      this.tooltip.hide();
    }
    if (rank !== this.hoverRow) {
      this.hoverRow = rank;
      this.draw();
    }
  }

  /** Opens an exemplar's input in the head view, the head selected and its query token locked. */
  private open(row: Row | null): void {
    const table = this.table.value;
    if (!row || row.example === null || !table) return;
    const [layer, head] = this.head;
    this.context.store.update({view: 'head', panel: {step: this.model?.state.panel.step === null ? null : table.step, example: row.example}, focus: {layer, heads: [head], tokens: [row.from], side: 'from'}});
  }

  private mapPointer(at: Point, event: MouseEvent): void {
    const head = this.map?.hit(at.x, at.y) ?? null;
    this.mapCanvas.style.cursor = head ? 'pointer' : 'default';
    if (head) {
      const value = this.best[head[0]]?.[head[1]];
      this.tooltip.show(event.clientX, event.clientY, [
        {label: `Layer ${head[0]} · head ${head[1]}`, strong: true},
        {label: 'largest weight', value: valueText(value)},
        'click: show its exemplars',
      ]);
    } else {
      this.tooltip.hide();
    }
    if (head?.[0] !== this.hoverHead?.[0] || head?.[1] !== this.hoverHead?.[1]) {
      this.hoverHead = head;
      this.drawMap();
    }
  }
}
