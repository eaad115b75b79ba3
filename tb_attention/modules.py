"""The module a probe runs: wrappers (DDP, DataParallel, DeepSpeed, torch.compile) taken off."""

import contextlib

# Wrappers whose forward adds nothing a probe needs and may add collectives (DDP broadcasts its
# buffers) or compilation. FSDP1's wrapper is NOT taken off: its forward gathers the parameters.
_FORWARDING_WRAPPERS = ("DistributedDataParallel", "DataParallel", "DeepSpeedEngine")


def unwrap(model):
    """The module inside DDP / DataParallel / DeepSpeedEngine / torch.compile wrappers, in any nesting."""
    while True:
        if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            model = model._orig_mod  # running it directly: no dynamo guards, no recompilation
        elif type(model).__name__ in _FORWARDING_WRAPPERS and hasattr(model, "module"):
            model = model.module
        else:
            return model


@contextlib.contextmanager
def eager():
    """Runs torch.compile'd code (compiled submodules, `module.compile()`) eagerly inside the block:
    a probe's forward (eval mode, another attention function) would otherwise recompile the user's
    graphs and spend their recompile limit."""
    import torch

    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is None:  # torch < 2.6: nothing compiled can be told to step aside
        yield
        return
    with set_stance("force_eager"):
        yield
