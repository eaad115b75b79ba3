"""Route 5: FlexAttention called by the model's own code, its score_mod and block mask evaluated densely."""

# transformers' flex implementation is route 1 (hf.py), which evaluates its block mask here too.

import sys

import torch

from tb_attention.capture.errors import CaptureError
from tb_attention.capture.intercept.call import bind_arguments, keeps_causal, repeat_kv
from tb_attention.capture.intercept.state import INSTALL_LOCK, innermost_interception

_FLEX_PARAMETERS = ("query", "key", "value", "score_mod", "block_mask", "scale", "enable_gqa")
_original_flex = None


def _flex(*args, **kwargs):
    output = _original_flex(*args, **kwargs)
    it = innermost_interception()
    if it is not None:
        bound = bind_arguments(_FLEX_PARAMETERS, args, kwargs)
        query, key = bound["query"], bound["key"]
        with torch.no_grad():
            logits = _dense_flex_logits(query.detach(), key.detach(), bound.get("score_mod"), bound.get("block_mask"),
                                        bound.get("scale"))
        nq, nk = logits.shape[2], logits.shape[3]
        it.emit(
            it.current_module(),
            query=query.detach(),
            key=key.detach(),
            scale=float(bound["scale"]) if bound.get("scale") is not None else query.shape[-1] ** -0.5,
            causal=keeps_causal(~torch.isinf(logits), nq, nk),
            route="flex",
            _logits=logits,
        )
    return output


def _dense_flex_logits(query, key, score_mod, block_mask, scale):
    """float32 [B, H, Nq, Nk]: FlexAttention's scores, score_mod and mask_mod evaluated densely."""
    b, h, nq, _ = query.shape
    nk = key.shape[2]
    scale = scale if scale is not None else query.shape[-1] ** -0.5
    k = repeat_kv(key.float(), h // key.shape[1])
    scores = torch.matmul(query.float(), k.transpose(-1, -2)) * scale
    index = [torch.arange(n, device=query.device).reshape([-1 if d == i else 1 for d in range(4)])
             for i, n in enumerate((b, h, nq, nk))]
    if score_mod is not None:
        try:
            scores = torch.as_tensor(score_mod(scores, *index)).float().expand(b, h, nq, nk)
        except Exception as e:
            raise CaptureError(
                f"this FlexAttention score_mod cannot be evaluated densely on the probe ({type(e).__name__}: {e}); "
                "write it with broadcasting tensor operations, or compute this attention with "
                "F.scaled_dot_product_attention to capture it"
            ) from e
    if block_mask is not None:
        scores = scores.masked_fill(~dense_block_mask(block_mask, b, h, nq, nk, query.device), float("-inf"))
    return scores


def bindings(model):
    """(python module, attribute) of every global bound to FlexAttention in the model's code files."""
    flex_module = sys.modules.get("torch.nn.attention.flex_attention")
    if flex_module is None:
        return []
    original = _original_flex or flex_module.flex_attention
    found = {("torch.nn.attention.flex_attention", "flex_attention")}
    for module in model.modules():
        code = sys.modules.get(type(module).__module__)
        for name, value in vars(code).items() if code is not None else ():
            if value is original:
                found.add((code.__name__, name))
    return sorted(found)


def dense_block_mask(block_mask, b, h, nq, nk, device):
    """A FlexAttention BlockMask evaluated densely through its mask_mod: [B, H, Nq, Nk] bool."""
    mask_mod = getattr(block_mask, "mask_mod", None)
    if mask_mod is None:
        raise CaptureError("a FlexAttention block mask without a mask_mod cannot be evaluated densely")
    index = [torch.arange(n, device=device).reshape([-1 if d == k else 1 for d in range(4)]) for k, n in enumerate((b, h, nq, nk))]
    try:
        keep = mask_mod(*index)
    except Exception as e:
        raise CaptureError(
            f"this FlexAttention mask_mod cannot be evaluated densely on the probe ({type(e).__name__}: {e}); "
            "load the model with attn_implementation='sdpa' or 'eager' to capture it"
        ) from e
    return torch.as_tensor(keep, device=device).bool().expand(b, h, nq, nk)


_flex_counts = {}  # (module name, attribute) -> interceptions that patched it


def install(bindings):
    global _original_flex
    with INSTALL_LOCK:
        for module_name, attribute in bindings:
            code = sys.modules[module_name]
            if _original_flex is None:
                _original_flex = getattr(code, attribute)
            if not _flex_counts.get((module_name, attribute)):
                setattr(code, attribute, _flex)
            _flex_counts[(module_name, attribute)] = _flex_counts.get((module_name, attribute), 0) + 1


def uninstall(bindings):
    with INSTALL_LOCK:
        for binding in bindings:
            _flex_counts[binding] -= 1
            if not _flex_counts[binding]:
                del _flex_counts[binding]
                setattr(sys.modules[binding[0]], binding[1], _original_flex)

