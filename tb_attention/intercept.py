"""Sees every attention computation of a forward, whatever module computes it, without changing it."""

# How: four routes, each a thin wrapper that calls the model's own code with the model's own
# arguments and only READS what went in and came out, so outputs and gradients are bit for bit
# those of a forward without interception:
#   - Hugging Face AttentionInterface models: `AttentionInterface.get_interface` hands out a
#     wrapper around the function the model would have used (eager, sdpa, flash, flex, custom).
#     The model's `_attn_implementation` is never changed, so masks and code paths stay the same.
#   - bare `torch.nn.functional.scaled_dot_product_attention` calls (nanoGPT, Falcon's sdpa path).
#   - `nn.MultiheadAttention` (and `nn.TransformerEncoderLayer`'s fused fast path, which never
#     calls its MultiheadAttention): q and k recomputed from the in-projection.
#   - eager code outside AttentionInterface (BLOOM, DeBERTa-v2, eager Falcon): the
#     `torch.nn.functional.softmax` of a 4-D tensor inside a module whose class is an *Attention.
#   - FlexAttention called by the model's code: `flex_attention` wherever the model's code files
#     bound it, its score_mod and block mask evaluated densely.
# The routes nest: a call seen by one route (e.g. an HF eager function, which calls softmax) is
# not seen again by the routes inside it.
#
# Module names come from GLOBAL forward hooks (`register_module_forward_pre_hook`): per-module
# hooks would switch nn.TransformerEncoderLayer off its fast path and change its outputs.
# Threads: what is active lives in a context variable; the global patches and hooks are
# installed while any thread intercepts and pass straight through for everyone else.

import contextlib
import contextvars
import dataclasses
import inspect
import re
import sys
import threading

import torch
import torch.nn.functional as F

from tb_attention.modules import unwrap  # the module that really runs (compiled, DDP...)

_CROSS_NAME = re.compile(r"(cross|encoder_attn|encdec)", re.IGNORECASE)
_ATTENTION_CLASS = re.compile(r"attention", re.IGNORECASE)


def _capture_error(message):
    from tb_attention.capture import CaptureError  # capture imports us; the error class lives there

    return CaptureError(message)


def _repeat_kv(x, groups):
    """[B, H_kv, N, d] -> [B, H_kv * groups, N, d]: query head h uses key head h // groups."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _masked(x):
    """True where a logit/additive mask is a mask value (finfo.min or -inf), in its own dtype."""
    return x <= torch.finfo(x.dtype).min / 2


@dataclasses.dataclass(eq=False)
class AttentionCall:
    """One attention computation seen during a forward; valid only inside the listener call.

    query [B, H, Nq, d] and key [B, H_kv, Nk, d] as the model used them (None for eager code
    outside AttentionInterface, whose logits are read directly). `bias`: an additive float
    term of the logits besides the mask (T5's position bias, a float attention mask), or None.
    """

    name: str
    index: int
    module: torch.nn.Module | None
    query: torch.Tensor | None
    key: torch.Tensor | None
    scale: float
    causal: bool
    softcap: float | None = None
    sliding_window: int | None = None
    sinks: torch.Tensor | None = None
    cross: bool = False
    bias: torch.Tensor | None = None
    route: str = "hf"  # "hf", "sdpa", "mha", "softmax", "flex"
    _keep: torch.Tensor | None = None  # bool, broadcastable to [B, H, Nq, Nk]: True = may attend
    _logits: torch.Tensor | None = None  # read directly (softmax route)
    _weights: torch.Tensor | None = None

    @property
    def shape(self):
        """(B, H, Nq, Nk)."""
        if self._logits is not None:
            return tuple(self._logits.shape)
        b, h, nq, _ = self.query.shape
        return (b, h, nq, self.key.shape[2])

    def logits(self, rows=None):
        """float32 [B, H, n_rows, Nk]: scale·q·kᵀ, soft cap, + bias and masks (masked = -inf). No grad."""
        rows = rows if rows is not None else slice(None)
        with torch.no_grad():
            if self._logits is not None:
                x = self._logits[:, :, rows]
                return x.float().masked_fill(_masked(x), float("-inf"))
            q = self.query[:, :, rows].float()
            k = _repeat_kv(self.key.float(), self.query.shape[1] // self.key.shape[1])
            x = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            if self.softcap is not None:
                x = torch.tanh(x / self.softcap) * self.softcap
            if self.bias is not None:
                x = x + _rows(self.bias, rows).float()
            if self._keep is not None:
                x = x.masked_fill(~_rows(self._keep, rows), float("-inf"))
            return x

    def weights(self, rows=None):
        """float32 [B, H, n_rows, Nk]: the softmax the model computed (sinks taken into account). No grad."""
        rows = rows if rows is not None else slice(None)
        with torch.no_grad():
            if self._weights is not None:
                return self._weights[:, :, rows].float()
            x = self.logits(rows)
            if self.sinks is None:
                w = torch.softmax(x, dim=-1)
            else:  # gpt-oss: one learned logit per head takes part in the softmax, then is dropped
                sink = self.sinks.float().reshape(1, -1, 1, 1).expand(x.shape[0], -1, x.shape[2], 1)
                w = torch.softmax(torch.cat([x, sink], dim=-1), dim=-1)[..., :-1]
            return w.nan_to_num(0.0)  # a query that may attend to nothing (padding) attends to nothing


def _rows(t, rows):
    return t if t.shape[-2] == 1 else t[..., rows, :]


def _causal_keep(nq, nk, device, bottom_right=False):
    """[Nq, Nk] bool: key j visible from query i (top-left aligned as SDPA's is_causal, or bottom-right)."""
    offset = nk - nq if bottom_right else 0
    return torch.ones(nq, nk, dtype=torch.bool, device=device).tril(offset)


def _is_causal(keep, nq, nk):
    """Whether `keep` hides every key after its query (bottom-right aligned), over more than one query."""
    if keep is None or nq < 2:
        return False
    future = ~_causal_keep(nq, nk, keep.device, bottom_right=True)
    return not bool((keep.expand(*keep.shape[:-2], nq, nk) & future).any())


def _split_mask(mask, nk):
    """A bool (True = attend) or additive float mask -> (keep bool or None, finite bias or None)."""
    if mask is None:
        return None, None
    mask = mask[..., :nk]
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.dtype == torch.bool:
        return mask, None
    keep = ~_masked(mask)
    bias = mask.masked_fill(~keep, 0)
    return keep, (bias if bool(bias.any()) else None)


# -------------------------------------------------------------------------------------------------
# State


class _Interception:
    """One `intercepting` block: the model's module names, its listener, the running modules."""

    def __init__(self, model, listener):
        self.model = model
        self.listener = listener
        self.names = {}
        for name, module in model.named_modules(remove_duplicate=False):
            self.names.setdefault(id(module), name)
        self.stack = []  # [module, calls seen when it started]
        self.suppressed = 0  # > 0 while a route records a call itself (inner routes stay quiet)
        self.calls = 0

    def current_module(self):
        """The innermost running module, past wrappers that only run a piece of attention."""
        for module, _ in reversed(self.stack):
            if not isinstance(module, (torch.nn.Softmax, torch.nn.Dropout)):
                return module
        return None

    def emit(self, module, **fields):
        if torch._C._current_graph_task_id() != -1:
            return  # a forward recomputed during backward (activation checkpointing): seen already
        name = self.names.get(id(module), "") if module is not None else ""
        cross = fields.pop("cross", None)
        if cross is None:
            cross = bool(getattr(module, "is_cross_attention", False)) or bool(_CROSS_NAME.search(name))
        call = AttentionCall(name=name, index=self.calls, module=module, cross=cross, **fields)
        self.calls += 1
        self.suppressed += 1  # the listener's own tensor work must not be seen as attention
        try:
            self.listener(call)
        finally:
            self.suppressed -= 1


_active = contextvars.ContextVar("tb_attention_interceptions", default=())


def _interception_for(module):
    for it in reversed(_active.get()):
        if id(module) in it.names:
            return it
    return None


def _innermost():
    """The interception whose model is running in this context (innermost first), unless it is
    suppressed; None when no intercepted model is running."""
    for it in reversed(_active.get()):
        if it.stack:
            return None if it.suppressed else it
    return None


# -------------------------------------------------------------------------------------------------
# Route 1: Hugging Face AttentionInterface


def _hf_wrapper(function, kind):
    def intercepted_attention(module, query, key, value, attention_mask=None, *args, **kwargs):
        it = _interception_for(module)
        if it is None or it.suppressed:
            return function(module, query, key, value, attention_mask, *args, **kwargs)
        it.suppressed += 1
        try:
            result = function(module, query, key, value, attention_mask, *args, **kwargs)
        finally:
            it.suppressed -= 1
        bound = _hf_arguments(function, args, kwargs)
        it.emit(module, **_hf_fields(module, query, key, attention_mask, bound, kind))
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


def _hf_fields(module, query, key, mask, kwargs, kind):
    nq, nk = query.shape[2], key.shape[2]
    scale = kwargs.get("scaling")
    scale = float(scale) if scale is not None else query.shape[-1] ** -0.5
    window = kwargs.get("sliding_window")
    window = int(window) if window else None
    is_causal = kwargs.get("is_causal")
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    keep, bias = None, None
    if kind == "flex" and mask is not None and not isinstance(mask, torch.Tensor):
        keep = _dense_block_mask(mask, query.shape[0], query.shape[1], nq, nk, query.device)
    elif kind.startswith("flash"):
        # A 2-D padding mask (1 = token) or none; causality and the window are the kernel's flags.
        if mask is not None:
            keep = mask[:, None, None, :nk].bool()
        if is_causal and nq > 1:
            causal = _causal_keep(nq, nk, query.device, bottom_right=True)
            keep = causal if keep is None else keep & causal
        if window:
            i = torch.arange(nq, device=query.device)[:, None] + (nk - nq)
            j = torch.arange(nk, device=query.device)[None, :]
            near = (i - j).abs() < window
            keep = near if keep is None else keep & near
    elif isinstance(mask, torch.Tensor) and mask.dim() >= 2:
        keep, bias = _split_mask(mask, nk)
    elif mask is None and kind != "eager" and is_causal and nq > 1:
        keep = _causal_keep(nq, nk, query.device)  # sdpa and the like: no mask means is_causal
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
        causal=_is_causal(keep, nq, nk),
        softcap=float(softcap) if softcap else None,
        sliding_window=window,
        sinks=None if sinks is None else sinks.detach(),
        bias=None if bias is None else bias.detach(),
        route="hf",
        _keep=keep,
    )


def _dense_block_mask(block_mask, b, h, nq, nk, device):
    """A FlexAttention BlockMask evaluated densely through its mask_mod: [B, H, Nq, Nk] bool."""
    mask_mod = getattr(block_mask, "mask_mod", None)
    if mask_mod is None:
        raise _capture_error("a FlexAttention block mask without a mask_mod cannot be evaluated densely")
    index = [torch.arange(n, device=device).reshape([-1 if d == k else 1 for d in range(4)]) for k, n in enumerate((b, h, nq, nk))]
    try:
        keep = mask_mod(*index)
    except Exception as e:
        raise _capture_error(
            f"this FlexAttention mask_mod cannot be evaluated densely on the probe ({type(e).__name__}: {e}); "
            "load the model with attn_implementation='sdpa' or 'eager' to capture it"
        ) from e
    return torch.as_tensor(keep, device=device).bool().expand(b, h, nq, nk)


_original_get_interface = None


def _get_interface(self, attn_implementation, default):
    function = _original_get_interface(self, attn_implementation, default)
    if not _active.get():
        return function
    if function is default:
        kind = "eager"
    else:
        kind = str(attn_implementation).removeprefix("paged|")
        kind = "flash" if "flash" in kind else "flex" if "flex" in kind else kind
    return _hf_wrapper(function, kind)


# -------------------------------------------------------------------------------------------------
# Route 2: torch.nn.functional.scaled_dot_product_attention

_original_sdpa = None


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, **kwargs):
    output = _original_sdpa(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
        enable_gqa=enable_gqa, **kwargs,
    )
    it = _innermost()
    if it is not None and not query.is_nested:
        q, k = _as_heads(query), _as_heads(key)
        nq, nk = q.shape[2], k.shape[2]
        keep, bias = _split_mask(attn_mask.detach() if attn_mask is not None else None, nk)
        if is_causal:
            causal = _causal_keep(nq, nk, q.device)
            keep = causal if keep is None else keep & causal
        it.emit(
            it.current_module(),
            query=q.detach(),
            key=k.detach(),
            scale=float(scale) if scale is not None else q.shape[-1] ** -0.5,
            causal=_is_causal(keep, nq, nk),
            bias=bias,
            route="sdpa",
            _keep=keep,
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


# -------------------------------------------------------------------------------------------------
# Route 3: torch.nn.functional.softmax of a 4-D tensor inside an *Attention module (eager code
# outside AttentionInterface: its input are the logits, its output the weights, both exact)

_original_softmax = None


def _softmax(input, dim=None, _stacklevel=3, dtype=None):
    output = _original_softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)
    it = _innermost()
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
                causal=_is_causal(~_masked(logits), nq, nk),
                route="softmax",
                _logits=logits,
                _weights=output.detach(),
            )
    return output


# -------------------------------------------------------------------------------------------------
# Route 4: nn.MultiheadAttention (and nn.TransformerEncoderLayer's fused fast path)

_MHA_PARAMETERS = list(inspect.signature(torch.nn.MultiheadAttention.forward).parameters)[1:]
_LAYER_PARAMETERS = list(inspect.signature(torch.nn.TransformerEncoderLayer.forward).parameters)[1:]


def _bind(names, args, kwargs):
    return {**dict(zip(names, args)), **kwargs}


def _mha_fields(mha, query, key, attn_mask=None, key_padding_mask=None, is_causal=False, **_):
    """q, k per head and the mask, recomputed from the module's in-projection (no grad)."""
    if query.is_nested or key.is_nested:
        raise _capture_error(f"{type(mha).__name__} got nested tensors, which tb-attention cannot capture")
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
                part_keep, part_bias = _split_mask(mask, nk)
            if extra:  # the appended keys (bias_k, zero key) are never masked
                pad = [0, extra]
                part_keep = None if part_keep is None else F.pad(part_keep, pad, value=True)
                part_bias = None if part_bias is None else F.pad(part_bias, pad, value=0.0)
            keep = part_keep if keep is None else keep & part_keep
            bias = part_bias if bias is None else (bias + part_bias if part_bias is not None else bias)
        if is_causal and attn_mask is None:
            causal = F.pad(_causal_keep(nq, nk, q.device), [0, extra], value=True)
            keep = causal if keep is None else keep & causal
        if keep is not None:
            while keep.dim() < 4:
                keep = keep.unsqueeze(0)
        if bias is not None:
            while bias.dim() < 4:
                bias = bias.unsqueeze(0)
    return dict(
        query=q, key=k, scale=d**-0.5, causal=_is_causal(keep, nq, nk + extra), bias=bias, route="mha",
        _keep=keep, cross=cross,
    )


def _fast_path_encoder_layer(layer, args, kwargs):
    """The self attention of an nn.TransformerEncoderLayer that ran fused, without its MultiheadAttention."""
    bound = _bind(_LAYER_PARAMETERS, args, kwargs)
    src = bound.get("src")
    key_padding_mask = bound.get("src_key_padding_mask")
    if src.is_nested:  # TransformerEncoder packed a padded batch: its lengths are the padding mask
        lengths = [t.shape[0] for t in src.unbind()]
        src = src.to_padded_tensor(0.0)
        n = src.shape[1] if layer.self_attn.batch_first else src.shape[0]
        key_padding_mask = torch.arange(n, device=src.device)[None, :] >= torch.tensor(lengths, device=src.device)[:, None]
    with torch.no_grad():
        x = layer.norm1(src) if layer.norm_first else src
    return _mha_fields(
        layer.self_attn, x, x, attn_mask=bound.get("src_mask"), key_padding_mask=key_padding_mask,
        is_causal=bool(bound.get("is_causal", False)),
    )


# -------------------------------------------------------------------------------------------------
# Route 5: FlexAttention called by the model's own code (transformers' flex implementation is route 1)

_FLEX_PARAMETERS = ("query", "key", "value", "score_mod", "block_mask", "scale", "enable_gqa")
_original_flex = None


def _flex(*args, **kwargs):
    output = _original_flex(*args, **kwargs)
    it = _innermost()
    if it is not None:
        bound = _bind(_FLEX_PARAMETERS, args, kwargs)
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
            causal=_is_causal(~torch.isinf(logits), nq, nk),
            route="flex",
            _logits=logits,
        )
    return output


def _dense_flex_logits(query, key, score_mod, block_mask, scale):
    """float32 [B, H, Nq, Nk]: FlexAttention's scores, score_mod and mask_mod evaluated densely."""
    b, h, nq, _ = query.shape
    nk = key.shape[2]
    scale = scale if scale is not None else query.shape[-1] ** -0.5
    k = _repeat_kv(key.float(), h // key.shape[1])
    scores = torch.matmul(query.float(), k.transpose(-1, -2)) * scale
    index = [torch.arange(n, device=query.device).reshape([-1 if d == i else 1 for d in range(4)])
             for i, n in enumerate((b, h, nq, nk))]
    if score_mod is not None:
        try:
            scores = torch.as_tensor(score_mod(scores, *index)).float().expand(b, h, nq, nk)
        except Exception as e:
            raise _capture_error(
                f"this FlexAttention score_mod cannot be evaluated densely on the probe ({type(e).__name__}: {e}); "
                "write it with broadcasting tensor operations, or compute this attention with "
                "F.scaled_dot_product_attention to capture it"
            ) from e
    if block_mask is not None:
        scores = scores.masked_fill(~_dense_block_mask(block_mask, b, h, nq, nk, query.device), float("-inf"))
    return scores


def _flex_bindings(model):
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


# -------------------------------------------------------------------------------------------------
# Global hooks: the running-module stack, and route 4


def _pre_hook(module, args):
    it = _interception_for(module)
    if it is None:
        return None
    if module is it.model and not it.stack:
        # A new forward of the model: calls numbered from 0. (Not on any module entered with an
        # empty stack: a block entered from the model's own pre-hook, as the monitor's, never sees
        # the model's pre-hook, and its children would each restart the numbering.)
        it.calls = 0
    it.stack.append((module, it.calls))
    if isinstance(module, torch.nn.MultiheadAttention) and not it.suppressed:
        it.suppressed += 1  # its inner softmax / SDPA are this route's call
        it.stack[-1] = (module, -1 - it.calls)  # negative: this module suppressed
    return None


def _post_hook(module, args, kwargs, output=None):  # no output: the forward raised
    it = _interception_for(module)
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
            it.emit(module, **_mha_fields(module, **_bind(_MHA_PARAMETERS, args, kwargs)))
    elif (
        isinstance(module, torch.nn.TransformerEncoderLayer)
        and output is not None
        and not it.suppressed
        and it.calls == started  # its MultiheadAttention never ran: the fused fast path
    ):
        it.emit(module.self_attn, **_fast_path_encoder_layer(module, args, kwargs))
    return None


# -------------------------------------------------------------------------------------------------
# Installation: while any thread intercepts

_install_lock = threading.Lock()
_install_count = 0
_handles = []
_patched = []  # the AttentionInterface class whose get_interface is ours


_flex_counts = {}  # (module name, attribute) -> interceptions that patched it


def _install_flex(bindings):
    global _original_flex
    with _install_lock:
        for module_name, attribute in bindings:
            code = sys.modules[module_name]
            if _original_flex is None:
                _original_flex = getattr(code, attribute)
            if not _flex_counts.get((module_name, attribute)):
                setattr(code, attribute, _flex)
            _flex_counts[(module_name, attribute)] = _flex_counts.get((module_name, attribute), 0) + 1


def _uninstall_flex(bindings):
    with _install_lock:
        for binding in bindings:
            _flex_counts[binding] -= 1
            if not _flex_counts[binding]:
                del _flex_counts[binding]
                setattr(sys.modules[binding[0]], binding[1], _original_flex)


def _install():
    global _install_count, _original_sdpa, _original_softmax, _original_get_interface
    with _install_lock:
        _install_count += 1
        if _install_count > 1:
            return
        _original_sdpa = F.scaled_dot_product_attention
        _original_softmax = F.softmax
        F.scaled_dot_product_attention = _sdpa
        F.softmax = _softmax
        interface = _attention_interface()
        if interface is not None:
            _original_get_interface = interface.get_interface
            interface.get_interface = _get_interface
            _patched.append(interface)
        _handles.append(torch.nn.modules.module.register_module_forward_pre_hook(_pre_hook))
        _handles.append(
            torch.nn.modules.module.register_module_forward_hook(_post_hook, with_kwargs=True, always_call=True)
        )


def _uninstall():
    global _install_count
    with _install_lock:
        _install_count -= 1
        if _install_count:
            return
        F.scaled_dot_product_attention = _original_sdpa
        F.softmax = _original_softmax
        while _patched:
            _patched.pop().get_interface = _original_get_interface
        while _handles:
            _handles.pop().remove()


def _attention_interface():
    module = sys.modules.get("transformers.modeling_utils")  # a model that needs it has imported it
    interface = getattr(module, "AttentionInterface", None)
    return interface if hasattr(interface, "get_interface") else None


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
    it = _Interception(unwrap(model), listener)
    flex = _flex_bindings(it.model)
    _install()
    _install_flex(flex)
    token = _active.set(_active.get() + (it,))
    try:
        yield it
    finally:
        _active.reset(token)
        _uninstall_flex(flex)
        _uninstall()
