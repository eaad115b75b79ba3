import assert from 'node:assert/strict';
import {test} from 'node:test';

import {layerLabels} from '../src/model/layers';

test('layers are labelled by the index their stored names give', () => {
  assert.deepEqual(layerLabels(['layer 5', 'layer 6'], 2), ['5', '6']);
  assert.deepEqual(layerLabels(['model.layers.0.self_attn', 'model.layers.1.self_attn'], 2), ['0', '1']);
  assert.deepEqual(layerLabels(['encoder.block.0.layer.0.SelfAttention', 'encoder.block.3.layer.0.SelfAttention'], 2), ['0', '3']);
});

test('names without an increasing index, or none, label layers by position', () => {
  assert.deepEqual(layerLabels(undefined, 3), ['0', '1', '2']);
  assert.deepEqual(layerLabels(['attn', 'attn#1'], 2), ['0', '1']);
  assert.deepEqual(layerLabels(['blocks.2', 'blocks.1'], 2), ['0', '1']);
  assert.deepEqual(layerLabels(['a.0'], 2), ['0', '1']); // a count that does not match
});
