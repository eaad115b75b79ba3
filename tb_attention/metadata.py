"""The storage format of the attention plugin: names, versioned plugin data, blob encodings."""

# This is the one module that defines what tb-attention writes into event files. The writer
# (summary.py), the backend (plugin.py) and the tests all go through it. It imports numpy and
# the standard library only, so the TensorBoard backend can use it without torch.

import dataclasses
import gzip
import json
import struct
import zlib

import numpy as np

PLUGIN_NAME = "attention"
FORMAT_VERSION = 1  # bump when a reader of the previous version could not read new data

# Kinds of summary, stored in the plugin data of every tag.
KIND_ATTENTION = "attention"  # blob sequence: [manifest, attention blobs..., q/k blobs...]
KIND_METRIC = "metric"  # float32 [L, H] tensor
KIND_EXEMPLARS = "exemplars"  # blob sequence: [exemplar table]

# Per-head metrics (DESIGN.md section 4). A metric tag is "<tag>/<metric>".
METRICS = ("entropy", "distance", "null_attention", "dependency_alignment", "variability", "previous_token")
POS_PREFIX = "pos/"  # pos/<UPOS>: share of attention received by tokens of that tag
POS_FROM_PREFIX = "pos_from/"  # pos_from/<UPOS>: share of attention paid by tokens of that tag
EXEMPLARS_SUFFIX = "exemplars"

# Attention weights are stored as one byte each: b = round(255 * sqrt(a)), a' = (b / 255) ** 2.
# |sqrt(a) - b/255| <= 1/510, so |a - a'| <= (1/510) * (2 sqrt(a) + 1/510) <= MAX_QUANTIZATION_ERROR,
# and the error relative to a is at most ~2 / (510 sqrt(a)) (4 % at a = 0.01): small weights keep
# their shape, which a linear byte scale would flatten to 0, 1 or 2.
QUANTIZATION = "sqrt-u8"
MAX_QUANTIZATION_ERROR = 2.0 / 510 + 1.0 / 510**2  # absolute, per weight in [0, 1]

# Inputs longer than this are stored sparsely: the top-k weights of each row.
DEFAULT_MAX_DENSE_TOKENS = 512  # tokens
DEFAULT_TOP_K = 32  # weights kept per row in the sparse encoding
_TOPK_PAD = 0xFFFF  # index of an unused slot in a sparse row (rows shorter than k)
MAX_TOKENS = 0xFFFF  # per example: sparse indices are uint16

ENCODING_DENSE = "dense"  # [L, H, N, N] bytes
ENCODING_CAUSAL = "causal"  # lower triangle of each head, row by row: N (N + 1) / 2 bytes per head
ENCODING_TOPK = "topk"  # uint16 indices [L, H, N, k], then bytes [L, H, N, k]

_ATTENTION_MAGIC = b"TBAT"
_QK_MAGIC = b"TBQK"
_HEADER = struct.Struct("<4sII")  # magic, format version, header length in bytes
_ALIGN = 8  # payload offset alignment in bytes, so typed-array views need no copy

# Huffman-only deflate: attention bytes have a skewed distribution but few repeats, so string
# matching buys ~5 % of size at twice the time. Any gzip decoder (browsers included) reads it.
_GZIP_WBITS = 31
_GZIP_LEVEL = 6


class FormatError(ValueError):
    """Stored data that this version of tb-attention cannot read."""


class NewerFormatError(FormatError):
    """Data written by a newer tb-attention than the one installed."""


# ---------------------------------------------------------------------------------------------
# Tags and plugin data


def metric_tag(tag, metric):
    """The tag under which `metric` of probe `tag` is stored, e.g. `probe/entropy`."""
    return f"{tag}/{metric}"


def exemplars_tag(tag):
    return f"{tag}/{EXEMPLARS_SUFFIX}"


def is_known_metric(metric):
    return metric in METRICS or (
        metric.startswith((POS_PREFIX, POS_FROM_PREFIX)) and metric.count("/") == 1 and not metric.endswith("/")
    )


def create_plugin_data(kind, **fields):
    """The `plugin_data.content` bytes of a summary of `kind` (frozen at a tag's first event)."""
    if kind not in (KIND_ATTENTION, KIND_METRIC, KIND_EXEMPLARS):
        raise ValueError(f"unknown summary kind {kind!r}")
    return json.dumps({"version": FORMAT_VERSION, "kind": kind, **fields}, sort_keys=True).encode("utf-8")


def parse_plugin_data(content):
    """Parses `plugin_data.content`; raises FormatError for unreadable or newer data."""
    try:
        data = json.loads(bytes(content).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"plugin data is not tb-attention JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("version"), int) or not isinstance(data.get("kind"), str):
        raise FormatError("plugin data lacks an integer 'version' and a string 'kind'")
    if data["version"] > FORMAT_VERSION:
        raise NewerFormatError(
            f"written by a newer tb-attention (storage format v{data['version']}; this one reads up to "
            f"v{FORMAT_VERSION}): upgrade tb-attention to view it"
        )
    return data


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
# Quantisation


def quantize(weights):
    """float weights in [0, 1] -> uint8 on the square-root scale (see QUANTIZATION)."""
    w = np.clip(np.asarray(weights, dtype=np.float32), 0.0, 1.0)
    return np.rint(np.sqrt(w) * 255.0).astype(np.uint8)


_DEQUANTIZE_TABLE = (np.arange(256, dtype=np.float32) / 255.0) ** 2


def dequantize(codes):
    return _DEQUANTIZE_TABLE[np.asarray(codes, dtype=np.uint8)]


def _is_causal(attention):
    """True when every weight above the diagonal quantises to zero."""
    n = attention.shape[-1]
    above = np.triu(np.ones((n, n), dtype=bool), 1)
    threshold = (0.5 / 255.0) ** 2
    return all(not np.any(layer[:, above] >= threshold) for layer in attention)


def _top_k_rows(attention, k, causal):
    """Per row, the k largest weights (descending) and their indices; unused slots are padded."""
    num_layers, num_heads, n, _ = attention.shape
    index = np.empty((num_layers, num_heads, n, k), dtype="<u2")
    codes = np.empty((num_layers, num_heads, n, k), dtype=np.uint8)
    above = np.triu(np.ones((n, n), dtype=bool), 1)
    for layer in range(num_layers):  # one layer at a time bounds memory for long inputs
        a = attention[layer]
        if causal:  # a row attends only to itself and before: rank those first
            a = np.where(above, -1.0, a)
        top = np.argpartition(-a, k - 1, axis=-1)[..., :k]
        values = np.take_along_axis(a, top, axis=-1)
        order = np.argsort(-values, axis=-1, kind="stable")
        top = np.take_along_axis(top, order, axis=-1)
        values = np.take_along_axis(values, order, axis=-1)
        unused = values < 0
        index[layer] = np.where(unused, _TOPK_PAD, top)
        codes[layer] = np.where(unused, 0, quantize(values))
    return index, codes


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
    return header, memoryview(raw)[end:]


@dataclasses.dataclass
class AttentionExample:
    """One stored example: its header fields and its weights as float32 [L, H, N, N]."""

    header: dict
    attention: np.ndarray

    @property
    def tokens(self):
        return self.header["tokens"]


def encode_attention(attention, tokens, **options):
    """Encodes float weights [L, H, N, N] in [0, 1] and N tokens as a gzip attention blob.

    Options as `encode_attention_with_header`.
    """
    return encode_attention_with_header(attention, tokens, **options)[0]


def encode_attention_with_header(
    attention,
    tokens,
    *,
    causal=None,
    max_dense_tokens=DEFAULT_MAX_DENSE_TOKENS,
    top_k=DEFAULT_TOP_K,
    **fields,
):
    """(gzip attention blob, its header) of float weights [L, H, N, N] in [0, 1] and N tokens.

    causal: store only the lower triangle; None decides from the weights (lossless either way).
    Inputs longer than `max_dense_tokens` keep the `top_k` largest weights of each row.
    `fields` (JSON-serialisable) go into the header as they are, e.g. `segments`, `text`.
    """
    a = np.asarray(attention, dtype=np.float32)
    if a.ndim != 4 or a.shape[2] != a.shape[3]:
        raise ValueError(f"attention must be [layers, heads, tokens, tokens], got shape {a.shape}")
    num_layers, num_heads, n, _ = a.shape
    if len(tokens) != n:
        raise ValueError(f"{len(tokens)} tokens for attention over {n} positions")
    if causal is None:
        causal = _is_causal(a)
    header = {
        **fields,
        "tokens": [str(t) for t in tokens],
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_tokens": n,
        "causal": bool(causal),
        "quantization": QUANTIZATION,
    }
    if n > max_dense_tokens:
        if n > MAX_TOKENS:
            raise ValueError(f"{n} tokens: at most {MAX_TOKENS} can be stored")
        k = min(top_k, n)
        index, codes = _top_k_rows(a, k, causal)
        header.update(encoding=ENCODING_TOPK, top_k=k)
        payloads = [index.tobytes(), codes.tobytes()]
    elif causal:
        rows, cols = np.tril_indices(n)
        header["encoding"] = ENCODING_CAUSAL
        payloads = [quantize(a[:, :, rows, cols]).tobytes()]
    else:
        header["encoding"] = ENCODING_DENSE
        payloads = [quantize(a).tobytes()]
    return compress(_pack(_ATTENTION_MAGIC, header, payloads)), header


def decode_attention_header(blob):
    return _unpack(decompress(blob), _ATTENTION_MAGIC)[0]


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
    num_layers, num_heads, n = _sizes(header, "num_layers", "num_heads", "num_tokens")
    encoding = header.get("encoding")
    if encoding == ENCODING_DENSE:
        size = num_layers * num_heads * n * n
    elif encoding == ENCODING_CAUSAL:
        size = num_layers * num_heads * n * (n + 1) // 2
    elif encoding == ENCODING_TOPK:
        size = 3 * num_layers * num_heads * n * _sizes(header, "top_k")[0]
    else:
        raise FormatError(f"unknown attention encoding {encoding!r}")
    if payload_size < size or not isinstance(header.get("tokens"), list) or len(header["tokens"]) != n:
        raise FormatError(f"attention payload or tokens do not match the header ({payload_size} of {size} bytes)")
    return header


def decode_attention(blob, *, layer=None, head=None):
    """The inverse of `encode_attention`, to within MAX_QUANTIZATION_ERROR per weight.

    `layer` and/or `head` decode only that layer or head and drop its axis (e.g. [N, N] with both):
    one head of a 12 x 12 example costs 1/144 of the memory and time. An index out of range raises
    IndexError naming it.
    """
    header, payload = _unpack(decompress(blob), _ATTENTION_MAGIC)
    try:
        num_layers, num_heads, n = header["num_layers"], header["num_heads"], header["num_tokens"]
        encoding = header["encoding"]
        for name, index, size in (("layer", layer, num_layers), ("head", head, num_heads)):
            if index is not None and not 0 <= index < size:
                raise IndexError(f"{name} {index} does not exist: the example has {size} {name}s")
        layers = slice(None) if layer is None else slice(layer, layer + 1)
        heads = slice(None) if head is None else slice(head, head + 1)

        def select(flat, *row_shape):  # [L, H, ...] view of the payload -> the layers and heads asked for
            return flat.reshape(num_layers, num_heads, *row_shape)[layers, heads]

        if encoding == ENCODING_DENSE:
            codes = select(np.frombuffer(payload, np.uint8, count=num_layers * num_heads * n * n), n, n)
            out = dequantize(codes)
        elif encoding == ENCODING_CAUSAL:
            rows, cols = np.tril_indices(n)
            codes = select(np.frombuffer(payload, np.uint8, count=num_layers * num_heads * rows.size), rows.size)
            out = np.zeros((*codes.shape[:2], n, n), dtype=np.float32)
            out[:, :, rows, cols] = dequantize(codes)
        elif encoding == ENCODING_TOPK:
            k = header["top_k"]
            count = num_layers * num_heads * n * k
            index = select(np.frombuffer(payload, "<u2", count=count), n, k)
            codes = select(np.frombuffer(payload, np.uint8, count=count, offset=2 * count), n, k)
            out = np.zeros((*index.shape[:2], n, n), dtype=np.float32)
            used = index != _TOPK_PAD
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
    """Query [L, H, N, d] and key [L, H_kv, N, d] vectors, as the model used them."""

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


# How a layer turns scaled q·k into weights besides the causal mask; each is optional, per layer,
# null where a layer does not use it. The weights of query i over keys j are
#   x_j = scaling · q_i·k_j;  x_j = softcap · tanh(x_j / softcap);  x_j = -inf if j > i (causal) or
#   |i - j| >= sliding_window (as transformers' window masks, causal and bidirectional);  softmax
#   over the x_j and, when the head has one, its sink logit (which takes its share of the softmax and
#   is then dropped, so the row sums to less than 1).
SCORING_RULES = ("softcap", "sliding_window", "sinks")


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
            sinks = np.asarray(value, dtype=np.float64).reshape(-1)
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


def encode_qk(query, key, scaling, *, softcap=None, sliding_window=None, sinks=None, **fields):
    """Encodes query [L, H, N, d] and key [L, H_kv, N, d] as float16, with each layer's scaling
    and, where the model uses them, its other SCORING_RULES (one entry per layer, None for none)."""
    q = np.asarray(query, dtype=np.float32)
    k = np.asarray(key, dtype=np.float32)
    if q.ndim != 4 or k.ndim != 4 or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"query {q.shape} and key {k.shape} must be [L, H, N, d] and [L, H_kv, N, d]")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {k.shape[1]} key heads")
    scaling = [float(s) for s in np.broadcast_to(np.asarray(scaling, dtype=np.float64), (q.shape[0],))]
    rules = {"softcap": softcap, "sliding_window": sliding_window, "sinks": sinks}
    rules = {name: _scoring_rule(name, values, q.shape[0], q.shape[1]) for name, values in rules.items()}
    fp16_max = float(np.finfo(np.float16).max)
    header = {
        **fields,
        "num_layers": q.shape[0],
        "num_heads": q.shape[1],
        "num_kv_heads": k.shape[1],
        "num_tokens": q.shape[2],
        "head_dim": q.shape[3],
        "dtype": "float16",
        "scaling": scaling,
        **{name: values for name, values in rules.items() if values is not None},
    }
    payloads = [np.clip(x, -fp16_max, fp16_max).astype("<f2").tobytes() for x in (q, k)]
    return compress(_pack(_QK_MAGIC, header, payloads))


def check_qk_blob(blob):
    """The header of a query/key blob, after checking that it decompresses and is complete."""
    header, payload_size = _check_gzip(blob, _QK_MAGIC)
    num_layers, num_heads, num_kv_heads, n, d = _sizes(
        header, "num_layers", "num_heads", "num_kv_heads", "num_tokens", "head_dim"
    )
    size = 2 * num_layers * (num_heads + num_kv_heads) * n * d
    if payload_size < size or num_kv_heads == 0 or num_heads % num_kv_heads:
        raise FormatError(f"query/key payload does not match its header ({payload_size} of {size} bytes)")
    return header


def decode_qk(blob):
    header, payload = _unpack(decompress(blob), _QK_MAGIC)
    try:
        num_layers, n, d = header["num_layers"], header["num_tokens"], header["head_dim"]
        q_shape = (num_layers, header["num_heads"], n, d)
        k_shape = (num_layers, header["num_kv_heads"], n, d)
        q_count = int(np.prod(q_shape))
        query = np.frombuffer(payload, "<f2", count=q_count).reshape(q_shape).astype(np.float32)
        key = np.frombuffer(payload, "<f2", count=int(np.prod(k_shape)), offset=2 * q_count)
    except (KeyError, TypeError) as e:
        raise FormatError(f"query/key header lacks {e}") from None
    except ValueError as e:
        raise FormatError(f"query/key payload does not match its header: {e}") from None
    return QueryKey(header, query, key.reshape(k_shape).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# The manifest: blob 0 of an attention summary


def create_manifest(examples):
    """examples: one dict per example (tokens, num_layers, ...). Blob layout: [manifest,
    attention_0 .. attention_{E-1}, then one q/k blob for each example that has one]."""
    manifest, next_qk = [], 1 + len(examples)
    for index, example in enumerate(examples):
        entry = {**example, "index": index, "attention_blob": 1 + index, "qk_blob": None}
        if example.get("has_qk"):
            entry["qk_blob"] = next_qk
            next_qk += 1
        manifest.append(entry)
    return {"version": FORMAT_VERSION, "examples": manifest}


def parse_manifest(blob):
    manifest = decode_json(blob)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("examples"), list):
        raise FormatError("attention manifest lacks its 'examples' list")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise NewerFormatError(f"manifest of storage format v{manifest['version']}")
    return manifest
