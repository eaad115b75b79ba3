"""Long-example arrays of a small dense attention, pooled as http_api.md defines them (the tests' reference)."""

# Written from the contract's definitions, loop by loop where that reads closest to them, and
# independent of tb_attention's code: the tests compare what is stored and served against it.

import numpy as np

from tb_attention.storage.codecs import long


def softmax_attention(num_heads, num_tokens, *, seed=0, causal=True, sharpness=3.0, num_keys=None):
    """float32 [H, Nq, Nk]: softmax rows of random scores, with a sink on key 0 and a local bias, causal
    (the queries are the last Nq keys) when asked."""
    rng = np.random.default_rng(seed)
    nk = num_keys or num_tokens
    offset = nk - num_tokens
    scores = rng.standard_normal((num_heads, num_tokens, nk)) * sharpness
    scores[:, :, 0] += 2.0 + np.arange(num_heads)[:, None] * 0.5  # a sink, stronger in later heads
    i = np.arange(num_tokens)[:, None] + offset
    j = np.arange(nk)[None, :]
    scores -= np.abs(i - j)[None] * 0.05 * (np.arange(num_heads)[:, None, None] % 3)  # local heads
    if causal:
        scores = np.where(j <= i, scores, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    w = np.exp(scores)
    return (w / w.sum(-1, keepdims=True)).astype(np.float32)


def top_rows(a, k, causal):
    """(index uint32 [H, Nq, k], weight [H, Nq, k], remainder [H, Nq]): each row's k largest weights,
    largest first, ties to the smaller key; a causal row with fewer than k visible keys padded."""
    h, nq, nk = a.shape
    offset = nk - nq
    index = np.full((h, nq, k), long.UNUSED, dtype=np.uint32)
    weight = np.zeros((h, nq, k), dtype=np.float32)
    remainder = np.zeros((h, nq), dtype=np.float32)
    for head in range(h):
        for i in range(nq):
            visible = min(nk, i + offset + 1) if causal else nk
            row = a[head, i, :visible]
            order = np.lexsort((np.arange(visible), -row))[:k]  # by weight, descending, then by key
            index[head, i, : len(order)] = order
            weight[head, i, : len(order)] = row[order]
            remainder[head, i] = np.float32(a[head, i].sum(dtype=np.float64) - row[order].sum(dtype=np.float64))
    return index, weight, remainder


def level(a, block):
    """[H, ceil(Nq/b), ceil(Nk/b)]: per block of queries, the mean over its queries of their mass on each block of keys."""
    nq, nk = a.shape[1:]
    q_starts, k_starts = np.arange(0, nq, block), np.arange(0, nk, block)
    mass = np.add.reduceat(np.add.reduceat(a.astype(np.float64), q_starts, axis=1), k_starts, axis=2)
    queries = np.minimum(q_starts + block, nq) - q_starts  # the last block may be shorter
    return (mass / queries[None, :, None]).astype(np.float32)


def profile(a, bins):
    """[H, B]: the mean over queries of the mass at distances d = |i + (Nk − Nq) − j| of each bin."""
    h, nq, nk = a.shape
    d = np.abs(np.arange(nq)[:, None] + (nk - nq) - np.arange(nk)[None, :])
    which = np.where(d == 0, 0, np.floor(np.log2(np.maximum(d, 1))).astype(int) + 1)
    out = np.zeros((h, bins), dtype=np.float64)
    for b in range(bins):
        out[:, b] = np.where(which == b, a, 0).sum(axis=2).mean(axis=1)
    return out.astype(np.float32)


def sinks(a, count):
    """[H, count]: the mean over queries i ≥ count of a_is (over every query when there are no more)."""
    queries = a[:, count:] if a.shape[1] > count else a
    return queries[:, :, :count].mean(axis=1, dtype=np.float64).astype(np.float32)


def long_layer(a, plan, causal):
    """A codecs.long.LongLayer of dense weights [H, Nq, Nk], as capture would compute it."""
    index, weight, remainder = top_rows(a, plan.top_k, causal)
    return long.LongLayer(
        top_index=index, top_weight=weight, remainder=remainder,
        levels=[level(a, block) for block, _, _ in plan.levels],
        profile=profile(a, plan.distance_bins), sinks=sinks(a, plan.sink_tokens),
    )
