// What the Analysis view draws, as a pure function of one step's metrics: the cards of a section
// (metric heatmaps with their per-layer curves, scatters of heads, parts of speech per layer).

import {HeatmapGeometry, HEATMAP_LEFT, HEATMAP_TOP, LEGEND_HEIGHT} from '../../components/heatmap';
import {LineChart, type Dot, type Line} from '../../components/line_chart';
import {headColors} from '../../model/colors';
import {CORE_METRICS, layerColor, layerMeans, metricAbout, metricLabel, metricScale, pearson, posParts, UPOS_NAMES, type ColorScale, type Grid} from '../../model/metrics';
import type {Rect} from '../../draw/painter';
import type {HeadRef, Section} from '../../state/state';
import {INK, NEUTRAL_MARK} from '../../draw/theme';

export const PAD = 14; // px around the cards
const GAP = 18; // px between cards
const MIN_CARD = 250; // px: narrowest card
const CARD_TITLE = 34; // px: title and description above a heatmap
const MAX_HEATMAP = 210; // px: tallest heatmap
const LAYER_CHART = 130; // px: the per-layer chart under a heatmap
const MAX_CELL = 30; // px

export interface Card {
  kind: 'metric' | 'scatter' | 'tags';
  box: Rect;
  title: string;
  subtitle: string;
  /** metric cards */
  metric?: string;
  grid?: Grid;
  scale?: ColorScale;
  geometry?: HeatmapGeometry;
  /** per-layer chart (metric cards), scatter, or curves of every tag */
  chart?: LineChart;
  dots?: Dot[];
  lines?: Line[];
  /** scatter cards: the metrics on x and y */
  axes?: [string, string];
}

/** The cards of a section (`pos`: the part of speech of the overview), placed in a grid as wide
 * as `areaWidth` allows; returns them and the height they take. */
export function analysisCards(metrics: Record<string, Grid>, section: Section, pos: string, areaWidth: number): {cards: Card[]; height: number} {
  const first = Object.values(metrics)[0] ?? [];
  const numLayers = first.length;
  const numHeads = first[0]?.length ?? 0;
  const width = areaWidth - 2 * PAD;
  const columns = Math.max(1, Math.floor((width + GAP) / (MIN_CARD + GAP)));
  const cardW = Math.floor((width - (columns - 1) * GAP) / columns);
  const cell = Math.max(4, Math.min(MAX_CELL, Math.floor((cardW - HEATMAP_LEFT - 8) / Math.max(1, numHeads))));
  const cellH = Math.max(3, Math.min(cell, Math.floor(MAX_HEATMAP / Math.max(1, numLayers))));
  const heatH = HEATMAP_TOP + numLayers * cellH;
  const cardH = CARD_TITLE + heatH + 12 + LEGEND_HEIGHT + LAYER_CHART;
  const specs: Omit<Card, 'box'>[] = [];
  const metricCard = (metric: string, title = metricLabel(metric), subtitle = metricAbout(metric)): Omit<Card, 'box'> | null => {
    const grid = metrics[metric];
    return grid ? {kind: 'metric', metric, grid, title, subtitle, scale: metricScale(metric, grid.flat())} : null;
  };
  if (section === 'overview') {
    for (const m of CORE_METRICS) {
      const card = metricCard(m);
      if (card) specs.push(card);
    }
    for (const direction of ['pos', 'pos_from'] as const) {
      const card = metricCard(`${direction}/${pos}`);
      if (card) specs.push(card);
    }
    for (const y of ['entropy', 'dependency_alignment']) {
      if (!metrics.distance || !metrics[y]) continue;
      const {r, n} = pearson(metrics.distance.flat(), metrics[y].flat());
      specs.push({
        kind: 'scatter',
        axes: ['distance', y],
        title: `Distance vs ${metricLabel(y).toLowerCase()}`,
        subtitle: r === null ? `${n} heads` : `r = ${r.toFixed(2)} over ${n} heads`,
      });
    }
  } else {
    const direction = section;
    const names = Object.keys(metrics)
      .filter((m) => posParts(m)?.direction === direction)
      .sort();
    const colors = headColors(names.length);
    specs.push({
      kind: 'tags',
      title: direction === 'pos' ? 'Attention received, per layer' : 'Attention paid, per layer',
      subtitle: 'mean over heads, one line per part of speech',
      lines: names.map((m, i) => ({
        key: m,
        label: posParts(m)!.tag,
        color: colors[i],
        xs: Array.from({length: numLayers}, (_, l) => l),
        ys: layerMeans(metrics[m]),
        width: 1.5,
      })),
    });
    for (const m of names) {
      const tag = posParts(m)!.tag;
      const card = metricCard(m, `${tag}`, `${UPOS_NAMES[tag] ?? tag}: ${direction === 'pos' ? 'attention received' : 'attention paid'}`);
      if (card) specs.push(card);
    }
  }
  // Layers on x, half a layer of room at each end so that the first and last heads' dots show whole.
  const layerAxis = {domain: [-0.4, Math.max(1, numLayers - 1) + 0.4] as [number, number], integer: true};
  const cards = specs.map((spec, i) => {
    const box: Rect = {x: PAD + (i % columns) * (cardW + GAP), y: PAD + Math.floor(i / columns) * (cardH + GAP), w: cardW, h: cardH};
    const card: Card = {...spec, box};
    if (card.kind === 'metric') {
      const g = new HeatmapGeometry(box.x + HEATMAP_LEFT, box.y + CARD_TITLE + HEATMAP_TOP, numLayers, numHeads, cell, cellH);
      card.geometry = g;
      const chartBox = {x: box.x - 6, y: box.y + cardH - LAYER_CHART, w: box.w + 6, h: LAYER_CHART};
      const grid = card.grid!;
      card.dots = grid.flatMap((row, l) =>
        row.flatMap((v, h) => (v === null || !Number.isFinite(v) ? [] : [{x: l, y: v, head: [l, h] as HeadRef, color: NEUTRAL_MARK, r: 2}])),
      );
      card.lines = [{key: 'mean', label: 'mean over heads', color: INK, xs: grid.map((_, l) => l), ys: layerMeans(grid), width: 1.75}];
      const ys = card.dots.map((d) => d.y);
      card.chart = new LineChart(chartBox, 'per layer', layerAxis, ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1], 'heads · mean');
    } else if (card.kind === 'scatter') {
      const [xm, ym] = card.axes!;
      const xs = metrics[xm];
      const ysGrid = metrics[ym];
      card.dots = xs.flatMap((row, l) =>
        row.flatMap((x, h) => {
          const y = ysGrid[l]?.[h];
          return x === null || y === null || y === undefined || !Number.isFinite(x) || !Number.isFinite(y)
            ? []
            : [{x, y, head: [l, h] as HeadRef, color: layerColor(l, numLayers), r: 3}];
        }),
      );
      const xv = card.dots.map((d) => d.x);
      const yv = card.dots.map((d) => d.y);
      const pad = (lo: number, hi: number): [number, number] => [lo - (hi - lo) * 0.05 || lo - 0.5, hi + (hi - lo) * 0.05 || hi + 0.5];
      card.chart = new LineChart(
        {x: box.x - 6, y: box.y + 4, w: box.w + 6, h: box.h - 4},
        card.title,
        {domain: xv.length ? pad(Math.min(...xv), Math.max(...xv)) : [0, 1]},
        yv.length ? pad(Math.min(...yv), Math.max(...yv)) : [0, 1],
        card.subtitle,
      );
    } else {
      const ys = card.lines!.flatMap((l) => l.ys).filter((v): v is number => v !== null && Number.isFinite(v));
      card.chart = new LineChart(
        {x: box.x - 6, y: box.y + 4, w: box.w + 6, h: box.h - 4},
        card.title,
        layerAxis,
        ys.length ? [0, Math.max(...ys) * 1.05] : [0, 1],
        '',
      );
    }
    return card;
  });
  const rows = Math.ceil(cards.length / columns);
  return {cards, height: PAD + rows * (cardH + GAP) - GAP + PAD};
}
