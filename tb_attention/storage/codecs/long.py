"""Long examples (http_api.md, "Long examples"): the storage plan, top-k rows, block levels and profiles as blobs."""

# Nothing here is N × N: a layer arrives as its top-k rows, its pooled levels and its profile (capture
# computes them in query chunks), and each blob holds O(N·k) or one level's cells. numpy only.

import dataclasses
import struct
import zlib

import numpy as np

from tb_attention.storage import schema
from tb_attention.storage.codecs.attention import ROW_SUM_TOLERANCE, dequantize, quantize
from tb_attention.storage.codecs.blob import MAX_HEADER_BYTES, compress, decompress, header_sizes, pack, unpack
from tb_attention.storage.schema import FormatError

DEFAULT_LONG_TOKENS = 2048  # a group with more queries than this takes the long path
DEFAULT_LONG_BUDGET = 256 << 20  # bytes per example before compression
DEFAULT_LONG_TOP_K = 16  # keys kept per query row
DEFAULT_SINK_TOKENS = 4  # first keys whose mass is kept per head
ROW_CHUNK = 4096  # queries per rows blob
UNUSED = 0xFFFFFFFF  # index of an unused top-k slot
MAX_LONG_TOKENS = schema.MAX_LONG_GROUP_TOKENS  # queries or keys per long group
LOCAL_BINS = 8  # profile bins 0–7 hold distances d ≤ 127: local_share (http_api.md, "Metrics of long inputs")
COARSEST_CELLS = 512  # cells a side of the coarsest level, at most (before the budget grows its block)

LONG_MAGIC = b"TBLG"  # stored blobs: rows, level, profile
MAP_MAGIC = b"TBLM"  # /long_map answers
ROWS_MAGIC = b"TBLR"  # /long_rows answers
LONG_VERSION = 1  # framing version of the three magics above

_FRAME = struct.Struct("<4sII")  # magic, version, header length (codecs.blob's framing)
_INDEX = np.dtype("<u4")
_FLOAT = np.dtype("<f4")


@dataclasses.dataclass(frozen=True)
class LongPlan:
    """What a long group stores (http_api.md, "Storage budget"); `plan` makes it."""

    top_k: int
    levels: tuple  # ((block, rows, cols), ...) coarsest first
    sink_tokens: int
    distance_bins: int
    row_chunk: int
    budget: int
    num_layers: int = None
    num_heads: int = None
    num_queries: int = None
    num_keys: int = None

    def chunks(self):
        """(start, stop) of each rows blob's queries."""
        return [(s, min(s + self.row_chunk, self.num_queries)) for s in range(0, self.num_queries, self.row_chunk)]

    def stored_bytes(self):
        """Bytes of the group's rows and levels before compression (what the budget bounds)."""
        cells = sum(rows * cols for _, rows, cols in self.levels)
        return self.num_layers * self.num_heads * (self.num_queries * self.top_k * 5 + cells)

    def entry(self):
        """The manifest's `long` object of a group stored by this plan."""
        return {
            "top_k": self.top_k, "sink_tokens": self.sink_tokens, "row_chunk": self.row_chunk, "budget": self.budget,
            "levels": [{"block": b, "rows": r, "cols": c} for b, r, c in self.levels],
            "distance_bins": self.distance_bins,
        }


def _count(name, value, low=1, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high and value > high):
        bound = f"from {low:,} to {high:,}" if high else f"of at least {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


distance_bins = schema.long_distance_bins  # B = 2 + floor(log2(max(Nq, Nk)))


def bin_edges(bins):
    """[[lo, hi], ...] distances of each profile bin, hi exclusive."""
    return [[0, 1]] + [[1 << (b - 1), 1 << b] for b in range(1, bins)]


def plan(num_layers, num_heads, num_queries, num_keys, *, budget=DEFAULT_LONG_BUDGET, top_k=DEFAULT_LONG_TOP_K,
         sink_tokens=DEFAULT_SINK_TOKENS):
    """The LongPlan of a group: k and the levels that fit `budget` bytes (http_api.md, "Storage budget")."""
    layers, heads = _count("num_layers", num_layers, high=4096), _count("num_heads", num_heads, high=4096)
    nq = _count("num_queries", num_queries, high=MAX_LONG_TOKENS)
    nk = _count("num_keys", num_keys, high=MAX_LONG_TOKENS)
    budget, top_k = _count("long_budget", budget), _count("long_top_k", top_k)
    sink_tokens = _count("sink_tokens", sink_tokens, low=0, high=nk)
    per_weight = layers * heads * nq * 5  # bytes of one kept weight in every row: 4-byte index, 1-byte code
    k = min(top_k, nk, 3 * budget // (4 * per_weight))
    if k < 1:
        least = -(-4 * per_weight // 3)
        raise ValueError(
            f"a storage budget of {budget:,} bytes keeps no top-1 row of {layers} layers x {heads} heads x {nq:,} "
            f"queries: give long_budget={least:,} or more (or log fewer layers or heads)"
        )
    block, size = 1, max(nq, nk)
    while -(-size // block) > COARSEST_CELLS:
        block *= 2

    def cells(b):
        return layers * heads * -(-nq // b) * -(-nk // b)

    while 4 * cells(block) > budget:  # the coarsest block grows until its level fits a quarter of the budget
        block *= 2
    levels, total = [], 0
    while 4 * (total + cells(block)) <= budget:
        levels.append((block, -(-nq // block), -(-nk // block)))
        total += cells(block)
        if block == 1:
            break
        block //= 2
    return LongPlan(k, tuple(levels), sink_tokens, distance_bins(nq, nk), ROW_CHUNK, budget, layers, heads, nq, nk)


def plan_of(entry, num_layers, num_heads, num_queries, num_keys):
    """The LongPlan a manifest's checked `long` object describes (see `schema`)."""
    levels = tuple((v["block"], v["rows"], v["cols"]) for v in entry["levels"])
    return LongPlan(entry["top_k"], levels, entry["sink_tokens"], entry["distance_bins"], entry["row_chunk"],
                    entry["budget"], num_layers, num_heads, num_queries, num_keys)


# ---------------------------------------------------------------------------------------------
# One layer


@dataclasses.dataclass
class LongLayer:
    """One layer, all heads, as http_api.md defines each array (float; `encode_layer` stores it)."""

    top_index: np.ndarray  # uint32 [H, Nq, k], UNUSED where a row has fewer than k keys
    top_weight: np.ndarray  # float32 [H, Nq, k], largest first, ties to the smaller key index
    remainder: np.ndarray  # float32 [H, Nq]
    levels: list  # per plan level, coarsest first: float32 [H, rows, cols] (mean row mass)
    profile: np.ndarray  # float32 [H, B]
    sinks: np.ndarray  # float32 [H, sink_tokens]


@dataclasses.dataclass
class EncodedLongLayer:
    """What capture keeps of a layer after `encode_layer`: the blobs, and the profile and sinks as floats."""

    rows: list  # bytes per row chunk (gzip'd TBLG frames)
    levels: list  # bytes per level
    profile: np.ndarray  # float32 [H, B]
    sinks: np.ndarray  # float32 [H, sink_tokens]


def _floats(name, x, shape, where, high=1.0 + ROW_SUM_TOLERANCE):
    """x as float32 of `shape`, every value finite and in [0, high] (a small negative rounding is 0)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape != tuple(shape):
        raise ValueError(f"{where}: {name} has shape {list(x.shape)}, expected {list(shape)}")
    bad = ~np.isfinite(x) | (x < -1e-5) | (x > high)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{where}: {name}{list(at)} is {float(x[at])!r}, not a weight from 0 to {high:g} "
                         f"({int(bad.sum())} values out of range)")
    return x


def check_layer(layer_index, long_layer, plan):
    """(index, weight, remainder, levels, profile, sinks) of a LongLayer, checked against the plan: shapes,
    key indices inside the keys (or UNUSED with weight 0), weights in [0, 1] and largest first."""
    where = f"long layer {layer_index}"
    h, nq, k = plan.num_heads, plan.num_queries, plan.top_k
    index = np.asarray(long_layer.top_index)
    if index.shape != (h, nq, k) or index.dtype.kind not in "ui":
        raise ValueError(f"{where}: top_index is {index.dtype} {list(index.shape)}, expected uint32 {[h, nq, k]}")
    index = index.astype(_INDEX)
    weight = _floats("top_weight", long_layer.top_weight, (h, nq, k), where)
    unused = index == UNUSED
    beyond = ~unused & (index >= plan.num_keys)
    if beyond.any():
        at = tuple(int(i) for i in np.argwhere(beyond)[0])
        raise ValueError(f"{where}: top_index{list(at)} is {int(index[at])}, beyond the last of {plan.num_keys} keys")
    if (weight[unused] != 0).any():
        raise ValueError(f"{where}: an unused top-k slot (index 0xFFFFFFFF) has a weight other than 0")
    if k > 1 and (np.diff(weight, axis=-1) > 1e-6).any():
        raise ValueError(f"{where}: top_weight rows must be sorted largest first")
    remainder = _floats("remainder", long_layer.remainder, (h, nq), where)
    if len(long_layer.levels) != len(plan.levels):
        raise ValueError(f"{where}: {len(long_layer.levels)} levels given, the plan has {len(plan.levels)}")
    levels = [_floats(f"levels[{i}]", x, (h, rows, cols), where)
              for i, (x, (_, rows, cols)) in enumerate(zip(long_layer.levels, plan.levels))]
    profile = _floats("profile", long_layer.profile, (h, plan.distance_bins), where)
    sinks = _floats("sinks", long_layer.sinks, (h, plan.sink_tokens), where)
    return index, weight, remainder, levels, profile, sinks


def encode_layer(layer_index, long_layer, plan):
    """A LongLayer -> EncodedLongLayer: one rows blob per chunk of `plan.row_chunk` queries, one blob per level."""
    index, weight, remainder, levels, profile, sinks = check_layer(layer_index, long_layer, plan)
    codes, rest = quantize(weight), quantize(remainder)
    rows = [rows_blob(layer_index, index[:, a:b], codes[:, a:b], rest[:, a:b], a) for a, b in plan.chunks()]
    blobs = [level_blob(layer_index, i, block, quantize(x)) for i, (x, (block, _, _)) in enumerate(zip(levels, plan.levels))]
    return EncodedLongLayer(rows, blobs, profile, sinks)


# ---------------------------------------------------------------------------------------------
# Blobs (stored: TBLG; served: TBLM, TBLR)


def _frame(magic, header, payloads):
    return compress(pack(magic, header, [np.ascontiguousarray(p).tobytes() for p in payloads], version=LONG_VERSION))


def rows_blob(layer, index, codes, remainder, start):
    """The stored blob of rows [start, start + n) of a layer: indices [H, n, k], codes [H, n, k], remainders [H, n]."""
    h, n, k = index.shape
    header = {"kind": "rows", "layer": int(layer), "num_heads": h, "start": int(start), "stop": int(start) + n,
              "top_k": k}
    return _frame(LONG_MAGIC, header, [index.astype(_INDEX, copy=False), codes, remainder])


def level_blob(layer, level, block, codes):
    """The stored blob of one level of a layer: sqrt-u8 cells [H, rows, cols]."""
    h, rows, cols = codes.shape
    header = {"kind": "level", "layer": int(layer), "num_heads": h, "level": int(level), "block": int(block),
              "rows": rows, "cols": cols}
    return _frame(LONG_MAGIC, header, [codes])


def profile_blob(profiles, sinks):
    """The group's profile blob from per layer [H, B] profiles and [H, sink_tokens] sinks."""
    profile, sink = np.stack(profiles).astype(_FLOAT), np.stack(sinks).astype(_FLOAT)
    num_layers, num_heads, bins = profile.shape
    header = {"kind": "profile", "num_layers": num_layers, "num_heads": num_heads, "distance_bins": bins,
              "sink_tokens": sink.shape[2]}
    return _frame(LONG_MAGIC, header, [profile, sink])


def map_answer(header, codes):
    """A /long_map body (before gzip), TBLM framing: the header, then sqrt-u8 cells."""
    return pack(MAP_MAGIC, header, [np.ascontiguousarray(codes).tobytes()], version=LONG_VERSION)


def rows_answer(header, index, codes, remainder):
    """A /long_rows body (before gzip), TBLR framing: indices [n, k] uint32 LE, codes [n, k], remainders [n]."""
    payloads = [np.ascontiguousarray(x).tobytes() for x in (index.astype(_INDEX, copy=False), codes, remainder)]
    return pack(ROWS_MAGIC, header, payloads, version=LONG_VERSION)


@dataclasses.dataclass
class LongRows:
    """Decoded rows [start, stop) of a layer: key indices and the sqrt-u8 codes of weights and remainders."""

    start: int
    stop: int
    index: np.ndarray  # uint32 [H, n, k]
    codes: np.ndarray  # uint8 [H, n, k]
    remainder: np.ndarray  # uint8 [H, n]

    @property
    def weight(self):
        return dequantize(self.codes)


def _unframe(blob, magic, kind, expected):
    """(header, payload) of a long blob, its header checked against what the manifest says it holds."""
    header, payload = unpack(decompress(blob), magic, newest=LONG_VERSION)
    if header.get("kind") != kind:
        raise FormatError(f"blob holds {header.get('kind')!r}, expected the {kind} of a long group")
    values = header_sizes(header, *expected)
    wrong = [f"{name} {v} (expected {expected[name]})" for name, v in zip(expected, values) if v != expected[name]]
    if wrong:
        raise FormatError(f"{kind} blob does not match the manifest: {', '.join(wrong)}")
    return header, payload


def _arrays(payload, kind, *parts):
    """Views of the payload as consecutive (dtype, shape) arrays, its length exactly theirs."""
    sizes = [int(np.prod(shape)) * np.dtype(dtype).itemsize for dtype, shape in parts]
    if len(payload) != sum(sizes):
        raise FormatError(f"{kind} payload holds {len(payload):,} bytes; its header announces {sum(sizes):,}")
    out, offset = [], 0
    for (dtype, shape), size in zip(parts, sizes):
        out.append(np.frombuffer(payload, dtype, count=int(np.prod(shape)), offset=offset).reshape(shape))
        offset += size
    return out


def decode_rows(blob, *, layer, num_heads, start, stop, top_k, num_keys):
    """LongRows of a stored rows blob, checked: the header as the manifest says, the payload whole, every key
    index inside the keys or UNUSED."""
    expected = {"layer": layer, "num_heads": num_heads, "start": start, "stop": stop, "top_k": top_k}
    _, payload = _unframe(blob, LONG_MAGIC, "rows", expected)
    n = stop - start
    index, codes, remainder = _arrays(payload, "rows", (_INDEX, (num_heads, n, top_k)),
                                      (np.uint8, (num_heads, n, top_k)), (np.uint8, (num_heads, n)))
    if ((index != UNUSED) & (index >= num_keys)).any():
        raise FormatError(f"rows blob of layer {layer} has a key index beyond the last of {num_keys} keys")
    return LongRows(start, stop, index, codes, remainder)


def decode_level(blob, *, layer, num_heads, level, block, rows, cols):
    """uint8 sqrt-u8 cells [H, rows, cols] of a stored level blob, checked against the manifest."""
    expected = {"layer": layer, "num_heads": num_heads, "level": level, "block": block, "rows": rows, "cols": cols}
    _, payload = _unframe(blob, LONG_MAGIC, "level", expected)
    return _arrays(payload, "level", (np.uint8, (num_heads, rows, cols)))[0]


def decode_profile(blob, *, num_layers, num_heads, distance_bins, sink_tokens):
    """(profile float32 [L, H, B], sinks float32 [L, H, sink_tokens]) of the group's profile blob, checked."""
    expected = {"num_layers": num_layers, "num_heads": num_heads, "distance_bins": distance_bins,
                "sink_tokens": sink_tokens}
    _, payload = _unframe(blob, LONG_MAGIC, "profile", expected)
    profile, sinks = _arrays(payload, "profile", (_FLOAT, (num_layers, num_heads, distance_bins)),
                             (_FLOAT, (num_layers, num_heads, sink_tokens)))
    if not (np.isfinite(profile).all() and np.isfinite(sinks).all()):
        raise FormatError("profile blob holds values that are not finite")
    return profile, sinks


def blob_header(blob):
    """The JSON header of a stored long blob, inflating nothing past it (the writer checks capture's blobs)."""
    inflate = zlib.decompressobj(31)  # gzip
    try:
        raw = inflate.decompress(blob, _FRAME.size)
        if len(raw) < _FRAME.size:
            raise FormatError("long blob is shorter than its header")
        length = _FRAME.unpack_from(raw)[2]
        if length > MAX_HEADER_BYTES:
            raise FormatError(f"long blob claims a header of {length:,} bytes")
        raw += inflate.decompress(inflate.unconsumed_tail, _FRAME.size + length - len(raw))
    except zlib.error as e:
        raise FormatError(f"long blob is not valid gzip: {e}") from None
    return unpack(raw, LONG_MAGIC, newest=LONG_VERSION)[0]
