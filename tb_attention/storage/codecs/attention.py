"""Attention blobs: sqrt-u8 quantisation and the dense, causal and top-k encodings, per layer or whole."""

# The numpy and torch paths give the same bytes: IEEE float32 sqrt, multiply and round-half-even
# agree, and top-k ranks unique integer keys (see _rank_keys), so no tie is left to an implementation.

import dataclasses
import sys

import numpy as np

from tb_attention.storage.codecs.blob import (
    ATTENTION_MAGIC,
    as_float32,
    check_gzip,
    compress,
    decompress,
    header_sizes,
    is_torch,
    pack,
    payload_prefix,
    to_host,
    unpack,
)
from tb_attention.storage.schema import FormatError

# Attention weights are stored as one byte each: b = round(255 * sqrt(a)), a' = (b / 255) ** 2.
# |sqrt(a) - b/255| <= 1/510, so |a - a'| <= (1/510) * (2 sqrt(a) + 1/510) <= MAX_QUANTIZATION_ERROR,
# and the error relative to a is at most ~2 / (510 sqrt(a)) (4 % at a = 0.01): small weights keep
# their shape, which a linear byte scale would flatten to 0, 1 or 2.
QUANTIZATION = "sqrt-u8"
MAX_QUANTIZATION_ERROR = 2.0 / 510 + 1.0 / 510**2  # absolute, per weight in [0, 1]

# Examples with more than DEFAULT_MAX_DENSE_TOKENS² query × key pairs are stored sparsely: the top-k
# weights of each row.
DEFAULT_MAX_DENSE_TOKENS = 512  # tokens
DEFAULT_TOP_K = 32  # weights kept per row in the sparse encoding
_TOPK_PAD = 0xFFFF  # index of an unused slot in a sparse row (rows shorter than k)
MAX_TOKENS = 0xFFFF  # queries or keys per example: sparse indices are uint16

ENCODING_DENSE = "dense"  # [L, H, Nq, Nk] bytes
ENCODING_CAUSAL = "causal"  # lower triangle of each head, row by row: N (N + 1) / 2 bytes per head
ENCODING_TOPK = "topk"  # uint16 indices [L, H, Nq, k], then bytes [L, H, Nq, k]

ROW_SUM_TOLERANCE = 0.02  # |sum_j a_ij - 1| allowed per row (fp16/bf16 models round)


class RowSumError(ValueError):
    """Attention rows that do not sum as a softmax's do; the writer's callers add the options they have."""


def quantize(weights):
    """float weights in [0, 1] -> uint8 on the square-root scale (see QUANTIZATION); torch stays torch."""
    w = as_float32(weights)
    if is_torch(w):
        import torch  # the tensor's own module: present whenever a tensor is

        return w.clamp(0.0, 1.0).sqrt_().mul_(255.0).round_().to(torch.uint8)
    x = np.clip(w, 0.0, 1.0)  # one temporary, worked in place
    np.sqrt(x, out=x)
    x *= np.float32(255.0)
    return np.rint(x, out=x).astype(np.uint8)


_DEQUANTIZE_TABLE = (np.arange(256, dtype=np.float32) / 255.0) ** 2


def dequantize(codes):
    return _DEQUANTIZE_TABLE[np.asarray(codes, dtype=np.uint8)]


_CAUSAL_THRESHOLD = (0.5 / 255.0) ** 2  # weights below this quantise to 0


def is_causal_layer(weights):
    """True when every weight of [H, N, N] above the diagonal quantises to zero."""
    w = as_float32(weights)
    n, m = w.shape[-2:]
    if n != m:
        return False
    if is_torch(w):
        import torch

        above = torch.ones(n, n, dtype=torch.bool, device=w.device).triu(1)
        return not bool((w[..., above] >= _CAUSAL_THRESHOLD).any())
    above = np.triu(np.ones((n, n), dtype=bool), 1)
    return not np.any(w[..., above] >= _CAUSAL_THRESHOLD)


def _rank_keys(codes, causal, xp):
    """int32 keys [..., Nq, Nk] that rank each row's weights: code·2¹⁶ + (0xFFFF − j), unique per row
    and >= 1 (j < 0xFFFF), so the top k are the largest codes, ties to the smaller key index; 0 above
    a causal diagonal (tril: one pass, no mask)."""
    nk = codes.shape[-1]
    if xp is np:
        keys = codes.astype(np.int32) << 16
        keys |= 0xFFFF - np.arange(nk, dtype=np.int32)  # the low 16 bits are free: | is +
        return np.tril(keys) if causal else keys
    keys = codes.to(xp.int32).bitwise_left_shift_(16)
    keys |= 0xFFFF - xp.arange(nk, dtype=xp.int32, device=codes.device)
    return keys.tril_() if causal else keys


def _top_k_head(codes, k, causal):
    """Per row of one head's codes [Nq, Nk]: (uint16 indices, uint8 codes) [Nq, k] of the k largest."""
    torch = sys.modules.get("torch")  # torch's top-k is several times numpy's; used only if already imported
    if torch is not None and not is_torch(codes):
        codes = torch.from_numpy(np.ascontiguousarray(codes))
    if is_torch(codes):
        top = torch.topk(_rank_keys(codes, causal, torch), k, dim=-1, sorted=True).values
    else:
        keys = _rank_keys(codes, causal, np)
        top = np.take_along_axis(keys, np.argpartition(-keys, k - 1, axis=-1)[..., :k], -1)
        top = -np.sort(-top, axis=-1)
    top = to_host(top).astype(np.int64)
    unused = top <= 0
    index = np.where(unused, _TOPK_PAD, 0xFFFF - (top & 0xFFFF)).astype("<u2")
    return index, np.where(unused, 0, top >> 16).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Attention


@dataclasses.dataclass
class AttentionExample:
    """Stored attention: its header fields and its weights as float32 [L, H, Nq, Nk]."""

    header: dict
    attention: np.ndarray

    @property
    def tokens(self):
        return self.header["tokens"]


@dataclasses.dataclass
class EncodedLayer:
    """One layer's attention as stored: the gzip blob and its header (see `encode_attention_layer`)."""

    blob: bytes
    header: dict


def choose_encoding(num_queries, num_keys, causal, max_dense_tokens=DEFAULT_MAX_DENSE_TOKENS):
    """The encoding of a group: top-k when it has more than max_dense_tokens² query × key pairs."""
    if num_queries * num_keys > max_dense_tokens * max_dense_tokens:
        return ENCODING_TOPK
    return ENCODING_CAUSAL if causal else ENCODING_DENSE


def check_layer(weights, *, layer=0, check_rows=True, sinks=False):
    """Raises ValueError naming the first weight of [H, Nq, Nk] that is no attention weight.

    check_rows: each row must sum to 1, or to at most 1 where the layer has attention sinks (`sinks`:
    a learnt logit per head joins each row's softmax and takes its share of the mass, not stored)."""
    w = as_float32(weights)
    torch_like = is_torch(w)
    xp_any = (lambda t: bool(t.any())) if torch_like else np.any

    def first(bad):
        at = (bad.nonzero()[0] if torch_like else np.argwhere(bad)[0]).tolist()
        return at, int(bad.sum())

    for what, bad in (("NaN or infinite", ~(w.isfinite() if torch_like else np.isfinite(w))), ("negative", w < 0)):
        if xp_any(bad):
            (head, row, col), count = first(bad)
            raise ValueError(
                f"attention has {what} weights ({count} of them; first at layer {layer}, head {head}, "
                f"query {row}, key {col}: {float(w[head, row, col])})"
            )
    top = float(w.max())
    if top > 1.0 + ROW_SUM_TOLERANCE:
        raise ValueError(f"attention has weights above 1 (max {top:.4g}): log probabilities after the softmax")
    if check_rows:
        sums = w.double().sum(-1) if torch_like else w.sum(axis=-1, dtype=np.float64)
        off = (sums - 1.0 > ROW_SUM_TOLERANCE) if sinks else (abs(sums - 1.0) > ROW_SUM_TOLERANCE)
        if xp_any(off):
            (head, row), count = first(off)
            rule = "sum to at most 1 (a layer with attention sinks)" if sinks else "sum to 1"
            raise RowSumError(
                f"attention rows must {rule}: layer {layer}, head {head}, query {row} sums to "
                f"{float(sums[head, row]):.4f} ({count} rows off by more than {ROW_SUM_TOLERANCE}): padding rows, "
                "or weights that are not a softmax over the keys?"
            )


def _layer_payloads(w, encoding, causal, k):
    """The payload byte strings of one layer [H, Nq, Nk] (top-k: indices, then codes)."""
    num_heads, nq, _ = w.shape
    if encoding == ENCODING_TOPK:
        index = np.empty((num_heads, nq, k), dtype="<u2")
        codes = np.empty((num_heads, nq, k), dtype=np.uint8)
        for head in range(num_heads):  # one head at a time bounds the work memory
            index[head], codes[head] = _top_k_head(quantize(w[head]), k, causal)
        return [index.tobytes(), codes.tobytes()]
    if encoding == ENCODING_CAUSAL:
        rows, cols = np.tril_indices(nq)
        if is_torch(w):
            import torch

            rows, cols = torch.from_numpy(rows).to(w.device), torch.from_numpy(cols).to(w.device)
        return [b"".join(to_host(quantize(w[head][rows, cols])).tobytes() for head in range(num_heads))]
    return [b"".join(to_host(quantize(w[head])).tobytes() for head in range(num_heads))]


def encode_attention_layer(
    weights,
    tokens,
    key_tokens=None,
    *,
    layer=0,
    causal=None,
    max_dense_tokens=DEFAULT_MAX_DENSE_TOKENS,
    top_k=DEFAULT_TOP_K,
    check=True,
    check_rows=True,
):
    """One layer's weights [H, Nq, Nk] (numpy, or torch on any device) -> EncodedLayer.

    The blob is exactly what `encode_attention` stores for layer `layer` of a group with the same
    tokens, `causal`, `max_dense_tokens` and `top_k`: capture may encode each layer as it is computed,
    on its device, and hand the EncodedLayers to `summary.write_examples` as the group's attention.
    causal: store the lower triangle only; None decides from this layer alone (the full encoder
    decides from every layer: pass the model's own flag when streaming).
    """
    w = as_float32(weights)
    if w.ndim != 3:
        raise ValueError(f"one layer's attention must be [heads, queries, keys], got shape {list(w.shape)}")
    num_heads, nq, nk = (int(s) for s in w.shape)
    key_tokens = tokens if key_tokens is None else key_tokens
    if len(tokens) != nq or len(key_tokens) != nk:
        raise ValueError(
            f"{len(tokens)} query tokens and {len(key_tokens)} key tokens for attention over "
            f"{nq} queries x {nk} keys; they must match one to one"
        )
    if num_heads == 0 or nq == 0 or nk == 0:
        raise ValueError(f"attention is empty: {num_heads} heads, {nq} queries, {nk} keys")
    if max(nq, nk) > MAX_TOKENS:
        raise ValueError(f"attention over {max(nq, nk)} tokens: at most {MAX_TOKENS} per example can be stored")
    if check:
        check_layer(w, layer=layer, check_rows=check_rows)
    if causal is None:
        causal = is_causal_layer(w)
    elif causal and nq != nk:
        raise ValueError(f"causal attention must be square, got {nq} queries x {nk} keys")
    encoding = choose_encoding(nq, nk, causal, max_dense_tokens)
    header = _attention_header(tokens, key_tokens, layer, 1, num_heads, bool(causal), encoding)
    k = None
    if encoding == ENCODING_TOPK:
        k = header["top_k"] = min(int(top_k), nk)
    payloads = _layer_payloads(w, encoding, bool(causal), k)
    return EncodedLayer(compress(pack(ATTENTION_MAGIC, header, payloads)), header)


def _attention_header(tokens, key_tokens, first_layer, num_layers, num_heads, causal, encoding, **fields):
    return {
        **fields,
        "tokens": [str(t) for t in tokens],
        "key_tokens": [str(t) for t in key_tokens],
        "first_layer": int(first_layer),
        "num_layers": int(num_layers),
        "num_heads": int(num_heads),
        "num_tokens": len(tokens),
        "num_key_tokens": len(key_tokens),
        "causal": bool(causal),
        "quantization": QUANTIZATION,
        "encoding": encoding,
    }


def encode_attention(attention, tokens, key_tokens=None, **options):
    """Encodes float weights [L, H, Nq, Nk] in [0, 1] as ONE gzip attention blob (all layers).

    Options as `encode_attention_with_header`. The writer stores one blob per layer instead
    (`encode_attention_layer`); this form is what `/attention` serves for a whole group.
    """
    return encode_attention_with_header(attention, tokens, key_tokens, **options)[0]


def encode_attention_with_header(
    attention,
    tokens,
    key_tokens=None,
    *,
    causal=None,
    max_dense_tokens=DEFAULT_MAX_DENSE_TOKENS,
    top_k=DEFAULT_TOP_K,
    **fields,
):
    """(gzip attention blob, its header) of float weights [L, H, Nq, Nk] in [0, 1].

    causal: store only the lower triangle; None decides from the weights (lossless either way).
    Groups of more than max_dense_tokens² query × key pairs keep the `top_k` largest weights of each
    row. `fields` (JSON-serialisable) go into the header as they are, e.g. `segments`, `text`.
    """
    a = [as_float32(layer) for layer in attention] if isinstance(attention, (list, tuple)) else as_float32(attention)
    if isinstance(a, list) or a.ndim != 4:
        if isinstance(a, list) and a and all(x.ndim == 3 for x in a):
            pass
        else:
            shape = [len(a)] if isinstance(a, list) else list(a.shape)
            raise ValueError(f"attention must be [layers, heads, queries, keys], got shape {shape}")
    if causal is None:
        causal = all(is_causal_layer(layer) for layer in a)
    layers = [
        encode_attention_layer(
            layer, tokens, key_tokens, layer=i, causal=causal, max_dense_tokens=max_dense_tokens, top_k=top_k,
            check=False,
        )
        for i, layer in enumerate(a)
    ]
    return join_attention_layers([x.blob for x in layers], **fields)


def _attention_sizes(header):
    """(layer payload sizes in bytes, as the payload's parts): [size] or, for top-k, [index, codes]."""
    num_heads, nq, nk = header_sizes(header, "num_heads", "num_tokens", "num_key_tokens")
    encoding = header.get("encoding")
    if encoding == ENCODING_DENSE:
        return [num_heads * nq * nk]
    if encoding == ENCODING_CAUSAL:
        if nq != nk:
            raise FormatError("causal attention of a non-square group")
        return [num_heads * nq * (nq + 1) // 2]
    if encoding == ENCODING_TOPK:
        k = header_sizes(header, "top_k")[0]
        return [2 * num_heads * nq * k, num_heads * nq * k]
    raise FormatError(f"unknown attention encoding {encoding!r}")


def split_attention_layers(blob):
    """(header, per layer a list of payload parts) of an attention blob of any version."""
    header, payload = unpack(decompress(blob), ATTENTION_MAGIC)
    (num_layers,) = header_sizes(header, "num_layers")
    parts = _attention_sizes(header)
    if len(payload) < num_layers * sum(parts):
        raise FormatError(f"attention payload does not match its header ({len(payload)} of {num_layers * sum(parts)} bytes)")
    out, offset = [[] for _ in range(num_layers)], 0
    for size in parts:  # all layers' first part, then all layers' second part (top-k)
        for layer in range(num_layers):
            out[layer].append(bytes(payload[offset : offset + size]))
            offset += size
    return header, out


def join_attention_layers(blobs, **fields):
    """(one gzip blob of every layer, its header) from consecutive layers' blobs of one group."""
    header, layers = None, []
    for blob in blobs:
        part_header, parts = split_attention_layers(blob)
        if header is None:
            header = {**part_header, **fields, "num_layers": 0}
        same = ("tokens", "key_tokens", "num_heads", "causal", "encoding", "top_k")
        if any(part_header.get(k) != header.get(k) for k in same):
            raise FormatError("layers of one group differ in tokens, heads or encoding")
        if part_header["first_layer"] != header["first_layer"] + len(layers):
            raise FormatError(f"layer {part_header['first_layer']} out of order")
        layers.extend(parts)
    if header is None:
        raise ValueError("no layers to join")
    header["num_layers"] = len(layers)
    payloads = [layer[i] for i in range(len(layers[0])) for layer in layers]
    return compress(pack(ATTENTION_MAGIC, header, payloads)), header


def check_attention_blob(blob):
    """The header of an attention blob, after checking that it decompresses (gzip's CRC included)
    and holds the whole payload its header announces: what the binary route may serve as is."""
    header, payload_size = check_gzip(blob, ATTENTION_MAGIC)
    (num_layers,) = header_sizes(header, "num_layers")
    size = num_layers * sum(_attention_sizes(header))
    tokens, key_tokens = header.get("tokens"), header.get("key_tokens", header.get("tokens"))
    if (
        payload_size < size
        or not isinstance(tokens, list)
        or len(tokens) != header["num_tokens"]
        or not isinstance(key_tokens, list)
        or len(key_tokens) != header["num_key_tokens"]
    ):
        raise FormatError(f"attention payload or tokens do not match the header ({payload_size} of {size} bytes)")
    if header.get("encoding") == ENCODING_TOPK:  # the binary route serves what the JSON route decodes: the same check
        num_heads, nq, nk, k = header_sizes(header, "num_heads", "num_tokens", "num_key_tokens", "top_k")
        count = num_layers * num_heads * nq * k  # the key indices come first in the payload
        index = np.frombuffer(payload_prefix(blob, ATTENTION_MAGIC, 2 * count), "<u2", count=count)
        if ((index != _TOPK_PAD) & (index >= nk)).any():
            raise FormatError("top-k index beyond the last key")
    return header


def decode_attention(blob, *, layer=None, head=None):
    """The inverse of `encode_attention` (and of `encode_attention_layer`), to within
    MAX_QUANTIZATION_ERROR per weight: float32 [L, H, Nq, Nk].

    `layer` and/or `head` decode only that layer or head and drop its axis (e.g. [Nq, Nk] with both);
    `layer` counts within the blob. An index out of range raises IndexError naming it.
    """
    header, payload = unpack(decompress(blob), ATTENTION_MAGIC)
    try:
        num_layers, num_heads, nq, nk = header_sizes(header, "num_layers", "num_heads", "num_tokens", "num_key_tokens")
        encoding = header["encoding"]
        for name, index, size in (("layer", layer, num_layers), ("head", head, num_heads)):
            if index is not None and not 0 <= index < size:
                raise IndexError(f"{name} {index} does not exist: the example has {size} {name}s")
        layers = slice(None) if layer is None else slice(layer, layer + 1)
        heads = slice(None) if head is None else slice(head, head + 1)

        def select(flat, *row_shape):  # [L, H, ...] view of the payload -> the layers and heads asked for
            return flat.reshape(num_layers, num_heads, *row_shape)[layers, heads]

        if encoding == ENCODING_DENSE:
            codes = select(np.frombuffer(payload, np.uint8, count=num_layers * num_heads * nq * nk), nq, nk)
            out = dequantize(codes)
        elif encoding == ENCODING_CAUSAL:
            if nq != nk:
                raise FormatError("causal attention of a non-square group")
            rows, cols = np.tril_indices(nq)
            codes = select(np.frombuffer(payload, np.uint8, count=num_layers * num_heads * rows.size), rows.size)
            out = np.zeros((*codes.shape[:2], nq, nk), dtype=np.float32)
            out[:, :, rows, cols] = dequantize(codes)
        elif encoding == ENCODING_TOPK:
            k = header["top_k"]
            count = num_layers * num_heads * nq * k
            index = select(np.frombuffer(payload, "<u2", count=count), nq, k)
            codes = select(np.frombuffer(payload, np.uint8, count=count, offset=2 * count), nq, k)
            used = index != _TOPK_PAD
            if np.any(index[used] >= nk):
                raise FormatError("top-k index beyond the last key")
            out = np.zeros((*index.shape[:2], nq, nk), dtype=np.float32)
            ll, hh, ii, _ = np.nonzero(used)
            out[ll, hh, ii, index[used]] = dequantize(codes[used])
        else:
            raise FormatError(f"unknown attention encoding {encoding!r}")
    except (KeyError, TypeError) as e:
        raise FormatError(f"attention header lacks {e}") from None
    except ValueError as e:  # frombuffer on a short payload
        raise FormatError(f"attention payload does not match its header: {e}") from None
    if layer is not None:
        out = out[0]
    if head is not None:
        out = out[:, 0] if layer is None else out[0]
    return AttentionExample(header, out)


def attention_layer_blob(blob, layer):
    """The blob of layer `layer` (counted within `blob`) of a several-layer attention blob."""
    header, layers = split_attention_layers(blob)
    if not 0 <= layer < len(layers):
        raise IndexError(f"layer {layer} does not exist: the example has {len(layers)} layers")
    header = {**header, "num_layers": 1, "first_layer": header["first_layer"] + layer}
    return compress(pack(ATTENTION_MAGIC, header, layers[layer]))
