"""The plugin's routes on a real `tensorboard`, with both loaders: answers and errors."""

import gzip
import json
import struct

import numpy as np
import pytest

from tb_attention import Writer, metadata
from tb_attention.storage import summary
from tests.support.data import random_attention

TOKENS = ["<s>", "Ġthe", "Ġcafé", "😀", "<img src=x onerror=alert(1)>"]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    rng = np.random.default_rng(3)
    written = {}
    with Writer(root / "train") as writer:
        for step in (0, 5):
            causal = random_attention(rng, 2, 4, 5)
            bidirectional = random_attention(rng, 2, 4, 3, causal=False)
            query, key = rng.normal(size=(2, 4, 5, 8)), rng.normal(size=(2, 2, 5, 8))
            summary.write_examples(
                writer, "probe",
                [
                    {"attention": causal, "tokens": TOKENS, "query": query, "key": key, "scaling": [0.35, 0.35],
                     "text": "the café", "pos": [None, "DET", "NOUN", "SYM", "X"]},
                    {"attention": bidirectional, "tokens": ["[CLS]", "a", "[SEP]"], "segments": [2]},
                ],
                step,
            )
            summary.metrics(writer, "probe", {"entropy": np.full((2, 4), step, np.float32),
                                              "pos/NOUN": np.array([[np.nan] * 4, [0.5] * 4], np.float32)}, step)
            summary.exemplars(writer, "probe", {
                "num_layers": 2, "num_heads": 4, "top_k": 1,
                "inputs": [{"tokens": TOKENS, "text": "the café", "example": 0}],
                "heads": [[[{"input": 0, "score": 0.9, "from": 2, "to": 1}]] * 4] * 2,
            }, step)
            written[step] = (causal, bidirectional, query, key)
    return root, written


@pytest.fixture(scope="module", params=["false", "true"], ids=["python-loader", "rust-loader"])
def server(request, logdir):
    from tests.support.tensorboard import serving

    def ready(t):
        return (
            t.get("train", {}).get("probe", {}).get("steps") == [0, 5]
            and t["train"].get("probe/exemplars", {}).get("steps") == [0, 5]
        )

    with serving(logdir[0], ready, load_fast=request.param) as tb:
        yield tb


def test_tags_describe_kinds_and_steps(server):
    _, tags = server.get("/tags")
    train = tags["train"]
    assert train["probe"]["kind"] == "attention" and train["probe"]["steps"] == [0, 5]
    assert train["probe/entropy"] == {**train["probe/entropy"], "kind": "metric", "probe": "probe", "metric": "entropy",
                                      "steps": [0, 5]}
    assert train["probe/pos/NOUN"]["metric"] == "pos/NOUN"
    assert train["probe/exemplars"]["kind"] == "exemplars"


def test_examples_list_tokens_exactly(server):
    status, body = server.get("/examples", {"run": "train", "tag": "probe", "step": 5})
    assert status == 200
    first, second = body["examples"]
    assert first["tokens"] == TOKENS and first["has_qk"] is True and first["causal"] is True
    assert first["pos"] == [None, "DET", "NOUN", "SYM", "X"] and first["text"] == "the café"
    assert second["segments"] == [2] and second["has_qk"] is False and second["encoding"] == "dense"
    assert (first["num_layers"], first["num_heads"], first["num_tokens"]) == (2, 4, 5)


def test_attention_binary_is_the_documented_format(server, logdir):
    status, body, headers = server.get("/attention", {"run": "train", "tag": "probe", "step": 5, "example": 0}, raw=True)
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"] == "application/octet-stream"
    # Parse by the documentation, not by our decoder.
    magic, version, head_len = struct.unpack_from("<4sII", body)
    assert (magic, version) == (b"TBAT", 2) and (12 + head_len) % 8 == 0
    header = json.loads(body[12 : 12 + head_len])
    assert header["encoding"] == "causal" and header["tokens"] == TOKENS
    codes = np.frombuffer(body, np.uint8, offset=12 + head_len)
    n = 5
    assert codes.size == 2 * 4 * n * (n + 1) // 2
    causal = logdir[1][5][0]
    layer, head, row = 1, 2, 3
    start = (layer * 4 + head) * n * (n + 1) // 2 + row * (row + 1) // 2
    decoded = (codes[start : start + row + 1] / 255.0) ** 2
    assert np.abs(decoded - causal[layer, head, row, : row + 1]).max() <= metadata.MAX_QUANTIZATION_ERROR


def test_attention_binary_is_sent_gzip_encoded_to_browsers(server):
    import urllib.request

    url = server.url + "/data/plugin/attention/attention?run=train&tag=probe&step=0&example=0"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(response.read())[:4] == b"TBAT"


def test_attention_json_narrows_to_a_layer_and_head(server, logdir):
    _, body = server.get("/attention", {"run": "train", "tag": "probe", "step": 0, "example": 0, "format": "json",
                                        "layer": 1, "head": 3})
    assert body["shape"] == [5, 5] and body["tokens"] == TOKENS
    assert np.abs(np.array(body["attention"]) - logdir[1][0][0][1, 3]).max() <= metadata.MAX_QUANTIZATION_ERROR
    _, full = server.get("/attention", {"run": "train", "tag": "probe", "step": 0, "example": 1, "format": "json"})
    assert full["shape"] == [2, 4, 3, 3]
    assert np.abs(np.array(full["attention"]) - logdir[1][0][1]).max() <= metadata.MAX_QUANTIZATION_ERROR


def test_qk_json_pairs_each_query_head_with_its_key_head(server, logdir):
    _, body = server.get("/qk", {"run": "train", "tag": "probe", "step": 5, "example": 0, "format": "json",
                                 "layer": 0, "head": 3})
    _, _, query, key = logdir[1][5]
    assert body["shape_query"] == [5, 8] and body["num_kv_heads"] == 2
    assert np.allclose(body["query"], query[0, 3], atol=2e-3)
    assert np.allclose(body["key"], key[0, 1], atol=2e-3)  # 4 query heads over 2 key heads: 3 // 2 = 1
    assert body["scaling"] == [0.35]  # the layers served: one


def test_metric_returns_every_step_with_nan_as_null(server):
    _, body = server.get("/metric", {"run": "train", "tag": "probe/pos/NOUN"})
    assert body["steps"] == [0, 5] and len(body["wall_times"]) == 2
    assert body["values"][1] == [[None] * 4, [0.5] * 4]


def test_metrics_returns_a_probe_at_one_step(server):
    _, body = server.get("/metrics", {"run": "train", "probe": "probe", "step": 5})
    assert set(body["metrics"]) == {"entropy", "pos/NOUN"}
    assert body["metrics"]["entropy"] == [[5.0] * 4] * 2


def test_exemplars_return_the_table(server):
    _, body = server.get("/exemplars", {"run": "train", "tag": "probe/exemplars", "step": 0})
    assert body["inputs"][0]["tokens"] == TOKENS
    assert body["heads"][1][2][0] == {"input": 0, "score": 0.9, "from": 2, "to": 1}


def test_index_js_is_an_es_module(server):
    status, body, headers = server.get("/index.js", raw=True)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"export" in body and b"render" in body


@pytest.mark.parametrize(
    "route, params, code, message",
    [
        ("/examples", {"run": "train", "tag": "probe"}, 400, "missing parameter 'step'"),
        ("/examples", {"run": "train", "tag": "probe", "step": "-1"}, 400, "non-negative integer"),
        ("/examples", {"run": "train", "tag": "probe", "step": "1.5"}, 400, "non-negative integer"),
        ("/examples", {"run": "train", "tag": "probe", "step": ""}, 400, "non-negative integer"),
        ("/examples", {"run": "train", "tag": "probe", "step": "9" * 30}, 400, "non-negative integer"),
        ("/examples", {"run": "nope", "tag": "probe", "step": 0}, 404, "run 'nope' has no attention tag 'probe'"),
        ("/examples", {"run": "train", "tag": "probe", "step": 3}, 404, "has no step 3"),
        ("/examples", {"run": "train", "tag": "probe/entropy", "step": 0}, 404, "no attention tag"),
        ("/attention", {"run": "train", "tag": "probe", "step": 0}, 400, "missing parameter 'example'"),
        ("/attention", {"run": "train", "tag": "probe", "step": 0, "example": 2}, 404, "no example 2"),
        ("/attention", {"run": "train", "tag": "probe", "step": 0, "example": 0, "format": "xml"}, 400, "'format'"),
        ("/attention", {"run": "train", "tag": "probe", "step": 0, "example": 0, "format": "json", "layer": 2},
         404, "layer 2 does not exist"),
        ("/attention", {"run": "train", "tag": "probe", "step": 0, "example": 0, "format": "json", "head": 4},
         404, "head 4 does not exist"),
        ("/attention", {"run": "train", "tag": "probe/exemplars", "step": 0, "example": 0}, 404, "holds exemplars"),
        ("/qk", {"run": "train", "tag": "probe", "step": 0, "example": 1}, 404, "no query/key vectors were logged"),
        ("/metric", {"run": "train"}, 400, "missing parameter 'tag'"),
        ("/metric", {"run": "train", "tag": "probe/distance"}, 404, "no metric tag 'probe/distance'"),
        ("/metrics", {"run": "train", "probe": "other", "step": 0}, 404, "no metrics of probe 'other'"),
        ("/metrics", {"run": "train", "probe": "probe", "step": 1}, 404, "no metrics at step 1"),
        ("/exemplars", {"run": "train", "tag": "probe", "step": 0}, 404, "holds attention, not exemplars"),
        ("/static/../plugin.py", None, 404, "no static file"),
        ("/static/%2e%2e/plugin.py", None, 404, "no static file"),
        ("/static/nothing.js", None, 404, "no static file"),
    ],
)
def test_bad_requests_answer_4xx_with_a_json_error(server, route, params, code, message):
    status, body = server.get(route, params)
    assert status == code
    assert message in body["error"]
