"""Storage format v2 on a real `tensorboard`: groups, per-layer blobs, images, parts, /compare, v1 data."""

import json
import shutil
import struct

import numpy as np
import pytest

from tb_attention import Writer
from tb_attention.storage import codecs, summary
from tests.support.dashboard_logdir import png_bytes, write_groups_logdir
from tests.support.data import random_attention
from tests.support.tensorboard import ROOT, serving

pytestmark = pytest.mark.server

SOURCE = ["▁le", "▁chat", "▁dort", "</s>"]
TARGET = ["<pad>", "▁the", "▁cat"]
V1 = ROOT / "tests" / "fixtures" / "v1_logdir"
ERROR = codecs.MAX_QUANTIZATION_ERROR


def tiny_png(rows=2, cols=3):
    return png_bytes(np.arange(rows * cols, dtype=np.uint8).reshape(rows, cols) * 40)


def rectangular(rng, layers, heads, nq, nk):
    scores = rng.normal(size=(layers, heads, nq, nk)) * 2
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    rng = np.random.default_rng(21)
    written = {}
    encoder = random_attention(rng, 2, 3, 4, causal=False)
    decoder = random_attention(rng, 2, 3, 3, causal=True)
    cross = rectangular(rng, 2, 3, 3, 4)
    query, key = rng.normal(size=(2, 3, 3, 8)), rng.normal(size=(2, 3, 4, 8))
    vision = random_attention(rng, 2, 2, 7, causal=False)  # CLS + a 2 x 3 grid of patches
    png = tiny_png()
    with Writer(root / "seq2seq") as writer:
        summary.write_examples(writer, "probe", [
            {"tokens": SOURCE, "text": "le chat dort", "groups": [
                {"name": "encoder", "attention": encoder, "layer_names": ["enc.0", "enc.1"]},
                {"name": "decoder", "attention": list(decoder), "tokens": TARGET},
                {"name": "cross", "attention": cross, "tokens": TARGET, "key_tokens": SOURCE,
                 "query": query, "key": key, "scaling": 0.125},
            ]},
            {"tokens": ["[CLS]"] + [f"r{r}c{c}" for r in range(2) for c in range(3)],
             "attention": vision,
             "image": {"png": png, "grid": [2, 3], "patch_size": [16, 16], "prefix_tokens": 1, "prefix_names": ["CLS"]}},
        ], 0)
        summary.metrics(writer, "probe", {"entropy": np.full((2, 3), 1.0)}, 0, group="encoder", first_group=True)
        summary.metrics(writer, "probe", {"entropy": np.full((2, 3), 2.0), "diagonal_alignment": np.full((2, 3), 0.5)},
                        0, group="cross")
    written["seq2seq"] = dict(encoder=encoder, decoder=decoder, cross=cross, query=query, key=key, vision=vision, png=png)

    # Two checkpoints' probes: the same first two inputs, then one whose tokens differ.
    same = [list("abcd"), list("xyz")]
    steps = {}
    for run, step in (("ckpt_a", 1), ("ckpt_b", 7)):
        attentions = [random_attention(rng, 2, 2, 4), random_attention(rng, 2, 2, 3), random_attention(rng, 2, 2, 2)]
        tokens = [*same, ["p", "q"] if run == "ckpt_a" else ["p", "r"]]
        with Writer(root / run) as writer:
            summary.write_examples(writer, "probe", [{"attention": a, "tokens": t} for a, t in zip(attentions, tokens)], step)
        steps[run] = attentions
    written["compare"] = steps

    # A step spread over part tags (a tiny record budget stands in for 64 MiB).
    big = random_attention(rng, 4, 2, 30)
    with Writer(root / "parts") as writer:
        summary.write_examples(writer, "probe", [{"attention": big, "tokens": [str(i) for i in range(30)]}], 2,
                               record_bytes=600)
    written["parts"] = big
    # Metrics as Probe computes them, to serve: inputs of 5, 3 and 1 tokens.
    from tb_attention.metrics.attention import compute_metrics

    inputs = [random_attention(rng, 2, 3, n) for n in (5, 3, 1)]
    with Writer(root / "metrics") as writer:
        summary.metrics(writer, "probe", compute_metrics(inputs), 4)
    written["metrics"] = inputs
    shutil.copytree(V1 / "train", root / "v1")
    return root, written


@pytest.fixture(scope="module", params=["false", "true"], ids=["python-loader", "rust-loader"])
def server(request, logdir):
    def ready(t):
        return (
            all(t.get(run, {}).get("probe", {}).get("steps") for run in ("seq2seq", "ckpt_a", "ckpt_b", "parts", "v1"))
            and "probe/null_attention" in t.get("metrics", {})
        )

    with serving(logdir[0], ready, load_fast=request.param) as tb:
        yield tb


def _json(server, route, **params):
    status, body = server.get(route, {"run": "seq2seq", "tag": "probe", "step": 0, "example": 0, **params})
    assert status == 200, body
    return body


def test_examples_list_groups_and_image(server):
    _, body = server.get("/examples", {"run": "seq2seq", "tag": "probe", "step": 0})
    text, image = body["examples"]
    assert [g["name"] for g in text["groups"]] == ["encoder", "decoder", "cross"]
    encoder, decoder, cross = text["groups"]
    assert (text["num_layers"], text["num_heads"], text["num_tokens"], text["tokens"]) == (2, 3, 4, SOURCE)
    assert encoder["layer_names"] == ["enc.0", "enc.1"] and encoder["causal"] is False
    assert decoder["causal"] is True and decoder["encoding"] == "causal" and decoder["tokens"] == TARGET
    assert (cross["num_tokens"], cross["num_key_tokens"], cross["tokens"], cross["key_tokens"]) == (3, 4, TARGET, SOURCE)
    assert cross["has_qk"] is True and encoder["has_qk"] is False
    assert text["image"] is None
    assert image["image"] == {"grid": [2, 3], "patch_size": [16, 16], "prefix_tokens": 1, "prefix_names": ["CLS"]}
    assert image["groups"][0]["name"] == "self"
    assert not any(k.endswith("_blob") or k.endswith("_blobs") for g in text["groups"] for k in g)


def test_attention_of_each_group_equals_what_was_logged(server, logdir):
    written = logdir[1]["seq2seq"]
    default = _json(server, "/attention", format="json")
    assert default["group"] == "encoder" and default["shape"] == [2, 3, 4, 4]
    for name in ("encoder", "decoder", "cross"):
        body = _json(server, "/attention", format="json", group=name)
        assert np.abs(np.array(body["attention"]) - written[name]).max() <= ERROR
    cross = _json(server, "/attention", format="json", group="cross", layer=1, head=2)
    assert cross["shape"] == [3, 4] and cross["tokens"] == TARGET and cross["key_tokens"] == SOURCE
    assert np.abs(np.array(cross["attention"]) - written["cross"][1, 2]).max() <= ERROR
    one_layer = _json(server, "/attention", format="json", group="decoder", layer=0)
    assert one_layer["shape"] == [3, 3, 3]


def test_one_layer_binary_is_the_documented_format(server, logdir):
    status, body, headers = server.get(
        "/attention", {"run": "seq2seq", "tag": "probe", "step": 0, "example": 0, "group": "decoder", "layer": 1}, raw=True
    )
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    magic, version, head_len = struct.unpack_from("<4sII", body)
    assert (magic, version) == (b"TBAT", 2)
    header = json.loads(body[12 : 12 + head_len])
    assert (header["first_layer"], header["num_layers"], header["encoding"]) == (1, 1, "causal")
    codes = np.frombuffer(body, np.uint8, offset=12 + head_len)
    assert codes.size == 3 * 3 * 4 // 2  # 3 heads x the 6 weights of a 3-token triangle
    row = 2  # head 0, query 2: bytes 3..5 of the head's triangle
    decoded = (codes[3:6] / 255.0) ** 2
    assert np.abs(decoded - logdir[1]["seq2seq"]["decoder"][1, 0, row]).max() <= ERROR


def test_whole_group_binary_joins_its_layers(server, logdir):
    _, body, _ = server.get("/attention", {"run": "seq2seq", "tag": "probe", "step": 0, "example": 0, "group": "cross"},
                            raw=True)
    example = codecs.decode_attention(codecs.compress(body))
    assert example.header["num_layers"] == 2 and example.attention.shape == (2, 3, 3, 4)
    assert np.abs(example.attention - logdir[1]["seq2seq"]["cross"]).max() <= ERROR


def test_qk_of_cross_attention_pairs_target_queries_with_source_keys(server, logdir):
    written = logdir[1]["seq2seq"]
    body = _json(server, "/qk", format="json", group="cross", layer=1, head=2)
    assert body["shape_query"] == [3, 8] and body["shape_key"] == [4, 8] and body["scaling"] == [0.125]
    assert np.allclose(body["query"], written["query"][1, 2], atol=2e-3)
    assert np.allclose(body["key"], written["key"][1, 2], atol=2e-3)
    _, raw, _ = server.get("/qk", {"run": "seq2seq", "tag": "probe", "step": 0, "example": 0, "group": "cross"}, raw=True)
    qk = codecs.decode_qk(codecs.compress(raw))
    assert qk.query.shape == (2, 3, 3, 8) and qk.key.shape == (2, 3, 4, 8) and qk.scaling == [0.125, 0.125]


def test_image_route_returns_the_stored_png(server, logdir):
    status, body, headers = server.get("/image", {"run": "seq2seq", "tag": "probe", "step": 0, "example": 1}, raw=True)
    assert status == 200 and headers["Content-Type"] == "image/png" and body == logdir[1]["seq2seq"]["png"]
    status, error = server.get("/image", {"run": "seq2seq", "tag": "probe", "step": 0, "example": 0})
    assert status == 404 and "has no image" in error["error"]


def test_metrics_of_other_groups_are_named_and_served_by_group(server):
    _, tags = server.get("/tags")
    run = tags["seq2seq"]
    assert run["probe/entropy"]["group"] == "encoder"
    assert run["probe/cross/entropy"] == {**run["probe/cross/entropy"], "probe": "probe", "metric": "entropy",
                                          "group": "cross"}
    _, first = server.get("/metrics", {"run": "seq2seq", "probe": "probe", "step": 0})
    assert first["metrics"] == {"entropy": [[1.0] * 3] * 2}
    _, cross = server.get("/metrics", {"run": "seq2seq", "probe": "probe", "step": 0, "group": "cross"})
    assert cross["metrics"] == {"diagonal_alignment": [[0.5] * 3] * 2, "entropy": [[2.0] * 3] * 2}


def _served(server, run, step, example):
    _, body = server.get("/attention", {"run": run, "tag": "probe", "step": step, "example": example, "format": "json"})
    return np.array(body["attention"], dtype=np.float64)


def test_compare_equals_an_independent_computation(server, logdir):
    status, body = server.get("/compare", {"tag": "probe", "run_a": "ckpt_a", "step_a": 1, "run_b": "ckpt_b", "step_b": 7})
    assert status == 200, body
    assert (body["used"], body["skipped"], body["group"]) == (2, 1, "self")
    moved = np.array(body["moved"])
    assert moved.shape == (2, 2)
    # From the weights as served: mean over the 2 shared inputs of the mean over queries of ½ Σ_j |b − a|.
    reference = np.zeros((2, 2))
    for example in (0, 1):
        a, b = _served(server, "ckpt_a", 1, example), _served(server, "ckpt_b", 7, example)
        for layer in range(2):
            for head in range(2):
                reference[layer, head] += np.mean([0.5 * sum(abs(b[layer, head, i] - a[layer, head, i]))
                                                   for i in range(a.shape[2])]) / 2
    assert np.allclose(moved, reference, atol=1e-9)
    # And from the float weights as logged, within what quantisation moves (≤ ½ Nk · error per row).
    logged = logdir[1]["compare"]
    exact = np.mean([0.5 * np.abs(logged["ckpt_b"][x] - logged["ckpt_a"][x]).sum(-1).mean(-1) for x in (0, 1)], axis=0)
    assert np.abs(moved - exact).max() <= 2 * ERROR


def test_null_attention_and_previous_token_as_served_equal_their_definitions(server, logdir):
    _, body = server.get("/metrics", {"run": "metrics", "probe": "probe", "step": 4})
    inputs = logdir[1]["metrics"]
    null = np.zeros((2, 3))
    previous = np.zeros((2, 3))
    for layer in range(2):
        for head in range(3):
            # null_attention: a_i0 over queries i >= 1; previous_token: a_i,i-1 over queries i >= 2.
            null[layer, head] = np.mean([a[layer, head, i, 0] for a in inputs for i in range(1, a.shape[-1])])
            previous[layer, head] = np.mean([a[layer, head, i, i - 1] for a in inputs for i in range(2, a.shape[-1])])
    assert np.allclose(body["metrics"]["null_attention"], null, atol=1e-6)
    assert np.allclose(body["metrics"]["previous_token"], previous, atol=1e-6)


@pytest.mark.parametrize(
    "params, code, message",
    [
        ({"tag": "probe", "run_a": "ckpt_a", "step_a": 1, "run_b": "ckpt_b"}, 400, "missing parameter 'step_b'"),
        ({"tag": "probe", "run_a": "ckpt_a", "step_a": 2, "run_b": "ckpt_b", "step_b": 7}, 404, "no step 2"),
        ({"tag": "probe", "run_a": "ckpt_a", "step_a": 1, "run_b": "ckpt_b", "step_b": 7, "group": "cross"}, 404,
         "no group 'cross'"),
        ({"tag": "nope", "run_a": "ckpt_a", "step_a": 1, "run_b": "ckpt_b", "step_b": 7}, 404, "no attention tag"),
    ],
)
def test_compare_bad_requests(server, params, code, message):
    status, body = server.get("/compare", params)
    assert status == code and message in body["error"]


def test_a_step_spread_over_parts_is_served_whole_and_its_parts_are_not_listed(server, logdir):
    _, tags = server.get("/tags")
    assert list(tags["parts"]) == ["probe"]
    assert np.abs(_served(server, "parts", 2, 0) - logdir[1]["parts"]).max() <= ERROR
    _, layer = server.get("/attention", {"run": "parts", "tag": "probe", "step": 2, "example": 0, "format": "json",
                                         "layer": 3})
    assert np.abs(np.array(layer["attention"]) - logdir[1]["parts"][3]).max() <= ERROR


def test_v1_data_still_reads(server):
    reference = np.load(ROOT / "tests" / "fixtures" / "v1_logdir.npz")
    _, body = server.get("/examples", {"run": "v1", "tag": "probe", "step": 3})
    first, second = body["examples"]
    assert [g["name"] for g in first["groups"]] == ["self"] and first["groups"][0]["key_tokens"] == first["tokens"]
    assert first["has_qk"] is True and second["segments"] == [2] and first["image"] is None
    assert np.abs(_served(server, "v1", 3, 0) - reference["a0"]).max() <= ERROR
    _, layer = server.get("/attention", {"run": "v1", "tag": "probe", "step": 3, "example": 1, "format": "json", "layer": 1})
    assert np.abs(np.array(layer["attention"]) - reference["a1"][1]).max() <= ERROR
    status, raw, _ = server.get("/attention", {"run": "v1", "tag": "probe", "step": 3, "example": 0, "layer": 1}, raw=True)
    one = codecs.decode_attention(codecs.compress(raw))
    assert status == 200 and one.header["first_layer"] == 1 and one.attention.shape == (1, 2, 4, 4)
    assert np.abs(one.attention[0] - reference["a0"][1]).max() <= ERROR
    _, qk = server.get("/qk", {"run": "v1", "tag": "probe", "step": 3, "example": 0, "format": "json", "layer": 1, "head": 1})
    assert np.allclose(qk["query"], reference["q"][1, 1], atol=2e-3) and np.allclose(qk["key"], reference["k"][1, 0], atol=2e-3)


@pytest.mark.parametrize(
    "route, params, code, message",
    [
        ("/attention", {"group": "nope"}, 404, "no group 'nope'"),
        ("/attention", {"group": "cross", "layer": 2}, 404, "layer 2 does not exist"),
        ("/attention", {"group": "cross", "head": 3, "format": "json"}, 404, "head 3 does not exist"),
        ("/qk", {"group": "encoder"}, 404, "no query/key vectors"),
        ("/image", {"example": 5}, 404, "no example 5"),
        ("/image", {"example": "x"}, 400, "non-negative integer"),
        ("/attention", {"group": ""}, 404, "no group ''"),
    ],
)
def test_bad_group_layer_and_image_requests(server, route, params, code, message):
    status, body = server.get(route, {"run": "seq2seq", "tag": "probe", "step": 0, "example": 0, **params})
    assert status == code and message in body["error"]


def test_the_dashboards_groups_logdir_is_served(tmp_path, tensorboard):
    info = write_groups_logdir(tmp_path)
    server = tensorboard(tmp_path, load_fast="true")
    server.wait_for(lambda t: t.get("vision", {}).get("probe", {}).get("steps") == info["steps"]
                    and t.get("translate", {}).get("probe", {}).get("steps") == info["steps"])
    _, body = server.get("/examples", {"run": "translate", "tag": "probe", "step": 100})
    assert [g["name"] for g in body["examples"][0]["groups"]] == ["encoder", "decoder", "cross"]
    _, cross = server.get("/attention", {"run": "translate", "tag": "probe", "step": 100, "example": 0, "group": "cross",
                                         "format": "json", "layer": 0, "head": 0})
    assert cross["shape"] == [len(info["target"]), len(info["source"])]
    status, png, headers = server.get("/image", {"run": "vision", "tag": "probe", "step": 0, "example": 0}, raw=True)
    assert status == 200 and png.startswith(b"\x89PNG") and headers["Content-Type"] == "image/png"
