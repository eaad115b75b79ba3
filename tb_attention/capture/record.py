"""Attention weights (and query/key) of any PyTorch model: Hugging Face transformers of every kind,
encoder-decoders, and plain modules on F.scaled_dot_product_attention or nn.MultiheadAttention."""

# How: `intercept.intercepting` hands every attention computation of a forward to a listener
# without changing what the model computes (see intercept/); a `Recorder` keeps, per call, the
# float32 weights the model computed, and q/k when asked. Calls are numbered in call order and
# named after their module. An encoder-decoder's calls form three groups: `encoder` (source x
# source), `decoder` (target x target, causal) and `cross` (target x source); any other model's
# calls form one group, `self`.
#
# Threads: interception state lives in a context variable, so captures in different threads
# (of different models, or of the same one) do not see each other, and a plain forward in
# another thread during a capture is not recorded.

import collections.abc
import contextlib
import dataclasses
import inspect
import typing

try:
    import torch
except ImportError:  # the writers and the plugin need no torch; capturing does
    raise ImportError(
        "capturing attention needs PyTorch: install it first, e.g. `pip install torch` "
        "(CPU build: `pip install torch --index-url https://download.pytorch.org/whl/cpu`)"
    ) from None

from tb_attention.capture import intercept, scoring
from tb_attention.capture.errors import CaptureError
from tb_attention.capture.padding import right_pad, side_of
from tb_attention.metrics import health
from tb_attention.runtime import devices, modules

GROUPS = ("encoder", "decoder", "cross")  # an encoder-decoder's groups, in this order


@dataclasses.dataclass
class CapturedGroup:
    """One group of an input's attention (`self`, or `encoder` / `decoder` / `cross`), float32 CPU tensors.

    attention: [layers, heads, n_queries, n_keys], row i = how query token i attends to the keys.
    query_positions / key_positions: where the kept query / key tokens were in the padded rows.
    scaling and the scoring rules (schema.SCORING_RULES, bidirectional_spans too): per layer, as in `Captured`.
    query / key: [layers, heads, n_queries, d] / [layers, kv_heads, n_keys, d], or None (not asked
        for, or a layer whose code gives no q/k, e.g. BLOOM's and DeBERTa-v2's eager attention).
    layer_names: per layer, the qualified name of its attention module (e.g. "blocks.3.attn").
    causal: whether every layer's mask is causal.
    """

    name: str
    attention: torch.Tensor
    query_positions: torch.Tensor
    key_positions: torch.Tensor
    scaling: list
    layer_names: list
    causal: bool
    softcap: list | None = None
    sliding_window: list | None = None
    sinks: list | None = None
    attention_chunk: list | None = None
    key_bias: list | None = None
    relative_bias: list | None = None
    bidirectional_spans: list | None = None
    query: torch.Tensor | None = None
    key: torch.Tensor | None = None
    max_logit: torch.Tensor | None = None  # [layers, heads]: the largest logit over this input's rows

    @property
    def num_layers(self):
        return self.attention.shape[0]


@dataclasses.dataclass
class Captured:
    """One input's attention over its own (non-pad) tokens, as float32 CPU tensors.

    attention: [layers, heads, n, n], row i = how token i attends to tokens 0..n-1 (the first
        group's: the model's self attention, or an encoder-decoder's encoder attention).
    positions: [n] int64, where the kept tokens were in the padded row.
    scaling: per layer, the factor on q·k before the softmax.
    softcap / sliding_window / sinks: per layer, the rest of how the model turns q·k into weights
        (None where a layer does not use it): logits soft-capped as c·tanh(x/c) (Gemma 2), keys
        `sliding_window` or more positions away masked (Mistral, Gemma 2; with q/k, also a window only the
        mask has, as a plain module's), a learned logit per head that
        takes part in the softmax and is then dropped (gpt-oss). See `codecs.encode_qk`.
    attention_chunk / key_bias / relative_bias: with q/k only, per layer (None where unused), this
        input's chunk size (Llama 4) and additive bias as a table per head over keys [H, n] (ALiBi) or
        over distances j - i [H, 2n - 1] (T5), checked to describe the model's mask and bias
        (`scoring.input_rules`; http_api.md, "GET /qk").
    query / key: [layers, heads, n, head_dim] / [layers, kv_heads, n, head_dim], after rotary
        embeddings, key heads not repeated for grouped-query attention; None unless asked for.
    input_ids: [n], the kept tokens' ids (None when the model was fed no input_ids).
    groups: every group, the first being the one above (`CapturedGroup`); an encoder-decoder has
        `encoder`, `decoder` and `cross`. decoder_input_ids: [n_target] for an encoder-decoder.
    """

    attention: torch.Tensor
    positions: torch.Tensor
    scaling: list
    softcap: list | None = None
    sliding_window: list | None = None
    sinks: list | None = None
    attention_chunk: list | None = None
    key_bias: list | None = None
    relative_bias: list | None = None
    query: torch.Tensor | None = None
    key: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    layer_names: list | None = None
    causal: bool | None = None
    groups: list = dataclasses.field(default_factory=list)
    decoder_input_ids: torch.Tensor | None = None

    @property
    def num_layers(self):
        return self.attention.shape[0]

    @property
    def num_heads(self):
        return self.attention.shape[1]

    @property
    def num_tokens(self):
        return self.attention.shape[2]

    def group(self, name):
        """The group called `name`; KeyError listing the groups there are."""
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no attention group {name!r}; this capture has {[g.name for g in self.groups]}")


class LayerScoring(typing.NamedTuple):
    """How one attention layer turned q·k into weights: scaling, then the optional soft cap, window
    mask and sink logits (`Captured` explains each)."""

    scaling: float
    softcap: float | None = None
    sliding_window: int | None = None
    sinks: torch.Tensor | None = None  # [heads]


class RecordedCall(typing.NamedTuple):
    """What a Recorder keeps of one attention call (tensors on the model's device, no grad)."""

    name: str
    weights: torch.Tensor  # float32 [B, H, Nq, Nk]
    query: torch.Tensor | None
    key: torch.Tensor | None
    scoring: LayerScoring
    causal: bool
    cross: bool
    row_max_logit: torch.Tensor | None  # float32 [B, H, Nq]: each query row's largest logit
    bias: torch.Tensor | None = None  # with q/k: the additive bias besides the mask (AttentionCall.additive_bias)
    keep: torch.Tensor | None = None  # with q/k: bool, True = may attend (AttentionCall.visible)


class Recorder:
    """What the latest forward of a model under `recording` computed, per attention call.

    Tensors stay on the model's device: `attentions` is a list of float32 [batch, heads, Nq, Nk]
    tensors in call order; `queries` [batch, heads, Nq, d] and `keys` [batch, kv_heads, Nk, d]
    likewise when recorded with `with_qk=True` (None for a call whose code gives no q/k).
    Weights are the softmax before dropout. `groups()` sorts the calls into groups.
    """

    def __init__(self, model, with_qk=False, with_max_logit=False, within=None):
        self.model_name = type(model).__name__
        self.with_qk = with_qk
        self.with_max_logit = with_max_logit
        self.within, self.calls = within, []  # within: keep only calls inside the module of that name

    def start(self):
        """Forgets what was recorded; called when a forward of the model starts."""
        self.calls = []

    def __call__(self, call):
        if call.index == 0:
            self.start()
        if not modules.inside(call.name, self.within):  # a vision-language model's vision tower
            return
        layer_scoring = LayerScoring(
            scaling=float(call.scale),
            softcap=call.softcap,
            sliding_window=call.sliding_window,
            sinks=None if call.sinks is None else call.sinks.detach(),
        )
        qk = (call.query, call.key) if self.with_qk else (None, None)
        # The one max-logit definition (health.py), in query chunks: no second full [B, H, N, N].
        row_max = health.row_max_logits(call.logits, call.shape[2]) if self.with_max_logit else None
        # What the scoring rules are made of, per input, once the inputs' lengths are known (_split).
        masks = (call.additive_bias(), call.visible()) if self.with_qk and call.query is not None else (None, None)
        self.calls.append(RecordedCall(call.name, call.weights(), *qk, layer_scoring, call.causal, call.cross, row_max, *masks))

    @property
    def num_layers(self):
        return len(self.calls)

    @property
    def attentions(self):
        return [c.weights for c in self.calls]

    @property
    def queries(self):
        return [c.query for c in self.calls] if self.with_qk else None

    @property
    def keys(self):
        return [c.key for c in self.calls] if self.with_qk else None

    @property
    def scorings(self):
        """Per call, how q·k became the weights (`LayerScoring`)."""
        return [c.scoring for c in self.calls]

    @property
    def names(self):
        return [c.name for c in self.calls]

    def groups(self):
        """{group name: [call indices]}: `self`, or an encoder-decoder's `encoder`, `decoder`, `cross`."""
        if not any(c.cross for c in self.calls):
            return {"self": list(range(len(self.calls)))} if self.calls else {}
        groups = {name: [] for name in GROUPS}
        for i, call in enumerate(self.calls):
            groups[group_of(call)].append(i)
        return {name: calls for name, calls in groups.items() if calls}


def group_of(call):
    """An encoder-decoder call's group: its cross flag, else the stack its module sits in."""
    if call.cross:
        return "cross"
    parts = call.name.lower().split(".")
    if "decoder" in parts:
        return "decoder"
    if "encoder" in parts:
        return "encoder"
    return "decoder" if call.causal else "encoder"


@contextlib.contextmanager
def recording(model, with_qk=False, with_max_logit=False, within=None):
    """Records the attention of every forward of `model` inside the block; yields a `Recorder`.

    Works on any torch.nn.Module: nothing about the model is changed (see intercept/), so
    training mode, gradients, inputs and outputs are the caller's: this works inside a training
    step too. The recorder holds the latest forward only (of the module named `within` only, if given).
    """
    recorder = Recorder(model, with_qk=with_qk, with_max_logit=with_max_logit, within=within)
    with intercept.intercepting(model, recorder):
        yield recorder


@contextlib.contextmanager
def eval_mode(model):
    """eval() for the block, then every module back in the mode it had (mixed modes included)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def accepts(model, name):
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()) and is_hf(model)


def is_hf(model):
    return any(c.__module__.startswith("transformers.") for c in type(model).__mro__)


def _no_attention_error(model):
    return CaptureError(
        f"model {type(model).__name__} computed no attention that tb-attention can see: it looks for Hugging Face "
        "AttentionInterface layers, torch.nn.functional.scaled_dot_product_attention calls, nn.MultiheadAttention, "
        "and torch.nn.functional.softmax over [batch, heads, queries, keys] inside a module whose class name "
        "contains 'Attention'. Compute attention through one of these (e.g. F.scaled_dot_product_attention)"
    )


def capture_attention(model, input_ids=None, attention_mask=None, *, with_qk=False, forward=None, within=None, **model_kwargs):
    """Runs `model` once over a batch and returns one `Captured` per input, without its padding.

    input_ids: [batch, N] (or [N]) token ids, or a tokenizer's BatchEncoding / dict of inputs.
    attention_mask: [batch, N], 1 for tokens, 0 for padding, on either side. Each input comes
    out as if it had been run alone: its tokens are moved to the front of the row (right
    padding) before the forward, along with every other per-token input ([batch, N, ...]).
    Encoder-decoders take decoder_input_ids (and decoder_attention_mask), fed as given (teacher
    forcing), and give groups `encoder`, `decoder` and `cross`; Whisper takes input_features.
    forward: how to call the model, forward(model, input_ids, attention_mask) (e.g. a plain
    module that takes a padding mask); by default a Hugging Face model gets every input as a
    keyword and any other module is called as model(input_ids), which then takes no padding.
    within: record only inside the module of that qualified name (a vision-language model's decoder).
    The forward runs in eval mode under torch.no_grad(), compiled code eagerly; modes are restored after.
    """
    model = modules.unwrap(model)  # torch.compile'd or DataParallel: the module that really runs
    if isinstance(input_ids, collections.abc.Mapping):  # a tokenizer's batch, tensors or lists
        batch = {name: torch.as_tensor(v) if isinstance(v, list) else v for name, v in input_ids.items()}
        model_kwargs = {**batch, **model_kwargs}
        input_ids = model_kwargs.pop("input_ids", None)
        attention_mask = model_kwargs.pop("attention_mask", attention_mask)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **model_kwargs}
    inputs = {k: torch.as_tensor(v) if isinstance(v, list) else v for k, v in inputs.items() if v is not None}
    main = inputs.get("input_ids", inputs.get("inputs_embeds"))
    if main is None and "input_features" not in inputs:
        raise TypeError("capture_attention needs input_ids (or inputs_embeds, or Whisper's input_features)")
    device = devices.device_of(model)
    if main is not None:
        single = main.dim() == (1 if "input_ids" in inputs else 2)  # one input, no batch dimension
    else:
        single = inputs["input_features"].dim() == 2
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            inputs[name] = (value.unsqueeze(0) if single else value).to(device)

    source = right_pad(inputs, "input_ids", "attention_mask", "", device)
    target = right_pad(inputs, "decoder_input_ids", "decoder_attention_mask", "decoder_", device)
    hf = is_hf(model)
    if forward is None and not hf:
        padded = source is not None and min(source.lengths) < inputs["input_ids" if "input_ids" in inputs else "inputs_embeds"].shape[1]
        if padded or set(inputs) - {"input_ids", "attention_mask"}:
            raise ValueError(
                f"{type(model).__name__} is not a Hugging Face model: it is called as model(input_ids), which takes no "
                "padding mask or other inputs; pass inputs of one length, or forward=lambda model, input_ids, "
                "attention_mask: ..."
            )
    for name, value in (("use_cache", False), ("logits_to_keep", 1)):  # nothing we return needs them
        if hf and name not in inputs and accepts(model, name):
            inputs[name] = value

    # modules.eager(): compiled code inside (block.compile()) runs as written, not recompiled.
    with eval_mode(model), torch.no_grad(), modules.eager(), \
            recording(model, with_qk=with_qk, with_max_logit=True, within=within) as recorder:
        if forward is not None:
            forward(model, inputs.get("input_ids"), inputs.get("attention_mask"))
        elif hf:
            model(**inputs)
        else:
            model(inputs["input_ids"])
    if not recorder.calls:
        raise _no_attention_error(model)
    return _split(recorder, source, target)


def _split(recorder, source, target):
    """Per input, its groups cropped to its own tokens (float32, CPU)."""
    groups = recorder.groups()
    calls = recorder.calls
    per_group = {}
    for name, indices in groups.items():
        chosen = [calls[i] for i in indices]
        shapes = {tuple(c.weights.shape) for c in chosen}
        if len(shapes) != 1:
            raise CaptureError(
                f"model {recorder.model_name}: the {name} attention calls have shapes {sorted(shapes)}, not one "
                f"[batch, heads, queries, keys] for every layer (a cache, or a different number of heads per layer, "
                "is not supported)"
            )
        batch, _, nq, nk = next(iter(shapes))
        queries_side = target if name in ("decoder", "cross") else source
        keys_side = target if name == "decoder" else source
        q_side = side_of(queries_side, batch, nq, name)
        k_side = side_of(keys_side, batch, nk, name)
        if name == "self" and nq != nk:
            raise CaptureError(
                f"model {recorder.model_name}: self attention of {nq} queries over {nk} keys (a cache or "
                "cross attention outside an encoder-decoder is not supported)"
            )
        attention = torch.stack([c.weights for c in chosen]).to("cpu", torch.float32)
        scorings = [c.scoring for c in chosen]
        rules = {
            "softcap": [s.softcap for s in scorings],
            "sliding_window": [s.sliding_window for s in scorings],
            "sinks": [None if s.sinks is None else s.sinks.float().cpu().tolist() for s in scorings],
        }
        rules = {rule: values for rule, values in rules.items() if any(v is not None for v in values)}
        has_qk = recorder.with_qk and all(c.query is not None for c in chosen)
        if recorder.with_qk and not has_qk:  # an option we cannot honour is an error, not a missing view
            raise CaptureError(
                f"model {recorder.model_name}: with_qk=True, but its {name!r} attention is computed by code that "
                "hands tb-attention no query/key vectors (scores made outside the attention functions it "
                "intercepts, e.g. by torch.matmul in the model's own module), so the neuron view cannot be "
                "stored for it; log it without with_qk"
            )
        query = torch.stack([c.query for c in chosen]).to("cpu", torch.float32) if has_qk else None
        key = torch.stack([c.key for c in chosen]).to("cpu", torch.float32) if has_qk else None
        row_max = torch.stack([c.row_max_logit for c in chosen]).to("cpu", torch.float32)  # [L, B, H, Nq]
        per_group[name] = (attention, q_side, k_side, scorings, rules, query, key, chosen, row_max)

    captured = []
    for b in range(len(next(iter(per_group.values()))[0][0])):
        result = []
        for name, (attention, q_side, k_side, scorings, rules, query, key, chosen, row_max) in per_group.items():
            n, m = q_side.lengths[b], k_side.lengths[b]
            causal = all(c.causal for c in chosen)
            if query is not None:
                layers = [(scoring.crop(c.bias, b, n, m), scoring.crop(c.keep, b, n, m), c.scoring.sliding_window, c.name)
                          for c in chosen]
                rules = {**rules, **scoring.layer_rules(layers, num_heads=query.shape[2], causal=causal,
                                                        model=recorder.model_name)}
            # clone(): each input owns its memory instead of pinning the whole batch.
            result.append(
                CapturedGroup(
                    name=name,
                    attention=attention[:, b, :, :n, :m].clone(),
                    query_positions=q_side.order[b, :n].clone(),
                    key_positions=k_side.order[b, :m].clone(),
                    scaling=[s.scaling for s in scorings],
                    layer_names=[c.name for c in chosen],
                    causal=causal,
                    **{rule: list(values) for rule, values in rules.items()},
                    query=query[:, b, :, :n].clone() if query is not None else None,
                    key=key[:, b, :, :m].clone() if key is not None else None,
                    max_logit=row_max[:, b, :, :n].amax(dim=-1),
                )
            )
        first = result[0]
        captured.append(
            Captured(
                attention=first.attention,
                positions=first.query_positions,
                scaling=first.scaling,
                softcap=first.softcap,
                sliding_window=first.sliding_window,
                sinks=first.sinks,
                attention_chunk=first.attention_chunk,
                key_bias=first.key_bias,
                relative_bias=first.relative_bias,
                query=first.query,
                key=first.key,
                input_ids=source.ids[b, : source.lengths[b]].clone() if source is not None and source.ids is not None else None,
                layer_names=first.layer_names,
                causal=first.causal,
                groups=result,
                decoder_input_ids=(
                    target.ids[b, : target.lengths[b]].clone() if target is not None and target.ids is not None else None
                ),
            )
        )
    return captured

