"""Attention summaries: TF-free protobuf builders (`*_pb`) and the functions that write them."""

# The builders return `Summary` protos; `attention`, `metrics` and `exemplars` validate what the
# user gives them, build the protos and write them through a writer:
#   - a `torch.utils.tensorboard.SummaryWriter`: we write through its own file writer, into its
#     event file (the Python loader reads only the newest event file of a directory, so a second
#     writer in the same directory would hide one of the two);
#   - a `tb_attention.Writer(logdir)`, which needs no torch;
#   - anything with `add_summary(summary, global_step)`.
# torch is never imported here: tensors are recognised by duck typing.

import concurrent.futures
import os
import sys
import time
import warnings

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tb_attention import fastcrc, metadata

ROW_SUM_TOLERANCE = 0.02  # |sum_j a_ij - 1| allowed per row (fp16/bf16 models round)
_ENCODE_WORKERS = 2  # threads for encoding examples: zlib and numpy release the GIL


fastcrc.install(writer=True, reader=False)  # TensorBoard checksums records in pure Python


class Writer:
    """Writes TensorBoard event files without torch or TensorFlow: `tb_attention.Writer("runs/x")`.

    Accepts local paths and any URL TensorBoard's own file layer accepts (e.g. s3://).
    """

    def __init__(self, logdir, *, max_queue=10, flush_secs=30, filename_suffix=""):
        self.logdir = str(logdir)
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
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content),
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
    """The summary of one step's examples: blobs from `metadata.encode_*` (see `encode_examples`)."""
    blobs = [manifest_blob, *attention_blobs, *qk_blobs]
    content = metadata.create_plugin_data(metadata.KIND_ATTENTION)
    return _blob_sequence_pb(tag, blobs, content, description, display_name)


def metrics_pb(tag, values, *, probe, metric, description=None, display_name=None):
    """One metric of one step: float32 [layers, heads] under tag `<probe>/<metric>`."""
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
    content = metadata.create_plugin_data(metadata.KIND_METRIC, probe=probe, metric=metric)
    return _summary(tag, tensor, content, summary_pb2.DATA_CLASS_TENSOR, description, display_name)


def exemplars_pb(tag, table, *, probe, description=None):
    """The top inputs per head (the table of http_api.md's /exemplars) as one gzip JSON blob."""
    content = metadata.create_plugin_data(metadata.KIND_EXEMPLARS, probe=probe)
    return _blob_sequence_pb(tag, [metadata.encode_json(table)], content, description)


# ---------------------------------------------------------------------------------------------
# Validation: the user's tensors become float32 numpy arrays, or a clear error


def to_numpy(x, what="attention"):
    """torch tensors (any device, bf16/fp16 included) and array-likes -> float32 numpy."""
    if x is None:
        raise TypeError(
            f"{what} is None: the model did not return it (load it with attn_implementation='eager' "
            "or use tb_attention.capture_attention)"
        )
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        x = x.cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be a tensor or array of numbers: {e}") from None


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
            listed = ", ".join(f"layer {i}: {list(a.shape)}" for i, a in enumerate(layers))
            raise ValueError(f"layers have different shapes ({listed}); log them as separate tags")
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


def check_attention(attention, tokens, *, check_rows=True):
    """Raises ValueError naming the problem if [L, H, N, N] weights are not attention over `tokens`."""
    num_layers, num_heads, n, n2 = attention.shape
    if n != n2:
        raise ValueError(f"attention must be square over tokens, got {n} queries x {n2} keys")
    if num_layers == 0 or num_heads == 0 or n == 0:
        raise ValueError(f"attention is empty: {num_layers} layers, {num_heads} heads, {n} tokens")
    if len(tokens) != n:
        raise ValueError(f"{len(tokens)} tokens given for attention over {n} tokens; they must match one to one")
    for what, bad in (("NaN or infinite", ~np.isfinite(attention)), ("negative", attention < 0)):
        if bad.any():
            layer, head, row, col = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(
                f"attention has {what} weights ({int(bad.sum())} of them; first at layer {layer}, head {head}, "
                f"query {row}, key {col}: {attention[layer, head, row, col]})"
            )
    if attention.max() > 1.0 + ROW_SUM_TOLERANCE:
        raise ValueError(f"attention has weights above 1 (max {attention.max():.4g}): log probabilities after the softmax")
    if check_rows:
        sums = attention.sum(axis=-1, dtype=np.float64)
        off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
        if off.any():
            layer, head, row = (int(v) for v in np.argwhere(off)[0])
            raise ValueError(
                f"attention rows must sum to 1: layer {layer}, head {head}, query {row} sums to "
                f"{sums[layer, head, row]:.4f} ({int(off.sum())} rows off by more than {ROW_SUM_TOLERANCE}). "
                "Padding rows? Pass attention_mask, or unpadded attention per input; "
                "pass check_rows=False for attention that is not a softmax"
            )


def token_strings(tokens):
    """The tokens of one input as a list of str, or a TypeError naming the token that is not text.

    str tokens are stored exactly as given, HTML or control characters included (the frontend
    shows them as text); lone surrogates, which UTF-8 cannot store, become U+FFFD. bytes tokens
    (byte-level tokenizers) are decoded as UTF-8, invalid bytes as U+FFFD. Anything else, token ids
    and None included, is refused: pass `tokenizer.convert_ids_to_tokens(ids)`.
    """
    if isinstance(tokens, (str, bytes)):
        raise TypeError(f"tokens must be a list of token strings, got one {type(tokens).__name__} of length {len(tokens)}")
    out = []
    for i, token in enumerate(tokens):
        if isinstance(token, bytes):
            token = token.decode("utf-8", errors="replace")
        elif not isinstance(token, str):
            raise TypeError(
                f"token {i} is {type(token).__name__} {token!r}, not a string: pass token strings "
                "(tokenizer.convert_ids_to_tokens(ids)), not ids"
            )
        out.append(_valid_unicode(token))
    return out


def _valid_unicode(text):
    """text with lone surrogates (not storable as UTF-8) replaced by U+FFFD; pairs are joined."""
    try:
        text.encode("utf-8")
        return str(text)
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# ---------------------------------------------------------------------------------------------
# Ranks


def is_writing_rank(all_ranks=False):
    """Under torch.distributed only rank 0 writes, unless `all_ranks`."""
    if all_ranks:
        return True
    torch = sys.modules.get("torch")  # only consult torch if the user's program imported it
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _file_writer(writer):
    """The object whose add_summary writes into `writer`'s event file."""
    if hasattr(writer, "_get_file_writer"):  # torch.utils.tensorboard.SummaryWriter (and tensorboardX)
        return writer._get_file_writer()
    if hasattr(writer, "add_summary"):
        return writer
    raise TypeError(
        f"writer must be a torch.utils.tensorboard.SummaryWriter or a tb_attention.Writer, got {type(writer).__name__}"
    )


def write(writer, summary, step, walltime=None):
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


def encode_examples(
    examples,
    *,
    max_dense_tokens=metadata.DEFAULT_MAX_DENSE_TOKENS,
    top_k=metadata.DEFAULT_TOP_K,
    check_rows=True,
):
    """Validated, encoded examples -> (manifest blob, attention blobs, q/k blobs).

    Each example is a dict with `attention` [L, H, N, N], `tokens`, and optionally `query`
    [L, H, N, d], `key` [L, H_kv, N, d], `scaling` (per layer) and the `metadata.SCORING_RULES`
    (`softcap`, `sliding_window`, `sinks`: per layer) the model used, `text`, `segments`, `pos`, `causal`.
    """
    if not examples:
        raise ValueError("no examples to write")
    prepared = []
    for index, example in enumerate(examples):
        attention = to_numpy(example["attention"])
        if attention.ndim != 4:
            raise ValueError(f"example {index}: attention must be [layers, heads, N, N], got {list(attention.shape)}")
        try:
            tokens = token_strings(example["tokens"])
            if attention.shape[-1] > metadata.MAX_TOKENS:  # before any check copies the weights
                raise ValueError(
                    f"attention over {attention.shape[-1]} tokens: at most {metadata.MAX_TOKENS} tokens per "
                    "example can be stored; log a window of the input"
                )
            check_attention(attention, tokens, check_rows=check_rows)
        except (TypeError, ValueError) as e:
            raise type(e)(f"example {index}: {e}") from None
        n = attention.shape[-1]
        if n > max_dense_tokens:
            warnings.warn(
                f"example {index} has {n} tokens (> max_dense_tokens={max_dense_tokens}): storing the top "
                f"{min(top_k, n)} weights of each row; pass max_dense_tokens={n} to store every weight",
                stacklevel=3,
            )
        fields = {k: example[k] for k in ("text", "segments", "pos") if example.get(k) is not None}
        if isinstance(fields.get("text"), str):
            fields["text"] = _valid_unicode(fields["text"])
        prepared.append((attention, tokens, example, fields))

    def encode(item):
        attention, tokens, example, fields = item
        blob, header = metadata.encode_attention_with_header(
            attention, tokens, causal=example.get("causal"), max_dense_tokens=max_dense_tokens, top_k=top_k, **fields
        )
        qk = None
        if example.get("query") is not None:
            rules = {name: example.get(name) for name in metadata.SCORING_RULES}
            qk = metadata.encode_qk(
                to_numpy(example["query"], "query"), to_numpy(example["key"], "key"), example["scaling"], **rules
            )
        return blob, header, qk

    if len(prepared) > 1:
        with concurrent.futures.ThreadPoolExecutor(_ENCODE_WORKERS) as pool:
            encoded = list(pool.map(encode, prepared))
    else:
        encoded = [encode(prepared[0])]
    entries = []
    for (attention, tokens, example, fields), (blob, header, qk) in zip(prepared, encoded):
        num_layers, num_heads, n, _ = attention.shape
        entries.append(
            {
                **fields,
                "tokens": tokens,
                "num_layers": num_layers,
                "num_heads": num_heads,
                "num_tokens": n,
                "causal": header["causal"],
                "encoding": header["encoding"],
                "has_qk": qk is not None,
            }
        )
    manifest = metadata.encode_json(metadata.create_manifest(entries))
    return manifest, [blob for blob, _, _ in encoded], [qk for _, _, qk in encoded if qk is not None]


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
    max_dense_tokens=metadata.DEFAULT_MAX_DENSE_TOKENS,
    top_k=metadata.DEFAULT_TOP_K,
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
        model turned q·k into weights (`metadata.SCORING_RULES`), so the neuron view recomputes them.
    Returns the number of examples written (0 on a rank that does not write).
    """
    if not is_writing_rank(all_ranks):
        return 0
    array, batched = stack_layers(attentions)
    if not batched:
        array, tokens = array[None], [tokens]
        query = None if query is None else to_numpy(query, "query")[None]
        key = None if key is None else to_numpy(key, "key")[None]
        text, segments = [text], [segments]
    else:
        if len(tokens) != array.shape[0] or not all(isinstance(t, (list, tuple)) for t in tokens):
            raise ValueError(f"a batch of {array.shape[0]} inputs needs one token list per input")
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
    write_examples(
        writer, tag, examples, step,
        max_dense_tokens=max_dense_tokens, top_k=top_k, check_rows=check_rows, walltime=walltime,
        description=description,
    )
    return len(examples)


def write_examples(writer, tag, examples, step, *, walltime=None, description=None, **encode_options):
    """Writes prepared examples (dicts, see `encode_examples`) as one step of `tag`."""
    check_step(step)  # before the encoding work
    manifest, blobs, qk_blobs = encode_examples(examples, **encode_options)
    write(writer, attention_pb(tag, manifest, blobs, qk_blobs, description=description), step, walltime)


def metrics(writer, tag, values, step, *, all_ranks=False, walltime=None):
    """Writes metric arrays ({"entropy": [L, H], "pos/NOUN": [L, H], ...}) of probe `tag` at `step`."""
    if not is_writing_rank(all_ranks):
        return 0
    for metric, array in values.items():
        if not metadata.is_known_metric(metric):
            raise ValueError(
                f"unknown metric {metric!r}: expected one of {', '.join(metadata.METRICS)}, pos/<TAG> or pos_from/<TAG>"
            )
        write(writer, metrics_pb(metadata.metric_tag(tag, metric), to_numpy(array, metric), probe=tag, metric=metric), step, walltime)
    return len(values)


def exemplars(writer, tag, table, step, *, all_ranks=False, walltime=None):
    """Writes the exemplar table (http_api.md, /exemplars) of probe `tag` at `step`."""
    if not is_writing_rank(all_ranks):
        return 0
    write(writer, exemplars_pb(metadata.exemplars_tag(tag), table, probe=tag), step, walltime)
    return 1
