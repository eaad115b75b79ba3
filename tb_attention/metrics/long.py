"""Long inputs: one layer's top-k rows, block pyramid, distance profile and sinks, fed query chunks; their metrics."""

# Definitions: http_api.md, "Long examples". A layer is fed one query chunk of weights [H, c, Nk] at a
# time (the softmax the model computed, sinks included) and keeps only what the contract stores, so
# memory is O(H · Nq · k) plus the finest level's sums, never [H, Nq, Nk]:
# - top-k rows by torch.topk (k + 1 of them, to see a tie at the k-th place; in rows with such a tie
#   the tied keys are ranked by key with a second topk, so ties go to the smaller key); slots of weight
#   0 (masked keys, or a causal row with fewer than k keys) are padding (UNUSED);
# - the finest level's sums of weights per (query block, key block); coarser levels are the finest
#   pooled, so every level holds the same mass;
# - the distance profile from each row's cumulative sums read at the bin boundaries (a bin's mass is a
#   difference of two of them; torch's CPU cumsum accumulates in double, so each float32 sum is within
#   6e-8), in slices of rows into one reused buffer;
# - sink mass: the first keys' columns.

import numpy as np
import torch

from tb_attention.storage.codecs import long as long_codec

CUMSUM_BYTES = 64 << 20  # float32 cumulative sums made at a time for the profile


class LongLayerSums:
    """One layer of a long group: `add(weights, start)` per query chunk, in any order, then `result()`.

    plan: a codecs.long.LongPlan; num_queries, num_keys: the group's Nq, Nk (queries are the last Nq
    of the Nk positions). The sums and top-k rows live on `device` until `result()`.
    """

    def __init__(self, plan, num_heads, num_queries, num_keys, device):
        self.plan, self.num_heads, self.num_queries, self.num_keys = plan, num_heads, num_queries, num_keys
        self.device = torch.device(device)
        k = plan.top_k
        # On the device, to the host once per layer (no wait per chunk); int32 -1 reads as uint32 UNUSED.
        self.top_index = torch.full((num_heads, num_queries, k), -1, dtype=torch.int32, device=self.device)
        self.top_weight = torch.zeros(num_heads, num_queries, k, device=self.device)
        self.remainder = torch.zeros(num_heads, num_queries, device=self.device)
        self.block = plan.levels[-1][0] if plan.levels else None  # the finest level's block
        rows, cols = (plan.levels[-1][1], plan.levels[-1][2]) if plan.levels else (0, 0)
        self.cells = torch.zeros(num_heads, rows, cols, device=self.device)  # float32: a cell sums <= block rows
        self._cum = None  # the profile's buffer of cumulative sums
        self.profile = torch.zeros(num_heads, plan.distance_bins, dtype=torch.float64, device=self.device)
        self.sinks = torch.zeros(num_heads, plan.sink_tokens, dtype=torch.float64, device=self.device)
        self.rows_seen = 0

    def add(self, weights, start):
        """Adds queries [start, start + c): weights float32 [H, c, n] (not changed) over the keys [0, n), n <= Nk
        (the keys past n have weight 0: a causal chunk stops at its last query's key)."""
        h, c, nk = weights.shape
        if h != self.num_heads or nk > self.num_keys or not 0 <= start <= self.num_queries - c:
            raise ValueError(f"a chunk of weights {list(weights.shape)} at query {start} for a layer of "
                             f"{self.num_heads} heads, {self.num_queries} queries and {self.num_keys} keys")
        with torch.no_grad():
            index, kept = top_rows(weights, self.plan.top_k)
            remainder = (weights.sum(-1) - kept.sum(-1)).clamp_min_(0)
            stop = start + c
            self.top_index[:, start:stop] = index.masked_fill(index == long_codec.UNUSED, -1)
            self.top_weight[:, start:stop] = kept
            self.remainder[:, start:stop] = remainder
            if self.block is not None:
                self._add_cells(weights, start)
            self.profile += self._profile(weights, start)
            s = self.plan.sink_tokens
            counted = slice(max(0, s - start), c) if self.num_queries > s else slice(None)
            self.sinks[:, : min(s, nk)] += weights[:, counted, :s].sum(1, dtype=torch.float64)
        self.rows_seen += c
        if self.rows_seen == self.num_queries:
            self._cum = None

    def _add_cells(self, weights, start):
        b = self.block
        h, c, nk = weights.shape
        full = nk // b
        per_key = weights[..., : full * b].reshape(h, c, full, b).sum(-1)  # float32 over at most b keys
        if full * b < nk:
            per_key = torch.cat([per_key, weights[..., full * b :].sum(-1, keepdim=True)], -1)
        row_block = torch.arange(start, start + c, device=weights.device) // b
        self.cells[:, :, : per_key.shape[-1]].index_add_(1, row_block, per_key)

    def _profile(self, weights, start):
        """float64 [H, B]: the chunk's mass per distance bin, summed over its queries."""
        h, c, nk = weights.shape
        bins = self.plan.distance_bins
        lo = 2 ** torch.arange(bins - 1, device=weights.device)  # bin b >= 1: 2^(b-1) <= d < 2^b
        hi = 2 * lo
        out = torch.zeros(h, bins, dtype=torch.float64, device=weights.device)
        step = max(1, CUMSUM_BYTES // (4 * h * (self.num_keys + 1)))
        size = h * min(step, c) * (nk + 1)
        if self._cum is None or self._cum.numel() < size or self._cum.device != weights.device:
            self._cum = torch.empty(h * step * (self.num_keys + 1), device=weights.device)
        for first in range(0, c, step):
            w = weights[:, first : first + step]
            n = w.shape[1]
            cum = self._cum[: h * n * (nk + 1)].view(h, n, nk + 1)  # cum[x] = Σ_{j < x} w_j
            cum[..., 0] = 0
            torch.cumsum(w, -1, out=cum[..., 1:])
            p = torch.arange(start + first, start + first + n, device=w.device) + (self.num_keys - self.num_queries)
            p = p[:, None]
            left = _at(cum, p - lo + 1) - _at(cum, p - hi + 1)  # keys p - hi < j <= p - lo
            right = _at(cum, p + hi) - _at(cum, p + lo)  # keys p + lo <= j < p + hi
            diagonal = _at(cum, p + 1) - _at(cum, p)
            out[:, 0] += diagonal.sum((1, 2), dtype=torch.float64)
            out[:, 1:] += (left + right).sum(1, dtype=torch.float64)
        return out

    def result(self):
        """The layer as a codecs.long.LongLayer (every query must have been added)."""
        if self.rows_seen != self.num_queries:
            raise ValueError(f"{self.rows_seen} query rows added to a layer of {self.num_queries}")
        nq = float(self.num_queries)
        s = self.plan.sink_tokens
        sink_queries = float(self.num_queries - s if self.num_queries > s else self.num_queries)
        return long_codec.LongLayer(
            top_index=self.top_index.cpu().numpy().view(np.uint32),
            top_weight=self.top_weight.cpu().numpy(),
            remainder=self.remainder.cpu().numpy(),
            levels=self._levels(),
            profile=(self.profile / nq).float().cpu().numpy(),
            sinks=(self.sinks / sink_queries).float().cpu().numpy(),
        )

    def _levels(self):
        """Per plan level, coarsest first: float32 [H, rows, cols], each cell its block's mean row mass."""
        out = []
        for block, rows, cols in self.plan.levels:
            f = block // self.block
            h, r, c = self.cells.shape
            pooled = self.cells
            if f > 1:
                pooled = torch.nn.functional.pad(pooled, (0, cols * f - c, 0, rows * f - r))
                pooled = pooled.reshape(h, rows, f, cols, f).sum((2, 4), dtype=torch.float64)
            queries = (self.num_queries - torch.arange(rows, device=self.device) * block).clamp(max=block)
            out.append((pooled / queries[None, :, None]).float().cpu().numpy())
        return out


def _at(cum, x):
    """cum[h, i, x[i, m]] with x clipped to the row ([H, n, m]): cumulative sums at bin boundaries."""
    h, n, width = cum.shape
    return cum.gather(-1, x.clamp(0, width - 1).expand(h, n, -1))


def top_rows(weights, k):
    """(index uint32-valued int64 [..., k], weight float32 [..., k]): each row's k largest weights, largest
    first, ties to the smaller key; slots of weight 0 hold codecs.long.UNUSED and 0."""
    nk = weights.shape[-1]
    kk = min(k, nk)
    take = min(kk + 1, nk)
    values, index = torch.topk(weights, take, dim=-1)
    if take > kk:
        tied = (values[..., kk] == values[..., kk - 1]) & (values[..., kk - 1] > 0)
        values, index = values[..., :kk].clone(), index[..., :kk].clone()
        where = tied.nonzero(as_tuple=True)
        if where[0].numel():  # the k-th place is tied: the keys above it, then the tied keys by key
            rows, last = weights[where], values[where][:, kk - 1 : kk]
            order = torch.arange(nk, 0, -1, device=weights.device, dtype=torch.float64) / (nk + 1)
            rank = torch.where(rows > last, 2.0 + rows.double(), torch.where(rows == last, order, -1.0))
            i = rank.topk(kk, dim=-1).indices
            values[where], index[where] = rows.gather(-1, i), i
    order = index.argsort(-1)  # within the kept keys: by key, then stably by weight (ties to the smaller key)
    index, values = index.gather(-1, order), values.gather(-1, order)
    order = values.argsort(dim=-1, descending=True, stable=True)
    index, values = index.gather(-1, order), values.gather(-1, order)
    index = index.masked_fill(values <= 0, long_codec.UNUSED)
    values = values.clamp_min(0)
    if kk < k:
        pad = (0, k - kk)
        index = torch.nn.functional.pad(index, pad, value=long_codec.UNUSED)
        values = torch.nn.functional.pad(values, pad, value=0.0)
    return index, values


# ---------------------------------------------------------------------------------------------
# Metrics of long inputs (http_api.md, "Metrics of long inputs"), per layer and head

LOCAL_BINS = 8  # local_share: the profile's bins 0-7, distances d <= 127


def local_share(profile):
    """[..., H] from profile [..., H, B]: the mean mass within distance 127."""
    return np.asarray(profile)[..., :LOCAL_BINS].sum(-1)


def sink_share(sinks):
    """[..., H] from sinks [..., H, s]: the mean mass on the first s tokens."""
    return np.asarray(sinks).sum(-1)


def retrieval_hits(top_index, answers, needles):
    """(hits [...], count): of the answer queries `answers`, those whose top-1 key is the needle token
    they copy (`needles`, key positions, one per answer). top_index [..., Nq, k] (e.g. LongLayer.top_index
    [H, Nq, k]): hits per head."""
    answers = np.asarray(answers, np.int64)
    needles = np.asarray(needles, np.int64)
    if answers.shape != needles.shape or answers.ndim != 1:
        raise ValueError(f"{answers.size} answer queries for {needles.size} needle tokens")
    top = np.asarray(top_index)[..., answers, 0].astype(np.int64)  # [..., n]
    return (top == needles).sum(-1), answers.size
