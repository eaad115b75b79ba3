// Health panel: the heads whose max logit grew, or whose attention entropy fell, past the user's
// thresholds during training, most severe first, each with a sparkline of that head in every run;
// a click opens the head's curves in the Metrics view.

import {format} from 'd3-format';
import {paintSparkline} from '../../components/sparkline';
import {onPointer, type Point} from '../../components/pointer';
import type {AnyRequest} from '../../data/cache';
import {el} from '../../draw/dom';
import {textWidth, type Painter} from '../../draw/painter';
import {FONT_LABEL, FONT_SMALL, FONT_TITLE, HIGHLIGHT_FILL, INK, MUTED_INK} from '../../draw/theme';
import {Tooltip} from '../../draw/tooltip';
import {HealthControls, healthThresholds} from './controls';
import {healthPlan, healthRows, type Plan, type Row} from './plan';
import {HEALTH_DEFAULTS, type FlagReason, type HeadFlag, type HealthMetric, type HealthThresholds} from '../../model/health';
import {ScrollingCanvas} from '../shared/scrolling_canvas';
import type {View, ViewContext, ViewModel, ViewStatus} from '../shared/view';

const SIGNAL_NAMES: Record<HealthMetric, string> = {max_logit: 'max logit', attention_entropy: 'entropy'};
const REASONS: Record<FlagReason, string> = {growth: 'grew', level: 'above level', drop: 'fell', floor: 'below floor'};
const PAD = 12; // px
const HEADER = 74; // px: the summary line, the run key and the thresholds (two lines)
const COLUMNS = 22; // px: the column titles
const ROW = 40; // px per flagged head
const SPARK_LABEL = 48; // px right of a sparkline: the newest value
const SPARK_MAX = 360; // px: widest sparkline
const value3 = format('.3~f');
const ratioWide = format(',.0f');
const ratioNarrow = format('.2~r');
// Two significant digits, so a collapse to 0.0034× does not read as 0×; whole numbers past 10.
const ratio = (v: number) => (Math.abs(v) >= 10 ? ratioWide(v) : ratioNarrow(v));

export class HealthView implements View {
  readonly id = 'health' as const;
  readonly title = 'Health';
  readonly steps = 'probe' as const;
  readonly usesExample = false;
  readonly element: HTMLElement;
  readonly toolbar: HTMLElement;
  private readonly controls: HealthControls;
  private readonly area: ScrollingCanvas;
  private readonly tooltip: Tooltip;
  private plan: Plan | null = null;
  private rows: Row[] = [];
  private summary = '';
  private rule: string[] = [];
  private columns = {run: PAD, head: 0, signal: 0, figures: 0, spark: 0, sparkWidth: 0};
  private hover: number | null = null;

  constructor(private readonly context: ViewContext) {
    this.controls = new HealthControls(context.store);
    this.toolbar = this.controls.element;
    this.area = new ScrollingCanvas('health', () => this.draw());
    this.element = el('div', {class: 'view view-health'}, [this.area.element]);
    this.tooltip = new Tooltip(this.element);
    onPointer(this.area.canvas, {move: (at, event) => this.pointer(at, event), leave: () => this.setHover(null), click: (at) => this.click(at)}, (e) => this.area.point(e));
  }

  get width(): number {
    return this.area.width;
  }

  get height(): number {
    return this.contentHeight();
  }

  exportName(): (string | number)[] {
    return [this.plan?.source ?? ''];
  }

  needs(model: ViewModel): AnyRequest[] {
    return healthPlan(model.tags, model.state.health.source).series.map((s) => s.request);
  }

  update(model: ViewModel): ViewStatus | null {
    const {state, tags} = model;
    const plan = healthPlan(tags, state.health.source);
    this.plan = plan;
    const thresholds = healthThresholds(state);
    this.controls.set(plan.sources, plan.source, thresholds);
    if (plan.source === null) {
      return {kind: 'empty', text: 'No health metrics were logged: AttentionMonitor writes attention_health/max_logit and attention_entropy during training, and Probe logs max_logit.'};
    }
    const rows = healthRows(plan, model.data, thresholds, (run) => this.context.runColors.color(run));
    if (!Array.isArray(rows)) return rows;
    this.rows = rows;
    const runs = plan.runs.length === 1 ? `run ${plan.runs[0]}` : `${plan.runs.length} runs`;
    this.summary = rows.length
      ? `${rows.length} head${rows.length > 1 ? 's' : ''} past the thresholds at each run's newest step (${runs}, ${plan.source}) · click a row to open its curves in Metrics`
      : `No head is past the thresholds at the newest step of ${runs} (${plan.source}).`;
    this.rule = ruleText(thresholds);
    this.resize();
    return null;
  }

  private contentHeight(): number {
    return PAD + HEADER + COLUMNS + this.rows.length * ROW + PAD;
  }

  resize(): void {
    if (!this.plan) return;
    const runWidth = Math.max(60, ...this.plan.runs.map((r) => textWidth(r, FONT_LABEL))) + 22;
    const c = this.columns;
    c.head = c.run + runWidth;
    c.signal = c.head + 56;
    c.figures = c.signal + 74;
    c.spark = c.figures + 250;
    this.area.fit(this.contentHeight(), 0);
    c.sparkWidth = Math.max(80, Math.min(SPARK_MAX, this.area.width - c.spark - PAD - SPARK_LABEL));
    this.draw();
  }

  paint(painter: Painter): void {
    const plan = this.plan;
    if (!plan) return;
    const c = this.columns;
    painter.text(this.summary, PAD, PAD + 8, {font: FONT_TITLE, color: INK});
    let x = PAD;
    for (const run of plan.runs) {
      painter.rect(x, PAD + 24, 14, 3, this.context.runColors.color(run));
      painter.text(run, x + 18, PAD + 26, {font: FONT_SMALL, color: MUTED_INK});
      x += textWidth(run, FONT_SMALL) + 34;
    }
    this.rule.forEach((line, i) => painter.text(line, PAD, PAD + 44 + 14 * i, {font: FONT_SMALL, color: MUTED_INK}));
    const top = PAD + HEADER;
    const titles: [number, string][] = [[c.run, 'Run'], [c.head, 'Head'], [c.signal, 'Signal'], [c.figures, 'First → newest'], [c.spark, 'Over steps: this head in every run (dashed: threshold)']];
    for (const [at, text] of titles) painter.text(text, at, top + 10, {font: FONT_SMALL, color: MUTED_INK});
    this.rows.forEach((row, i) => {
      const y = top + COLUMNS + i * ROW;
      const mid = y + ROW / 2;
      const {flag} = row;
      if (i === this.hover) painter.rect(PAD / 2, y, this.area.width - PAD, ROW, HIGHLIGHT_FILL);
      painter.rect(c.run, mid - 1.5, 12, 3, this.context.runColors.color(flag.run));
      painter.text(flag.run, c.run + 16, mid, {font: FONT_LABEL, color: INK});
      painter.text(`L${flag.layer} H${flag.head}`, c.head, mid, {font: FONT_LABEL, color: INK});
      painter.text(SIGNAL_NAMES[flag.metric], c.signal, mid, {font: FONT_LABEL, color: INK});
      painter.text(figures(flag), c.figures, mid - 6, {font: FONT_LABEL, color: INK});
      painter.text(flag.reasons.map((r) => REASONS[r]).join(', ') + ` · steps ${flag.firstStep} → ${flag.step}`, c.figures, mid + 8, {font: FONT_SMALL, color: MUTED_INK});
      paintSparkline(painter, {x: c.spark, y: y + 6, w: c.sparkWidth, h: ROW - 12}, row.series, row.threshold);
      painter.text(value3(flag.value), c.spark + c.sparkWidth + 6, mid, {font: FONT_SMALL, color: this.context.runColors.color(flag.run)});
    });
  }

  private draw(): void {
    const painter = this.area.painter();
    painter.translate(0, -this.area.scrollTop, () => this.paint(painter));
    const data = this.area.canvas.dataset;
    data.rows = JSON.stringify(
      this.rows.map(({flag: f}) => ({run: f.run, metric: f.metric, layer: f.layer, head: f.head, first: round(f.first), value: round(f.value), reasons: f.reasons})),
    );
    data.layout = JSON.stringify({top: PAD + HEADER + COLUMNS, row: ROW});
  }

  private rowAt(at: Point): number | null {
    const i = Math.floor((at.y + this.area.scrollTop - PAD - HEADER - COLUMNS) / ROW);
    return i >= 0 && i < this.rows.length ? i : null;
  }

  private setHover(index: number | null): void {
    if (index === null) this.tooltip.hide();
    if (index === this.hover) return;
    this.hover = index;
    this.area.canvas.style.cursor = index === null ? 'default' : 'pointer';
    this.draw();
  }

  private pointer(at: Point, event: MouseEvent): void {
    const index = this.rowAt(at);
    this.setHover(index);
    if (index === null) return;
    const {flag} = this.rows[index];
    this.tooltip.show(event.clientX, event.clientY, [
      {label: `${flag.run} · layer ${flag.layer} head ${flag.head}`, strong: true},
      {label: `${SIGNAL_NAMES[flag.metric]} at step ${flag.firstStep}`, value: value3(flag.first)},
      {label: `at step ${flag.step}`, value: value3(flag.value)},
      'click: open its curves in Metrics, every run overlaid',
    ]);
  }

  private click(at: Point): void {
    const index = this.rowAt(at);
    if (index === null || !this.plan?.source) return;
    const {flag} = this.rows[index];
    const others = this.plan.runs.filter((r) => r !== flag.run);
    this.context.store.update({view: 'metrics', panel: {run: flag.run, tag: this.plan.source, step: null}, metrics: {metric: flag.metric, picks: [[flag.layer, flag.head]], runs: others}});
  }
}

/** The thresholds in force, with the defaults and why they are what they are (in short). */
function ruleText(t: HealthThresholds): string[] {
  const d = HEALTH_DEFAULTS;
  // Only the rules in force (a threshold of 0 is off).
  const rules = (name: string, parts: [number, string][]) => {
    const on = parts.filter(([value]) => value > 0).map(([, text]) => text);
    return on.length ? `${name} ${on.join(' or ')}` : `${name}: off`;
  };
  return [
    `Flagged: ${rules('max logit', [[t.logitGrowth, `> ${t.logitGrowth}× its first value`], [t.logitLevel, `> ${t.logitLevel}`]])}; ` +
      `${rules('entropy', [[t.entropyDrop, `< ${t.entropyDrop}× its first value`], [t.entropyFloor, `< ${t.entropyFloor} nats`]])}.`,
    `Defaults — growth: off (healthy heads grow 200–300× from initialisation) · ${d.logitLevel}: Kimi K2's QK-Clip level · ` +
      `${d.entropyDrop}×: ~1 key attended · ${d.entropyFloor} nats: one-hot (hover a threshold for the reasoning and the demo's figures).`,
  ];
}

/** "4.0 → 40.1 (10×)": first and newest value, and their ratio when it means something. */
function figures(flag: HeadFlag): string {
  const change = flag.ratio !== null ? ` (${ratio(flag.ratio)}×)` : '';
  return `${value3(flag.first)} → ${value3(flag.value)}${change}`;
}

function round(v: number): number {
  return Number(v.toFixed(4));
}
