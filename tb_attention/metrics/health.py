"""Attention-health statistics per head (max logit, entropy, null attention, sink strength), in query chunks."""

# Definitions (http_api.md, "Metric definitions"), per head, over the real query tokens of a batch:
# - max_logit: the largest pre-softmax logit x_ij = scale·q_i·k_j after the soft cap, any additive
#   bias the model adds (T5's position bias) and the masks (max over the batch). A learned sink logit
#   is not a q·k logit and is left out.
# - attention_entropy: mean of -Σ_j p_ij log p_ij (natural log, no key excluded), Zhai et al. (2023).
# - null_attention: mean of p_i0 over queries i >= 1 (the first real query attends to itself by
#   construction in a causal model), where key 0 is the first real key.
# - max_weight: mean of max_j p_ij, the strength of the head's strongest key ("sink strength").
# p is the softmax the model computes: with sinks, over the keys and the head's sink logit, the
# sink's share then dropped (schema.SCORING_RULES). A query is real when the query mask (if any)
# says so and at least one key is left to it by the masks.
#
# One pass per chunk, as flash attention reduces a row: the chunk's logits are made once (masked keys
# at MASKED, finite), then read by their row max (max_logit) and one fused softmax p, whose largest
# weight is 1 / Σ exp(x - max), so lse = max - log max p; the entropy is lse - Σ p·x and p at the
# first key is null attention. A learned sink only rescales p (by the keys' share of the total).
#
# Memory: logits are made for `chunk_size` query rows at a time, so the extra memory is
# O(B · H · chunk_size · Nk), never [B, H, Nq, Nk]: one chunk's logits and a buffer for their softmax,
# made once per layer and reused by every chunk. Each chunk's sums stay on the device, so no step
# synchronises with the host until the caller reads the result.

import math

import torch

DEFAULT_CHUNK_SIZE = 256  # query rows per chunk: 4 MiB of float32 logits per head at 4,096 keys
METRICS = ("max_logit", "attention_entropy", "null_attention", "max_weight")
MASKED = torch.finfo(torch.float32).min  # a masked logit in the fused pass: finite, so p·x = 0 · MASKED = 0


def fill_masked(logits, keep, value):
    """logits.masked_fill_(~keep, value) in place; keep: bool, broadcastable to logits (True = may attend).

    On a CPU only the columns from the first one `keep` masks anywhere are filled: a causal chunk's
    mask is its diagonal block, not every key. (Finding that column elsewhere would wait on the device.)
    """
    blocked = ~keep
    if blocked.device.type == "cpu":
        columns = blocked.reshape(-1, blocked.shape[-1]).any(dim=0)
        if blocked.shape[-1] == logits.shape[-1] and columns.numel():
            first = int(columns.int().argmax())
            if not columns[first]:
                return logits
            logits[..., first:].masked_fill_(blocked[..., first:], value)
            return logits
    return logits.masked_fill_(blocked, value)


def scores(query, key, rows, keys=None, masked=-math.inf, *, scale=None, causal=False, attn_mask=None,
           key_mask=None, softcap=None, sliding_window=None):
    """float32 [B, H, len(rows), len(keys)]: the masked pre-softmax logits of query rows `rows` and keys `keys`.

    query [B, H, Nq, d], key [B, H_kv, Nk, d] (H % H_kv == 0); the queries are the last Nq of Nk
    positions (Nq < Nk: a cache). keys: a slice of the key positions (default all); masked logits
    are `masked` (-inf unless told). attn_mask: broadcastable to [B, H, Nq, Nk], bool (True = may
    attend) or additive float (values at the dtype's minimum count as masked); key_mask: [B, Nk]
    bool, True for real keys. No gradient flows.
    """
    keys = slice(None) if keys is None else keys
    with torch.no_grad():
        b, h, nq, d = query.shape
        h_kv, nk = key.shape[1], key.shape[2]
        if h % h_kv:
            raise ValueError(f"query has {h} heads, key {h_kv}: the query heads must be a multiple of the key heads")
        groups = h // h_kv
        scale = d**-0.5 if scale is None else float(scale)
        query_positions, key_positions = range(nq)[rows], range(nk)[keys]
        q = query[:, :, rows].float() * scale  # the scale on the [c, d] queries, not on the [c, Nk] logits
        c, n = q.shape[2], len(key_positions)
        # Grouped-query attention without repeating the keys: [B, H_kv, groups, c, d] @ [B, H_kv, 1, d, n].
        logits = torch.matmul(q.view(b, h_kv, groups, c, d), key[:, :, keys].float().transpose(-1, -2)[:, :, None])
        logits = logits.view(b, h, c, n)
        if softcap is not None:
            logits.div_(softcap).tanh_().mul_(softcap)
        if causal or sliding_window:
            i = torch.arange(query_positions.start, query_positions.stop, device=logits.device)[:, None] + (nk - nq)
            j = torch.arange(key_positions.start, key_positions.stop, device=logits.device)[None, :]
            keep = j <= i if causal else None
            if sliding_window:
                near = (i - j).abs() < sliding_window
                keep = near if keep is None else keep & near
            fill_masked(logits, keep, masked)
        if attn_mask is not None:
            mask = (attn_mask[..., rows, :] if attn_mask.shape[-2] != 1 else attn_mask)[..., keys]
            if mask.dtype == torch.bool:
                fill_masked(logits, mask, masked)
            else:
                fill_masked(logits.add_(mask.float()), mask > torch.finfo(mask.dtype).min / 2, masked)
        if key_mask is not None:
            fill_masked(logits, key_mask.bool()[:, None, None, keys], masked)
        return logits


class HeadSums:
    """Running per-head sums of one attention layer's statistics, on the device; `add` takes logit chunks."""

    def __init__(self, num_heads, device):
        self.max_logit = torch.full((num_heads,), -math.inf, device=device)
        self.entropy = torch.zeros(num_heads, dtype=torch.float64, device=device)
        self.max_weight = torch.zeros(num_heads, dtype=torch.float64, device=device)
        self.null = torch.zeros(num_heads, dtype=torch.float64, device=device)
        self.queries = torch.zeros(num_heads, dtype=torch.float64, device=device)  # real queries counted
        self.null_queries = torch.zeros(num_heads, dtype=torch.float64, device=device)

    def add(self, logits, positions, *, sinks=None, query_mask=None, first_key=None, scratch=None):
        """Adds one chunk: logits float32 [B, H, c, Nk], masked keys at MASKED (consumed: overwritten in place).

        positions: [c] int, the chunk's query positions among the keys; query_mask: [B, c] bool (real
        queries); first_key: [B] int, each input's first real key position (default 0); scratch: float32,
        at least as many elements as logits, for their softmax.
        """
        b, h, c, nk = logits.shape
        row_max = logits.amax(dim=-1)  # [B, H, c]; MASKED where every key is masked
        real = ~(row_max <= MASKED)  # a NaN logit keeps its row: divergence must show, not vanish
        if query_mask is not None:
            real &= query_mask.bool()[:, None, :]
        self.max_logit = torch.maximum(self.max_logit, row_max.masked_fill(~real, -math.inf).amax(dim=(0, 2)))
        if scratch is None:
            p = torch.softmax(logits, dim=-1)
        else:  # the softmax into a buffer made once: a fresh chunk-sized tensor costs its page faults every time
            p = torch._softmax(logits, -1, False, out=scratch[: logits.numel()].view(logits.shape))
        top = p.amax(dim=-1).double()  # exp(max - lse) = 1 / Σ exp(x - max)
        dot = logits.mul_(p).sum(dim=-1).double()  # Σ p·x; masked keys add 0 · MASKED = 0
        if first_key is None:
            first = p[..., 0]
        else:  # a first key past this chunk's keys (skipped: causal) gets no weight from it
            index = first_key.clamp(max=nk - 1).view(b, 1, 1, 1).expand(b, h, c, 1)
            first = p.gather(-1, index).view(b, h, c).masked_fill((first_key >= nk).view(b, 1, 1), 0.0)
        row_max = row_max.double()
        # -Σ p log p = Σ p (lse - x) = (max - Σ p·x) - log max p: two terms >= 0, the first one from max.
        entropy = (row_max - dot) - top.log()
        max_weight, null = top, first.double()
        if sinks is not None:  # p over the keys and the sink, the sink's share dropped: p_keys = share · p
            # Relative to max: lse - max = -log max p; total = log(exp(lse) + exp(sink)); -Σ p_keys log p_keys
            # = share · (total - Σ p·x).
            total = torch.logaddexp(-top.log(), sinks.double().view(1, h, 1) - row_max)
            share = (-top.log() - total).exp()
            entropy = share * ((row_max - dot) + total)
            max_weight, null = share * top, share * null
        # Null attention counts the queries after the first real key (that one attends only to itself).
        start = torch.zeros(b, dtype=torch.long, device=p.device) if first_key is None else first_key
        after_first = real & (positions.view(1, 1, c) > start.view(b, 1, 1))
        # where(), not a product: a padding row's NaN must not reach the sums.
        self.entropy += torch.where(real, entropy, 0.0).sum(dim=(0, 2))
        self.max_weight += torch.where(real, max_weight, 0.0).sum(dim=(0, 2))
        self.queries += real.double().sum(dim=(0, 2))
        self.null += torch.where(after_first, null, 0.0).sum(dim=(0, 2))
        self.null_queries += after_first.double().sum(dim=(0, 2))

    def tensors(self):
        """The sums as one float64 [6, H] tensor (max_logit first): what ranks and forwards combine."""
        return torch.stack([self.max_logit.double(), self.entropy, self.max_weight, self.null, self.queries,
                            self.null_queries])


def combine(a, b):
    """Two [6, ...] sums (`HeadSums.tensors`) of disjoint queries as one: max of max logits, sums of the rest."""
    return torch.cat([torch.maximum(a[:1], b[:1]), a[1:] + b[1:]])


def finish(sums):
    """{metric: float32 [...]} from [6, ...] sums: means over the real queries (NaN where there were none)."""
    max_logit, entropy, max_weight, null, queries, null_queries = sums.double()
    none = queries == 0
    return {
        "max_logit": max_logit.masked_fill(none, math.nan).float(),
        "attention_entropy": (entropy / queries).float(),
        "null_attention": (null / null_queries).float(),
        "max_weight": (max_weight / queries).float(),
    }


def rows_per_chunk(batch, heads, keys, max_bytes):
    """Query rows per chunk so that a chunk's float32 logits [batch, heads, rows, keys] fit in max_bytes."""
    return max(1, int(max_bytes) // (4 * max(1, batch * heads * keys)))


def _chunks(num_queries, chunk_size):
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of query rows, got {chunk_size}")
    return [slice(start, min(start + chunk_size, num_queries)) for start in range(0, num_queries, chunk_size)]


def row_max_logits(logits_of, num_queries, *, chunk_size=DEFAULT_CHUNK_SIZE):
    """float32 [B, H, Nq]: each query row's largest logit, -inf where every key is masked, in chunks.

    logits_of(rows) -> [B, H, c, Nk] masked logits, e.g. `intercept.AttentionCall.logits`. The max
    over a head's real rows is its max_logit (what `HeadSums` keeps; what a Probe logs per input).
    """
    with torch.no_grad():
        return torch.cat([logits_of(rows).amax(dim=-1) for rows in _chunks(num_queries, chunk_size)], dim=2)


def _first_true(mask):
    """[B] index of each row's first True (0 when none)."""
    return mask.int().argmax(dim=-1)


def accumulate(sums, logits_of, shape, *, chunk_size=DEFAULT_CHUNK_SIZE, sinks=None, query_mask=None, key_mask=None,
               causal=False):
    """Feeds `sums` (a HeadSums) the logits of every query chunk, one pass over each; returns it.

    logits_of(rows, keys, masked) -> float32 [B, H, len(rows), len(keys)] with masked logits at
    `masked` (e.g. `intercept.AttentionCall.logits`); shape: (B, H, Nq, Nk) of the attention.
    query_mask [B, Nq] / key_mask [B, Nk]: bool, True = real. causal: the logits mask every key after
    its query, so a chunk's logits stop at its last query's key: about half the work.
    """
    b, h, num_queries, num_keys = shape
    offset = num_keys - num_queries  # queries are the last Nq of Nk positions (a cache)
    first_key = None if key_mask is None else _first_true(key_mask)
    chunks = _chunks(num_queries, chunk_size)
    device = sums.max_logit.device
    scratch = torch.empty(b * h * (chunks[0].stop if chunks else 0) * num_keys, device=device)
    with torch.no_grad():
        for rows in chunks:
            keys = slice(0, min(max(rows.stop + offset, 1), num_keys) if causal else num_keys)
            logits = logits_of(rows, keys, MASKED)
            positions = torch.arange(rows.start + offset, rows.stop + offset, device=device)
            sums.add(logits, positions, sinks=sinks, query_mask=None if query_mask is None else query_mask[:, rows],
                     first_key=first_key, scratch=scratch)
    return sums


def statistics(query, key, *, scale=None, causal=False, attn_mask=None, query_mask=None, key_mask=None,
               softcap=None, sliding_window=None, sinks=None, chunk_size=DEFAULT_CHUNK_SIZE):
    """{metric: float32 [H]} over a batch: max_logit, attention_entropy, null_attention, max_weight.

    query [B, H, Nq, d], key [B, H_kv, Nk, d]; the rules as in `scores`; query_mask [B, Nq] bool
    (True = real query); sinks [H] learned sink logits. Computed in chunks of `chunk_size` queries.
    """
    if key_mask is not None and query_mask is None and query.shape[2] == key.shape[2]:
        query_mask = key_mask  # self-attention: a padding token is neither a real key nor a real query

    def logits_of(rows, keys, masked):
        return scores(query, key, rows, keys, masked, scale=scale, causal=causal, attn_mask=attn_mask,
                      key_mask=key_mask, softcap=softcap, sliding_window=sliding_window)

    shape = (*query.shape[:3], key.shape[2])
    sums = accumulate(HeadSums(query.shape[1], query.device), logits_of, shape, chunk_size=chunk_size, sinks=sinks,
                      query_mask=query_mask, key_mask=key_mask, causal=causal)
    return finish(sums.tensors())


def max_logit(query, key, **rules):
    """float32 [H]: each head's largest logit (`statistics`' max_logit); what the Probe logs as max_logit."""
    return statistics(query, key, **rules)["max_logit"]
