// A run and a step for A or B of the Compare view (the image view's B − A picks its endpoints with it too).

import {el} from '../../draw/dom';
import type {Endpoint} from '../../state/selection';

/** A run and a step for A or B. */
export class EndpointPicker {
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
