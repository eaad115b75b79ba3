"""Which rank this process is, torch-free: writers write on rank 0 only (unless told every rank)."""

# Torch is consulted only when the program imported it and joined a process group; otherwise
# torchrun's environment variables answer. So the writers (storage/) stay torch-free.

import os
import sys


def process_group():
    """torch.distributed when the program imported torch and joined a process group, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    return torch.distributed


def rank():
    """This process's rank: the process group's, else torchrun's RANK, else 0."""
    dist = process_group()
    return dist.get_rank() if dist else int(os.environ.get("RANK", "0"))


def world_size():
    """The number of ranks: the process group's, else torchrun's WORLD_SIZE, else 1."""
    dist = process_group()
    return dist.get_world_size() if dist else int(os.environ.get("WORLD_SIZE", "1"))


def local_rank():
    """This process's rank on its machine (torchrun's LOCAL_RANK), else 0."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_writing_rank(all_ranks=False):
    """Under torch.distributed only rank 0 writes, unless `all_ranks`."""
    return all_ranks or rank() == 0
