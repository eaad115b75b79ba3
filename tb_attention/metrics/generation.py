"""Per-head metrics of generated text: where the decoding queries look (http_api.md, `prompt_share`, `induction`)."""

import numpy as np
import torch


class GenerationStats:
    """Pooled over generations, layer by layer: `update(layer, weights [H, N, N], ids, prompt_length)`.

    The decoding queries are the rows that wrote a generated token: i >= prompt_length - 1.
    prompt_share: their attention on the prompt's keys over all their attention.
    induction (Olsson et al. 2022): over the decoding queries whose token occurred before, the mean
    attention to the tokens that followed its earlier occurrences (x_j = x_i, j + 1 < i).
    """

    def __init__(self, num_layers, num_heads):
        shape = (num_layers, num_heads)
        self._prompt = np.zeros(shape, np.float64)
        self._total = np.zeros(shape, np.float64)
        self._induction = np.zeros(shape, np.float64)
        self._repeats = np.zeros(num_layers, np.int64)  # decoding queries whose token occurred before

    def update(self, layer, weights, ids, prompt_length):
        weights = torch.as_tensor(weights, dtype=torch.float64)
        n = weights.shape[-1]
        if len(ids) != n:
            raise ValueError(f"{len(ids)} token ids for attention over {n} tokens")
        start = prompt_length - 1
        rows = weights[:, start:]  # [H, decoding queries, N]
        self._prompt[layer] += rows[:, :, :prompt_length].sum(dim=(1, 2)).numpy()
        self._total[layer] += rows.sum(dim=(1, 2)).numpy()
        targets = induction_targets(ids, start)
        if targets is not None:
            queries, keys = targets
            self._induction[layer] += weights[:, queries, keys].sum(dim=1).numpy()
            self._repeats[layer] += len(set(queries.tolist()))

    def result(self):
        """{"prompt_share": [L, H], "induction": [L, H]} (float32); induction absent when no decoding
        query repeated an earlier token."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {"prompt_share": (self._prompt / self._total).astype(np.float32)}
        if self._repeats.all():
            out["induction"] = (self._induction / self._repeats[:, None]).astype(np.float32)
        return out


def induction_targets(ids, start):
    """(query rows, key columns) of every pair (i, j + 1) with i >= start, x_j = x_i, j + 1 < i; None if none."""
    earlier = {}
    queries, keys = [], []
    for i, token in enumerate(ids):
        if i >= start:
            for j in earlier.get(token, ()):
                if j + 1 < i:
                    queries.append(i)
                    keys.append(j + 1)
        earlier.setdefault(token, []).append(i)
    if not queries:
        return None
    return torch.tensor(queries), torch.tensor(keys)
