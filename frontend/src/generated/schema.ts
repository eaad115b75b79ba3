// Generated from tb_attention.storage.schema by frontend/scripts/gen_schema.py; do not edit.
// Run `python frontend/scripts/gen_schema.py` after changing the backend's schema.

export const PLUGIN_NAME = "attention" as const;

export const METRICS = [
  "entropy",
  "distance",
  "null_attention",
  "dependency_alignment",
  "variability",
  "previous_token",
  "max_logit",
  "attention_entropy",
  "max_weight",
  "pixel_distance",
  "prefix_attention",
  "diagonal_alignment",
  "prompt_share",
  "induction",
  "image_share",
  "local_share",
  "sink_share",
  "retrieval"
] as const;

export const POS_PREFIX = "pos/" as const;

export const POS_FROM_PREFIX = "pos_from/" as const;

export const TAG_FORMS = {
  "exemplars": "{tag}/exemplars",
  "metric": "{tag}/{metric}",
  "groupMetric": "{tag}/{group}/{metric}"
} as const;

export const VIEWS = [
  "head",
  "model",
  "neuron",
  "image",
  "generation",
  "long",
  "metrics",
  "analysis",
  "exemplars",
  "compare",
  "health"
] as const;
