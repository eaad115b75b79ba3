// The Health panel's toolbar: which health source (the training monitor or a probe), and the four
// thresholds, each with its default and the reason for it in its tooltip.

import {el, hasFocus} from '../../draw/dom';
import type {State} from '../../state/state';
import type {Store} from '../../state/store';
import {HEALTH_DEFAULTS, type HealthThresholds} from '../../model/health';

/** Labels, units and the reasons for the defaults (README: "The Health panel"). */
const THRESHOLDS: [keyof HealthThresholds, string, string, string][] = [
  ['logitGrowth', 'Max logit >', '× first', `A head is flagged when its max logit exceeds this many times its first logged value (0: off). Default ${HEALTH_DEFAULTS.logitGrowth || 'off'}: a run trained from scratch starts at its initialisation's max logits (~0.2 in the demo), from which healthy heads grow 200–300× (to 41 by step 200 in the demo's run train), so any factor flags healthy heads. Set it for a run that starts from a trained model (fine-tuning): 2× there is the head's softmax at half its temperature.`],
  ['logitLevel', 'or >', '', `A head is flagged when its max logit exceeds this level (0: off). Default ${HEALTH_DEFAULTS.logitLevel}: Kimi K2's QK-Clip threshold τ, the level at which it rescales a head's queries and keys (Kimi Team 2025). The demo's healthy heads stay under 42; its 10× learning-rate run passes 100 by step 10 and reaches 1,430.`],
  ['entropyDrop', 'Entropy <', '× first', `A head is flagged when its attention entropy falls below this share of its first logged value (0: off). Default ${HEALTH_DEFAULTS.entropyDrop}: e^H is the number of keys a query effectively attends to; a tenth of the starting entropy (3.2 nats, ~25 keys, in the demo) leaves ~1.4: attention collapsed onto one key, as Zhai et al. 2023 saw before divergence. The demo's healthy heads stay above 0.31×; its 10× learning-rate run falls to 0.002×.`],
  ['entropyFloor', 'or <', 'nats', `A head is flagged when its attention entropy falls below this many nats (0: off). Default ${HEALTH_DEFAULTS.entropyFloor}: the query's largest weight is then about 0.98–0.99, its attention one-hot, whatever the head started from.`],
];

/** The URL key of each threshold (state/url_state.ts), named on its input for tests and links. */
const KEYS: Record<keyof HealthThresholds, string> = {logitGrowth: 'lgrow', logitLevel: 'llevel', entropyDrop: 'edrop', entropyFloor: 'efloor'};

/** The thresholds a state sets. */
export function healthThresholds(state: Readonly<State>): HealthThresholds {
  const {logitGrowth, logitLevel, entropyDrop, entropyFloor} = state.health;
  return {logitGrowth, logitLevel, entropyDrop, entropyFloor};
}

export class HealthControls {
  readonly element: HTMLElement;
  private readonly source: HTMLSelectElement;
  private readonly sourceControl: HTMLElement;
  private readonly inputs = new Map<keyof HealthThresholds, HTMLInputElement>();
  private sourcesKey = '';

  constructor(store: Store) {
    this.source = el('select', {attrs: {'aria-label': 'Health source', 'data-control': 'health-source'}});
    this.source.addEventListener('change', () => store.update({health: {source: this.source.value}}));
    this.sourceControl = el('label', {class: 'control', title: 'attention_health: the AttentionMonitor on training batches; a probe: its max_logit on the probe inputs'}, [
      el('span', {class: 'control-label', text: 'Source'}),
      this.source,
    ]);
    const thresholds = THRESHOLDS.map(([key, label, unit, title]) => {
      const input = el('input', {attrs: {type: 'number', min: '0', step: 'any', 'data-control': KEYS[key], 'aria-label': `${label} ${unit}`.trim()}});
      input.addEventListener('change', () => {
        const value = Number(input.value);
        store.update({health: {[key]: Number.isFinite(value) && value >= 0 ? value : HEALTH_DEFAULTS[key]}});
      });
      this.inputs.set(key, input);
      return el('label', {class: 'control threshold', title}, [el('span', {class: 'control-label', text: label}), input, unit ? el('span', {class: 'control-label', text: unit}) : null]);
    });
    const reset = el('button', {
      class: 'link-button',
      text: 'defaults',
      title: 'Back to the default thresholds (hover a threshold for the reason behind its default)',
      on: {click: () => store.update({health: {...HEALTH_DEFAULTS}})},
    });
    this.element = el('div', {class: 'toolbar-group'}, [this.sourceControl, ...thresholds, reset]);
  }

  set(sources: readonly string[], source: string | null, thresholds: HealthThresholds): void {
    const key = sources.join('\n');
    if (key !== this.sourcesKey) {
      this.sourcesKey = key;
      this.source.replaceChildren(...sources.map((s) => el('option', {text: s, attrs: {value: s}})));
    }
    this.sourceControl.hidden = sources.length < 2;
    if (source !== null) this.source.value = source;
    for (const [name, input] of this.inputs) if (!hasFocus(input)) input.value = String(thresholds[name]);
  }
}
