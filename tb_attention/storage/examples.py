"""Examples as the writer takes them (http_api.md, `/examples`), checked and encoded into the blobs of one step."""

# summary.write_examples calls encode_step; the checks name the example, group and layer at fault.
# torch is never imported here: tensors are recognised by duck typing and encoded on their device.

import concurrent.futures
import warnings

import numpy as np

from tb_attention.storage import codecs, schema
from tb_attention.storage.long_groups import LongGroup

_ENCODE_WORKERS = 2  # threads for encoding layers: zlib and numpy release the GIL


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
        elif token is None:
            raise TypeError(
                f"token {i} is None, not a string: a tokenizer's convert_ids_to_tokens gives None for an id it "
                "cannot decode (one beyond its vocabulary); give tokens from the tokenizer the model was trained with"
            )
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


# Event-record budget. Every blob of a step's tag lives in one event record, and both loaders hold a
# record whole: the Python loader reads it into memory and parses it with protobuf (2 GiB hard limit),
# and keeps every retained record of this plugin in memory; the Rust data server does the same and
# answers ReadBlobSequences with keys only (ReadBlob streams the bytes, ReadTensors is one gRPC message
# capped at 256 MiB on the client). A step larger than RECORD_BYTES spreads its blobs over part tags
# ("<tag>/_parts/<k>", written before the main record), so no record is much above this size.
RECORD_BYTES = 64 << 20  # bytes of blobs per event record
MAX_BLOB_BYTES = 256 << 20  # one layer's compressed attention or q/k; larger is refused


class _Group:
    """One attention group of an example, checked: its layers (raw or already encoded) and q/k."""

    def __init__(self, spec, example_tokens, index, max_dense_tokens, top_k, check_rows):
        self.name = schema.check_group_name(spec.get("name", schema.DEFAULT_GROUP))
        where = f"example {index}" if self.name == schema.DEFAULT_GROUP else f"example {index}, group {self.name!r}"
        self.tokens = token_strings(spec["tokens"]) if spec.get("tokens") is not None else example_tokens
        self.key_tokens = token_strings(spec["key_tokens"]) if spec.get("key_tokens") is not None else self.tokens
        layers = spec.get("attention")
        if layers is None:
            raise TypeError(f"{where}: attention is None: the model did not return it (load it with "
                            "attn_implementation='eager' or use tb_attention.capture_attention)")
        if not isinstance(layers, (list, tuple)):
            layers = _per_layer(layers, where)
        self.layers = list(layers)
        first = self.layers[0] if self.layers else None
        if first is not None and not isinstance(first, codecs.EncodedLayer):
            shape = tuple(getattr(first, "shape", np.shape(first)))
            if len(shape) == 3 and 0 in shape:
                raise ValueError(f"{where}: attention is empty: {len(self.layers)} layers, {shape[0]} heads, "
                                 f"{shape[-1]} tokens")
        if not self.layers:
            raise ValueError(f"{where}: attention has no layers")
        self.encoded = [isinstance(x, codecs.EncodedLayer) for x in self.layers]
        self.options = dict(max_dense_tokens=max_dense_tokens, top_k=top_k, check_rows=check_rows)
        self.causal = spec.get("causal")
        nq, nk = len(self.tokens), len(self.key_tokens)
        if max(nq, nk) > codecs.MAX_TOKENS:  # before any check copies the weights
            raise ValueError(f"{where}: attention over {max(nq, nk)} tokens: at most {codecs.MAX_TOKENS} tokens "
                             "per example can be stored; log a window of the input")
        for i, layer in enumerate(self.layers):
            if self.encoded[i]:
                h = layer.header
                if (h["tokens"], h["key_tokens"], h["first_layer"]) != (self.tokens, self.key_tokens, i):
                    raise ValueError(f"{where}: encoded layer {i} was encoded for other tokens or as layer {h['first_layer']}")
            else:
                shape = tuple(getattr(layer, "shape", np.shape(layer)))
                if len(shape) != 3 or shape[1:] != (nq, nk):
                    expected = f"(layer {i} has shape {list(shape)}, expected [heads, {nq}, {nk}])"
                    if len(shape) == 3 and shape[1] == nq and shape[2] != nk:
                        raise ValueError(f"{where}: {nk} key tokens given for attention over {shape[2]} keys {expected}; "
                                         "pass key_tokens for attention whose keys are another sequence (cross attention)")
                    got = shape[-1] if len(shape) == 3 and nq == nk else list(shape[1:])
                    raise ValueError(f"{where}: {nq} tokens given for attention over {got} tokens; they must match one "
                                     f"to one {expected}")
        heads = {int(x.header["num_heads"]) if e else int(getattr(x, "shape", np.shape(x))[0])
                 for x, e in zip(self.layers, self.encoded)}
        if len(heads) > 1:
            raise ValueError(f"{where}: layers have different numbers of heads ({sorted(heads)}); log them as separate groups")
        self.num_heads = heads.pop()
        names = spec.get("layer_names")
        if names is not None and (len(names) != len(self.layers) or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"{where}: layer_names must be {len(self.layers)} strings, one per layer")
        self.layer_names = None if names is None else list(names)
        self.qk = _QueryKeySpec(spec, len(self.layers), where) if spec.get("query") is not None or spec.get("qk") is not None else None
        rules = [name for name in schema.SCORING_RULES if spec.get(name) is not None]
        if spec.get("query") is None and spec.get("qk") is None and rules:
            raise ValueError(f"{where}: {', '.join(rules)} describe query/key: pass them with query, key and scaling")
        if any(self.encoded):
            flags = {x.header["causal"] for x, e in zip(self.layers, self.encoded) if e}
            if len(flags) > 1 or (self.causal is not None and bool(self.causal) not in flags):
                raise ValueError(f"{where}: encoded layers disagree on causal")
            self.causal = flags.pop()

    def prepare(self, where):
        """Checks every raw layer and decides `causal` (all layers: one encoding per group)."""
        for i, (layer, encoded) in enumerate(zip(self.layers, self.encoded)):
            if not encoded:
                try:
                    codecs.check_layer(layer, layer=i, check_rows=self.options["check_rows"], sinks=self._has_sinks(i))
                except ValueError as e:
                    raise type(e)(f"{where}: {e}") from None  # RowSumError stays one: summary.attention adds its options
        if self.causal is None:
            self.causal = len(self.tokens) == len(self.key_tokens) and all(
                codecs.is_causal_layer(x) for x, e in zip(self.layers, self.encoded) if not e
            )
        self.encoding = codecs.choose_encoding(len(self.tokens), len(self.key_tokens), self.causal,
                                               self.options["max_dense_tokens"])

    def _has_sinks(self, i):
        """Whether layer i's q/k come with attention sinks (its rows then sum to at most 1)."""
        sinks = self.qk.rules.get("sinks") if self.qk is not None and self.qk.blobs is None else None
        return sinks is not None and sinks[i] is not None

    def encode_layer(self, i):
        if self.encoded[i]:
            return self.layers[i].blob
        return codecs.encode_attention_layer(
            self.layers[i], self.tokens, self.key_tokens, layer=i, causal=self.causal,
            max_dense_tokens=self.options["max_dense_tokens"], top_k=self.options["top_k"], check=False,
        ).blob

    def entry(self):
        out = {
            "name": self.name,
            "num_layers": len(self.layers),
            "num_heads": self.num_heads,
            "num_tokens": len(self.tokens),
            "num_key_tokens": len(self.key_tokens),
            "tokens": self.tokens,
            "key_tokens": self.key_tokens,
            "causal": bool(self.causal),
            "encoding": self.encoding,
            "has_qk": self.qk is not None,
        }
        if self.encoding == codecs.ENCODING_TOPK:
            out["top_k"] = min(self.options["top_k"], len(self.key_tokens))
        if self.layer_names is not None:
            out["layer_names"] = self.layer_names
        return out


class _QueryKeySpec:
    """A group's q/k: per-layer blobs given, or query/key/scaling (+ scoring rules) to encode per layer."""

    def __init__(self, spec, num_layers, where):
        self.blobs = None
        if spec.get("qk") is not None:
            self.blobs = list(spec["qk"])
            if len(self.blobs) != num_layers or not all(isinstance(b, bytes) for b in self.blobs):
                raise ValueError(f"{where}: qk must be {num_layers} blobs from codecs.encode_qk_layer, one per layer")
            return
        if spec.get("key") is None or spec.get("scaling") is None:
            raise ValueError(f"{where}: query, key and scaling go together: pass all three or none")
        self.query = _per_layer(spec["query"], f"{where}, query") if not isinstance(spec["query"], (list, tuple)) else list(spec["query"])
        self.key = _per_layer(spec["key"], f"{where}, key") if not isinstance(spec["key"], (list, tuple)) else list(spec["key"])
        if len(self.query) != num_layers or len(self.key) != num_layers:
            raise ValueError(f"{where}: query and key must have {num_layers} layers like the attention")
        self.scaling = [float(s) for s in np.broadcast_to(np.asarray(spec["scaling"], dtype=np.float64), (num_layers,))]
        self.rules = {}
        for name in schema.SCORING_RULES:
            values = spec.get(name)
            if values is not None and (isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != num_layers):
                raise ValueError(f"{where}: {name} must have one entry per layer ({num_layers}), got {values!r:.80}")
            self.rules[name] = values

    def encode_layer(self, i):
        if self.blobs is not None:
            return self.blobs[i]
        rules = {name: None if values is None else values[i] for name, values in self.rules.items()}
        return codecs.encode_qk_layer(self.query[i], self.key[i], self.scaling[i], layer=i, **rules)


def _per_layer(array, where):
    """An [L, ...] array or tensor as a list of its layers (a torch tensor stays on its device)."""
    if not hasattr(array, "detach"):
        array = to_numpy(array, where)
    if array.ndim != 4:
        raise ValueError(f"{where}: must be [layers, heads, queries, keys] or a list of per-layer "
                         f"[heads, queries, keys], got shape {list(array.shape)}")
    return [array[i] for i in range(array.shape[0])]


def _check_image(image, num_tokens, index):
    """The stored description of an example's image (its PNG goes into a blob of its own)."""
    where = f"example {index}, image"
    if not isinstance(image, dict) or not isinstance(image.get("png"), (bytes, bytearray)):
        raise TypeError(f"{where} must be a dict with the PNG bytes under 'png'")
    if not bytes(image["png"][:8]) == schema.PNG_MAGIC:
        raise ValueError(f"{where}: 'png' is not PNG data")

    def pair(name):
        value = image.get(name)
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value
        ):
            raise ValueError(f"{where}: {name} must be two positive integers, got {value!r}")
        return [int(v) for v in value]

    grid, patch = pair("grid"), pair("patch_size")
    prefix = image.get("prefix_tokens", 0)
    names = list(image.get("prefix_names") or [])
    if not isinstance(prefix, (int, np.integer)) or prefix < 0 or len(names) != prefix:
        raise ValueError(f"{where}: prefix_tokens must be a non-negative integer and prefix_names that many names")
    if prefix + grid[0] * grid[1] != num_tokens:
        raise ValueError(f"{where}: {prefix} prefix tokens + a {grid[0]} x {grid[1]} grid of patches make "
                         f"{prefix + grid[0] * grid[1]} tokens, but the first group has {num_tokens}")
    return {"grid": grid, "patch_size": patch, "prefix_tokens": int(prefix), "prefix_names": [str(n) for n in names]}


def _group(spec, tokens, index, max_dense_tokens, top_k, check_rows):
    """A checked group of example `index`: a LongGroup when the spec gives `long`, else a _Group."""
    if spec.get("long") is None:
        return _Group(spec, tokens, index, max_dense_tokens, top_k, check_rows)
    name = schema.check_group_name(spec.get("name", schema.DEFAULT_GROUP))
    query_tokens = token_strings(spec["tokens"]) if spec.get("tokens") is not None else tokens
    key_tokens = token_strings(spec["key_tokens"]) if spec.get("key_tokens") is not None else query_tokens
    return LongGroup(name, query_tokens, key_tokens, spec, f"example {index}, group {name!r}")


def _groups_of(example, index):
    if "groups" in example and example.get("attention") is not None:
        raise ValueError(f"example {index}: give either attention (one group) or groups, not both")
    if "groups" in example:
        groups = list(example["groups"])
        if not groups:
            raise ValueError(f"example {index}: groups is empty")
        return groups
    v1 = {k: example.get(k) for k in ("attention", "causal", "query", "key", "scaling", "qk", "layer_names", "long",
                                      *schema.SCORING_RULES)}
    return [{"name": schema.DEFAULT_GROUP, **v1}]


def encode_step(
    examples,
    *,
    max_dense_tokens=codecs.DEFAULT_MAX_DENSE_TOKENS,
    top_k=codecs.DEFAULT_TOP_K,
    check_rows=True,
    record_bytes=RECORD_BYTES,
):
    """Validated, encoded examples -> the blobs of each event record of one step: [[manifest, ...],
    [part 1 blobs], ...]. Examples as `summary.write_examples` describes them (served as http_api.md's `/examples`)."""
    if not examples:
        raise ValueError("no examples to write")
    prepared = []
    for index, example in enumerate(examples):
        try:
            if example.get("tokens") is None and "groups" in example and example["groups"]:
                example = {**example, "tokens": example["groups"][0].get("tokens")}
            tokens = token_strings(example["tokens"])
            groups = [_group(g, tokens, index, max_dense_tokens, top_k, check_rows) for g in _groups_of(example, index)]
            names = [g.name for g in groups]
            if len(set(names)) != len(names):
                raise ValueError(f"example {index}: group names repeat: {names}")
            for g in groups:
                g.prepare(f"example {index}, group {g.name!r}")
        except KeyError as e:
            raise ValueError(f"example {index} lacks {e}") from None
        for g in groups:
            if g.encoding == codecs.ENCODING_TOPK:
                warnings.warn(
                    f"example {index}, group {g.name!r}: {len(g.tokens)} x {len(g.key_tokens)} tokens (more than "
                    f"max_dense_tokens²={max_dense_tokens}²): storing the top {min(top_k, len(g.key_tokens))} weights "
                    f"of each row; pass max_dense_tokens={max(len(g.tokens), len(g.key_tokens))} to store every weight",
                    stacklevel=4,
                )
        fields = {k: example[k] for k in ("text", "segments", "pos") if example.get(k) is not None}
        if example.get("generation") is not None:
            try:
                fields["generation"] = schema.check_generation(
                    example["generation"], {g.name: len(g.tokens) for g in groups}, f"example {index}")
            except schema.FormatError as e:
                raise ValueError(str(e)) from None
        if isinstance(fields.get("text"), str):
            fields["text"] = _valid_unicode(fields["text"])
        image = None
        if example.get("image") is not None:
            image = _check_image(example["image"], len(groups[0].tokens), index)
        prepared.append((tokens, groups, fields, image, example.get("image")))

    tasks = []  # (callable, what): every blob after the manifest, in storage order
    for index, (_, groups, _, image, raw_image) in enumerate(prepared):
        for g in groups:
            if isinstance(g, LongGroup):
                tasks += g.tasks(f"example {index}, group {g.name!r}")
                continue
            tasks += [(lambda g=g, i=i: g.encode_layer(i), f"example {index}, group {g.name!r}, layer {i}")
                      for i in range(len(g.layers))]
            if g.qk is not None:
                tasks += [(lambda g=g, i=i: g.qk.encode_layer(i), f"example {index}, group {g.name!r}, q/k of layer {i}")
                          for i in range(len(g.layers))]
        if image is not None:
            tasks.append((lambda raw=raw_image: bytes(raw["png"]), f"example {index}, image"))
    with concurrent.futures.ThreadPoolExecutor(_ENCODE_WORKERS) as pool:
        blobs = list(pool.map(lambda task: task[0](), tasks))
    for blob, (_, what) in zip(blobs, tasks):
        if len(blob) > MAX_BLOB_BYTES:
            raise ValueError(f"{what} takes {len(blob) >> 20} MiB, more than the {MAX_BLOB_BYTES >> 20} MiB a blob may "
                             "hold: lower max_dense_tokens (top-k rows) or log fewer heads")

    entries, ref = [], 1  # blob 0 is the manifest
    for tokens, groups, fields, image, _ in prepared:
        group_entries = []
        for g in groups:
            if isinstance(g, LongGroup):
                entry, ref = g.entry(ref)
                group_entries.append(entry)
                continue
            entry = g.entry()
            entry["attention_blobs"] = list(range(ref, ref + len(g.layers)))
            ref += len(g.layers)
            entry["qk_blobs"] = None
            if g.qk is not None:
                entry["qk_blobs"] = list(range(ref, ref + len(g.layers)))
                ref += len(g.layers)
            group_entries.append(entry)
        example = {**fields, "tokens": tokens, "groups": group_entries, "image": image, "image_blob": None}
        if image is not None:
            example["image_blob"] = ref
            ref += 1
        entries.append(example)

    records, size = [[]], 0  # greedily: a new record when the next blob would pass the budget
    for blob in blobs:
        if records[-1] and size + len(blob) > record_bytes:
            records.append([])
            size = 0
        records[-1].append(blob)
        size += len(blob)
    parts = [len(records[0]) + 1, *(len(r) for r in records[1:])] if len(records) > 1 else None
    manifest = codecs.encode_json(schema.create_manifest(entries, parts))
    records[0].insert(0, manifest)
    return records


def encode_examples(examples, **options):
    """(manifest blob, the other blobs, ()) of a step that fits one event record (see `encode_step`)."""
    records = encode_step(examples, **options)
    if len(records) > 1:
        raise ValueError(f"these examples need {len(records)} event records: write them with write_examples")
    return records[0][0], records[0][1:], []
