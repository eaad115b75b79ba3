"""Query/key blobs: float16 or float32 vectors with each layer's scaling and scoring rules."""

import dataclasses

import numpy as np

from tb_attention.storage.codecs.blob import (
    QK_MAGIC,
    as_float32,
    check_gzip,
    compress,
    decompress,
    header_sizes,
    is_torch,
    pack,
    to_host,
    unpack,
)
from tb_attention.storage.schema import SCORING_RULES, FormatError

# ---------------------------------------------------------------------------------------------
# Query and key vectors

QK_DTYPES = {"float16": "<f2", "float32": "<f4"}  # a blob's `dtype` -> its little-endian values
DEFAULT_QK_DTYPE = "float16"  # blobs written before the header said (the field was then always float16)

# float16 q/k are stored only where rounding them moves no logit of any layer, head, query and key (masked
# ones too) by more than FLOAT16_LOGIT_ERROR (logit units); else float32. Logits each off by at most δ
# move a weight a to σ(logit(a) ± 2δ), at most 2δ·e^(2δ)·a(1 − a) away, and the room the sqrt-u8
# quantisation leaves below its maximum at a is 2(1 − √a)/510 ≥ (1 − a)/510 (codecs.attention): with
# δ ≤ 5e-4 the weights recomputed from float16 q/k stay within MAX_QUANTIZATION_ERROR of the stored ones.
FLOAT16_LOGIT_ERROR = 5e-4


@dataclasses.dataclass
class QueryKey:
    """Query [L, H, Nq, d] and key [L, H_kv, Nk, d] vectors, as the model used them."""

    header: dict
    query: np.ndarray
    key: np.ndarray

    @property
    def dtype(self):
        """How the blob stores the vectors: "float16" or "float32" (QK_DTYPES)."""
        return self.header.get("dtype", DEFAULT_QK_DTYPE)

    @property
    def scaling(self):
        """Per layer: the factor on q·k before the softmax."""
        return self.header["scaling"]

    def rule(self, name):
        """Per layer, one of SCORING_RULES (None where the layer does not use it)."""
        return self.header.get(name) or [None] * self.header["num_layers"]


def _scoring_rule(name, values, num_layers, num_heads, nq, nk):
    """One rule, checked: a list of one entry per layer, or None when no layer uses it."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != num_layers:
        raise ValueError(f"{name} must have one entry per layer ({num_layers}), got {values!r:.80}")
    checked = []
    for layer, value in enumerate(values):
        if value is None:
            checked.append(None)
        elif name == "bidirectional_spans":
            checked.append(_spans(value, layer, nq, nk))
        elif name in _TABLE_RULES:
            shape = {"sinks": (num_heads,), "key_bias": (num_heads, nk), "relative_bias": (num_heads, nq + nk - 1)}[name]
            checked.append(_table(name, value, layer, shape))
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            integer = name in _INTEGER_RULES
            if not number > 0 or not np.isfinite(number) or (integer and number != int(number)):
                kind = "a positive integer" if integer else "a positive number"
                raise ValueError(f"{name} of layer {layer} must be {kind} or None, got {value!r}")
            checked.append(int(number) if integer else number)
    return checked if any(v is not None for v in checked) else None


_INTEGER_RULES = ("sliding_window", "attention_chunk")
_TABLE_RULES = ("sinks", "key_bias", "relative_bias")  # numbers per head: [H], [H, Nk], [H, Nq + Nk - 1]


def _spans(value, layer, nq, nk):
    """A layer's bidirectional_spans as [[a, b], ...]: integers 0 <= a < b <= N, in order, not overlapping."""
    where = f"bidirectional_spans of layer {layer}"
    if nq != nk:
        raise ValueError(f"{where}: spans are of self attention (queries = keys), got {nq} queries over {nk} keys")
    try:
        spans = [[int(a), int(b)] for a, b in value]
        exact = all(float(x) == y for pair, got in zip(value, spans) for x, y in zip(pair, got))
    except (TypeError, ValueError):
        spans, exact = None, False
    ends = [x for pair in spans or [] for x in pair]
    if not exact or isinstance(value, (str, bytes)) or any(b <= a for a, b in spans) or ends != sorted(ends) or \
            (ends and (ends[0] < 0 or ends[-1] > nq)):
        raise ValueError(f"{where} must be [[a, b], ...] with integers 0 <= a < b <= {nq}, in order, not "
                         f"overlapping, got {value!r:.80}")
    return spans


def _table(name, value, layer, shape):
    """A layer's sinks [H] or bias [H, n] as nested lists of its float32 values (JSON keeps them exact)."""
    try:
        table = np.asarray(to_host(as_float32(value)), dtype=np.float32)
    except (TypeError, ValueError):
        table = np.full(1, np.nan, dtype=np.float32)  # ragged or not numbers: refused below
    if len(shape) == 1:
        table = table.reshape(-1)
    if table.shape != shape or not np.isfinite(table).all():
        what = f"{shape[0]} finite numbers, one per head" if len(shape) == 1 else f"{list(shape)} finite numbers (heads, offsets)"
        raise ValueError(f"{name} of layer {layer} must be {what}, got shape {list(table.shape)}")
    return table.astype(np.float64).tolist()


def _float16_bytes(x):
    """float16 little-endian bytes of x, clipped to float16's range; torch converts on its device."""
    fp16_max = float(np.finfo(np.float16).max)
    x = as_float32(x)
    if is_torch(x):
        import torch

        return to_host(x.clamp(-fp16_max, fp16_max).to(torch.float16)).astype("<f2").tobytes()
    return np.clip(x, -fp16_max, fp16_max).astype("<f2").tobytes()


def _float16_logit_error(q, k, scaling):
    """max |scaling·(q·k − q16·k16)| over every layer, head, query and key, q16 and k16 being q and k
    as float16 stores them (NaN for non-finite vectors); one layer at a time, torch on its device."""
    fp16_max = float(np.finfo(np.float16).max)
    num_kv = k.shape[1]
    group = q.shape[1] // num_kv
    worst = 0.0
    for layer in range(q.shape[0]):
        if is_torch(q):
            import torch

            qs, ks = q[layer], k[layer]
            q16, k16 = (x.clamp(-fp16_max, fp16_max).to(torch.float16).float() for x in (qs, ks))
            matmul = lambda a, b: torch.matmul(a.reshape(num_kv, group, *a.shape[1:]), b[:, None].transpose(-1, -2))  # noqa: E731
            error = float((matmul(qs, ks) - matmul(q16, k16)).abs().max()) if qs.numel() and ks.numel() else 0.0
        else:
            qs, ks = q[layer], k[layer]
            q16, k16 = (np.clip(x, -fp16_max, fp16_max).astype(np.float16).astype(np.float32) for x in (qs, ks))
            matmul = lambda a, b: np.matmul(a.reshape(num_kv, group, *a.shape[1:]), np.swapaxes(b[:, None], -1, -2))  # noqa: E731
            error = float(np.abs(matmul(qs, ks) - matmul(q16, k16)).max()) if qs.size and ks.size else 0.0
        error *= abs(scaling[layer])
        if not error <= worst:  # larger, or NaN (which stays)
            worst = error
        if worst != worst:
            break
    return worst


def _value_bytes(x, dtype):
    """x as little-endian `dtype` (QK_DTYPES) bytes; float16 clipped to its range; torch converts on its device."""
    if dtype == "float32":
        return to_host(as_float32(x)).astype("<f4").tobytes()
    return _float16_bytes(x)


def encode_qk(query, key, scaling, *, first_layer=0, dtype=None, **rules):
    """Encodes query [L, H, Nq, d] and key [L, H_kv, Nk, d], with each layer's scaling and, where the
    model uses them, its other SCORING_RULES as keywords (one entry per layer, None for none;
    http_api.md says what each holds). Numpy or torch on any device; a one-layer call (L = 1) is what
    the writer stores per layer. dtype: "float16" or "float32" (QK_DTYPES); None chooses float16 where
    it moves no logit by more than FLOAT16_LOGIT_ERROR, else float32."""
    unknown = set(rules) - set(SCORING_RULES)
    if unknown:
        raise TypeError(f"encode_qk got unknown scoring rules {sorted(unknown)}; the rules are {', '.join(SCORING_RULES)}")
    q, k = as_float32(query), as_float32(key)
    if q.ndim != 4 or k.ndim != 4 or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"query {tuple(q.shape)} and key {tuple(k.shape)} must be [L, H, Nq, d] and [L, H_kv, Nk, d]")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {k.shape[1]} key heads")
    num_layers, num_heads = int(q.shape[0]), int(q.shape[1])
    scaling = [float(s) for s in np.broadcast_to(np.asarray(scaling, dtype=np.float64), (num_layers,))]
    nq, nk = int(q.shape[2]), int(k.shape[2])
    rules = {name: _scoring_rule(name, rules.get(name), num_layers, num_heads, nq, nk) for name in SCORING_RULES}
    if dtype is None:
        dtype = "float16" if _float16_logit_error(q, k, scaling) <= FLOAT16_LOGIT_ERROR else "float32"
    elif dtype not in QK_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(QK_DTYPES)}, got {dtype!r}")
    header = {
        "first_layer": int(first_layer),
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": int(k.shape[1]),
        "num_tokens": nq,
        "num_key_tokens": nk,
        "head_dim": int(q.shape[3]),
        "dtype": dtype,
        "scaling": scaling,
        **{name: values for name, values in rules.items() if values is not None},
    }
    return compress(pack(QK_MAGIC, header, [_value_bytes(q, dtype), _value_bytes(k, dtype)]))


def encode_qk_layer(query, key, scaling, *, layer=0, dtype=None, **rules):
    """One layer's query [H, Nq, d] and key [H_kv, Nk, d] (numpy or torch on any device) -> the blob
    the writer stores for layer `layer` (dtype as `encode_qk`'s: chosen per layer); the SCORING_RULES
    keywords are this layer's values (or None)."""
    rules = {name: None if value is None else [value] for name, value in rules.items()}
    return encode_qk(as_float32(query)[None], as_float32(key)[None], [scaling], first_layer=layer, dtype=dtype, **rules)


def _qk_itemsize(header):
    """Bytes per stored value of a q/k header's `dtype` (float16 when absent)."""
    dtype = header.get("dtype", DEFAULT_QK_DTYPE)
    if not isinstance(dtype, str) or dtype not in QK_DTYPES:
        raise FormatError(f"unknown query/key dtype {dtype!r:.40}")
    return np.dtype(QK_DTYPES[dtype]).itemsize


def _qk_header_sizes(header):
    num_layers, num_heads, num_kv_heads, nq, d = header_sizes(header, "num_layers", "num_heads", "num_kv_heads", "num_tokens", "head_dim")
    (nk,) = header_sizes(header, "num_key_tokens")
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise FormatError(f"{num_heads} query heads over {num_kv_heads} key heads")
    return num_layers, num_heads, num_kv_heads, nq, nk, d


def check_qk_blob(blob):
    """The header of a query/key blob, after checking that it decompresses and is complete."""
    header, payload_size = check_gzip(blob, QK_MAGIC)
    num_layers, num_heads, num_kv_heads, nq, nk, d = _qk_header_sizes(header)
    size = _qk_itemsize(header) * num_layers * (num_heads * nq + num_kv_heads * nk) * d
    if payload_size < size:
        raise FormatError(f"query/key payload does not match its header ({payload_size} of {size} bytes)")
    return header


def decode_qk(blob):
    header, payload = unpack(decompress(blob), QK_MAGIC)
    try:
        num_layers, num_heads, num_kv_heads, nq, nk, d = _qk_header_sizes(header)
        q_shape = (num_layers, num_heads, nq, d)
        k_shape = (num_layers, num_kv_heads, nk, d)
        item = _qk_itemsize(header)
        values = QK_DTYPES[header.get("dtype", DEFAULT_QK_DTYPE)]
        q_count = int(np.prod(q_shape))
        query = np.frombuffer(payload, values, count=q_count).reshape(q_shape).astype(np.float32)
        key = np.frombuffer(payload, values, count=int(np.prod(k_shape)), offset=item * q_count)
    except (KeyError, TypeError) as e:
        raise FormatError(f"query/key header lacks {e}") from None
    except ValueError as e:
        raise FormatError(f"query/key payload does not match its header: {e}") from None
    return QueryKey(header, query, key.reshape(k_shape).astype(np.float32))


def join_qk_layers(blobs):
    """One q/k blob of every layer from consecutive layers' q/k blobs of one group."""
    layers = [decode_qk(blob) for blob in blobs]
    if not layers:
        raise ValueError("no layers to join")
    first = layers[0].header
    rules = {}
    for name in SCORING_RULES:
        values = [value for x in layers for value in x.rule(name)]
        rules[name] = values if any(v is not None for v in values) else None
    try:
        query = np.concatenate([x.query for x in layers])
        key = np.concatenate([x.key for x in layers])
    except ValueError:
        raise FormatError("q/k layers of one group differ in shape") from None
    scaling = [s for x in layers for s in x.scaling]
    return encode_qk(query, key, scaling, first_layer=first["first_layer"], dtype=joined_qk_dtype(layers), **rules)


def joined_qk_dtype(layers):
    """The dtype that holds every value of these decoded q/k layers: float32 if any is (float16 values are float32's too)."""
    return "float32" if any(x.dtype == "float32" for x in layers) else "float16"


def qk_layer_blob(blob, layer):
    """The q/k blob of layer `layer` (counted within `blob`) of a several-layer q/k blob."""
    qk = decode_qk(blob)
    if not 0 <= layer < qk.header["num_layers"]:
        raise IndexError(f"layer {layer} does not exist: the example has {qk.header['num_layers']} layers")
    rules = {name: [qk.rule(name)[layer]] for name in SCORING_RULES}
    rules = {name: values if values[0] is not None else None for name, values in rules.items()}
    return encode_qk(qk.query[layer : layer + 1], qk.key[layer : layer + 1], [qk.scaling[layer]],
                     first_layer=qk.header["first_layer"] + layer, dtype=qk.dtype, **rules)
