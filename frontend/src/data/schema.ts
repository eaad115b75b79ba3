// Tag naming and metric names, from the backend's schema (../generated/schema.ts): nothing here
// spells a tag by hand.

import {METRICS, POS_FROM_PREFIX, POS_PREFIX, TAG_FORMS} from '../generated/schema';

export {METRICS, POS_FROM_PREFIX, POS_PREFIX};

/** A metric the backend stores per head (`entropy`, ...; not the `pos/…` families). */
export type MetricName = (typeof METRICS)[number];

function fill(form: string, values: Record<string, string>): string {
  return form.replace(/\{(\w+)\}/g, (_, name: string) => values[name]);
}

/** The tag of one metric of a probe: `<tag>/<metric>`, or `<tag>/<group>/<metric>` for a group
 * other than the probe's first (`group` null or omitted: the first). */
export function metricTag(probe: string, metric: string, group: string | null = null): string {
  return group === null ? fill(TAG_FORMS.metric, {tag: probe, metric}) : fill(TAG_FORMS.groupMetric, {tag: probe, group, metric});
}

/** The tag of a probe's exemplar table. */
export function exemplarsTag(probe: string): string {
  return fill(TAG_FORMS.exemplars, {tag: probe});
}
