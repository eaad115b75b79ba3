"""Writing attention: both writer kinds, HF-style inputs, validation, ranks."""

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from tb_attention import Writer, metadata
from tb_attention.storage import summary
from tests.support.data import random_attention
from tests.support.tensorboard import python_provider, read_examples, request_context

UNICODE_TOKENS = ["<|endoftext|>", "Ġcafé", "Zürich", "–", "😀", "中文", "<b>x</b>"]


def per_layer(attention):
    """[L, H, N, N] -> HF-style tuple of [1, H, N, N] tensors."""
    return tuple(torch.from_numpy(layer)[None] for layer in attention)


@pytest.mark.parametrize("writer_kind", ["torch", "standalone"])
def test_round_trip_with_unicode_tokens(tmp_path, rng, writer_kind):
    attention = random_attention(rng, 3, 4, len(UNICODE_TOKENS))
    writer = SummaryWriter(tmp_path / "run") if writer_kind == "torch" else Writer(tmp_path / "run")
    for step in (0, 10):
        summary.attention(writer, "probe", per_layer(attention), [UNICODE_TOKENS], step, text="café")
    writer.close()
    provider = python_provider(tmp_path)
    (entry, example, qk), = read_examples(provider, "run", "probe", 10)
    assert example.tokens == UNICODE_TOKENS
    assert entry["tokens"] == UNICODE_TOKENS and entry["text"] == "café"
    assert np.abs(example.attention - attention).max() <= metadata.MAX_QUANTIZATION_ERROR
    assert qk is None


def test_torch_summary_writer_gets_one_event_file(tmp_path, rng):
    writer = SummaryWriter(tmp_path)
    writer.add_scalar("loss", 1.0, 0)
    summary.attention(writer, "probe", random_attention(rng, 1, 2, 3), list("abc"), 0)
    writer.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_batch_with_padding_is_unpadded_per_input(tmp_path, rng):
    a = random_attention(rng, 2, 2, 3)
    b = random_attention(rng, 2, 2, 5)
    batch = np.zeros((2, 2, 2, 5, 5), dtype=np.float32)  # [B, L, H, N, N], right padding for input 0
    batch[0, :, :, :3, :3] = a
    batch[1] = b
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with Writer(tmp_path / "run") as writer:
        count = summary.attention(writer, "probe", batch, [list("abc"), list("vwxyz")], 0, attention_mask=mask)
    assert count == 2
    examples = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert [e.tokens for _, e, _ in examples] == [list("abc"), list("vwxyz")]
    assert np.abs(examples[0][1].attention - a).max() <= metadata.MAX_QUANTIZATION_ERROR
    assert np.abs(examples[1][1].attention - b).max() <= metadata.MAX_QUANTIZATION_ERROR


def test_query_and_key_are_stored_when_given(tmp_path, rng):
    attention = random_attention(rng, 2, 4, 5)
    query, key = rng.normal(size=(2, 4, 5, 8)), rng.normal(size=(2, 2, 5, 8))
    with Writer(tmp_path / "run") as writer:
        summary.attention(writer, "probe", attention, list("abcde"), 3, query=query, key=key, scaling=[0.5, 0.5])
    (entry, _, qk), = read_examples(python_provider(tmp_path), "run", "probe", 3)
    assert entry["has_qk"] is True
    assert np.allclose(qk.query, query, atol=2e-3) and np.allclose(qk.key, key, atol=2e-3)
    assert qk.scaling == [0.5, 0.5]


def test_scoring_rules_are_stored_with_query_and_key_and_refused_without(tmp_path, rng):
    attention = random_attention(rng, 2, 4, 5)
    query, key = rng.normal(size=(2, 4, 5, 8)), rng.normal(size=(2, 2, 5, 8))
    with Writer(tmp_path / "run") as writer:
        summary.attention(writer, "probe", attention, list("abcde"), 0, query=query, key=key, scaling=[0.5, 0.5],
                          softcap=[20.0, 20.0], sliding_window=[None, 3])
        with pytest.raises(ValueError, match="softcap, sliding_window and sinks describe query/key"):
            summary.attention(writer, "probe", attention, list("abcde"), 1, softcap=[20.0, 20.0])
    (_, _, qk), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert qk.rule("softcap") == [20.0, 20.0] and qk.rule("sliding_window") == [None, 3] and qk.rule("sinks") == [None, None]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensors_are_accepted(tmp_path, rng, dtype):
    attention = torch.from_numpy(random_attention(rng, 2, 2, 6)).to(dtype)
    with Writer(tmp_path / "run") as writer:
        summary.attention(writer, "probe", attention, list("abcdef"), 0)
    (_, example, _), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert np.abs(example.attention - attention.float().numpy()).max() <= metadata.MAX_QUANTIZATION_ERROR


def _bad(rng):
    good = random_attention(rng, 2, 2, 4)
    nan = good.copy()
    nan[1, 0, 2, 1] = np.nan
    negative = good.copy()
    negative[0, 1, 3, 0] = -0.1
    unnormalised = good * 0.5
    return good, nan, negative, unnormalised


@pytest.mark.parametrize(
    "case, message",
    [
        ("nan", r"NaN or infinite weights .*layer 1, head 0, query 2, key 1"),
        ("negative", r"negative weights .*layer 0, head 1, query 3, key 0"),
        ("rows", r"rows must sum to 1: layer 0, head 0, query 0 sums to 0.5000 .* or check_rows=False for attention"),
        ("tokens", r"3 tokens given for attention over 4 tokens"),
        ("empty", r"attention has no layers"),
        ("shapes", r"read as one tensor per layer .* different shapes \(item 0: \[2, 4, 4\], item 1: \[2, 3, 3\]\)"),
        ("per_input", r"read as 3 per-layer tensors \[B, H, N, N\] of a batch of 2 inputs .* got 3 items: if you "
                      r"passed one \[layers, heads, N, N\] array per input, log each input with its own call"),
        ("scores", r"weights above 1"),
    ],
)
def test_bad_attention_is_refused_with_a_message_naming_the_problem(tmp_path, rng, case, message):
    good, nan, negative, unnormalised = _bad(rng)
    args = {
        "nan": (nan, list("abcd")),
        "negative": (negative, list("abcd")),
        "rows": (unnormalised, list("abcd")),
        "tokens": (good, list("abc")),
        "empty": ((), []),
        "shapes": ((good[0], good[1][:, :3, :3]), list("abcd")),
        # three inputs' [layers=2, heads, 4, 4] arrays: read as per-layer tensors, the message says so
        "per_input": ((good, good, good), [list("abcd")] * 3),
        "scores": (good * 3, list("abcd")),
    }[case]
    with Writer(tmp_path / "run") as writer, pytest.raises(ValueError, match=message):
        summary.attention(writer, "probe", *args, 0)
    assert read_examples_or_none(tmp_path) is None


def read_examples_or_none(logdir):
    provider = python_provider(logdir)
    listing = provider.list_blob_sequences(request_context(), experiment_id="", plugin_name="attention")
    return listing or None


def test_rows_check_can_be_turned_off_for_non_softmax_attention(tmp_path, rng):
    half = random_attention(rng, 1, 1, 4) * 0.5
    with Writer(tmp_path / "run") as writer:
        summary.attention(writer, "probe", half, list("abcd"), 0, check_rows=False)
    (_, example, _), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert np.abs(example.attention - half).max() <= metadata.MAX_QUANTIZATION_ERROR


def test_rows_of_a_layer_with_attention_sinks_sum_to_at_most_one(tmp_path, rng):
    half = random_attention(rng, 2, 2, 4) * 0.5  # the sinks took half of every row
    q, k = rng.standard_normal((2, 2, 4, 8)).astype(np.float32), rng.standard_normal((2, 2, 4, 8)).astype(np.float32)
    with Writer(tmp_path / "run") as writer:
        summary.attention(writer, "probe", half, list("abcd"), 0, query=q, key=k, scaling=0.35, sinks=[[1.0, 2.0]] * 2)
        with pytest.raises(ValueError, match=r"rows must sum to 1: layer 1, head 0, query 0 sums to 0.5"):
            summary.attention(writer, "probe", half, list("abcd"), 1, query=q, key=k, scaling=0.35,
                              sinks=[[1.0, 2.0], None])  # layer 1 has none: its rows must still sum to 1
        with pytest.raises(ValueError, match=r"rows must sum to at most 1 \(a layer with attention sinks\)"):
            summary.attention(writer, "probe", np.full((2, 2, 4, 4), 0.3, np.float32), list("abcd"), 2, query=q, key=k, scaling=0.35,
                              sinks=[[1.0, 2.0]] * 2)
    (_, example, qk), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert np.abs(example.attention - half).max() <= metadata.MAX_QUANTIZATION_ERROR
    assert qk.rule("sinks") == [[1.0, 2.0]] * 2


def test_long_input_switches_to_sparse_storage_with_a_warning(tmp_path, rng):
    attention = random_attention(rng, 1, 2, 40)
    with Writer(tmp_path / "run") as writer, pytest.warns(UserWarning, match="40 tokens .*top 5 weights"):
        summary.attention(writer, "probe", attention, ["t"] * 40, 0, max_dense_tokens=32, top_k=5)
    (entry, example, _), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert entry["encoding"] == "topk"
    assert (example.attention > 0).sum(-1).max() == 5


def test_only_rank_zero_writes_unless_asked(tmp_path, rng, monkeypatch):
    attention = random_attention(rng, 1, 1, 2)
    monkeypatch.setenv("RANK", "1")
    with Writer(tmp_path / "rank1") as writer:
        assert summary.attention(writer, "probe", attention, list("ab"), 0) == 0
        assert summary.metrics(writer, "probe", {"entropy": np.zeros((1, 1))}, 0) == 0
        assert summary.attention(writer, "forced", attention, list("ab"), 0, all_ranks=True) == 1
    listing = python_provider(tmp_path).list_blob_sequences(request_context(), experiment_id="", plugin_name="attention")
    assert set(listing["rank1"]) == {"forced"}


def test_metrics_are_float32_layer_by_head_tensors(tmp_path):
    values = {"entropy": np.arange(6).reshape(2, 3), "pos/NOUN": np.full((2, 3), np.nan)}
    with Writer(tmp_path / "run") as writer:
        summary.metrics(writer, "probe", values, 7)
    provider = python_provider(tmp_path)
    data = provider.read_tensors(request_context(), experiment_id="", plugin_name="attention", downsample=100)["run"]
    assert set(data) == {"probe/entropy", "probe/pos/NOUN"}
    (datum,) = data["probe/entropy"]
    assert datum.step == 7 and datum.numpy.dtype == np.float32
    assert datum.numpy.tolist() == [[0, 1, 2], [3, 4, 5]]
    listing = provider.list_tensors(request_context(), experiment_id="", plugin_name="attention")["run"]
    assert metadata.parse_plugin_data(listing["probe/pos/NOUN"].plugin_content)["metric"] == "pos/NOUN"


def test_unknown_metric_names_are_refused(tmp_path):
    with Writer(tmp_path / "run") as writer, pytest.raises(ValueError, match="unknown metric 'loss'"):
        summary.metrics(writer, "probe", {"loss": np.zeros((1, 1))}, 0)


def test_writer_must_be_a_summary_writer(rng):
    with pytest.raises(TypeError, match="SummaryWriter or a tb_attention.Writer, got str"):
        summary.attention("runs/x", "probe", random_attention(rng, 1, 1, 2), list("ab"), 0)


# ---------------------------------------------------------------------------------------------
# Format v2 through the writer

from tb_attention.storage import codecs  # noqa: E402
from tb_attention.storage import examples as tb_examples  # noqa: E402


def test_encoded_layers_are_stored_as_the_writer_would_store_the_weights(rng):
    attention = random_attention(rng, 3, 2, 6)
    tokens = list("abcdef")
    raw = summary.encode_step([{"attention": attention, "tokens": tokens}])
    layers = [codecs.encode_attention_layer(a, tokens, layer=i, causal=True) for i, a in enumerate(attention)]
    streamed = summary.encode_step([{"groups": [{"name": "self", "attention": layers}], "tokens": tokens}])
    assert raw == streamed


def test_encoded_layers_must_be_in_order(rng):
    attention = random_attention(rng, 2, 2, 3)
    layers = [codecs.encode_attention_layer(a, list("abc"), layer=i, causal=True) for i, a in enumerate(attention)]
    with pytest.raises(ValueError, match="encoded layer 0 was encoded for other tokens or as layer 1"):
        summary.encode_step([{"groups": [{"name": "self", "attention": layers[::-1]}], "tokens": list("abc")}])


def test_a_large_step_is_spread_over_records_within_the_budget(rng):
    attention = random_attention(rng, 6, 2, 40)
    records = summary.encode_step([{"attention": attention, "tokens": [str(i) for i in range(40)]}], record_bytes=2500)
    assert len(records) > 2
    assert all(sum(map(len, r)) <= 2500 or len(r) == 1 for r in records)
    manifest = metadata.decode_manifest(records[0][0])
    assert manifest["parts"] == [len(records[0]), *(len(r) for r in records[1:])]


def test_a_layer_too_large_for_a_blob_is_refused(rng, monkeypatch):
    monkeypatch.setattr(tb_examples, "MAX_BLOB_BYTES", 100)
    with pytest.raises(ValueError, match="layer 0 takes 0 MiB, more than the 0 MiB a blob may hold"):
        summary.encode_step([{"attention": random_attention(rng, 1, 2, 30), "tokens": [str(i) for i in range(30)]}])


def test_one_inputs_attention_takes_a_flat_token_list(tmp_path, rng):
    attention = random_attention(rng, 2, 2, 3)
    per_layer = [torch.from_numpy(a[None]) for a in attention]  # outputs.attentions of one input: [1, H, N, N]
    with Writer(tmp_path) as writer:
        assert summary.attention(writer, "probe", per_layer, ["a", "b", "c"], 0) == 1
    ((entry, example, _),) = read_examples(python_provider(tmp_path), ".", "probe", 0)
    assert entry["tokens"] == ["a", "b", "c"] and np.abs(example.attention - attention).max() <= metadata.MAX_QUANTIZATION_ERROR


@pytest.mark.parametrize(
    "image, message",
    [
        ({"png": b"GIF89a", "grid": [1, 2], "patch_size": [4, 4], "prefix_tokens": 1, "prefix_names": ["CLS"]}, "not PNG"),
        ({"png": b"\x89PNG\r\n\x1a\n", "grid": [1, 0], "patch_size": [4, 4], "prefix_tokens": 1, "prefix_names": ["CLS"]},
         "grid must be two positive integers"),
        ({"png": b"\x89PNG\r\n\x1a\n", "grid": [2, 2], "patch_size": [4, 4], "prefix_tokens": 1, "prefix_names": ["CLS"]},
         "make 5 tokens, but the first group has 3"),
        ({"png": b"\x89PNG\r\n\x1a\n", "grid": [1, 2], "patch_size": [4, 4], "prefix_tokens": 1, "prefix_names": []},
         "prefix_names"),
    ],
)
def test_images_are_checked(rng, image, message):
    with pytest.raises(ValueError, match=message):
        summary.encode_step([{"attention": random_attention(rng, 1, 1, 3), "tokens": list("abc"), "image": image}])


def test_metrics_of_groups_are_tagged_by_group(tmp_path):
    with Writer(tmp_path) as writer:
        summary.metrics(writer, "gpt", {"entropy": np.ones((1, 1))}, 0)
        summary.metrics(writer, "t5", {"entropy": np.ones((1, 1))}, 0, group="cross")
        summary.metrics(writer, "t5", {"entropy": np.ones((1, 1))}, 0, group="encoder", first_group=True)
    from tb_attention.storage import schema
    from tests.support.tensorboard import request_context

    listing = python_provider(tmp_path).list_tensors(request_context(), experiment_id="", plugin_name="attention")["."]
    groups = {tag: schema.parse_plugin_data(ts.plugin_content).get("group") for tag, ts in listing.items()}
    assert groups == {"gpt/entropy": None, "t5/entropy": "encoder", "t5/cross/entropy": "cross"}
