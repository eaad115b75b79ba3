"""Attention summaries: TF-free protobuf builders (`*_pb`) and the functions that write them."""

# The builders return `Summary` protos; `attention`, `metrics` and `exemplars` validate what the
# user gives them, build the protos and write them through a writer:
#   - a `torch.utils.tensorboard.SummaryWriter`: we write through its own file writer, into its
#     event file (the Python loader reads only the newest event file of a directory, so a second
#     writer in the same directory would hide one of the two);
#   - a `tb_attention.Writer(logdir)`, which needs no torch;
#   - anything with `add_summary(summary, global_step)`.
# torch is never imported here: tensors are recognised by duck typing.

import time

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tb_attention.storage import codecs, event_parts, fastcrc, ranks, schema
from tb_attention.storage import logdir as logdirs
from tb_attention.storage.examples import (  # noqa: F401  (the writer's API: summary.encode_step, ...)
    MAX_BLOB_BYTES,
    RECORD_BYTES,
    encode_examples,
    encode_step,
    to_numpy,
    token_strings,
)

ROW_SUM_TOLERANCE = codecs.ROW_SUM_TOLERANCE  # |sum_j a_ij - 1| allowed per row


class Writer:
    """Writes TensorBoard event files without torch or TensorFlow: `tb_attention.Writer("runs/x")`.

    Accepts local paths and s3:// or gs:// URLs (`logdir.check_logdir` refuses any other, with the
    reason). On a URL each flush (every `flush_secs`, `flush()`, `close()`) uploads the records
    since the last flush once, as a new part of the event file (storage/event_parts.py); the
    bucket is listed once here, so a missing bucket or credentials fail before anything is logged.
    `max_queue` (events queued before they are written to a local file) has no use on a URL,
    where records wait in memory until the next flush.
    """

    def __init__(self, logdir, *, max_queue=10, flush_secs=30, filename_suffix=""):
        self.logdir = logdirs.check_logdir(logdir)
        if logdirs.is_url(self.logdir):
            logdirs.check_reachable(self.logdir)
            self._file_writer = event_parts.PartEventWriter(self.logdir, flush_secs, filename_suffix)
        else:
            self._file_writer = EventFileWriter(self.logdir, max_queue, flush_secs, filename_suffix)

    def add_summary(self, summary, global_step=None, walltime=None):
        event = event_pb2.Event(summary=summary, wall_time=time.time() if walltime is None else walltime)
        if global_step is not None:
            event.step = int(global_step)
        self._file_writer.add_event(event)

    def add_scalar(self, tag, value, step, walltime=None):
        self.add_summary(scalar_summary.scalar_pb(tag, float(value)), step, walltime)

    def get_logdir(self):
        return self.logdir

    def flush(self):
        self._file_writer.flush()

    def close(self):
        self._file_writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Protobuf builders


def _summary(tag, tensor, content, data_class, description=None, display_name=None):
    meta = summary_pb2.SummaryMetadata(
        display_name=display_name or "",
        summary_description=description or "",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=schema.PLUGIN_NAME, content=content),
        data_class=data_class,
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)])


def _blob_sequence_pb(tag, blobs, content, description=None, display_name=None):
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(blobs))]),
        string_val=blobs,
    )
    return _summary(tag, tensor, content, summary_pb2.DATA_CLASS_BLOB_SEQUENCE, description, display_name)


def attention_pb(tag, manifest_blob, attention_blobs, qk_blobs=(), *, description=None, display_name=None):
    """The summary of one step's examples: blobs from `codecs.encode_*` (see `encode_examples`)."""
    blobs = [manifest_blob, *attention_blobs, *qk_blobs]
    content = schema.create_plugin_data(schema.KIND_ATTENTION)
    return _blob_sequence_pb(tag, blobs, content, description, display_name)


def attention_part_pb(tag, part, blobs):
    """Part `part` (1, 2, ...) of a large attention step's blobs, under `schema.part_tag(tag, part)`."""
    content = schema.create_plugin_data(schema.KIND_ATTENTION_PART, probe=tag, part=part)
    return _blob_sequence_pb(schema.part_tag(tag, part), blobs, content)


def metrics_pb(tag, values, *, probe, metric, group=None, description=None, display_name=None):
    """One metric of one step: float32 [layers, heads] under tag `<probe>/<metric>` (or
    `<probe>/<group>/<metric>`: see `metrics`)."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"metric {metric!r} must be [layers, heads], got shape {array.shape}")
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape]
        ),
        tensor_content=array.astype("<f4").tobytes(),
    )
    fields = {"probe": probe, "metric": metric}
    if group is not None:
        fields["group"] = schema.check_group_name(group)
    content = schema.create_plugin_data(schema.KIND_METRIC, **fields)
    return _summary(tag, tensor, content, summary_pb2.DATA_CLASS_TENSOR, description, display_name)


def exemplars_pb(tag, table, *, probe, description=None):
    """The top inputs per head (the table of http_api.md's /exemplars) as one gzip JSON blob."""
    content = schema.create_plugin_data(schema.KIND_EXEMPLARS, probe=probe)
    return _blob_sequence_pb(tag, [codecs.encode_json(table)], content, description)


# ---------------------------------------------------------------------------------------------
# Validation: the user's tensors become float32 numpy arrays, or a clear error


def stack_layers(attentions):
    """HF-style per-layer tuples ([B?, H, N, N] each) or one array -> float32 [B?, L, H, N, N].

    Returns (array, batched): `batched` when the input carried a batch axis.
    """
    if isinstance(attentions, (list, tuple)):
        if len(attentions) == 0:
            raise ValueError(
                "attention has no layers: with transformers' default SDPA attention, "
                "output_attentions=True returns an empty tuple; use tb_attention.capture_attention(model, ...) "
                "or load the model with attn_implementation='eager'"
            )
        layers = [to_numpy(a, f"attention of layer {i}") for i, a in enumerate(attentions)]
        shapes = {a.shape for a in layers}
        if len(shapes) > 1:
            listed = ", ".join(f"item {i}: {list(a.shape)}" for i, a in enumerate(layers))
            raise ValueError(
                f"a list of arrays is read as one tensor per layer (transformers' outputs.attentions), and these "
                f"have different shapes ({listed}); if they are one [layers, heads, N, N] array per input, log "
                "each input with its own call"
            )
        shape = layers[0].shape
        if len(shape) == 4:
            return np.stack(layers, axis=1), True
        if len(shape) == 3:
            return np.stack(layers, axis=0), False
        raise ValueError(f"each layer's attention must be [batch, heads, N, N] or [heads, N, N], got {list(shape)}")
    array = to_numpy(attentions)
    if array.ndim == 4:
        return array, False
    if array.ndim == 5:
        return array, True
    raise ValueError(
        f"attention must be per-layer [heads, N, N] tensors or one [layers, heads, N, N] array, got shape {list(array.shape)}"
    )


# ---------------------------------------------------------------------------------------------
# Ranks


def is_writing_rank(all_ranks=False):
    """Under torch.distributed only rank 0 writes, unless `all_ranks`."""
    return ranks.is_writing_rank(all_ranks)


def _file_writer(writer):
    """The object whose add_summary writes into `writer`'s event file. A SummaryWriter on an
    object store is first made to write its event file as write-once parts (`event_parts.adopt`)."""
    if hasattr(writer, "_get_file_writer"):  # torch.utils.tensorboard.SummaryWriter (and tensorboardX)
        file_writer = writer._get_file_writer()
        event_parts.adopt(file_writer)
        return file_writer
    if hasattr(writer, "add_summary"):
        return writer
    raise TypeError(
        f"writer must be a torch.utils.tensorboard.SummaryWriter or a tb_attention.Writer, got {type(writer).__name__}"
    )


def adopt_writer(writer):
    """Makes a SummaryWriter on an s3:// or gs:// logdir write its event file once (write-once parts,
    storage/event_parts.py) from now on, its own records included; returns it. Call it right after
    creating the writer: on gs:// without TensorFlow, whatever the writer wrote before is already lost
    but its last record, which is refused (LogdirError). Our writers call it themselves at their first
    record; a local logdir is left as it is."""
    _file_writer(writer)
    return writer


def write(writer, summary, step, walltime=None):
    fastcrc.install_writer()  # TensorBoard checksums records in pure Python; once, guarded
    _file_writer(writer).add_summary(summary, check_step(step), walltime)


MAX_STEP = 2**53 - 1  # the largest step a browser's JSON numbers (doubles) name exactly


def check_step(step):
    """step as an int, or a ValueError: steps are non-negative integers (the routes take no others)
    up to MAX_STEP, so that the step the dashboard reads from /tags is the step it asks for."""
    try:
        value = int(step)
    except (TypeError, ValueError):
        raise TypeError(f"step must be an integer, got {type(step).__name__} {step!r}") from None
    if value != step or not 0 <= value <= MAX_STEP:
        raise ValueError(
            f"step must be a non-negative integer up to 2**53 - 1 (a browser rounds larger ones), got {step!r}"
        )
    return value


# ---------------------------------------------------------------------------------------------
# Writing


def attention(
    writer,
    tag,
    attentions,
    tokens,
    step,
    *,
    query=None,
    key=None,
    scaling=None,
    softcap=None,
    sliding_window=None,
    sinks=None,
    attention_mask=None,
    text=None,
    segments=None,
    causal=None,
    max_dense_tokens=codecs.DEFAULT_MAX_DENSE_TOKENS,
    top_k=codecs.DEFAULT_TOP_K,
    check_rows=True,
    all_ranks=False,
    walltime=None,
    description=None,
):
    """Writes the attention of one input, or of a batch, at `step` under `tag`.

    attentions: HF-style per-layer tuple (`outputs.attentions`: [B, H, N, N] or [H, N, N] each) or
        one array [L, H, N, N] (or [B, L, H, N, N]).
    tokens: the N token strings (str or bytes, see `token_strings`), or one list per batch input.
    attention_mask: [B, N] (1 = token, 0 = padding) to drop the padding of a batch.
    query/key/scaling: optional [L, H, N, d] / [L, H_kv, N, d] vectors (with a batch axis for a
        batch) and the per-layer factor on q·k, for the neuron view.
    softcap/sliding_window/sinks: with query/key, per layer (None where unused), the rest of how the
        model turned q·k into weights (`schema.SCORING_RULES`), so the neuron view recomputes them.
    Returns the number of examples written (0 on a rank that does not write).
    """
    if not is_writing_rank(all_ranks):
        return 0
    array, batched = stack_layers(attentions)
    if batched and array.shape[0] == 1 and tokens and all(isinstance(t, (str, bytes)) for t in tokens):
        tokens = [tokens]  # outputs.attentions of one input, with that input's token list
    if not batched:
        array, tokens = array[None], [tokens]
        query = None if query is None else to_numpy(query, "query")[None]
        key = None if key is None else to_numpy(key, "key")[None]
        text, segments = [text], [segments]
    else:
        if len(tokens) != array.shape[0] or not all(isinstance(t, (list, tuple)) for t in tokens):
            per_input = isinstance(attentions, (list, tuple)) and len(tokens) == len(attentions)
            raise ValueError(
                f"attention was read as {array.shape[1]} per-layer tensors [B, H, N, N] of a batch of "
                f"{array.shape[0]} inputs (transformers' outputs.attentions), which needs one token list per "
                f"input; got {len(tokens)} items"
                + (": if you passed one [layers, heads, N, N] array per input, log each input with its own call "
                   "(or stack them into [B, L, H, N, N])" if per_input else "")
            )
        query = None if query is None else to_numpy(query, "query")
        key = None if key is None else to_numpy(key, "key")
        text = text if isinstance(text, (list, tuple)) else [text] * array.shape[0]
        segments = segments if segments is not None else [None] * array.shape[0]
    if (query is None) != (key is None) or (query is not None and scaling is None):
        raise ValueError("query, key and scaling go together: pass all three or none")
    if query is None and (softcap, sliding_window, sinks) != (None, None, None):
        raise ValueError("softcap, sliding_window and sinks describe query/key: pass them with query, key and scaling")
    mask = None if attention_mask is None else to_numpy(attention_mask, "attention_mask").reshape(array.shape[0], -1) > 0
    examples = []
    for b in range(array.shape[0]):
        keep = slice(None) if mask is None else np.flatnonzero(mask[b])
        a = array[b][:, :, keep][:, :, :, keep]
        example = {"attention": a, "tokens": tokens[b], "text": text[b], "segments": segments[b], "causal": causal}
        if query is not None:
            example.update(query=query[b][:, :, keep], key=key[b][:, :, keep], scaling=scaling,
                           softcap=softcap, sliding_window=sliding_window, sinks=sinks)
        examples.append(example)
    try:
        write_examples(
            writer, tag, examples, step,
            max_dense_tokens=max_dense_tokens, top_k=top_k, check_rows=check_rows, walltime=walltime,
            description=description,
        )
    except codecs.RowSumError as e:
        raise codecs.RowSumError(
            f"{e} Pass attention_mask to drop a batch's padding, sinks= with query/key for a model with attention "
            "sinks, or check_rows=False for attention that is not a softmax"
        ) from None
    return len(examples)


def write_examples(writer, tag, examples, step, *, walltime=None, description=None, **encode_options):
    """Writes examples as one step of `tag`: one dict per example (http_api.md, `/examples`).

    v1 form: `attention` [L, H, N, N] (or a list of L per-layer [H, N, N]), `tokens`, optional `query`
    [L, H, N, d], `key` [L, H_kv, N, d], `scaling` (per layer), the `schema.SCORING_RULES` (per layer),
    `text`, `segments`, `pos`, `causal`, `layer_names`: one group named "self".
    v2 form: `tokens`, `text`, `segments`, `pos`, `image` ({png, grid, patch_size, prefix_tokens,
    prefix_names}) and `groups`: a list of {name, attention [L, H, Nq, Nk] or per-layer list, tokens,
    key_tokens, causal, layer_names, query, key, scaling and the schema.SCORING_RULES}. A layer may be
    an array, a torch tensor on any device, or a `codecs.EncodedLayer` from `codecs.encode_attention_layer`
    (streaming capture); a group's q/k may be `qk`: per-layer blobs from `codecs.encode_qk_layer`.
    A long group (http_api.md, "Long examples") gives, instead of attention, `long`: {"plan":
    `codecs.long.plan(...)`, "layers": a `codecs.LongLayer` or `codecs.EncodedLongLayer` per layer}.
    encode_options: max_dense_tokens, top_k, check_rows (see `encode_step`).
    """
    check_step(step)  # before the encoding work
    records = encode_step(examples, **encode_options)
    for part, blobs in enumerate(records[1:], 1):  # parts first: the main record names them
        write(writer, attention_part_pb(tag, part, blobs), step, walltime)
    write(writer, attention_pb(tag, records[0][0], records[0][1:], description=description), step, walltime)


def metrics(writer, tag, values, step, *, group=None, first_group=None, all_ranks=False, walltime=None):
    """Writes metric arrays ({"entropy": [L, H], "pos/NOUN": [L, H], ...}) of probe `tag` at `step`.

    group: the attention group they describe. Tags are `<tag>/<metric>` for the probe's first group
    and `<tag>/<group>/<metric>` for its other groups; `first_group` says which (default: true when
    group is None or "self"). The plugin data names the group when one is given.
    """
    if not is_writing_rank(all_ranks):
        return 0
    if group is not None:
        schema.check_group_name(group)
    if first_group is None:
        first_group = group in (None, schema.DEFAULT_GROUP)
    for metric, array in values.items():
        if not schema.is_known_metric(metric):
            raise ValueError(
                f"unknown metric {metric!r}: expected one of {', '.join(schema.METRICS)}, pos/<TAG> or pos_from/<TAG>"
            )
        metric_tag = schema.metric_tag(tag, metric, None if first_group else group)
        pb = metrics_pb(metric_tag, to_numpy(array, metric), probe=tag, metric=metric, group=group)
        write(writer, pb, step, walltime)
    return len(values)


def exemplars(writer, tag, table, step, *, all_ranks=False, walltime=None):
    """Writes the exemplar table (http_api.md, /exemplars) of probe `tag` at `step`."""
    if not is_writing_rank(all_ranks):
        return 0
    write(writer, exemplars_pb(schema.exemplars_tag(tag), table, probe=tag), step, walltime)
    return 1
