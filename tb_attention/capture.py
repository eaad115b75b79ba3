"""Attention weights (and post-rotary query/key) from any Hugging Face model that uses AttentionInterface."""

# How: transformers 5 models look their attention function up by name in a registry
# (`AttentionInterface`), under `config._attn_implementation`. We register one more name,
# ATTN_IMPLEMENTATION, whose function computes exactly what eager attention computes and hands
# the weights to the active `Recorder`. `recording(model)` points the model's configs at that
# name for the length of a `with` block; no model code is forked or patched.
#
# Threads: the active recorders live in a context variable, so captures of different models in
# different threads do not see each other. Captures of the SAME model are serialised by a
# per-model lock, because the implementation name lives in the model's (shared) config; a plain
# forward of that model in another thread during a capture computes the same values, unrecorded.

import collections.abc
import contextlib
import contextvars
import dataclasses
import inspect
import threading
import typing
import weakref

try:
    import torch
except ImportError:  # the writers and the plugin need no torch; capturing does
    raise ImportError(
        "capturing attention needs PyTorch: install it first, e.g. `pip install torch` "
        "(CPU build: `pip install torch --index-url https://download.pytorch.org/whl/cpu`)"
    ) from None
import transformers
from transformers import masking_utils

ATTN_IMPLEMENTATION = "tb_attention"


class CaptureError(RuntimeError):
    """The model's attention cannot be captured; the message says why and what to do."""


@dataclasses.dataclass
class Captured:
    """One input's attention over its own (non-pad) tokens, as float32 CPU tensors.

    attention: [layers, heads, n, n], row i = how token i attends to tokens 0..n-1.
    positions: [n] int64, where the kept tokens were in the padded row.
    scaling: per layer, the factor on q·k before the softmax.
    softcap / sliding_window / sinks: per layer, the rest of how the model turns q·k into weights
        (None where a layer does not use it): logits soft-capped as c·tanh(x/c) (Gemma 2), keys
        `sliding_window` or more positions away masked (Mistral, Gemma 2), a learned logit per head that
        takes part in the softmax and is then dropped (gpt-oss). See `metadata.encode_qk`.
    query / key: [layers, heads, n, head_dim] / [layers, kv_heads, n, head_dim], after rotary
        embeddings, key heads not repeated for grouped-query attention; None unless asked for.
    input_ids: [n], the kept tokens' ids (None when the model was fed inputs_embeds).
    """

    attention: torch.Tensor
    positions: torch.Tensor
    scaling: list
    softcap: list | None = None
    sliding_window: list | None = None
    sinks: list | None = None
    query: torch.Tensor | None = None
    key: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None

    @property
    def num_layers(self):
        return self.attention.shape[0]

    @property
    def num_heads(self):
        return self.attention.shape[1]

    @property
    def num_tokens(self):
        return self.attention.shape[2]


class LayerScoring(typing.NamedTuple):
    """How one attention layer turned q·k into weights: scaling, then the optional soft cap, window
    mask and sink logits (`Captured` explains each)."""

    scaling: float
    softcap: float | None = None
    sliding_window: int | None = None
    sinks: torch.Tensor | None = None  # [heads]


class Recorder:
    """What the latest forward of a model under `recording` computed, per attention layer.

    Tensors stay on the model's device, as the forward made them (no copies): `attentions` is a
    list of float32 [batch, heads, N, N] tensors, in layer order; `queries` [batch, heads, N, d]
    and `keys` [batch, kv_heads, N, d] likewise when recorded with `with_qk=True`. Weights are
    the softmax before dropout.
    """

    def __init__(self, model, with_qk=False):
        self.model_name = type(model).__name__
        self.with_qk = with_qk
        self._module_ids = frozenset(id(m) for m in model.modules())
        self.start()

    def start(self):
        """Forgets what was recorded; called before each forward of the model."""
        self._layers = {}  # (0, layer_idx) or (1, call number) -> (weights, query, key, LayerScoring)
        self._calls = 0
        self.repeated_layers = set()  # layer indices called more than once in one forward

    def _record(self, module, weights, query, key, scoring):
        layer_idx = getattr(module, "layer_idx", None)
        # Layers that know their index keep it (robust to layers being skipped or recomputed);
        # others (e.g. ALBERT's one shared layer) are numbered in call order.
        slot = (0, layer_idx) if isinstance(layer_idx, int) else (1, self._calls)
        self._calls += 1
        if slot in self._layers:
            self.repeated_layers.add(layer_idx)
        if self.with_qk:
            self._layers[slot] = (weights, query.detach(), key.detach(), scoring)
        else:
            self._layers[slot] = (weights, None, None, scoring)

    def _column(self, i):
        return [self._layers[slot][i] for slot in sorted(self._layers)]

    @property
    def num_layers(self):
        return len(self._layers)

    @property
    def attentions(self):
        return self._column(0)

    @property
    def queries(self):
        return self._column(1) if self.with_qk else None

    @property
    def keys(self):
        return self._column(2) if self.with_qk else None

    @property
    def scorings(self):
        """Per layer, how q·k became the weights (`LayerScoring`)."""
        return self._column(3)


_active_recorders = contextvars.ContextVar("tb_attention_recorders", default=())


def _recorder_for(module):
    for recorder in reversed(_active_recorders.get()):  # innermost first
        if id(module) in recorder._module_ids:
            return recorder
    return None


def _repeat_kv(x, groups):
    """[B, H_kv, N, d] -> [B, H_kv * groups, N, d], each key/value head serving `groups` query heads."""
    if groups == 1:
        return x
    b, h_kv, n, d = x.shape
    return x[:, :, None].expand(b, h_kv, groups, n, d).reshape(b, h_kv * groups, n, d)


def recording_attention_forward(
    module,
    query,
    key,
    value,
    attention_mask,
    scaling=None,
    dropout=0.0,
    softcap=None,
    position_bias=None,
    s_aux=None,
    **kwargs,
):
    """Eager attention (as in transformers' Llama, Gemma 2, T5 and gpt-oss), recording its weights.

    query [B, H, N, d], key/value [B, H_kv, M, d]; returns (output [B, N, H, d], weights [B, H, N, M]).
    Other keyword arguments (sliding_window, is_causal, position_ids...) only matter to kernels
    that build their own masks: here the mask carries them, as in eager attention.
    """
    if kwargs.get("sinks") is not None:
        raise CaptureError(
            f"{type(module).__name__} passes attention sinks as `sinks`, which tb-attention does not model yet"
        )
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]
    key_states = _repeat_kv(key, groups)
    value_states = _repeat_kv(value, groups)

    logits = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if position_bias is not None:
        logits = logits + position_bias
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = may attend (sdpa-style masks)
            logits = logits.masked_fill(~attention_mask, torch.finfo(logits.dtype).min)
        else:
            logits = logits + attention_mask

    if s_aux is None:
        # float32 softmax, as Llama's eager: the recorded weights are float32 whatever the model's dtype.
        weights = torch.softmax(logits, dim=-1, dtype=torch.float32)
    else:  # gpt-oss: a learned per-head "sink" logit takes part in the softmax, then is dropped.
        sinks = s_aux.reshape(1, -1, 1, 1).expand(logits.shape[0], -1, logits.shape[2], 1).to(logits.dtype)
        combined = torch.cat([logits, sinks], dim=-1)
        combined = combined - combined.amax(dim=-1, keepdim=True)
        weights = torch.softmax(combined, dim=-1, dtype=torch.float32)[..., :-1]

    recorder = _recorder_for(module)
    if recorder is not None:
        window = kwargs.get("sliding_window")
        scoring = LayerScoring(
            scaling=float(scaling),
            softcap=None if softcap is None else float(softcap),
            sliding_window=int(window) if window else None,  # 0/None: no window
            sinks=None if s_aux is None else s_aux.detach(),
        )
        recorder._record(module, weights.detach(), query, key, scoring)

    used = torch.nn.functional.dropout(weights.to(query.dtype), p=dropout, training=module.training)
    output = torch.matmul(used, value_states).transpose(1, 2).contiguous()
    return output, used


transformers.AttentionInterface.register(ATTN_IMPLEMENTATION, recording_attention_forward)
# Without a mask builder under the same name, causal models would hand us attention_mask=None.
transformers.AttentionMaskInterface.register(ATTN_IMPLEMENTATION, masking_utils.eager_mask)


def _attention_configs(model):
    """Every config the model's modules read `_attn_implementation` from, sub-configs included."""
    found = {}
    pending = [m.config for m in model.modules() if isinstance(getattr(m, "config", None), transformers.PreTrainedConfig)]
    while pending:
        config = pending.pop()
        if id(config) in found:
            continue
        found[id(config)] = config
        for name in getattr(config, "sub_configs", None) or ():
            sub = getattr(config, name, None)
            if isinstance(sub, transformers.PreTrainedConfig):
                pending.append(sub)
    return [c for c in found.values() if hasattr(c, "_attn_implementation_internal")]


_model_locks = weakref.WeakKeyDictionary()
_model_locks_guard = threading.Lock()


def _lock_for(model):
    with _model_locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def recording(model, with_qk=False):
    """Records the attention of every forward of `model` inside the block; yields a `Recorder`.

    The model (and each sub-config) is switched to the recording implementation and switched
    back on exit, exceptions included, whatever it was loaded with. Training mode, gradients and
    inputs are the caller's: this works inside a training step too. The recorder holds the
    latest forward only.
    """
    recorder = Recorder(model, with_qk=with_qk)
    with _lock_for(model):
        configs = _attention_configs(model)
        if not configs:
            raise CaptureError(
                f"{type(model).__name__} has no transformers config with an attention implementation; "
                "tb-attention captures Hugging Face transformers models"
            )
        previous = [(config, config._attn_implementation_internal) for config in configs]
        token = _active_recorders.set(_active_recorders.get() + (recorder,))
        hook = model.register_forward_pre_hook(lambda module, args: recorder.start())
        try:
            # The internal attribute, not `set_attn_implementation`: that one validates, may
            # warn or fall back per sub-model, and would not give back the exact previous values.
            for config in configs:
                config._attn_implementation_internal = ATTN_IMPLEMENTATION
            yield recorder
        finally:
            hook.remove()
            _active_recorders.reset(token)
            for config, implementation in previous:
                config._attn_implementation_internal = implementation


def _device_of(model):
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model):
    """eval() for the block, then every module back in the mode it had (mixed modes included)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _accepts(model, name):
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _check(recorder, batch, length):
    model = recorder.model_name
    if recorder.num_layers == 0:
        raise CaptureError(
            f"model {model} does not dispatch attention through transformers' AttentionInterface, so "
            "tb-attention cannot see it (its attention layers never called the registered function). "
            "Use a model whose attention layers call ALL_ATTENTION_FUNCTIONS (GPT-2, BERT, Llama, ...), or "
            "load it with attn_implementation='eager' and read model(..., output_attentions=True).attentions"
        )
    if recorder.repeated_layers:
        raise CaptureError(
            f"model {model} ran attention layer(s) {sorted(recorder.repeated_layers)} more than once in one "
            "forward (encoder-decoder or shared layers): only self-attention of one stack is supported"
        )
    shapes = {tuple(a.shape) for a in recorder.attentions}
    if len(shapes) != 1 or next(iter(shapes))[0] != batch or next(iter(shapes))[2:] != (length, length):
        raise CaptureError(
            f"model {model}: attention layers have shapes {sorted(shapes)}, expected [batch={batch}, heads, "
            f"{length}, {length}] in every layer (cross-attention, a cache, or a different number of heads per "
            "layer is not supported)"
        )


def capture_attention(model, input_ids=None, attention_mask=None, *, with_qk=False, **model_kwargs):
    """Runs `model` once over a batch and returns one `Captured` per input, without its padding.

    input_ids: [batch, N] (or [N]) token ids, or a tokenizer's BatchEncoding / dict of inputs.
    attention_mask: [batch, N], 1 for tokens, 0 for padding, on either side. Each input comes
    out as if it had been run alone: its tokens are moved to the front of the row (right
    padding) before the forward, along with every other per-token input ([batch, N, ...]).
    The forward runs in eval mode under torch.no_grad(); the model's modes are restored after.
    """
    if isinstance(input_ids, collections.abc.Mapping):  # a tokenizer's batch, tensors or lists
        batch = {name: torch.as_tensor(v) if isinstance(v, list) else v for name, v in input_ids.items()}
        model_kwargs = {**batch, **model_kwargs}
        input_ids = model_kwargs.pop("input_ids", None)
        attention_mask = model_kwargs.pop("attention_mask", attention_mask)
    if isinstance(input_ids, list):
        input_ids = torch.as_tensor(input_ids)
    if isinstance(attention_mask, list):
        attention_mask = torch.as_tensor(attention_mask)
    tokens = input_ids if input_ids is not None else model_kwargs.get("inputs_embeds")
    if tokens is None:
        raise TypeError("capture_attention needs input_ids (or inputs_embeds)")
    device = _device_of(model)
    single = tokens.dim() == (1 if input_ids is not None else 2)  # one input, no batch dimension
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **model_kwargs}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            inputs[name] = (value.unsqueeze(0) if single else value).to(device)
    tokens = inputs["input_ids"] if input_ids is not None else inputs["inputs_embeds"]
    batch, length = tokens.shape[:2]

    if attention_mask is None:
        keep = torch.ones(batch, length, dtype=torch.bool, device=device)
    else:
        keep = inputs["attention_mask"].bool()
        if keep.shape != (batch, length):
            raise ValueError(f"attention_mask has shape {tuple(keep.shape)}, the input {(batch, length)}")
    lengths = keep.sum(dim=1)
    # Kept tokens first, in their order: one gather turns left padding (or holes) into right padding.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    right_padded = torch.arange(length, device=device)[None, :] < lengths[:, None]
    if not torch.equal(keep, right_padded):
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor) and tuple(value.shape[:2]) == (batch, length):
                index = order.reshape(batch, length, *([1] * (value.dim() - 2))).expand_as(value)
                inputs[name] = value.gather(1, index)
    lengths = lengths.tolist()

    for name, value in (("use_cache", False), ("logits_to_keep", 1)):  # nothing we return needs them
        if name not in inputs and _accepts(model, name):
            inputs[name] = value

    with _eval_mode(model), torch.no_grad(), recording(model, with_qk=with_qk) as recorder:
        model(**inputs)
    _check(recorder, batch, length)

    n_max = max(lengths, default=0)
    attention = torch.stack([a[..., :n_max, :n_max] for a in recorder.attentions]).to("cpu", torch.float32)
    scorings = recorder.scorings
    rules = {
        "softcap": [s.softcap for s in scorings],
        "sliding_window": [s.sliding_window for s in scorings],
        "sinks": [None if s.sinks is None else s.sinks.float().cpu().tolist() for s in scorings],
    }
    rules = {name: values for name, values in rules.items() if any(v is not None for v in values)}
    if with_qk:
        query = torch.stack([q[:, :, :n_max] for q in recorder.queries]).to("cpu", torch.float32)
        key = torch.stack([k[:, :, :n_max] for k in recorder.keys]).to("cpu", torch.float32)
    ids = inputs["input_ids"].cpu() if input_ids is not None else None
    order = order.cpu()
    # clone(): each Captured owns its memory instead of pinning the whole batch.
    return [
        Captured(
            attention=attention[:, b, :, :n, :n].clone(),
            positions=order[b, :n].clone(),
            scaling=[s.scaling for s in scorings],
            **{name: list(values) for name, values in rules.items()},
            query=query[:, b, :, :n].clone() if with_qk else None,
            key=key[:, b, :, :n].clone() if with_qk else None,
            input_ids=ids[b, :n].clone() if ids is not None else None,
        )
        for b, n in enumerate(lengths)
    ]
