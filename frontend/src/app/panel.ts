// The slim left panel: run, tag, step (slider) and example.

import {select} from 'd3-selection';
import type {ExampleInfo} from '../data/api';
import {el} from '../draw/dom';
import type {Selection} from '../state/selection';
import type {Store} from '../state/store';
import {decodeByteLevel, isByteLevel, truncate, visibleText} from '../model/tokens';

const PREVIEW_CHARS = 90; // characters of an example's text shown in the list
const PLAY_INTERVAL_MS = 700; // per step while playing (longer when a step takes longer to load)

/** What the panel shows: the resolved selection (with the choices around it) and the examples. */
export interface PanelModel extends Selection {
  /** null while loading */
  examples: ExampleInfo[] | null;
  example: number;
}

/** The text of an example as a one-line preview. */
export function examplePreview(example: ExampleInfo): string {
  if (example.text == null && example.image) {  // its tokens are patch names: say what the image is instead
    const [rows, cols] = example.image.grid;
    const prefix = example.image.prefix_names.length ? ` + ${example.image.prefix_names.join(' ')}` : '';
    return `image: ${rows} × ${cols} patches${prefix}`;
  }
  const text = example.text ?? (isByteLevel(example.tokens) ? example.tokens.map(decodeByteLevel) : example.tokens).join('');
  return truncate(visibleText(text.replace(/\s+/g, ' ').trim()), PREVIEW_CHARS);
}

export class Panel {
  readonly element: HTMLElement;
  private readonly run: HTMLSelectElement;
  private readonly tag: HTMLSelectElement;
  private readonly slider: HTMLInputElement;
  private readonly stepValue: HTMLElement;
  private readonly stepRange: HTMLElement;
  private readonly list: HTMLElement;
  private readonly details: HTMLElement;
  private readonly exampleField: HTMLElement;
  private readonly play: HTMLButtonElement;
  private steps: number[] = [];
  private step: number | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private busy = false;
  private shownKey = '';
  private shownExamples: ExampleInfo[] | null = null;

  constructor(private readonly store: Store) {
    this.run = el('select', {attrs: {'aria-label': 'Run', 'data-control': 'run'}});
    this.tag = el('select', {attrs: {'aria-label': 'Tag', 'data-control': 'tag'}});
    this.slider = el('input', {attrs: {type: 'range', min: '0', max: '0', step: '1', 'aria-label': 'Step', 'data-control': 'step'}});
    this.stepValue = el('span', {class: 'step-value', attrs: {'data-control': 'step-value'}});
    this.stepRange = el('span', {class: 'step-range'});
    this.list = el('div', {class: 'examples', attrs: {role: 'listbox', 'aria-label': 'Examples', 'data-control': 'examples'}});
    this.details = el('div', {class: 'example-details', attrs: {'data-control': 'example-details'}});
    this.play = el('button', {
      class: 'play-button',
      text: '▶',
      title: 'Play: step through the steps, oldest to newest',
      attrs: {'data-control': 'play', 'aria-label': 'Play', 'aria-pressed': 'false'},
      on: {click: () => this.togglePlay()},
    });

    this.run.addEventListener('change', () => store.update({panel: {run: this.run.value, tag: null, step: null, example: 0}, focus: {tokens: []}}));
    this.tag.addEventListener('change', () => store.update({panel: {tag: this.tag.value, step: null, example: 0}, focus: {tokens: []}}));
    // The label follows the thumb while dragging; the data loads when it is let go.
    this.slider.addEventListener('input', () => this.showStep(this.steps[Number(this.slider.value)]));
    this.slider.addEventListener('change', () => {
      const index = Number(this.slider.value);
      // The newest step stays "follow the newest" so that a live run keeps updating.
      this.stopPlaying();
      store.update({panel: {step: index === this.steps.length - 1 ? null : this.steps[index]}});
    });

    this.element = el('aside', {class: 'panel'}, [
      el('label', {class: 'field'}, [el('span', {class: 'field-label', text: 'Run'}), this.run]),
      el('label', {class: 'field'}, [el('span', {class: 'field-label', text: 'Tag'}), this.tag]),
      el('div', {class: 'field'}, [
        el('div', {class: 'field-label step-label'}, [el('span', {text: 'Step'}), this.stepValue]),
        el('div', {class: 'step-row'}, [this.play, this.slider]),
        this.stepRange,
      ]),
      (this.exampleField = el('div', {class: 'field field-grow'}, [el('span', {class: 'field-label', text: 'Example'}), this.list, this.details])),
    ]);
  }

  /** Views that do not draw one example (metrics, analysis, exemplars) dim the example list. */
  setExampleUsed(used: boolean): void {
    this.exampleField.classList.toggle('field-unused', !used);
    this.exampleField.title = used ? '' : 'This view does not show one example';
  }

  /** While a step loads, playing waits for it. */
  setBusy(busy: boolean): void {
    this.busy = busy;
  }

  private togglePlay(): void {
    if (this.timer !== null) return this.stopPlaying();
    if (this.steps.length < 2) return;
    // From the start when at the newest step, else from where the slider is.
    if (this.step === null || this.steps.indexOf(this.step) >= this.steps.length - 1) this.store.update({panel: {step: this.steps[0]}});
    this.timer = setInterval(() => this.advance(), PLAY_INTERVAL_MS);
    this.play.textContent = '❚❚';
    this.play.setAttribute('aria-pressed', 'true');
    this.play.setAttribute('aria-label', 'Pause');
  }

  private advance(): void {
    if (this.busy) return;
    const index = this.step === null ? this.steps.length - 1 : this.steps.indexOf(this.step);
    if (index >= this.steps.length - 2) {
      // The last step: follow the newest again, as a live run goes on logging.
      this.stopPlaying();
      this.store.update({panel: {step: null}});
    } else {
      this.store.update({panel: {step: this.steps[index + 1]}});
    }
  }

  private stopPlaying(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.play.textContent = '▶';
    this.play.setAttribute('aria-pressed', 'false');
    this.play.setAttribute('aria-label', 'Play');
  }

  set(model: PanelModel): void {
    // Called on every render: unchanged choices leave the controls alone (a slider being dragged).
    const key = JSON.stringify([model.runs, model.run, model.tags, model.tag, model.steps, model.step, model.example, model.examples?.map((e) => e.index) ?? null]);
    if (key === this.shownKey && model.examples === this.shownExamples) return;
    this.shownKey = key;
    this.shownExamples = model.examples;
    setOptions(this.run, model.runs, model.run);
    setOptions(this.tag, model.tags, model.tag);
    this.steps = model.steps;
    this.step = model.step;
    this.play.disabled = model.steps.length < 2;
    this.slider.max = String(Math.max(0, model.steps.length - 1));
    this.slider.value = String(Math.max(0, model.steps.indexOf(model.step)));
    this.slider.disabled = model.steps.length < 2;
    this.showStep(model.step);
    const first = model.steps[0];
    const last = model.steps[model.steps.length - 1];
    this.stepRange.textContent = model.steps.length > 1 ? `${model.steps.length} steps, ${first}–${last}` : '1 step';
    this.setExamples(model.examples, model.example);
  }

  private showStep(step: number | undefined): void {
    this.stepValue.textContent = step === undefined ? '' : String(step);
  }

  private setExamples(examples: ExampleInfo[] | null, selected: number): void {
    const store = this.store;
    select(this.list)
      .selectAll<HTMLElement, ExampleInfo>('.example')
      .data(examples ?? [], (d) => String(d.index))
      .join((enter) => {
        const item = enter
          .append('div')
          .attr('class', 'example')
          .attr('role', 'option')
          .attr('tabindex', '0')
          .on('click', (_event: MouseEvent, d: ExampleInfo) => store.update({panel: {example: d.index}, focus: {tokens: []}}))
          .on('keydown', (event: KeyboardEvent, d: ExampleInfo) => {
            if (event.key === 'Enter' || event.key === ' ') store.update({panel: {example: d.index}, focus: {tokens: []}});
          });
        item.append('span').attr('class', 'example-index');
        item.append('span').attr('class', 'example-text');
        return item;
      })
      .attr('aria-selected', (d) => String(d.index === selected))
      .attr('data-example', (d) => String(d.index))
      .call((item) => item.select('.example-index').text((d) => `#${d.index}`))
      .call((item) => item.select('.example-text').text((d) => examplePreview(d)));
    const current = examples?.find((e) => e.index === selected);
    this.details.textContent = current
      ? `${current.num_tokens} tokens · ${current.num_layers} layers × ${current.num_heads} heads` +
        `${current.segments?.length ? ' · sentence pair' : ''}${current.causal ? ' · causal' : ''}` +
        `${current.encoding === 'topk' ? ' · sparse (top-k rows)' : ''}${current.has_qk ? ' · q/k logged' : ''}`
      : '';
  }
}

function setOptions(control: HTMLSelectElement, values: string[], value: string): void {
  const current = Array.from(control.options, (o) => o.value);
  if (current.length !== values.length || current.some((v, i) => v !== values[i])) {
    control.replaceChildren(...values.map((v) => el('option', {text: v, attrs: {value: v}})));
  }
  control.value = value;
  control.disabled = values.length < 2;
}
