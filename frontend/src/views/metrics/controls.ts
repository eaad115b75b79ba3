// The Metrics view's controls: the metric, the runs overlaid, and how curves are drawn; each
// writes the store.

import {select} from 'd3-selection';
import {el, hasFocus} from '../../draw/dom';
import {metricAbout, metricLabel, posParts, UPOS_NAMES} from '../../model/metrics';
import {MAX_SMOOTHING, type State} from '../../state/state';
import type {Store} from '../../state/store';
import {Segmented} from '../shared/controls';

/** The metric to plot: the core metrics, then parts of speech received and paid, as the probe logged them. */
export class MetricPicker {
  readonly element: HTMLElement;
  private readonly select: HTMLSelectElement;
  private key = '';

  constructor(store: Store, label = 'Metric', field: 'metric' = 'metric') {
    this.select = el('select', {attrs: {'aria-label': label, 'data-control': field}});
    this.select.addEventListener('change', () => store.update({metrics: {[field]: this.select.value}}));
    this.element = el('label', {class: 'control'}, [el('span', {class: 'control-label', text: label}), this.select]);
  }

  set(metrics: readonly string[], metric: string): void {
    const key = metrics.join('\n');
    if (key !== this.key) {
      this.key = key;
      const groups: [string, string[]][] = [
        ['Per head', metrics.filter((m) => !posParts(m))],
        ['Attention to a part of speech', metrics.filter((m) => posParts(m)?.direction === 'pos')],
        ['Attention from a part of speech', metrics.filter((m) => posParts(m)?.direction === 'pos_from')],
      ];
      this.select.replaceChildren(
        ...groups
          .filter(([, ms]) => ms.length)
          .map(([name, ms]) => {
            const group = el('optgroup');
            group.label = name;
            group.append(...ms.map((m) => el('option', {text: optionText(m), attrs: {value: m}})));
            return group;
          }),
      );
    }
    this.select.value = metric;
    this.select.title = metricAbout(metric);
  }
}

function optionText(metric: string): string {
  const pos = posParts(metric);
  return pos ? `${pos.direction === 'pos' ? 'to' : 'from'} ${pos.tag} (${UPOS_NAMES[pos.tag] ?? pos.tag})` : metricLabel(metric);
}

/** Runs overlaid on the panel's run, as chips in TensorBoard's run colours. */
export class RunsPicker {
  readonly element: HTMLElement;
  private readonly chips: HTMLElement;

  constructor(private readonly store: Store) {
    this.chips = el('div', {class: 'chips', attrs: {role: 'group', 'aria-label': 'Runs', 'data-control': 'runs'}});
    this.element = el('div', {class: 'control'}, [el('span', {class: 'control-label', text: 'Runs'}), this.chips]);
  }

  /** `runs`: every run with the data; `primary`: the panel's run (always shown). */
  set(runs: readonly string[], primary: string, shown: readonly string[], color: (run: string) => string): void {
    const on = new Set([primary, ...shown]);
    select(this.chips)
      .selectAll<HTMLButtonElement, string>('button')
      .data(runs, (run) => run)
      .join((enter) => {
        const chip = enter
          .append('button')
          .attr('class', 'chip')
          .on('click', (_event: MouseEvent, run: string) => this.toggle(run));
        chip.append('span').attr('class', 'chip-key');
        chip.append('span').attr('class', 'chip-text');
        return chip;
      })
      .attr('data-run', (run) => run)
      .attr('aria-pressed', (run) => String(on.has(run)))
      .property('disabled', (run) => run === primary)
      .attr('title', (run) => (run === primary ? `${run}: the run chosen in the panel` : `${run}: click to overlay or remove`))
      .style('--chip', (run) => color(run))
      .call((chip) => chip.select('.chip-text').text((run) => run));
    this.element.hidden = runs.length < 2;
  }

  private toggle(run: string): void {
    const runs = this.store.state.metrics.runs;
    this.store.update({metrics: {runs: runs.includes(run) ? runs.filter((r) => r !== run) : [...runs, run]}});
  }
}

/** TensorBoard's smoothing slider and the linear/log step axis. */
export class CurveControls {
  readonly element: HTMLElement;
  private readonly slider: HTMLInputElement;
  private readonly value: HTMLElement;
  private readonly axis: Segmented<'linear' | 'log'>;

  constructor(store: Store) {
    this.slider = el('input', {
      attrs: {type: 'range', min: '0', max: String(MAX_SMOOTHING), step: '0.01', 'data-control': 'smoothing', 'aria-label': 'Smoothing'},
    });
    this.value = el('span', {class: 'control-value'});
    this.slider.addEventListener('input', () => {
      this.value.textContent = Number(this.slider.value).toFixed(2);
      store.update({metrics: {smoothing: Number(this.slider.value)}});
    });
    this.axis = new Segmented('Steps', 'xaxis', [
      ['linear', 'Linear', 'A linear step axis'],
      ['log', 'Log', 'A logarithmic step axis (step 0 at its left end)'],
    ], (value) => store.update({metrics: {xlog: value === 'log'}}));
    this.element = el('div', {class: 'control'}, [
      el('label', {class: 'control', title: 'Exponential moving average of the curves, as in TensorBoard’s scalars (the raw curve stays faint)'}, [
        el('span', {class: 'control-label', text: 'Smoothing'}),
        this.slider,
        this.value,
      ]),
      this.axis.element,
    ]);
  }

  set(state: Readonly<State>): void {
    if (!hasFocus(this.slider)) this.slider.value = String(state.metrics.smoothing);
    this.value.textContent = state.metrics.smoothing.toFixed(2);
    this.axis.set(state.metrics.xlog ? 'log' : 'linear');
  }
}
