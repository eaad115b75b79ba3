"""Route 3: F.softmax of a 4-D tensor inside an *Attention module (eager code outside AttentionInterface)."""

# Its input are the logits, its output the weights, both exact. Where the module made the logits with
# Tensor.baddbmm (BLOOM: alibi.baddbmm(q, kᵀ, beta, alpha) plus the mask), that product also gives the
# call its q, k, scale and additive bias, once checked to be what the softmax read.

import re

import torch
import torch.nn.functional as F

from tb_attention.capture.intercept.call import bind_arguments, is_mask_value, keeps_causal
from tb_attention.capture.intercept.state import innermost_interception

_ATTENTION_CLASS = re.compile(r"attention", re.IGNORECASE)

_original_softmax = None
_original_baddbmm = None  # torch.Tensor.baddbmm as it was
_own_baddbmm = False  # whether torch.Tensor defined baddbmm itself (else it inherits TensorBase's)


def _attention_module(it):
    module = it.current_module()
    return module if module is not None and _ATTENTION_CLASS.search(type(module).__name__) else None


def _softmax(input, dim=None, _stacklevel=3, dtype=None):
    output = _original_softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)
    it = innermost_interception()
    if it is not None and input.dim() == 4 and dim in (-1, 3) and not input.is_nested:
        module = _attention_module(it)
        if module is not None:
            logits = input.detach()
            nq, nk = logits.shape[2], logits.shape[3]
            fields = {"query": None, "key": None, "scale": 1.0, **_scores_fields(it, module, logits)}
            it.emit(
                module,
                causal=keeps_causal(~is_mask_value(logits), nq, nk),
                route="softmax",
                _logits=logits,
                _weights=output.detach(),
                **fields,
            )
    return output


def _baddbmm(self, *args, **kwargs):
    output = _original_baddbmm(self, *args, **kwargs)
    it = innermost_interception()
    if it is not None and output.dim() == 3 and not output.is_nested:
        module = _attention_module(it)
        if module is not None:
            bound = bind_arguments(("batch1", "batch2"), args, kwargs)
            it.scores = (module, output.detach(), bound.get("batch1"), bound.get("batch2"), self.detach(),
                         kwargs.get("beta", 1), kwargs.get("alpha", 1))
    return output


def _scores_fields(it, module, logits):
    """{query, key, scale, bias} when the logits are the module's last baddbmm product (plus a mask that
    only hides keys), else {}."""
    scores, it.scores = it.scores, None
    if scores is None or scores[0] is not module:
        return {}
    _, product, batch1, batch2, bias, beta, alpha = scores
    b, h, nq, nk = logits.shape
    if (not isinstance(batch1, torch.Tensor) or not isinstance(batch2, torch.Tensor) or product.shape != (b * h, nq, nk)
            or bias.dim() != 3 or bias.shape[0] not in (1, b * h)):
        return {}
    off = (logits.float() - product.view(b, h, nq, nk).float()).abs().masked_fill_(is_mask_value(logits), 0)
    if float(off.max()) > 1e-6 * (1 + float(product.abs().max())):
        return {}  # the softmax read something else than this product (plus a mask)
    heads = (b, h) if bias.shape[0] > 1 else (1, 1)
    return {
        "query": batch1.detach().reshape(b, h, nq, -1),
        "key": batch2.detach().transpose(1, 2).reshape(b, h, nk, -1),
        "scale": float(alpha),
        "bias": bias.reshape(*heads, *bias.shape[1:]) * float(beta),
    }


def install():
    global _original_softmax, _original_baddbmm, _own_baddbmm
    _original_softmax = F.softmax
    F.softmax = _softmax
    _original_baddbmm, _own_baddbmm = torch.Tensor.baddbmm, "baddbmm" in vars(torch.Tensor)
    torch.Tensor.baddbmm = _baddbmm


def uninstall():
    F.softmax = _original_softmax
    if _own_baddbmm:
        torch.Tensor.baddbmm = _original_baddbmm
    else:
        del torch.Tensor.baddbmm
