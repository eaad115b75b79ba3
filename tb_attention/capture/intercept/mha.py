"""Route 4: nn.MultiheadAttention, and nn.TransformerEncoderLayer's fused fast path, from the in-projection."""

import inspect

import torch
import torch.nn.functional as F

from tb_attention.capture.errors import CaptureError
from tb_attention.capture.intercept.call import bind_arguments, causal_keep, keeps_causal, split_mask

MHA_PARAMETERS = list(inspect.signature(torch.nn.MultiheadAttention.forward).parameters)[1:]
_LAYER_PARAMETERS = list(inspect.signature(torch.nn.TransformerEncoderLayer.forward).parameters)[1:]


def mha_fields(mha, query, key, attn_mask=None, key_padding_mask=None, is_causal=False, **_):
    """q, k per head and the mask, recomputed from the module's in-projection (no grad)."""
    if query.is_nested or key.is_nested:
        raise CaptureError(f"{type(mha).__name__} got nested tensors, which tb-attention cannot capture")
    cross = query is not key
    with torch.no_grad():
        if query.dim() == 2:  # unbatched [N, E]: a batch of one
            query, key = query.unsqueeze(0), key.unsqueeze(0)
        elif not mha.batch_first:
            query, key = query.transpose(0, 1), key.transpose(0, 1)
        e, h = mha.embed_dim, mha.num_heads
        d = e // h
        if mha._qkv_same_embed_dim:
            w_q, w_k = mha.in_proj_weight[:e], mha.in_proj_weight[e : 2 * e]
        else:
            w_q, w_k = mha.q_proj_weight, mha.k_proj_weight
        b_q = b_k = None
        if mha.in_proj_bias is not None:
            b_q, b_k = mha.in_proj_bias[:e], mha.in_proj_bias[e : 2 * e]
        q = F.linear(query, w_q, b_q)
        k = F.linear(key, w_k, b_k)
        batch, nq, nk = q.shape[0], q.shape[1], k.shape[1]
        extra = 0
        if mha.bias_k is not None:
            k = torch.cat([k, mha.bias_k.reshape(1, 1, e).expand(batch, 1, e)], dim=1)
            extra += 1
        q = q.reshape(batch, nq, h, d).transpose(1, 2)
        k = k.reshape(batch, nk + extra, h, d).transpose(1, 2)
        if mha.add_zero_attn:
            k = torch.cat([k, k.new_zeros(batch, h, 1, d)], dim=2)
            extra += 1
        keep, bias = None, None
        for mask, per_key in ((attn_mask, False), (key_padding_mask, True)):
            if mask is None:
                continue
            if per_key:
                mask = mask.reshape(batch, 1, 1, nk)
            elif mask.dim() == 3:  # [B * H, Nq, Nk]
                mask = mask.reshape(batch, h, nq, nk)
            if mask.dtype == torch.bool:
                part_keep, part_bias = ~mask, None  # True = may NOT attend, in torch's convention
            else:
                part_keep, part_bias = split_mask(mask, nk)
            if extra:  # the appended keys (bias_k, zero key) are never masked
                pad = [0, extra]
                part_keep = None if part_keep is None else F.pad(part_keep, pad, value=True)
                part_bias = None if part_bias is None else F.pad(part_bias, pad, value=0.0)
            keep = part_keep if keep is None else keep & part_keep
            bias = part_bias if bias is None else (bias + part_bias if part_bias is not None else bias)
        if is_causal and attn_mask is None:
            causal = F.pad(causal_keep(nq, nk, q.device), [0, extra], value=True)
            keep = causal if keep is None else keep & causal
        if keep is not None:
            while keep.dim() < 4:
                keep = keep.unsqueeze(0)
        if bias is not None:
            while bias.dim() < 4:
                bias = bias.unsqueeze(0)
    return dict(
        query=q, key=k, scale=d**-0.5, causal=keeps_causal(keep, nq, nk + extra), bias=bias, route="mha",
        _keep=keep, cross=cross,
    )


def fast_path_encoder_layer(layer, args, kwargs):
    """The self attention of an nn.TransformerEncoderLayer that ran fused, without its MultiheadAttention."""
    bound = bind_arguments(_LAYER_PARAMETERS, args, kwargs)
    src = bound.get("src")
    key_padding_mask = bound.get("src_key_padding_mask")
    if src.is_nested:  # TransformerEncoder packed a padded batch: its lengths are the padding mask
        lengths = [t.shape[0] for t in src.unbind()]
        src = src.to_padded_tensor(0.0)
        n = src.shape[1] if layer.self_attn.batch_first else src.shape[0]
        key_padding_mask = torch.arange(n, device=src.device)[None, :] >= torch.tensor(lengths, device=src.device)[:, None]
    with torch.no_grad():
        x = layer.norm1(src) if layer.norm_first else src
    return mha_fields(
        layer.self_attn, x, x, attn_mask=bound.get("src_mask"), key_padding_mask=key_padding_mask,
        is_causal=bool(bound.get("is_causal", False)),
    )
