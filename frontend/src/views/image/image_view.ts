// Image view: a vision transformer's attention over the image it saw. Click a patch (or a prefix
// token such as CLS) to see where it attends, in the chosen heads or their mean; attention rollout
// through the layers; each head's mean attention distance by layer; B − A between checkpoints.

import {format} from 'd3-format';
import {headColors} from '../../model/colors';
import {imageCanvas, heatCanvas, HEAT_LEGEND_HEIGHT, paintHeatLegend, paintOverlay} from '../../components/image_overlay';
import type {Dot} from '../../components/line_chart';
import {onPointer, type Point} from '../../components/pointer';
import type {AnyRequest} from '../../data/cache';
import type {Attention} from '../../data/decode';
import {el} from '../../draw/dom';
import {CanvasPainter, textWidth, type Painter, type Rect} from '../../draw/painter';
import {compareEndpoints} from '../../state/selection';
import type {ImageChoice} from '../../state/state';
import {ACCENT, BORDER, FONT_LABEL, FONT_SMALL, FONT_TITLE, INK, MUTED_INK} from '../../draw/theme';
import {Tooltip} from '../../draw/tooltip';
import {shownHeads} from '../shared/controls';
import {isStatus, ShownExample} from '../shared/example';
import {ImageControls} from './controls';
import {distanceScatter, paintDistance, type DistanceData, type Scatter} from './distance';
import {
  distanceRequest,
  imageNeeds,
  overlayHeats,
  pictureRequest,
  RolloutFactors,
  shownImage,
} from './data';
import {
  fitImage,
  heatScale,
  imageMismatch,
  isSequence,
  patchAt,
  patchToken,
  tileBoxes,
  tokenName,
  tokenPatch,
  type Heat,
  type HeatScale,
  type ImageInfo,
  type Patch,
} from '../../model/image';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';

const PAD = 12; // px around the figure
const CAPTION = 22; // px: the caption line above the image
const CHIP_ROW = 26; // px: the prefix tokens' chips below the image
const TILE_LABEL = 16; // px above each head's overlay
const TILE_GAP = 10; // px between overlays
const LEGEND_WIDTH = 220; // px
const weight = format('.3~r'); // significant digits: B − A of a rollout is often below 0.001
const signedFormat = format('+.3~r');
const signed = (v: number) => (v === 0 ? '0' : signedFormat(v));
const pixels = format('.1f');

/** What one overlay draws: its heat, and its title in the split grid. */
interface Tile {
  box: Rect;
  heat: Heat;
  canvas: HTMLCanvasElement;
  label: string;
  color: string | null;
}

interface Chip {
  box: Rect;
  token: number;
  /** its value's index in a heat's prefix */
  index: number;
  text: string;
}

/** Everything drawn over the image, derived from the state and the data. */
interface Scene {
  info: ImageInfo;
  photo: HTMLCanvasElement;
  query: number;
  tiles: Tile[];
  chips: Chip[];
  scale: HeatScale;
  caption: string;
  diff: boolean;
}

export class ImageView implements View {
  readonly id = 'image' as const;
  readonly title = 'Image';
  readonly steps = 'attention' as const;
  readonly usesExample = true;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly controls: ImageControls;
  private readonly canvas: HTMLCanvasElement;
  private readonly tooltip: Tooltip;
  private readonly example = new ShownExample();
  private readonly rollouts = {shown: new RolloutFactors(), a: new RolloutFactors(), b: new RolloutFactors()};
  private photo: {bitmap: ImageBitmap; canvas: HTMLCanvasElement} | null = null;
  private model: ViewModel | null = null;
  private scene: Scene | null = null;
  private distance: DistanceData | null = null;
  private scatter: Scatter | null = null;
  private hover: {patch: Patch; tile: Tile} | null = null;
  private hoverDot: Dot | null = null;
  private size = {width: 0, height: 0};

  constructor(private readonly context: ViewContext) {
    this.controls = new ImageControls(context.store);
    this.toolbar = this.controls.element;
    this.canvas = el('canvas', {class: 'figure', attrs: {'data-figure': 'image'}});
    this.element = el('div', {class: 'view view-image'}, [this.canvas]);
    this.tooltip = new Tooltip(this.element);
    onPointer(this.canvas, {move: (at, event) => this.pointer(at, event), leave: () => this.leave(), click: (at) => this.click(at)});
  }

  get width(): number {
    return this.size.width;
  }

  get height(): number {
    return this.size.height;
  }

  /** Shown only for examples that carry an image. */
  available(model: ViewModel): boolean {
    return shownImage(model) !== null;
  }

  exportName(): (string | number)[] {
    const state = this.model?.state;
    return state ? [...this.example.exportName(state), state.image.mode, state.image.diff ? 'diff' : ''] : [];
  }

  needs(model: ViewModel): AnyRequest[] {
    return imageNeeds(model);
  }

  update(model: ViewModel): ViewStatus | null {
    this.model = model;
    const settings = model.state.image;
    this.controls.set(settings, settings.diff ? compareEndpoints(model.tags, model.state, model.selection) : null);
    const shown = this.example.resolve(model);
    if (isStatus(shown)) return shown;
    const picked = shownImage(model);
    const info = picked?.info;
    this.controls.picture.set(picked?.example.images?.length ?? 0, info && isSequence(info) ? info.index : 0);
    if (!info) return {kind: 'empty', text: `Example ${shown.key.example} of ${shown.key.run}/${shown.key.tag} has no image: the image view shows examples logged by ImageProbe or a vision–language Probe.`};
    const mismatch = shown.attention.numKeyTokens !== shown.attention.numTokens ? 'its queries and keys are different tokens' : imageMismatch(info, shown.attention.numTokens);
    if (mismatch) return {kind: 'error', text: `Cannot lay the attention over the image: ${mismatch}.`};
    const image = model.data.get(pictureRequest(shown.key, info));
    if (image.state === 'error') return {kind: 'error', text: image.error};
    if (image.state === 'ready' && image.value !== this.photo?.bitmap) this.photo = {bitmap: image.value, canvas: imageCanvas(image.value)};
    if (!this.photo) return {kind: 'loading', text: 'Loading the image…'};
    const numHeads = shown.attention.numHeads;
    const layer = Math.min(model.state.focus.layer, shown.attention.numLayers - 1);
    this.controls.layer.set(shown.attention.numLayers, layer);
    this.controls.heads.set(headColors(numHeads), shownHeads(model.state, numHeads));
    this.scene = null;
    this.distance = null;
    if (settings.mode === 'distance') {
      const status = this.planScatter(model, info);
      if (status) return status;
    } else {
      const status = this.planScene(model, settings, info, shown.attention, layer, shown.key.example);
      if (status) return status;
    }
    this.resize();
    return null;
  }

  /** The overlays of the attention or rollout modes. */
  private planScene(model: ViewModel, settings: ImageChoice, info: ImageInfo, attention: Attention, layer: number, example: number): ViewStatus | null {
    const planned = overlayHeats(model, settings, info, attention, layer, example, this.rollouts);
    if ('kind' in planned) return planned;
    const scale = heatScale(planned.heats, settings.diff, settings.mode !== 'rollout');
    const colors = headColors(attention.numHeads);
    const tiles = planned.heats.map((heat, i) => ({
      box: {x: 0, y: 0, w: 0, h: 0},
      heat,
      canvas: heatCanvas(heat, scale, settings.opacity),
      label: planned.split ? `Head ${planned.heads[i]}` : '',
      color: planned.split ? colors[planned.heads[i]] : null,
    }));
    this.scene = {
      info,
      photo: this.photo!.canvas,
      query: planned.query,
      tiles,
      chips: isSequence(info)
        ? info.chipTokens.map((token, index) => ({box: {x: 0, y: 0, w: 0, h: 0}, token, index, text: info.chipNames[index]}))
        : info.prefix_names.slice(0, info.prefix_tokens).map((name, t) => ({box: {x: 0, y: 0, w: 0, h: 0}, token: t, index: t, text: name})),
      scale,
      caption: planned.caption,
      diff: settings.diff,
    };
    return null;
  }

  /** The pixel-distance scatter at the step shown. */
  private planScatter(model: ViewModel, info: ImageInfo): ViewStatus | null {
    const request = distanceRequest(model);
    const {selection: sel} = model;
    if (!request) return {kind: 'empty', text: `${sel.run}/${sel.tag} has no pixel_distance metric: ImageProbe logs it with the attention.`};
    const loaded = model.data.get(request);
    if (loaded.state === 'error') return {kind: 'error', text: loaded.error};
    if (loaded.state !== 'ready') return {kind: 'loading', text: 'Loading pixel_distance…'};
    this.distance = {series: loaded.value, step: sel.step, info};
    return null;
  }

  private figureSize(): {width: number; height: number} {
    return {width: Math.max(200, this.element.clientWidth), height: Math.max(200, this.element.clientHeight)};
  }

  resize(): void {
    if (!this.model) return;
    this.size = this.figureSize();
    this.scatter = this.distance ? distanceScatter(this.distance, {x: PAD, y: PAD, w: this.size.width - 2 * PAD, h: this.size.height - 2 * PAD}) : null;
    if (this.scene) this.layout(this.scene);
    this.draw();
  }

  /** Places the overlays, the prefix chips and the legend in the figure. */
  private layout(scene: Scene): void {
    const {width, height} = this.size;
    const area = {x: PAD, y: PAD + CAPTION, w: width - 2 * PAD, h: height - 2 * PAD - CAPTION - CHIP_ROW * this.chipRows(scene) - HEAT_LEGEND_HEIGHT - 8};
    const aspect = scene.photo.width / scene.photo.height;
    if (scene.tiles.length === 1) {
      scene.tiles[0].box = fitImage(area, scene.photo.width, scene.photo.height);
    } else {
      tileBoxes(area, scene.tiles.length, aspect, TILE_LABEL, TILE_GAP).forEach((box, i) => (scene.tiles[i].box = box));
    }
    let x = PAD;
    let y = height - PAD - HEAT_LEGEND_HEIGHT - CHIP_ROW * this.chipRows(scene) + 2;
    for (const chip of scene.chips) {
      const w = textWidth(this.chipText(scene, chip), FONT_LABEL) + 16;
      if (x > PAD && x + w > width - PAD) [x, y] = [PAD, y + CHIP_ROW];
      chip.box = {x, y, w, h: CHIP_ROW - 6};
      x += w + 6;
    }
  }

  /** Rows of chips: one for prefix tokens; a vision–language example's text tokens may wrap. */
  private chipRows(scene: Scene): number {
    if (!isSequence(scene.info)) return 1;
    const total = scene.chips.reduce((sum, chip) => sum + textWidth(this.chipText(scene, chip), FONT_LABEL) + 22, 0);
    return Math.min(4, Math.max(1, Math.ceil(total / Math.max(1, this.size.width - 2 * PAD))));
  }

  private chipText(scene: Scene, chip: Chip): string {
    if (scene.tiles.length !== 1) return chip.text;
    const v = scene.tiles[0].heat.prefix[chip.index];
    return `${chip.text} ${scene.diff ? signed(v) : weight(v)}`;
  }

  paint(painter: Painter): void {
    if (this.scatter) return paintDistance(painter, this.scatter, this.hoverDot);
    const scene = this.scene;
    if (!scene) return;
    painter.text(scene.caption, PAD, PAD + 8, {font: FONT_TITLE, color: INK});
    const selected = tokenPatch(scene.info, scene.query);
    for (const tile of scene.tiles) {
      if (tile.label) {
        if (tile.color) painter.rect(tile.box.x, tile.box.y - TILE_LABEL + 3, 9, 9, tile.color);
        painter.text(tile.label, tile.box.x + (tile.color ? 13 : 0), tile.box.y - TILE_LABEL + 8, {font: FONT_SMALL, color: INK});
      }
      const hover = this.hover?.tile === tile ? this.hover.patch : null;
      paintOverlay(painter, tile.box, scene.info.grid, scene.photo, tile.canvas, {selected, hover});
    }
    for (const chip of scene.chips) {
      const chosen = chip.token === scene.query;
      painter.rect(chip.box.x, chip.box.y, chip.box.w, chip.box.h, chosen ? ACCENT : '#ffffff');
      painter.strokeRect(chip.box.x, chip.box.y, chip.box.w, chip.box.h, chosen ? ACCENT : BORDER);
      painter.text(this.chipText(scene, chip), chip.box.x + 8, chip.box.y + chip.box.h / 2, {font: FONT_LABEL, color: chosen ? '#ffffff' : INK});
    }
    const hint = this.hint(scene);
    painter.text(hint.text, hint.x, hint.y, {font: FONT_SMALL, color: MUTED_INK});
    const legendTitle = scene.diff ? 'B − A (red: B attends more)' : this.model?.state.image.mode === 'rollout' ? 'rollout weight' : 'attention weight';
    paintHeatLegend(painter, PAD, this.size.height - PAD - HEAT_LEGEND_HEIGHT, Math.min(LEGEND_WIDTH, this.size.width - 2 * PAD), scene.scale, legendTitle, scene.diff ? signed : weight);
  }

  /** The hint after the last chip, or on the line under the figure when it does not fit there;
   * shortened to the figure's width (it never runs off the right edge). */
  private hint(scene: Scene): {text: string; x: number; y: number} {
    const full = isSequence(scene.info)
      ? 'click a token for its attention over the image, a patch for the tokens that attend to it'
      : `click a patch${scene.chips.length ? ' or a prefix token' : ''} to see its attention · arrow keys move it`;
    const right = this.size.width - PAD;
    const last = scene.chips[scene.chips.length - 1];
    const below = {x: PAD + LEGEND_WIDTH + 16, y: this.size.height - PAD - HEAT_LEGEND_HEIGHT / 2};
    let at = last ? {x: last.box.x + last.box.w + 12, y: last.box.y + last.box.h / 2} : {x: PAD, y: this.size.height - PAD - HEAT_LEGEND_HEIGHT - CHIP_ROW / 2 - 1};
    if (at.x + textWidth(full, FONT_SMALL) > right) at = below;
    return {text: elide(full, right - at.x), ...at};
  }

  private draw(): void {
    const painter = new CanvasPainter(this.canvas, this.size.width, this.size.height);
    this.canvas.style.width = `${this.size.width}px`;
    this.canvas.style.height = `${this.size.height}px`;
    this.paint(painter);
    this.describe();
  }

  /** What was drawn, as data attributes (read by the browser tests). */
  private describe(): void {
    const data = this.canvas.dataset;
    const scene = this.scene;
    data.mode = this.model?.state.image.mode ?? '';
    if (this.scatter) {
      data.dots = JSON.stringify(this.scatter.dots.map((d) => [d.head[0], d.head[1], Number(d.y.toFixed(4))]));
      data.step = String(this.scatter.step);
      data.query = '';
      return;
    }
    delete data.dots;
    if (!scene) return;
    const first = scene.tiles[0];
    let peak = 0;
    first.heat.cells.forEach((v, c) => (v > first.heat.cells[peak] ? (peak = c) : null));
    data.query = tokenName(scene.info, scene.query);
    data.tiles = String(scene.tiles.length);
    data.cells = JSON.stringify([...first.heat.cells].map((v) => Number(v.toFixed(4))));
    data.prefix = JSON.stringify([...first.heat.prefix].map((v) => Number(v.toFixed(4))));
    data.peak = tokenName(scene.info, isSequence(scene.info) ? scene.info.cellTokens[peak] : scene.info.prefix_tokens + peak);
    data.chips = JSON.stringify(scene.chips.map((c) => [c.text, Number(first.heat.prefix[c.index].toFixed(4))]));
    const hint = this.hint(scene);
    data.layout = JSON.stringify({tiles: scene.tiles.map((t) => t.box), grid: scene.info.grid, chips: scene.chips.map((c) => c.box),
      hint: {x: hint.x, w: textWidth(hint.text, FONT_SMALL)}, width: this.size.width});
    data.picture = isSequence(scene.info) ? String(scene.info.index) : '';
  }

  private pointer(at: Point, event: MouseEvent): void {
    if (this.scatter) return this.pointScatter(at, event);
    const scene = this.scene;
    if (!scene) return;
    let hover: {patch: Patch; tile: Tile} | null = null;
    for (const tile of scene.tiles) {
      const patch = patchAt(tile.box, scene.info.grid, at.x, at.y);
      if (patch) hover = {patch, tile};
    }
    const same = hover?.tile === this.hover?.tile && hover?.patch.row === this.hover?.patch.row && hover?.patch.col === this.hover?.patch.col;
    this.hover = hover;
    if (!same) this.draw();
    const chip = scene.chips.find((c) => inBox(c.box, at));
    this.canvas.style.cursor = hover || chip ? 'pointer' : 'default';
    if (!hover) return this.tooltip.hide();
    const value = hover.tile.heat.cells[hover.patch.row * scene.info.grid[1] + hover.patch.col];
    this.tooltip.show(event.clientX, event.clientY, [
      {label: `${tokenName(scene.info, scene.query)} → r${hover.patch.row}c${hover.patch.col}`, strong: true},
      ...(hover.tile.label ? [hover.tile.label] : []),
      {label: scene.diff ? 'B − A' : 'weight', value: scene.diff ? signed(value) : weight(value)},
      'click: make this patch the query',
    ]);
  }

  private pointScatter(at: Point, event: MouseEvent): void {
    const scatter = this.scatter!;
    const dot = scatter.chart.nearestDot(at.x, at.y, scatter.dots);
    if (dot !== this.hoverDot) {
      this.hoverDot = dot;
      this.draw();
    }
    if (!dot) return this.tooltip.hide();
    this.tooltip.show(event.clientX, event.clientY, [{color: dot.color, label: `Layer ${dot.head[0]} head ${dot.head[1]}`, value: `${pixels(dot.y)} px`}]);
  }

  private leave(): void {
    this.tooltip.hide();
    if (this.hover || this.hoverDot) {
      this.hover = null;
      this.hoverDot = null;
      this.draw();
    }
  }

  private click(at: Point): void {
    const scene = this.scene;
    if (!scene) return;
    const chip = scene.chips.find((c) => inBox(c.box, at));
    if (chip) return this.choose(chip.token);
    for (const tile of scene.tiles) {
      const patch = patchAt(tile.box, scene.info.grid, at.x, at.y);
      if (patch) return this.choose(patchToken(scene.info, patch));
    }
  }

  /** Arrow keys move the query to the neighbouring patch (from a prefix token: the first patch). */
  keydown(key: string): boolean {
    const scene = this.scene;
    const step = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}[key];
    if (!scene || !step) return false;
    const [rows, cols] = scene.info.grid;
    const at = tokenPatch(scene.info, scene.query);
    const next = at ? {row: Math.min(rows - 1, Math.max(0, at.row + step[0])), col: Math.min(cols - 1, Math.max(0, at.col + step[1]))} : {row: 0, col: 0};
    this.choose(patchToken(scene.info, next));
    return true;
  }

  private choose(token: number): void {
    this.context.store.update({focus: {tokens: [token], side: 'from'}});
  }
}

/** `text` cut to fit `width` pixels, ending in an ellipsis when cut. */
function elide(text: string, width: number): string {
  if (textWidth(text, FONT_SMALL) <= width) return text;
  let end = text.length;
  while (end > 0 && textWidth(`${text.slice(0, end)}…`, FONT_SMALL) > width) end--;
  return end > 0 ? `${text.slice(0, end).trimEnd()}…` : '';
}

function inBox(box: Rect, at: Point): boolean {
  return at.x >= box.x && at.x < box.x + box.w && at.y >= box.y && at.y < box.y + box.h;
}
