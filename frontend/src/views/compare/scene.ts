// What the Compare view draws, as pure functions of the state and the data: the endpoints and
// their requests, what differs between A and B, and the heads ranked by how much they changed.

import type {CompareMoved, ExampleInfo, Examples, ProbeMetrics} from '../../data/api';
import {valueOf, type AnyRequest, type DataReader} from '../../data/cache';
import * as requests from '../../data/requests';
import {deltaScale, gridDelta, metricLabel, percentText, rankHeads, shareScale, sortMetrics, valueText, type ColorScale, type Grid} from '../../model/metrics';
import type {RankedCell, RankedRow} from '../../components/ranked_list';
import {compareEndpoints, metricGroup, metricGroups, probeMetrics, type Endpoint} from '../../state/selection';
import {exactToken} from '../../model/tokens';
import {tokenDifferences} from '../../model/transforms';
import {groupOf, panelExample, shapeOf} from '../shared/example';
import type {ViewModel} from '../shared/view';

export const MAX_LISTED_DIFFERENCES = 6; // token differences named in the banner
export const MAX_RANKED = 40; // heads in the ranking of changes

/** A and B, the runs they may take, and the metrics both logged. */
export interface ComparePlan {
  runs: string[];
  a: Endpoint;
  b: Endpoint;
  tag: string;
  example: number;
  /** the attention group compared, as A's example names it: null for its first (the default) */
  group: string | null;
  /** false while a group the state names waits for A's example list to resolve it against */
  groupKnown: boolean;
  /** the group whose stored metrics rank heads: null for the probe's first */
  metricGroup: string | null;
  /** metrics logged by both A's and B's runs (for the group) */
  common: string[];
  /** what ranks heads: `attention` or one of `common` */
  delta: string;
}

export function comparePlan(model: ViewModel): ComparePlan {
  const {state, tags, selection, data} = model;
  const {runs, a, b} = compareEndpoints(tags, state, selection);
  // The example the panel shows: the state's, or the first listed when its step lacks it (an export's few).
  const listed = valueOf(data, requests.examples(selection.run, selection.tag, selection.exampleStep));
  const example = listed ? panelExample(listed.examples, state.panel.example) : state.panel.example;
  const ea = exampleOf(valueOf(data, requests.examples(a.run, selection.tag, a.step)), example);
  const group = ea ? (groupOf(ea, state.panel.group)?.name ?? null) : null;
  const order = (ea?.groups ?? []).map((g) => g.name);
  const mg = metricGroup(metricGroups(tags, a.run, selection.tag, order), group);
  const inA = probeMetrics(tags, a.run, selection.tag, mg);
  const common = sortMetrics(probeMetrics(tags, b.run, selection.tag, mg).filter((m) => inA.includes(m)));
  const delta = state.compare.delta === 'attention' || common.includes(state.compare.delta) ? state.compare.delta : 'attention';
  return {runs, a, b, tag: selection.tag, example, group, groupKnown: ea !== null || state.panel.group === null, metricGroup: mg, common, delta};
}

/** `{group}` when the plan compares a group other than the first, else nothing (the routes' default). */
const groupParam = (group: string | null) => (group === null ? {} : {group});

export const examplesOf = (plan: ComparePlan, e: Endpoint) => requests.examples(e.run, plan.tag, e.step);
export const weightsOf = (plan: ComparePlan, e: Endpoint) =>
  requests.attention({run: e.run, tag: plan.tag, step: e.step, example: plan.example, ...groupParam(plan.group)});
export const metricsOf = (plan: ComparePlan, e: Endpoint) => requests.probeMetrics(e.run, plan.tag, e.step, plan.metricGroup ?? undefined);
export const movedOf = (plan: ComparePlan) =>
  requests.compareMoved({tag: plan.tag, runA: plan.a.run, stepA: plan.a.step, runB: plan.b.run, stepB: plan.b.step, ...groupParam(plan.group)});

/** The example of an endpoint's list, null while the list loads or when it lacks the example. */
export function exampleOf(list: Examples | null, index: number): ExampleInfo | null {
  return list?.examples.find((x) => x.index === index) ?? null;
}

/** The example lists of A and B, the weights of the panel's example where both lists have it, and
 * what the Changes mode ranks by. */
export function compareNeeds(plan: ComparePlan, mode: string, data: DataReader): AnyRequest[] {
  const wanted: AnyRequest[] = [];
  for (const e of [plan.a, plan.b]) {
    wanted.push(examplesOf(plan, e));
    if (exampleOf(valueOf(data, examplesOf(plan, e)), plan.example)) wanted.push(weightsOf(plan, e));
  }
  // The group is known once A's list is: asking before would fetch the first group's answer for nothing.
  if (mode === 'changes' && plan.groupKnown) wanted.push(...(plan.delta === 'attention' ? [movedOf(plan)] : [metricsOf(plan, plan.a), metricsOf(plan, plan.b)]));
  return wanted;
}

/** What differs between A's and B's example, in words, and what that rules out. */
export interface Banner {
  /** sentences, then the differing positions */
  lines: string[];
  differences: string[];
  /** why the difference of weights (`diff`) or any pairing of heads (`heads`) is not defined */
  blocked: {diff: string | null; heads: string | null};
}

/** `group`: the group compared (null: the examples' first); its tokens and shape are compared. */
export function bannerOf(xa: ExampleInfo, xb: ExampleInfo, index: number, group: string | null = null): Banner {
  const lines: string[] = [];
  const blocked: Banner['blocked'] = {diff: null, heads: null};
  const [sa, sb] = [shapeOf(xa, groupOf(xa, group)), shapeOf(xb, groupOf(xb, group))];
  const ea = {num_layers: sa.numLayers, num_heads: sa.numHeads, tokens: sa.tokens};
  const eb = {num_layers: sb.numLayers, num_heads: sb.numHeads, tokens: sb.tokens};
  if (ea.num_layers !== eb.num_layers || ea.num_heads !== eb.num_heads) {
    const shapes = `A has ${ea.num_layers} layers × ${ea.num_heads} heads and B ${eb.num_layers} × ${eb.num_heads}`;
    lines.push(`${shapes}: they are different models.`);
    blocked.heads = `${shapes}: different models, so their heads do not pair up for a difference or a ranking. See them side by side under Heads or Model.`;
    blocked.diff = blocked.heads;
  }
  const found = tokenDifferences(ea.tokens, eb.tokens);
  const differences: string[] = [];
  if (found.length) {
    const sameLength = ea.tokens.length === eb.tokens.length;
    lines.push(
      sameLength
        ? `The tokens of example #${index} differ at ${found.length} of ${ea.tokens.length} positions. The difference below is taken position by position.`
        : `The tokens of example #${index} differ: A has ${ea.tokens.length} tokens, B has ${eb.tokens.length}. The difference of weights needs the same tokens; the side-by-side views and metric changes still compare.`,
    );
    if (!sameLength) blocked.diff ??= `A has ${ea.tokens.length} tokens and B ${eb.tokens.length}: the difference of their weights is not defined. Compare them side by side (Heads, Model) or by their metrics (Changes).`;
    for (const d of found.slice(0, MAX_LISTED_DIFFERENCES)) differences.push(`#${d.position}: A ${d.a === null ? '(none)' : exactToken(d.a)} · B ${d.b === null ? '(none)' : exactToken(d.b)}`);
    if (found.length > MAX_LISTED_DIFFERENCES) differences.push(`… and ${found.length - MAX_LISTED_DIFFERENCES} more`);
  }
  // Self-attention's keys are its queries (compared above); a cross group's keys are other tokens.
  const square = (x: typeof sa) => tokenDifferences(x.tokens, x.keyTokens).length === 0;
  if (!square(sa) || !square(sb)) {
    const keys = tokenDifferences(sa.keyTokens, sb.keyTokens).length;
    if (keys) lines.push(`The key tokens of example #${index} differ at ${keys} position${keys > 1 ? 's' : ''} (A has ${sa.keyTokens.length}, B ${sb.keyTokens.length}).`);
    // The difference matrix pairs query i with key i: a group whose queries attend over other keys has no such square.
    blocked.diff ??= `The difference view draws square self-attention; ${group ?? 'this'} attention's queries (${sa.tokens.length} tokens) attend over other keys (${sa.keyTokens.length}). Compare it side by side (Heads, Model) or under Changes.`;
  }
  return {lines, differences, blocked};
}

/** The heads' changes from A to B: attention moved (served by `/compare`) or a metric's B − A. */
export interface ChangeScene {
  attention: boolean;
  grid: Grid;
  scale: ColorScale;
  label: string;
  /** what the values are a mean of */
  note: string;
  /** the metric at A and at B (metric changes only) */
  a: Grid | null;
  b: Grid | null;
}

/** Changes by attention moved, or why there are none to show. */
export function movedChanges(moved: CompareMoved): ChangeScene | string {
  if (!moved.used) return 'No probe input has the same tokens in A and B: rank the heads by a metric instead.';
  const grid = moved.moved;
  const note = `mean of ${moved.used} probe input${moved.used > 1 ? 's' : ''}${moved.skipped ? `; ${moved.skipped} whose tokens differ between A and B left out` : ''}`;
  return {attention: true, grid, scale: shareScale(Math.max(0.05, ...grid.flat().map((v) => v ?? 0))), label: 'Attention moved', note, a: null, b: null};
}

/** Changes of one stored metric, B − A. */
export function metricChanges(delta: string, pa: ProbeMetrics, pb: ProbeMetrics): ChangeScene {
  const a = pa.metrics[delta] ?? [];
  const b = pb.metrics[delta] ?? [];
  const grid = gridDelta(a, b);
  const finite = grid.flat().filter((v): v is number => v !== null && Number.isFinite(v));
  return {attention: false, grid, scale: deltaScale(Math.max(1e-6, ...finite.map(Math.abs))), label: `${metricLabel(delta)}, B − A`, note: 'all probe inputs', a, b};
}

/** The ranking's header and rows: largest move first, or largest |B − A| first. */
export function changeRows(c: ChangeScene): {header: RankedCell[]; rows: RankedRow[]} {
  const ranked = c.attention ? rankHeads(c.grid, 'high') : rankHeads(c.grid, 'change', c.grid.map((row) => row.map((v) => (v === null ? null : 0))));
  const top = ranked.slice(0, MAX_RANKED);
  const max = Math.max(1e-9, ...top.map((r) => Math.abs(r.value)));
  const value = 'rank-value';
  const header: RankedCell[] = [
    {text: 'head'},
    {text: c.attention ? '' : 'A', class: value},
    {text: c.attention ? '' : 'B', class: value},
    {text: c.attention ? 'moved' : 'B − A', class: value},
    {text: ''},
  ];
  const rows = top.map((r): RankedRow => {
    const [l, h] = r.head;
    return {
      head: r.head,
      title: `Layer ${l}, head ${h}: click to see its difference`,
      cells: [
        {text: c.attention ? '' : valueText(c.a?.[l]?.[h]), class: value},
        {text: c.attention ? '' : valueText(c.b?.[l]?.[h]), class: value},
        {text: c.attention ? percentText(r.value) : valueText(r.value, true), class: value},
      ],
      bar: {fraction: Math.abs(r.value) / max, down: r.value < 0},
    };
  });
  return {header, rows};
}
