"""Serving under load and the blob checks: concurrent requests on threads, decoding one head, corruptions refused in bounded memory."""

import concurrent.futures
import gzip

import numpy as np
import pytest

from tb_attention import Writer, metadata
from tb_attention.storage import summary
from tests.support.data import random_attention

# ---------------------------------------------------------------------------------------------
# Concurrency: TensorBoard serves requests on threads; the plugin's caches must hold under load


@pytest.fixture(scope="module")
def busy_logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("busy")
    rng = np.random.default_rng(5)
    with Writer(root / "train") as writer:
        for step in range(12):
            summary.write_examples(writer, "probe", [
                {"attention": random_attention(rng, 2, 4, 48), "tokens": [f"t{i}" for i in range(48)]} for _ in range(4)
            ], step)
            summary.metrics(writer, "probe", {"entropy": np.full((2, 4), step, np.float32)}, step)
    return root


@pytest.mark.parametrize("load_fast", ["false", "true"], ids=["python-loader", "rust-loader"])
def test_200_concurrent_requests_all_succeed_with_the_right_answer(busy_logdir, tensorboard, load_fast):
    """200 requests from 32 threads, mixing every data route: no error, and each answer is the same
    bytes as the same request made alone (so the shared manifest cache mixes nothing up)."""
    server = tensorboard(busy_logdir, load_fast=load_fast)
    server.wait_for(lambda t: len(t.get("train", {}).get("probe", {}).get("steps", [])) == 12)
    rng = np.random.default_rng(0)
    requests = []
    for i in range(200):
        step, example = int(rng.integers(12)), int(rng.integers(4))
        requests.append([
            ("/tags", None),
            ("/examples", {"run": "train", "tag": "probe", "step": step}),
            ("/attention", {"run": "train", "tag": "probe", "step": step, "example": example}),
            ("/attention", {"run": "train", "tag": "probe", "step": step, "example": example, "format": "json", "layer": 1}),
            ("/metric", {"run": "train", "tag": "probe/entropy"}),
        ][i % 5])

    def fetch(request):
        status, body, _ = server.get(*request, raw=True)
        return status, body

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(fetch, requests))
    assert [status for status, _ in answers] == [200] * 200
    for request, (_, body) in list(zip(requests, answers))[::7]:
        assert fetch(request) == (200, body), request


@pytest.mark.parametrize("causal, options", [(True, {}), (False, {}), (True, {"max_dense_tokens": 30, "top_k": 5})],
                         ids=["causal", "dense", "topk"])
def test_one_head_is_decoded_alone_and_equals_the_full_decode(rng, causal, options):
    """/attention?format=json&layer&head decodes only that head: under load, decoding whole
    12 x 12 x 128 examples to narrow them cost 1.5 s p50 and 300 MB at 32 concurrent requests."""
    blob = metadata.encode_attention(random_attention(rng, 3, 4, 40, causal=causal), ["t"] * 40, **options)
    full = metadata.decode_attention(blob).attention
    for layer, head, expected in [(2, None, full[2]), (None, 3, full[:, 3]), (1, 2, full[1, 2])]:
        part = metadata.decode_attention(blob, layer=layer, head=head).attention
        assert part.shape == expected.shape and np.array_equal(part, expected)
    with pytest.raises(IndexError, match="head 4 does not exist: the example has 4 heads"):
        metadata.decode_attention(blob, head=4)


def _corruptions(blob):
    raw, middle = gzip.decompress(blob), len(blob) // 2
    return {
        "not gzip": (b"plain bytes", "blob is not valid gzip"),
        "cut in half": (blob[:middle], "ends early"),
        "a flipped byte": (blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1 :], "blob is not valid gzip"),
        "data after its end": (blob + b"junk", "has data after its end"),
        "two gzip members": (blob + blob, "has data after its end"),
        "empty": (b"", "ends early"),
        "short payload": (gzip.compress(raw[:-5]), "do not match the header"),
        "wrong magic": (gzip.compress(b"XXXX" + raw[4:]), "expected b'TBAT'"),
        "header cut": (gzip.compress(raw[:20]), "header runs past its end"),
    }


@pytest.mark.parametrize("case", ["not gzip", "cut in half", "a flipped byte", "data after its end", "two gzip members",
                                  "empty", "short payload", "wrong magic", "header cut"])
def test_blob_check_refuses_each_corruption_in_bounded_memory(rng, case):
    """The check the binary routes run reads the blob in 256 KiB pieces (this one inflates to 0.5 MB)."""
    blob = metadata.encode_attention(random_attention(rng, 4, 4, 256), ["t"] * 256)
    assert metadata.check_attention_blob(blob)["num_tokens"] == 256
    corrupt, message = _corruptions(blob)[case]
    with pytest.raises(metadata.FormatError, match=message):
        metadata.check_attention_blob(corrupt)
