"""Fuzzing every route of a real tensorboard (both loaders) with random requests: only 2xx and 4xx."""

import collections
import http.client
import json
import random
import urllib.parse

import numpy as np
import pytest

from tb_attention import Writer
from tb_attention.storage import summary
from tests.support.data import random_attention
from tests.support.tensorboard import PLUGIN_ROUTE, TensorBoard

SEED = 20240611  # change it to explore; a failure message names the request, to replay it
REQUESTS_PER_LOADER = 1500
ROUTES = ["/tags", "/examples", "/attention", "/qk", "/metric", "/metrics", "/exemplars", "/image", "/compare",
          "/index.js", "/static/index.js"]
PARAMS = ["run", "tag", "step", "example", "format", "layer", "head", "probe", "group", "run_a", "run_b", "step_a",
          "step_b"]
RUNS = ["train", "broken"]
TAGS = ["probe", "probe/entropy", "probe/pos/NOUN", "probe/exemplars", "future", "seq", "seq/cross/entropy"]
GROUPS = ["encoder", "decoder", "cross", "self", "nope", ""]
JSON_ROUTES = set(ROUTES) - {"/index.js", "/static/index.js"}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(2)
    with Writer(root / "train") as writer:
        for step in (0, 1, 7):
            summary.write_examples(writer, "probe", [
                {"attention": random_attention(rng, 2, 2, 5), "tokens": ["<s>", "<b>x</b>", "é", "😀", ""],
                 "query": rng.normal(size=(2, 2, 5, 4)), "key": rng.normal(size=(2, 1, 5, 4)), "scaling": [0.5, 0.5]},
                {"attention": random_attention(rng, 2, 2, 3, causal=False), "tokens": list("abc")},
            ], step)
            summary.metrics(writer, "probe", {"entropy": rng.random((2, 2)), "pos/NOUN": np.full((2, 2), np.nan)}, step)
            summary.exemplars(writer, "probe", {"num_layers": 2, "num_heads": 2, "top_k": 1, "inputs": [],
                                                "heads": [[[], []], [[], []]]}, step)
            source, target = random_attention(rng, 2, 2, 4, causal=False), random_attention(rng, 2, 2, 3)
            cross = random_attention(rng, 2, 2, 4, causal=False)[:, :, :3]
            cross /= cross.sum(-1, keepdims=True)
            summary.write_examples(writer, "seq", [
                {"tokens": list("abcd"), "groups": [
                    {"name": "encoder", "attention": source},
                    {"name": "decoder", "attention": target, "tokens": list("xyz")},
                    {"name": "cross", "attention": cross, "tokens": list("xyz"), "key_tokens": list("abcd"), "query": rng.normal(size=(2, 2, 3, 4)),
                     "key": rng.normal(size=(2, 2, 4, 4)), "scaling": 0.5}]},
                {"tokens": ["CLS", "r0c0", "r0c1"], "attention": random_attention(rng, 2, 2, 3, causal=False),
                 "image": {"png": PNG, "grid": [1, 2], "patch_size": [8, 8], "prefix_tokens": 1, "prefix_names": ["CLS"]}},
            ], step, record_bytes=400)
            summary.metrics(writer, "seq", {"entropy": rng.random((2, 2))}, step, group="cross")
    with Writer(root / "broken") as writer:
        manifest, blobs, _ = summary.encode_examples([{"attention": random_attention(rng, 1, 1, 2), "tokens": ["a", "b"]}])
        pb = summary.attention_pb("probe", manifest, [b"\x1f\x8b not gzip"])
        summary.write(writer, pb, 0)
        pb = summary.attention_pb("future", manifest, blobs)
        pb.value[0].metadata.plugin_data.content = b'{"version": 99, "kind": "attention"}'
        summary.write(writer, pb, 0)
    return root


PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU"
       b"\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")  # 1 x 1 grey


def _value(rng):
    """A random parameter value: mostly plausible, often hostile."""
    kind = rng.randrange(16)
    if kind == 0:
        return rng.choice(RUNS)
    if kind == 1:
        return rng.choice(TAGS)
    if kind in (2, 3):
        return str(rng.choice([0, 1, 7, 2, 99]))
    if kind == 4:
        return rng.choice(["-1", "-0", "+1", " 1", "1 ", "1.5", "1e3", "0x1", "", "01", "٣", "１", "NaN", "inf"])
    if kind == 5:
        return str(rng.choice([2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63)]))
    if kind == 6:
        return rng.choice(["json", "binary", "JSON", "xml", "", "json\x00"])
    if kind == 7:
        return "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(1, 30)))
    if kind == 8:
        return "".join(chr(rng.choice([rng.randrange(0xA0, 0xD7FF), rng.randrange(0xE000, 0x10FFFF)]))
                       for _ in range(rng.randrange(1, 12)))
    if kind == 9:
        return rng.choice(["<script>alert(1)</script>", "\"'><img src=x onerror=alert(1)>", "../../etc/passwd",
                           "..\\..\\", "%00", "\x00", "\r\nX-Injected: 1", "${7*7}", "{{7*7}}", "'; DROP TABLE x; --"])
    if kind == 10:
        return rng.choice(["x", "7", "é"]) * rng.choice([1000, 10_000])
    if kind == 11:
        return rng.choice(RUNS) + rng.choice(["/", "\x00", " ", "%", "/.."])
    if kind == 12:
        return rng.choice(TAGS).upper()
    if kind == 13:
        return rng.choice(GROUPS)
    return str(rng.randrange(0, 12))


def _query(rng):
    parts = []
    for _ in range(rng.randrange(0, 9)):
        name = rng.choice(PARAMS) if rng.random() < 0.85 else _value(rng)[:20]
        value = _value(rng)
        style = rng.randrange(10)
        if style == 0:
            parts.append(urllib.parse.quote(name, safe=""))  # a name without "="
        elif style == 1:
            # bad escapes, bad UTF-8
            parts.append(rng.choice(["%", "%zz", "%%", "=", "&", "==", "%ff%fe", "%c0%af", "%ed%a0%80"]))
        else:
            parts.append(f"{urllib.parse.quote(name, safe='')}={urllib.parse.quote(value, safe='')}")
    return "&".join(parts)


def _path(rng):
    kind = rng.randrange(10)
    if kind < 7:
        return rng.choice(ROUTES)
    if kind == 7:
        return "/static/" + urllib.parse.quote(_value(rng), safe=rng.choice(["", "/", "/%."]))
    if kind == 8:
        return rng.choice(ROUTES) + rng.choice(["/", "//", "/x", "/..", "%2f..", ";x", ".json"])
    return "/" + urllib.parse.quote(_value(rng)[:50], safe="/")


def _plausible(rng):
    """A request that often reaches the data: real names and steps, random narrowing."""
    params = {"run": rng.choice(["train", "train", "broken"]), "step": rng.choice([0, 1, 7, 3]),
              "tag": rng.choice(["probe", "probe/entropy", "probe/exemplars", "future", "seq", "seq"]),
              "example": rng.choice([0, 1, 2]), "probe": rng.choice(["probe", "seq"])}
    for name in ("format", "layer", "head", "group"):
        if rng.random() < 0.5:
            params[name] = {"format": lambda: rng.choice(["json", "binary"]), "group": lambda: rng.choice(GROUPS)}.get(
                name, lambda: rng.choice([0, 1, 2, "x"]))()
    if rng.random() < 0.3:
        params.update(run_a=rng.choice(RUNS), run_b="train", step_a=rng.choice([0, 1, 7, 3]), step_b=rng.choice([0, 7]))
    return rng.choice(ROUTES[:9]), urllib.parse.urlencode(params)


def _send(server, method, target, body):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
        except (BrokenPipeError, ConnectionResetError):
            # Python's HTTP server answers 414 to a request line over 64 KiB and closes the socket,
            # possibly before the rest of the request is sent (timing: it happens under load).
            if len(target) > 65536:
                return 414, {}, b""
            raise
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("load_fast", ["false", "true"], ids=["python-loader", "rust-loader"])
def test_random_requests_answer_only_2xx_or_4xx(logdir, load_fast):
    """1500 random requests per loader (3000 in all): random routes, parameters (unicode, huge and
    negative numbers, empty, repeated, bad escapes), path junk and methods. Every answer is 2xx or
    4xx with nosniff; every 4xx of a plugin route is JSON with an "error"; the server stays up.
    (A request line over 64 KiB gets 414 from Python's HTTP server itself, without TensorBoard's headers.)"""
    rng = random.Random(f"{SEED}-{load_fast}")
    server = TensorBoard(logdir, load_fast=load_fast)
    try:
        server.wait_for(lambda t: t.get("train", {}).get("probe", {}).get("steps") == [0, 1, 7]
                        and "future" in t.get("broken", {}))
        statuses = collections.Counter()
        for i in range(REQUESTS_PER_LOADER):
            method = rng.choices(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"], [70, 6, 8, 4, 4, 4, 4])[0]
            route, query = _plausible(rng) if rng.random() < 0.3 else (_path(rng), _query(rng))
            target = PLUGIN_ROUTE + route + ("?" + query if query or rng.random() < 0.1 else "")
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(64 if method in ("POST", "PUT", "PATCH") else 1)))
            status, headers, content = _send(server, method, target, body)
            what = f"request {i}: {method} {target[:300]}"
            statuses[status] += 1
            assert 200 <= status < 500, f"{what} answered {status}: {content[:500]!r}"
            if status == 414:  # a request line over 64 KiB: Python's HTTP server answers before TensorBoard
                assert len(target) > 65536 and server.process.poll() is None, what
                continue
            assert headers.get("X-Content-Type-Options") == "nosniff", (what, status, content[:300])
            if route in JSON_ROUTES and status >= 400 and method != "HEAD":
                assert headers.get("Content-Type") == "application/json", what
                assert isinstance(json.loads(content)["error"], str), what
            if route in JSON_ROUTES and status == 200 and headers.get("Content-Type") == "application/json" and content:
                json.loads(content)
        assert server.process.poll() is None
        loader = "rust" if load_fast == "true" else "python"
        print(f"\nfuzz ({loader} loader, seed {SEED}): {dict(sorted(statuses.items()))}")
        assert statuses[200] > 100 and statuses[400] > 100 and statuses[404] > 100 and statuses[422] > 0
    finally:
        server.close()
