"""Full-matrix references for the attention-health statistics, and a peak-memory probe for the tests that bound it."""

import math

import pytest
import torch

from tb_attention.metrics import health


def reference(query, key, *, scale, causal=False, softcap=None, window=None, sinks=None, real=None):
    """The four statistics by hand, one query row at a time, from full float64 q·kᵀ matrices."""
    b_size, h_size, nq, _ = query.shape
    nk, groups = key.shape[2], query.shape[1] // key.shape[1]
    real = torch.ones(b_size, nk, dtype=torch.bool) if real is None else real
    out = {m: [] for m in health.METRICS}
    for h in range(h_size):
        top, entropies, nulls, weights = -math.inf, [], [], []
        for b in range(b_size):
            x = scale * query[b, h].double() @ key[b, h // groups].double().T  # [Nq, Nk]
            if softcap:
                x = softcap * torch.tanh(x / softcap)
            positions = [j for j in range(nk) if real[b, j]]
            first = positions[0]
            for i in range(nq):
                pos = i + nk - nq
                if not real[b, pos]:
                    continue
                allowed = [j for j in positions if (not causal or j <= pos) and (not window or abs(pos - j) < window)]
                row = x[i, allowed]
                top = max(top, row.max().item())
                extra = [] if sinks is None else [float(sinks[h])]
                p = torch.softmax(torch.cat([row, torch.tensor(extra, dtype=torch.float64)]), 0)[: len(allowed)]
                entropies.append(-(p * p.log()).sum().item())
                weights.append(p.max().item())
                if pos > first:
                    nulls.append(p[allowed.index(first)].item() if first in allowed else 0.0)
        out["max_logit"].append(top)
        out["attention_entropy"].append(sum(entropies) / len(entropies))
        out["null_attention"].append(sum(nulls) / len(nulls))
        out["max_weight"].append(sum(weights) / len(weights))
    return {m: torch.tensor(v, dtype=torch.float64) for m, v in out.items()}


def peak_extra_bytes(fn):
    """Peak resident memory `fn` adds (Linux: clear_refs 5 resets the high-water mark VmHWM)."""
    import re

    def field(name):
        return int(re.search(rf"{name}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = field("VmRSS")
    fn()
    return field("VmHWM") - before


def can_measure_peak_memory():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM" in open("/proc/self/status").read()
    except OSError:
        return False


needs_peak_memory = pytest.mark.skipif(not can_measure_peak_memory(), reason="needs Linux's /proc/self/clear_refs")


N_LONG = 4096  # tokens of the memory-bound test
