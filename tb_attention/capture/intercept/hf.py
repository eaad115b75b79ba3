"""Route 1: Hugging Face AttentionInterface, whose get_interface hands out a wrapper around the model's function."""

import inspect
import sys

import torch

from tb_attention.capture.intercept.call import keeps_causal, split_mask
from tb_attention.capture.intercept.flex import dense_block_mask
from tb_attention.capture.intercept.state import ACTIVE, interception_for


def _hf_wrapper(function, kind):
    def intercepted_attention(module, query, key, value, attention_mask=None, *args, **kwargs):
        it = interception_for(module)
        if it is None or it.suppressed:
            return function(module, query, key, value, attention_mask, *args, **kwargs)
        it.suppressed += 1
        try:
            result = function(module, query, key, value, attention_mask, *args, **kwargs)
        finally:
            it.suppressed -= 1
        bound = _hf_arguments(function, args, kwargs)
        fields = _hf_fields(module, query, key, attention_mask, bound, kind, it)
        weights = result[1] if kind == "eager" and isinstance(result, tuple) and len(result) > 1 else None
        if isinstance(weights, torch.Tensor) and not module.training and weights.shape[-2:] == (query.shape[2], key.shape[2]):
            # Eager attention returns the very softmax it used (dropout is off in eval mode): no recompute.
            fields["_weights"] = weights.detach()
        it.emit(module, **fields)
        return result

    intercepted_attention.__wrapped__ = function
    return intercepted_attention


def _hf_arguments(function, args, kwargs):
    """Keyword view of the extra arguments (scaling, dropout, softcap... may come positionally)."""
    if not args:
        return kwargs
    try:
        names = list(inspect.signature(function).parameters)[5:]
    except (TypeError, ValueError):
        names = []
    return {**dict(zip(names, args)), **kwargs}


def _hf_fields(module, query, key, mask, kwargs, kind, it=None):
    nq, nk = query.shape[2], key.shape[2]
    scale = kwargs.get("scaling")
    scale = float(scale) if scale is not None else query.shape[-1] ** -0.5
    window = kwargs.get("sliding_window")
    window = int(window) if window else None
    is_causal = kwargs.get("is_causal")
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # The layers of a forward pass one mask object: derive keep, bias and causality once per
    # forward (they read the device), not once per layer.
    memo_key = (mask, kind, tuple(query.shape[:3]), nk, bool(is_causal), window, query.device)
    memo = it.mask_memo if it is not None else None
    if memo is not None and memo[0][0] is mask and memo[0][1:] == memo_key[1:]:
        keep, bias, causal, rules = memo[1]
    else:
        keep, bias, causal, rules = _mask_parts(mask, kind, query, nq, nk, is_causal, window)
        if it is not None:
            it.mask_memo = (memo_key, (keep, bias, causal, rules))
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:
        position_bias = position_bias[..., :nk]
        bias = position_bias if bias is None else bias + position_bias
    sinks = kwargs.get("s_aux")
    if sinks is None:
        sinks = kwargs.get("sinks")
    softcap = kwargs.get("softcap")
    return dict(
        query=query.detach(),
        key=key.detach(),
        scale=scale,
        causal=causal,
        softcap=float(softcap) if softcap else None,
        sliding_window=window,
        sinks=None if sinks is None else sinks.detach(),
        bias=None if bias is None else bias.detach(),
        route="hf",
        _keep=keep,
        **rules,
    )


def _mask_parts(mask, kind, query, nq, nk, is_causal, window):
    """(keep, bias, causal, rules) of a call's attention mask as the kernel `kind` reads it; rules: the
    AttentionCall's causal and window rules (applied per block of logits, no [Nq, Nk] mask made)."""
    keep, bias, rules = None, None, {}
    if kind == "flex" and mask is not None and not isinstance(mask, torch.Tensor):
        keep = dense_block_mask(mask, query.shape[0], query.shape[1], nq, nk, query.device)
    elif kind.startswith("flash"):
        # A 2-D padding mask (1 = token) or none; causality and the window are the kernel's flags.
        if mask is not None:
            keep = mask[:, None, None, :nk].bool()
        if is_causal and nq > 1:
            rules["_causal_from"] = nk - nq  # bottom-right aligned
        if window:
            rules["_window"] = window
    elif isinstance(mask, torch.Tensor) and mask.dim() >= 2:
        keep, bias = split_mask(mask, nk)
    elif mask is None and kind != "eager" and is_causal and nq > 1:
        rules["_causal_from"] = 0  # sdpa and the like: no mask means is_causal (top-left aligned)
    causal = keeps_causal(keep, nq, nk, rules.get("_causal_from"))
    if rules.get("_window") and not causal and nq > 1:  # a bidirectional window: decided on the dense mask
        visible = torch.ones(nq, nk, dtype=torch.bool, device=query.device) if keep is None else keep
        i = torch.arange(nq, device=query.device)[:, None] + (nk - nq)
        near = (i - torch.arange(nk, device=query.device)[None, :]).abs() < rules["_window"]
        causal = keeps_causal(visible & near, nq, nk, rules.get("_causal_from"))
    return keep, bias, causal, rules


_original_get_interface = None
_patched = []  # the AttentionInterface class whose get_interface is ours


def _get_interface(self, attn_implementation, default):
    function = _original_get_interface(self, attn_implementation, default)
    if not ACTIVE.get():
        return function
    if function is default:
        kind = "eager"
    else:
        kind = str(attn_implementation).removeprefix("paged|")
        kind = "flash" if "flash" in kind else "flex" if "flex" in kind else kind
    return _hf_wrapper(function, kind)


def _attention_interface():
    module = sys.modules.get("transformers.modeling_utils")  # a model that needs it has imported it
    interface = getattr(module, "AttentionInterface", None)
    return interface if hasattr(interface, "get_interface") else None


def install():
    global _original_get_interface
    interface = _attention_interface()
    if interface is not None:
        _original_get_interface = interface.get_interface
        interface.get_interface = _get_interface
        _patched.append(interface)


def uninstall():
    while _patched:
        _patched.pop().get_interface = _original_get_interface
