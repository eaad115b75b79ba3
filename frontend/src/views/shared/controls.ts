// Controls the views share (layer, heads, sentence-pair filter, hiding, pruning); each writes the store.

import {select} from 'd3-selection';
import {el, hasFocus} from '../../draw/dom';
import type {State} from '../../state/state';
import type {Store} from '../../state/store';
import type {Pair} from '../../model/transforms';

/** The heads a state shows, as a set (null in the state means all). */
export function shownHeads(state: Readonly<State>, numHeads: number): number[] {
  const all = Array.from({length: numHeads}, (_, h) => h);
  if (state.focus.heads === null) return all;
  const shown = state.focus.heads.filter((h) => h < numHeads);
  return shown.length ? shown : all;
}

export class LayerPicker {
  readonly element: HTMLElement;
  private readonly select: HTMLSelectElement;
  private shown = '';

  constructor(store: Store) {
    this.select = el('select', {attrs: {'aria-label': 'Layer', 'data-control': 'layer'}});
    this.select.addEventListener('change', () => store.update({focus: {layer: Number(this.select.value)}}));
    this.element = el('label', {class: 'control'}, [el('span', {class: 'control-label', text: 'Layer'}), this.select]);
  }

  /** `labels`: what each layer is called (model/layers.ts; default its position). */
  set(numLayers: number, layer: number, labels?: readonly string[]): void {
    const named = labels ?? Array.from({length: numLayers}, (_, l) => String(l));
    const key = named.join(',');
    if (key !== this.shown) {
      this.shown = key;
      this.select.replaceChildren(...named.map((label, l) => el('option', {text: label, attrs: {value: String(l)}})));
    }
    this.select.value = String(Math.min(layer, numLayers - 1));
  }
}

/** Head swatches: click shows/hides a head, double-click shows it alone (`single`: click selects one). */
export class HeadPicker {
  readonly element: HTMLElement;
  private readonly swatches: HTMLElement;
  private numHeads = 0;

  constructor(
    private readonly store: Store,
    private readonly single = false,
  ) {
    this.swatches = el('div', {class: 'swatches', attrs: {role: 'group', 'aria-label': 'Heads', 'data-control': 'heads'}});
    const all = single
      ? null
      : el('button', {class: 'link-button', text: 'all', title: 'Show every head', on: {click: () => store.update({focus: {heads: null}})}});
    this.element = el('div', {class: 'control'}, [el('span', {class: 'control-label', text: single ? 'Head' : 'Heads'}), this.swatches, all]);
  }

  set(colors: string[], shown: number[]): void {
    this.numHeads = colors.length;
    const on = new Set(shown);
    select(this.swatches)
      .selectAll<HTMLButtonElement, number>('button')
      .data(colors.map((_, h) => h))
      .join((enter) =>
        enter
          .append('button')
          .attr('class', 'swatch')
          .on('click', (_event: MouseEvent, h: number) => this.click(h))
          .on('dblclick', (_event: MouseEvent, h: number) => this.solo(h)),
      )
      .text((h) => String(h))
      .attr('title', (h) => (this.single ? `Head ${h}` : `Head ${h}: click to show or hide, double-click to show it alone`))
      .attr('aria-pressed', (h) => String(on.has(h)))
      .style('--swatch', (h) => colors[h]);
  }

  private click(head: number): void {
    if (this.single) return this.store.update({focus: {heads: [head]}});
    const heads = new Set(shownHeads(this.store.state, this.numHeads));
    if (heads.has(head)) {
      if (heads.size === 1) return; // keep at least one head
      heads.delete(head);
    } else {
      heads.add(head);
    }
    this.store.update({focus: {heads: heads.size === this.numHeads ? null : [...heads].sort((a, b) => a - b)}});
  }

  private solo(head: number): void {
    if (this.single) return;
    const heads = this.store.state.focus.heads;
    const alone = heads !== null && heads.length === 1 && heads[0] === head;
    this.store.update({focus: {heads: alone ? null : [head]}});
  }
}

const PAIR_LABELS: [Pair, string][] = [
  ['all', 'All'],
  ['AA', 'A→A'],
  ['AB', 'A→B'],
  ['BA', 'B→A'],
  ['BB', 'B→B'],
];

/** Sentence-pair filter; hidden for examples of one segment. */
export class PairFilter {
  readonly element: HTMLElement;
  private readonly buttons: HTMLButtonElement[];

  constructor(store: Store) {
    this.buttons = PAIR_LABELS.map(([pair, label]) =>
      el('button', {
        text: label,
        title: pair === 'all' ? 'Every query and key' : `Queries in sentence ${pair[0]}, keys in sentence ${pair[1]}`,
        attrs: {'data-pair': pair},
        on: {click: () => store.update({filters: {pair}})},
      }),
    );
    this.element = el('div', {class: 'control'}, [
      el('span', {class: 'control-label', text: 'Pair'}),
      el('div', {class: 'segmented', attrs: {role: 'group', 'data-control': 'pair'}}, this.buttons),
    ]);
  }

  set(hasPair: boolean, pair: Pair): void {
    this.element.hidden = !hasPair;
    for (const button of this.buttons) button.setAttribute('aria-pressed', String(button.dataset.pair === (hasPair ? pair : 'all')));
  }
}

/** "Hide first/special tokens" and its "renormalise" option. */
export class HideToggle {
  readonly element: HTMLElement;
  private readonly hide: HTMLInputElement;
  private readonly renorm: HTMLInputElement;

  constructor(store: Store) {
    this.hide = el('input', {attrs: {type: 'checkbox', 'data-control': 'hide'}});
    this.renorm = el('input', {attrs: {type: 'checkbox', 'data-control': 'renorm'}});
    this.hide.addEventListener('change', () => store.update({filters: {hide: this.hide.checked}}));
    this.renorm.addEventListener('change', () => store.update({filters: {renorm: this.renorm.checked}}));
    this.element = el('div', {class: 'control'}, [
      el('label', {class: 'check', title: 'Hide attention to the first token and to special tokens such as [CLS], [SEP], <|endoftext|>'}, [
        this.hide,
        'Hide first/special',
      ]),
      el('label', {class: 'check', title: 'Divide each row by the attention left after hiding, so that it sums to 1 again'}, [
        this.renorm,
        'Renormalise',
      ]),
    ]);
  }

  set(state: Readonly<State>): void {
    this.hide.checked = state.filters.hide;
    this.renorm.checked = state.filters.renorm;
    this.renorm.disabled = !state.filters.hide;
  }
}

const THRESHOLD_MAX = 0.5; // the pruning slider's range: weights 0 .. 0.5
const THRESHOLD_STEP = 0.005;

/** Pruning of faint arcs: a minimum weight and an optional top-k per token and head. */
export class PruneControls {
  readonly element: HTMLElement;
  private readonly threshold: HTMLInputElement;
  private readonly value: HTMLElement;
  private readonly topk: HTMLInputElement;

  constructor(store: Store) {
    this.threshold = el('input', {
      attrs: {type: 'range', min: '0', max: String(THRESHOLD_MAX), step: String(THRESHOLD_STEP), 'data-control': 'threshold', 'aria-label': 'Minimum weight'},
    });
    this.value = el('span', {class: 'control-value'});
    this.topk = el('input', {attrs: {type: 'number', min: '0', max: '999', step: '1', 'data-control': 'topk', 'aria-label': 'Top k arcs per token'}});
    this.threshold.addEventListener('input', () => {
      this.value.textContent = Number(this.threshold.value).toFixed(3);
      store.update({filters: {threshold: Number(this.threshold.value)}});
    });
    this.topk.addEventListener('change', () => {
      const k = Math.max(0, Math.min(999, Math.floor(Number(this.topk.value) || 0)));
      store.update({filters: {topk: k}});
    });
    this.element = el('div', {class: 'control'}, [
      el('label', {class: 'control', title: 'Arcs of a smaller weight are not drawn'}, [
        el('span', {class: 'control-label', text: 'Min weight'}),
        this.threshold,
        this.value,
      ]),
      el('label', {class: 'control', title: 'Draw at most this many arcs per token and head (0: no limit)'}, [
        el('span', {class: 'control-label', text: 'Top-k'}),
        this.topk,
      ]),
    ]);
  }

  set(state: Readonly<State>): void {
    if (!hasFocus(this.threshold)) this.threshold.value = String(state.filters.threshold);
    this.value.textContent = state.filters.threshold.toFixed(3);
    if (!hasFocus(this.topk)) this.topk.value = String(state.filters.topk);
  }
}

/** A choice among a few options as pressed buttons (the view-wide segmented control). */
export class Segmented<T extends string> {
  readonly element: HTMLElement;
  private readonly buttons: HTMLButtonElement[];

  constructor(label: string, control: string, options: readonly [T, string, string][], choose: (value: T) => void) {
    this.buttons = options.map(([value, text, title]) =>
      el('button', {text, title, attrs: {'data-value': value}, on: {click: () => choose(value)}}),
    );
    this.element = el('div', {class: 'control'}, [
      label ? el('span', {class: 'control-label', text: label}) : null,
      el('div', {class: 'segmented', attrs: {role: 'group', 'data-control': control}}, this.buttons),
    ]);
  }

  set(value: T): void {
    for (const button of this.buttons) button.setAttribute('aria-pressed', String(button.dataset.value === value));
  }
}

/** The attention group of the example (encoder, decoder, cross, ...): hidden for one group. */
export class GroupPicker {
  readonly element: HTMLElement;
  private readonly select: HTMLSelectElement;
  private key = '';

  constructor(store: Store) {
    this.select = el('select', {attrs: {'aria-label': 'Attention group', 'data-control': 'group'}});
    this.select.addEventListener('change', () => store.update({panel: {group: this.select.selectedIndex === 0 ? null : this.select.value}, focus: {tokens: []}}));
    this.element = el('label', {class: 'control', title: 'Which attention of the example: self, encoder, decoder, or cross (decoder queries over encoder keys)'}, [
      el('span', {class: 'control-label', text: 'Attention'}),
      this.select,
    ]);
  }

  /** `groups`: the groups in order, the first being the default (none or one: the picker hides),
   * with their query × key sizes when known; `current`: the one drawn. */
  set(groups: readonly {name: string; num_tokens?: number; num_key_tokens?: number}[], current: string | null): void {
    this.element.hidden = groups.length < 2;
    const label = (g: (typeof groups)[number]) => (g.num_tokens === undefined ? g.name : `${g.name} (${g.num_tokens} × ${g.num_key_tokens})`);
    const key = groups.map(label).join(',');
    if (key !== this.key) {
      this.key = key;
      this.select.replaceChildren(
        ...groups.map((g) => el('option', {text: label(g), attrs: {value: g.name}})),
      );
    }
    this.select.value = current ?? groups[0]?.name ?? '';
  }
}
