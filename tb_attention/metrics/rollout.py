"""Attention rollout (Abnar & Zuidema 2020): the reference the image view's rollout is tested against."""

import math

import numpy as np

HEAD_FUSIONS = ("mean", "max", "min")  # how attention rollout merges a layer's heads


def rollout(attention, head_fusion="mean", discard_ratio=0.0, heads=None):
    """Attention rollout through each layer: float64 [L, N, N], entry l = Â_l ··· Â_0.

    attention [L, H, N, N]. Per layer: the chosen heads (default all) fused by their mean, max or
    min; the floor(discard_ratio · N²) smallest fused weights set to 0 (ties: lower flat index
    first); the residual added as Â = 0.5·A + 0.5·I; rows renormalised to sum to 1. Row i of entry l
    says how much of token i's representation after layer l flows from each input token.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attention must be [layers, heads, N, N], got shape {list(a.shape)}")
    if heads is not None:
        a = a[:, list(heads)]
    fused = getattr(np, head_fusion)(a, axis=1)  # [L, N, N]
    n = a.shape[-1]
    discard = math.floor(discard_ratio * (n * n))
    identity = np.eye(n)
    joint, out = identity, []
    for layer in fused:
        layer = layer.copy()
        if discard:
            flat = layer.reshape(-1)
            flat[np.argsort(flat, kind="stable")[:discard]] = 0.0
        step = 0.5 * layer + 0.5 * identity
        step /= step.sum(-1, keepdims=True)
        joint = step @ joint
        out.append(joint)
    return np.stack(out)


def rollout_fixture(seed=0, layers=3, heads=4, grid=(3, 3), prefix=1):
    """Input attention and expected rollouts for a few settings (the frontend's rollout test)."""
    rng = np.random.default_rng(seed)
    n = prefix + grid[0] * grid[1]
    scores = rng.normal(size=(layers, heads, n, n)) * 2.0
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    # float32 values, so that the JSON numbers are exactly what both sides compute from.
    attention = (weights / weights.sum(-1, keepdims=True)).astype(np.float32).astype(np.float64)
    settings = [
        {"head_fusion": "mean", "discard_ratio": 0.0, "heads": None},
        {"head_fusion": "max", "discard_ratio": 0.0, "heads": None},
        {"head_fusion": "min", "discard_ratio": 0.0, "heads": None},
        {"head_fusion": "mean", "discard_ratio": 0.5, "heads": None},
        {"head_fusion": "max", "discard_ratio": 0.9, "heads": None},
        {"head_fusion": "mean", "discard_ratio": 0.0, "heads": [0, 2]},
    ]
    cases = []
    for setting in settings:
        expected = rollout(attention, setting["head_fusion"], setting["discard_ratio"], setting["heads"])
        cases.append({**setting, "discarded": math.floor(setting["discard_ratio"] * (n * n)), "rollout": expected.tolist()})
    return {
        "definition": " ".join(rollout.__doc__.split()),
        "grid": list(grid),
        "prefix_tokens": prefix,
        "shape": [layers, heads, n, n],
        "attention": attention.tolist(),
        "cases": cases,
    }
