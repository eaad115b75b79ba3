// Compare view: A and B, two steps of one run or two runs (checkpoints evaluated on the same probe).
// Side by side in the head or the model view, with one selection; as the signed difference B − A
// of every head's weights; and as the heads ranked by how much they changed (their weights, or
// any metric). Tokens that differ between A and B are listed in a banner, never silently aligned.

import type {ExampleInfo, Examples, ProbeMetrics} from '../api';
import {FONT_SMALL, FONT_TITLE, fitHeatmap, HEATMAP_LEFT, LEGEND_HEIGHT, paintHeatmap, paintLegend, type HeatmapGeometry} from '../charts';
import {ACCENT, INK, MUTED_INK} from '../colors';
import {Latest} from '../data';
import {readRow, type Attention} from '../decode';
import {el, frameThrottle, pointIn} from '../dom';
import {deltaScale, gridDelta, metricLabel, rankHeads, shareScale, sortMetrics, valueText, weightDeltaScale, type ColorScale, type Grid} from '../metrics';
import {CanvasPainter, type Painter} from '../painter';
import {compareEndpoints, probeMetrics, type CompareMode, type Endpoint, type HeadRef} from '../state';
import {displayToken, exactToken, isByteLevel, truncate} from '../tokens';
import {Tooltip} from '../tooltip';
import {attentionChange, headMatrix, tokenDifferences} from '../transforms';
import {LayerPicker, Segmented} from './controls';
import {FONT_FAMILY, HeadView} from './head_view';
import {ModelView} from './model_view';
import type {DataModel, DataView, Model, ViewContext} from './view';

const PAD = 14;
const MAX_LISTED_DIFFERENCES = 6; // token differences named in the banner
const MAX_RANKED = 40;
const FONT_LABEL = `11px ${FONT_FAMILY}`;
const LABEL_CHARS = 14; // characters of a token label beside the difference matrix
const MIN_LABELLED_CELL = 9; // px: smaller matrix cells get no token labels

/** One side of the comparison and what is loaded for it. */
class Side {
  endpoint: Endpoint | null = null;
  readonly examples = new Latest<Examples>();
  readonly attention = new Latest<Attention>();
  readonly metrics = new Latest<ProbeMetrics>();

  constructor(readonly name: 'A' | 'B') {}

  example(index: number): ExampleInfo | null {
    const examples = this.examples.value;
    const e = this.endpoint;
    if (!examples || !e || examples.run !== e.run || examples.step !== e.step) return null;
    return examples.examples.find((x) => x.index === index) ?? null;
  }

  /** The weights, when they are those of the endpoint and example asked for (not the previous
   * ones, still held while these load). */
  weights(tag: string, index: number): Attention | null {
    const key = JSON.stringify([this.endpoint?.run, tag, this.endpoint?.step, index]);
    return this.attention.valueKey === key ? this.attention.value : null;
  }

  get label(): string {
    return this.endpoint ? `${this.endpoint.run} · step ${this.endpoint.step}` : '';
  }
}

/** A run and a step for A or B. */
class EndpointPicker {
  readonly element: HTMLElement;
  private readonly run: HTMLSelectElement;
  private readonly step: HTMLSelectElement;
  private runsKey = '';
  private stepsKey = '';

  constructor(name: 'A' | 'B', choose: (run: string, step: number | null) => void) {
    const field = name.toLowerCase();
    this.run = el('select', {attrs: {'aria-label': `${name} run`, 'data-control': `${field}-run`}});
    this.step = el('select', {attrs: {'aria-label': `${name} step`, 'data-control': `${field}-step`}});
    this.run.addEventListener('change', () => choose(this.run.value, null));
    this.step.addEventListener('change', () => choose(this.run.value, Number(this.step.value)));
    this.element = el('div', {class: 'control endpoint'}, [el('span', {class: `endpoint-key endpoint-${field}`, text: name}), this.run, this.step]);
  }

  set(runs: string[], endpoint: Endpoint): void {
    const runsKey = runs.join('\n');
    if (runsKey !== this.runsKey) {
      this.runsKey = runsKey;
      this.run.replaceChildren(...runs.map((r) => el('option', {text: r, attrs: {value: r}})));
    }
    this.run.value = endpoint.run;
    const stepsKey = endpoint.steps.join(',');
    if (stepsKey !== this.stepsKey) {
      this.stepsKey = stepsKey;
      this.step.replaceChildren(...endpoint.steps.map((s) => el('option', {text: `step ${s}`, attrs: {value: String(s)}})));
    }
    this.step.value = String(endpoint.step);
  }
}

interface Diff {
  key: string;
  numLayers: number;
  numHeads: number;
  /** per head (layer-major): B − A pooled to `size` x `size` cells (the largest change of a cell) */
  pooled: Float32Array[];
  size: number;
  maxAbs: number;
  scale: ColorScale;
  /** per layer: the heads' thumbnails side by side */
  strips: HTMLCanvasElement[];
}

interface DiffLayout {
  thumb: number;
  gap: number;
  left: number;
  top: number;
  /** the matrix of the selected head */
  matrix: {x: number; y: number; cell: number; n: number; labels: boolean};
}

export class CompareView implements DataView {
  readonly id = 'compare' as const;
  readonly title = 'Compare';
  readonly needs = 'data' as const;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly pickerA: EndpointPicker;
  private readonly pickerB: EndpointPicker;
  private readonly mode: Segmented<CompareMode>;
  private readonly modeTools: HTMLElement;
  private readonly layerPicker: LayerPicker;
  private readonly deltaSelect: HTMLSelectElement;
  private readonly deltaControl: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly body: HTMLElement;
  private readonly message: HTMLElement;
  private readonly inspector: HTMLElement;
  private readonly tooltip: Tooltip;
  private readonly sides = [new Side('A'), new Side('B')] as const;
  private readonly heads: [HeadView, HeadView];
  private readonly models: [ModelView, ModelView];
  private readonly panes: HTMLElement;
  private readonly paneLabels: [HTMLElement, HTMLElement];
  private readonly paneSlots: [HTMLElement, HTMLElement];
  private readonly canvas: HTMLCanvasElement;
  private readonly changes: HTMLElement;
  private readonly changesCanvas: HTMLCanvasElement;
  private readonly rankList: HTMLElement;
  private model: DataModel | null = null;
  private diff: Diff | null = null;
  private diffLayout: DiffLayout | null = null;
  private detail: {key: string; a: Float32Array; b: Float32Array; n: number; tokens: string[]} | null = null;
  private hoverCell: {i: number; j: number} | null = null;
  private hoverHead: HeadRef | null = null;
  private changeGrid: {key: string; grid: Grid; scale: ColorScale; label: string; note: string; a: Grid | null; b: Grid | null} | null = null;
  private changeMap: HeatmapGeometry | null = null;
  private size = {width: 0, height: 0};
  /** what can be compared: the reason when not */
  private blocked: {diff: string | null; heads: string | null} = {diff: null, heads: null};
  private metricsKey: string | null = null;
  /** rank by `attention`: each head's attention moved, averaged over the inputs A and B share */
  private readonly moved = new Latest<{key: string; grid: Grid; used: number; skipped: number}>();

  constructor(private readonly context: ViewContext) {
    const {store} = context;
    const choose = (side: 'a' | 'b') => (run: string, step: number | null) => store.update({[side]: {run, step}});
    this.pickerA = new EndpointPicker('A', choose('a'));
    this.pickerB = new EndpointPicker('B', choose('b'));
    const swap = el('button', {
      class: 'button swap-button',
      text: '⇄',
      title: 'Swap A and B',
      attrs: {'data-control': 'swap', 'aria-label': 'Swap A and B'},
      on: {
        click: () => {
          const [a, b] = this.sides.map((s) => s.endpoint);
          if (a && b) store.update({a: {run: b.run, step: b.step}, b: {run: a.run, step: a.step}});
        },
      },
    });
    this.mode = new Segmented<CompareMode>('Show', 'compare', [
      ['head', 'Heads', 'A and B in the head view, side by side, with one selection'],
      ['model', 'Model', 'A and B in the model view, side by side'],
      ['diff', 'Difference', 'B − A of every head’s weights; the selected head in detail'],
      ['changes', 'Changes', 'Heads ranked by how much they changed from A to B'],
    ], (compare) => store.update({compare}));
    this.layerPicker = new LayerPicker(store);
    this.deltaSelect = el('select', {attrs: {'aria-label': 'Rank heads by', 'data-control': 'delta'}});
    this.deltaSelect.addEventListener('change', () => store.update({delta: this.deltaSelect.value}));
    this.deltaControl = el('label', {class: 'control'}, [el('span', {class: 'control-label', text: 'Rank by'}), this.deltaSelect]);
    this.modeTools = el('div', {class: 'toolbar-group'});
    this.toolbar = el('div', {class: 'toolbar-group compare-toolbar'}, [
      el('div', {class: 'toolbar-group'}, [this.pickerA.element, swap, this.pickerB.element]),
      this.mode.element,
      this.modeTools,
    ]);

    this.heads = [new HeadView(context), new HeadView(context)];
    const open = (layer: number, head: number) => store.update({compare: 'head', layer, heads: [head]});
    this.models = [new ModelView(context, open), new ModelView(context, open)];
    this.paneLabels = [el('div', {class: 'compare-label'}), el('div', {class: 'compare-label'})];
    this.paneSlots = [el('div', {class: 'compare-slot'}), el('div', {class: 'compare-slot'})];
    this.panes = el('div', {class: 'compare-panes'}, [
      el('div', {class: 'compare-pane', attrs: {'data-side': 'A'}}, [this.paneLabels[0], this.paneSlots[0]]),
      el('div', {class: 'compare-pane', attrs: {'data-side': 'B'}}, [this.paneLabels[1], this.paneSlots[1]]),
    ]);
    this.canvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'compare-diff'}});
    this.changesCanvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'compare-changes'}});
    this.rankList = el('div', {class: 'rank-list change-list', attrs: {role: 'list', 'data-control': 'changes'}});
    this.changes = el('div', {class: 'changes-layout'}, [this.changesCanvas, el('div', {class: 'rank changes-rank'}, [this.rankList])]);
    this.message = el('div', {class: 'message compare-message', attrs: {'data-message': 'compare'}});
    this.body = el('div', {class: 'compare-body'});
    this.banner = el('div', {class: 'compare-banner', attrs: {role: 'status', 'data-banner': ''}});
    this.inspector = el('div', {class: 'inspector'});
    this.element = el('div', {class: 'view view-compare'}, [this.banner, this.body, this.inspector]);
    this.tooltip = new Tooltip(this.element);

    this.canvas.addEventListener('mousemove', frameThrottle((event: MouseEvent) => this.diffPointer(event)));
    this.canvas.addEventListener('mouseleave', () => {
      this.hoverCell = null;
      this.hoverHead = null;
      this.tooltip.hide();
      this.drawDiff();
    });
    this.canvas.addEventListener('click', (event) => {
      const head = this.thumbAt(event);
      if (head) store.update({layer: head[0], heads: [head[1]]});
    });
    this.changesCanvas.addEventListener('mousemove', frameThrottle((event: MouseEvent) => this.changePointer(event)));
    this.changesCanvas.addEventListener('mouseleave', () => {
      this.hoverHead = null;
      this.tooltip.hide();
      this.drawChanges();
    });
    this.changesCanvas.addEventListener('click', (event) => {
      const head = this.changeAt(event);
      if (head) this.openHead(head);
    });
  }

  get width(): number {
    const mode = this.model?.state.compare;
    if (mode === 'head') return this.heads[0].width + this.heads[1].width;
    if (mode === 'model') return this.models[0].width + this.models[1].width;
    return this.size.width;
  }

  get height(): number {
    const mode = this.model?.state.compare;
    if (mode === 'head') return Math.max(this.heads[0].height, this.heads[1].height);
    if (mode === 'model') return Math.max(this.models[0].height, this.models[1].height);
    return this.size.height;
  }

  exportName(): (string | number)[] {
    const [a, b] = this.sides.map((s) => s.endpoint);
    const state = this.model?.state;
    return a && b && state ? [a.run, `step${a.step}`, 'vs', b.run, `step${b.step}`, state.compare, `ex${state.example}`] : [];
  }

  update(model: DataModel): void {
    this.model = model;
    const {state, tags, selection} = model;
    const {runs, a, b} = compareEndpoints(tags, state, selection);
    this.pickerA.set(runs, a);
    this.pickerB.set(runs, b);
    this.mode.set(state.compare);
    const tag = selection.tag;
    const {data} = this.context;
    const again = () => this.model && this.update(this.model);
    [a, b].forEach((endpoint, s) => {
      const side = this.sides[s];
      side.endpoint = endpoint;
      side.examples.load(JSON.stringify([endpoint.run, tag, endpoint.step]), () => data.examples(endpoint.run, tag, endpoint.step), again, 'the examples');
      if (side.example(state.example)) {
        side.attention.load(JSON.stringify([endpoint.run, tag, endpoint.step, state.example]), () => data.attention({run: endpoint.run, tag, step: endpoint.step, example: state.example}), again, 'the attention');
      }
    });
    this.paneLabels.forEach((label, s) => {
      label.replaceChildren(el('span', {class: `endpoint-key endpoint-${s ? 'b' : 'a'}`, text: s ? 'B' : 'A'}), el('span', {text: this.sides[s].label}));
    });
    this.updateDeltaChoices(model);

    const error = this.sides.map((s) => s.examples.error ?? s.attention.error).find((e) => e);
    const [ea, eb] = this.sides.map((s) => s.example(state.example));
    const [wa, wb] = this.sides.map((s) => s.weights(tag, state.example));
    this.setBanner(ea, eb, state.example);
    this.modeTools.replaceChildren(...this.tools(state.compare));
    if (error) return this.show(error);
    if (!ea || !eb) {
      if (!this.sides.every((s) => s.examples.value)) return this.show('Loading A and B…');
      return this.show(`Example #${state.example} is missing from ${!ea ? 'A' : 'B'}: choose another example in the panel.`);
    }
    if (!wa || !wb) return this.show('Loading the attention of A and B…');
    this.message.hidden = true;
    const models: [Model, Model] = [
      {...model, key: {run: a.run, tag, step: a.step, example: state.example}, example: ea, attention: wa},
      {...model, key: {run: b.run, tag, step: b.step, example: state.example}, example: eb, attention: wb},
    ];
    this.render(models);
  }

  /** The mode's own controls (none where the mode cannot show A and B). */
  private tools(mode: CompareMode): HTMLElement[] {
    if (mode === 'head') return [this.heads[0].toolbar];
    if (mode === 'diff') return this.blocked.diff ? [] : [this.layerPicker.element];
    if (mode === 'changes') return this.blocked.heads ? [] : [this.deltaControl];
    return [];
  }

  private show(message: string): void {
    this.message.hidden = false;
    this.message.textContent = message;
    this.body.replaceChildren(this.message);
    this.tooltip.hide();
  }

  /** The banner: what differs between A and B, said plainly. */
  private setBanner(ea: ExampleInfo | null, eb: ExampleInfo | null, index: number): void {
    const lines: (string | HTMLElement)[] = [];
    this.blocked = {diff: null, heads: null};
    if (ea && eb) {
      if (ea.num_layers !== eb.num_layers || ea.num_heads !== eb.num_heads) {
        const shapes = `A has ${ea.num_layers} layers × ${ea.num_heads} heads and B ${eb.num_layers} × ${eb.num_heads}`;
        lines.push(`${shapes}: they are different models.`);
        this.blocked.heads = `${shapes}: different models, so their heads do not pair up for a difference or a ranking. See them side by side under Heads or Model.`;
        this.blocked.diff = this.blocked.heads;
      }
      const differences = tokenDifferences(ea.tokens, eb.tokens);
      if (differences.length) {
        const sameLength = ea.tokens.length === eb.tokens.length;
        const head = sameLength
          ? `The tokens of example #${index} differ at ${differences.length} of ${ea.tokens.length} positions. The difference below is taken position by position.`
          : `The tokens of example #${index} differ: A has ${ea.tokens.length} tokens, B has ${eb.tokens.length}. The difference of weights needs the same tokens; the side-by-side views and metric changes still compare.`;
        if (!sameLength) this.blocked.diff ??= `A has ${ea.tokens.length} tokens and B ${eb.tokens.length}: the difference of their weights is not defined. Compare them side by side (Heads, Model) or by their metrics (Changes).`;
        lines.push(head);
        const list = el('ul', {class: 'banner-list'});
        for (const d of differences.slice(0, MAX_LISTED_DIFFERENCES)) {
          list.append(el('li', {text: `#${d.position}: A ${d.a === null ? '(none)' : exactToken(d.a)} · B ${d.b === null ? '(none)' : exactToken(d.b)}`}));
        }
        if (differences.length > MAX_LISTED_DIFFERENCES) list.append(el('li', {text: `… and ${differences.length - MAX_LISTED_DIFFERENCES} more`}));
        lines.push(list);
      }
    }
    this.banner.hidden = lines.length === 0;
    this.banner.replaceChildren(...lines.map((l) => (typeof l === 'string' ? el('div', {text: l}) : l)));
  }

  private updateDeltaChoices(model: DataModel): void {
    const [a, b] = this.sides.map((s) => s.endpoint!);
    const inA = probeMetrics(model.tags, a.run, model.selection.tag);
    const common = sortMetrics(probeMetrics(model.tags, b.run, model.selection.tag).filter((m) => inA.includes(m)));
    const key = common.join('\n');
    if (key !== this.metricsKey) {
      this.metricsKey = key;
      this.deltaSelect.replaceChildren(
        el('option', {text: 'Attention moved (all probe inputs)', attrs: {value: 'attention'}}),
        ...common.map((m) => el('option', {text: `${metricLabel(m)} (all probe inputs)`, attrs: {value: m}})),
      );
    }
    const delta = model.state.delta === 'attention' || common.includes(model.state.delta) ? model.state.delta : 'attention';
    this.deltaSelect.value = delta;
    if (delta !== 'attention' && model.state.compare === 'changes') {
      const again = () => this.model && this.update(this.model);
      for (const side of this.sides) {
        const e = side.endpoint!;
        side.metrics.load(JSON.stringify([e.run, model.selection.tag, e.step]), () => this.context.data.metrics(e.run, model.selection.tag, e.step, ''), again, 'the metrics');
      }
    }
  }

  private render(models: [Model, Model]): void {
    const state = models[0].state;
    const mode = state.compare;
    if (mode === 'head' || mode === 'model') {
      const views = mode === 'head' ? this.heads : this.models;
      this.paneSlots.forEach((slot, s) => {
        if (slot.firstChild !== views[s].element) slot.replaceChildren(views[s].element);
      });
      if (this.body.firstChild !== this.panes) this.body.replaceChildren(this.panes);
      views[0].update(models[0]);
      views[1].update(models[1]);
      this.inspector.replaceChildren(el('span', {class: 'hint', text: 'A and B share the selection: layer, heads and locked tokens apply to both.'}));
      return;
    }
    if (mode === 'diff') {
      if (this.blocked.diff) return this.show(this.blocked.diff);
      if (this.body.firstChild !== this.canvas) this.body.replaceChildren(this.canvas);
      this.layerPicker.set(models[0].attention.numLayers, state.layer);
      this.prepareDiff(models);
      this.resize();
      return;
    }
    if (this.blocked.heads) return this.show(this.blocked.heads);
    const delta = this.deltaSelect.value;
    if (this.body.firstChild !== this.changes) this.body.replaceChildren(this.changes);
    if (!this.prepareChanges(models, delta)) return;
    this.resize();
  }

  resize(): void {
    const state = this.model?.state;
    if (!state) return;
    if (state.compare === 'head' || state.compare === 'model') {
      const views = state.compare === 'head' ? this.heads : this.models;
      views[0].resize();
      views[1].resize();
    } else if (state.compare === 'diff' && this.diff && this.body.firstChild === this.canvas) {
      this.layoutDiff();
      this.drawDiff();
    } else if (state.compare === 'changes' && this.changeGrid && this.body.firstChild === this.changes) {
      this.drawChanges();
      this.drawRanking();
    }
  }

  paint(painter: Painter): void {
    const mode = this.model?.state.compare;
    if (mode === 'head' || mode === 'model') {
      const views = mode === 'head' ? this.heads : this.models;
      views[0].paint(painter);
      painter.translate(views[0].width, 0, () => views[1].paint(painter));
    } else if (mode === 'diff') {
      this.paintDiff(painter);
    } else if (mode === 'changes') {
      this.paintChanges(painter);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Difference: B − A of every head, the selected head in detail

  private prepareDiff([ma, mb]: [Model, Model]): void {
    const a = ma.attention;
    const b = mb.attention;
    const key = JSON.stringify([ma.key, mb.key]);
    if (this.diff?.key === key) return;
    const n = a.numTokens;
    const size = Math.min(n, 48);
    const ra = new Float32Array(n);
    const rb = new Float32Array(n);
    let maxAbs = 0;
    const pooled: Float32Array[] = [];
    for (let l = 0; l < a.numLayers; l++) {
      for (let h = 0; h < a.numHeads; h++) {
        const cells = new Float32Array(size * size);
        for (let i = 0; i < n; i++) {
          readRow(a, l, h, i, ra);
          readRow(b, l, h, i, rb);
          const base = Math.floor((i * size) / n) * size;
          for (let j = 0; j < n; j++) {
            const d = rb[j] - ra[j];
            const cell = base + Math.floor((j * size) / n);
            if (Math.abs(d) > Math.abs(cells[cell])) cells[cell] = d;
            if (Math.abs(d) > maxAbs) maxAbs = Math.abs(d);
          }
        }
        pooled.push(cells);
      }
    }
    const scale = weightDeltaScale(maxAbs);
    const strips = Array.from({length: a.numLayers}, (_, l) => {
      const canvas = document.createElement('canvas');
      canvas.width = size * a.numHeads;
      canvas.height = size;
      const ctx = canvas.getContext('2d')!;
      for (let h = 0; h < a.numHeads; h++) {
        const cells = pooled[l * a.numHeads + h];
        for (let r = 0; r < size; r++) {
          for (let c = 0; c < size; c++) {
            ctx.fillStyle = scale.color(cells[r * size + c]);
            ctx.fillRect(h * size + c, r, 1, 1);
          }
        }
      }
      return canvas;
    });
    this.diff = {key, numLayers: a.numLayers, numHeads: a.numHeads, pooled, size, maxAbs, scale, strips};
    this.detail = null;
  }

  private selectedHead(): HeadRef {
    const state = this.model!.state;
    const d = this.diff;
    return [Math.min(state.layer, (d?.numLayers ?? 1) - 1), Math.min(state.heads?.[0] ?? 0, (d?.numHeads ?? 1) - 1)];
  }

  private layoutDiff(): void {
    const d = this.diff!;
    const width = this.body.clientWidth;
    const height = this.body.clientHeight;
    this.size = {width, height};
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    const gap = 4;
    const leftW = Math.max(220, Math.floor(width * 0.42));
    const thumb = Math.max(8, Math.min(80, Math.floor((leftW - 40 - PAD) / d.numHeads) - gap, Math.floor((height - 70) / d.numLayers) - gap));
    // The matrix of the selected head: cells as large as fit right of the grid.
    const [layer, head] = this.selectedHead();
    this.prepareDetail(layer, head);
    const n = this.detail!.n;
    const mx = PAD + 40 + d.numHeads * (thumb + gap) + 40;
    const labelRoom = 110;
    const availW = width - mx - labelRoom - PAD;
    const availH = height - 60 - labelRoom - LEGEND_HEIGHT;
    const cell = Math.max(1, Math.min(26, Math.floor(Math.min(availW, availH) / n)));
    const labels = cell >= MIN_LABELLED_CELL;
    this.diffLayout = {
      thumb,
      gap,
      left: PAD + 40,
      top: 56,
      matrix: {x: mx + (labels ? labelRoom : 10), y: 56 + (labels ? labelRoom - 20 : 10), cell, n, labels},
    };
  }

  private prepareDetail(layer: number, head: number): void {
    const [wa, wb] = this.sides.map((s) => s.attention.value!);
    const key = `${this.diff!.key}\0${layer}\0${head}`;
    if (this.detail?.key === key) return;
    this.detail = {key, a: headMatrix(wa, layer, head), b: headMatrix(wb, layer, head), n: wa.numTokens, tokens: wb.tokens};
  }

  private paintDiff(painter: Painter): void {
    const d = this.diff;
    const lay = this.diffLayout;
    const detail = this.detail;
    if (!d || !lay || !detail) return;
    const [layer, head] = this.selectedHead();
    const [A, B] = this.sides.map((s) => s.label);
    painter.text('B − A, every head', PAD, 16, {font: FONT_TITLE, color: INK});
    painter.text(`A: ${A}   B: ${B}`, PAD, 33, {font: FONT_SMALL, color: MUTED_INK});
    const step = lay.thumb + lay.gap;
    for (let h = 0; h < d.numHeads; h++) {
      painter.text(String(h), lay.left + h * step + lay.thumb / 2, lay.top - 8, {font: FONT_SMALL, color: MUTED_INK, align: 'center'});
    }
    for (let l = 0; l < d.numLayers; l++) {
      const y = lay.top + l * step;
      if (lay.thumb >= 10 || l % Math.ceil(10 / lay.thumb) === 0) painter.text(`L${l}`, lay.left - 6, y + lay.thumb / 2, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
      for (let h = 0; h < d.numHeads; h++) {
        const x = lay.left + h * step;
        painter.image(d.strips[l], x, y, lay.thumb, lay.thumb, false, {x: h * d.size, y: 0, w: d.size, h: d.size});
        const selected = l === layer && h === head;
        const hovered = this.hoverHead?.[0] === l && this.hoverHead[1] === h;
        if (selected || hovered) painter.strokeRect(x - 1, y - 1, lay.thumb + 2, lay.thumb + 2, hovered ? INK : ACCENT, 2);
        else painter.strokeRect(x - 0.5, y - 0.5, lay.thumb + 1, lay.thumb + 1, '#e0e0e0', 1);
      }
    }
    paintLegend(painter, lay.left, lay.top + d.numLayers * step + 8, Math.min(220, d.numHeads * step), d.scale);
    // The selected head in detail.
    const m = lay.matrix;
    const tokens = detail.tokens;
    const byteLevel = isByteLevel(tokens);
    const moved = attentionChange(this.sides[0].attention.value!, this.sides[1].attention.value!, layer, head);
    const titleX = m.labels ? m.x - 100 : m.x;
    painter.text(`Layer ${layer} · head ${head}: B − A`, titleX, 16, {font: FONT_TITLE, color: INK});
    painter.text(`queries down, keys across · attention moved: ${(moved * 100).toFixed(1)}% of each query’s, on average`, titleX, 33, {
      font: FONT_SMALL,
      color: MUTED_INK,
    });
    const n = m.n;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const v = detail.b[i * n + j] - detail.a[i * n + j];
        if (v !== 0) painter.rect(m.x + j * m.cell, m.y + i * m.cell, m.cell, m.cell, d.scale.color(v));
      }
    }
    painter.strokeRect(m.x - 0.5, m.y - 0.5, n * m.cell + 1, n * m.cell + 1, '#e0e0e0', 1);
    if (this.hoverCell) {
      const {i, j} = this.hoverCell;
      painter.strokeRect(m.x, m.y + i * m.cell, n * m.cell, m.cell, MUTED_INK, 1, 0.6);
      painter.strokeRect(m.x + j * m.cell, m.y, m.cell, n * m.cell, MUTED_INK, 1, 0.6);
      painter.strokeRect(m.x + j * m.cell - 0.5, m.y + i * m.cell - 0.5, m.cell + 1, m.cell + 1, INK, 1.5);
    }
    if (m.labels) {
      for (let i = 0; i < n; i++) {
        const label = truncate(displayToken(tokens[i], byteLevel), LABEL_CHARS);
        const hot = this.hoverCell?.i === i;
        painter.text(label, m.x - 6, m.y + (i + 0.5) * m.cell, {font: FONT_LABEL, color: hot ? INK : MUTED_INK, align: 'right'});
        const hotKey = this.hoverCell?.j === i;
        painter.text(label, m.x + (i + 0.5) * m.cell, m.y - 6, {font: FONT_LABEL, color: hotKey ? INK : MUTED_INK, align: 'left', rotate: -Math.PI / 3});
      }
    }
    painter.text('QUERY ↓  KEY →', m.x - 6, m.y - 8, {font: FONT_SMALL, color: MUTED_INK, align: 'right'});
    paintLegend(painter, m.x, m.y + n * m.cell + 22, Math.min(240, Math.max(160, n * m.cell)), d.scale);
  }

  private drawDiff(): void {
    if (!this.diffLayout) return;
    this.paintDiff(new CanvasPainter(this.canvas, this.size.width, this.size.height));
    const [layer, head] = this.selectedHead();
    const m = this.diffLayout.matrix;
    const data = this.canvas.dataset;
    data.head = `${layer}.${head}`;
    data.layout = JSON.stringify({matrix: m, thumbs: {left: this.diffLayout.left, top: this.diffLayout.top, thumb: this.diffLayout.thumb, step: this.diffLayout.thumb + this.diffLayout.gap}});
    data.maxAbs = String(this.diff!.maxAbs);
    this.inspector.replaceChildren(
      el('span', {class: 'hint', text: 'Red: B attends more than A · blue: less · hover the matrix for the weights · click a head to see it in detail'}),
    );
  }

  private thumbAt(event: MouseEvent): HeadRef | null {
    const lay = this.diffLayout;
    const d = this.diff;
    if (!lay || !d) return null;
    const point = pointIn(this.canvas, event);
    const x = point.x - lay.left;
    const y = point.y - lay.top;
    const step = lay.thumb + lay.gap;
    const h = Math.floor(x / step);
    const l = Math.floor(y / step);
    return x >= 0 && y >= 0 && h < d.numHeads && l < d.numLayers && x % step < lay.thumb && y % step < lay.thumb ? [l, h] : null;
  }

  private diffPointer(event: MouseEvent): void {
    const lay = this.diffLayout;
    const detail = this.detail;
    if (!lay || !detail) return;
    const point = pointIn(this.canvas, event);
    const m = lay.matrix;
    const j = Math.floor((point.x - m.x) / m.cell);
    const i = Math.floor((point.y - m.y) / m.cell);
    const head = this.thumbAt(event);
    const cell = i >= 0 && j >= 0 && i < m.n && j < m.n ? {i, j} : null;
    this.canvas.style.cursor = head ? 'pointer' : cell ? 'crosshair' : 'default';
    if (cell) {
      const n = m.n;
      const va = detail.a[i * n + j];
      const vb = detail.b[i * n + j];
      const [ta, tb] = this.sides.map((s) => s.attention.value!.tokens);
      this.tooltip.show(event.clientX, event.clientY, [
        {label: `query #${i} ${exactToken(tb[i])} → key #${j} ${exactToken(tb[j])}`, strong: true},
        ...(ta[i] !== tb[i] || ta[j] !== tb[j] ? [`in A: ${exactToken(ta[i])} → ${exactToken(ta[j])}`] : []),
        {label: 'A', value: valueText(va)},
        {label: 'B', value: valueText(vb)},
        {label: 'B − A', value: valueText(vb - va, true)},
      ]);
    } else if (head) {
      const moved = attentionChange(this.sides[0].attention.value!, this.sides[1].attention.value!, head[0], head[1]);
      this.tooltip.show(event.clientX, event.clientY, [
        {label: `Layer ${head[0]} · head ${head[1]}`, strong: true},
        {label: 'attention moved', value: `${(moved * 100).toFixed(1)}%`},
        'click: show it in detail',
      ]);
    } else {
      this.tooltip.hide();
    }
    const changed = cell?.i !== this.hoverCell?.i || cell?.j !== this.hoverCell?.j || head?.[0] !== this.hoverHead?.[0] || head?.[1] !== this.hoverHead?.[1];
    this.hoverCell = cell;
    this.hoverHead = head;
    if (changed) this.drawDiff();
  }

  // -------------------------------------------------------------------------------------------
  // Changes: heads ranked by how much they changed

  /** Each head's attention moved from A to B, averaged over the probe inputs whose tokens A and B
   * share (inputs whose tokens differ are left out and counted). */
  private async measureMoved(tag: string, key: string): Promise<{key: string; grid: Grid; used: number; skipped: number}> {
    const [a, b] = this.sides.map((s) => s.endpoint!);
    const [la, lb] = this.sides.map((s) => s.examples.value!.examples);
    const shared = la.filter((e) => lb.some((f) => f.index === e.index && tokenDifferences(e.tokens, f.tokens).length === 0));
    const {data} = this.context;
    let sum: number[][] | null = null;
    for (const e of shared) {
      const [wa, wb] = await Promise.all([
        data.attention({run: a.run, tag, step: a.step, example: e.index}),
        data.attention({run: b.run, tag, step: b.step, example: e.index}),
      ]);
      sum ??= Array.from({length: wa.numLayers}, () => new Array<number>(wa.numHeads).fill(0));
      for (let l = 0; l < wa.numLayers; l++) for (let h = 0; h < wa.numHeads; h++) sum[l][h] += attentionChange(wa, wb, l, h);
    }
    const grid: Grid = (sum ?? []).map((row) => row.map((v) => v / shared.length));
    return {key, grid, used: shared.length, skipped: la.length - shared.length};
  }

  /** False while what ranks the heads loads. */
  private prepareChanges([ma, mb]: [Model, Model], delta: string): boolean {
    let key: string;
    let grid: Grid;
    let scale: ColorScale;
    let label: string;
    let a: Grid | null = null;
    let b: Grid | null = null;
    let note = 'all probe inputs';
    if (delta === 'attention') {
      key = JSON.stringify([ma.key.run, ma.key.step, mb.key.run, mb.key.step, ma.key.tag, delta]);
      if (this.changeGrid?.key === key) return true;
      this.moved.load(key, () => this.measureMoved(ma.key.tag, key), () => this.model && this.update(this.model), 'the attention');
      const moved = this.moved.value;
      if (this.moved.error) {
        this.show(this.moved.error);
        return false;
      }
      if (!moved || moved.key !== key) {
        this.show('Measuring how far each head’s attention moved over the probe’s inputs…');
        return false;
      }
      if (!moved.used) {
        this.show('No probe input has the same tokens in A and B: rank the heads by a metric instead.');
        return false;
      }
      grid = moved.grid;
      scale = shareScale(Math.max(0.05, ...grid.flat().map((v) => v ?? 0)));
      label = 'Attention moved';
      note = `mean of ${moved.used} probe input${moved.used > 1 ? 's' : ''}${moved.skipped ? `; ${moved.skipped} whose tokens differ between A and B left out` : ''}`;
    } else {
      const [pa, pb] = this.sides.map((s) => s.metrics.value);
      const error = this.sides.map((s) => s.metrics.error).find((e) => e);
      if (error) {
        this.show(`${error} (metrics are logged at the probe's steps; choose steps that have them)`);
        return false;
      }
      const e = this.sides.map((s) => s.endpoint!);
      if (!pa || !pb || pa.run !== e[0].run || pa.step !== e[0].step || pb.run !== e[1].run || pb.step !== e[1].step) {
        this.show('Loading the metrics of A and B…');
        return false;
      }
      key = JSON.stringify([pa.run, pa.step, pb.run, pb.step, delta]);
      if (this.changeGrid?.key === key) return true;
      a = pa.metrics[delta] ?? [];
      b = pb.metrics[delta] ?? [];
      grid = gridDelta(a, b);
      const finite = grid.flat().filter((v): v is number => v !== null && Number.isFinite(v));
      scale = deltaScale(Math.max(1e-6, ...finite.map(Math.abs)));
      label = `${metricLabel(delta)}, B − A`;
    }
    this.changeGrid = {key, grid, scale, label, note, a, b};
    return true;
  }

  private paintChanges(painter: Painter): void {
    const c = this.changeGrid;
    const g = this.changeMap;
    if (!c || !g) return;
    const [A, B] = this.sides.map((s) => s.label);
    painter.text(c.label, PAD, 16, {font: FONT_TITLE, color: INK});
    painter.text(`A: ${A}   B: ${B}`, PAD, 33, {font: FONT_SMALL, color: MUTED_INK});
    paintHeatmap(painter, g, c.grid, c.scale, {picked: [this.stateHead()], hover: this.hoverHead});
    paintLegend(painter, g.x, g.y + g.height + 12, Math.min(g.width, 240), c.scale);
  }

  /** The selected head as the state names it (the difference clamps it to the model's size). */
  private stateHead(): HeadRef {
    const state = this.model!.state;
    return [state.layer, state.heads?.[0] ?? 0];
  }

  private drawChanges(): void {
    const c = this.changeGrid;
    if (!c) return;
    const rows = c.grid.length;
    const cols = c.grid[0]?.length ?? 0;
    const width = Math.max(260, Math.min(420, HEATMAP_LEFT + cols * 34 + 2 * PAD));
    const height = this.body.clientHeight;
    this.changeMap = fitHeatmap({x: PAD, y: 48, w: width - 2 * PAD, h: Math.max(120, height - 48 - LEGEND_HEIGHT - 30)}, rows, cols, 34);
    const h = this.changeMap.y + this.changeMap.height + 16 + LEGEND_HEIGHT;
    this.size = {width, height: h};
    this.changesCanvas.style.width = `${width}px`;
    this.changesCanvas.style.height = `${h}px`;
    this.paintChanges(new CanvasPainter(this.changesCanvas, width, h));
    this.changesCanvas.dataset.values = JSON.stringify(c.grid);
    this.inspector.replaceChildren(
      el('span', {
        class: 'hint',
        text:
          this.deltaSelect.value === 'attention'
            ? `Attention moved: per query token, the share of its attention that went to other keys from A to B, averaged over tokens (${c.note}) · click a head to see its difference`
            : 'The metric over all probe inputs, B − A · click a head to see its difference',
      }),
    );
  }

  private drawRanking(): void {
    const c = this.changeGrid!;
    const isAttention = this.deltaSelect.value === 'attention';
    const ranked = isAttention ? rankHeads(c.grid, 'high') : rankHeads(c.grid, 'change', c.grid.map((row) => row.map((v) => (v === null ? null : 0))));
    const top = ranked.slice(0, MAX_RANKED);
    const max = Math.max(1e-9, ...top.map((r) => Math.abs(r.value)));
    const header = el('div', {class: 'change-row change-header'}, [
      el('span', {text: 'head'}),
      el('span', {class: 'rank-value', text: isAttention ? '' : 'A'}),
      el('span', {class: 'rank-value', text: isAttention ? '' : 'B'}),
      el('span', {class: 'rank-value', text: isAttention ? 'moved' : 'B − A'}),
      el('span', {text: ''}),
    ]);
    const rows = top.map((r, rank) => {
      const [l, h] = r.head;
      const bar = el('span', {class: `change-bar ${r.value < 0 ? 'down' : 'up'}`});
      bar.style.width = `${Math.round((Math.abs(r.value) / max) * 100)}%`;
      return el('div', {
        class: 'change-row',
        attrs: {role: 'listitem', tabindex: '0', 'data-head': `${l}.${h}`, 'data-rank': String(rank)},
        title: `Layer ${l}, head ${h}: click to see its difference`,
        on: {
          click: () => this.openHead([l, h]),
          keydown: (event) => {
            if ((event as KeyboardEvent).key === 'Enter') this.openHead([l, h]);
          },
          mouseenter: () => {
            this.hoverHead = [l, h];
            this.drawChanges();
          },
          mouseleave: () => {
            this.hoverHead = null;
            this.drawChanges();
          },
        },
      }, [
        el('span', {class: 'rank-head-name', text: `L${l} H${h}`}),
        el('span', {class: 'rank-value', text: isAttention ? '' : valueText(c.a?.[l]?.[h])}),
        el('span', {class: 'rank-value', text: isAttention ? '' : valueText(c.b?.[l]?.[h])}),
        el('span', {class: 'rank-value', text: isAttention ? `${(r.value * 100).toFixed(1)}%` : valueText(r.value, true)}),
        el('span', {class: 'change-bar-track'}, [bar]),
      ]);
    });
    this.rankList.replaceChildren(header, ...rows);
  }

  /** A head of the ranking or the map, in the difference view (or side by side when the tokens
   * differ). */
  private openHead([layer, head]: HeadRef): void {
    this.context.store.update({layer, heads: [head], compare: this.blocked.diff ? 'head' : 'diff'});
  }

  private changeAt(event: MouseEvent): HeadRef | null {
    if (!this.changeMap) return null;
    const {x, y} = pointIn(this.changesCanvas, event);
    return this.changeMap.hit(x, y);
  }

  private changePointer(event: MouseEvent): void {
    const head = this.changeAt(event);
    const c = this.changeGrid;
    this.changesCanvas.style.cursor = head ? 'pointer' : 'default';
    if (head && c) {
      const [l, h] = head;
      const isAttention = this.deltaSelect.value === 'attention';
      this.tooltip.show(event.clientX, event.clientY, [
        {label: `Layer ${l} · head ${h}`, strong: true},
        ...(isAttention
          ? [{label: 'attention moved', value: `${((c.grid[l][h] ?? 0) * 100).toFixed(1)}%`}]
          : [
              {label: 'A', value: valueText(c.a?.[l]?.[h])},
              {label: 'B', value: valueText(c.b?.[l]?.[h])},
              {label: 'B − A', value: valueText(c.grid[l]?.[h], true)},
            ]),
        'click: see its difference',
      ]);
    } else {
      this.tooltip.hide();
    }
    if (head?.[0] !== this.hoverHead?.[0] || head?.[1] !== this.hoverHead?.[1]) {
      this.hoverHead = head;
      this.drawChanges();
    }
  }
}
