"""Merging AttentionStats: another's inputs added to one's, and the shards of a torch.distributed job."""

# Every metric is a ratio of sums, so shards merge by adding their sums, except variability, whose
# deviations from the mean over ALL inputs are known only once the sums are: all_reduce takes two
# phases (the sums, which give the global mean; then each shard's deviations from it).

import torch


class MergeableStats:
    """What AttentionStats adds to merge: `merge(other)` in one process, `all_reduce(group)` across ranks."""

    def _settings(self):
        return (self.num_layers, self.num_heads, self.pos_tags, self.include_first, self.dependency_direction,
                self.top_k, self.variability)  # fmt: skip

    def _check_compatible(self, other):
        mine, theirs = self._settings(), other._settings()
        if mine != theirs:
            raise ValueError(f"cannot merge AttentionStats with different settings: {mine} vs {theirs}")

    def merge(self, other):
        """Adds `other`'s inputs to this one, as if they had come after this one's; returns self."""
        self._check_compatible(other)
        if self._deviation is not None or other._deviation is not None:
            raise RuntimeError("an all_reduced AttentionStats cannot be merged")
        if None not in (self._auto_keys, other._auto_keys) and self._auto_keys != other._auto_keys:
            raise ValueError("one AttentionStats numbered its exemplar keys, the other was given keys")
        if not self._count:
            self._place(other._device)
        other_index = other._top_index.to(self._device, copy=True)
        if other._auto_keys:
            other_index[0] += self.num_inputs  # other's inputs continue this one's numbering
        self._auto_keys = self._auto_keys if other._auto_keys is None else other._auto_keys
        self._push_exemplars(other._top_score.to(self._device), other_index)
        for k, v in other.sums.items():
            self.sums[k] += v.to(self._device)
        self._count += other._count
        self._blocks.extend(other._blocks)
        return self

    def all_reduce(self, group=None):
        """Merges the shards of a torch.distributed job; every rank ends with the whole result.

        The sums are all_reduced (SUM); variability takes a second all_reduce of each shard's
        deviations from the global mean; exemplars are all_gathered. When keys were numbered
        here, rank r's inputs are numbered after those of ranks < r. The result is final.
        """
        import torch.distributed as dist

        self._place(torch.device("cpu"))  # the result is final: it lives on the host from here
        nccl = dist.get_backend(group) == "nccl"  # NCCL reduces CUDA tensors only
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        world = dist.get_world_size(group)
        rank = dist.get_rank(group)
        counts = [torch.zeros((), dtype=torch.float64, device=device) for _ in range(world)]
        dist.all_gather(counts, self.sums["inputs"].to(device), group=group)
        offset = int(sum(float(n) for n in counts[:rank]))
        self._count = int(sum(float(n) for n in counts))
        names = sorted(self.sums)
        flat = torch.cat([self.sums[k].reshape(-1) for k in names]).to(device)
        dist.all_reduce(flat, group=group)
        flat, start = flat.cpu(), 0
        for k in names:
            self.sums[k] = flat[start : start + self.sums[k].numel()].reshape(self.sums[k].shape).clone()
            start += self.sums[k].numel()
        deviation = self._local_deviation().to(device)
        dist.all_reduce(deviation, group=group)
        index = self._top_index.clone()
        if self._auto_keys:
            index[0] += offset
        # One float64 tensor per shard, [4 L, H, top_k]: scores, then keys, i and j (exact as floats
        # below 2**53), padded to top_k so that all_gather sees equal shapes.
        L, H = self.num_layers, self.num_heads
        gathered = torch.cat([self._top_score, index.to(torch.float64).reshape(3 * L, H, -1)])
        pad = self.top_k - gathered.shape[2]
        filler = torch.cat([torch.full((L, H, pad), -torch.inf), torch.zeros((3 * L, H, pad))]).to(torch.float64)
        gathered = torch.cat([gathered, filler], 2).to(device)
        shards = [torch.empty_like(gathered) for _ in range(world)]
        dist.all_gather(shards, gathered, group=group)
        self._top_score = torch.full((self.num_layers, self.num_heads, 0), -torch.inf, dtype=torch.float64)
        self._top_index = torch.zeros((3, self.num_layers, self.num_heads, 0), dtype=torch.int64)
        for shard in shards:
            shard = shard.cpu()
            score = shard[: self.num_layers]
            idx = shard[self.num_layers :].reshape(3, self.num_layers, self.num_heads, -1).to(torch.int64)
            self._push_exemplars(score, idx)
        self._deviation = deviation.cpu()
        self._blocks = []
        return self
