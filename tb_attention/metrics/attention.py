"""Per-head attention metrics of Vig & Belinkov (2019): vectorised, streaming, mergeable across shards."""

# Definitions: DESIGN.md section 4. alpha_ij is the attention of query token i to key token j;
# i and j count real tokens only (padding is skipped, left or right). Choices the definitions leave open:
# - The first-token rule: by default attention to the first token (j = 0, "null attention") is
#   left out of every metric and not renormalised away; entropy alone renormalises and skips query
#   tokens with > 90 % on the first token. include_first=True keeps j = 0 everywhere, renormalises
#   nothing and skips no query token.
# - null_attention averages alpha_i0 over real query tokens i >= 1, whatever include_first: the first
#   query of a causal model attends only to itself, so counting it would add (1 - a) / N.
# - previous_token averages alpha_i,i-1 over query tokens i >= 2 (i >= 1 with include_first): how
#   much a head looks at the token just before; a previous-token head scores near 1. Not in the
#   paper; it names the pattern the paper shows as its low-variability example.
# - Syntax metrics count only inputs that have a TokenSyntax; tokens without a POS (special tokens)
#   stay in the denominator. A tag no counted token has is NaN, not 0.
# - variability uses the cells (i, j) with i, j < 10 of each input. An input shorter than 10 tokens
#   adds only the cells it has, and a cell's mean is over the inputs that have it (so no input is
#   padded with zeros, and a corpus of short inputs is not dropped); the first-token rule drops
#   the column j = 0.
# - Exemplars look at i, j > 0 whatever include_first is: with the first token, every causal
#   model's best cell would be alpha_00 = 1.
#
# Every metric is a ratio of sums over inputs, so AttentionStats keeps the sums (float64) and
# divides at the end; shards merge by adding them. The sums, the exemplar candidates and the
# variability blocks stay on the attention's device and an update never waits for the device:
# what needs the host (where the real tokens sit, syntax) comes from the mask, which the
# tokenizer made on the CPU. The host reads the device at result(), exemplars() and all_reduce(). Variability is the exception: it measures
# deviations from the mean over ALL inputs, which is known only at the end, and
# sum_x |alpha(x) - mean| is no function of a fixed-size summary of the values seen (it needs
# to know which of them lie below the mean). So each input's first-10-token block, [L, H, 10, 10],
# is kept and the deviations are taken in a second pass over those blocks, not over the model:
# exact, at 400 bytes per head per input (54 MB for 500 inputs of a 30 x 9 model; pass
# variability=False for corpora too large for that). Across processes `all_reduce` does the two
# phases: sums first (which gives the global mean), then each shard's deviations from it.

import collections

import numpy as np
import torch

from tb_attention.metrics.inputs import as_tensor, pad_attention, syntax_tensors
from tb_attention.metrics.shards import MergeableStats
from tb_attention.runtime import defaults
from tb_attention.runtime.devices import to_device
from tb_attention.storage.schema import UPOS

VARIABILITY_TOKENS = 10  # variability looks at the first this many tokens of each input
NULL_ENTROPY_THRESHOLD = 0.9  # entropy skips query tokens with more of their attention on the first token
DEPENDENCY_DIRECTIONS = ("either", "head", "dependent")  # j is i's head or dependent; j is i's head; ...

Exemplar = collections.namedtuple("Exemplar", ["key", "score", "i", "j"])
Exemplar.__doc__ = """An input that strongly drives a head: its key, the largest weight alpha_ij (i, j > 0)
and where it is (token indices within the input, padding not counted)."""


class AttentionStats(MergeableStats):
    """Streaming per-head attention metrics over a corpus.

    stats = AttentionStats(num_layers, num_heads)
    for batch in corpus:
        stats.update(torch.stack(outputs.attentions, 1), mask=batch["attention_mask"], syntax=...)
    stats.result()  # {"entropy": float32 [L, H], ...}

    pos_tags: the tags that get pos/<TAG> and pos_from/<TAG> metrics (spaCy coarse UPOS).
    include_first: keep attention to the first token in every metric (default: left out).
    dependency_direction: "either" (default), "head" (j is i's head) or "dependent" (j is i's
        dependent) for dependency_alignment.
    top_k: exemplars kept per head. variability: keep the first-token blocks it needs (see top).
    """

    def __init__(
        self,
        num_layers,
        num_heads,
        *,
        pos_tags=UPOS,
        include_first=False,
        dependency_direction="either",
        top_k=defaults.TOP_K_EXEMPLARS,
        variability=True,
    ):
        if dependency_direction not in DEPENDENCY_DIRECTIONS:
            raise ValueError(
                f"dependency_direction must be one of {DEPENDENCY_DIRECTIONS}, got {dependency_direction!r}"
            )
        self.num_layers, self.num_heads = int(num_layers), int(num_heads)
        self.pos_tags = tuple(pos_tags)
        self.include_first = bool(include_first)
        self.dependency_direction = dependency_direction
        self.top_k = int(top_k)
        self.variability = bool(variability)
        L, H, T, V = self.num_layers, self.num_heads, len(self.pos_tags), VARIABILITY_TOKENS
        z = lambda *shape: torch.zeros(shape, dtype=torch.float64)  # noqa: E731
        self.sums = {
            "inputs": z(),  # inputs seen
            "syntax_inputs": z(),  # of which with syntax
            "mass": z(L, H),  # sum alpha_ij over the pairs every metric counts
            "distance": z(L, H),  # sum alpha_ij |i - j|
            "entropy": z(L, H),  # sum of per-token entropies
            "entropy_tokens": z(L, H),  # query tokens they came from
            "null_attention": z(L, H),  # sum alpha_i0 over queries i >= 1
            "null_queries": z(),  # those queries
            "previous_token": z(L, H),  # sum alpha_i,i-1 over the queries it counts
            "previous_tokens": z(),  # those queries: i >= 1, or i >= 2 when the first token is left out
            "query_tokens": z(),  # query tokens (all inputs)
            "syntax_mass": z(L, H),  # "mass" over inputs with syntax
            "dependency": z(L, H),  # sum alpha_ij dep(i, j)
            "pos": z(L, H, T),  # sum alpha_ij [pos(j) = tag]
            "pos_from": z(L, H, T),  # sum alpha_ij [pos(i) = tag]
            "pos_tokens": z(T),  # tokens of each tag
            "variability_sum": z(L, H, V, V),  # sum over inputs of each first-tokens cell
            "variability_inputs": z(V, V),  # inputs that have the cell
        }
        self._blocks = []  # per batch: float32 [B, L, H, V, V] and the cells that count, [B, V, V]
        self._block_bytes = 0  # of those blocks still on an accelerator (moved to the CPU past a bound)
        self._count = 0  # inputs seen, known on the host (sums["inputs"] may live on the device)
        self._device = torch.device("cpu")  # where the sums and exemplar candidates live
        self._work = None  # scratch buffer the size of one batch of attention
        self._deviation = None  # set by all_reduce: sum |alpha - mean| over every shard
        self._auto_keys = None  # True when exemplar keys were numbered here, not given
        self._top_score = torch.full((L, H, 0), -torch.inf, dtype=torch.float64)
        self._top_index = torch.zeros((3, L, H, 0), dtype=torch.int64)  # key, i, j

    @property
    def num_inputs(self):
        return self._count

    def _place(self, device):
        """Moves the sums and exemplar candidates to `device` (MPS has no float64: they stay on the CPU)."""
        device = torch.device("cpu") if device.type == "mps" else torch.device(device)
        if device != self._device:
            self.sums = {k: v.to(device) for k, v in self.sums.items()}
            self._top_score, self._top_index = self._top_score.to(device), self._top_index.to(device)
            self._device = device

    # -----------------------------------------------------------------------------------------
    # Accumulating

    def update(self, attention, mask=None, syntax=None, keys=None):
        """Adds a batch of inputs.

        attention: [B, L, H, N, N] (torch or numpy; a Hugging Face `outputs.attentions` tuple is
            `torch.stack(outputs.attentions, 1)`), or one input [L, H, n, n], or a list of unpadded
            [L, H, n, n]. Causal or not, any float dtype, any device (the work runs there).
        mask: [B, N], true/1 for real tokens (the tokenizer's attention_mask; left or right padding).
        syntax: per input a TokenSyntax over its real tokens, or None.
        keys: per input an int naming it in exemplars; default its number in the order seen.
        """
        if self._deviation is not None:
            raise RuntimeError("this AttentionStats was all_reduced: it is final")
        if isinstance(attention, (list, tuple)):
            if mask is not None:
                raise ValueError("a list of unpadded inputs needs no mask")
            attention, mask = pad_attention(attention)
        attention = as_tensor(attention)
        if attention.ndim == 4:
            attention = attention[None]
            syntax = None if syntax is None else [syntax] if not isinstance(syntax, (list, tuple)) else syntax
        expected = (self.num_layers, self.num_heads)
        if attention.ndim != 5 or attention.shape[1:3] != expected or attention.shape[3] != attention.shape[4]:
            raise ValueError(
                f"attention of shape {tuple(attention.shape)}: expected [B, {self.num_layers}, {self.num_heads}, N, N]"
            )
        B, N = attention.shape[0], attention.shape[-1]
        if B == 0:
            return self
        dtype = torch.float64 if attention.dtype == torch.float64 else torch.float32
        a = attention.to(dtype)
        # The mask on the host (a tokenizer's is there already; one on the device is copied once).
        if mask is None:
            valid = torch.ones(B, N, dtype=torch.bool)
        else:
            valid = as_tensor(mask).cpu().bool()
        if valid.shape != (B, N):
            raise ValueError(f"mask of shape {tuple(valid.shape)} for attention over {N} positions: expected [{B},{N}]")
        if syntax is not None and len(syntax) != B:
            raise ValueError(f"{len(syntax)} syntax entries for {B} inputs")
        keys = self._next_keys(B, keys)
        self._place(a.device)
        self._accumulate(a, valid, syntax, keys)
        return self

    def _next_keys(self, batch_size, keys):
        auto = keys is None
        if self._auto_keys is not None and self._auto_keys != auto:
            raise ValueError("give exemplar keys for every batch or for none")
        self._auto_keys = auto
        if auto:
            return torch.arange(batch_size, dtype=torch.int64) + self.num_inputs
        keys = torch.as_tensor(np.asarray(keys), dtype=torch.int64).reshape(-1)
        if keys.numel() != batch_size:
            raise ValueError(f"{keys.numel()} keys for {batch_size} inputs")
        return keys

    def _accumulate(self, a, host_valid, syntax, keys):
        # A few passes over the weights and no per-head loops: one masked copy (in a reused buffer)
        # gives row and column sums, the pair sums (one batched matrix product), the exemplars
        # and, in place, the entropy; everything else is [B, L * H, N] or smaller. Nothing here
        # reads the device: what decides a code path comes from the host mask.
        B, L, H, N, _ = a.shape
        LH, V = L * H, VARIABILITY_TOKENS
        dtype, device = a.dtype, a.device
        x = a.reshape(B, LH, N, N)
        valid = to_device(host_valid, device)
        lengths = valid.sum(1)
        rank = valid.cumsum(1) - 1  # index of each position among its input's real tokens
        # positions[b, r]: where real token r of input b sits (real positions first, in order).
        positions = torch.argsort((~host_valid).to(torch.int8), dim=1, stable=True).numpy()
        first_pos = to_device(torch.from_numpy(positions[:, 0]), device)
        # Real tokens start at position 0 (no padding, or padding on the right): slices, not gathers.
        left_aligned = bool((positions[:, :V] == np.arange(min(V, N))).all())
        not_first = valid & (rank > 0)
        keep = valid if self.include_first else not_first  # keys the metrics count

        # One masked copy of the weights: alpha_ij where query i is real and key j counts, else 0,
        # whatever padding holds (NaN included). (A multiply: torch.where is 3x slower on CPU.)
        unmasked = (valid[:, :, None] & keep[:, None, :]).to(dtype)[:, None]  # [B, 1, N, N]
        ak = torch.mul(x, unmasked, out=self._workspace(x))
        if not bool(host_valid.all()):
            ak.nan_to_num_(nan=0.0)  # NaN * 0 in padding
        row_mass = ak.sum(3)  # [B, LH, N]: attention each query pays (entropy's normaliser)
        col_mass = ak.sum(2)  # [B, LH, N]: attention each key receives
        mass = row_mass.sum(2)  # [B, LH]
        if left_aligned:
            to_first = x[..., 0]
        else:
            to_first = x.gather(3, first_pos.view(B, 1, 1, 1).expand(B, LH, N, 1)).squeeze(3)

        # Pair sums sum_ij alpha_ij w_ij for pair weights w: |i - j| and, with syntax, dep(i, j).
        weights = [(rank[:, :, None] - rank[:, None, :]).abs().to(dtype)]
        if syntax is not None:
            tags, dep, has_syntax = syntax_tensors(
                syntax, host_valid, positions, device, self.pos_tags, self.dependency_direction
            )
            tags = tags.to(dtype)
            weights.append(dep.to(dtype))
        w = torch.stack(weights, 3).reshape(B, N * N, len(weights))  # pair_sums: [B, LH, K]
        # (w^T a^T rather than a w: several times faster for few columns on CPU)
        pair_sums = torch.bmm(w.transpose(1, 2), ak.reshape(B, LH, N * N).transpose(1, 2)).transpose(1, 2)

        # Exemplars: the largest alpha_ij with i, j > 0 (never the first token, whatever include_first).
        ex = ak if not self.include_first else (ak * not_first[:, None, None, :].to(dtype))
        row_max = ex.amax(3).masked_fill_(~not_first[:, None], -torch.inf)  # [B, LH, N]
        score, i_pos = row_max.max(2)  # [B, LH]; -inf for inputs of one token
        best_row = ex.gather(2, i_pos[:, :, None, None].expand(B, LH, 1, N)).squeeze(2)
        j_pos = best_row.argmax(2)
        i_tok, j_tok = rank.gather(1, i_pos), rank.gather(1, j_pos)

        # Entropy of each query's counted attention, renormalised:
        # H = -sum p log p with p = a / Z  ==  log Z - sum(a log a) / Z.
        # a log a, in ak's buffer, as x * log(max(ak, tiny)) with masked cells set to 1 first: they
        # add 0 (unless padding holds NaN; only padded rows may, and they are not counted). Twice
        # as fast as torch.xlogy, and no second buffer.
        a_log_a = ak.add_(1 - unmasked).clamp_min_(torch.finfo(dtype).tiny).log_().mul_(x).sum(3)
        z = torch.where(row_mass > 0, row_mass, 1.0)
        entropy = torch.log(z) - a_log_a / z
        counted = valid[:, None] & (row_mass > 0)
        if not self.include_first:
            counted &= to_first <= NULL_ENTROPY_THRESHOLD

        # Attention of each query to the token just before it (a real token's predecessor among
        # real tokens); with the first-token rule, i = 1 (whose predecessor is the first) is skipped.
        previous = to_device(torch.from_numpy(positions), device).gather(1, (rank - 1).clamp_min(0))
        to_previous = x.gather(3, previous.view(B, 1, N, 1).expand(B, LH, N, 1)).squeeze(3)
        counted_previous = valid & (rank >= (1 if self.include_first else 2))

        parts = {
            "mass": mass.sum(0),
            "distance": pair_sums[:, :, 0].sum(0),
            "entropy": torch.where(counted, entropy, 0.0).sum((0, 2)),
            "entropy_tokens": counted.sum((0, 2)),
            "null_attention": torch.where(not_first[:, None], to_first, 0.0).sum((0, 2)),
            "null_queries": not_first.sum(),
            "previous_token": torch.where(counted_previous[:, None], to_previous, 0.0).sum((0, 2)),
            "previous_tokens": counted_previous.sum(),
        }
        if syntax is not None:
            parts["syntax_mass"] = (mass * to_device(has_syntax, device).to(dtype)[:, None]).sum(0)
            parts["dependency"] = pair_sums[:, :, 1].sum(0)
            parts["pos"] = torch.bmm(col_mass, tags).sum(0)
            parts["pos_from"] = torch.bmm(row_mass, tags).sum(0)
            parts["pos_tokens"] = tags.sum((0, 1))
        if self.variability:
            block, present = self._first_block(x, positions, lengths, left_aligned)
            block = torch.where(present[:, None], block, 0.0)
            parts["variability_sum"] = block.sum(0)
            parts["variability_inputs"] = present.sum(0)

        # Added where the sums live (the attention's device): no transfer, no wait.
        home = self._device
        for k, v in parts.items():
            self.sums[k] += v.to(home, torch.float64).reshape(self.sums[k].shape)
        self._count += B
        self.sums["inputs"] += B
        self.sums["query_tokens"] += float(host_valid.sum())
        if syntax is not None:
            self.sums["syntax_inputs"] += float(has_syntax.sum())
        score = score.to(home, torch.float64).reshape(B, L, H).permute(1, 2, 0)
        index = torch.stack([to_device(keys, device)[:, None].expand(B, LH), i_tok, j_tok]).to(home)
        self._push_exemplars(score, index.reshape(3, B, L, H).permute(0, 2, 3, 1))
        if self.variability:
            # A copy: `block` may be a view of the caller's tensor, which must not be kept alive.
            block = block.reshape(B, L, H, V, V).to(dtype=torch.float32, copy=True)
            self._keep_block(block, present)

    _DEVICE_BLOCK_BYTES = 64 << 20  # variability blocks an accelerator holds before they go to the CPU

    def _keep_block(self, block, present):
        """Keeps a batch's variability block; on an accelerator until they add up to 64 MiB, then
        all of them go to the CPU in one transfer (one wait every many batches, bounded memory)."""
        self._blocks.append((block, present))
        if block.device.type == "cpu":
            return
        self._block_bytes += block.numel() * block.element_size()
        if self._block_bytes > self._DEVICE_BLOCK_BYTES:
            self._blocks = [(b.cpu(), p.cpu()) for b, p in self._blocks]
            self._block_bytes = 0

    def release_workspace(self):
        """Frees the scratch buffer kept for the next update (a stream keeps one AttentionStats per layer)."""
        self._work = None

    def _workspace(self, like):
        """A scratch buffer shaped like `like`, kept between updates: a fresh one costs more in
        page faults than the arithmetic done in it."""
        work = self._work
        if work is None or work.shape != like.shape or work.dtype != like.dtype or work.device != like.device:
            work = self._work = torch.empty_like(like)
        return work

    def _first_block(self, x, positions, lengths, left_aligned):
        """alpha among the first VARIABILITY_TOKENS real tokens, [B, LH, V, V], and which cells
        the metric counts, bool [B, V, V] (the input has both tokens; j > 0 unless include_first)."""
        B, LH, N, _ = x.shape
        V = VARIABILITY_TOKENS
        take = min(V, N)
        if left_aligned:
            block = x[:, :, :take, :take]
        else:
            pos = to_device(torch.from_numpy(positions[:, :take]), x.device)
            rows = x.gather(2, pos[:, None, :, None].expand(B, LH, take, N))
            block = rows.gather(3, pos[:, None, None, :].expand(B, LH, take, take))
        if take < V:
            block = torch.nn.functional.pad(block, (0, V - take, 0, V - take))
        v = torch.arange(V, device=x.device)
        present = (v[None, :, None] < lengths[:, None, None]) & (v[None, None, :] < lengths[:, None, None])
        if not self.include_first:
            present &= v[None, None, :] > 0
        return block, present

    def _push_exemplars(self, score, index):
        """Merges candidates (score [L, H, n], index [3, L, H, n]) into the top-k, best first.

        Ties go to the smaller key, so the result is the same however inputs were split.
        """
        score = torch.cat([self._top_score, score], 2)
        index = torch.cat([self._top_index, index], 3)
        order = torch.argsort(index[0], dim=2, stable=True)
        score, index = score.gather(2, order), index.gather(3, order[None].expand_as(index))
        order = torch.argsort(score, dim=2, descending=True, stable=True)[:, :, : self.top_k]
        self._top_score = score.gather(2, order)
        self._top_index = index.gather(3, order[None].expand(3, *order.shape))

    # -----------------------------------------------------------------------------------------
    # Results

    def _variability_mean(self):
        inputs = self.sums["variability_inputs"].cpu()
        return self.sums["variability_sum"].cpu() / torch.where(inputs > 0, inputs, 1.0)

    def _local_deviation(self):
        """sum over this object's inputs of |alpha - mean| over the variability cells, [L, H]."""
        mean = self._variability_mean().to(torch.float32)
        total = torch.zeros(self.num_layers, self.num_heads, dtype=torch.float64)
        for block, present in self._blocks:
            deviation = (block - mean.to(block.device)).abs_().mul_(present[:, None, None])
            total += deviation.sum((0, 3, 4), dtype=torch.float64).cpu()
        return total

    def result(self):
        """{metric: float32 [L, H]}; NaN where a metric is undefined (e.g. no token of a tag).

        Keys: entropy, distance, null_attention, previous_token, variability, and when syntax was given,
        dependency_alignment, pos/<TAG> and pos_from/<TAG> for each tag of pos_tags.
        """
        s = {k: v.cpu() for k, v in self.sums.items()}
        L, H = self.num_layers, self.num_heads
        names = ["entropy", "distance", "null_attention", "previous_token", "variability"]
        ratios = [  # numerator, denominator; [K, L, H] each
            (s["entropy"], s["entropy_tokens"]),
            (s["distance"], s["mass"]),
            (s["null_attention"], s["null_queries"].expand(L, H)),
            (s["previous_token"], s["previous_tokens"].expand(L, H)),
        ]
        if self.variability:
            deviation = self._deviation if self._deviation is not None else self._local_deviation()
            ratios.append((deviation, 2 * s["variability_sum"].sum((2, 3))))
        else:
            ratios.append((torch.zeros(L, H), torch.zeros(L, H)))  # blocks not kept: NaN
        ratios = [(n[None], d[None]) for n, d in ratios]
        if s["syntax_inputs"] > 0:
            names += ["dependency_alignment"]
            names += [f"pos/{t}" for t in self.pos_tags] + [f"pos_from/{t}" for t in self.pos_tags]
            seen = (s["pos_tokens"] > 0)[:, None, None]  # no token of a tag: undefined, not 0
            tag_mass = torch.where(seen, s["syntax_mass"], 0.0)
            ratios.append((s["dependency"][None], s["syntax_mass"][None]))
            ratios.append((s["pos"].permute(2, 0, 1), tag_mass))
            ratios.append((s["pos_from"].permute(2, 0, 1), tag_mass))
        numerator = torch.cat([n for n, _ in ratios]).double()
        denominator = torch.cat([d for _, d in ratios]).double()
        values = torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), torch.nan)
        values = values.to(torch.float32).numpy()
        return dict(zip(names, values))

    def exemplars(self):
        """Per layer, per head: the top_k Exemplar(key, score, i, j), highest score first."""
        L, H = self.num_layers, self.num_heads
        score = self._top_score.tolist()
        key, i, j = self._top_index.tolist()
        return [
            [
                [
                    Exemplar(key[l][h][n], score[l][h][n], i[l][h][n], j[l][h][n])
                    for n in range(len(score[l][h]))
                    if score[l][h][n] > -np.inf  # inputs of one token have no candidate
                ]
                for h in range(H)
            ]
            for l in range(L)
        ]


def compute_metrics(attentions, syntax=None, *, mask=None, **options):
    """The metrics of one probe: attentions a list of [L, H, n, n] (or a batch [B, L, H, N, N] with
    `mask`), syntax a list of TokenSyntax or None per input. options: see AttentionStats."""
    if isinstance(attentions, (list, tuple)):
        num_layers, num_heads = as_tensor(attentions[0]).shape[:2]
    else:
        num_layers, num_heads = as_tensor(attentions).shape[-4:-2]
    stats = AttentionStats(num_layers, num_heads, **options)
    stats.update(attentions, mask=mask, syntax=syntax)
    return stats.result()
