"""Long examples' storage: the budget's plan, the rows, level and profile blobs, and damaged blobs refused."""

import gzip
import json
import struct

import numpy as np
import pytest

from tb_attention.storage import codecs, examples, schema
from tb_attention.storage.codecs import long
from tb_attention.storage.codecs.blob import compress, pack
from tests.support import long_reference as ref

MAX_ERR = codecs.MAX_QUANTIZATION_ERROR


# ---------------------------------------------------------------------------------------------
# The plan


def test_the_documented_budgets_give_the_documented_k_and_levels():
    small = long.plan(4, 8, 32768, 32768)
    assert (small.top_k, small.levels) == (16, ((64, 512, 512), (32, 1024, 1024)))
    assert small.stored_bytes() == 120 << 20  # http_api.md: ~120 MiB before compression
    big = long.plan(32, 32, 32768, 32768)
    assert (big.top_k, big.levels) == (1, ((128, 256, 256),))
    assert big.stored_bytes() == 224 << 20
    for p in (small, big):
        assert p.stored_bytes() <= p.budget and p.distance_bins == 17 and p.row_chunk == 4096 and p.sink_tokens == 4


def test_levels_halve_the_block_down_to_one_and_stop_at_the_budget():
    p = long.plan(1, 1, 600, 600, budget=1 << 30)
    assert [b for b, _, _ in p.levels] == [2, 1]  # 600 tokens: blocks of 2 give 300 cells a side, then 1
    assert p.levels[0][1:] == (300, 300) and p.levels[1][1:] == (600, 600)
    rect = long.plan(2, 3, 1000, 3000, budget=1 << 30)
    assert rect.levels[0] == (8, 125, 375)  # ceil(3000 / 8) = 375 <= 512 cells
    tight = long.plan(2, 2, 4096, 4096, budget=4 * (2 * 2 * 512 * 512) + 2 * 2 * 4096 * 16 * 5 * 2)
    assert [b for b, _, _ in tight.levels] == [8]  # the next level (4 x as many cells) passes a quarter of the budget


def test_a_budget_too_small_for_one_key_per_row_names_the_budget_that_works():
    with pytest.raises(ValueError, match=r"long_budget=(\d[\d,]*)") as e:
        long.plan(32, 32, 1 << 20, 1 << 20, budget=1 << 30)
    least = int(e.value.args[0].split("long_budget=")[1].split(" ")[0].replace(",", ""))
    assert long.plan(32, 32, 1 << 20, 1 << 20, budget=least).top_k == 1
    with pytest.raises(ValueError, match="long_budget"):
        long.plan(32, 32, 1 << 20, 1 << 20, budget=least - 1)


def test_the_plan_refuses_sizes_it_cannot_store():
    for args, name in (((0, 1, 10, 10), "num_layers"), ((1, 1, (1 << 20) + 1, 10), "num_queries"),
                       ((1, 1, 10, 10.5), "num_keys")):
        with pytest.raises(ValueError, match=name):
            long.plan(*args)
    with pytest.raises(ValueError, match="long_top_k"):
        long.plan(1, 1, 10, 10, top_k=0)
    with pytest.raises(ValueError, match="sink_tokens"):
        long.plan(1, 1, 10, 3, sink_tokens=4)


def test_distance_bins_cover_every_distance():
    for n in (1, 2, 3, 1023, 1024, 32768, 1 << 20):
        bins = long.distance_bins(n, n)
        assert bins == 2 + int(np.floor(np.log2(n)))
        edges = long.bin_edges(bins)
        assert edges[0] == [0, 1] and edges[-1][1] > n - 1 and all(a[1] == b[0] for a, b in zip(edges, edges[1:]))


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.fixture(scope="module")
def layer():
    a = ref.softmax_attention(3, 600, seed=1)
    p = long.plan(1, 3, 600, 600, budget=16 << 20, top_k=8)
    p = long.LongPlan(**{**p.__dict__, "row_chunk": 256})  # three chunks, the last shorter
    return a, p, ref.long_layer(a, p, causal=True)


def test_rows_round_trip_per_chunk_within_the_quantisation(layer):
    a, p, x = layer
    encoded = long.encode_layer(5, x, p)
    assert len(encoded.rows) == 3 and p.chunks() == [(0, 256), (256, 512), (512, 600)]
    for blob, (start, stop) in zip(encoded.rows, p.chunks()):
        rows = long.decode_rows(blob, layer=5, num_heads=3, start=start, stop=stop, top_k=8, num_keys=600)
        np.testing.assert_array_equal(rows.index, x.top_index[:, start:stop])
        assert np.abs(rows.weight - x.top_weight[:, start:stop]).max() <= MAX_ERR
        assert np.abs(codecs.dequantize(rows.remainder) - x.remainder[:, start:stop]).max() <= MAX_ERR
    first = long.decode_rows(encoded.rows[0], layer=5, num_heads=3, start=0, stop=256, top_k=8, num_keys=600)
    assert (first.index[:, 0, 1:] == long.UNUSED).all() and (first.codes[:, 0, 1:] == 0).all()  # query 0 sees one key
    np.testing.assert_array_equal(first.index[:, 0, 0], 0)


def test_levels_and_the_profile_round_trip(layer):
    a, p, x = layer
    encoded = long.encode_layer(0, x, p)
    assert p.levels == ((2, 300, 300), (1, 600, 600))
    for i, (blob, (block, rows, cols)) in enumerate(zip(encoded.levels, p.levels)):
        cells = long.decode_level(blob, layer=0, num_heads=3, level=i, block=block, rows=rows, cols=cols)
        assert np.abs(codecs.dequantize(cells) - x.levels[i]).max() <= MAX_ERR
    blob = long.profile_blob([encoded.profile, encoded.profile * 0.5], [encoded.sinks, encoded.sinks])
    profile, sinks = long.decode_profile(blob, num_layers=2, num_heads=3, distance_bins=p.distance_bins, sink_tokens=4)
    np.testing.assert_array_equal(profile[0], x.profile)  # float32, exact
    np.testing.assert_array_equal(profile[1], x.profile * np.float32(0.5))
    np.testing.assert_array_equal(sinks[1], x.sinks)
    np.testing.assert_allclose(profile[0].sum(-1), 1.0, atol=1e-5)  # every query's mass lies at some distance


def test_encode_layer_refuses_arrays_that_break_the_definitions(layer):
    a, p, x = layer

    def with_(**changes):
        return long.LongLayer(**{**x.__dict__, **changes})

    bad_index = x.top_index.copy()
    bad_index[1, 200, 2] = 600
    unsorted = x.top_weight.copy()
    unsorted[0, 50, :2] = unsorted[0, 50, 1::-1]
    padded_weight = x.top_weight.copy()
    padded_weight[0, 0, 3] = 0.1
    nan_profile = x.profile.copy()
    nan_profile[2, 3] = np.nan
    for changes, message in (
        (dict(top_index=bad_index), r"top_index\[1, 200, 2\] is 600, beyond the last of 600 keys"),
        (dict(top_weight=unsorted), "largest first"),
        (dict(top_weight=padded_weight), "unused top-k slot"),
        (dict(top_index=x.top_index[:, :, :4]), "expected uint32"),
        (dict(levels=x.levels[:1]), "1 levels given, the plan has"),
        (dict(profile=nan_profile), r"profile\[2, 3\] is nan"),
        (dict(remainder=x.remainder * 3), "remainder"),
    ):
        with pytest.raises(ValueError, match=message):
            long.encode_layer(0, with_(**changes), p)


# ---------------------------------------------------------------------------------------------
# Damaged blobs


def _raw(blob):
    return gzip.decompress(blob)


def test_damaged_or_mismatched_blobs_are_format_errors(layer):
    a, p, x = layer
    blob = long.encode_layer(2, x, p).rows[0]
    args = dict(layer=2, num_heads=3, start=0, stop=256, top_k=8, num_keys=600)
    raw = _raw(blob)
    cases = {
        "truncated gzip": blob[: len(blob) // 2],
        "not gzip": b"nonsense" * 10,
        "short payload": compress(raw[:-5]),
        "wrong magic": compress(b"TBAT" + raw[4:]),
    }
    for what, damaged in cases.items():
        with pytest.raises(schema.FormatError):
            long.decode_rows(damaged, **args)
            pytest.fail(f"a blob with a {what} was read")
    with pytest.raises(schema.NewerFormatError):
        long.decode_rows(compress(raw[:4] + struct.pack("<I", 2) + raw[8:]), **args)
    for name, value in (("layer", 3), ("start", 256), ("top_k", 4), ("num_heads", 2)):
        with pytest.raises(schema.FormatError, match=name):
            long.decode_rows(blob, **{**args, name: value})
    with pytest.raises(schema.FormatError, match="beyond the last of 100 keys"):
        long.decode_rows(blob, **{**args, "num_keys": 100})
    level = long.encode_layer(2, x, p).levels[0]
    with pytest.raises(schema.FormatError, match="holds 'level', expected the rows"):
        long.decode_rows(level, **args)
    bad_profile = compress(pack(long.LONG_MAGIC, {"kind": "profile", "num_layers": 1, "num_heads": 1, "distance_bins": 1,
                                                  "sink_tokens": 0}, [np.float32([np.inf]).tobytes()], version=1))
    with pytest.raises(schema.FormatError, match="not finite"):
        long.decode_profile(bad_profile, num_layers=1, num_heads=1, distance_bins=1, sink_tokens=0)


def test_served_frames_carry_the_long_version_and_their_magic():
    body = long.map_answer({"level": 0}, np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert body[:4] == b"TBLM" and struct.unpack_from("<II", body, 4) == (1, (len(body) - 6) - 12)
    assert (12 + struct.unpack_from("<I", body, 8)[0]) % 8 == 0 and body[-6:] == bytes(range(6))
    rows = long.rows_answer({"start": 0}, np.array([[1, long.UNUSED]], dtype=np.uint32), np.uint8([[9, 0]]), np.uint8([4]))
    assert rows[:4] == b"TBLR" and rows[-11:] == struct.pack("<II", 1, long.UNUSED) + bytes([9, 0, 4])


# ---------------------------------------------------------------------------------------------
# The writer and the manifest


def _long_step(layer, **spec):
    a, p, x = layer
    tokens = [f"t{i}" for i in range(600)]
    group = {"name": "self", "causal": True, "long": {"plan": p, "layers": [x]}, **spec}
    return examples.encode_step([{"tokens": tokens, "groups": [group]}, {"tokens": ["a", "b"], "attention":
                                 ref.softmax_attention(1, 2)[None]}])


def test_the_writer_lays_out_a_long_group_and_the_manifest_says_where(layer):
    a, p, x = layer
    (records,) = _long_step(layer)
    manifest = codecs.decode_manifest(records[0])
    g = manifest["examples"][0]["groups"][0]
    assert (g["encoding"], g["long"], g["long_rows"], g["long_levels"], g["long_profile"]) == (
        "long", p.entry(), [[1, 2, 3]], [[4, 5]], 6)
    assert manifest["examples"][1]["groups"][0]["attention_blobs"] == [7]
    rows = long.decode_rows(records[2], layer=0, num_heads=3, start=256, stop=512, top_k=8, num_keys=600)
    np.testing.assert_array_equal(rows.index, x.top_index[:, 256:512])
    assert schema.group_payload(g)["long"] == p.entry() and "long_rows" not in schema.group_payload(g)


def test_the_manifest_check_refuses_a_long_group_that_disagrees_with_its_sizes(layer):
    (records,) = _long_step(layer)
    good = codecs.decode_json(records[0])
    for path, value, message in (
        (("long", "distance_bins"), 9, "distance_bins = 9"),
        (("long", "levels", 1, "block"), 3, "block 3"),
        (("long", "levels", 0, "rows"), 299, "299 x 300 cells"),
        (("long", "top_k"), 0, "top_k = 0"),
        (("long_rows", 0), [1, 2], "long_rows is not 3 blob references"),
        (("long_profile",), None, "long_profile"),
        (("num_tokens",), 1 << 21, "num_tokens = 2097152"),
    ):
        manifest = json.loads(json.dumps(good))
        target = manifest["examples"][0]["groups"][0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        parsed = schema.parse_manifest(manifest)
        assert message in parsed["examples"][0]["error"] and "error" not in parsed["examples"][1]
    big = json.loads(json.dumps(good))
    dense = big["examples"][1]["groups"][0]
    dense.update(num_tokens=70000, num_key_tokens=70000, tokens=["x"] * 70000, key_tokens=["x"] * 70000)
    assert "from 1 to 65,535" in schema.parse_manifest(big)["examples"][1]["error"]  # the bound of other groups stays


def test_the_writer_refuses_long_groups_that_do_not_match_their_plan(layer):
    a, p, x = layer
    encoded = long.encode_layer(1, x, p)  # encoded as layer 1, given as layer 0
    for spec, message in (
        ({"long": {"plan": long.plan(1, 3, 500, 500), "layers": [x]}}, "the plan is for 1 layers x 500 queries"),
        ({"long": {"plan": p, "layers": [encoded]}}, "says {'layer': 1}"),
        ({"long": {"plan": p, "layers": [x]}, "attention": a[None]}, "stores no attention"),
        ({"long": {"plan": p, "layers": [a]}}, "not a LongLayer or EncodedLongLayer"),
        ({"long": [x]}, "long must be"),
    ):
        with pytest.raises((ValueError, TypeError), match=message):
            _long_step(layer, **spec)
