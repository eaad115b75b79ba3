"""Probe.log of long inputs (more than `long_tokens` tokens): each captured in query chunks (capture.long),
stored as a long group, and their metrics local_share, sink_share, max_logit (and retrieval for needles)."""

import numpy as np

from tb_attention.capture.long import capture_long
from tb_attention.metrics import long as long_metrics
from tb_attention.runtime import distributed
from tb_attention.storage import summary


def check_options(probe):
    """Raises where an option of `probe` cannot be honoured for its long inputs (named by long_tokens)."""
    long_inputs = [i for i, e in enumerate(probe.encodings) if is_long(probe, e)]
    if not long_inputs:
        return
    n = len(probe.encodings[long_inputs[0]]["input_ids"])
    why = None
    if probe.with_qk:
        why = "with_qk=True (no query/key vectors are stored for long inputs)"
    elif probe.has_targets:
        why = "targets (an encoder-decoder's long inputs are not supported)"
    elif any(probe.encodings[i]["segments"] for i in long_inputs):
        why = "sentence pairs"
    elif len(long_inputs) != len(probe.encodings):
        why = (f"inputs of at most long_tokens={probe.long_tokens} tokens besides: give the long texts a probe of "
               "their own")
    if why is not None:
        raise ValueError(f"probe {probe.name!r}: input {long_inputs[0]} has {n:,} tokens, more than "
                         f"long_tokens={probe.long_tokens}, so it takes the long path, which takes no {why}; "
                         "or raise long_tokens")


def is_long(probe, encoding):
    """Whether an input takes the long path; inputs given without token ids (a speech probe's audio) never do."""
    ids = encoding.get("input_ids")
    return ids is not None and len(ids) > probe.long_tokens


def log_long(probe, writer, model, step, *, walltime=None, needles=None):
    """Probe.log for a probe whose inputs are all long. needles: per input (answer queries, needle key
    positions), for the retrieval metric. Returns the metrics ({metric: [L, H]})."""
    sharded = distributed.is_sharded(model)
    if not sharded and not distributed.is_writing_rank(probe.all_ranks):
        return {}
    distributed.guard_collective(model, f"probe {probe.name!r}")
    captures = [capture_long(model, e["input_ids"], forward=probe.forward, budget=probe.long_budget,
                             top_k=probe.long_top_k) for e in probe.encodings]
    if not distributed.is_writing_rank(probe.all_ranks):
        return {}
    examples = [{"tokens": e["tokens"], "text": e["text"], "segments": None, "pos": None,
                 "groups": [c.group(e["tokens"])]} for e, c in zip(probe.encodings, captures)]
    summary.write_examples(writer, probe.name, examples, step, walltime=walltime)
    if not probe.compute_metrics:
        return {}
    values = long_values(captures, needles)
    summary.metrics(writer, probe.name, values, step, group="self", first_group=True, all_ranks=True, walltime=walltime)
    return values


def long_values(captures, needles=None):
    """{metric: float32 [L, H]} over long captures: local_share and sink_share (means over the inputs),
    max_logit (the largest), and with needles, retrieval (hits over every input's answer queries)."""
    values = {
        "local_share": np.mean([long_metrics.local_share(c.profile) for c in captures], axis=0),
        "sink_share": np.mean([long_metrics.sink_share(c.sinks) for c in captures], axis=0),
        "max_logit": np.max([c.max_logit for c in captures], axis=0),
    }
    if needles is not None:
        hits, count = 0, 0
        for capture, (answers, positions) in zip(captures, needles, strict=True):
            found, n = long_metrics.retrieval_hits(capture.top1[..., None], answers, positions)
            hits, count = hits + found, count + n
        values["retrieval"] = hits / max(count, 1) if count else np.full(captures[0].max_logit.shape, np.nan)
    return {name: np.asarray(v, np.float32) for name, v in values.items()}
