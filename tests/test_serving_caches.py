"""What the routes remember: a blob is read and checked once per write of its step, in a cache bounded in bytes."""

import gzip
import json
import math

import numpy as np
import pytest
from tensorboard.backend import http_util
from tensorboard.data import provider as tb_provider
from tensorboard.plugins import base_plugin
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from tb_attention import Writer
from tb_attention.serve import routes
from tb_attention.serve.plugin import AttentionPlugin
from tb_attention.serve.reader import ByteLRU
from tb_attention.storage import codecs, summary
from tests.support.data import random_attention
from tests.support.tensorboard import PLUGIN_ROUTE, python_provider

TOKENS = ["<s>", "Ġthe", "Ġcat", "Ġsat"]


class CountingProvider:
    """TensorBoard's data provider, counting the blobs read; `shift` moves every wall time (a rewritten step)."""

    def __init__(self, provider):
        self._provider = provider
        self.blob_reads = 0
        self.keys_read = []
        self.shift = 0.0

    def __getattr__(self, name):
        return getattr(self._provider, name)

    def read_blob(self, ctx=None, *, blob_key):
        self.blob_reads += 1
        self.keys_read.append(blob_key)
        return self._provider.read_blob(ctx, blob_key=blob_key)

    def read_blob_sequences(self, ctx=None, **kwargs):
        data = self._provider.read_blob_sequences(ctx, **kwargs)
        return {run: {tag: [tb_provider.BlobSequenceDatum(d.step, d.wall_time + self.shift, d.values) for d in series]
                      for tag, series in tags.items()} for run, tags in data.items()}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    rng = np.random.default_rng(5)
    attention = random_attention(rng, 3, 2, len(TOKENS))
    with Writer(root / "train") as writer:
        summary.write_examples(writer, "probe", [{"attention": attention, "tokens": TOKENS}], 0)
    return root, attention


@pytest.fixture
def served(logdir):
    provider = CountingProvider(python_provider(logdir[0]))
    plugin = AttentionPlugin(base_plugin.TBContext(data_provider=provider, logdir=str(logdir[0])))
    apps = plugin.get_plugin_apps()

    def get(route, gzip_ok=True, **params):
        headers = {"Accept-Encoding": "gzip" if gzip_ok else "identity"}
        response = Client(apps[route], Response).get(PLUGIN_ROUTE + route, query_string={"run": "train", "tag": "probe",
                                                                                         "step": 0, "example": 0, **params},
                                                     headers=headers)
        return response.status_code, response.headers, response.get_data()

    return get, provider


def test_a_layer_asked_again_is_not_read_again_and_is_the_same_blob(served, logdir):
    get, provider = served
    status, headers, first = get("/attention", layer=1)
    reads = provider.blob_reads
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    for _ in range(3):
        assert get("/attention", layer=1)[2] == first
    assert provider.blob_reads == reads
    weights = codecs.decode_attention(first).attention[0]
    np.testing.assert_allclose(weights, logdir[1][1], atol=codecs.MAX_QUANTIZATION_ERROR)


def test_a_rewritten_step_is_read_again(served):
    get, provider = served
    get("/attention", layer=0)
    layer_blob = provider.keys_read[-1]
    get("/attention", layer=0)
    assert provider.keys_read.count(layer_blob) == 1
    provider.shift = 1.0  # the step written again: a new wall time once the step index is re-read
    assert get("/attention", step=1)[0] == 404  # an unknown step re-reads the step index at once
    assert get("/attention", layer=0)[0] == 200
    assert provider.keys_read.count(layer_blob) == 2


def test_a_heads_json_is_the_same_answer_asked_again_with_or_without_gzip(served, logdir):
    get, _ = served
    status, headers, zipped = get("/attention", layer=2, head=1, format="json")
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Content-Type"] == "application/json"
    body = json.loads(gzip.decompress(zipped))
    assert body["shape"] == [len(TOKENS), len(TOKENS)] and body["tokens"] == TOKENS
    np.testing.assert_allclose(body["attention"], logdir[1][2, 1], atol=codecs.MAX_QUANTIZATION_ERROR)
    status, headers, plain = get("/attention", gzip_ok=False, layer=2, head=1, format="json")
    assert status == 200 and "Content-Encoding" not in headers and json.loads(plain) == body
    assert get("/attention", layer=2, head=0, format="json")[2] != zipped  # another head, another answer


def test_json_answers_are_the_bytes_tensorboard_would_send():
    request = Request.from_values(headers={"Accept-Encoding": "identity"})
    for body in ({"a": [1.5, 2, "é"], "b": None, "c": (1, 2)}, {"x": [math.nan, math.inf], "y": b"bytes", "z": {3, 1}}):
        theirs = b"".join(http_util.Respond(request, body, "application/json").response)
        assert routes.json_text(body) == theirs
    assert json.loads(routes.json_text({"x": math.nan})) == {"x": "NaN"}


def test_stored_weights_are_written_as_json_would_write_them(rng):
    weights = codecs.dequantize(rng.integers(0, 256, size=(2, 3, 5, 4)))
    mark = "\0tb-attention array attention\0"  # the placeholder json_text uses, logged as a token
    for array in (weights, weights[0, 0], weights[:, :, :0], weights.astype(np.float64), weights * 1.5):
        for tokens in (["a", "b"], ["a", mark]):
            body = {"tokens": tokens, "attention": array, "after": 1}
            assert routes.json_text(body) == json.dumps({**body, "attention": array.tolist()}).encode()


def test_the_blob_cache_is_bounded_in_bytes():
    cache = ByteLRU(max_bytes=1000, max_item=400)
    for i in range(10):
        cache.put(i, bytes(300))
        assert cache.size_bytes <= 1000
    assert [cache.peek(i) is not None for i in range(10)] == [False] * 7 + [True] * 3
    cache.put("big", bytes(401))
    assert cache.peek("big") is None and cache.size_bytes == 900
    cache.peek(7)  # used: kept over 8, the least recently used
    cache.put("new", bytes(300))
    assert cache.peek(7) is not None and cache.peek(8) is None
