"""Route 2: bare torch.nn.functional.scaled_dot_product_attention calls (nanoGPT, Falcon's sdpa path)."""

import torch.nn.functional as F

from tb_attention.capture.intercept.call import keeps_causal, split_mask
from tb_attention.capture.intercept.state import innermost_interception

_original_sdpa = None


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, **kwargs):
    output = _original_sdpa(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
        enable_gqa=enable_gqa, **kwargs,
    )
    it = innermost_interception()
    if it is not None and not query.is_nested:
        q, k = _as_heads(query), _as_heads(key)
        nq, nk = q.shape[2], k.shape[2]
        keep, bias = split_mask(attn_mask.detach() if attn_mask is not None else None, nk)
        it.emit(
            it.current_module(),
            query=q.detach(),
            key=k.detach(),
            scale=float(scale) if scale is not None else q.shape[-1] ** -0.5,
            # is_causal (never with a mask): top-left aligned, which hides every later key when Nq <= Nk.
            causal=2 <= nq <= nk if is_causal else keeps_causal(keep, nq, nk),
            bias=bias,
            route="sdpa",
            _keep=keep,
            _causal_from=0 if is_causal else None,  # a rule per block of logits, never an [Nq, Nk] mask
        )
    return output


def _as_heads(x):
    """SDPA's [..., N, d] as [B, H, N, d] (no head dimension: one head)."""
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 2:
        return x[None, None]
    return x.reshape(-1, x.shape[-3], x.shape[-2], x.shape[-1])


def install():
    global _original_sdpa
    _original_sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _sdpa


def uninstall():
    F.scaled_dot_product_attention = _original_sdpa
