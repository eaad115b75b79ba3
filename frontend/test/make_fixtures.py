"""Writes the decoder fixtures of the frontend unit tests with the writer's own encoder."""

# Run from the repository root: python frontend/test/make_fixtures.py. Each fixture is a blob as
# the routes serve it (after the browser undoes the gzip), plus what tb_attention.storage.codecs decodes
# it to, so the TypeScript decoders are checked against the Python encoder, not against themselves.

import gzip
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from tb_attention.storage import codecs  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "fixtures"


def softmax_rows(rng, layers, heads, n, causal, keys=None):
    scores = rng.normal(size=(layers, heads, n, n if keys is None else keys)) * 2.5
    if causal:
        scores = np.where(np.triu(np.ones((n, n), dtype=bool), 1), -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def reference(x):
    """Expected float64 values, rounded: numpy's last bits vary with its version and the CPU's SIMD, and the
    fixtures must regenerate byte for byte on any machine (the decoders are checked to 1e-5)."""
    return np.round(x, 12).tolist()


def write(name, blob, expected):
    (OUT / f"{name}.bin").write_bytes(gzip.decompress(blob))
    (OUT / f"{name}.json").write_text(json.dumps(expected, ensure_ascii=False, separators=(",", ":")) + "\n")


def main():
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    tokens = ["[CLS]", "the", " cat", "<img src=x onerror=alert(1)>", "[SEP]", "sat", "é", "\n", "Ġdog"]
    cases = {
        "dense": dict(attention=softmax_rows(rng, 2, 3, 5, False), tokens=tokens[:5], segments=[3]),
        "causal": dict(attention=softmax_rows(rng, 2, 2, 6, True), tokens=tokens[:6]),
        "topk": dict(attention=softmax_rows(rng, 2, 2, 9, False), tokens=tokens, max_dense_tokens=8, top_k=3),
        "topk_causal": dict(attention=softmax_rows(rng, 1, 2, 9, True), tokens=tokens, max_dense_tokens=8, top_k=4),
        # Cross attention (v2 groups): 4 queries over 9 other tokens, dense and sparse.
        "cross": dict(attention=softmax_rows(rng, 2, 3, 4, False, keys=9), tokens=tokens[5:], key_tokens=tokens),
        "cross_topk": dict(attention=softmax_rows(rng, 1, 2, 4, False, keys=9), tokens=tokens[5:], key_tokens=tokens,
                           max_dense_tokens=3, top_k=3),
    }
    for name, case in cases.items():
        attention = case.pop("attention")
        blob = codecs.encode_attention(attention, **case)
        decoded = codecs.decode_attention(blob)
        write(name, blob, {"header": decoded.header, "attention": decoded.attention.tolist()})

    layers, heads, kv_heads, n, d = 2, 4, 2, 5, 3
    query = rng.normal(size=(layers, heads, n, d)).astype(np.float32)
    key = rng.normal(size=(layers, kv_heads, n, d)).astype(np.float32)
    scaling = [d**-0.5, 0.25]
    blob = codecs.encode_qk(query, key, scaling)
    qk = codecs.decode_qk(blob)
    # What the neuron view must compute: softmax(scaling · q_h · k_{h // (H/K)}^T) with a causal mask.
    group = heads // kv_heads
    scores = np.einsum("lhnd,lhmd->lhnm", qk.query, np.repeat(qk.key, group, axis=1)) * np.array(scaling)[:, None, None, None]
    scores = np.where(np.triu(np.ones((n, n), dtype=bool), 1), -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    write("qk", blob, {
        "header": qk.header,
        "query": qk.query.tolist(),
        "key": qk.key.tolist(),
        "causal_softmax": reference(e / e.sum(-1, keepdims=True)),
    })

    # The scoring rules (Gemma 2's soft cap, sliding windows, gpt-oss sinks), each on one layer of
    # three; large vectors so that the cap bites. tests/test_capture.py checks that these rules, as
    # schema.SCORING_RULES defines them, reproduce real models' weights.
    layers, n = 3, 6
    query = 3 * rng.normal(size=(layers, heads, n, d)).astype(np.float32)
    key = 3 * rng.normal(size=(layers, kv_heads, n, d)).astype(np.float32)
    rules = {"softcap": [2.0, None, None], "sliding_window": [None, 2, None], "sinks": [None, None, [0.5, -1.0, 2.0, 0.0]]}
    blob = codecs.encode_qk(query, key, [0.5] * layers, **rules)
    qk = codecs.decode_qk(blob)
    expected = {name: [rules_softmax(qk, layer, 0.5, rules, causal) for layer in range(layers)]
                for name, causal in (("causal", True), ("bidirectional", False))}
    write("qk_rules", blob, {"header": qk.header, "softmax": expected})

    # The bias and chunk rules (ALiBi's bias per key, T5's per distance, Llama 4's chunks), on rectangular
    # attention too (cross attention: Nq != Nk). tests/test_qk_rules.py checks them on real models.
    for name, nq, nk in (("qk_bias", 6, 6), ("qk_bias_cross", 4, 7)):
        query = 3 * rng.normal(size=(layers, heads, nq, d)).astype(np.float32)
        key = 3 * rng.normal(size=(layers, kv_heads, nk, d)).astype(np.float32)
        rules = {
            "key_bias": [0.5 * np.arange(nk) * rng.normal(size=(heads, 1)), None, None],
            "relative_bias": [None, 2 * rng.normal(size=(heads, nq + nk - 1)), 2 * rng.normal(size=(heads, nq + nk - 1))],
            "attention_chunk": [None, None, 4],
        }
        blob = codecs.encode_qk(query, key, [0.5] * layers, **rules)
        qk = codecs.decode_qk(blob)
        stored = {rule: qk.rule(rule) for rule in rules}  # the float32 values the blob holds
        causes = (("causal", True), ("bidirectional", False)) if nq == nk else (("bidirectional", False),)
        expected = {cause: [rules_softmax(qk, layer, 0.5, stored, causal) for layer in range(layers)] for cause, causal in causes}
        write(name, blob, {"header": qk.header, "softmax": expected})
    long_fixtures(np.random.default_rng(22))


def long_fixtures(rng):
    """Long examples (http_api.md, "Long examples"): a stored rows frame and level frame (TBLG), and the
    /long_map and /long_rows answers (TBLM, TBLR) as the plugin serves them from a logdir the writer wrote."""
    import tempfile

    from tensorboard import context
    from tensorboard.plugins import base_plugin

    from tb_attention.serve.export import python_provider
    from tb_attention.serve.plugin import AttentionPlugin
    from tb_attention.storage import summary
    from tb_attention.storage.codecs import long
    from tests.support.long_reference import long_layer

    n, heads = 20, 2
    attention = softmax_rows(rng, 1, heads, n, True)[0]
    plan = long.plan(1, heads, n, n, budget=1000, top_k=3)  # blocks of 2 tokens: 10 x 10 cells
    layer = long_layer(attention, plan, causal=True)
    encoded = long.encode_layer(0, layer, plan)
    rows = long.decode_rows(encoded.rows[0], layer=0, num_heads=heads, start=0, stop=n, top_k=3, num_keys=n)
    write("long_rows_frame", encoded.rows[0], {
        "header": long.blob_header(encoded.rows[0]), "index": rows.index.tolist(), "weight": reference(rows.weight),
        "remainder": reference(codecs.dequantize(rows.remainder))})
    block, level_rows, level_cols = plan.levels[0]
    cells = long.decode_level(encoded.levels[0], layer=0, num_heads=heads, level=0, block=block, rows=level_rows,
                              cols=level_cols)
    write("long_level_frame", encoded.levels[0], {"header": long.blob_header(encoded.levels[0]),
                                                 "cells": reference(codecs.dequantize(cells))})
    with tempfile.TemporaryDirectory() as logdir:
        with summary.Writer(pathlib.Path(logdir) / "run") as writer:
            summary.write_examples(writer, "probe", [{"tokens": [f"t{i}" for i in range(n)], "causal": True,
                                                      "long": {"plan": plan, "layers": [layer]}}], 0)
        plugin = AttentionPlugin(base_plugin.TBContext(data_provider=python_provider(logdir), logdir=logdir))
        where = dict(run="run", tag="probe", step=0, example=0)
        ctx = context.RequestContext()
        for name, impl, params in (
            ("long_map", plugin.long_map_impl, dict(layer=0, level=0, rows=(2, 7), cols=(0, 10))),
            ("long_map_mean", plugin.long_map_impl, dict(layer=0, level=0)),
            ("long_rows", plugin.long_rows_impl, dict(layer=0, head=1, start=3, stop=11)),
        ):
            params = {**params, "head": 1} if name == "long_map" else params
            body = impl(ctx, "", **where, **params)
            write(name, body, impl(ctx, "", **where, **params, as_json=True))


def rules_softmax(qk, layer, scaling, rules, causal):
    """[H, Nq, Nk]: the weights schema.SCORING_RULES define, from a decoded q/k blob's layer."""
    group = qk.query.shape[1] // qk.key.shape[1]
    rule = lambda name: (rules.get(name) or [None] * qk.query.shape[0])[layer]  # noqa: E731
    scores = np.einsum("hnd,hmd->hnm", qk.query[layer], np.repeat(qk.key[layer], group, axis=0)).astype(np.float64) * scaling
    nq, nk = scores.shape[1:]
    if rule("softcap"):
        scores = rule("softcap") * np.tanh(scores / rule("softcap"))
    i, j = np.arange(nq)[:, None], np.arange(nk)[None, :]
    if rule("key_bias") is not None:
        scores = scores + np.asarray(rule("key_bias"), dtype=np.float64)[:, None, :]
    if rule("relative_bias") is not None:
        scores = scores + np.asarray(rule("relative_bias"), dtype=np.float64)[:, j - i + nq - 1]
    hidden = (j > i) if causal else np.zeros((nq, nk), dtype=bool)
    if rule("sliding_window"):
        hidden = hidden | (np.abs(i - j) >= rule("sliding_window"))
    if rule("attention_chunk"):
        hidden = hidden | (i // rule("attention_chunk") != j // rule("attention_chunk"))
    scores = np.where(hidden, -np.inf, scores)
    heads = scores.shape[0]
    sink = np.asarray(rule("sinks") if rule("sinks") else [-np.inf] * heads)[:, None, None]
    top = np.maximum(scores.max(-1, keepdims=True), sink)
    e = np.exp(scores - top)
    return reference(e / (e.sum(-1, keepdims=True) + np.exp(sink - top)))


if __name__ == "__main__":
    main()
