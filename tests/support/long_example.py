"""A 32-layer × 32-head, 4,096-token causal example stored top-k, built without its dense weights."""

# Encoding one dense [32, 4096, 4096] layer takes about 50 s and 7 GB here (2 GB of float32 and its
# temporaries), too much for a test of 32 layers. Each query of this example attends to at most
# three keys, so its top-k rows are built directly, the way codecs.attention stores them (largest
# quantised weight first, ties to the smaller key, then zero-weight keys, unused slots 65535);
# `build_layer` is checked byte for byte against `codecs.encode_attention_layer` on a small case.

import numpy as np

from tb_attention.storage import codecs
from tb_attention.storage.codecs.attention import EncodedLayer, quantize
from tb_attention.storage.codecs.blob import ATTENTION_MAGIC, compress, pack

LAYERS, HEADS, TOKENS, TOP_K = 32, 32, 4096, 8
PAD = 0xFFFF


def back_of(layer, head):
    """How far back query i's main key lies."""
    return (head % 8) + 1 + 3 * (layer % 4)


def row_weights(layer, head, i):
    """{key: weight} of query i: the token `back_of` before it, the first token and itself."""
    weights = {}
    for key, w in ((max(0, i - back_of(layer, head)), 0.5), (0, 0.3 if layer % 2 else 0.1), (i, 0.2 if layer % 2 else 0.4)):
        weights[key] = weights.get(key, 0.0) + w
    return weights


def dense_layer(layer, heads, n):
    """[H, N, N] float32 weights of `row_weights` (for the check against the encoder)."""
    w = np.zeros((heads, n, n), np.float32)
    for h in range(heads):
        for i in range(n):
            for key, v in row_weights(layer, h, i).items():
                w[h, i, key] = v
    return w


def build_layer(layer, tokens, heads=HEADS, top_k=TOP_K):
    """The EncodedLayer `codecs.encode_attention_layer` makes of `dense_layer` (causal, top-k)."""
    n = len(tokens)
    keys = np.full((heads, n, top_k), PAD, np.uint16)
    codes = np.zeros((heads, n, top_k), np.uint8)
    for h in range(heads):
        # Rows far enough down all hold the keys 0 < i - back < i, ranked alike, then the
        # zero-weight keys 1, 2, ...: filled at once; the first rows one by one.
        generic = back_of(layer, h) + top_k + 1
        if generic < n:
            i = np.arange(generic, n)
            weights = row_weights(layer, h, generic)
            quantised = quantize(np.array(list(weights.values()), np.float32)).tolist()
            offsets = dict(zip(weights, quantised))  # key of row `generic` -> code
            ranked = sorted(offsets.items(), key=lambda kv: (-kv[1], kv[0]))
            for t, (key, code) in enumerate(ranked):
                keys[h, generic:, t] = key if key == 0 else i - (generic - key)
                codes[h, generic:, t] = code
            keys[h, generic:, len(ranked):] = np.arange(1, top_k - len(ranked) + 1)
        for i in range(min(n, generic)):
            weights = row_weights(layer, h, i)
            quantised = dict(zip(weights, quantize(np.array(list(weights.values()), np.float32)).tolist()))
            ranked = sorted(quantised.items(), key=lambda kv: (-kv[1], kv[0]))
            zeros = (j for j in range(i + 1) if j not in quantised)
            for t in range(min(top_k, i + 1)):
                key, code = ranked[t] if t < len(ranked) else (next(zeros), 0)
                keys[h, i, t], codes[h, i, t] = key, code
    header = {"tokens": list(tokens), "key_tokens": list(tokens), "first_layer": layer, "num_layers": 1, "num_heads": heads,
              "num_tokens": n, "num_key_tokens": n, "causal": True, "quantization": "sqrt-u8", "encoding": "topk", "top_k": top_k}
    return EncodedLayer(compress(pack(ATTENTION_MAGIC, header, [keys.astype("<u2").tobytes(), codes.tobytes()])), header)


def tokens(n=TOKENS):
    return [f"w{i}" for i in range(n)]


def long_example():
    """The example as `summary.write_examples` takes it: 32 layers of 32 heads over 4,096 tokens.
    Layers repeat every 4 (row_weights), so 4 are built and re-headed for the others."""
    toks = tokens()
    built = [build_layer(layer, toks) for layer in range(4)]

    def renamed(layer):
        header, (payload,) = codecs.attention.split_attention_layers(built[layer % 4].blob)
        header = {**header, "first_layer": layer}
        return EncodedLayer(compress(pack(ATTENTION_MAGIC, header, payload)), header)

    layers = [built[layer] if layer < 4 else renamed(layer) for layer in range(LAYERS)]
    return {"tokens": toks, "groups": [{"name": "self", "attention": layers, "causal": True}]}
