"""The storage format: quantisation error, size budget, encodings, versions."""

import gzip

import numpy as np
import pytest

from tb_attention import metadata
from tests.support.data import random_attention


def test_causal_example_round_trips_within_documented_error(rng):
    attention = random_attention(rng, 12, 12, 128, causal=True)
    tokens = [f"tok{i}" for i in range(128)]
    example = metadata.decode_attention(metadata.encode_attention(attention, tokens))
    assert example.header["encoding"] == metadata.ENCODING_CAUSAL
    assert example.attention.shape == (12, 12, 128, 128)
    error = np.abs(example.attention - attention)
    assert error.max() <= metadata.MAX_QUANTIZATION_ERROR
    assert np.all(example.attention[:, :, np.triu_indices(128, 1)[0], np.triu_indices(128, 1)[1]] == 0)


def test_relative_error_of_small_weights_is_bounded(rng):
    attention = random_attention(rng, 2, 2, 64, causal=False, sharpness=1.0)
    decoded = metadata.decode_attention(metadata.encode_attention(attention, ["t"] * 64)).attention
    big = attention >= 0.01
    relative = np.abs(decoded[big] - attention[big]) / attention[big]
    # |sqrt(a) - sqrt(a')| <= 1/510  =>  |a - a'| / a <= (2 sqrt(a) + 1/510) / (510 a)
    bound = (2 * np.sqrt(attention[big]) + 1 / 510) / (510 * attention[big])
    assert np.all(relative <= bound + 1e-6)
    assert relative.max() < 0.05


@pytest.mark.parametrize("sharpness", [0.05, 1.0, 3.0, 8.0])
def test_causal_12x12x128_costs_at_most_half_a_byte_per_value(rng, sharpness):
    # From nearly uniform rows (a randomly initialised model) to peaked ones (a trained model).
    attention = random_attention(rng, 12, 12, 128, causal=True, sharpness=sharpness)
    blob = metadata.encode_attention(attention, [str(i) for i in range(128)])
    assert len(blob) / attention.size <= 0.5


def test_bidirectional_example_is_stored_dense(rng):
    attention = random_attention(rng, 2, 3, 10, causal=False)
    example = metadata.decode_attention(metadata.encode_attention(attention, list("abcdefghij")))
    assert example.header["encoding"] == metadata.ENCODING_DENSE
    assert example.header["causal"] is False
    assert np.abs(example.attention - attention).max() <= metadata.MAX_QUANTIZATION_ERROR


def test_tokens_and_fields_are_stored_exactly():
    tokens = ["<|endoftext|>", "Ġcafé", "ñ", "😀", "<img src=x onerror=alert(1)>", "", " ", "\u200b", "中文"]
    n = len(tokens)
    attention = np.full((1, 1, n, n), 1.0 / n, dtype=np.float32)
    example = metadata.decode_attention(
        metadata.encode_attention(attention, tokens, text="x y", segments=[4], pos=[None] * n)
    )
    assert example.tokens == tokens
    assert example.header["segments"] == [4]
    assert example.header["text"] == "x y"


def test_long_inputs_keep_the_top_k_weights_of_each_row(rng):
    n = 600
    attention = random_attention(rng, 1, 2, n, causal=True)
    example = metadata.decode_attention(metadata.encode_attention(attention, ["t"] * n, max_dense_tokens=512, top_k=8))
    assert example.header["encoding"] == metadata.ENCODING_TOPK
    kept = (example.attention > 0).sum(-1)
    assert kept.max() <= 8
    for head in range(2):
        for row in (0, 3, 300, 599):
            truth = np.sort(attention[0, head, row])[::-1][: min(8, row + 1)]
            stored = np.sort(example.attention[0, head, row])[::-1][: min(8, row + 1)]
            assert np.abs(stored - truth).max() <= metadata.MAX_QUANTIZATION_ERROR
    assert np.all(example.attention[:, :, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] == 0)


def test_query_and_key_are_float16_where_it_keeps_the_logits_else_float32(rng):
    import torch

    from tb_attention.storage import codecs
    from tb_attention.storage.codecs import blob as framing

    small = rng.normal(size=(3, 6, 7, 16)).astype(np.float32) * 0.05  # logits near 0: float16 moves them < 5e-4
    key = rng.normal(size=(3, 2, 7, 16)).astype(np.float32)
    qk = metadata.decode_qk(metadata.encode_qk(small, key, [0.25, 0.25, 0.125]))
    assert qk.dtype == qk.header["dtype"] == "float16"
    assert np.array_equal(qk.query, small.astype(np.float16).astype(np.float32))
    assert qk.scaling == [0.25, 0.25, 0.125] and qk.header["num_kv_heads"] == 2
    large = rng.normal(size=(3, 6, 7, 16)).astype(np.float32) * 4  # logits of ~4: float16 would move them ~1e-3
    qk = metadata.decode_qk(metadata.encode_qk(large, key, [0.25, 0.25, 0.125]))
    assert qk.dtype == "float32" and np.array_equal(qk.query, large) and np.array_equal(qk.key, key)  # exact
    # The choice is made on the logits, so the scaling counts, and torch (on its device) chooses as numpy does.
    assert metadata.decode_qk(metadata.encode_qk(large, key, 1e-4)).dtype == "float16"
    assert metadata.decode_qk(metadata.encode_qk(torch.from_numpy(large), torch.from_numpy(key), 0.25)).dtype == "float32"
    assert metadata.decode_qk(metadata.encode_qk(torch.from_numpy(small), torch.from_numpy(key), 0.25)).dtype == "float16"
    # One layer of a blob and the layers joined keep what was stored: float16 values are float32 values too.
    mixed = [metadata.encode_qk_layer(q[i], key[i], 0.25, layer=i) for i, q in enumerate((small, large, small))]
    assert [metadata.decode_qk(b).dtype for b in mixed] == ["float16", "float32", "float16"]
    joined = metadata.decode_qk(codecs.join_qk_layers(mixed))
    assert joined.dtype == "float32"
    assert np.array_equal(joined.query[1], large[1]) and np.array_equal(joined.query[0], small[0].astype(np.float16).astype(np.float32))
    assert [metadata.decode_qk(codecs.qk_layer_blob(codecs.join_qk_layers(mixed), i)).dtype for i in range(3)] == ["float32"] * 3
    with pytest.raises(ValueError, match="dtype must be one of float16, float32"):
        metadata.encode_qk(small, key, 0.25, dtype="bfloat16")
    # A blob written before the header named its dtype holds float16.
    header, payload = framing.unpack(gzip.decompress(metadata.encode_qk(small, key, 0.25, dtype="float16")), framing.QK_MAGIC)
    del header["dtype"]
    older = framing.compress(framing.pack(framing.QK_MAGIC, header, [bytes(payload)]))
    assert codecs.check_qk_blob(older) == header
    assert metadata.decode_qk(older).dtype == "float16"
    assert np.array_equal(metadata.decode_qk(older).query, small.astype(np.float16).astype(np.float32))
    header["dtype"] = "float32"  # claims twice the bytes it has
    with pytest.raises(metadata.FormatError, match="payload does not match its header"):
        codecs.check_qk_blob(framing.compress(framing.pack(framing.QK_MAGIC, header, [bytes(payload)])))


def test_scoring_rules_are_stored_per_layer_and_only_where_used(rng):
    query, key = rng.normal(size=(2, 4, 5, 8)), rng.normal(size=(2, 2, 5, 8))
    sinks = [None, np.array([0.5, 1.0, -1.0, 2.0], dtype=np.float32)]
    qk = metadata.decode_qk(metadata.encode_qk(query, key, 0.3, softcap=[50.0, 50.0], sliding_window=[4, None], sinks=sinks))
    assert qk.rule("softcap") == [50.0, 50.0]
    assert qk.rule("sliding_window") == [4, None]
    assert qk.rule("sinks") == [None, [0.5, 1.0, -1.0, 2.0]]
    plain = metadata.decode_qk(metadata.encode_qk(query, key, 0.3, softcap=[None, None]))
    assert not set(metadata.SCORING_RULES) & set(plain.header)  # nothing stored for a plain model
    assert plain.rule("softcap") == [None, None]


def test_bias_and_chunk_rules_keep_their_float32_tables_per_head(rng):
    query, key = rng.normal(size=(2, 4, 5, 8)), rng.normal(size=(2, 2, 6, 8))
    key_bias = rng.normal(size=(4, 6)).astype(np.float32) * 100  # ALiBi: per head, per key
    relative = rng.normal(size=(4, 5 + 6 - 1)).astype(np.float32)  # T5: per head, per j - i
    blob = metadata.encode_qk(query, key, 0.3, attention_chunk=[None, 3], key_bias=[key_bias, None],
                              relative_bias=[None, relative])
    qk = metadata.decode_qk(blob)
    assert qk.rule("attention_chunk") == [None, 3]
    assert np.array_equal(np.array(qk.rule("key_bias")[0], dtype=np.float32), key_bias)  # exact
    assert np.array_equal(np.array(qk.rule("relative_bias")[1], dtype=np.float32), relative)
    one = metadata.decode_qk(codecs.qk_layer_blob(blob, 1))
    assert one.rule("key_bias") == [None] and one.rule("attention_chunk") == [3]
    joined = metadata.decode_qk(codecs.join_qk_layers([codecs.qk_layer_blob(blob, 0), codecs.qk_layer_blob(blob, 1)]))
    assert {name: joined.rule(name) for name in metadata.SCORING_RULES} == {name: qk.rule(name) for name in metadata.SCORING_RULES}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"softcap": [30.0]}, r"softcap must have one entry per layer \(2\)"),
        ({"softcap": [30.0, -1.0]}, "softcap of layer 1 must be a positive number or None, got -1.0"),
        ({"softcap": [float("nan"), None]}, "softcap of layer 0 must be a positive number"),
        ({"sliding_window": [4.5, None]}, "sliding_window of layer 0 must be a positive integer or None"),
        ({"sliding_window": ["wide", None]}, "sliding_window of layer 0 must be a positive integer"),
        ({"sinks": [[1.0, 2.0], None]}, "sinks of layer 0 must be 4 finite numbers, one per head"),
        ({"sinks": [None, [1.0, 2.0, np.inf, 0.0]]}, "sinks of layer 1 must be 4 finite numbers"),
        ({"attention_chunk": [0, None]}, "attention_chunk of layer 0 must be a positive integer or None"),
        ({"key_bias": [np.zeros((4, 4)), None]}, r"key_bias of layer 0 must be \[4, 5\] finite numbers \(heads, offsets\), got shape \[4, 4\]"),
        ({"relative_bias": [None, np.zeros((4, 5))]}, r"relative_bias of layer 1 must be \[4, 9\] finite numbers"),
        ({"relative_bias": [[[1.0], [2.0, 3.0]], None]}, "relative_bias of layer 0 must be"),
        ({"key_bias": [None, np.full((4, 5), np.nan)]}, "key_bias of layer 1 must be"),
    ],
)
def test_bad_scoring_rules_are_named(rng, rules, message):
    with pytest.raises(ValueError, match=message):
        metadata.encode_qk(rng.normal(size=(2, 4, 5, 8)), rng.normal(size=(2, 2, 5, 8)), 0.3, **rules)


def test_query_heads_must_be_a_multiple_of_key_heads(rng):
    with pytest.raises(ValueError, match="multiple of 4 key heads"):
        metadata.encode_qk(np.zeros((1, 6, 2, 4)), np.zeros((1, 4, 2, 4)), 1.0)


def test_plugin_data_of_a_newer_version_is_refused_with_a_clear_message():
    content = b'{"version": 99, "kind": "attention"}'
    with pytest.raises(metadata.NewerFormatError, match="newer tb-attention.*v99"):
        metadata.parse_plugin_data(content)
    assert metadata.parse_plugin_data(metadata.create_plugin_data("metric", probe="p", metric="entropy")) == {
        "version": metadata.FORMAT_VERSION, "kind": "metric", "probe": "p", "metric": "entropy",
    }


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"not gzip", "not valid gzip"),
        (gzip.compress(b"XXXX\x01\x00\x00\x00\x00\x00\x00\x00"), "expected b'TBAT'"),
        (gzip.compress(b"TBAT\x63\x00\x00\x00\x00\x00\x00\x00"), "v99"),
        (gzip.compress(b"TBAT\x01\x00\x00\x00\xff\x00\x00\x00{}"), "runs past its end"),
    ],
)
def test_corrupt_blobs_raise_format_errors(blob, message):
    with pytest.raises(metadata.FormatError, match=message):
        metadata.decode_attention(blob)


def test_truncated_payload_is_a_format_error(rng):
    blob = metadata.encode_attention(random_attention(rng, 2, 2, 8), ["t"] * 8)
    raw = gzip.decompress(blob)
    with pytest.raises(metadata.FormatError, match="does not match its header"):
        metadata.decode_attention(gzip.compress(raw[:-10]))


def test_metric_names():
    assert metadata.metric_tag("probe", "pos/NOUN") == "probe/pos/NOUN"
    assert all(metadata.is_known_metric(m) for m in metadata.METRICS)
    assert metadata.is_known_metric("pos_from/VERB")
    assert not metadata.is_known_metric("pos/")
    assert not metadata.is_known_metric("loss")


# ---------------------------------------------------------------------------------------------
# Format v2: per-layer blobs, rectangular attention, the per-layer encoder on numpy and torch

from tb_attention.storage import codecs, schema  # noqa: E402


def _devices():
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize(
    "shape, causal, options",
    [((3, 20, 20), True, {}), ((3, 20, 20), False, {}), ((3, 20, 20), True, {"max_dense_tokens": 8, "top_k": 5}),
     ((3, 20, 20), False, {"max_dense_tokens": 8, "top_k": 5}), ((3, 6, 11), False, {}),
     ((3, 6, 40), False, {"max_dense_tokens": 8, "top_k": 7})],
)
def test_the_per_layer_encoder_gives_the_full_encoders_bytes_on_numpy_and_torch(rng, device, shape, causal, options):
    import torch

    heads, nq, nk = shape
    layers = []
    for _ in range(2):
        scores = rng.normal(size=shape) * 3
        if causal:
            scores = np.where(np.triu(np.ones((nq, nk), dtype=bool), 1), -np.inf, scores)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        layers.append((e / e.sum(-1, keepdims=True)).astype(np.float32))
    layers[1][0, 3, 1:3] = layers[1][0, 3, 1:3].mean()  # a tie: the smaller key index wins, on every path
    tokens, keys = [f"q{i}" for i in range(nq)], [f"k{j}" for j in range(nk)]
    full = codecs.encode_attention(np.stack(layers), tokens, keys, causal=causal, **options)
    for layer, weights in enumerate(layers):
        host = codecs.encode_attention_layer(weights, tokens, keys, layer=layer, causal=causal, **options)
        tensor = torch.from_numpy(weights).to(device, torch.bfloat16).float()  # as a model hands it over
        on_device = codecs.encode_attention_layer(tensor, tokens, keys, layer=layer, causal=causal, **options)
        assert on_device.blob == codecs.encode_attention_layer(tensor.cpu().numpy(), tokens, keys, layer=layer,
                                                                causal=causal, **options).blob
        assert codecs.attention_layer_blob(full, layer) == host.blob
    joined, header = codecs.join_attention_layers(
        [codecs.encode_attention_layer(w, tokens, keys, layer=i, causal=causal, **options).blob for i, w in enumerate(layers)]
    )
    assert joined == full and header["num_key_tokens"] == nk
    decoded = codecs.decode_attention(full).attention
    if "top_k" not in options:
        assert decoded.shape == (2, *shape) and np.abs(decoded - np.stack(layers)).max() <= codecs.MAX_QUANTIZATION_ERROR
    else:  # each row keeps its top k, largest first, ties to the smaller index
        k = min(options["top_k"], nk)
        assert ((decoded > 0).sum(-1) <= k).all()
        row = np.stack(layers)[1, 0, 3]
        kept = np.flatnonzero(decoded[1, 0, 3])
        best = np.argsort(-np.round(np.sqrt(row) * 255), kind="stable")[:k]
        assert set(kept) == set(best[np.round(np.sqrt(row[best]) * 255) > 0]) or len(kept) == k


@pytest.mark.parametrize("device", _devices())
def test_the_per_layer_qk_encoder_gives_the_full_encoders_layer(rng, device):
    import torch

    query, key = rng.normal(size=(2, 4, 5, 3)).astype(np.float32), rng.normal(size=(2, 2, 7, 3)).astype(np.float32)
    full = codecs.encode_qk(query, key, [0.5, 0.25], softcap=[None, 30.0], sinks=[None, [0.1, 0.2, 0.3, 0.4]])
    layer = codecs.encode_qk_layer(torch.from_numpy(query[1]).to(device), torch.from_numpy(key[1]).to(device), 0.25,
                                   layer=1, softcap=30.0, sinks=torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert codecs.qk_layer_blob(full, 1) == layer
    qk = codecs.decode_qk(codecs.join_qk_layers([codecs.qk_layer_blob(full, 0), layer]))
    assert qk.key.shape == (2, 2, 7, 3) and qk.rule("softcap") == [None, 30.0] and qk.scaling == [0.5, 0.25]
    assert np.abs(qk.query - query).max() < 2e-3


def test_causal_attention_must_be_square(rng):
    with pytest.raises(ValueError, match="causal attention must be square"):
        codecs.encode_attention_layer(np.full((1, 2, 3), 1 / 3, np.float32), ["a", "b"], ["x", "y", "z"], causal=True)


def test_metric_names_of_the_contract_are_known():
    for name in ("max_logit", "attention_entropy", "max_weight", "pixel_distance", "prefix_attention",
                 "diagonal_alignment", "null_attention", "pos/NOUN", "pos_from/VERB"):
        assert metadata.is_known_metric(name), name
    assert not metadata.is_known_metric("pos/") and not metadata.is_known_metric("loss")
    assert schema.metric_tag("probe", "entropy", "cross") == "probe/cross/entropy"
    with pytest.raises(ValueError, match="group name"):
        schema.check_group_name("Cross/x")


def test_a_v1_manifest_reads_as_one_group_named_self():
    v1 = metadata.encode_json({"version": 1, "examples": [
        {"tokens": ["a", "b"], "num_layers": 1, "num_heads": 1, "num_tokens": 2, "causal": True, "encoding": "causal",
         "has_qk": True, "attention_blob": 1, "qk_blob": 2, "text": "a b"}]})
    (example,) = metadata.decode_manifest(v1)["examples"]
    (group,) = example["groups"]
    assert (group["name"], group["key_tokens"], group["attention_blob"], group["qk_blob"]) == ("self", ["a", "b"], 1, 2)
    payload = schema.example_payload(example)
    assert payload["text"] == "a b" and payload["groups"][0]["num_key_tokens"] == 2 and payload["image"] is None


def test_tags_entries_name_their_fields_rather_than_copy_stored_plugin_data():
    content = metadata.parse_plugin_data(metadata.create_plugin_data(
        metadata.KIND_METRIC, probe="probe", metric="entropy", group="cross", internal={"x": 1}))
    entry = schema.tag_payload(content, [0, 5], [1.0, 2.0], description="d")
    assert entry == {"kind": "metric", "probe": "probe", "metric": "entropy", "group": "cross", "description": "d",
                     "steps": [0, 5], "wall_times": [1.0, 2.0]}
    part = metadata.parse_plugin_data(metadata.create_plugin_data(metadata.KIND_ATTENTION_PART, part=1))
    assert schema.tag_payload(part, [], [])["kind"] == "unsupported"  # /tags never lists parts anyway
