"""The module a probe runs: wrappers (DDP, DataParallel, DeepSpeed, torch.compile) taken off."""

import contextlib
import threading

# Wrappers whose forward adds nothing a probe needs and may add collectives (DDP broadcasts its
# buffers) or compilation. FSDP1's wrapper is NOT taken off: its forward gathers the parameters.
_FORWARDING_WRAPPERS = ("DistributedDataParallel", "DataParallel", "DeepSpeedEngine")


def _inner(model):
    """The module a wrapper runs, or None when `model` is no wrapper we take off."""
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        return model._orig_mod  # running it directly: no dynamo guards, no recompilation
    if type(model).__name__ in _FORWARDING_WRAPPERS and hasattr(model, "module"):
        return model.module
    return None


def _layers(model):
    """`model`, then each module its wrappers run, outermost first."""
    while model is not None:
        yield model
        model = _inner(model)


def unwrap(model):
    """The module inside DDP / DataParallel / DeepSpeedEngine / torch.compile wrappers, in any nesting."""
    *_, inner = _layers(model)
    return inner


def compiled_wrapper(model):
    """The outermost `torch.compile` wrapper (OptimizedModule) around `model`'s module, or None.

    Hooks on it run before dynamo sees the call: there a monitor can switch the forward to eager
    code before anything is traced (hooks on the module inside would be traced and recompiled)."""
    return next((m for m in _layers(model) if type(m).__name__ == "OptimizedModule"), None)


_eager_lock = threading.Lock()
_eager_blocks = 0  # `eager` blocks open, in every thread
_eager_stance = None  # torch's set_stance object while they are: it restores the stance before


@contextlib.contextmanager
def eager():
    """Runs torch.compile'd code (compiled submodules, `module.compile()`) eagerly inside the block:
    a probe's forward (eval mode, another attention function) would otherwise recompile the user's
    graphs and spend their recompile limit.

    torch's stance is one for the whole process: the first block to open sets it, the last to
    close restores it, so blocks that overlap (probes in several threads) cannot leave it set.
    """
    import torch

    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is None:  # torch < 2.6: nothing compiled can be told to step aside
        yield
        return
    global _eager_blocks, _eager_stance
    with _eager_lock:
        if _eager_blocks == 0:
            _eager_stance = set_stance("force_eager")  # sets it now; its __exit__ restores the one before
        _eager_blocks += 1
    try:
        yield
    finally:
        with _eager_lock:
            _eager_blocks -= 1
            if _eager_blocks == 0:
                _eager_stance.__exit__(None, None, None)
                _eager_stance = None


def inside(name, within):
    """Whether the module of qualified name `name` is the one named `within` or inside it (all are inside None)."""
    return within is None or name == within or name.startswith(within + ".")
