"""Inputs of the attention metrics put in shape: padded batches, and syntax as tag one-hots and relation masks."""

import numpy as np
import torch

from tb_attention.runtime.devices import to_device


def as_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def pad_attention(attentions):
    """A list of unpadded [L, H, n, n] -> batch [B, L, H, N, N] (zero-padded) and mask [B, N]."""
    attentions = [as_tensor(a) for a in attentions]
    if not attentions:
        raise ValueError("no attention given")
    num_layers, num_heads = attentions[0].shape[:2]
    n_max = max(a.shape[-1] for a in attentions)
    dtype = torch.promote_types(attentions[0].dtype, torch.float32)
    batch = torch.zeros(len(attentions), num_layers, num_heads, n_max, n_max, dtype=dtype, device=attentions[0].device)
    mask = torch.zeros(len(attentions), n_max, dtype=torch.bool, device=attentions[0].device)
    for b, a in enumerate(attentions):
        if a.ndim != 4 or a.shape[:2] != (num_layers, num_heads) or a.shape[2] != a.shape[3]:
            raise ValueError(
                f"input {b}: attention of shape {tuple(a.shape)}, expected [{num_layers}, {num_heads}, n, n]"
            )
        n = a.shape[-1]
        batch[b, :, :, :n, :n] = a
        mask[b, :n] = True
    return batch, mask


def syntax_tensors(syntax, valid, positions, device, pos_tags, dependency_direction):
    """Tag one-hots [B, N, T] and pair relations [B, N, N] (query i, key j) at padded positions,
    on `device`, and which inputs have syntax, on the host. valid: the host mask."""
    B, N = valid.shape
    tag_index = {t: k for k, t in enumerate(pos_tags)}
    tags = np.zeros((B, N, len(pos_tags)), dtype=bool)
    dep = np.zeros((B, N, N), dtype=bool)  # dep[b, h, d]: token h is the head of token d
    has = np.zeros(B, dtype=bool)
    lengths = valid.sum(1).tolist()
    for b, s in enumerate(syntax):
        if s is None:
            continue
        if len(s) != lengths[b]:
            raise ValueError(f"input {b}: syntax for {len(s)} tokens, attention over {lengths[b]}")
        has[b] = True
        where = positions[b, : lengths[b]]
        tagged = [(t, tag_index[p]) for t, p in enumerate(s.pos) if p in tag_index]
        if tagged:
            t, k = np.array(tagged).T
            tags[b, where[t], k] = True
        if len(s.dependencies):
            dep[b, where[s.dependencies[:, 0]], where[s.dependencies[:, 1]]] = True
    if dependency_direction == "either":
        dep |= dep.transpose(0, 2, 1)
    elif dependency_direction == "head":  # j is i's head: dep[b, j, i]
        dep = dep.transpose(0, 2, 1)
    as_tensor = lambda x: to_device(torch.from_numpy(np.ascontiguousarray(x)), device)  # noqa: E731
    return as_tensor(tags), as_tensor(dep), torch.from_numpy(has)
