"""The storage schema: plugin data, tag names, metric names, the manifest and the exemplar table."""

# What tb-attention writes into event files, besides the blob encodings (tb_attention/storage/codecs/): the JSON that
# describes each tag and each step, and the HTTP payloads built from it. Standard library only.

import json
import re

from tb_attention.storage.manifest_checks import (  # noqa: F401 (re-exported: the schema's contract in one name)
    ENCODING_LONG,
    GENERATION_STOPS,
    GENERATION_TOP,
    LONG_FIELDS,
    LONG_LEVEL_FIELDS,
    MAX_GENERATED,
    MAX_IMAGES,
    MAX_LONG_GROUP_TOKENS,
    FormatError,
    NewerFormatError,
    check_generation,
    check_images,
    check_long,
    long_distance_bins,
)

PLUGIN_NAME = "attention"
FORMAT_VERSION = 2  # bump when a reader of the previous version could not read new data
# v1: one attention blob [L, H, N, N] and one q/k blob per example (one group, "self").
# v2: attention groups with their own query and key tokens, one attention (and q/k) blob per layer,
#     an optional image per example, and blobs spread over part tags when a step is large.

# Kinds of summary, stored in the plugin data of every tag.
KIND_ATTENTION = "attention"  # blob sequence: [manifest, blobs...]
KIND_ATTENTION_PART = "attention_part"  # blob sequence: more blobs of a large attention step
KIND_METRIC = "metric"  # float32 [L, H] tensor
KIND_EXEMPLARS = "exemplars"  # blob sequence: [exemplar table]
KINDS = (KIND_ATTENTION, KIND_ATTENTION_PART, KIND_METRIC, KIND_EXEMPLARS)

# Per-head metrics (definitions: http_api.md). A metric tag is "<tag>/<metric>" for a probe's first
# attention group and "<tag>/<group>/<metric>" for its other groups.
STATS_METRICS = ("entropy", "distance", "null_attention", "dependency_alignment", "variability", "previous_token")
# ^ what metrics.AttentionStats computes; capture, the monitor and the vision probe compute these:
METRICS = (*STATS_METRICS, "max_logit", "attention_entropy", "max_weight", "pixel_distance", "prefix_attention",
           "diagonal_alignment", "prompt_share", "induction", "image_share", "local_share", "sink_share",
           "retrieval")  # fmt: skip
GENERATION_METRICS = ("prompt_share", "induction")  # a generation probe's, over its generated queries
UPOS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip  # Universal Dependencies coarse tags, as spaCy's `Token.pos_`: the pos/<UPOS> tags
POS_PREFIX = "pos/"  # pos/<UPOS>: share of attention received by tokens of that tag
POS_FROM_PREFIX = "pos_from/"  # pos_from/<UPOS>: share of attention paid by tokens of that tag
EXEMPLARS_SUFFIX = "exemplars"
PARTS_SUFFIX = "_parts"  # part tags: "<tag>/_parts/<k>"
HEALTH_PROBE = "attention_health"  # the training-health monitor's metrics: attention_health/<metric>
# The dashboard's views, as the URL state's `view=` names them (an exported file or notebook output opens on one).
VIEWS = ("head", "model", "neuron", "image", "generation", "long", "metrics", "analysis", "exemplars", "compare", "health")

DEFAULT_GROUP = "self"  # the one group of a v1-style example
GROUP_NAMES = ("self", "encoder", "decoder", "cross")  # the usual names; any GROUP_PATTERN name is valid
GROUP_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")

# How a layer turns scaled q·k into weights besides the causal mask; each is optional, per layer,
# null where a layer does not use it (http_api.md, "GET /qk"). The weights of query i over keys j are
#   x_j = scaling · q_i·k_j;  x_j = softcap · tanh(x_j / softcap);  x_j += key_bias[h][j] +
#   relative_bias[h][j - i + Nq - 1] (ALiBi, T5's position bias; exact up to a constant per row);
#   x_j = -inf if j > i (causal) or |i - j| >= sliding_window (as transformers' window masks, causal
#   and bidirectional) or i // attention_chunk != j // attention_chunk (Llama 4) or, with
#   bidirectional_spans [[a, b], ...] (a group stored not causal: PaliGemma's prefix), j > i unless a <= i, j < b
#   for one span (those masks or-ed with the span's block, as transformers' block overlay);  softmax over the
#   x_j and, when the head has one, its sink logit (which takes its share of the softmax and is then
#   dropped, so the row sums to less than 1).
SCORING_RULES = ("softcap", "sliding_window", "sinks", "attention_chunk", "bidirectional_spans", "key_bias", "relative_bias")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def diagonal_window(num_sources, num_targets):
    """diagonal_alignment's half-width in source tokens: one target token's share of the source, at
    least 1 (http_api.md): ±1 token for translation of equal lengths, ±75 frames for Whisper's 1500
    audio frames under 20 text tokens."""
    return max(1.0, num_sources / num_targets)


# ---------------------------------------------------------------------------------------------
# Tags and plugin data


def check_group_name(name):
    if not isinstance(name, str) or not GROUP_PATTERN.fullmatch(name):
        raise ValueError(f"group name must be lower-case letters, digits and _ (starting with a letter), got {name!r}")
    return name


def metric_tag(tag, metric, group=None):
    """The tag of `metric` of probe `tag`: `probe/entropy`, or `probe/cross/entropy` for a group
    other than the probe's first (pass group=None for the first)."""
    return f"{tag}/{metric}" if group is None else f"{tag}/{group}/{metric}"


def exemplars_tag(tag):
    return f"{tag}/{EXEMPLARS_SUFFIX}"


def part_tag(tag, part):
    """The tag holding part `part` (1, 2, ...) of the blobs of attention tag `tag`."""
    return f"{tag}/{PARTS_SUFFIX}/{part}"


def is_known_metric(metric):
    return metric in METRICS or (
        metric.startswith((POS_PREFIX, POS_FROM_PREFIX)) and metric.count("/") == 1 and not metric.endswith("/")
    )


def create_plugin_data(kind, **fields):
    """The `plugin_data.content` bytes of a summary of `kind` (frozen at a tag's first event)."""
    if kind not in KINDS:
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


_TAG_FIELDS = {  # what /tags says of each kind, besides kind and steps: (field, type)
    KIND_ATTENTION: (),
    KIND_METRIC: (("probe", str), ("metric", str), ("group", str)),
    KIND_EXEMPLARS: (("probe", str),),
}


def tag_payload(content, steps, wall_times, description=None, display_name=None):
    """The /tags entry of a tag whose plugin data parsed to `content` (fields named, not copied)."""
    kind = content.get("kind")
    if kind not in _TAG_FIELDS:
        return {"kind": "unsupported", "error": f"unknown summary kind {kind!r}", "steps": []}
    entry = {"kind": kind}
    for field, kind_of in _TAG_FIELDS[kind]:
        if isinstance(content.get(field), kind_of):
            entry[field] = content[field]
    if description:
        entry["description"] = description
    if display_name:
        entry["display_name"] = display_name
    entry["steps"] = list(steps)
    entry["wall_times"] = list(wall_times)
    return entry


# ---------------------------------------------------------------------------------------------
# The manifest: blob 0 of an attention step
#
# {"version": 2, "parts": [blobs in the main record, in part 1, ...],
#  "examples": [{"index", "tokens", "text", "segments", "pos", "image": {...} | null, "image_blob",
#                "images": [{"size", "pieces", "blob"}] | absent (vision-language: check_images),
#                "groups": [{"name", "num_layers", "num_heads", "num_tokens", "num_key_tokens", "tokens",
#                            "key_tokens", "causal", "encoding", "top_k"?, "layer_names"?, "has_qk",
#                            "attention_blobs": [blob per layer], "qk_blobs": [blob per layer] | null}]}]}
# A long group (encoding "long") has no attention or q/k blobs but `long` (LONG_FIELDS), `long_rows` [per layer
# [blob per row chunk]], `long_levels` [per layer [blob per level]] and `long_profile` (one blob).
# A blob reference is an index into the step's blobs: the main record's, then part 1's, and so on.

_GROUP_FIELDS = ("name", "num_layers", "num_heads", "num_tokens", "num_key_tokens", "tokens", "key_tokens",
                 "causal", "encoding", "top_k", "layer_names", "has_qk", "long")  # fmt: skip
_EXAMPLE_FIELDS = ("text", "segments", "pos", "generation")
IMAGE_FIELDS = ("grid", "patch_size", "prefix_tokens", "prefix_names")


def create_manifest(examples, parts=None):
    """examples: one dict per example, as `parse_manifest` returns them (blob references included)."""
    manifest = {"version": FORMAT_VERSION, "examples": [{**e, "index": i} for i, e in enumerate(examples)]}
    if parts is not None:
        manifest["parts"] = list(parts)
    return manifest


def _v1_example(entry):
    """A v1 manifest entry as a v2 one: one group, "self", whose layers share one blob."""
    group = {k: entry.get(k) for k in ("num_layers", "num_heads", "num_tokens", "tokens", "causal", "encoding")}
    group["has_qk"] = entry.get("qk_blob") is not None
    group.update(
        name=DEFAULT_GROUP, num_key_tokens=entry.get("num_tokens"), key_tokens=entry.get("tokens"),
        attention_blob=entry.get("attention_blob"), qk_blob=entry.get("qk_blob"),
    )
    return {**{k: entry.get(k) for k in ("index", "tokens", *_EXAMPLE_FIELDS)}, "groups": [group], "image": None}


# What a manifest may claim of a group before anything is sized by it (heads and layers of the
# largest models are in the hundreds; sparse key indices are uint16, so at most 0xFFFF tokens).
MAX_LAYERS = 4096
MAX_HEADS = 4096
MAX_GROUP_TOKENS = 0xFFFF


def _checked_entry(entry, index):
    """A manifest entry as v2, its groups' sizes checked against the bounds and their own token lists."""
    if not isinstance(entry, dict):
        raise FormatError(f"manifest entry {index} is not an object")
    if "groups" not in entry:
        entry = _v1_example(entry)
    groups = entry.get("groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise FormatError(f"manifest entry {index} has no attention groups")
    for g in groups:
        where = f"example {index}, group {g.get('name')!r}"
        tokens_bound = MAX_LONG_GROUP_TOKENS if g.get("encoding") == ENCODING_LONG else MAX_GROUP_TOKENS
        for field, bound in (("num_layers", MAX_LAYERS), ("num_heads", MAX_HEADS), ("num_tokens", tokens_bound),
                             ("num_key_tokens", tokens_bound)):
            value = g.get(field)
            if field == "num_key_tokens" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= bound:
                raise FormatError(f"{where}: the manifest gives {field} = {value!r}, not a count from 1 to {bound:,}")
        for field, count in (("tokens", "num_tokens"), ("key_tokens", "num_key_tokens")):
            tokens = g.get(field)
            if tokens is not None and (not isinstance(tokens, list) or len(tokens) != g.get(count, g["num_tokens"])):
                raise FormatError(f"{where}: its {field} do not match its {count}")
        if g.get("encoding") == ENCODING_LONG:
            check_long(g, where)
    if entry.get("generation") is not None:
        check_generation(entry["generation"], {g.get("name"): g["num_tokens"] for g in groups}, f"example {index}")
    if entry.get("images") is not None:
        entry = {**entry, "images": check_images(entry["images"], groups[0].get("num_key_tokens") or groups[0]["num_tokens"],
                                                 f"example {index}", stored=True)}
    return {**entry, "index": index}


def unreadable(example):
    """The reason a parsed manifest entry cannot be served, or None."""
    return example.get("error")


def parse_manifest(manifest):
    """The decoded manifest of a step (v1 or v2; `codecs.decode_manifest` reads it from its blob), as v2:
    every example has `groups`."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("examples"), list):
        raise FormatError("attention manifest lacks its 'examples' list")
    version = manifest.get("version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise NewerFormatError(f"manifest of storage format v{version}")
    examples = []
    for index, entry in enumerate(manifest["examples"]):
        try:
            examples.append(_checked_entry(entry, index))
        except FormatError as e:  # this example fails alone: the others of the step are still served
            examples.append({"index": index, "error": str(e)})
    parts = manifest.get("parts")
    if parts is not None and (not isinstance(parts, list) or not all(isinstance(n, int) and n >= 0 for n in parts)):
        raise FormatError("manifest 'parts' is not a list of blob counts")
    return {"version": version, "examples": examples, "parts": parts}


def blob_location(manifest, ref, what):
    """(part, index within that part's record) of blob reference `ref`; part 0 is the main record."""
    if not isinstance(ref, int) or isinstance(ref, bool) or ref < 0:
        raise FormatError(f"the manifest gives no valid blob index for the {what}")
    for part, count in enumerate(manifest.get("parts") or [ref + 1]):
        if ref < count:
            return part, ref
        ref -= count
    raise FormatError(f"the manifest's blob index for the {what} is past the step's last blob")


def image_ref(example, image=0):
    """The blob of image `image` of a parsed example (a vision transformer's one image, or a vision-language
    model's i-th), or a LookupError saying what the example has."""
    images = example.get("images")
    refs = [m["blob"] for m in images] if images else [example.get("image_blob")]
    if refs[0] is None:
        raise LookupError("has no image")
    if image >= len(refs):
        raise LookupError(f"has no image {image} (it has {len(refs)})")
    return refs[image]


def per_layer_refs(group, kind, what):
    """The blob references of a v2 group's layers (`kind` "attention" or "qk"), their count checked against
    its layers; None for a v1 group, whose layers share one blob."""
    refs = group.get(f"{kind}_blobs")
    if not isinstance(refs, list):
        return None
    if len(refs) != group.get("num_layers"):
        raise FormatError(f"the manifest lists {len(refs)} {what} blobs for {group.get('num_layers')} layers")
    return refs


def find_group(example, name=None):
    """The group called `name` of a manifest example (the first when None), or KeyError naming the groups
    (FormatError for an example the manifest describes wrongly)."""
    if "error" in example:
        raise FormatError(example["error"])
    groups = example["groups"]
    if name is None:
        return groups[0]
    for group in groups:
        if group.get("name") == name:
            return group
    names = ", ".join(repr(g.get("name")) for g in groups)
    raise KeyError(f"example {example['index']} has no group {name!r}; its groups: {names}")


def group_payload(group):
    """What /examples says of one group (no blob references)."""
    out = {k: group.get(k) for k in _GROUP_FIELDS if k in group}
    out["has_qk"] = bool(group.get("has_qk"))
    if out.get("encoding") == ENCODING_LONG:
        spec = out["long"]
        out["long"] = {k: spec[k] for k in LONG_FIELDS}
        out["long"]["levels"] = [{k: v[k] for k in LONG_LEVEL_FIELDS} for v in spec["levels"]]
    return out


def example_payload(example):
    """One entry of /examples, built field by field from a parsed manifest entry. Top-level fields
    describe the first group, as in v1, so that older clients keep working."""
    groups = [group_payload(g) for g in example["groups"]]
    first = groups[0]
    out = {"index": example["index"], "tokens": example.get("tokens") or first.get("tokens")}
    for k in ("num_layers", "num_heads", "num_tokens", "causal", "encoding", "has_qk"):
        out[k] = first.get(k)
    for k in _EXAMPLE_FIELDS:  # null when the writer did not have it
        out[k] = example.get(k)
    image = example.get("image")
    out["image"] = {k: image.get(k) for k in IMAGE_FIELDS} if isinstance(image, dict) else None
    images = example.get("images")
    out["images"] = [{"size": m["size"], "pieces": m["pieces"]} for m in images] if images else None
    out["groups"] = groups
    return out


# ---------------------------------------------------------------------------------------------
# The exemplar table (http_api.md, /exemplars)


def exemplar_table(exemplars, inputs, top_k):
    """The /exemplars table from per-head lists of (input, score, from, to); `inputs` lists
    every input those indices refer to (tokens, text, and the stored example index or None)."""
    num_layers, num_heads = len(exemplars), len(exemplars[0]) if exemplars else 0
    return {
        "num_layers": num_layers,
        "num_heads": num_heads,
        "top_k": top_k,
        "inputs": inputs,
        "heads": [
            [
                [{"input": int(i), "score": float(s), "from": int(q), "to": int(k)} for i, s, q, k in head]
                for head in layer
            ]
            for layer in exemplars
        ],
    }


def exemplars_payload(table):
    """The /exemplars body fields of a stored table, named rather than copied."""
    if not isinstance(table, dict):
        raise FormatError("exemplar table is not a JSON object")
    return {k: table.get(k) for k in ("num_layers", "num_heads", "top_k", "inputs", "heads")}
