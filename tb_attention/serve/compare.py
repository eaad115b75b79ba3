"""Attention moved between two checkpoints: the server side of the Compare view (numpy only)."""

import numpy as np


def moved(a, b):
    """Per head, the mean over queries of ½·Σ_j |b_ij − a_ij|: [..., Nq, Nk] -> [...].

    Each row is a distribution, so this is the share of a query's attention that moved (0: same
    weights, 1: disjoint); float64 sums, whatever the inputs' dtype.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"attention of shapes {a.shape} and {b.shape} cannot be compared")
    rows = 0.5 * np.abs(b.astype(np.float64) - a.astype(np.float64)).sum(-1)
    return rows.mean(-1)


class MovedMean:
    """The mean of `moved` over the examples two steps share, one example (or layer) at a time."""

    def __init__(self, num_layers, num_heads):
        self.total = np.zeros((num_layers, num_heads), dtype=np.float64)
        self.used = 0
        self.skipped = 0

    def add_layer(self, layer, a, b):
        """Adds one layer [H, Nq, Nk] of one used example (call `count_used` once per example)."""
        self.total[layer] += moved(a, b)

    def count_used(self):
        self.used += 1

    def result(self):
        return None if not self.used else (self.total / self.used).tolist()
