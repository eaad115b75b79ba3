"""Streaming capture: each attention call reduced, on the model's device, to its stored bytes and metric sums."""

# A probe that records every layer's [B, H, N, N] before encoding it holds L of them at once (64 GiB
# for a 7B shape at 4,096 tokens). Here a listener on intercept.intercepting takes each call's
# weights while the forward runs, encodes each input's layer exactly as the writer would
# (codecs.encode_attention_layer), adds the layer to that layer's metric sums, and drops the
# weights: at most one layer's attention (and the encoder's and metrics' work on it) is alive.

import numpy as np
import torch

from tb_attention import capture, metrics
from tb_attention.capture import intercept
from tb_attention.runtime import defaults, devices, modules
from tb_attention.storage import codecs


class LayerStream:
    """Listener for `intercept.intercepting`: per self-attention call, each input's layer encoded
    (`encoded[input][layer]`, EncodedLayers for summary.write_examples) and the layer's metric sums
    updated (`result()`, `exemplars()`); the call's weights are not kept.

    Feed it batches in order: `start_batch(tokens, lengths, mask, syntax)` before each forward.
    """

    def __init__(self, *, with_metrics=True, include_first=False, top_k_exemplars=defaults.TOP_K_EXEMPLARS,
                 max_dense_tokens=codecs.DEFAULT_MAX_DENSE_TOKENS, top_k=codecs.DEFAULT_TOP_K):
        self.with_metrics = with_metrics
        self.stats_options = dict(include_first=include_first, top_k=top_k_exemplars)
        self.encode_options = dict(max_dense_tokens=max_dense_tokens, top_k=top_k, check=False)
        self.encoded = []  # per input (all batches): its EncodedLayers
        self.layer_names = []
        self.causal = None
        self._stats = []  # per layer: AttentionStats(1, H)
        self._max_logit = []  # per layer: float32 [H], the largest logit over every input's real queries

    def start_batch(self, tokens, mask, syntax=None):
        """The next forward's inputs: token strings per row, the [B, N] right-padded mask, parses or None."""
        self._tokens, self._mask, self._syntax = tokens, mask, syntax
        self._lengths = [int(n) for n in mask.sum(1).tolist()]
        self._first = len(self.encoded)
        self.encoded.extend([] for _ in tokens)

    def __call__(self, call):
        if call.cross:
            raise ValueError(f"{call.name}: streaming capture takes self-attention only, not cross attention")
        layer = call.index
        # The logits once: their row maxima are max_logit (health.row_max_logits over all rows), their
        # softmax the weights (float32 [B, H, N, N] on the model's device).
        logits = call.logits()
        rows = logits.amax(dim=-1)  # [B, H, N]
        weights = call.weights(logits=logits)
        del logits
        if weights.shape[0] != len(self._lengths) or weights.shape[2] != weights.shape[3]:
            raise ValueError(f"{call.name}: attention of shape {list(weights.shape)} for a batch of "
                             f"{len(self._lengths)} inputs; streaming takes self-attention over the inputs")
        if self.causal is None:
            self.causal = bool(call.causal)
        if layer == len(self.layer_names):
            self.layer_names.append(call.name)
        # On the CPU the encoder's numpy path is the faster one (same bytes); on a GPU it works there.
        host = weights.numpy() if weights.device.type == "cpu" else weights
        for row, n in enumerate(self._lengths):
            self.encoded[self._first + row].append(codecs.encode_attention_layer(
                host[row, :, :n, :n], self._tokens[row], layer=layer, causal=self.causal, **self.encode_options))
        if self.with_metrics:
            if layer == len(self._stats):
                self._stats.append(metrics.AttentionStats(1, weights.shape[1], **self.stats_options))
            self._stats[layer].update(weights[:, None], mask=self._mask, syntax=self._syntax)
            # AttentionStats keeps a work buffer the size of its input for the next batch: one per
            # layer would hold every layer's worth of memory again.
            self._stats[layer].release_workspace()
        del weights, host
        top = torch.stack([rows[row, :, :n].amax(-1) for row, n in enumerate(self._lengths)]).amax(0).cpu()
        if layer == len(self._max_logit):
            self._max_logit.append(top)
        else:
            self._max_logit[layer] = torch.maximum(self._max_logit[layer], top)

    def result(self):
        """{metric: [L, H]} over every input streamed so far."""
        per_layer = [stats.result() for stats in self._stats]
        values = {name: np.concatenate([values[name] for values in per_layer]) for name in per_layer[0]}
        values["max_logit"] = torch.stack(self._max_logit).to(torch.float32).numpy()
        return values

    def exemplars(self):
        """Per layer, per head, the top Exemplars (as AttentionStats.exemplars())."""
        return [stats.exemplars()[0] for stats in self._stats]


def capture_streaming(model, batches, listener):
    """Runs `model` over `batches` of (input_ids [B, N], mask [B, N], tokens per row, syntax or None),
    right-padded, in eval mode without gradients, handing each attention call to `listener`."""
    module = modules.unwrap(model)
    device = devices.device_of(module)
    options = {name: value for name, value in (("use_cache", False), ("logits_to_keep", 1))
               if capture.accepts(module, name)}
    with capture.eval_mode(module), torch.no_grad(), modules.eager(), intercept.intercepting(module, listener):
        for input_ids, mask, tokens, syntax in batches:
            listener.start_batch(tokens, mask, syntax)
            module(input_ids=devices.to_device(input_ids, device), attention_mask=devices.to_device(mask, device),
                   **options)
