"""Blob encodings of the storage format: gzip, sqrt-u8 quantisation, dense/causal/top-k attention, q/k."""

# Imports numpy and the standard library only (the TensorBoard backend uses it). The writer's
# encoders also take torch tensors, recognised by duck typing: a tensor is quantised and reduced on
# its own device and only the bytes to store are copied to the host. The numpy and torch paths give
# the same bytes: IEEE float32 sqrt, multiply and round-half-even agree, and top-k ranks unique
# integer keys (see _rank_keys), so no tie is left to an implementation's order.

import dataclasses
import gzip
import json
import struct
import sys
import zlib

import numpy as np

from tb_attention.schema import FORMAT_VERSION, SCORING_RULES, FormatError, NewerFormatError

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

_ATTENTION_MAGIC = b"TBAT"
_QK_MAGIC = b"TBQK"
_HEADER = struct.Struct("<4sII")  # magic, format version, header length in bytes
_ALIGN = 8  # payload offset alignment in bytes, so typed-array views need no copy

# Huffman-only deflate: attention bytes have a skewed distribution but few repeats, so string
# matching buys ~5 % of size at twice the time. Any gzip decoder (browsers included) reads it.
_GZIP_WBITS = 31
_GZIP_LEVEL = 6


# ---------------------------------------------------------------------------------------------
# Compression


def compress(raw):
    """gzip bytes: stored as is and served with Content-Encoding: gzip."""
    c = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS, 9, zlib.Z_HUFFMAN_ONLY)
    return c.compress(raw) + c.flush()


def decompress(blob):
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:
        raise FormatError(f"blob is not valid gzip: {e}") from None


def encode_json(obj):
    return compress(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def decode_json(blob):
    try:
        return json.loads(decompress(blob).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"blob is not gzip JSON: {e}") from None


# ---------------------------------------------------------------------------------------------
# Quantisation, on numpy arrays or on torch tensors where they live


def _is_torch(x):
    return hasattr(x, "detach") and hasattr(x, "device")


def _float32(x):
    """x as float32, a torch tensor staying on its device."""
    if _is_torch(x):
        x = x.detach()
        return x if x.dtype.is_floating_point and x.dtype.itemsize == 4 else x.float()
    return np.asarray(x, dtype=np.float32)


def _host(x):
    """A torch tensor or numpy array as a C-contiguous numpy array."""
    if _is_torch(x):
        x = x.cpu().numpy()
    return np.ascontiguousarray(x)


def quantize(weights):
    """float weights in [0, 1] -> uint8 on the square-root scale (see QUANTIZATION); torch stays torch."""
    w = _float32(weights)
    if _is_torch(w):
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
    w = _float32(weights)
    n, m = w.shape[-2:]
    if n != m:
        return False
    if _is_torch(w):
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
    if torch is not None and not _is_torch(codes):
        codes = torch.from_numpy(np.ascontiguousarray(codes))
    if _is_torch(codes):
        top = torch.topk(_rank_keys(codes, causal, torch), k, dim=-1, sorted=True).values
    else:
        keys = _rank_keys(codes, causal, np)
        top = np.take_along_axis(keys, np.argpartition(-keys, k - 1, axis=-1)[..., :k], -1)
        top = -np.sort(-top, axis=-1)
    top = _host(top).astype(np.int64)
    unused = top <= 0
    index = np.where(unused, _TOPK_PAD, 0xFFFF - (top & 0xFFFF)).astype("<u2")
    return index, np.where(unused, 0, top >> 16).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Blobs with a JSON header and a binary payload


def _pack(magic, header, payloads):
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    head += b" " * (-(_HEADER.size + len(head)) % _ALIGN)  # pad so the payload is aligned
    return b"".join([_HEADER.pack(magic, FORMAT_VERSION, len(head)), head, *payloads])


def _unpack(raw, magic):
    if len(raw) < _HEADER.size:
        raise FormatError("blob is shorter than its header")
    found, version, head_len = _HEADER.unpack_from(raw)
    if found != magic:
        raise FormatError(f"blob starts with {found!r}, expected {magic!r}")
    if version > FORMAT_VERSION:
        raise NewerFormatError(f"blob of storage format v{version}; this tb-attention reads up to v{FORMAT_VERSION}")
    end = _HEADER.size + head_len
    if end > len(raw):
        raise FormatError("blob header runs past its end")
    try:
        header = json.loads(raw[_HEADER.size : end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"blob header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise FormatError("blob header is not a JSON object")
    header.setdefault("num_key_tokens", header.get("num_tokens"))  # v1: square
    header.setdefault("first_layer", 0)
    return header, memoryview(raw)[end:]


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


def check_layer(weights, *, layer=0, check_rows=True):
    """Raises ValueError naming the first weight of [H, Nq, Nk] that is no attention weight."""
    w = _float32(weights)
    torch_like = _is_torch(w)
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
        off = abs(sums - 1.0) > ROW_SUM_TOLERANCE
        if xp_any(off):
            (head, row), count = first(off)
            raise ValueError(
                f"attention rows must sum to 1: layer {layer}, head {head}, query {row} sums to "
                f"{float(sums[head, row]):.4f} ({count} rows off by more than {ROW_SUM_TOLERANCE}). "
                "Padding rows? Pass attention_mask, or unpadded attention per input; "
                "pass check_rows=False for attention that is not a softmax"
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
        if _is_torch(w):
            import torch

            rows, cols = torch.from_numpy(rows).to(w.device), torch.from_numpy(cols).to(w.device)
        return [b"".join(_host(quantize(w[head][rows, cols])).tobytes() for head in range(num_heads))]
    return [b"".join(_host(quantize(w[head])).tobytes() for head in range(num_heads))]


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
    w = _float32(weights)
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
    return EncodedLayer(compress(_pack(_ATTENTION_MAGIC, header, payloads)), header)


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
    a = [_float32(layer) for layer in attention] if isinstance(attention, (list, tuple)) else _float32(attention)
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
    num_heads, nq, nk = _sizes(header, "num_heads", "num_tokens", "num_key_tokens")
    encoding = header.get("encoding")
    if encoding == ENCODING_DENSE:
        return [num_heads * nq * nk]
    if encoding == ENCODING_CAUSAL:
        if nq != nk:
            raise FormatError("causal attention of a non-square group")
        return [num_heads * nq * (nq + 1) // 2]
    if encoding == ENCODING_TOPK:
        k = _sizes(header, "top_k")[0]
        return [2 * num_heads * nq * k, num_heads * nq * k]
    raise FormatError(f"unknown attention encoding {encoding!r}")


def split_attention_layers(blob):
    """(header, per layer a list of payload parts) of an attention blob of any version."""
    header, payload = _unpack(decompress(blob), _ATTENTION_MAGIC)
    (num_layers,) = _sizes(header, "num_layers")
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
    return compress(_pack(_ATTENTION_MAGIC, header, payloads)), header


def _sizes(header, *names):
    values = [header.get(name) for name in names]
    bad = [n for n, v in zip(names, values) if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        raise FormatError(f"header field {bad[0]!r} is not a non-negative integer")
    return values


_CHECK_CHUNK = 1 << 18  # bytes of decompressed data held at once while checking a blob


def _check_gzip(blob, magic):
    """(header, payload length) of a gzip blob, checked to its end (gzip's CRC included) while holding
    at most _CHECK_CHUNK decompressed bytes beyond the header: checking a long example costs no copy."""
    inflate = zlib.decompressobj(_GZIP_WBITS)
    prefix, header, end, size, data = b"", None, None, 0, blob
    try:
        while not inflate.eof:
            chunk = inflate.decompress(data, _CHECK_CHUNK)
            if not chunk and inflate.unconsumed_tail == data:  # no progress: the input ended early
                break
            data = inflate.unconsumed_tail
            if header is not None:
                size += len(chunk)
                continue
            prefix += chunk
            if end is None and len(prefix) >= _HEADER.size:
                end = _HEADER.size + _HEADER.unpack_from(prefix)[2]
            if end is not None and len(prefix) >= end:
                header, payload = _unpack(prefix, magic)
                prefix, size = None, len(payload)
    except zlib.error as e:
        raise FormatError(f"blob is not valid gzip: {e}") from None
    if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
        raise FormatError("blob is not valid gzip: it ends early or has data after its end")
    if header is None:
        header, payload = _unpack(prefix, magic)  # raises, naming what is missing
    return header, size


def check_attention_blob(blob):
    """The header of an attention blob, after checking that it decompresses (gzip's CRC included)
    and holds the whole payload its header announces: what the binary route may serve as is."""
    header, payload_size = _check_gzip(blob, _ATTENTION_MAGIC)
    (num_layers,) = _sizes(header, "num_layers")
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
    return header


def decode_attention(blob, *, layer=None, head=None):
    """The inverse of `encode_attention` (and of `encode_attention_layer`), to within
    MAX_QUANTIZATION_ERROR per weight: float32 [L, H, Nq, Nk].

    `layer` and/or `head` decode only that layer or head and drop its axis (e.g. [Nq, Nk] with both);
    `layer` counts within the blob. An index out of range raises IndexError naming it.
    """
    header, payload = _unpack(decompress(blob), _ATTENTION_MAGIC)
    try:
        num_layers, num_heads, nq, nk = _sizes(header, "num_layers", "num_heads", "num_tokens", "num_key_tokens")
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


def _scoring_rule(name, values, num_layers, num_heads):
    """One rule, checked: a list of one entry per layer, or None when no layer uses it."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != num_layers:
        raise ValueError(f"{name} must have one entry per layer ({num_layers}), got {values!r:.80}")
    checked = []
    for layer, value in enumerate(values):
        if value is None:
            checked.append(None)
        elif name == "sinks":
            sinks = np.asarray(_host(_float32(value)), dtype=np.float64).reshape(-1)
            if sinks.shape != (num_heads,) or not np.isfinite(sinks).all():
                raise ValueError(f"sinks of layer {layer} must be {num_heads} finite numbers, one per head")
            checked.append([float(x) for x in sinks])
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if not number > 0 or not np.isfinite(number) or (name == "sliding_window" and number != int(number)):
                kind = "a positive integer" if name == "sliding_window" else "a positive number"
                raise ValueError(f"{name} of layer {layer} must be {kind} or None, got {value!r}")
            checked.append(int(number) if name == "sliding_window" else number)
    return checked if any(v is not None for v in checked) else None


def _float16_bytes(x):
    """float16 little-endian bytes of x, clipped to float16's range; torch converts on its device."""
    fp16_max = float(np.finfo(np.float16).max)
    x = _float32(x)
    if _is_torch(x):
        import torch

        return _host(x.clamp(-fp16_max, fp16_max).to(torch.float16)).astype("<f2").tobytes()
    return np.clip(x, -fp16_max, fp16_max).astype("<f2").tobytes()


def encode_qk(query, key, scaling, *, softcap=None, sliding_window=None, sinks=None, first_layer=0, **fields):
    """Encodes query [L, H, Nq, d] and key [L, H_kv, Nk, d] as float16, with each layer's scaling
    and, where the model uses them, its other SCORING_RULES (one entry per layer, None for none).
    Numpy or torch on any device; a one-layer call (L = 1) is what the writer stores per layer."""
    q, k = _float32(query), _float32(key)
    if q.ndim != 4 or k.ndim != 4 or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"query {tuple(q.shape)} and key {tuple(k.shape)} must be [L, H, Nq, d] and [L, H_kv, Nk, d]")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {k.shape[1]} key heads")
    num_layers, num_heads = int(q.shape[0]), int(q.shape[1])
    scaling = [float(s) for s in np.broadcast_to(np.asarray(scaling, dtype=np.float64), (num_layers,))]
    rules = {"softcap": softcap, "sliding_window": sliding_window, "sinks": sinks}
    rules = {name: _scoring_rule(name, values, num_layers, num_heads) for name, values in rules.items()}
    header = {
        **fields,
        "first_layer": int(first_layer),
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": int(k.shape[1]),
        "num_tokens": int(q.shape[2]),
        "num_key_tokens": int(k.shape[2]),
        "head_dim": int(q.shape[3]),
        "dtype": "float16",
        "scaling": scaling,
        **{name: values for name, values in rules.items() if values is not None},
    }
    return compress(_pack(_QK_MAGIC, header, [_float16_bytes(q), _float16_bytes(k)]))


def encode_qk_layer(query, key, scaling, *, layer=0, softcap=None, sliding_window=None, sinks=None):
    """One layer's query [H, Nq, d] and key [H_kv, Nk, d] (numpy or torch on any device) -> the blob
    the writer stores for layer `layer`; softcap/sliding_window/sinks are this layer's values (or None)."""
    per_layer = lambda v: None if v is None else [v]  # noqa: E731
    return encode_qk(
        _float32(query)[None], _float32(key)[None], [scaling], softcap=per_layer(softcap),
        sliding_window=per_layer(sliding_window), sinks=per_layer(sinks), first_layer=layer,
    )


def _qk_header_sizes(header):
    num_layers, num_heads, num_kv_heads, nq, d = _sizes(header, "num_layers", "num_heads", "num_kv_heads", "num_tokens", "head_dim")
    (nk,) = _sizes(header, "num_key_tokens")
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise FormatError(f"{num_heads} query heads over {num_kv_heads} key heads")
    return num_layers, num_heads, num_kv_heads, nq, nk, d


def check_qk_blob(blob):
    """The header of a query/key blob, after checking that it decompresses and is complete."""
    header, payload_size = _check_gzip(blob, _QK_MAGIC)
    num_layers, num_heads, num_kv_heads, nq, nk, d = _qk_header_sizes(header)
    size = 2 * num_layers * (num_heads * nq + num_kv_heads * nk) * d
    if payload_size < size:
        raise FormatError(f"query/key payload does not match its header ({payload_size} of {size} bytes)")
    return header


def decode_qk(blob):
    header, payload = _unpack(decompress(blob), _QK_MAGIC)
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


def attention_layer_blob(blob, layer):
    """The blob of layer `layer` (counted within `blob`) of a several-layer attention blob."""
    header, layers = split_attention_layers(blob)
    if not 0 <= layer < len(layers):
        raise IndexError(f"layer {layer} does not exist: the example has {len(layers)} layers")
    header = {**header, "num_layers": 1, "first_layer": header["first_layer"] + layer}
    return compress(_pack(_ATTENTION_MAGIC, header, layers[layer]))


def qk_layer_blob(blob, layer):
    """The q/k blob of layer `layer` (counted within `blob`) of a several-layer q/k blob."""
    qk = decode_qk(blob)
    if not 0 <= layer < qk.header["num_layers"]:
        raise IndexError(f"layer {layer} does not exist: the example has {qk.header['num_layers']} layers")
    rules = {name: [qk.rule(name)[layer]] for name in SCORING_RULES}
    rules = {name: values if values[0] is not None else None for name, values in rules.items()}
    return encode_qk(qk.query[layer : layer + 1], qk.key[layer : layer + 1], [qk.scaling[layer]],
                     first_layer=qk.header["first_layer"] + layer, **rules)
