// The Long view's text: the example's tokens as lines of a virtualised list (only the visible lines
// are in the DOM, so 32k+ tokens scroll freely; token text set with textContent), tinted by the
// mass a brushed query range gives each key; a rail beside it shows the whole example, the brush
// and arcs to the keys its top-k rows point at; above, what the rows say.

import {format} from 'd3-format';
import {el, frameThrottle} from '../../draw/dom';
import {CanvasPainter} from '../../draw/painter';
import {ACCENT, BORDER, HIGHLIGHT_FILL, INK, MUTED_INK} from '../../draw/theme';
import {brushRange, visibleRows, type RowsSummary} from '../../model/long';
import {displayToken, truncate} from '../../model/tokens';
import {LINE_HEIGHT, railBins, railToken, railY, textLayout, type TextLayout} from './scene';

const count = format(',');
const percent = (v: number) => `${(v * 100).toFixed(v < 0.01 ? 2 : 1)}%`;
const RAIL_WIDTH = 56; // px
const MAX_TOKEN_CHARS = 24;
const ACCENT_RGB = '245, 124, 0';

/** What the text shows, as the view resolved it. */
export interface TextData {
  /** the key tokens (the list shows the keys; query i sits at key position i + offset) */
  tokens: readonly string[];
  byteLevel: boolean;
  /** Nk − Nq: where the queries start among the keys */
  offset: number;
  numQueries: number;
  brush: [number, number] | null;
  /** what the brushed rows say; null while they load or when no head is picked */
  summary: RowsSummary | null;
  /** why there are no rows to show (no brush, a mean map, loading, an error) */
  note: string;
  token: number | null;
}

export interface TextHandlers {
  brushed(range: [number, number]): void;
  /** a token clicked (absolute query position) */
  picked(token: number): void;
}

export class TextPane {
  readonly element: HTMLElement;
  readonly list: HTMLElement;
  private readonly summary: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly body: HTMLElement;
  private readonly rail: HTMLCanvasElement;
  private data: TextData | null = null;
  private layout: TextLayout = {perLine: 8, lines: 0};
  private shown = '';
  private maxMass = 0;
  private dragging: {from: number; to: number} | null = null;
  /** token labels, made as lines are first shown (not all 32k+ up front) */
  private labels: (string | undefined)[] = [];
  private labelsOf: readonly string[] | null = null;

  constructor(private readonly handlers: TextHandlers) {
    this.summary = el('div', {class: 'long-summary', attrs: {'data-long': 'summary', 'aria-live': 'polite'}});
    this.body = el('div', {class: 'long-lines'});
    this.spacer = el('div', {class: 'long-spacer'}, [this.body]);
    this.list = el('div', {class: 'long-text', attrs: {'data-long': 'text', tabindex: '0'}}, [this.spacer]);
    this.rail = el('canvas', {class: 'long-rail', attrs: {'data-figure': 'long-rail', title: 'The whole example: click to scroll there'}});
    this.element = el('div', {class: 'long-text-pane'}, [this.summary, el('div', {class: 'long-text-row'}, [this.list, this.rail])]);
    this.list.addEventListener('scroll', frameThrottle(() => this.render(false)), {passive: true});
    this.body.addEventListener('mousedown', (event) => this.down(event));
    this.body.addEventListener('mouseover', (event) => this.over(event));
    window.addEventListener('mouseup', () => this.up());
    this.rail.addEventListener('click', (event) => {
      if (this.data) this.scrollTo(railToken(event.offsetY, this.data.tokens.length, this.rail.clientHeight));
    });
  }

  set(data: TextData): void {
    const resized = this.data?.tokens !== data.tokens;
    this.data = data;
    this.maxMass = 0;
    if (data.summary) for (const {weight} of data.summary.top) this.maxMass = Math.max(this.maxMass, weight);
    if (resized) this.resize();
    this.paintSummary();
    this.render(true);
  }

  resize(): void {
    if (!this.data) return;
    this.layout = textLayout(this.list.clientWidth || 480, this.data.tokens.length);
    this.spacer.style.height = `${this.layout.lines * LINE_HEIGHT}px`;
    this.render(true);
  }

  /** Scrolls to key position `token` unless it is shown already. */
  reveal(token: number): void {
    const [first, last] = (this.list.dataset.shown ?? '0-0').split('-').map(Number);
    if (token < first + this.layout.perLine * 2 || token >= last - this.layout.perLine * 4) this.scrollTo(token);
  }

  /** Scrolls so that key position `token` shows a third of the way down. */
  scrollTo(token: number): void {
    const line = Math.floor(token / this.layout.perLine);
    this.list.scrollTop = Math.max(0, line * LINE_HEIGHT - this.list.clientHeight / 3);
    this.render(false);
  }

  /** Draws the visible lines (again when `force`, else only if the visible lines changed). */
  render(force: boolean): void {
    const data = this.data;
    if (!data) return;
    const {perLine, lines} = this.layout;
    const [first, last] = visibleRows(this.list.scrollTop, this.list.clientHeight || 400, LINE_HEIGHT, lines);
    const key = `${first}-${last}-${perLine}`;
    if (force || key !== this.shown) {
      this.shown = key;
      this.body.style.transform = `translateY(${first * LINE_HEIGHT}px)`;
      const label = this.tokenLabel();
      const brush = this.brushOf();
      const rows: HTMLElement[] = [];
      for (let line = first; line < last; line++) {
        const spans: HTMLElement[] = [el('span', {class: 'long-pos', text: count(line * perLine)})];
        const end = Math.min(data.tokens.length, (line + 1) * perLine);
        for (let j = line * perLine; j < end; j++) spans.push(this.tokenSpan(j, label(j), brush));
        rows.push(el('div', {class: 'long-line'}, spans));
      }
      this.body.replaceChildren(...rows);
      this.list.dataset.lines = `${first}-${last}`;
      this.list.dataset.tokens = String(data.tokens.length);
      this.list.dataset.shown = `${first * perLine}-${Math.min(data.tokens.length, last * perLine)}`;
    }
    this.paintRail();
  }

  private tokenSpan(j: number, label: string, brush: [number, number] | null): HTMLElement {
    const data = this.data!;
    const span = el('span', {class: 'long-token', text: label, attrs: {'data-i': String(j)}});
    const query = j - data.offset;
    const mass = data.summary?.mass[j] ?? 0;
    if (mass > 0 && this.maxMass > 0) {
      span.style.background = `rgba(${ACCENT_RGB}, ${(0.12 + 0.78 * Math.sqrt(mass / this.maxMass)).toFixed(3)})`;
      span.title = `key ${count(j)}: ${percent(mass)} of the brushed queries' attention`;
    }
    if (brush && query >= brush[0] && query < brush[1]) span.classList.add('long-brushed');
    if (data.token !== null && query === data.token) span.classList.add('long-locked');
    return span;
  }

  private tokenLabel(): (j: number) => string {
    const data = this.data!;
    if (this.labelsOf !== data.tokens) {
      this.labelsOf = data.tokens;
      this.labels = new Array(data.tokens.length);
    }
    const labels = this.labels;
    return (j) => (labels[j] ??= truncate(displayToken(data.tokens[j], data.byteLevel), MAX_TOKEN_CHARS));
  }

  /** The brush shown: the one being dragged, else the state's. */
  private brushOf(): [number, number] | null {
    const data = this.data!;
    return this.dragging ? brushRange(this.dragging.from, this.dragging.to, data.numQueries) : data.brush;
  }

  private paintSummary(): void {
    const data = this.data!;
    const {summary, brush} = data;
    const parts: (HTMLElement | string)[] = [];
    if (!brush || !summary) {
      parts.push(el('span', {class: 'hint', text: data.note}));
      delete this.summary.dataset.top;
    } else {
      parts.push(
        el('span', {class: 'long-summary-range', text: `Queries ${count(brush[0])}–${count(brush[1] - 1)}`}),
        el('span', {class: 'hint', text: ` · the kept top-k keys hold ${percent(Math.min(1, summary.kept))} of their attention, the rest ${percent(summary.remainder)} · most attended:`}),
      );
      for (const {key, weight} of summary.top) {
        parts.push(
          el('button', {
            class: 'long-key',
            title: `Scroll to key ${count(key)}`,
            attrs: {'data-key': String(key)},
            on: {click: () => this.scrollTo(key)},
          }, [el('span', {class: 'long-key-pos', text: `#${count(key)}`}), el('span', {class: 'long-key-token', text: truncate(displayToken(data.tokens[key], data.byteLevel), 16)}), el('span', {class: 'long-key-weight', text: percent(weight)})]),
        );
      }
      this.summary.dataset.top = JSON.stringify(summary.top);
      this.summary.dataset.remainder = summary.remainder.toFixed(4);
    }
    this.summary.replaceChildren(...parts);
  }

  /** The rail: the visible lines, the brush, and an arc from the brush to each key bin its rows
   * point at (the largest weight in each pixel row). */
  private paintRail(): void {
    const data = this.data!;
    const height = this.list.clientHeight;
    if (!height) return;
    const n = data.tokens.length;
    const painter = new CanvasPainter(this.rail, RAIL_WIDTH, height);
    this.rail.style.height = `${height}px`;
    painter.rect(0, 0, RAIL_WIDTH, height, HIGHLIGHT_FILL, 0.5);
    const [first, last] = (this.list.dataset.shown ?? '0-0').split('-').map(Number);
    const y0 = railY(first, n, height);
    painter.strokeRect(1.5, y0, RAIL_WIDTH - 3, Math.max(3, railY(last, n, height) - y0), MUTED_INK, 1);
    const brush = this.brushOf();
    let arcs = 0;
    if (brush) {
      const b0 = railY(brush[0] + data.offset, n, height);
      const b1 = Math.max(b0 + 2, railY(brush[1] + data.offset, n, height));
      painter.rect(2, b0, 5, b1 - b0, ACCENT);
      const summary = data.summary;
      if (summary && this.maxMass > 0) {
        const bins = railBins(summary.mass, height);
        const from = (b0 + b1) / 2;
        for (let b = 0; b < bins.weight.length; b++) {
          const w = bins.weight[b];
          if (w <= 0) continue;
          const strength = Math.sqrt(w / this.maxMass);
          const y = b + 0.5;
          painter.rect(RAIL_WIDTH - 4 - 14 * strength, y - 0.5, 14 * strength, 1.5, ACCENT);
          if (strength < 0.15 || Math.abs(y - from) < 2) continue;
          const bulge = Math.min(RAIL_WIDTH - 14, 8 + Math.abs(y - from) / 4);
          painter.path(
            (ctx) => {
              ctx.moveTo(7, from);
              ctx.bezierCurveTo(7 + bulge, from, 7 + bulge, y, RAIL_WIDTH - 18, y);
            },
            {stroke: ACCENT, width: 1 + 1.5 * strength, alpha: 0.25 + 0.6 * strength},
          );
          arcs++;
        }
      }
    }
    if (data.token !== null) {
      const y = railY(data.token + data.offset, n, height);
      painter.lines([0, y, RAIL_WIDTH, y], 1, INK, 0.8, 1);
    }
    painter.strokeRect(0.5, 0.5, RAIL_WIDTH - 1, height - 1, BORDER);
    this.rail.dataset.arcs = String(arcs);
  }

  private tokenOf(event: Event): number | null {
    const target = (event.target as HTMLElement).closest?.('[data-i]') as HTMLElement | null;
    return target ? Number(target.dataset.i) : null;
  }

  private down(event: MouseEvent): void {
    const j = this.tokenOf(event);
    if (j === null || event.button || !this.data) return;
    event.preventDefault(); // no text selection: the drag brushes
    const q = j - this.data.offset;
    this.dragging = {from: q, to: q};
  }

  private over(event: MouseEvent): void {
    const j = this.tokenOf(event);
    if (!this.dragging || j === null || !this.data) return;
    const q = j - this.data.offset;
    if (q === this.dragging.to) return;
    this.dragging.to = q;
    this.render(true);
  }

  private up(): void {
    const drag = this.dragging;
    if (!drag || !this.data) return;
    this.dragging = null;
    if (drag.from === drag.to) {
      if (drag.from >= 0) this.handlers.picked(drag.from);
    } else {
      this.handlers.brushed(brushRange(Math.max(0, drag.from), Math.max(0, drag.to), this.data.numQueries));
    }
    this.render(true);
  }
}
