"""Probe.log streamed: each layer encoded and summed while the forward runs (stream.LayerStream), never
more than one layer's attention held."""

from tb_attention.capture.stream import LayerStream, capture_streaming
from tb_attention.probes.inputs import padded
from tb_attention.runtime import distributed
from tb_attention.storage import summary
from tb_attention.storage.schema import exemplar_table


def log_probe(probe, writer, model, step, *, walltime=None):
    """Probe.log for a self-attention Hugging Face model (no q/k, no targets), streamed: the same
    records, without ever holding more than one layer's attention. Returns the metrics."""
    if probe.with_qk or probe.has_targets:
        raise ValueError("streaming capture stores attention only: no with_qk, no targets")
    sharded = distributed.is_sharded(model)
    if not sharded and not distributed.is_writing_rank(probe.all_ranks):
        return {}
    distributed.guard_collective(model, f"probe {probe.name!r}")
    syntax = probe.syntax if probe.compute_metrics else [None] * len(probe.encodings)
    listener = LayerStream(with_metrics=probe.compute_metrics, include_first=probe.include_first,
                           top_k_exemplars=probe.top_k_exemplars, max_dense_tokens=probe.max_dense_tokens)
    batches = []
    for start in range(0, len(probe.encodings), probe.batch_size):
        batch = probe.encodings[start : start + probe.batch_size]
        input_ids, mask = padded([e["input_ids"] for e in batch])
        parses = syntax[start : start + probe.batch_size]
        batches.append((input_ids, mask, [e["tokens"] for e in batch],
                        parses if any(p is not None for p in parses) else None))
    capture_streaming(model, batches, listener)
    if not distributed.is_writing_rank(probe.all_ranks):
        return {}
    examples = []
    for encoding, layers, parse in zip(probe.encodings, listener.encoded, syntax):
        examples.append({
            "tokens": encoding["tokens"], "text": encoding["text"], "segments": encoding["segments"],
            "pos": None if parse is None else list(parse.pos),
            "groups": [{"name": "self", "attention": layers, "causal": listener.causal,
                        "layer_names": listener.layer_names}],
        })
    summary.write_examples(writer, probe.name, examples, step, walltime=walltime,
                           max_dense_tokens=probe.max_dense_tokens)
    if not probe.compute_metrics:
        return {}
    values = listener.result()
    table = exemplar_table(
        [[[(e.key, e.score, e.i, e.j) for e in head] for head in layer] for layer in listener.exemplars()],
        inputs=[{"tokens": e["tokens"], "text": e["text"], "example": i} for i, e in enumerate(probe.encodings)],
        top_k=probe.top_k_exemplars,
    )
    summary.metrics(writer, probe.name, values, step, group="self", first_group=True, all_ranks=True, walltime=walltime)
    summary.exemplars(writer, probe.name, table, step, all_ranks=True, walltime=walltime)
    return values
