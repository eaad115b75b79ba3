"""`intercepting`: the global hooks and patches, installed while any thread intercepts."""

import contextlib

import torch

from tb_attention.capture.intercept import flex, hf, sdpa, softmax
from tb_attention.capture.intercept.call import bind_arguments
from tb_attention.capture.intercept.mha import MHA_PARAMETERS, fast_path_encoder_layer, mha_fields
from tb_attention.capture.intercept.state import ACTIVE, INSTALL_LOCK, Interception, interception_for
from tb_attention.runtime.modules import unwrap

# The routes' one protocol: a module-level `install()` / `uninstall()` pair for the routes that patch
# torch or transformers globally (counted here: installed while any thread intercepts), and
# `flex.install(bindings)` / `flex.uninstall(bindings)` for FlexAttention, which is patched where each
# model's code files bound it. nn.MultiheadAttention's route is the global module hooks below.
GLOBAL_ROUTES = (sdpa, softmax, hf)

# -------------------------------------------------------------------------------------------------
# Global hooks: the running-module stack, and route 4 (mha.py)


def _pre_hook(module, args):
    it = interception_for(module)
    if it is None:
        return None
    if module is it.model and not it.stack:
        # A new forward of the model: calls numbered from 0. (Not on any module entered with an
        # empty stack: a block entered from the model's own pre-hook, as the monitor's, never sees
        # the model's pre-hook, and its children would each restart the numbering.)
        it.calls = 0
        it.mask_memo = None
    it.stack.append((module, it.calls))
    if isinstance(module, torch.nn.MultiheadAttention) and not it.suppressed:
        it.suppressed += 1  # its inner softmax / SDPA are this route's call
        it.stack[-1] = (module, -1 - it.calls)  # negative: this module suppressed
    return None


def _post_hook(module, args, kwargs, output=None):  # no output: the forward raised
    it = interception_for(module)
    if it is None or not it.stack:
        return None
    index = len(it.stack) - 1
    while index >= 0 and it.stack[index][0] is not module:
        index -= 1
    if index < 0:
        return None
    _, started = it.stack[index]
    del it.stack[index:]
    if started < 0:  # a MultiheadAttention of ours
        it.suppressed -= 1
        if output is not None and not it.suppressed:
            it.emit(module, **mha_fields(module, **bind_arguments(MHA_PARAMETERS, args, kwargs)))
    elif (
        isinstance(module, torch.nn.TransformerEncoderLayer)
        and output is not None
        and not it.suppressed
        and it.calls == started  # its MultiheadAttention never ran: the fused fast path
    ):
        it.emit(module.self_attn, **fast_path_encoder_layer(module, args, kwargs))
    return None


_install_count = 0
_handles = []


def _install():
    global _install_count
    with INSTALL_LOCK:
        _install_count += 1
        if _install_count > 1:
            return
        for route in GLOBAL_ROUTES:
            route.install()
        _handles.append(torch.nn.modules.module.register_module_forward_pre_hook(_pre_hook))
        _handles.append(
            torch.nn.modules.module.register_module_forward_hook(_post_hook, with_kwargs=True, always_call=True)
        )


def _uninstall():
    global _install_count
    with INSTALL_LOCK:
        _install_count -= 1
        if _install_count:
            return
        for route in GLOBAL_ROUTES:
            route.uninstall()
        while _handles:
            handle = _handles.pop()
            handle.remove()
            # torch's handle for a global forward hook registered with_kwargs leaves its id in
            # `_global_forward_hooks_with_kwargs` (its RemovableHandle does not know that dict);
            # the stale entry makes torch believe a global hook exists for ever, so every call of
            # a torch.compile'd module after a probe warns about global hooks.
            getattr(torch.nn.modules.module, "_global_forward_hooks_with_kwargs", {}).pop(handle.id, None)


@contextlib.contextmanager
def intercepting(model, listener):
    """Inside the block, every forward of `model` hands each attention computation to listener(call).

    Synchronously, on the model's device, in call order; the model computes exactly what it
    computes without the block (outputs and gradients bit for bit). See AttentionCall. A forward
    that computes no attention these routes see simply hands over nothing (capture_attention then
    raises CaptureError saying what it looks for); a FlexAttention score_mod or mask that cannot be
    evaluated densely raises CaptureError during the forward.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"intercepting needs a torch.nn.Module, got {type(model).__name__}")
    it = Interception(unwrap(model), listener)
    bound = flex.bindings(it.model)
    _install()
    flex.install(bound)
    token = ACTIVE.set(ACTIVE.get() + (it,))
    try:
        yield it
    finally:
        ACTIVE.reset(token)
        flex.uninstall(bound)
        _uninstall()
