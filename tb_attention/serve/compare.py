"""Attention moved between two checkpoints: the server side of the Compare view (numpy only)."""

import numpy as np

from tb_attention.storage.schema import FormatError


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
    """The mean of `moved` over the examples two steps share, one example (or layer) at a time; each
    layer's sums are sized by the first weights added to it, never by a count read from storage."""

    def __init__(self):
        self.total = []  # per layer: float64 [H]
        self.used = 0

    def add_layer(self, layer, a, b):
        """Adds one layer [H, Nq, Nk] of one used example (call `count_used` once per example)."""
        value = moved(a, b)
        if layer == len(self.total):
            self.total.append(value)
        elif layer < len(self.total) and self.total[layer].shape == value.shape:
            self.total[layer] += value
        else:
            raise FormatError(f"layer {layer} holds {value.shape[0]} heads, unlike the examples compared before it")

    def count_used(self):
        self.used += 1

    def result(self):
        return None if not self.used else [(layer / self.used).tolist() for layer in self.total]
