"""Attention arrays for the tests: random, row-stochastic, causal or not."""

import numpy as np


def random_attention(rng, layers, heads, n, causal=True, sharpness=3.0):
    """Softmax of random scores: float32 [layers, heads, n, n], rows summing to 1."""
    scores = rng.normal(size=(layers, heads, n, n)) * sharpness
    if causal:
        scores = np.where(np.triu(np.ones((n, n), dtype=bool), 1), -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)
