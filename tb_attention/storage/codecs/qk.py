"""Query/key blobs: float16 vectors with each layer's scaling and scoring rules."""

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


@dataclasses.dataclass
class QueryKey:
    """Query [L, H, Nq, d] and key [L, H_kv, Nk, d] vectors, as the model used them."""

    header: dict
    query: np.ndarray
    key: np.ndarray

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


def encode_qk(query, key, scaling, *, first_layer=0, **rules):
    """Encodes query [L, H, Nq, d] and key [L, H_kv, Nk, d] as float16, with each layer's scaling
    and, where the model uses them, its other SCORING_RULES as keywords (one entry per layer, None
    for none; http_api.md says what each holds). Numpy or torch on any device; a one-layer call
    (L = 1) is what the writer stores per layer."""
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
    header = {
        "first_layer": int(first_layer),
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": int(k.shape[1]),
        "num_tokens": nq,
        "num_key_tokens": nk,
        "head_dim": int(q.shape[3]),
        "dtype": "float16",
        "scaling": scaling,
        **{name: values for name, values in rules.items() if values is not None},
    }
    return compress(pack(QK_MAGIC, header, [_float16_bytes(q), _float16_bytes(k)]))


def encode_qk_layer(query, key, scaling, *, layer=0, **rules):
    """One layer's query [H, Nq, d] and key [H_kv, Nk, d] (numpy or torch on any device) -> the blob
    the writer stores for layer `layer`; the SCORING_RULES keywords are this layer's values (or None)."""
    rules = {name: None if value is None else [value] for name, value in rules.items()}
    return encode_qk(as_float32(query)[None], as_float32(key)[None], [scaling], first_layer=layer, **rules)


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
    size = 2 * num_layers * (num_heads * nq + num_kv_heads * nk) * d
    if payload_size < size:
        raise FormatError(f"query/key payload does not match its header ({payload_size} of {size} bytes)")
    return header


def decode_qk(blob):
    header, payload = unpack(decompress(blob), QK_MAGIC)
    try:
        num_layers, num_heads, num_kv_heads, nq, nk, d = _qk_header_sizes(header)
        q_shape = (num_layers, num_heads, nq, d)
        k_shape = (num_layers, num_kv_heads, nk, d)
        q_count = int(np.prod(q_shape))
        query = np.frombuffer(payload, "<f2", count=q_count).reshape(q_shape).astype(np.float32)
        key = np.frombuffer(payload, "<f2", count=int(np.prod(k_shape)), offset=2 * q_count)
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
    return encode_qk(query, key, scaling, first_layer=first["first_layer"], **rules)


def qk_layer_blob(blob, layer):
    """The q/k blob of layer `layer` (counted within `blob`) of a several-layer q/k blob."""
    qk = decode_qk(blob)
    if not 0 <= layer < qk.header["num_layers"]:
        raise IndexError(f"layer {layer} does not exist: the example has {qk.header['num_layers']} layers")
    rules = {name: [qk.rule(name)[layer]] for name in SCORING_RULES}
    rules = {name: values if values[0] is not None else None for name, values in rules.items()}
    return encode_qk(qk.query[layer : layer + 1], qk.key[layer : layer + 1], [qk.scaling[layer]],
                     first_layer=qk.header["first_layer"] + layer, **rules)
