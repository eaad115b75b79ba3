// Neuron view: for one layer, head and query token, the query and key vectors, their elementwise
// product, the scaled dot products and the softmax, as bertviz's neuron view shows them.

import {divergingColor, headColors} from '../../model/colors';
import {FAINT_INK, font, HIGHLIGHT_FILL, INK, MUTED_INK, NEUTRAL_MARK} from '../../draw/theme';
import type {QueryKey} from '../../data/decode_qk';
import type {AnyRequest, DataReader} from '../../data/cache';
import * as requests from '../../data/requests';
import {onPointer, type Point} from '../../components/pointer';
import {tokenLabels} from '../../components/token_labels';
import {el} from '../../draw/dom';
import type {Painter} from '../../draw/painter';
import {exactToken} from '../../model/tokens';
import {hasBias} from '../../model/transforms';
import {neuronCaption, neuronScene, type NeuronScene} from './scene';
import {GroupPicker, HeadPicker, LayerPicker, shownHeads} from '../shared/controls';
import {ScrollingCanvas} from '../shared/scrolling_canvas';
import {holdsLayer} from '../../data/decode';
import {ExampleFigure, focusLayer, isStatus, layerNames, layerNeeds, ShownExample, type ExampleModel} from '../shared/example';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';

const FONT = font(null, 12);
const FONT_FOCUS = font(600, 12);
const FONT_HEADER = font(500, 11);
const FONT_NUMBER = font(null, 11);
const ROW_HEIGHT = 18; // px per key token
const HEADER_HEIGHT = 58; // px: column titles and the query vector
const PAD = 10;
const GAP = 14; // px between columns
const LABEL_PAD = 6;
const MAX_LABEL = 130; // px
const BAR = 84; // px: width of the score, softmax and stored-attention columns
const MIN_BAR = 30; // px: the same in a narrow view (a notebook output), which shrinks them first
const NUMBER = 44; // px after each bar: its value
const MIN_VECTOR = 80; // px: a vector column is at least as wide as its title
const MAX_CELL = 10; // px per vector component
const MAX_LABEL_CHARS = 20;

interface Columns {
  query: number; // left edge of the query-token column
  key: number; // left edge of the key-token column
  vector: number; // left edge of the key vectors
  product: number; // left edge of q∘k
  score: number;
  softmax: number;
  stored: number;
  cell: number; // px per component
  bar: number; // px: width of the score, softmax and stored-attention bars
  label: number; // token column width
  end: number;
}


export class NeuronView extends ExampleFigure implements View {
  readonly id = 'neuron' as const;
  readonly title = 'Neuron';
  readonly steps = 'attention' as const;
  readonly usesExample = true;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  protected readonly shown = new ShownExample('focus');
  private readonly area: ScrollingCanvas;
  private readonly message: HTMLElement;
  private readonly inspector: HTMLElement;
  private readonly group: GroupPicker;
  private readonly layer: LayerPicker;
  private readonly heads: HeadPicker;
  private data: DataReader | null = null;
  private labelsFor: [string[], string[]] | null = null;
  private model: ExampleModel | null = null;
  private computed: NeuronScene | null = null;
  private labels: string[] = [];
  /** the key labels: the query labels but for cross attention */
  private keyLabels: string[] = [];
  private labelWidth = 0;
  private hover: number | null = null;
  private size = {width: 0, height: 0, scrollTop: 0};

  constructor(protected readonly context: ViewContext) {
    super();
    this.group = new GroupPicker(context.store);
    this.layer = new LayerPicker(context.store);
    this.heads = new HeadPicker(context.store, true);
    this.toolbar = el('div', {class: 'toolbar-group'}, [this.group.element, this.layer.element, this.heads.element]);
    this.area = new ScrollingCanvas('neuron', () => this.draw());
    this.message = el('div', {class: 'message', attrs: {'data-message': 'neuron'}});
    this.inspector = el('div', {class: 'inspector'});
    this.element = el('div', {class: 'view view-neuron'}, [this.message, this.area.element, this.inspector]);
    onPointer(
      this.area.canvas,
      {
        immediate: true,
        move: (at) => this.pointer(at),
        leave: () => this.setHover(null),
        click: (at) => {
          const i = this.hit(at);
          if (i !== null) context.store.update({focus: {tokens: [i], side: 'from'}});
        },
      },
      (event) => this.area.point(event),
    );
  }

  get width(): number {
    return this.size.width;
  }

  get height(): number {
    return this.size.height;
  }

  /** The layer shown, and the example's query/key vectors once the example list says they were logged. */
  needs(model: ViewModel): AnyRequest[] {
    const example = this.shown.resolve(model);
    const n = isStatus(example) ? 0 : example.attention.numLayers;
    const qk = !isStatus(example) && hasQueryKey(example) ? [requests.queryKey(example.key, focusLayer(model.state, n), n)] : [];
    return [...layerNeeds(model, (n) => [focusLayer(model.state, n)]), ...qk];
  }

  update(model: ViewModel): ViewStatus | null {
    this.data = model.data;
    return super.update(model);
  }

  /** Draws one example (the Compare view draws A and B through this). */
  setExample(model: ExampleModel): void {
    this.model = model;
    const {state, attention: a} = model;
    this.group.set(model.example.groups ?? [], model.group?.name ?? null);
    // While the next layer loads, the one fetched before stays shown (its stored weights are the
    // only ones at hand).
    const wanted = Math.min(state.focus.layer, a.numLayers - 1);
    const layer = holdsLayer(a, wanted) ? wanted : a.firstLayer;
    const head = shownHeads(state, a.numHeads)[0];
    this.layer.set(a.numLayers, wanted, layerNames(model));
    this.heads.set(headColors(a.numHeads), [head]);
    const first = state.focus.tokens.length ? state.focus.tokens[0] * ROW_HEIGHT : null;
    this.area.revealOnChange(`${state.focus.side}:${state.focus.tokens}`, first, ROW_HEIGHT);
    if (this.labelsFor?.[0] !== a.tokens || this.labelsFor[1] !== a.keyTokens) this.setLabels(a.tokens, a.keyTokens);
    if (!hasQueryKey(model)) {
      this.show(null, 'No query/key vectors were logged for this example, so its neuron view cannot be drawn. Log them with the capture option that records queries and keys.');
      return;
    }
    const loaded = this.data?.get(requests.queryKey(model.key, layer, a.numLayers));
    if (loaded?.state === 'error') {
      const text =
        loaded.status === 404 ? `No query/key vectors were logged for this example (${loaded.error}).` : `Could not load the query/key vectors: ${loaded.error}`;
      this.show(null, text);
    } else if (loaded?.state === 'ready') {
      this.compute(loaded.value, layer, head);
      this.show(this.computed, null);
    } else {
      this.show(null, 'Loading query and key vectors…');
    }
  }

  resize(): void {
    // Queries and keys share the rows (cross attention: as many rows as the longer of the two).
    const a = this.model?.attention;
    const n = a ? Math.max(a.numTokens, a.numKeyTokens) : 0;
    this.area.fit(HEADER_HEIGHT + n * ROW_HEIGHT + 2 * PAD, HEADER_HEIGHT + 2 * PAD);
    this.size = {width: this.area.width, height: this.area.height, scrollTop: this.area.scrollTop};
    this.draw();
  }

  paint(painter: Painter): void {
    const c = this.computed;
    if (!c || !this.model) return;
    const {rows, qk, stored} = c;
    const n = Math.max(qk.numTokens, qk.numKeyTokens);
    const d = qk.headDim;
    const col = this.columns(d);
    const {scrollTop, height} = this.size;
    const first = Math.max(0, Math.floor((scrollTop - PAD) / ROW_HEIGHT));
    const last = Math.min(n - 1, Math.floor((scrollTop + height - HEADER_HEIGHT - PAD) / ROW_HEIGHT));
    const y = (j: number) => HEADER_HEIGHT + PAD + j * ROW_HEIGHT + ROW_HEIGHT / 2 - scrollTop;
    const keyColor = divergingColor(c.maxKey);
    const queryColor = divergingColor(c.maxQuery);
    const productColor = divergingColor(c.maxProduct);
    const scoreColor = divergingColor(c.maxScore);
    const headColor = headColors(qk.numHeads)[c.head];
    const cellHeight = ROW_HEIGHT - 4;

    painter.clip(0, HEADER_HEIGHT, this.size.width, height - HEADER_HEIGHT, () => {
      for (let j = first; j <= last; j++) {
        const top = y(j) - cellHeight / 2;
        const isQuery = j === c.query;
        if (isQuery) painter.rect(col.query, y(j) - ROW_HEIGHT / 2 + 1, col.label, ROW_HEIGHT - 2, HIGHLIGHT_FILL);
        else if (this.hover === j) painter.strokeRect(col.query + 0.5, y(j) - ROW_HEIGHT / 2 + 1.5, col.label - 1, ROW_HEIGHT - 3, FAINT_INK);
        if (j < qk.numTokens) painter.text(this.labels[j], col.query + col.label - LABEL_PAD, y(j), {font: isQuery ? FONT_FOCUS : FONT, color: INK, align: 'right'});
        if (j >= qk.numKeyTokens) continue;
        const mask = rows.masks[j];
        painter.text(this.keyLabels[j], col.key + col.label - LABEL_PAD, y(j), {font: FONT, color: mask ? FAINT_INK : INK, align: 'right'});
        if (mask) {
          const why =
            mask === 'window' ? `outside the sliding window of ${c.scoring.window}` : mask === 'chunk' ? `another chunk of ${c.scoring.chunk}` : 'causal';
          painter.text(`masked (${why})`, col.vector, y(j), {font: FONT_NUMBER, color: FAINT_INK});
          continue;
        }
        for (let t = 0; t < d; t++) {
          painter.rect(col.vector + t * col.cell, top, col.cell, cellHeight, keyColor(rows.keys[j * d + t]));
          painter.rect(col.product + t * col.cell, top, col.cell, cellHeight, productColor(rows.products[j * d + t]));
        }
        const score = rows.scores[j];
        const half = col.bar / 2;
        const length = (Math.abs(score) / c.maxScore) * half;
        painter.rect(score >= 0 ? col.score + half : col.score + half - length, top + 2, length, cellHeight - 4, scoreColor(score));
        painter.rect(col.score + half, top, 1, cellHeight, NEUTRAL_MARK);
        painter.text(score.toFixed(2), col.score + col.bar + 4, y(j), {font: FONT_NUMBER, color: MUTED_INK});
        painter.rect(col.softmax, top + 2, rows.softmax[j] * col.bar, cellHeight - 4, headColor);
        painter.text(`${(rows.softmax[j] * 100).toFixed(1)}%`, col.softmax + col.bar + 4, y(j), {font: FONT_NUMBER, color: MUTED_INK});
        painter.rect(col.stored, top + 2, stored[j] * col.bar, cellHeight - 4, NEUTRAL_MARK);
        painter.text(`${(stored[j] * 100).toFixed(1)}%`, col.stored + col.bar + 4, y(j), {font: FONT_NUMBER, color: MUTED_INK});
      }
    });

    // Header: column titles, then the query vector above the key vectors it meets.
    const title = {font: FONT_HEADER, color: MUTED_INK, baseline: 'middle' as const};
    const titleY = 14;
    painter.text('QUERY', col.query + col.label - LABEL_PAD, titleY, {...title, align: 'right'});
    painter.text('KEY', col.key + col.label - LABEL_PAD, titleY, {...title, align: 'right'});
    painter.text('KEY VECTOR k', col.vector, titleY, title);
    painter.text('q ∘ k', col.product, titleY, title);
    const scored = c.scoring.softcap ? 'cap(q · k × scale)' : 'q · k × scale';
    painter.text(hasBias(c.scoring) ? `${scored} + bias` : scored, col.score, titleY, title);
    painter.text('SOFTMAX', col.softmax, titleY, title);
    painter.text('STORED', col.stored, titleY, title);
    const qY = 38;
    painter.text(`q of ${this.labels[c.query]}`, col.key + col.label - LABEL_PAD, qY, {font: FONT_FOCUS, color: INK, align: 'right'});
    for (let t = 0; t < d; t++) painter.rect(col.vector + t * col.cell, qY - cellHeight / 2, col.cell, cellHeight, queryColor(rows.query[t]));
    const cap = (c.scoring.softcap ? ` · cap ±${c.scoring.softcap}` : '') + (hasBias(c.scoring) ? ' + bias' : '');
    painter.text(`× scale ${c.scoring.scaling.toPrecision(3)}${cap}`, col.score, qY, {font: FONT_NUMBER, color: MUTED_INK});
    if (c.scoring.sink !== null) {
      painter.text(`sink ${(rows.sinkShare * 100).toFixed(1)}%`, col.softmax, qY, {font: FONT_NUMBER, color: MUTED_INK});
    }
    this.area.canvas.dataset.rows = `${first}-${last}`;
    this.area.canvas.dataset.query = String(c.query);
    this.area.canvas.dataset.difference = c.difference.toFixed(4);
    this.area.canvas.dataset.layout = JSON.stringify({query: [col.query, col.query + col.label], top: y(0), row: ROW_HEIGHT});
  }

  private columns(d: number): Columns {
    const label = Math.min(MAX_LABEL, this.labelWidth + 2 * LABEL_PAD);
    const fixed = 2 * PAD + 2 * label + 7 * GAP + 3 * NUMBER;
    // A narrow view shrinks the bars first, then the vector cells (down to 1 px).
    const bar = Math.max(MIN_BAR, Math.min(BAR, Math.floor((this.size.width - fixed - 2 * Math.max(d, MIN_VECTOR)) / 3)));
    const cell = Math.max(1, Math.min(MAX_CELL, Math.floor((this.size.width - fixed - 3 * bar) / (2 * d))));
    const vectorWidth = Math.max(d * cell, MIN_VECTOR);
    const query = PAD;
    const key = query + label + GAP;
    const vector = key + label + GAP;
    const product = vector + vectorWidth + GAP;
    const score = product + vectorWidth + GAP;
    const softmax = score + bar + NUMBER + GAP;
    const stored = softmax + bar + NUMBER + GAP;
    return {query, key, vector, product, score, softmax, stored, cell, bar, label, end: stored + bar + NUMBER};
  }

  private compute(qk: QueryKey, layer: number, head: number): void {
    const {state, attention: a} = this.model!;
    const preferred = this.hover ?? state.focus.tokens[0];
    const query = preferred !== undefined && preferred < qk.numTokens ? preferred : a.header.causal ? qk.numTokens - 1 : 0;
    const prior = this.computed;
    if (prior && prior.qk === qk && prior.layer === layer && prior.head === head && prior.query === query) return;
    this.computed = neuronScene(qk, a, layer, head, query);
  }

  private show(computed: NeuronScene | null, message: string | null): void {
    this.message.hidden = message === null;
    this.message.textContent = message ?? '';
    this.area.element.hidden = computed === null;
    this.inspector.hidden = computed === null;
    if (computed === null) this.computed = null;
    this.resize();
    if (computed) this.inspect();
  }

  private draw(): void {
    if (!this.computed) return;
    this.size.scrollTop = this.area.scrollTop;
    this.paint(this.area.painter());
  }

  private inspect(): void {
    const c = this.computed!;
    this.inspector.replaceChildren(
      el('span', {class: 'inspector-token', text: `#${c.query} ${exactToken(this.model!.attention.tokens[c.query])}`}),
      el('span', {class: 'hint', text: ` · ${neuronCaption(c)} · hover or click a query token on the left`}),
    );
  }

  private setLabels(tokens: string[], keyTokens: string[]): void {
    this.labelsFor = [tokens, keyTokens];
    const queries = tokenLabels(tokens, FONT_FOCUS, MAX_LABEL_CHARS);
    const keys = keyTokens === tokens ? queries : tokenLabels(keyTokens, FONT_FOCUS, MAX_LABEL_CHARS);
    this.labels = queries.labels;
    this.keyLabels = keys.labels;
    this.labelWidth = Math.max(queries.width, keys.width);
  }

  private hit({x, y}: Point): number | null {
    const c = this.computed;
    if (!c) return null;
    const col = this.columns(c.qk.headDim);
    const j = Math.floor((y - HEADER_HEIGHT - PAD + this.size.scrollTop) / ROW_HEIGHT);
    if (y < HEADER_HEIGHT || j < 0 || j >= c.qk.numTokens || x < col.query || x > col.query + col.label) return null;
    return j;
  }

  private pointer(at: Point): void {
    const j = this.hit(at);
    this.area.canvas.style.cursor = j === null ? 'default' : 'pointer';
    this.setHover(j);
  }

  private setHover(j: number | null): void {
    if (j === this.hover || !this.computed) return;
    this.hover = j;
    this.compute(this.computed.qk, this.computed.layer, this.computed.head);
    this.draw();
    this.inspect();
  }
}

/** Whether q/k vectors were logged for the group drawn. */
function hasQueryKey(model: ExampleModel): boolean {
  return model.group ? model.group.has_qk : model.example.has_qk;
}
