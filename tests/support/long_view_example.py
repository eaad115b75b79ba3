"""A 32,768-token long example whose heads have known patterns, built row by row (never N x N)."""

# Each head's attention is given as up to M (key, weight) pairs per query row, so the top-k rows,
# remainders, block levels, distance profile and sinks of http_api.md ("Long examples") are exact
# sums over O(N * M) pairs. Layer 0's heads: 0 local (the 8 previous tokens, decaying), 1 sink (most
# on tokens 0-3, the rest over the 20 previous tokens, so top-16 leaves a remainder), 2 retrieval
# (queries ANSWER attend to token NEEDLE, 32k tokens back; the others attend to their 16 previous
# tokens), 3 previous token. Layer l's head h has layer 0's pattern (h + l) % 4.

import numpy as np

from tb_attention.storage import codecs

N = 32768
HEADS = 4
LAYERS = 2
NEEDLE = 1234  # the far token the retrieval head's answer queries attend to
ANSWER = (30000, 30064)  # queries of the retrieval head that attend to NEEDLE
NEEDLE_WEIGHT = 0.8
UNSAFE = 20000  # a token that must stay text (markup in a token)
PATTERNS = ("local", "sink", "retrieval", "previous")
_WORDS = ("the", "a", "model", "reads", "long", "text", "and", "finds", "one", "token", "in", "many", "of", "it", "that",
          "every", "layer", "sees", "far", "back")


def tokens(n=N):
    rng = np.random.default_rng(22)
    out = [" " + _WORDS[w] for w in rng.integers(0, len(_WORDS), n)]
    out[0] = "<s>"
    out[NEEDLE] = " NEEDLE"
    out[UNSAFE] = "<img src=x onerror=alert(1)>"
    return out


def pattern(name, n=N):
    """(keys int64 [n, M], weights float64 [n, M]) of one head's rows; key -1 marks an unused pair."""
    i = np.arange(n)[:, None]
    if name == "local":
        d = np.arange(8)[None, :]
        keys, w = i - d, np.broadcast_to(0.5 ** np.arange(8), (n, 8)).copy()
    elif name == "previous":
        keys, w = np.concatenate([i - 1, i], 1), np.tile([0.9, 0.1], (n, 1))
    elif name == "sink":
        d = np.arange(20)[None, :]
        keys = np.concatenate([np.tile(np.arange(4), (n, 1)), i - d], 1)
        w = np.concatenate([np.tile([0.55, 0.05, 0.05, 0.05], (n, 1)), np.full((n, 20), 0.3 / 20)], 1)
        keys[:, 4:][(i - d) < 4] = -1  # the sinks are counted once
    elif name == "retrieval":
        d = np.arange(16)[None, :]
        keys, w = np.concatenate([i - d, np.full((n, 1), -1)], 1), np.concatenate([np.full((n, 16), 1 / 16), np.zeros((n, 1))], 1)
        a, b = ANSWER
        keys[a:b] = -1
        w[a:b] = 0
        keys[a:b, :4] = i[a:b] - np.arange(4)[None, :]
        w[a:b, :4] = (1 - NEEDLE_WEIGHT) / 4
        keys[a:b, 16], w[a:b, 16] = NEEDLE, NEEDLE_WEIGHT
    else:
        raise ValueError(name)
    keys = np.where(keys >= 0, keys, -1)
    w = np.where(keys >= 0, w, 0.0)
    return keys, w / w.sum(1, keepdims=True)


def long_layer(layer, plan):
    """The codecs.LongLayer of `layer` under `plan`, from each head's pairs."""
    n, k, h = plan.num_queries, plan.top_k, plan.num_heads
    index = np.full((h, n, k), codecs.long.UNUSED, np.uint32)
    weight = np.zeros((h, n, k), np.float32)
    remainder = np.zeros((h, n), np.float32)
    levels = [np.zeros((h, rows, cols), np.float32) for _, rows, cols in plan.levels]
    profile = np.zeros((h, plan.distance_bins), np.float32)
    sinks = np.zeros((h, plan.sink_tokens), np.float32)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, 1))
    for head in range(h):
        keys, w = pattern(PATTERNS[(head + layer) % len(PATTERNS)], n)
        # largest first, ties to the smaller key; unused pairs last
        order = np.lexsort((np.where(keys < 0, n, keys), -w), axis=1)
        keys, w = np.take_along_axis(keys, order, 1), np.take_along_axis(w, order, 1)
        kept = min(k, keys.shape[1])
        index[head, :, :kept] = np.where(keys[:, :kept] >= 0, keys[:, :kept], codecs.long.UNUSED)
        weight[head, :, :kept] = w[:, :kept]
        remainder[head] = np.maximum(0, w.sum(1) - w[:, :kept].sum(1))
        used = keys >= 0
        qi = np.broadcast_to(rows, keys.shape)[used]
        kj, ww = keys[used], w[used]
        for level, (block, nrows, ncols) in zip(levels, plan.levels):
            per_block = np.bincount(np.arange(n) // block, minlength=nrows)
            cell = (qi // block) * ncols + kj // block
            level[head] = (np.bincount(cell, ww, nrows * ncols).reshape(nrows, ncols) / per_block[:, None]).astype(np.float32)
        d = qi - kj
        bins = np.where(d == 0, 0, np.floor(np.log2(np.maximum(d, 1))).astype(int) + 1)
        profile[head] = np.bincount(bins, ww, plan.distance_bins) / n
        late = (qi >= plan.sink_tokens) & (kj < plan.sink_tokens)
        sinks[head] = np.bincount(kj[late], ww[late], plan.sink_tokens) / (n - plan.sink_tokens)
    return codecs.LongLayer(index, weight, remainder, levels, profile, sinks)


def long_example(n=N, layers=LAYERS, heads=HEADS):
    """The example dict `summary.write_examples` takes: one long causal group of n tokens."""
    plan = codecs.long.plan(layers, heads, n, n)
    toks = tokens(n)
    group = {"name": "self", "tokens": toks, "key_tokens": toks, "causal": True,
             "long": {"plan": plan, "layers": [long_layer(layer, plan) for layer in range(layers)]}}
    return {"tokens": toks, "text": None, "groups": [group]}


def write_logdir(logdir, steps=(0, 100)):
    """A run `train` with the long example at `steps` (tag `long32k`) and a short dense one (tag `short`)."""
    from tb_attention.storage import summary

    example = long_example()
    short = np.full((1, 2, 6, 6), 1 / 6, np.float32)
    with summary.Writer(str(logdir / "train")) as writer:
        for step in steps:
            summary.write_examples(writer, "long32k", [example], step)
        summary.write_examples(writer, "short", [{"attention": short, "tokens": list("abcdef")}], 0)
    return example
