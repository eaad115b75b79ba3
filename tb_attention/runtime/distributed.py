"""Ranks under torch.distributed, sharded models, and the guard that keeps a probe's forward from hanging."""

# A sharded model (FSDP, ZeRO-3, tensor parallel) gathers its parameters inside the forward, so a
# probe's forward is a collective: every rank must run it, in the same order as every other
# collective. A forward on one rank alone does not fail: its all-gathers pair with the other ranks'
# NEXT collectives (their training step), which then wait for ever. `guard_collective` makes the
# ranks meet first, through the process group's key-value store (no collective, so it works with
# any backend and cannot itself pair with a training step's), and raises after a timeout.
#
# Ranks themselves come from storage/ranks.py (torch-free, for the writers), re-exported here.

import datetime
import itertools
import os
import sys

from tb_attention.storage.ranks import is_writing_rank, local_rank, process_group, rank, world_size  # noqa: F401  (re-exported)

GUARD_TIMEOUT = 30.0  # seconds a rank waits at a probe's forward for the other ranks
TIMEOUT_VARIABLE = "TB_ATTENTION_COLLECTIVE_TIMEOUT"  # overrides GUARD_TIMEOUT (seconds)
_STORE_PREFIX = "tb_attention/guard/"

_guard_calls = itertools.count()  # the n-th guard of this process meets the n-th of every other rank


class CollectiveError(RuntimeError):
    """A rank reached a collective forward (a probe of a sharded model) that other ranks did not."""


def join(backend=None):
    """(rank, world size), joining the process group torchrun describes if there is one and it is
    not joined yet: NCCL when CUDA is available, else gloo (or `backend`)."""
    import torch
    import torch.distributed as dist

    if world_size() > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return rank(), world_size()


def default_device():
    """Where a job's model runs by default: this rank's GPU under torchrun, the GPU otherwise, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Sharded models


def is_sharded(model):
    """Whether `model`'s forward gathers parameters across ranks: FSDP2 (`fully_shard`), FSDP1,
    DeepSpeed ZeRO-3, or parameters that are DTensors (tensor parallel)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available():
        return False
    from tb_attention.runtime import modules

    model = modules.unwrap(model)
    from torch.distributed.fsdp import FullyShardedDataParallel

    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6
        FSDPModule = ()
    from torch.distributed.tensor import DTensor

    if any(isinstance(m, (FullyShardedDataParallel, FSDPModule)) for m in model.modules()):
        return True
    # ZeRO-3 leaves the modules as they are and marks each partitioned parameter.
    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters())


def guard_collective(model, what, timeout=None):
    """Waits until every rank reaches this point when `model` is sharded; raises CollectiveError
    (naming `what`) if they do not within `timeout` seconds. A no-op for other models and single
    processes. Call it on every rank, just before the forward that is a collective."""
    if world_size() < 2 or not is_sharded(model):
        return
    dist = process_group()
    if dist is None:
        return
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_VARIABLE, GUARD_TIMEOUT))
    n, world = next(_guard_calls), dist.get_world_size()
    store = dist.distributed_c10d._get_default_store()
    arrived = f"{_STORE_PREFIX}{n}/arrived"
    everyone = f"{_STORE_PREFIX}{n}/everyone"
    if store.add(arrived, 1) == world:
        store.set(everyone, "1")
    try:
        store.wait([everyone], datetime.timedelta(seconds=timeout))
    except (RuntimeError, dist.DistError) as e:  # DistStoreError: the wait timed out
        present = int(store.add(arrived, 0))
        raise CollectiveError(
            f"{what}: the model is sharded ({type(model).__name__}: FSDP, ZeRO-3 or tensor parallel), so its "
            f"forward is a collective that every rank must run, but only {present} of {world} ranks reached it "
            f"within {timeout:g} s. Call it on every rank (rank 0 alone writes), at the same point of the loop; "
            f"a slow rank can be given more time with {TIMEOUT_VARIABLE}=SECONDS"
        ) from e
