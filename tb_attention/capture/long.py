"""Long inputs: each attention call reduced in query chunks, on the model's device, to a long layer's bytes."""

# http_api.md, "Long examples". Nothing [H, Nq, Nk] exists: a call's logits are made for one chunk of
# query rows at a time (AttentionCall.logits applies causality per block), turned into the weights the
# model computed (AttentionCall.weights: sinks, soft cap and masks alike), fed to
# metrics.long.LongLayerSums, and the layer is encoded (codecs.long.encode_layer) as soon as its last
# chunk is in. What stays is O(H · N · k) per layer plus one chunk. A causal call's chunk stops at its
# last query's key (the keys after it have weight 0): about half the work.

import dataclasses

import numpy as np
import torch

from tb_attention import capture
from tb_attention.capture import intercept
from tb_attention.capture.errors import CaptureError
from tb_attention.metrics import long as long_metrics
from tb_attention.runtime import devices, modules
from tb_attention.storage.codecs import long as long_codec

# float32 weights of one query chunk, [H, rows, Nk], by the device's kind. On a CPU smaller chunks are
# faster (a causal chunk stops at its last query's key, and the chunk stays nearer the caches):
# SmolLM2-135M at 4,096 tokens took 27 % less time with 32 MiB chunks than with 256 MiB. On a GPU,
# larger chunks keep the number of kernel launches down at 128k tokens (16 MiB a query row for 32 heads).
CHUNK_BYTES = {"cpu": 32 << 20, "accelerator": 1 << 30}


def chunk_bytes_for(device):
    return CHUNK_BYTES["cpu" if torch.device(device).type == "cpu" else "accelerator"]


@dataclasses.dataclass
class LongCapture:
    """One long input's capture: what summary.write_examples takes for its group, and its metrics' data."""

    plan: long_codec.LongPlan
    layers: list  # EncodedLongLayer per layer
    layer_names: list
    causal: bool
    profile: np.ndarray  # float32 [L, H, B]
    sinks: np.ndarray  # float32 [L, H, sink_tokens]
    top1: np.ndarray  # uint32 [L, H, Nq]: each query's top key (UNUSED where none)
    max_logit: np.ndarray  # float32 [L, H]
    long_layers: list | None = None  # with keep_layers: each layer's LongLayer (floats, before encoding)

    def group(self, tokens, name="self"):
        """The writer's long group (summary.write_examples) over `tokens` (queries and keys)."""
        return {"name": name, "tokens": list(tokens), "key_tokens": list(tokens), "causal": self.causal,
                "layer_names": list(self.layer_names), "long": {"plan": self.plan, "layers": list(self.layers)}}


class LongStream:
    """Listener for `intercept.intercepting` over one long input (a batch of one, self-attention):
    each call reduced in query chunks and encoded at once. `num_layers` sizes the plan (the budget is
    per example); `result()` after the forward. keep_layers: keep each layer's floats too (tests, tools)."""

    def __init__(self, num_layers, *, budget=long_codec.DEFAULT_LONG_BUDGET, top_k=long_codec.DEFAULT_LONG_TOP_K,
                 sink_tokens=long_codec.DEFAULT_SINK_TOKENS, chunk_bytes=None, keep_layers=False):
        self.num_layers = num_layers
        self.options = dict(budget=budget, top_k=top_k, sink_tokens=sink_tokens)
        self.chunk_bytes = chunk_bytes
        self.plan = None
        self.layers, self.layer_names, self.profile, self.sinks, self.top1, self.max_logit = [], [], [], [], [], []
        self.causal = True
        self.long_layers = [] if keep_layers else None

    def __call__(self, call):
        b, h, nq, nk = call.shape
        if call.cross or b != 1 or nq != nk:
            raise CaptureError(f"{call.name}: a long input's capture takes the self-attention of one input, "
                               f"not attention of shape {[b, h, nq, nk]}")
        if len(self.layers) == self.num_layers:
            raise CaptureError(f"{call.name}: more attention calls than the {self.num_layers} layers counted")
        if self.plan is None:
            self.plan = long_codec.plan(self.num_layers, h, nq, nk, **self.options)
        device = call.query.device if call.query is not None else call._weights.device
        sums = long_metrics.LongLayerSums(self.plan, h, nq, nk, device)
        top = torch.full((h,), -torch.inf, device=device)
        budget = self.chunk_bytes if self.chunk_bytes is not None else chunk_bytes_for(device)
        rows = max(1, budget // (4 * h * nk))
        for start in range(0, nq, rows):
            chunk = slice(start, min(start + rows, nq))
            keys = slice(0, min(nk, chunk.stop + nk - nq)) if call.causal else slice(None)
            logits = call.logits(chunk, keys)  # [1, H, c, n]; the causal rule applied to this block only
            top = torch.maximum(top, logits[0].amax(dim=(1, 2)))
            weights = call.weights(chunk, logits=logits)[0, :, :, keys]
            del logits
            sums.add(weights, start)
            del weights
        layer = sums.result()
        self.layers.append(long_codec.encode_layer(len(self.layers), layer, self.plan))
        self.layer_names.append(call.name)
        self.profile.append(layer.profile)
        self.sinks.append(layer.sinks)
        self.top1.append(layer.top_index[:, :, 0].copy())
        self.max_logit.append(top.float().cpu().numpy())
        self.causal = self.causal and bool(call.causal)
        if self.long_layers is not None:
            self.long_layers.append(layer)

    def result(self):
        if len(self.layers) != self.num_layers:
            raise CaptureError(f"the forward made {len(self.layers)} attention calls, not the {self.num_layers} counted")
        return LongCapture(self.plan, self.layers, self.layer_names, self.causal, np.stack(self.profile),
                           np.stack(self.sinks), np.stack(self.top1), np.stack(self.max_logit), self.long_layers)


class _Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, call):
        self.calls += 1


def capture_long(model, input_ids, *, forward=None, budget=long_codec.DEFAULT_LONG_BUDGET,
                 top_k=long_codec.DEFAULT_LONG_TOP_K, sink_tokens=long_codec.DEFAULT_SINK_TOKENS,
                 chunk_bytes=None, keep_layers=False):
    """One long input's attention as a `LongCapture`: input_ids a list or 1-D tensor of token ids.

    The model runs as a Probe runs it (eval mode, no gradients, compiled code eagerly): a Hugging Face
    model with input_ids and attention_mask as keywords, a plain module as model(input_ids [1, N]), or
    forward(model, input_ids, attention_mask). First a forward over the first 8 tokens counts the
    attention calls (the plan's budget is shared by the layers), then the whole input.
    """
    module = modules.unwrap(model)
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
    counter = _Counter()
    _run(module, ids[:, :8], counter, forward)
    if not counter.calls:
        raise capture.record._no_attention_error(module)
    listener = LongStream(counter.calls, budget=budget, top_k=top_k, sink_tokens=sink_tokens,
                          chunk_bytes=chunk_bytes, keep_layers=keep_layers)
    _run(module, ids, listener, forward)
    return listener.result()


def _run(module, ids, listener, forward):
    device = devices.device_of(module)
    ids = devices.to_device(ids, device)
    mask = torch.ones_like(ids)
    hf = capture.is_hf(module)
    options = {name: value for name, value in (("use_cache", False), ("logits_to_keep", 1))
               if hf and capture.accepts(module, name)}
    with capture.eval_mode(module), torch.no_grad(), modules.eager(), intercept.intercepting(module, listener):
        if forward is not None:
            forward(module, ids, mask)
        elif hf:
            module(input_ids=ids, attention_mask=mask, **options)
        else:
            module(ids)
