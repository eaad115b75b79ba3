// The image view's toolbar: mode, layer and heads, mean or each head, rollout settings, opacity,
// and B − A with its endpoints. Each control writes the store.

import {el, hasFocus} from '../../draw/dom';
import type {Endpoint} from '../../state/selection';
import type {ImageChoice} from '../../state/state';
import type {Store} from '../../state/store';
import {EndpointPicker} from '../shared/endpoint_picker';
import {HeadPicker, LayerPicker, Segmented} from '../shared/controls';
import {FUSIONS, MAX_DISCARD, type Fusion} from '../../model/rollout';
import {IMAGE_MODES, type ImageMode} from '../../model/image';

/** A labelled range input with its value beside it. */
class Slider {
  readonly element: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly value: HTMLElement;

  constructor(label: string, control: string, title: string, max: number, step: number, choose: (value: number) => void) {
    this.input = el('input', {attrs: {type: 'range', min: '0', max: String(max), step: String(step), 'data-control': control, 'aria-label': label}});
    this.value = el('span', {class: 'control-value'});
    this.input.addEventListener('input', () => {
      this.value.textContent = percent(Number(this.input.value));
      choose(Number(this.input.value));
    });
    this.element = el('label', {class: 'control', title}, [el('span', {class: 'control-label', text: label}), this.input, this.value]);
  }

  set(value: number): void {
    if (!hasFocus(this.input)) this.input.value = String(value);
    this.value.textContent = percent(value);
  }
}

function percent(value: number): string {
  return `${Math.round(value * 100)}%`;
}

/** Which image of a vision–language example a text token's attention is shown over: hidden for one image. */
class PicturePicker {
  readonly element: HTMLElement;
  private readonly select: HTMLSelectElement;
  private count = 0;

  constructor(store: Store) {
    this.select = el('select', {attrs: {'aria-label': 'Image', 'data-control': 'picture'}});
    // A patch of another image as the query would keep its own image: the query goes back to the default token.
    this.select.addEventListener('change', () => store.update({image: {picture: this.select.selectedIndex}, focus: {tokens: []}}));
    this.element = el('label', {class: 'control', title: 'The image a text token’s attention is shown over (a patch shows its own image)'}, [
      el('span', {class: 'control-label', text: 'Image'}),
      this.select,
    ]);
  }

  /** `count`: the example's images (fewer than two: hidden); `shown`: the one drawn. */
  set(count: number, shown: number): void {
    this.element.hidden = count < 2;
    if (count !== this.count) {
      this.select.replaceChildren(...Array.from({length: count}, (_, i) => el('option', {text: `${i + 1} of ${count}`, attrs: {value: String(i)}})));
      this.count = count;
    }
    if (!hasFocus(this.select)) this.select.selectedIndex = shown;
  }
}

export class ImageControls {
  readonly element: HTMLElement;
  readonly layer: LayerPicker;
  readonly heads: HeadPicker;
  readonly picture: PicturePicker;
  private readonly mode: Segmented<ImageMode>;
  private readonly split: Segmented<'mean' | 'each'>;
  private readonly fusion: Segmented<Fusion>;
  private readonly discard: Slider;
  private readonly opacity: Slider;
  private readonly diff: HTMLInputElement;
  private readonly diffControl: HTMLElement;
  private readonly a: EndpointPicker;
  private readonly b: EndpointPicker;

  constructor(store: Store) {
    const labels: Record<ImageMode, [string, string]> = {
      attention: ['Attention', 'The query token’s attention over the image, in the chosen heads of one layer'],
      rollout: ['Rollout', 'Attention rollout (Abnar & Zuidema 2020): attention multiplied through the layers up to the chosen one, residual added'],
      distance: ['Distance', 'Each head’s mean attention distance in pixels, by layer (the ViT paper’s figure 7): the stored pixel_distance metric'],
    };
    this.mode = new Segmented<ImageMode>('Show', 'image-mode', IMAGE_MODES.map((m) => [m, ...labels[m]] as [ImageMode, string, string]), (mode) => store.update({image: {mode}}));
    this.layer = new LayerPicker(store);
    this.picture = new PicturePicker(store);
    this.heads = new HeadPicker(store);
    this.split = new Segmented<'mean' | 'each'>('Heads as', 'image-split', [
      ['mean', 'Mean', 'One overlay: the mean of the chosen heads'],
      ['each', 'Each', 'One overlay per chosen head, on a common scale'],
    ], (v) => store.update({image: {split: v === 'each'}}));
    this.fusion = new Segmented<Fusion>('Fuse heads', 'fusion', FUSIONS.map((f) => [f, f, `Fuse each layer’s chosen heads by their ${f} weight before the rollout`] as [Fusion, string, string]), (fusion) => store.update({image: {fusion}}));
    this.discard = new Slider('Discard', 'discard', 'Share of each fused layer’s smallest weights set to 0 before the residual is added (vit-explain’s discard ratio): the rollout follows the strong paths', MAX_DISCARD, 0.05, (discard) => store.update({image: {discard}}));
    this.opacity = new Slider('Opacity', 'opacity', 'Opacity of the heat over the image', 1, 0.05, (opacity) => store.update({image: {opacity}}));
    this.diff = el('input', {attrs: {type: 'checkbox', 'data-control': 'image-diff'}});
    this.diff.addEventListener('change', () => store.update({image: {diff: this.diff.checked}}));
    const choose = (side: 'a' | 'b') => (run: string, step: number | null) => store.update({compare: {[side]: {run, step}}});
    this.a = new EndpointPicker('A', choose('a'));
    this.b = new EndpointPicker('B', choose('b'));
    this.diffControl = el('label', {class: 'control check', title: 'Show B − A over the image: this example at the Compare view’s A and B (red: B attends more)'}, [this.diff, el('span', {text: 'B − A'})]);
    this.element = el('div', {class: 'toolbar-group'}, [
      this.mode.element,
      this.picture.element,
      this.layer.element,
      this.heads.element,
      this.split.element,
      this.fusion.element,
      this.discard.element,
      this.opacity.element,
      this.diffControl,
      this.a.element,
      this.b.element,
    ]);
  }

  /** Shows the controls of the mode, set to the state. */
  set(settings: ImageChoice, endpoints: {runs: string[]; a: Endpoint; b: Endpoint} | null): void {
    const {mode} = settings;
    const overImage = mode !== 'distance';
    this.mode.set(mode);
    this.split.set(settings.split ? 'each' : 'mean');
    this.fusion.set(settings.fusion);
    this.discard.set(settings.discard);
    this.opacity.set(settings.opacity);
    this.diff.checked = settings.diff;
    this.layer.element.hidden = !overImage;
    this.heads.element.hidden = !overImage;
    this.split.element.hidden = mode !== 'attention';
    this.fusion.element.hidden = mode !== 'rollout';
    this.discard.element.hidden = mode !== 'rollout';
    this.opacity.element.hidden = !overImage;
    this.diffControl.hidden = !overImage;
    const showEndpoints = overImage && settings.diff && endpoints !== null;
    this.a.element.hidden = !showEndpoints;
    this.b.element.hidden = !showEndpoints;
    if (showEndpoints) {
      this.a.set(endpoints.runs, endpoints.a);
      this.b.set(endpoints.runs, endpoints.b);
    }
  }
}
