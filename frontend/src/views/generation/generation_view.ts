// Generation view: what a model looked at while it generated. The prompt and the generated text
// (tokens underlined by their probability); step through the generated tokens (slider, ▶, ←/→):
// the current token's attention over every earlier token as a heat strip over the text, its
// layer × head grid and its top-5 alternatives; click an earlier token to see which generated
// tokens attended to it; the same prompt's decoding at another step or run, aligned, with the
// point where they diverge. The text is drawn on one canvas, only the lines in view.

import {onPointer, type Point} from '../../components/pointer';
import {valueOf, type AnyRequest} from '../../data/cache';
import {attentionLayer} from '../../data/requests';
import {el, hasFocus} from '../../draw/dom';
import {CanvasPainter, textWidth, type Painter} from '../../draw/painter';
import {Tooltip} from '../../draw/tooltip';
import {headColors} from '../../model/colors';
import {alignGenerations, attendedBy, clampToken, heatHeads, heatRow, rowGrid, topKeys, writerRow, type GridSummary, type HeatMode, type LayerReader} from '../../model/generation';
import {percentText, probabilityScale, shareScale, valueText, type Grid} from '../../model/metrics';
import {exactToken, readingPieces, truncate} from '../../model/tokens';
import type {HeadRef, ViewId} from '../../state/state';
import {HeadPicker, LayerPicker, Segmented} from '../shared/controls';
import {EndpointPicker} from '../shared/endpoint_picker';
import {ScrollingCanvas} from '../shared/scrolling_canvas';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';
import {
  BOX_PAD,
  compareHit,
  compareLayout,
  FONT_BOLD,
  LINE,
  MAX_COMPARED,
  PAD,
  paintCompare,
  paintSide,
  paintSource,
  paintText,
  SIDE_WIDTH,
  SOURCE_HEIGHT,
  sourceHit,
  sideLayout,
  SPACE,
  textHit,
  TOKEN_GAP,
  type CompareFigure,
  type CompareLayout,
  type SideFigure,
  type SideLayout,
  type SourceFigure,
  type TextFigure,
} from './paint';
import {flowText, generationNeeds, layerRequests, otherDecoding, otherEndpoint, samePrompt, shownDecoding, sourceOf, sourceRequests, textTokens, type Decoding, type TextToken} from './scene';

const PLAY_MS = 700; // per generated token while ▶ plays
const GRID_LABELS: Record<GridSummary, string> = {prompt: 'share of its attention on the prompt', max: 'its largest single weight'};

export class GenerationView implements View {
  readonly id = 'generation' as const;
  readonly title = 'Generation';
  readonly steps = 'attention' as const;
  readonly usesExample = true;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly slider: HTMLInputElement;
  private readonly position: HTMLElement;
  private readonly play: HTMLButtonElement;
  private readonly heat: Segmented<HeatMode>;
  private readonly layer: LayerPicker;
  private readonly head: HeadPicker;
  private readonly gridMode: Segmented<GridSummary>;
  private readonly against: EndpointPicker;
  private readonly againstControl: HTMLElement;
  private readonly info: HTMLElement;
  private readonly text: ScrollingCanvas;
  private readonly sideBox: HTMLElement;
  private readonly sideCanvas: HTMLCanvasElement;
  private readonly sourceCanvas: HTMLCanvasElement;
  private readonly compareBox: HTMLElement;
  private readonly compareCanvas: HTMLCanvasElement;
  private readonly inspector: HTMLElement;
  private readonly tooltip: Tooltip;
  private decoding: Decoding | null = null;
  private textFigure: TextFigure | null = null;
  private labelsOf: {tokens: TextToken[]; widths: number[]; key: Decoding['shape'] | null} = {tokens: [], widths: [], key: null};
  private side: SideFigure | null = null;
  private sideGeometry: SideLayout | null = null;
  private source: SourceFigure | null = null;
  private sourceLabels: {key: unknown; labels: string[]} = {key: null, labels: []};
  private compare: CompareFigure | null = null;
  private compareGeometry: CompareLayout | null = null;
  private compareNote = '';
  private hoverHead: HeadRef | null = null;
  private computed: {inputs: string; heat: Float32Array | null; split: Float32Array[] | null; grid: Grid; attended: (number | null)[] | null; source: Float32Array | null} | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private textSize = {width: 0, height: 0};

  constructor(private readonly context: ViewContext) {
    const {store} = context;
    this.slider = el('input', {attrs: {type: 'range', min: '0', max: '0', step: '1', value: '0', 'data-control': 'gen-token', 'aria-label': 'Generated token'}});
    this.slider.addEventListener('input', () => this.setToken(Number(this.slider.value)));
    this.position = el('span', {class: 'control-value', attrs: {'data-control': 'gen-position'}});
    this.play = el('button', {class: 'button', text: '▶', title: 'Step through the generated tokens', attrs: {'data-control': 'gen-play', 'aria-label': 'Play'}, on: {click: () => this.togglePlay()}});
    this.heat = new Segmented<HeatMode>('Heat', 'gen-heat', [
      ['head', 'Head', 'The attention of one head (pick it below or in the grid)'],
      ['layer', 'Layer', 'The mean attention of the layer’s heads'],
      ['heads', 'Heads', 'Each head of the layer side by side in its colour (the side pane uses their mean)'],
      ['all', 'All', 'The mean attention of every head of every layer'],
    ], (heat) => store.update({generation: {heat}}));
    this.layer = new LayerPicker(store);
    this.head = new HeadPicker(store, true);
    this.gridMode = new Segmented<GridSummary>('Grid', 'gen-grid', [
      ['prompt', 'Prompt share', 'Each head’s share of the current token’s attention on the prompt'],
      ['max', 'Max weight', 'Each head’s largest single weight in the current token’s row: how focused it is'],
    ], (grid) => store.update({generation: {grid}}));
    this.against = new EndpointPicker('A', (run, step) => store.update({compare: {a: {run, step}}}));
    this.againstControl = el('div', {class: 'control', title: 'The same example at another step or run (the Compare view’s A)'}, [
      el('span', {class: 'control-label', text: 'Compare with'}),
      this.against.element,
    ]);
    const open = (view: ViewId, label: string) =>
      el('button', {class: 'button', text: label, title: `Open the ${label} view on the query row that wrote the current token`, attrs: {'data-open': view}, on: {click: () => this.open(view)}});
    this.toolbar = el('div', {class: 'toolbar-group'}, [
      el('div', {class: 'control'}, [el('span', {class: 'control-label', text: 'Token'}), this.slider, this.position, this.play]),
      this.heat.element,
      this.layer.element,
      this.head.element,
      this.gridMode.element,
      this.againstControl,
      el('div', {class: 'control'}, [el('span', {class: 'control-label', text: 'Open in'}), open('head', 'Head'), open('model', 'Model'), open('neuron', 'Neuron')]),
    ]);
    this.info = el('div', {class: 'generation-info', attrs: {'data-generation-info': ''}});
    this.text = new ScrollingCanvas('generation', () => this.drawText());
    this.sideCanvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'generation-side'}});
    this.sideBox = el('div', {class: 'generation-side'}, [this.sideCanvas]);
    this.sourceCanvas = el('canvas', {class: 'figure-static generation-source', attrs: {'data-figure': 'generation-source'}});
    this.compareCanvas = el('canvas', {class: 'figure-static', attrs: {'data-figure': 'generation-compare'}});
    this.compareBox = el('div', {class: 'generation-compare'}, [this.compareCanvas]);
    this.inspector = el('div', {class: 'inspector', attrs: {'aria-live': 'polite'}});
    this.element = el('div', {class: 'view view-generation'}, [
      this.info,
      el('div', {class: 'generation-body'}, [this.text.element, this.sideBox]),
      this.sourceCanvas,
      this.compareBox,
      this.inspector,
    ]);
    this.tooltip = new Tooltip(this.element);

    onPointer(this.text.canvas, {
      immediate: true,
      move: (at, event) => this.textPointer(at, event),
      leave: () => this.textPointer(null, null),
      click: (at) => this.textClick(at),
      dblclick: (at) => this.textDoubleClick(at),
    }, (event) => this.text.point(event));
    onPointer(this.sideCanvas, {
      move: (at, event) => this.sidePointer(at, event),
      leave: () => this.sidePointer(null, null),
      click: (at) => {
        const cell = this.sideGeometry?.grid.hit(at.x, at.y);
        if (cell) store.update({generation: {heat: 'head'}, focus: {layer: cell[0], heads: [cell[1]]}});
      },
    });
    onPointer(this.sourceCanvas, {
      move: (at, event) => {
        const f = this.source;
        const j = f ? sourceHit(this.element.clientWidth, f.labels.length, at.x, at.y) : null;
        if (j === null || !f) return this.tooltip.hide();
        const w = f.heat?.[j];
        this.tooltip.show(event.clientX, event.clientY, [{label: exactToken(this.decoding ? sourceOf(this.decoding)!.shape.keyTokens[j] : ''), strong: true}, {label: 'source token', value: String(j)}, {label: 'attention', value: w === undefined ? 'loading' : valueText(w)}]);
      },
      leave: () => this.tooltip.hide(),
    });
    onPointer(this.compareCanvas, {
      click: (at) => {
        const k = this.compareGeometry ? compareHit(this.compareGeometry, at.x, at.y) : null;
        const a = k === null ? null : this.compare?.alignment.pairs[k].a;
        if (a !== null && a !== undefined) this.setToken(a);
      },
    });
  }

  get width(): number {
    return this.textSize.width + SIDE_WIDTH;
  }

  get height(): number {
    return Math.max(this.textSize.height, this.sideGeometry?.height ?? 0) + (this.source ? SOURCE_HEIGHT : 0) + (this.compare ? (this.compareGeometry?.height ?? 0) : 0);
  }

  available(model: ViewModel): boolean {
    return shownDecoding(model).decoding !== null;
  }

  needs(model: ViewModel): AnyRequest[] {
    return generationNeeds(model);
  }

  update(model: ViewModel): ViewStatus | null {
    const {state, data, selection: sel} = model;
    const shown = shownDecoding(model);
    const list = data.get(shown.list);
    if (list.state === 'error') return {kind: 'error', text: list.error};
    if (!shown.examples) return {kind: 'loading', text: 'Loading the examples…'};
    const d = shown.decoding;
    if (!d) {
      this.stop();
      const which = shown.example ? `Example ${shown.example.index}` : 'This step';
      return {kind: 'empty', text: `${which} of ${sel.run}/${sel.tag} at step ${sel.exampleStep} has no generation. The Generation view shows the decodings a generation probe logged (the model’s own generate, with each token’s probability and its top-5 alternatives).`};
    }
    if (d.problem) return {kind: 'error', text: `Cannot show this generation: ${d.problem}.`};
    const g = d.generation;
    const count = g.tokens.length;
    const p = g.prompt_length;
    const t = clampToken(state.generation.token, count);
    const row = writerRow(p, t);
    const {numLayers, numHeads, numTokens: numQueries} = d.shape;
    const requests = layerRequests(d);
    const failed = requests.map((r) => data.get(r)).find((r) => r.state === 'error');
    if (failed?.state === 'error') return {kind: 'error', text: failed.error};
    const layers: LayerReader = (l) => {
      const answer = data.get(requests[l]);
      return answer.state === 'ready' ? answer.value : null;
    };
    const layer = Math.min(state.focus.layer, numLayers - 1);
    const head = Math.min(state.focus.heads?.[0] ?? 0, numHeads - 1);
    const mode = state.generation.heat;
    const heads = heatHeads(mode, layer, head, numLayers, numHeads);
    this.decoding = d;

    // Toolbar
    this.slider.max = String(count - 1);
    if (!hasFocus(this.slider)) this.slider.value = String(t);
    this.position.textContent = `${t + 1} / ${count}`;
    this.heat.set(mode);
    this.layer.set(numLayers, layer);
    this.layer.element.hidden = mode === 'all';
    // In mode `heads` the swatches are the stripes' colour key.
    this.head.set(headColors(numHeads), mode === 'heads' ? Array.from({length: numHeads}, (_, h) => h) : [head]);
    this.head.element.hidden = mode !== 'head' && mode !== 'heads';
    this.gridMode.set(state.generation.grid);
    const sampling = g.do_sample ? `sampled${g.seed === null || g.seed === undefined ? '' : ` (seed ${g.seed})`}` : 'greedy';
    this.info.textContent = `Prompt: ${p} token${p === 1 ? '' : 's'} · ${count} generated · stopped: ${g.stop} · ${sampling}${d.key.group ? ` · group ${d.key.group}` : ''}`;

    // The text and its heat strip
    const tokens = this.textLabels(d);
    const lockedKey = state.focus.side === 'to' && state.focus.tokens.length === 1 && state.focus.tokens[0] < numQueries ? state.focus.tokens[0] : null;
    // Rows, columns and the grid are read again only when what they depend on changed (every
    // answer that arrives updates the view).
    const source = sourceOf(d);
    const crossRequests = source ? sourceRequests(source, state) : [];
    const loaded = [...requests, ...crossRequests].filter((r) => data.get(r).state === 'ready').length;
    const inputs = JSON.stringify([d.key, t, mode, heads.length === 1 ? heads[0] : layer, lockedKey, state.generation.grid, loaded]);
    if (this.computed?.inputs !== inputs) {
      this.computed = {
        inputs,
        heat: heatRow(layers, heads, row, d.shape.numKeyTokens),
        split: mode === 'heads' ? splitRows(layers, heads, row, d.shape.numKeyTokens) : null,
        grid: rowGrid(layers, numLayers, numHeads, row, p, state.generation.grid),
        attended: lockedKey === null ? null : attendedBy(layers, heads, lockedKey, p, count, numQueries),
        source: source ? this.sourceRow(model, source, mode, layer, head, row) : null,
      };
    }
    const heatValues = this.computed.heat;
    const keysShown = heatValues ? heatValues.subarray(0, row + 1) : null;
    let top = 0;
    for (const w of keysShown ?? []) if (w > top) top = w;
    const previous = this.textFigure;
    this.textFigure = {
      tokens: tokens.tokens,
      widths: tokens.widths,
      flow: previous && previous.tokens === tokens.tokens ? previous.flow : flowText(tokens.widths, tokens.tokens.map((x) => x.space), 1, TOKEN_GAP, SPACE),
      current: t,
      heat: keysShown,
      heatScale: shareScale(top > 0 ? Math.min(1, Math.ceil(top * 20) / 20) : 1),
      split: this.computed.split ? {rows: this.computed.split.map((r) => r.subarray(0, row + 1)), colors: headColors(numHeads), top: maxOfRows(this.computed.split, row + 1)} : null,
      probs: g.probs,
      probScale: probabilityScale(),
      locked: lockedKey,
      hover: previous?.hover ?? null,
    };

    // The side pane
    const chosen = g.tokens[t];
    const alternatives = g.top[t].map(([label, id, prob]) => [tokens.labelOf(label), prob, id === g.ids[t]] as [string, number, boolean]);
    if (!alternatives.some(([, , c]) => c)) alternatives.push([tokens.labelOf(chosen), g.probs[t], true]);
    const where = mode === 'head' ? `layer ${layer}, head ${head}` : mode === 'all' ? 'mean of every head' : `layer ${layer}, mean of its heads`;
    this.side = {
      card: {
        title: `Token ${t + 1} of ${count}: ${truncate(tokens.labelOf(chosen), 24)}  (${percentText(g.probs[t])})`,
        subtitle: `written by query row ${row} (${truncate(tokens.tokens[row]?.label ?? '', 16)}); top ${g.top[t].length} alternatives:`,
        top: alternatives,
      },
      gridTitle: `Layer × head: ${GRID_LABELS[state.generation.grid]}`,
      gridSubtitle: `of token ${t + 1}’s row, per head · click a cell: its attention in the text`,
      grid: this.computed.grid,
      gridScale: shareScale(1),
      picked: mode === 'head' ? [[layer, head]] : mode !== 'all' ? Array.from({length: numHeads}, (_, h) => [layer, h] as HeadRef) : [],
      hover: this.hoverHead,
      attendedTitle: lockedKey === null ? 'Attention paid to a token' : `Attention paid to “${truncate(tokens.tokens[lockedKey].label, 16)}” (token ${lockedKey})`,
      attendedSubtitle: lockedKey === null
        ? 'Click a token in the text: which generated tokens attended to it'
        : `by each generated token (${where}); orange: token ${t + 1}`,
      attended: this.computed.attended,
      current: t,
      legendTitle: mode === 'heads' ? `Heat: token ${t + 1}’s attention, each head of layer ${layer}` : `Heat: token ${t + 1}’s attention (${where})`,
      heatScale: mode === 'heads' ? null : this.textFigure.heatScale,
      probScale: this.textFigure.probScale,
    };

    // The source (an encoder–decoder's cross attention)
    this.source = null;
    if (source) {
      if (this.sourceLabels.key !== source.shape.keyTokens) this.sourceLabels = {key: source.shape.keyTokens, labels: readingPieces(source.shape.keyTokens).map((x) => x.text)};
      const failedSource = crossRequests.map((r) => data.get(r)).find((r) => r.state === 'error');
      const heat = this.computed.source;
      let most = 0;
      for (const w of heat ?? []) if (w > most) most = w;
      const sourceWhere = mode === 'all' ? 'mean of every head' : mode !== 'head' ? `layer ${Math.min(layer, source.shape.numLayers - 1)}, mean of its heads` : `layer ${Math.min(layer, source.shape.numLayers - 1)}, head ${Math.min(head, source.shape.numHeads - 1)}`;
      this.source = {
        title: failedSource?.state === 'error'
          ? `Source: ${failedSource.error}`
          : `Source (cross attention, ${sourceWhere}): token ${t + 1}’s attention over the ${source.shape.numKeyTokens} source tokens`,
        labels: this.sourceLabels.labels,
        heat,
        scale: shareScale(most > 0 ? Math.min(1, Math.ceil(most * 20) / 20) : 1),
      };
    }

    // The comparison
    this.updateCompare(model, d, t, tokens);
    this.resize();
    this.inspect(keysShown, tokens.tokens, heads.length, where);
    return null;
  }

  resize(): void {
    const f = this.textFigure;
    if (!f || !this.side) return;
    // Text
    const width = this.text.element.clientWidth;
    if (width > 0) {
      const flow = flowText(f.widths, f.tokens.map((x) => x.space), Math.max(120, width - 2 * PAD), TOKEN_GAP, SPACE);
      f.flow = flow;
      const first = lineTopOf(flow.line[f.tokens.findIndex((x) => x.generated === f.current)] ?? 0);
      this.text.revealOnChange(`${this.decoding?.key.step}:${f.current}`, first, LINE);
      this.text.fit(PAD * 2 + flow.lines * LINE, 0);
    }
    // Side
    this.sideGeometry = sideLayout(this.side, SIDE_WIDTH);
    this.sideCanvas.style.width = `${SIDE_WIDTH}px`;
    this.sideCanvas.style.height = `${this.sideGeometry.height}px`;
    paintSide(new CanvasPainter(this.sideCanvas, SIDE_WIDTH, this.sideGeometry.height), this.side, this.sideGeometry, SIDE_WIDTH);
    this.sideCanvas.dataset.grid = JSON.stringify(this.side.grid.map((r) => r.map((v) => (v === null ? null : round(v)))));
    this.sideCanvas.dataset.gridLayout = JSON.stringify({x: this.sideGeometry.grid.x, y: this.sideGeometry.grid.y, cellW: this.sideGeometry.grid.cellW, cellH: this.sideGeometry.grid.cellH});
    if (this.side.attended) this.sideCanvas.dataset.attended = JSON.stringify(this.side.attended.map((v) => (v === null ? null : round(v))));
    else delete this.sideCanvas.dataset.attended;
    this.sideCanvas.dataset.top = JSON.stringify(this.side.card.top.map(([label, p]) => [label, p]));
    // Source
    this.sourceCanvas.hidden = !this.source;
    const fullWidth = this.element.clientWidth || width + SIDE_WIDTH;
    if (this.source) {
      this.sourceCanvas.style.width = `${fullWidth}px`;
      this.sourceCanvas.style.height = `${SOURCE_HEIGHT}px`;
      paintSource(new CanvasPainter(this.sourceCanvas, fullWidth, SOURCE_HEIGHT), this.source, fullWidth);
      if (this.source.heat) this.sourceCanvas.dataset.strip = JSON.stringify(Array.from(this.source.heat, round));
      else delete this.sourceCanvas.dataset.strip;
    }
    // Comparison
    const compareWidth = this.compareBox.clientWidth || width + SIDE_WIDTH;
    if (this.compare) {
      this.compareGeometry = compareLayout(this.compare, compareWidth);
      this.compareCanvas.hidden = false;
      this.compareCanvas.style.width = `${compareWidth}px`;
      this.compareCanvas.style.height = `${this.compareGeometry.height}px`;
      paintCompare(new CanvasPainter(this.compareCanvas, compareWidth, this.compareGeometry.height), this.compare, this.compareGeometry);
      const {divergence, pairs} = this.compare.alignment;
      this.compareCanvas.dataset.divergence = divergence === null ? 'none' : String(divergence);
      this.compareCanvas.dataset.pairs = JSON.stringify(pairs.map((p) => [p.a, p.b, p.same]));
      this.compareCanvas.dataset.labels = JSON.stringify(this.compare.labels);
      this.compareBox.dataset.note = '';
    } else {
      this.compareGeometry = null;
      this.compareCanvas.hidden = true;
      delete this.compareCanvas.dataset.divergence;
    }
    this.compareBox.hidden = !this.compare && !this.compareNote;
    this.compareBox.dataset.note = this.compareNote;
    this.compareBox.title = this.compareNote;
    this.drawText();
  }

  /** The figure as shown: the visible text, the side pane on its right, the comparison below. */
  paint(painter: Painter): void {
    const f = this.textFigure;
    if (!f) return;
    const {width, height} = this.textSize;
    paintText(painter, f, width, height, this.text.scrollTop);
    if (this.side && this.sideGeometry) painter.translate(width, 0, () => paintSide(painter, this.side!, this.sideGeometry!, SIDE_WIDTH));
    let y = Math.max(height, this.sideGeometry?.height ?? 0);
    if (this.source) {
      painter.translate(0, y, () => paintSource(painter, this.source!, width + SIDE_WIDTH));
      y += SOURCE_HEIGHT;
    }
    if (this.compare && this.compareGeometry) painter.translate(0, y, () => paintCompare(painter, this.compare!, this.compareGeometry!));
  }

  exportName(): (string | number)[] {
    const key = this.decoding?.key;
    const state = this.context.store.state;
    return [key?.run ?? '', key?.tag ?? '', `step${key?.step ?? 0}`, `ex${key?.example ?? 0}`, `token${state.generation.token}`, state.generation.heat];
  }

  /** ←/→: previous and next generated token; Home/End: the first and the last. */
  keydown(key: string): boolean {
    const count = this.decoding?.generation.tokens.length ?? 0;
    if (!count) return false;
    const t = clampToken(this.context.store.state.generation.token, count);
    if (key === 'ArrowLeft' || key === 'ArrowRight') {
      this.stop();
      this.setToken(t + (key === 'ArrowLeft' ? -1 : 1));
      return true;
    }
    if (key === 'Home' || key === 'End') {
      this.setToken(key === 'Home' ? 0 : count - 1);
      return true;
    }
    return false;
  }

  // -------------------------------------------------------------------------------------------

  /** The current token's row in the source's layers (cross attention), for the heat mode. */
  private sourceRow(model: ViewModel, source: NonNullable<ReturnType<typeof sourceOf>>, mode: HeatMode, layer: number, head: number, row: number): Float32Array | null {
    const {numLayers, numHeads, numKeyTokens} = source.shape;
    const reader: LayerReader = (l) => valueOf(model.data, attentionLayer(source.key, l, numLayers));
    const heads = heatHeads(mode, Math.min(layer, numLayers - 1), Math.min(head, numHeads - 1), numLayers, numHeads);
    return heatRow(reader, heads, row, numKeyTokens);
  }

  private setToken(t: number): void {
    const count = this.decoding?.generation.tokens.length ?? 0;
    if (!count) return;
    const token = clampToken(t, count);
    if (token !== this.context.store.state.generation.token) this.context.store.update({generation: {token}});
  }

  private togglePlay(): void {
    if (this.timer !== null) return this.stop();
    const count = this.decoding?.generation.tokens.length ?? 0;
    if (!count) return;
    // From the start when at the end.
    if (clampToken(this.context.store.state.generation.token, count) >= count - 1) this.setToken(0);
    this.play.textContent = '❚❚';
    this.play.setAttribute('aria-label', 'Pause');
    this.play.dataset.playing = '1';
    this.timer = setInterval(() => {
      const n = this.decoding?.generation.tokens.length ?? 0;
      const t = clampToken(this.context.store.state.generation.token, n);
      if (!this.element.isConnected || this.context.store.state.view !== 'generation' || t >= n - 1) return this.stop();
      this.setToken(t + 1);
    }, PLAY_MS);
  }

  private stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.play.textContent = '▶';
    this.play.setAttribute('aria-label', 'Play');
    delete this.play.dataset.playing;
  }

  /** Opens another view on the query row that wrote the current token, in the decoding group. */
  private open(view: ViewId): void {
    const d = this.decoding;
    if (!d) return;
    const state = this.context.store.state;
    const row = writerRow(d.generation.prompt_length, clampToken(state.generation.token, d.generation.tokens.length));
    const heads = state.generation.heat === 'head' ? [Math.min(state.focus.heads?.[0] ?? 0, d.shape.numHeads - 1)] : state.focus.heads;
    this.stop();
    this.context.store.update({view, panel: {group: d.key.group ?? null}, focus: {tokens: [row], side: 'from', heads}});
  }

  private textLabels(d: Decoding): {tokens: TextToken[]; widths: number[]; labelOf: (token: string) => string} {
    if (this.labelsOf.key !== d.shape) {
      const tokens = textTokens(d);
      this.labelsOf = {tokens, widths: tokens.map((x) => Math.ceil(textWidth(x.label, FONT_BOLD)) + 2 * BOX_PAD), key: d.shape};
    }
    return {...this.labelsOf, labelOf};
  }

  private updateCompare(model: ViewModel, d: Decoding, t: number, tokens: {labelOf: (token: string) => string}): void {
    const {runs, endpoint} = otherEndpoint(model.tags, model.state, model.selection);
    this.againstControl.hidden = endpoint === null;
    this.compare = null;
    this.compareNote = '';
    if (!endpoint) return;
    this.against.set(runs, endpoint);
    const other = otherDecoding(model.data, model.selection.tag, endpoint, d.key.example);
    const here = `${d.key.run} step ${d.key.step}`;
    const there = `${endpoint.run} step ${endpoint.step}`;
    if (other === 'loading') {
      this.compareNote = `Loading ${there}…`;
      return;
    }
    if (other === null) {
      this.compareNote = `${there} has no generation for example ${d.key.example}.`;
      return;
    }
    const alignment = alignGenerations(d.generation.ids, other.generation.ids);
    const label = (x: string) => tokens.labelOf(x);
    const a = d.generation.tokens.map(label);
    const b = other.generation.tokens.map(label);
    const prompt = samePrompt(d, other) ? '' : ' (their prompts differ)';
    let title: string;
    if (alignment.divergence === null) title = `${here} and ${there}${prompt}: the same ${a.length} tokens`;
    else {
      const k = alignment.divergence;
      const first = `${k ? `the same for ${k} token${k === 1 ? '' : 's'}, then` : ''} diverge at token ${k + 1}: ${a[k] ?? '(end)'} vs ${b[k] ?? '(end)'}`;
      title = `${here} vs ${there}${prompt}: ${first}; ${alignment.differing} of ${alignment.pairs.length} aligned tokens differ`;
    }
    if (alignment.pairs.length > MAX_COMPARED) title += ` (the first ${MAX_COMPARED.toLocaleString('en')} shown)`;
    // The row labels have ~14 characters: the step alone when both rows are of one run (the title names it).
    const short = (run: string, step: number) => (d.key.run === endpoint.run ? `step ${step}` : truncate(`${run} ${step}`, 14));
    this.compare = {title, labels: [short(d.key.run, d.key.step), short(endpoint.run, endpoint.step)], tokens: [a, b], alignment, current: t};
  }

  private drawText(): void {
    const f = this.textFigure;
    if (!f) return;
    this.textSize = {width: this.text.width, height: this.text.height};
    const scrollTop = this.text.scrollTop;
    const {first, last} = paintText(this.text.painter(), f, this.text.width, this.text.height, scrollTop);
    const canvas = this.text.canvas;
    const d = this.decoding!;
    canvas.dataset.token = String(f.current);
    canvas.dataset.row = String(writerRow(d.generation.prompt_length, f.current));
    canvas.dataset.heat = this.heatLabel();
    canvas.dataset.locked = f.locked === null ? '' : String(f.locked);
    canvas.dataset.tokens = String(f.tokens.length);
    // Where the visible tokens are (canvas coordinates), for tests and tools that point at them.
    const boxes: [number, number, number, number][] = [];
    for (let i = Math.max(0, first); i <= last; i++) boxes.push([i, Math.round(PAD + f.flow.x[i]), Math.round(lineTopOf(f.flow.line[i]) - scrollTop + LINE / 2), f.widths[i]]);
    canvas.dataset.layout = JSON.stringify(boxes);
    if (f.heat) canvas.dataset.strip = JSON.stringify(Array.from(f.heat, round));
    else delete canvas.dataset.strip;
    if (f.split) canvas.dataset.strips = JSON.stringify(f.split.rows.map((r) => Array.from(r, round)));
    else delete canvas.dataset.strips;
  }

  private heatLabel(): string {
    const state = this.context.store.state;
    const {heat} = state.generation;
    const layer = state.focus.layer;
    return heat === 'all' ? 'all' : heat === 'head' ? `head:${layer}.${state.focus.heads?.[0] ?? 0}` : `${heat}:${layer}`;
  }

  private inspect(row: Float32Array | null, tokens: TextToken[], heads: number, where: string): void {
    if (!row) {
      this.inspector.replaceChildren(el('span', {class: 'hint', text: 'Loading the attention…'}));
      return;
    }
    const top = topKeys(row, 6);
    this.inspector.replaceChildren(
      el('span', {class: 'hint', text: `Attends most to (${where}${heads > 1 ? `, ${heads} heads` : ''}): `}),
      ...top.map(({index, weight}) => el('span', {class: 'inspector-entry', text: `${truncate(tokens[index]?.label ?? '', 16)} ${percentText(weight)}`})),
      el('span', {class: 'hint', text: ' · ←→ / slider / ▶: token · click a token: who attended to it · double-click: show a generated token · Esc: clear'}),
    );
  }

  private textPointer(at: Point | null, event: MouseEvent | null): void {
    const f = this.textFigure;
    if (!f) return;
    const hit = at ? textHit(f, at.x, at.y + this.text.scrollTop) : null;
    this.text.canvas.style.cursor = hit !== null ? 'pointer' : 'default';
    if (hit !== f.hover) {
      f.hover = hit;
      this.drawText();
    }
    if (hit === null || !event) return this.tooltip.hide();
    const token = f.tokens[hit];
    const d = this.decoding!;
    const lines = [{label: exactToken(token.generated === null ? d.shape.tokens[hit] : d.generation.tokens[token.generated]), strong: true}];
    const info: {label: string; value: string}[] = [];
    if (token.generated === null) info.push({label: 'prompt token', value: String(hit)});
    else info.push({label: 'generated token', value: `${token.generated + 1}`}, {label: 'probability', value: percentText(d.generation.probs[token.generated])});
    if (f.heat && hit < f.heat.length) info.push({label: `attention of token ${f.current + 1}`, value: valueText(f.heat[hit])});
    this.tooltip.show(event.clientX, event.clientY, [...lines, ...info]);
  }

  /** A click on a token locks it as a key (again: unlocks it): the side pane shows which generated
   * tokens attended to it. The last generated token is no key (no row read it): a click shows it. */
  private textClick(at: Point): void {
    const f = this.textFigure;
    const d = this.decoding;
    if (!f || !d) return;
    const hit = textHit(f, at.x, at.y + this.text.scrollTop);
    if (hit === null) return;
    const {focus} = this.context.store.state;
    const locked = focus.side === 'to' && focus.tokens.length === 1 && focus.tokens[0] === hit;
    if (hit < d.shape.numTokens) this.context.store.update({focus: {tokens: locked ? [] : [hit], side: 'to'}});
    else if (f.tokens[hit].generated !== null) this.setToken(f.tokens[hit].generated!);
  }

  /** A double click on a generated token makes it the current one. */
  private textDoubleClick(at: Point): void {
    const f = this.textFigure;
    const hit = f ? textHit(f, at.x, at.y + this.text.scrollTop) : null;
    const t = hit === null ? null : f!.tokens[hit].generated;
    if (t !== null) this.setToken(t);
  }

  private sidePointer(at: Point | null, event: MouseEvent | null): void {
    const g = this.sideGeometry;
    const side = this.side;
    if (!g || !side) return;
    const cell = at ? g.grid.hit(at.x, at.y) : null;
    this.sideCanvas.style.cursor = cell ? 'pointer' : 'default';
    if (cell?.[0] !== this.hoverHead?.[0] || cell?.[1] !== this.hoverHead?.[1]) {
      this.hoverHead = cell;
      side.hover = cell;
      paintSide(new CanvasPainter(this.sideCanvas, SIDE_WIDTH, g.height), side, g, SIDE_WIDTH);
    }
    if (cell && event) {
      const v = side.grid[cell[0]][cell[1]];
      this.tooltip.show(event.clientX, event.clientY, [
        {label: `Layer ${cell[0]}, head ${cell[1]}`, strong: true},
        {label: GRID_LABELS[this.context.store.state.generation.grid], value: v === null ? 'loading' : percentText(v)},
        'click: show this head’s attention',
      ]);
      return;
    }
    const c = g.chart;
    if (at && event && side.attended && c.bar > 0 && at.x >= c.x && at.x < c.x + c.w && at.y >= c.y && at.y < c.y + c.h) {
      const t = Math.floor((at.x - c.x) / c.bar);
      const v = side.attended[t];
      const label = this.textFigure?.tokens.find((x) => x.generated === t)?.label ?? '';
      this.tooltip.show(event.clientX, event.clientY, [{label: `Generated token ${t + 1}: ${truncate(label, 20)}`, strong: true}, {label: 'attention paid', value: v === null ? 'none (came before it)' : percentText(v)}]);
      return;
    }
    this.tooltip.hide();
  }
}

/** A token on its own (an alternative, a token of the other decoding) as the text reads it, with a
 * dot for the space before it (so that "·the" and "the" stay apart). */
function labelOf(token: string): string {
  const [piece] = readingPieces([token]);
  return piece.space ? `·${piece.text}` : piece.text;
}

/** Each head's row (mode `heads`), or null while the layer loads. */
function splitRows(layers: LayerReader, heads: [number, number][], row: number, numKeys: number): Float32Array[] | null {
  const rows = heads.map((h) => heatRow(layers, [h], row, numKeys));
  return rows.every((r) => r !== null) ? (rows as Float32Array[]) : null;
}

function maxOfRows(rows: Float32Array[], end: number): number {
  let top = 1e-6;
  for (const r of rows) for (let j = 0; j < end; j++) if (r[j] > top) top = r[j];
  return top;
}

function lineTopOf(line: number): number {
  return PAD + line * LINE;
}

function round(v: number): number {
  return Math.round(v * 1e6) / 1e6;
}
