import assert from 'node:assert/strict';
import {test} from 'node:test';
import {METRIC_INFO, sortMetrics} from '../src/model/metrics';
import {exemplarsTag, metricTag, METRICS} from '../src/data/schema';

test('tag names follow the backend schema: <tag>/<metric>, <tag>/<group>/<metric>, <tag>/exemplars', () => {
  assert.equal(metricTag('probe', 'entropy'), 'probe/entropy');
  assert.equal(metricTag('probe', 'pos/NOUN'), 'probe/pos/NOUN');
  assert.equal(metricTag('t5', 'diagonal_alignment', 'cross'), 't5/cross/diagonal_alignment');
  assert.equal(exemplarsTag('probe'), 'probe/exemplars');
});

test('every metric the backend stores has a name and a description in the views', () => {
  for (const metric of METRICS) {
    assert.ok(METRIC_INFO[metric]?.label, `${metric} has no label`);
    assert.ok(METRIC_INFO[metric]?.about, `${metric} has no description`);
  }
  assert.ok((METRICS as readonly string[]).includes('previous_token'));
});

test('metrics list the analysis metrics first, then the other stored ones, then parts of speech', () => {
  assert.deepEqual(sortMetrics(['pos_from/NOUN', 'previous_token', 'pos/DET', 'entropy', 'distance']), [
    'distance',
    'entropy',
    'previous_token',
    'pos/DET',
    'pos_from/NOUN',
  ]);
});
