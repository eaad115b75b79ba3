"""Writing refuses bad input: each bad input is refused with a message naming the problem, and nothing is written."""

import resource

import numpy as np
import pytest
import torch

from tb_attention import Writer, metadata
from tb_attention.storage import summary
from tests.support.damaged_logdir import HOSTILE_TOKENS
from tests.support.data import random_attention
from tests.support.tensorboard import python_provider, read_examples, request_context


def _writer(tmp_path, run="run"):
    return Writer(tmp_path / run)


def _nothing_written(logdir):
    provider = python_provider(logdir)
    listing = provider.list_blob_sequences(request_context(), experiment_id="", plugin_name="attention")
    return not listing or not any(listing.values())



# ---------------------------------------------------------------------------------------------
# Write side: each bad input is refused with a message naming the problem, and nothing is written


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_weights_are_refused(tmp_path, rng, value):
    attention = random_attention(rng, 2, 2, 4)
    attention[1, 1, 3, 2] = value
    message = r"NaN or infinite weights .*layer 1, head 1, query 3, key 2"
    with _writer(tmp_path) as writer, pytest.raises(ValueError, match=message):
        summary.attention(writer, "probe", attention, list("abcd"), 0)
    assert _nothing_written(tmp_path)


class FakeCudaTensor:
    """Quacks like a torch tensor on a GPU: numpy() and __array__ fail until .cpu(), as in torch."""

    calls = []

    def __init__(self, array, on_gpu=True):
        self.array, self.on_gpu = array, on_gpu

    def detach(self):
        return self

    def is_floating_point(self):
        return self.array.dtype.kind == "f"

    def float(self):
        self.calls.append("float")
        return FakeCudaTensor(self.array.astype(np.float32), self.on_gpu)

    def cpu(self):
        self.calls.append("cpu")
        return FakeCudaTensor(self.array, on_gpu=False)

    def numpy(self):
        if self.on_gpu:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu()")
        return self.array

    def __array__(self, dtype=None, copy=None):
        return self.numpy() if dtype is None else self.numpy().astype(dtype)


def test_gpu_tensors_are_copied_to_the_cpu(tmp_path, rng):
    """Attention, query, key and mask on a GPU (bf16 there) go through .float().cpu() before numpy."""
    batch = np.stack([random_attention(rng, 2, 2, 4)] * 2)  # [B, L, H, N, N]
    per_layer = tuple(FakeCudaTensor(batch[:, layer].astype(np.float16)) for layer in range(2))
    query, key = rng.normal(size=(2, 2, 2, 4, 8)), rng.normal(size=(2, 2, 1, 4, 8))
    mask = FakeCudaTensor(np.array([[1, 1, 1, 1], [1, 1, 1, 1]], dtype=np.int64))
    FakeCudaTensor.calls.clear()
    with _writer(tmp_path) as writer:
        summary.attention(
            writer, "probe", per_layer, [list("abcd")] * 2, 0, attention_mask=mask,
            query=FakeCudaTensor(query), key=FakeCudaTensor(key), scaling=[0.3, 0.3],
        )
    assert FakeCudaTensor.calls.count("cpu") == 5  # 2 layers, query, key, mask
    (_, example, qk), _ = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert np.abs(example.attention - batch[0]).max() <= metadata.MAX_QUANTIZATION_ERROR + 1e-3
    assert np.allclose(qk.query, query[0], atol=2e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_attention_computed_in_half_precision_passes_the_row_check(tmp_path, dtype):
    """A softmax computed in bf16 has rows summing to 1 +- 0.003 over 256 keys: inside the tolerance."""
    torch.manual_seed(0)
    scores = torch.randn(2, 2, 256, 256) * 3
    attention = torch.softmax(scores.to(dtype), dim=-1)
    assert (attention.float().sum(-1) - 1).abs().max() > 1e-4  # the rounding is real
    with _writer(tmp_path) as writer:
        summary.attention(writer, "probe", attention, [f"t{i}" for i in range(256)], 0)
    (_, example, _), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert np.abs(example.attention - attention.float().numpy()).max() <= metadata.MAX_QUANTIZATION_ERROR


@pytest.mark.parametrize(
    "tokens, error, message",
    [
        ([464, 3797], TypeError, r"token 0 is int 464, not a string: pass token strings \(tokenizer.convert_ids_to_tokens"),
        (["a", None], TypeError, "token 1 is None, not a string: a tokenizer.s convert_ids_to_tokens gives None for an id it cannot decode"),
        ("ab", TypeError, "tokens must be a list of token strings, got one str"),
        (np.array([1, 2]), TypeError, "token 0 is int64"),
    ],
)
def test_tokens_that_are_not_text_are_refused(tmp_path, tokens, error, message):
    with _writer(tmp_path) as writer, pytest.raises(error, match=message):
        summary.attention(writer, "probe", np.full((1, 1, 2, 2), 0.5, np.float32), tokens, 0)
    assert _nothing_written(tmp_path)


def test_tokens_are_stored_exactly_bytes_decoded_and_lone_surrogates_replaced(tmp_path):
    """str tokens are kept as given (HTML, control characters); bytes tokens are UTF-8 (invalid bytes
    become U+FFFD); a lone surrogate, which UTF-8 cannot store, becomes U+FFFD; a pair is joined."""
    tokens = HOSTILE_TOKENS + [b"caf\xc3\xa9", b"\xff", "\ud800", "\ud83d\ude00", np.str_("np")]
    n = len(tokens)
    with _writer(tmp_path) as writer:
        summary.attention(writer, "probe", np.full((1, 1, n, n), 1 / n, np.float32), tokens, 0, text="x\udc80y")
    (entry, example, _), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert example.tokens == entry["tokens"] == HOSTILE_TOKENS + ["café", "\ufffd", "\ufffd", "😀", "np"]
    assert entry["text"] == "x\ufffdy"


def test_inputs_too_long_to_store_are_refused_before_copying_the_weights(tmp_path):
    """Over 65535 tokens (uint16 sparse indices) is refused at once: a [1, 1, 70000, 70000] view costs
    no memory, and the check must not make it cost 4.9 GB."""
    n = 70_000
    attention = np.broadcast_to(np.float32(1 / n), (1, 1, n, n))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with _writer(tmp_path) as writer, pytest.raises(ValueError, match="attention over 70000 tokens: at most 65535"):
        summary.attention(writer, "probe", attention, ["t"] * n, 0)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
    assert _nothing_written(tmp_path)


def test_long_inputs_are_served_sparse_and_dense_on_request(tmp_path, rng):
    """Over max_dense_tokens: the top-k of each row with a warning; max_dense_tokens=N keeps all."""
    attention = random_attention(rng, 1, 1, 40)
    with _writer(tmp_path) as writer:
        with pytest.warns(UserWarning, match="pass max_dense_tokens=40 to store every weight"):
            summary.attention(writer, "probe", attention, ["t"] * 40, 0, max_dense_tokens=32, top_k=4)
        summary.attention(writer, "probe", attention, ["t"] * 40, 1, max_dense_tokens=40)
    provider = python_provider(tmp_path)
    (sparse_entry, sparse, _), = read_examples(provider, "run", "probe", 0)
    (dense_entry, dense, _), = read_examples(provider, "run", "probe", 1)
    assert (sparse_entry["encoding"], dense_entry["encoding"]) == ("topk", "causal")
    assert (sparse.attention > 0).sum(-1).max() == 4
    assert np.abs(dense.attention - attention).max() <= metadata.MAX_QUANTIZATION_ERROR


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty batch", "no examples to write"),
        ("all padding", "example 1: attention is empty: 2 layers, 2 heads, 0 tokens"),
        ("no heads", "attention is empty: 2 layers, 0 heads, 3 tokens"),
        ("no tokens", "attention is empty: 2 layers, 2 heads, 0 tokens"),
        ("none layer", "attention of layer 1 is None: the model did not return it"),
    ],
)
def test_empty_inputs_are_refused(tmp_path, rng, case, message):
    good = random_attention(rng, 2, 2, 3)
    args = {
        "empty batch": (np.zeros((0, 2, 2, 3, 3), np.float32), [], {}),
        "all padding": (np.stack([good, good]), [list("abc"), list("abc")], {"attention_mask": [[1, 1, 1], [0, 0, 0]]}),
        "no heads": (np.zeros((2, 0, 3, 3), np.float32), list("abc"), {}),
        "no tokens": (np.zeros((2, 2, 0, 0), np.float32), [], {}),
        "none layer": ((torch.from_numpy(good[0]), None), list("abc"), {}),
    }[case]
    attention, tokens, kwargs = args
    with _writer(tmp_path) as writer, pytest.raises((ValueError, TypeError), match=message):
        summary.attention(writer, "probe", attention, tokens, 0, **kwargs)
    assert _nothing_written(tmp_path)


@pytest.mark.parametrize("step", [-1, 2.5, "3", 2**53, 2**63])
def test_steps_must_be_non_negative_integers_a_browser_can_name(tmp_path, rng, step):
    """A negative step could be stored but never asked for (the routes take non-negative integers);
    from 2**53 (e.g. time.time_ns()) a browser's JSON rounds the step, and asks for another one."""
    with _writer(tmp_path) as writer, pytest.raises((ValueError, TypeError), match="step must be"):
        summary.attention(writer, "probe", random_attention(rng, 1, 1, 2), list("ab"), step)
    assert _nothing_written(tmp_path)


def test_integer_steps_of_any_type_are_accepted(tmp_path, rng):
    with _writer(tmp_path) as writer:
        for step in (np.int64(3), torch.tensor(4), 5.0, 2**53 - 1):
            summary.attention(writer, "probe", random_attention(rng, 1, 1, 2), list("ab"), step)
    steps = [d.step for d in python_provider(tmp_path).read_blob_sequences(
        request_context(), experiment_id="", plugin_name="attention", downsample=100)["run"]["probe"]]
    assert steps == [3, 4, 5, 2**53 - 1]


@pytest.mark.parametrize(
    "value, error, message",
    [
        (np.zeros(4), ValueError, r"metric 'entropy' must be \[layers, heads\], got shape \(4,\)"),
        (np.zeros((2, 2, 2)), ValueError, r"must be \[layers, heads\], got shape \(2, 2, 2\)"),
        (0.5, ValueError, r"must be \[layers, heads\], got shape \(\)"),
        ([["a", "b"]], TypeError, "entropy must be a tensor or array of numbers"),
        ([[1.0, 2.0], [3.0]], TypeError, "entropy must be a tensor or array of numbers"),
    ],
)
def test_metrics_of_the_wrong_shape_or_type_are_refused(tmp_path, value, error, message):
    with _writer(tmp_path) as writer, pytest.raises(error, match=message):
        summary.metrics(writer, "probe", {"entropy": value}, 0)
