"""Long examples written by the writer and served by a real TensorBoard: top-k rows, block maps, profiles and
windows equal the dense attention pooled as http_api.md defines them; bad requests answer 4xx."""

import collections
import gzip
import json
import random
import struct

import numpy as np
import pytest

from tb_attention import Writer
from tb_attention.storage import codecs, summary
from tb_attention.storage.codecs import long
from tests.support import long_reference as ref
from tests.support.tensorboard import serving

ERR = codecs.MAX_QUANTIZATION_ERROR
LAYERS, HEADS, N, K = 2, 3, 600, 8
CROSS_QUERIES = 300  # a non-causal group whose queries are the last 300 of 600 keys
WIDE = 5000  # tokens of an example whose finer levels pass a million cells
RUN = dict(run="long", tag="probe", step=3, example=0)


def _plan(layers, heads, nq, nk):
    p = long.plan(layers, heads, nq, nk, budget=16 << 20, top_k=K)
    return long.LongPlan(**{**p.__dict__, "row_chunk": 256})  # several chunks per layer, the last shorter


def _truncated(blob):
    """A blob whose header is whole and whose payload is 7 bytes short."""
    return codecs.compress(gzip.decompress(blob)[:-7])


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    tokens = [f"t{i}" for i in range(N)]
    dense = [ref.softmax_attention(HEADS, N, seed=10 + layer) for layer in range(LAYERS)]
    cross = [ref.softmax_attention(2, CROSS_QUERIES, seed=20, causal=False, num_keys=N)]
    plan, cross_plan = _plan(LAYERS, HEADS, N, N), _plan(1, 2, CROSS_QUERIES, N)
    assert plan.levels == ((2, 300, 300), (1, 600, 600)) and len(plan.chunks()) == 3
    layers = [ref.long_layer(a, plan, causal=True) for a in dense]
    layers[1] = long.encode_layer(1, layers[1], plan)  # as capture hands it over; layer 0 is encoded by the writer
    small = ref.softmax_attention(2, 5, seed=3)[None]
    examples = [
        {"tokens": tokens, "groups": [
            {"name": "self", "causal": True, "layer_names": ["h.0", "h.1"], "long": {"plan": plan, "layers": layers}},
            {"name": "cross", "tokens": tokens[N - CROSS_QUERIES:], "key_tokens": tokens,
             "long": {"plan": cross_plan, "layers": [ref.long_layer(cross[0], cross_plan, causal=False)]}},
        ]},
        {"tokens": list("abcde"), "attention": small},
    ]
    with Writer(root / "long") as writer:
        summary.write_examples(writer, "probe", examples, 3, record_bytes=400_000)  # spread over part tags
    damaged = long.encode_layer(0, ref.long_layer(dense[0], plan, causal=True), plan)
    damaged.rows[1] = _truncated(damaged.rows[1])
    damaged.levels[0] = _truncated(damaged.levels[0])
    with Writer(root / "damaged") as writer:
        summary.write_examples(writer, "probe", [{"tokens": tokens, "causal": True, "long": {
            "plan": _plan(1, HEADS, N, N), "layers": [damaged]}}], 3)
    with Writer(root / "wide") as writer:  # each token attends to itself: built without a dense array
        wide = long.plan(1, 1, WIDE, WIDE, budget=40 << 20, top_k=1)
        assert [b for b, _, _ in wide.levels] == [16, 8, 4, 2]
        layer = long.LongLayer(
            top_index=np.arange(WIDE, dtype=np.uint32)[None, :, None], top_weight=np.ones((1, WIDE, 1), np.float32),
            remainder=np.zeros((1, WIDE), np.float32),
            levels=[np.eye(rows, dtype=np.float32)[None] for _, rows, _ in wide.levels],
            profile=np.eye(1, wide.distance_bins, dtype=np.float32), sinks=np.zeros((1, 4), np.float32))
        summary.write_examples(writer, "probe", [{"tokens": [str(i) for i in range(WIDE)], "causal": True,
                                                  "long": {"plan": wide, "layers": [layer]}}], 3)
    return root, dict(dense=dense, cross=cross, plan=plan, cross_plan=cross_plan, small=small)


@pytest.fixture(scope="module", params=["false", "true"], ids=["python-loader", "rust-loader"])
def server(request, logdir):
    def ready(tags):
        return all(tags.get(run, {}).get("probe", {}).get("steps") == [3] for run in ("long", "damaged", "wide"))

    with serving(logdir[0], ready, load_fast=request.param) as tb:
        yield tb


def _frame(body, magic):
    """(header, payload) of a TBLM / TBLR answer, read as http_api.md describes the framing."""
    found, version, length = struct.unpack_from("<4sII", body)
    assert (found, version, (12 + length) % 8) == (magic, 1, 0)
    return json.loads(body[12 : 12 + length]), body[12 + length :]


def _get(server, route, raw=True, **params):
    status, body, headers = server.get(route, {**RUN, **params}, raw=True)
    assert status == 200, body
    if raw:  # this client takes no gzip: TensorBoard inflates the gzip body for it
        assert headers["Content-Type"] == "application/octet-stream"
        return gzip.decompress(body) if headers["Content-Encoding"] == "gzip" else body
    return json.loads(body)


def test_examples_list_a_long_group_with_its_plan(server, logdir):
    status, body = server.get("/examples", {k: RUN[k] for k in ("run", "tag", "step")})
    assert status == 200 and not body["unreadable"]
    first = body["examples"][0]
    assert (first["encoding"], first["num_tokens"], first["has_qk"]) == ("long", N, False)
    group, cross = first["groups"]
    assert group["long"] == logdir[1]["plan"].entry() and group["layer_names"] == ["h.0", "h.1"]
    assert (cross["encoding"], cross["num_tokens"], cross["num_key_tokens"]) == ("long", CROSS_QUERIES, N)
    assert "long_rows" not in group and body["examples"][1]["encoding"] == "causal"


@pytest.mark.parametrize("start, stop", [(0, 5), (250, 300), (0, 600), (590, 600)])
def test_served_rows_are_the_exact_top_k_of_the_dense_attention(server, logdir, start, stop):
    for layer in range(LAYERS):
        index, weight, remainder = ref.top_rows(logdir[1]["dense"][layer], K, causal=True)
        for head in (0, HEADS - 1):
            body = _get(server, "/long_rows", layer=layer, head=head, start=start, stop=stop)
            header, payload = _frame(body, b"TBLR")
            n = stop - start
            assert header == {"layer": layer, "head": head, "start": start, "stop": stop, "top_k": K, "num_key_tokens": N}
            served = np.frombuffer(payload, "<u4", n * K).reshape(n, K)
            codes = np.frombuffer(payload, np.uint8, n * K, 4 * n * K).reshape(n, K)
            rest = np.frombuffer(payload, np.uint8, n, 5 * n * K)
            assert len(payload) == 5 * n * K + n
            np.testing.assert_array_equal(served, index[head, start:stop])
            assert np.abs((codes / 255.0) ** 2 - weight[head, start:stop]).max() <= ERR
            assert np.abs((rest / 255.0) ** 2 - remainder[head, start:stop]).max() <= ERR
    as_json = _get(server, "/long_rows", raw=False, layer=1, head=2, start=start, stop=stop, format="json")
    index, weight, _ = ref.top_rows(logdir[1]["dense"][1], K, causal=True)
    for i, (keys, weights) in enumerate(zip(as_json["index"], as_json["weight"])):
        used = index[2, start + i] != long.UNUSED
        assert keys == index[2, start + i][used].tolist()
        assert np.abs(np.array(weights) - weight[2, start + i][used]).max() <= ERR


def test_rows_of_a_rectangular_group_index_the_keys(server, logdir):
    index, weight, remainder = ref.top_rows(logdir[1]["cross"][0], K, causal=False)
    body = _get(server, "/long_rows", raw=False, group="cross", layer=0, head=1, start=100, stop=140, format="json")
    assert body["index"] == index[1, 100:140].tolist()
    assert np.abs(np.array(body["remainder"]) - remainder[1, 100:140]).max() <= ERR


@pytest.mark.parametrize("level, block", [(0, 2), (1, 1)])
def test_block_maps_of_a_head_and_of_the_mean_equal_the_pooled_dense_attention(server, logdir, level, block):
    for layer in range(LAYERS):
        expected = ref.level(logdir[1]["dense"][layer], block)
        for head in (None, 1):
            params = dict(layer=layer, level=level, **({} if head is None else {"head": head}))
            header, payload = _frame(_get(server, "/long_map", **params), b"TBLM")
            size = N // block
            assert header == {"layer": layer, "head": head, "level": level, "block": block, "rows": [0, size],
                              "cols": [0, size], "level_rows": size, "level_cols": size, "num_tokens": N,
                              "num_key_tokens": N}
            cells = (np.frombuffer(payload, np.uint8).reshape(size, size) / 255.0) ** 2
            want, tolerance = (expected.mean(0), 2 * ERR) if head is None else (expected[head], ERR)
            assert np.abs(cells - want).max() <= tolerance
    window = _get(server, "/long_map", raw=False, layer=1, level=level, head=2, rows="10:20", cols="5:9", format="json")
    assert (window["rows"], window["cols"]) == ([10, 20], [5, 9])
    assert np.abs(np.array(window["cells"]) - ref.level(logdir[1]["dense"][1], block)[2, 10:20, 5:9]).max() <= ERR


def test_the_profile_and_sinks_equal_the_dense_definitions(server, logdir):
    body = _get(server, "/long_profile", raw=False)
    plan = logdir[1]["plan"]
    dense = logdir[1]["dense"]
    profile = np.stack([ref.profile(a, plan.distance_bins) for a in dense])
    sinks = np.stack([ref.sinks(a, 4) for a in dense])
    np.testing.assert_allclose(body["profile"], profile, atol=1e-6)
    np.testing.assert_allclose(body["sinks"], sinks, atol=1e-6)
    np.testing.assert_allclose(body["local_share"], profile[:, :, :8].sum(-1), atol=1e-5)
    np.testing.assert_allclose(body["sink_share"], sinks.sum(-1), atol=1e-5)
    assert body["bins"][:4] == [[0, 1], [1, 2], [2, 4], [4, 8]] and len(body["bins"]) == plan.distance_bins == 11
    assert (body["top_k"], body["num_tokens"], body["levels"]) == (K, N, plan.entry()["levels"])
    cross = _get(server, "/long_profile", raw=False, group="cross")
    np.testing.assert_allclose(cross["profile"][0], ref.profile(logdir[1]["cross"][0], 11), atol=1e-6)


def _kept(a, k, start, stop, causal=True):
    """The window [start, stop) of dense weights with only each row's top-k kept."""
    index, weight, _ = ref.top_rows(a, k, causal)
    out = np.zeros((a.shape[0], stop - start, stop - start))
    for h in range(a.shape[0]):
        for r in range(start, stop):
            for j, w in zip(index[h, r], weight[h, r]):
                if j != long.UNUSED and start <= j < stop:
                    out[h, r - start, j - start] = w
    return out


def test_a_window_is_the_stored_top_k_rows_inside_it(server, logdir):
    dense = logdir[1]["dense"]
    blob = _get(server, "/attention", window="250:410", layer=1)
    decoded = codecs.decode_attention(codecs.compress(blob))
    assert decoded.header["window"] == [250, 410] and decoded.header["encoding"] == "causal"
    assert decoded.header["tokens"] == [f"t{i}" for i in range(250, 410)] and decoded.header["first_layer"] == 1
    assert np.abs(decoded.attention[0] - _kept(dense[1], K, 250, 410)).max() <= ERR
    whole = _get(server, "/attention", raw=False, window="0:40", format="json")
    assert whole["shape"] == [LAYERS, HEADS, 40, 40] and whole["window"] == [0, 40]
    for layer in range(LAYERS):
        assert np.abs(np.array(whole["attention"][layer]) - _kept(dense[layer], K, 0, 40)).max() <= ERR


@pytest.mark.parametrize("route, params, code, message", [
    ("/attention", {}, 400, "window=A:B"),
    ("/attention", {"window": "0:513"}, 400, "at most 512"),
    ("/attention", {"window": "9:9"}, 400, "'window'"),
    ("/attention", {"window": "590:601"}, 400, "'window'"),
    ("/attention", {"example": 1, "window": "0:3"}, 400, "applies to long groups"),
    ("/qk", {}, 404, "long"),
    ("/long_map", {"layer": 0, "level": 2}, 400, "'level'"),
    ("/long_map", {"layer": 0, "level": 0, "rows": "0:301"}, 400, "'rows'"),
    ("/long_map", {"layer": 0, "level": 0, "cols": "5:2"}, 400, "'cols'"),
    ("/long_map", {"layer": 0, "level": "x"}, 400, "'level'"),
    ("/long_map", {"layer": 0}, 400, "'level'"),
    ("/long_map", {"layer": 2, "level": 0}, 404, "layer 2"),
    ("/long_map", {"layer": 0, "level": 0, "head": 3}, 404, "head 3"),
    ("/long_map", {"layer": 0, "level": 0, "example": 1}, 404, "not a long example"),
    ("/long_map", {"layer": 0, "level": 0, "group": "decoder"}, 404, "no group 'decoder'"),
    ("/long_rows", {"layer": 0, "head": 0, "start": 5, "stop": 5}, 400, "'stop'"),
    ("/long_rows", {"layer": 0, "head": 0, "start": 0, "stop": 601}, 400, "'stop'"),
    ("/long_rows", {"layer": 0, "head": 0, "start": -1, "stop": 3}, 400, "'start'"),
    ("/long_rows", {"layer": 0, "start": 0, "stop": 3}, 400, "'head'"),
    ("/long_rows", {"layer": 0, "head": 0, "start": 0, "stop": 3, "format": "xml"}, 400, "'format'"),
    ("/long_profile", {"example": 2}, 404, "no example 2"),
])
def test_bad_requests_answer_4xx_naming_what_is_wrong(server, route, params, code, message):
    status, body = server.get(route, {**RUN, **params})
    assert status == code and message in body["error"], body


def test_more_than_4096_rows_or_a_million_cells_are_refused(server):
    wide = {**RUN, "run": "wide"}
    status, body = server.get("/long_rows", {**wide, "layer": 0, "head": 0, "start": 0, "stop": 4097})
    assert status == 400 and "at most 4,096" in body["error"], body
    status, body = server.get("/long_rows", {**wide, "layer": 0, "head": 0, "start": 904, "stop": WIDE, "format": "json"})
    assert status == 200 and len(body["index"]) == 4096 and body["index"][0] == [904]
    status, body = server.get("/long_map", {**wide, "layer": 0, "level": 2})  # 1,250 x 1,250 cells
    assert status == 400 and "at most 1,048,576" in body["error"], body
    status, body = server.get("/long_map", {**wide, "layer": 0, "level": 2, "rows": "100:900", "format": "json"})
    cells = np.array(body["cells"])
    assert status == 200 and cells.shape == (800, 1250) and (cells[:, 100:900] == np.eye(800)).all()
    assert cells.sum() == 800


def test_damaged_long_blobs_answer_422_and_the_rest_is_served(server):
    damaged = {**RUN, "run": "damaged"}
    for route, params in (("/long_rows", dict(layer=0, head=0, start=300, stop=310)), ("/long_map", dict(layer=0, level=0))):
        for _ in range(2):  # remembered as failed, still 422
            status, body = server.get(route, {**damaged, **params})
            assert status == 422 and "cannot read stored data" in body["error"], body
    status, body = server.get("/long_rows", {**damaged, "layer": 0, "head": 0, "start": 0, "stop": 10, "format": "json"})
    assert status == 200 and len(body["index"]) == 10, body  # the first chunk is whole
    status, body = server.get("/long_map", {**damaged, "layer": 0, "level": 1, "rows": "0:2", "format": "json"})
    assert status == 200 and len(body["cells"]) == 2, body


def test_an_export_refuses_a_long_example_naming_it_and_packs_the_others(logdir):
    from tb_attention.serve.export import ExportError, pack_logdir

    with pytest.raises(ExportError, match=r"example 0 is a long example \(group 'self'\).*--examples"):
        pack_logdir(logdir[0], runs=["long"])
    pack = pack_logdir(logdir[0], runs=["long"], examples=[1])
    assert "attention?example=1&layer=0&run=long&step=3&tag=probe" in pack


def test_random_long_requests_answer_200_or_a_named_4xx_and_never_fail_inside(server):
    """Random parameters on the long routes of a readable example: 200, 400 or 404 with a JSON error; a
    422 here ("cannot serve this request") would be a failure inside the route."""
    rng = random.Random(22)
    values = ["0", "1", "2", "3", "599", "600", "4097", "-1", "x", "", "1.5", "9223372036854775807", "99999999999999999999"]
    ranges = ["0:5", "5:0", "3:3", "0:300", "250:410", "0:601", "590:600", ":", "1:", "a:b", "0:9223372036854775807", "-1:2"]
    statuses = collections.Counter()
    for _ in range(300):
        route = rng.choice(["/long_map", "/long_rows", "/long_profile", "/attention"])
        params = dict(RUN)
        for name in ("layer", "level", "head", "start", "stop", "group", "format"):
            if rng.random() < 0.6:
                params[name] = {"group": lambda: rng.choice(["self", "cross", "nope"]),
                                "format": lambda: rng.choice(["json", "binary", "x"])}.get(name, lambda: rng.choice(values))()
        for name in ("rows", "cols", "window"):
            if rng.random() < 0.4:
                params[name] = rng.choice(ranges)
        status, body, headers = server.get(route, params, raw=True)
        statuses[status] += 1
        assert status in (200, 400, 404), (route, params, status, body[:300])
        if status != 200:
            assert headers["Content-Type"] == "application/json" and json.loads(body)["error"], (route, params)
    assert statuses[200] > 10 and statuses[400] > 50 and statuses[404] > 10, statuses
