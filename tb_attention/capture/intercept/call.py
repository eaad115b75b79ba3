"""AttentionCall: one attention computation seen during a forward, and the mask helpers the routes share."""

import dataclasses

import torch

from tb_attention.metrics import health


def repeat_kv(x, groups):
    """[B, H_kv, N, d] -> [B, H_kv * groups, N, d]: query head h uses key head h // groups."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def is_mask_value(x):
    """True where a logit/additive mask is a mask value (finfo.min or -inf), in its own dtype."""
    return x <= torch.finfo(x.dtype).min / 2


@dataclasses.dataclass(eq=False)
class AttentionCall:
    """One attention computation seen during a forward; valid only inside the listener call.

    query [B, H, Nq, d] and key [B, H_kv, Nk, d] as the model used them (None for eager code
    outside AttentionInterface, whose logits are read directly). `bias`: an additive float
    term of the logits besides the mask (T5's position bias, a float attention mask), or None.
    """

    name: str
    index: int
    module: torch.nn.Module | None
    query: torch.Tensor | None
    key: torch.Tensor | None
    scale: float
    causal: bool
    softcap: float | None = None
    sliding_window: int | None = None
    sinks: torch.Tensor | None = None
    cross: bool = False
    bias: torch.Tensor | None = None
    route: str = "hf"  # "hf", "sdpa", "mha", "softmax", "flex"
    _keep: torch.Tensor | None = None  # bool, broadcastable to [B, H, Nq, Nk]: True = may attend
    # Causality and a kernel's window as rules, applied per block of logits: a long input's [Nq, Nk]
    # mask would be 1 GiB at 32k tokens. Key j is visible from query i when j <= i + _causal_from, and
    # when |i + Nk - Nq - j| < _window; both besides `_keep`.
    _causal_from: int | None = None
    _window: int | None = None
    _logits: torch.Tensor | None = None  # read directly (softmax route)
    _weights: torch.Tensor | None = None

    @property
    def shape(self):
        """(B, H, Nq, Nk)."""
        if self._logits is not None:
            return tuple(self._logits.shape)
        b, h, nq, _ = self.query.shape
        return (b, h, nq, self.key.shape[2])

    def logits(self, rows=None, keys=None, masked=float("-inf")):
        """float32 [B, H, n_rows, n_keys]: scale·q·kᵀ, soft cap, + bias and masks (masked = `masked`). No grad.

        rows, keys: slices of the query and key positions (default all).
        """
        rows = rows if rows is not None else slice(None)
        keys = keys if keys is not None else slice(None)
        with torch.no_grad():
            if self._logits is not None:
                x = self._logits[:, :, rows, keys]
                return x.float().masked_fill(is_mask_value(x), masked)
            x = self._scores(rows, keys)
            if self.bias is not None:
                x = x.add_(_block(self.bias, rows, keys).float())
            if self._keep is not None:
                x = health.fill_masked(x, _block(self._keep, rows, keys), masked)
            rule = self._rule(rows, keys, x.device)
            if rule is not None:
                x = health.fill_masked(x, rule, masked)
            return x

    def _rule(self, rows, keys, device):
        """bool [n_rows, n_keys] of the causal and window rules over a block (True = visible), or None."""
        if self._causal_from is None and self._window is None:
            return None
        nq, nk = self.query.shape[2], self.key.shape[2]
        i = torch.arange(nq, device=device)[rows][:, None]
        j = torch.arange(nk, device=device)[keys][None, :]
        keep = None if self._causal_from is None else j <= i + self._causal_from
        if self._window is not None:
            near = (i + (nk - nq) - j).abs() < self._window
            keep = near if keep is None else keep & near
        return keep

    def _scores(self, rows, keys=slice(None)):
        """float32 [B, H, n_rows, n_keys]: scale·q·kᵀ, soft-capped where the model caps."""
        q = self.query[:, :, rows].float() * self.scale  # the scale on [.., n_rows, d], not on the logits
        k = self.key[:, :, keys].float()
        b, h, nq, d = q.shape
        h_kv = k.shape[1]
        # Grouped queries: query head h uses key head h // groups, so the queries of a key head
        # stack into one [groups * Nq, d] matrix (no copy of the keys per query head).
        x = torch.matmul(q.reshape(b, h_kv, (h // h_kv) * nq, d), k.transpose(-1, -2)).view(b, h, nq, -1)
        # In place after the matmul (same values): a long input's [B, H, N, N] is made once, not four times.
        if self.softcap is not None:
            x = x.div_(self.softcap).tanh_().mul_(self.softcap)
        return x

    def additive_bias(self):
        """float [B or 1, H or 1, Nq, Nk]: what the model added to the (capped) scale·q·kᵀ besides the mask, or
        None: `bias`, or for logits read directly with q/k at hand (FlexAttention's score_mod), the logits
        less scale·q·kᵀ where a key is visible (0 where masked). No grad."""
        if self.bias is not None or self._logits is None or self.query is None or self.key is None:
            return self.bias
        with torch.no_grad():
            logits = self.logits()
            masked = torch.isinf(logits)
            residual = logits.sub_(self._scores(slice(None))).masked_fill_(masked, 0.0)
            return residual if bool(residual.any()) else None

    def visible(self):
        """bool broadcastable to [B, H, Nq, Nk] (True = the query may attend to the key), or None for no mask.

        Dense: the rules made into a mask, for callers that keep one (q/k with their masks)."""
        if self._logits is not None and self._keep is None:
            return ~is_mask_value(self._logits)
        rule = self._rule(slice(None), slice(None), self.query.device)
        if rule is None:
            return self._keep
        return rule[None, None] if self._keep is None else self._keep & rule

    def weights(self, rows=None, *, logits=None):
        """float32 [B, H, n_rows, Nk]: the softmax the model computed (sinks taken into account). No grad.

        logits: `self.logits(rows)` when the caller has them already (they are not changed).
        """
        rows = rows if rows is not None else slice(None)
        with torch.no_grad():
            if self._weights is not None:
                return self._weights[:, :, rows].float()
            x = self.logits(rows) if logits is None else logits
            if self.sinks is None:
                w = torch.softmax(x, dim=-1)
            else:  # gpt-oss: one learned logit per head takes part in the softmax, then is dropped
                sink = self.sinks.float().reshape(1, -1, 1, 1).expand(x.shape[0], -1, x.shape[2], 1)
                w = torch.softmax(torch.cat([x, sink], dim=-1), dim=-1)[..., :-1]
            return w.nan_to_num_(0.0)  # a query that may attend to nothing (padding) attends to nothing (in place: w is ours)


def _block(t, rows, keys):
    """The [rows, keys] block of a mask or bias broadcastable to [B, H, Nq, Nk]."""
    return t[..., slice(None) if t.shape[-2] == 1 else rows, slice(None) if t.shape[-1] == 1 else keys]


def causal_keep(nq, nk, device, causal_from=0):
    """[Nq, Nk] bool: key j visible from query i when j <= i + causal_from (0: top-left aligned as SDPA's
    is_causal; nk - nq: bottom-right)."""
    return torch.ones(nq, nk, dtype=torch.bool, device=device).tril(causal_from)


def keeps_causal(keep, nq, nk, causal_from=None):
    """Whether `keep` (and the rule j <= i + causal_from) hides every key after its query (bottom-right
    aligned), over more than one query."""
    if nq < 2:
        return False
    if causal_from is not None and causal_from <= nk - nq:  # the rule alone hides them: nothing dense
        return True
    if keep is None:
        return False
    if causal_from is not None:
        keep = keep & causal_keep(nq, nk, keep.device, causal_from)
    return not bool(keep.expand(*keep.shape[:-2], nq, nk).triu(nk - nq + 1).any())  # the keys after each query


def split_mask(mask, nk):
    """A bool (True = attend) or additive float mask -> (keep bool or None, finite bias or None)."""
    if mask is None:
        return None, None
    mask = mask[..., :nk]
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.dtype == torch.bool:
        return mask, None
    keep = ~is_mask_value(mask)
    bias = mask.masked_fill(~keep, 0)
    return keep, (bias if bool(bias.any()) else None)


def bind_arguments(names, args, kwargs):
    return {**dict(zip(names, args)), **kwargs}
