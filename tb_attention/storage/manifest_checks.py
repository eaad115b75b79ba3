"""The manifest's checked parts: what a long group, a generation and a vision-language example's images may
claim (http_api.md), and the errors that stored data raises. `schema` re-exports every name here."""

# Standard library only; the checks size nothing before they have passed.


class FormatError(ValueError):
    """Stored data that this version of tb-attention cannot read."""


class NewerFormatError(FormatError):
    """Data written by a newer tb-attention than the one installed."""


def _count(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# Long examples (http_api.md, "Long examples"): a group above the writer's long_tokens stores top-k rows,
# a block pyramid and a distance profile instead of attention blobs.
ENCODING_LONG = "long"
MAX_LONG_GROUP_TOKENS = 1 << 20  # queries or keys of a long group (key indices are uint32)
LONG_FIELDS = ("top_k", "sink_tokens", "row_chunk", "budget", "levels", "distance_bins")  # the group's `long`
LONG_LEVEL_FIELDS = ("block", "rows", "cols")


def long_distance_bins(num_queries, num_keys):
    """B = 2 + floor(log2(max(Nq, Nk))) distance bins: bin 0 holds d = 0, bin b ≥ 1 holds 2^(b−1) ≤ d < 2^b."""
    return max(int(num_queries), int(num_keys)).bit_length() + 1


def check_long(group, where):
    """A long group's `long` object and blob references, checked against its sizes (http_api.md, "Blobs of a long
    group"): what the long routes index by is what the group's tokens and layers say."""
    nq, nk, num_layers = group["num_tokens"], group.get("num_key_tokens") or group["num_tokens"], group["num_layers"]
    spec = group.get("long")
    if not isinstance(spec, dict):
        raise FormatError(f"{where}: a long group without its 'long' object")
    for field, low, high in (("top_k", 1, nk), ("sink_tokens", 0, nk), ("row_chunk", 1, MAX_LONG_GROUP_TOKENS),
                             ("budget", 1, 1 << 62)):
        if not _count(spec.get(field), low, high):
            raise FormatError(f"{where}: long {field} = {spec.get(field)!r}, not an integer from {low} to {high:,}")
    if spec.get("distance_bins") != long_distance_bins(nq, nk):
        raise FormatError(f"{where}: long distance_bins = {spec.get('distance_bins')!r}; {nq} x {nk} tokens "
                          f"have {long_distance_bins(nq, nk)}")
    levels = spec.get("levels")
    if not isinstance(levels, list) or not 0 < len(levels) <= 21 or not all(isinstance(v, dict) for v in levels):
        raise FormatError(f"{where}: long levels is not a list of 1 to 21 levels")
    for i, level in enumerate(levels):
        block = level.get("block")
        if not _count(block, 1, MAX_LONG_GROUP_TOKENS) or block & (block - 1) or (i and block * 2 != levels[i - 1]["block"]):
            raise FormatError(f"{where}: level {i}'s block {block!r} is not a power of two half the level above's")
        if (level.get("rows"), level.get("cols")) != (-(-nq // block), -(-nk // block)):
            raise FormatError(f"{where}: level {i} has {level.get('rows')!r} x {level.get('cols')!r} cells, not "
                              f"{nq} x {nk} tokens in blocks of {block}")
    chunks = -(-nq // spec["row_chunk"])
    for field, count in (("long_rows", chunks), ("long_levels", len(levels))):
        refs = group.get(field)
        if not isinstance(refs, list) or len(refs) != num_layers or not all(
            isinstance(r, list) and len(r) == count for r in refs
        ):
            raise FormatError(f"{where}: {field} is not {count} blob references for each of its {num_layers} layers")
    if not _count(group.get("long_profile"), 0, 1 << 62):
        raise FormatError(f"{where}: a long group without its long_profile blob")


# ---------------------------------------------------------------------------------------------
# What a generation probe stores of each decoding (http_api.md, "generation")

GENERATION_TOP = 5  # alternatives kept per generated token
MAX_GENERATED = 0xFFFF
GENERATION_STOPS = ("eos", "max_new_tokens", "stop_strings", "max_length", "other")


def check_generation(generation, group_tokens, where):
    """`generation` as the writer and the reader accept it, or FormatError naming what is wrong.

    group_tokens: {group name: its number of query tokens}. The generated tokens are the queries of
    `group` from `prompt_length` on, but for the last one, which no decoding step read."""
    if not isinstance(generation, dict):
        raise FormatError(f"{where}: generation is not an object")
    group = generation.get("group")
    if group not in group_tokens:
        raise FormatError(f"{where}: generation names group {group!r}; the example's groups: {sorted(group_tokens)}")
    prompt_length = generation.get("prompt_length")
    if not isinstance(prompt_length, int) or isinstance(prompt_length, bool) or prompt_length < 1:
        raise FormatError(f"{where}: generation's prompt_length {prompt_length!r} is not a positive count")
    tokens, ids, probs, top = (generation.get(k) for k in ("tokens", "ids", "probs", "top"))
    if not isinstance(tokens, list) or not 0 < len(tokens) <= MAX_GENERATED:
        raise FormatError(f"{where}: generation's tokens are not a list of 1 to {MAX_GENERATED:,} tokens")
    count = len(tokens)
    for name, values in (("ids", ids), ("probs", probs), ("top", top)):
        if not isinstance(values, list) or len(values) != count:
            raise FormatError(f"{where}: generation's {name} are not one per generated token ({count})")
    if not all(isinstance(t, str) for t in tokens) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise FormatError(f"{where}: generation's tokens must be strings and its ids integers")
    if not all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in probs):
        raise FormatError(f"{where}: generation's probs must be probabilities in [0, 1]")
    for alternatives in top:
        if not isinstance(alternatives, list) or len(alternatives) > GENERATION_TOP or not all(
            isinstance(a, list) and len(a) == 3 and isinstance(a[0], str) and isinstance(a[1], int)
            and isinstance(a[2], (int, float)) and 0 <= a[2] <= 1 for a in alternatives
        ):
            raise FormatError(f"{where}: generation's top lists are not up to {GENERATION_TOP} [token, id, prob] each")
    expected = prompt_length + count - 1
    if group_tokens[group] != expected:
        raise FormatError(
            f"{where}: group {group!r} has {group_tokens[group]} query tokens, not the prompt's {prompt_length} and "
            f"the {count - 1} generated tokens that were read back ({expected})"
        )
    if generation.get("stop") not in GENERATION_STOPS:
        raise FormatError(f"{where}: generation's stop {generation.get('stop')!r} is not one of {GENERATION_STOPS}")
    return generation


# ---------------------------------------------------------------------------------------------
# Images inside a sequence (vision-language models; http_api.md, "images")


MAX_IMAGES = 1024  # images per example (vision-language)


def _natural(value):
    return _count(value, 0, float("inf"))


def check_images(images, num_tokens, where, stored=False):
    """`images` of an example as stored (without the PNGs: with `stored`, each names its `blob`), or
    FormatError naming what is wrong. num_tokens: the first group's key tokens, which the spans index."""
    if not isinstance(images, list) or not 0 < len(images) <= MAX_IMAGES:
        raise FormatError(f"{where}: images is not a list of 1 to {MAX_IMAGES} images")
    taken = []
    out = []
    for i, image in enumerate(images):
        at = f"{where}, image {i}"
        if not isinstance(image, dict):
            raise FormatError(f"{at} is not an object")
        size, pieces = image.get("size"), image.get("pieces")
        if not isinstance(size, list) or len(size) != 2 or not all(_natural(v) and v > 0 for v in size):
            raise FormatError(f"{at}: size is not [height, width] in pixels, got {size!r}")
        if not isinstance(pieces, list) or not pieces:
            raise FormatError(f"{at}: pieces is not a list of the image's token runs")
        checked = []
        for k, piece in enumerate(pieces):
            if not isinstance(piece, dict):
                raise FormatError(f"{at}, piece {k} is not an object")
            span, grid, box = piece.get("span"), piece.get("grid"), piece.get("box")
            if not (isinstance(span, list) and len(span) == 2 and all(map(_natural, span)) and span[0] < span[1] <= num_tokens):
                raise FormatError(f"{at}, piece {k}: span {span!r} is not [start, stop) inside the {num_tokens} tokens")
            if not (isinstance(grid, list) and len(grid) == 2 and all(_natural(v) and v > 0 for v in grid)):
                raise FormatError(f"{at}, piece {k}: grid {grid!r} is not [rows, cols]")
            if grid[0] * grid[1] != span[1] - span[0]:
                raise FormatError(f"{at}, piece {k}: a {grid[0]} x {grid[1]} grid is not the {span[1] - span[0]} "
                                  f"tokens of span {span}")
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                    for v in box)
                    and 0 <= box[0] < box[2] <= size[0] and 0 <= box[1] < box[3] <= size[1]):
                raise FormatError(f"{at}, piece {k}: box {box!r} is not [top, left, bottom, right] inside the "
                                  f"{size[0]} x {size[1]} frame")
            name = piece.get("name")
            if name is not None and not isinstance(name, str):
                raise FormatError(f"{at}, piece {k}: name is not a string")
            taken.append((span[0], span[1]))
            checked.append({"span": list(span), "grid": list(grid), "box": list(box), **({"name": name} if name else {})})
        entry = {"size": list(size), "pieces": checked}
        if stored:
            if not _natural(image.get("blob")):
                raise FormatError(f"{at}: the manifest gives no blob index for its PNG")
            entry["blob"] = image["blob"]
        out.append(entry)
    taken.sort()
    for (_, stop), (start, _) in zip(taken, taken[1:]):
        if start < stop:
            raise FormatError(f"{where}: the spans of the images' pieces overlap")
    return out
