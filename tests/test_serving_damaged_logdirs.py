"""Damaged logdirs served by a real tensorboard with each loader: broken files, newer formats, bombs and hostile
requests answered 4xx naming the problem, never 5xx; intact data still served."""

import json
import struct
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from tb_attention import metadata
from tests.support.damaged_logdir import HOSTILE_TOKENS, TOKENS, damaged_logdir, every_run_loaded  # noqa: F401 (fixtures)
from tests.support.tensorboard import PLUGIN_ROUTE, serving


@pytest.fixture(scope="module", params=["false", "true"], ids=["python-loader", "rust-loader"])
def damaged(request, damaged_logdir):
    with serving(damaged_logdir, every_run_loaded, load_fast=request.param) as server:
        server.loader = "python" if request.param == "false" else "rust"
        yield server


def _steps(server, run, tag="probe"):
    return server.get("/tags")[1][run][tag]["steps"]


def _attention(server, run, step, example=0, **extra):
    return server.get("/attention", {"run": run, "tag": "probe", "step": step, "example": example, **extra}, raw=True)


def test_a_truncated_last_event_loses_only_that_step(damaged):
    """Training killed mid-write: both loaders treat the half record as not yet written; every intact
    step is served, the one cut is absent (404), and the steps of the resumed run's new file follow."""
    assert _steps(damaged, "truncated") == [0, 1, 2, 3, 5, 6]
    assert _steps(damaged, "truncated", "probe/entropy") == list(range(7))
    for step in (0, 3, 5, 6):
        status, body, _ = _attention(damaged, "truncated", step, format="json")
        assert status == 200 and json.loads(body)["shape"] == [2, 2, 4, 4]
    status, body = damaged.get("/examples", {"run": "truncated", "tag": "probe", "step": 4})
    assert status == 404 and "has no step 4" in body["error"]


def test_a_record_with_a_corrupt_payload(damaged):
    """A byte flipped inside step 2's attention blob (the record's data CRC fails).

    Python loader (`--load_fast false`): TensorBoard's reader stops at the bad record and retries it
    on every reload, so steps 2-5 of that file are never read; the steps of the run's later event
    files (6, 7) are. Rust data server (0.7, the default `--load_fast auto`): it parses the record
    anyway, so every step is listed; the damaged blob fails gzip's own CRC and answers 422.
    """
    status, body = damaged.get("/metric", {"run": "corrupt_payload", "tag": "probe/entropy"})
    assert status == 200
    if damaged.loader == "python":
        assert _steps(damaged, "corrupt_payload") == [0, 1, 6, 7]
        assert body["steps"] == [0, 1, 2, 6, 7]  # step 2's metric precedes the bad record
    else:
        assert _steps(damaged, "corrupt_payload") == list(range(8))
        assert body["steps"] == list(range(8))
        for fmt in ("binary", "json"):
            status, body, headers = _attention(damaged, "corrupt_payload", 2, format=fmt)
            assert status == 422 and headers["Content-Type"] == "application/json"
            assert "cannot read stored data: blob is not valid gzip" in json.loads(body)["error"]
        for step in (1, 3, 5):
            assert _attention(damaged, "corrupt_payload", step)[0] == 200
    for step in (0, 1, 6, 7):
        status, body, _ = _attention(damaged, "corrupt_payload", step, format="json")
        assert status == 200 and json.loads(body)["tokens"] == TOKENS


def test_a_record_with_a_corrupt_length(damaged):
    """A bit flipped in the length of step 2's attention record (its length CRC fails): neither loader
    can find the next record, so both stop reading that file there (Rust marks it dead, Python retries
    it); the steps before it and the steps of the run's later event files are served."""
    assert _steps(damaged, "corrupt_length") == [0, 1, 6, 7]
    assert _steps(damaged, "corrupt_length", "probe/entropy") == [0, 1, 2, 6, 7]
    for step in (0, 1, 6, 7):
        assert _attention(damaged, "corrupt_length", step)[0] == 200
    assert damaged.get("/examples", {"run": "corrupt_length", "tag": "probe", "step": 3})[0] == 404


def test_steps_logged_again_by_a_resumed_run_are_listed_once(damaged):
    """A run resumed from an earlier checkpoint logs steps 5 and 6 again, in a new event file. Each
    step is listed once and a metric takes the newest value (the plugin keeps the last write; the
    Python loader alone would list the step twice). For the attention examples the loaders differ:
    Rust serves the newest write, Python the first (its blob reader keeps the first of a step)."""
    assert _steps(damaged, "resumed") == _steps(damaged, "resumed", "probe/entropy") == list(range(9))
    _, body = damaged.get("/metric", {"run": "resumed", "tag": "probe/entropy"})
    assert body["steps"] == list(range(9))
    assert [v[0][0] for v in body["values"]] == [0, 1, 2, 3, 4, 105, 106, 107, 108]
    _, body = damaged.get("/metrics", {"run": "resumed", "probe": "probe", "step": 6})
    assert body["metrics"]["entropy"][0][0] == 106
    _, body = damaged.get("/examples", {"run": "resumed", "tag": "probe", "step": 6})
    assert body["examples"][0]["tokens"][0] == ("a" if damaged.loader == "python" else "g1")
    assert len(body["examples"]) == 1


def test_files_that_are_not_event_files_hide_nothing_else(damaged):
    """Random bytes, an empty file and a directory named like event files: the run shows no tags and
    every other run is served (checked by the fixture's wait as well)."""
    _, tags = damaged.get("/tags")
    assert "junk" not in tags and tags["intact"]["probe"]["steps"] == [0, 1, 2]


def test_a_step_up_to_2_63_written_by_another_writer_is_served(damaged):
    assert _steps(damaged, "big_step") == [2**62]
    status, body = damaged.get("/examples", {"run": "big_step", "tag": "probe", "step": 2**62})
    assert status == 200 and body["step"] == 2**62
    status, body = damaged.get("/examples", {"run": "big_step", "tag": "probe", "step": 2**63 - 1})
    assert status == 404


def test_a_newer_storage_format_is_listed_as_unsupported_with_a_message(damaged):
    _, tags = damaged.get("/tags")
    newer = tags["newer"]
    for tag in ("future", "future/entropy"):
        assert newer[tag]["kind"] == "unsupported" and newer[tag]["steps"] == []
        assert "newer tb-attention (storage format v99" in newer[tag]["error"] and "upgrade" in newer[tag]["error"]
    assert newer["alien"]["kind"] == "unsupported" and "plugin data is not tb-attention JSON" in newer["alien"]["error"]
    assert newer["probe"]["kind"] == "attention" and newer["probe"]["steps"] == [0, 1]
    for route, params in [
        ("/examples", {"run": "newer", "tag": "future", "step": 0}),
        ("/attention", {"run": "newer", "tag": "future", "step": 0, "example": 0}),
        ("/metric", {"run": "newer", "tag": "future/entropy"}),
    ]:
        status, body = damaged.get(route, params)
        assert status == 422 and "upgrade tb-attention" in body["error"], route
    assert _attention(damaged, "newer", 1)[0] == 200



@pytest.mark.parametrize(
    "step, route, message",
    [
        (0, "/examples", "blob is not valid gzip"),
        (1, "/examples", "blob is not gzip JSON"),
        (2, "/examples", "manifest lacks its 'examples' list"),
        (3, "/attention", "blob is not valid gzip"),
        (4, "/attention", "attention payload or tokens do not match the header"),
        (5, "/attention", "storage format v99"),
        (6, "/attention", "lacks blob 1"),
        (7, "/attention", "no valid blob index"),
        (8, "/examples", "manifest of storage format v99"),
        (9, "/qk", "blob starts with b'TBAT', expected b'TBQK'"),
        (10, "/attention", "blob claims a header of 4,294,967,040 bytes"),
        (11, "/attention", "top-k index beyond the last key"),
        (12, "/attention", "the manifest gives num_heads = 1000000000, not a count from 1 to 4,096"),
    ],
)
def test_unreadable_blobs_answer_422_naming_the_problem(damaged, step, route, message):
    params = {"run": "broken_blobs", "tag": "probe", "step": step, "example": 0}
    formats = ("binary", "json") if route != "/examples" else (None,)
    for fmt in formats:
        status, body = damaged.get(route, {**params, **({"format": fmt} if fmt else {})})
        assert status == 422, (fmt, body)
        assert body["error"].startswith("cannot read stored data") and message in body["error"]


def test_a_bomb_is_refused_at_once_and_once_only(damaged):
    """The header-length bomb answers 422 without inflating what it claims, and its failed check is
    remembered: the refetch is no slower than the first answer."""
    params = {"run": "broken_blobs", "tag": "probe", "step": 10, "example": 0}
    first = time.perf_counter()
    assert damaged.get("/attention", params)[0] == 422
    first = time.perf_counter() - first
    again = time.perf_counter()
    assert damaged.get("/attention", params)[0] == 422
    again = time.perf_counter() - again
    assert again <= first * 1.5 + 0.05, (first, again)


def test_a_bad_example_fails_alone(damaged):
    """Example 0 of the step claims 10^9 heads: it answers 422, /examples lists it as unreadable with the
    reason, and example 1 of the same step is served whole on both routes."""
    params = {"run": "broken_blobs", "tag": "probe", "step": 12}
    status, body = damaged.get("/examples", params)
    assert status == 200
    assert [e["index"] for e in body["examples"]] == [1] and body["examples"][0]["num_heads"] == 2
    assert [u["index"] for u in body["unreadable"]] == [0] and "num_heads = 1000000000" in body["unreadable"][0]["error"]
    assert damaged.get("/attention", {**params, "example": 0})[0] == 422
    assert damaged.get("/attention", {**params, "example": 1}, raw=True)[0] == 200
    status, body = damaged.get("/attention", {**params, "example": 1, "format": "json"})
    assert status == 200 and body["shape"] == [2, 2, 4, 4]
    status, body = damaged.get("/compare", {"tag": "probe", "run_a": "broken_blobs", "step_a": 12, "run_b": "broken_blobs",
                                            "step_b": 12})
    assert status == 200 and body["used"] == 1 and body["skipped"] == 1 and np.allclose(body["moved"], 0)


@pytest.mark.parametrize("step, message", [(0, "blob is not valid gzip"), (1, "exemplar table is not a JSON object")])
def test_unreadable_exemplars_answer_422(damaged, step, message):
    status, body = damaged.get("/exemplars", {"run": "broken_blobs", "tag": "probe/exemplars", "step": step})
    assert status == 422 and message in body["error"]


def test_hostile_tokens_come_back_exactly_as_json_text(damaged):
    """Token text is data: JSON-escaped inside application/json (nosniff), byte-exact in the binary header."""
    status, raw, headers = damaged.get("/examples", {"run": "intact", "tag": "probe", "step": 1}, raw=True)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    first, long = json.loads(raw)["examples"]
    assert first["tokens"] == HOSTILE_TOKENS and first["text"] == "<script>alert(1)</script>"
    status, blob, headers = _attention(damaged, "intact", 1)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    (head_len,) = struct.unpack_from("<I", blob, 8)
    assert json.loads(blob[12 : 12 + head_len])["tokens"] == HOSTILE_TOKENS
    _, body = damaged.get("/exemplars", {"run": "intact", "tag": "probe/exemplars", "step": 2})
    assert body["inputs"][0]["tokens"] == HOSTILE_TOKENS


def test_long_sparse_input_is_served(damaged):
    _, body = damaged.get("/examples", {"run": "intact", "tag": "probe", "step": 0})
    assert body["examples"][1]["encoding"] == "topk" and body["examples"][1]["num_tokens"] == 600
    status, body, _ = _attention(damaged, "intact", 0, example=1, format="json", layer=0, head=1)
    weights = np.array(json.loads(body)["attention"])
    assert status == 200 and weights.shape == (600, 600) and (weights > 0).sum(-1).max() == metadata.DEFAULT_TOP_K


def test_nan_and_infinite_metrics_are_served_as_null(damaged):
    _, body = damaged.get("/metric", {"run": "intact", "tag": "probe/entropy"})
    assert body["values"][2] == [[None, None], [None, 2.0]]


REQUESTS = [
    ("/tags", {}), ("/index.js", {}), ("/static/index.js", {}),
    ("/examples", {"run": "intact", "tag": "probe", "step": 0}),
    ("/attention", {"run": "intact", "tag": "probe", "step": 0, "example": 0}),
    ("/attention", {"run": "intact", "tag": "probe", "step": 0, "example": 0, "format": "json"}),
    ("/metric", {"run": "intact", "tag": "probe/entropy"}),
    ("/metrics", {"run": "intact", "probe": "probe", "step": 0}),
    ("/exemplars", {"run": "intact", "tag": "probe/exemplars", "step": 0}),
    ("/qk", {"run": "intact", "tag": "probe", "step": 0, "example": 0}),
    ("/examples", {"run": "<script>alert(1)</script>", "tag": "probe", "step": 0}),
    ("/examples", {"run": "intact", "tag": "probe", "step": "<b>"}),
    ("/attention", {"run": "broken_blobs", "tag": "probe", "step": 3, "example": 0}),
    ("/static/../../setup.py", {}),
]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
def test_every_response_carries_nosniff_and_none_is_5xx(damaged, method):
    for route, params in REQUESTS:
        url = damaged.url + PLUGIN_ROUTE + route + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(url, method=method, data=b"x=1" if method in ("POST", "PUT") else None)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, headers, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        assert headers["X-Content-Type-Options"] == "nosniff", (method, route)
        assert status < 500, (method, route, status)
        if method not in ("GET", "HEAD"):
            assert status == 405 and headers["Allow"] == "GET, HEAD"
        if status >= 400:
            assert headers["Content-Type"] == "application/json"
            if method != "HEAD":
                assert json.loads(body)["error"]


@pytest.mark.parametrize(
    "query, code, message",
    [
        ("run=intact&tag=probe&step=0&step=1", 200, None),  # repeated: the first one counts
        ("run=intact&tag=probe&step=%2B1", 400, "non-negative integer, got '+1'"),
        ("run=intact&tag=probe&step=%201", 400, "non-negative integer, got ' 1'"),
        ("run=intact&tag=probe&step=%D9%A3", 400, "non-negative integer, got '٣'"),  # Arabic-Indic 3
        ("run=intact&tag=probe&step=1e3", 400, "non-negative integer"),
        ("run=intact&tag=probe&step=0x1", 400, "non-negative integer"),
        ("run=intact&tag=probe&step=999999999999999999", 404, "has no step 999999999999999999"),
        ("run=intact&tag=probe&step=9223372036854775808", 400, "non-negative integer"),
        ("run=intact&tag=probe&step=9223372036854775807", 404, "has no step 9223372036854775807"),
        ("run=intact&tag=probe&step=00000000000000000001", 400, "non-negative integer"),  # 20 digits
        ("run=intact%00&tag=probe&step=0", 404, "run 'intact\\x00' has no attention tag"),
        ("run=%FF%FE&tag=probe&step=0", 404, "has no attention tag"),
        ("run=&tag=&step=0", 404, "run '' has no attention tag ''"),
        ("run=intact&step=0", 400, "missing parameter 'tag'"),
        ("Run=intact&tag=probe&step=0", 400, "missing parameter 'run'"),
        ("run=intact&tag=probe&step=0&example=0&layer=&format=json", 400, "'layer' must be a non-negative integer"),
        ("run=intact&tag=probe&step=0&example=0&head=-0&format=json", 400, "'head' must be a non-negative integer"),
        ("run=intact&tag=probe&step=0&example=18446744073709551616", 400, "'example' must be"),
        ("run=intact&tag=probe&step=0&example=99999", 404, "no example 99999"),
        ("run=intact&tag=probe&step=0&example=0&format=", 400, "'format' must be 'json' or 'binary'"),
        ("run=intact&tag=probe&step=0&example=0&format=JSON", 400, "'format' must be"),
        ("run=" + "x" * 20000 + "&tag=probe&step=0", 404, "has no attention tag"),
    ],
)
def test_malformed_parameters_answer_4xx_with_a_json_error(damaged, query, code, message):
    route = "/attention" if "example" in query else "/examples"
    status, body = damaged.get(route + "?" + query)
    assert status == code, body
    if message:
        assert message in body["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../plugin.py", "/static/..%2fplugin.py", "/static/%2e%2e%2fplugin.py", "/static/%252e%252e%252fplugin.py",
        "/static/..%5cplugin.py", "/static/....//plugin.py", "/static/.%2e/.%2e/setup.py", "/static//etc/passwd",
        "/static/%2fetc%2fpasswd", "/static/index.js%00.png", "/static/./index.js", "/static/index.js/",
        "/static/", "/static/" + "a" * 5000, "/static/..", "/static/%c0%ae%c0%ae/plugin.py",
        "/static/..;/plugin.py", "/static/file:///etc/passwd", "/static/~/.ssh/id_rsa",
    ],
)
def test_static_routes_serve_only_the_bundle(damaged, path):
    status, body, headers = damaged.get(path, raw=True)
    assert status == 404 and headers["X-Content-Type-Options"] == "nosniff"
    if path == "/static/":  # TensorBoard's own router answers: no file name, no route
        return
    error = json.loads(body)["error"]
    assert error.startswith("no static file") and str(metadata.__file__).rsplit("/", 2)[0] not in error
