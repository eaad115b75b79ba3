"""Route 3: F.softmax of a 4-D tensor inside an *Attention module (eager code outside AttentionInterface)."""

# Its input are the logits, its output the weights, both exact.

import re

import torch.nn.functional as F

from tb_attention.capture.intercept.call import is_mask_value, keeps_causal
from tb_attention.capture.intercept.state import innermost_interception

_ATTENTION_CLASS = re.compile(r"attention", re.IGNORECASE)

_original_softmax = None


def _softmax(input, dim=None, _stacklevel=3, dtype=None):
    output = _original_softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)
    it = innermost_interception()
    if it is not None and input.dim() == 4 and dim in (-1, 3) and not input.is_nested:
        module = it.current_module()
        if module is not None and _ATTENTION_CLASS.search(type(module).__name__):
            logits = input.detach()
            nq, nk = logits.shape[2], logits.shape[3]
            it.emit(
                module,
                query=None,
                key=None,
                scale=1.0,
                causal=keeps_causal(~is_mask_value(logits), nq, nk),
                route="softmax",
                _logits=logits,
                _weights=output.detach(),
            )
    return output


def install():
    global _original_softmax
    _original_softmax = F.softmax
    F.softmax = _softmax


def uninstall():
    F.softmax = _original_softmax
