"""Per-head metrics of cross attention (target queries over source keys), and max_logit."""

# Definitions (http_api.md, "Metric definitions"). a_ij: the attention of target query i
# (0 <= i < Nt) to source key j (0 <= j < Ns), each input over its own tokens; every metric is a
# mean over all target queries of all inputs (each query counts once):
# - entropy: -sum_j a_ij ln a_ij (natural log, nothing excluded).
# - null_attention: a_i0, the weight on the first source token.
# - diagonal_alignment (http_api.md, the storage helper's definition): the share of a_i. on keys
#   within w of the length-scaled diagonal, |j - i * Ns / Nt| <= w, w = max(1, Ns / Nt) (one target
#   token's share of the source; schema.diagonal_window). A monotonic, evenly paced alignment
#   (translation of similar-length sentences, speech at an even rate) scores near 1.

import numpy as np
import torch

from tb_attention.storage import schema

CROSS_METRICS = ("entropy", "null_attention", "diagonal_alignment")


def diagonal_band(nt, ns):
    """[Nt, Ns] bool: the keys within the window of each target query's diagonal position."""
    centre = torch.arange(nt, dtype=torch.float64)[:, None] * ns / nt
    return (torch.arange(ns, dtype=torch.float64)[None, :] - centre).abs() <= schema.diagonal_window(ns, nt)


def cross_metrics(attentions):
    """{metric: float32 [L, H]} over inputs' cross attention, a list of [L, H, Nt, Ns] arrays/tensors."""
    if not attentions:
        raise ValueError("no cross attention given")
    sums = {name: 0.0 for name in CROSS_METRICS}
    queries = 0
    for a in attentions:
        a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).to(torch.float64).cpu()
        nt, ns = a.shape[-2:]
        if nt == 0 or ns == 0:
            continue
        sums["entropy"] = sums["entropy"] - torch.xlogy(a, a).sum(dim=(-1, -2))
        sums["null_attention"] = sums["null_attention"] + a[..., 0].sum(dim=-1)
        band = diagonal_band(nt, ns)
        sums["diagonal_alignment"] = sums["diagonal_alignment"] + (a * band).sum(dim=(-1, -2))
        queries += nt
    if not queries:
        raise ValueError("cross attention with no target queries")
    return {name: (value / queries).to(torch.float32).numpy() for name, value in sums.items()}


def max_logit(groups):
    """float32 [L, H]: the largest pre-softmax logit of each head over inputs (CapturedGroup.max_logit)."""
    values = [g.max_logit for g in groups if g.max_logit is not None]
    if not values:
        return None
    return torch.stack(values).amax(dim=0).to(torch.float32).numpy()
