"""Bad input refused when written; broken files, newer formats and hostile requests answered 4xx, never 5xx."""

import concurrent.futures
import gzip
import json
import resource
import struct
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import torch

from tb_attention import Writer, metadata
from tb_attention.storage import summary
from tb_attention.storage.codecs import blob as blob_codec
from tests.support.data import random_attention
from tests.support.tensorboard import PLUGIN_ROUTE, TensorBoard, python_provider, read_examples, request_context

HOSTILE_TOKENS = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"'><svg onload=alert(1)>", "javascript:alert(1)",
    "</script><script>alert(1)</script>", "{{constructor.constructor('alert(1)')()}}", "${alert(1)}", "&lt;b&gt;",
    "<!--", "]]>", "\u202eevil", "\x00", "\n\r\t", "\u2028\u2029", "😀", "", " ", "%00%2e%2e/", "A" * 2000,
]


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
        (["a", None], TypeError, "token 1 is NoneType None"),
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


# ---------------------------------------------------------------------------------------------
# Read side: one logdir with every kind of damage, served by a real tensorboard with each loader

TOKENS = list("abcd")


def _examples(rng, n=4):
    return [{"attention": random_attention(rng, 2, 2, n), "tokens": TOKENS[:n] if n <= 4 else [str(i) for i in range(n)]}]


def _write_step(writer, tag, step, examples):
    """Writes one attention step; returns the blobs as stored, so a test can find them in the file."""
    manifest, attention_blobs, qk_blobs = summary.encode_examples(examples)
    summary.write(writer, summary.attention_pb(tag, manifest, attention_blobs, qk_blobs), step)
    return manifest, attention_blobs, qk_blobs


def _write_run(run_dir, rng, steps, name, generation=0):
    """Per step a metric (value = step + 100 x generation), then an attention step whose first token
    names the generation after the first. Returns (event file, {step: attention blob})."""
    stored = {}
    with Writer(run_dir) as writer:
        for step in steps:
            summary.metrics(writer, "probe", {"entropy": np.full((2, 2), step + 100 * generation, np.float32)}, step)
            examples = _examples(rng)
            if generation:
                examples[0]["tokens"] = [f"g{generation}", *TOKENS[1:]]
            stored[step] = _write_step(writer, "probe", step, examples)[1][0]
    (path,) = [p for p in run_dir.glob("events.out.tfevents.*") if not p.name.endswith(".host")]
    return path.rename(run_dir / f"events.out.tfevents.{name}.host"), stored


def _records(path):
    """(offset, length) of each TFRecord: uint64 length, uint32 crc, data, uint32 crc."""
    data, offset, out = path.read_bytes(), 0, []
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        out.append((offset, length))
        offset += 12 + length + 4
    return out


def _record_holding(path, blob):
    data = path.read_bytes()
    at = data.index(blob)
    return next((o, n) for o, n in _records(path) if o < at < o + 12 + n), at


def _flip(path, offset, mask=0xFF):
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def _raw_summary(tag, blobs, content=None, kind=metadata.KIND_ATTENTION):
    if kind == metadata.KIND_ATTENTION:
        pb = summary.attention_pb(tag, blobs[0], blobs[1:])
    else:
        pb = summary.exemplars_pb(tag, {}, probe="p")
        pb.value[0].tensor.string_val[:] = blobs
    if content is not None:
        pb.value[0].metadata.plugin_data.content = content
    return pb


NEWER = b'{"version": 99, "kind": "attention", "sparse_v2": true}'


@pytest.fixture(scope="module")
def damaged_logdir(tmp_path_factory):
    """Runs: intact (hostile tokens, a long sparse input, NaN/inf metrics); truncated (killed mid-write,
    then resumed in a new file); corrupt_payload and corrupt_length (a record broken mid-file, then a
    second file); newer (a tag of storage format v99 next to a good one); broken_blobs."""
    root = tmp_path_factory.mktemp("damaged")
    rng = np.random.default_rng(11)
    n = len(HOSTILE_TOKENS)
    with Writer(root / "intact") as writer, pytest.warns(UserWarning, match="600 tokens"):
        for step in (0, 1, 2):
            hostile = np.full((1, 2, n, n), 1 / n, np.float32)
            summary.write_examples(writer, "probe", [
                {"attention": hostile, "tokens": HOSTILE_TOKENS, "text": "<script>alert(1)</script>"},
                {"attention": random_attention(rng, 1, 2, 600), "tokens": [f"<b>{i}</b>" for i in range(600)]},
            ], step)
            summary.metrics(writer, "probe", {"entropy": np.array([[np.nan, np.inf], [-np.inf, step]], np.float32)}, step)
            summary.exemplars(writer, "probe", {"num_layers": 1, "num_heads": 2, "top_k": 1, "heads": [[[], []]],
                                                "inputs": [{"tokens": HOSTILE_TOKENS, "text": "<svg>", "example": 0}]}, step)

    # Killed mid-write: the last record (step 4's attention) is cut in half; training resumes in a new file.
    path, _ = _write_run(root / "truncated", rng, range(5), "1000000001")
    offset, length = _records(path)[-1]
    path.write_bytes(path.read_bytes()[: offset + 12 + length // 2])
    _write_run(root / "truncated", rng, (5, 6), "1000000002")

    # A flipped byte inside step 2's attention blob: the record's data CRC fails.
    path, stored = _write_run(root / "corrupt_payload", rng, range(6), "1000000001")
    _, at = _record_holding(path, stored[2])
    _flip(path, at + len(stored[2]) // 2)
    _write_run(root / "corrupt_payload", rng, (6, 7), "1000000002")

    # A flipped bit in the length of step 2's attention record: the length CRC fails.
    path, stored = _write_run(root / "corrupt_length", rng, range(6), "1000000001")
    (offset, _), _ = _record_holding(path, stored[2])
    _flip(path, offset + 1, 0x01)
    _write_run(root / "corrupt_length", rng, (6, 7), "1000000002")

    # Resumed from a checkpoint of step 4 after logging step 6: steps 5 and 6 are logged again.
    _write_run(root / "resumed", rng, range(7), "1000000001")
    _write_run(root / "resumed", rng, range(5, 9), "1000000002", generation=1)

    with Writer(root / "newer") as writer:
        manifest, blobs, _ = summary.encode_examples(_examples(rng))
        for step in (0, 1):
            summary.write(writer, _raw_summary("future", [manifest, *blobs], NEWER), step)
            metric = summary.metrics_pb("future/entropy", np.zeros((2, 2)), probe="future", metric="entropy")
            metric.value[0].metadata.plugin_data.content = b'{"version": 99, "kind": "metric"}'
            summary.write(writer, metric, step)
            summary.write_examples(writer, "probe", _examples(rng), step)

        alien = _raw_summary("alien", [manifest, *blobs], b"\xff written by another tool")
        summary.write(writer, alien, 0)

    # Files that are not event files at all, and an empty one, next to a good run's.
    (root / "junk").mkdir()
    (root / "junk" / "events.out.tfevents.1000000001.host").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "junk" / "events.out.tfevents.1000000002.host").write_bytes(b"")
    (root / "junk" / "events.out.tfevents.1000000003.host").mkdir()

    # A step another writer stored above what a browser names exactly (2**62).
    with Writer(root / "big_step") as writer:
        manifest, blobs, _ = summary.encode_examples(_examples(rng))
        writer.add_summary(summary.attention_pb("probe", manifest, blobs), 2**62)

    good_manifest, good_blobs, _ = summary.encode_examples(_examples(rng))
    topk_manifest, topk_blobs, _ = summary.encode_examples(_examples(rng, n=9), max_dense_tokens=2, top_k=3)
    giant = metadata.decode_json(good_manifest)
    v1_sizes = {"num_layers": 2, "num_heads": 2, "num_tokens": len(TOKENS), "tokens": TOKENS}  # a v1 entry's sizes
    raw = gzip.decompress(good_blobs[0])
    broken = {
        0: [b"not gzip at all", *good_blobs],
        1: [gzip.compress(b"{not json"), *good_blobs],
        2: [metadata.encode_json({"version": 1, "rows": []}), *good_blobs],
        3: [good_manifest, b"\x1f\x8b but not gzip"],
        4: [good_manifest, gzip.compress(raw[: len(raw) - 5])],  # the payload cut short
        5: [good_manifest, gzip.compress(raw[:4] + struct.pack("<I", 99) + raw[8:])],
        6: [metadata.encode_json(metadata.create_manifest([{"tokens": TOKENS, "groups": [
            {"name": "self", "num_layers": 1, "num_heads": 2, "num_tokens": len(TOKENS), "tokens": TOKENS,
             "attention_blobs": [1]}]}]))],
        7: [metadata.encode_json({"version": 1, "examples": [{**v1_sizes, "attention_blob": -1, "qk_blob": None}]}), *good_blobs],
        8: [metadata.encode_json({"version": 99, "examples": []}), *good_blobs],
        9: [metadata.encode_json({"version": 1, "examples": [{**v1_sizes, "attention_blob": 1, "qk_blob": 1}]}), *good_blobs],
        # A header-length bomb: ~4 GiB of header claimed, 32 MiB of zeros behind it (a 32 KB blob).
        10: [good_manifest, gzip.compress(raw[:8] + struct.pack("<I", 0xFFFFFF00) + raw[12:] + bytes(32 << 20))],
        # A top-k blob whose first key index is past the last key.
        11: [topk_manifest, _topk_index_past_the_keys(topk_blobs[0])],
        # A manifest claiming 10^9 heads for example 0, before a good example 1.
        12: [metadata.encode_json({"version": 2, "examples": [
            {**giant["examples"][0], "groups": [{**giant["examples"][0]["groups"][0], "num_heads": 10**9}]},
            giant["examples"][0]]}), *good_blobs],
    }
    with Writer(root / "broken_blobs") as writer:
        for step, blobs in broken.items():
            summary.write(writer, _raw_summary("probe", blobs), step)
        summary.write(writer, _raw_summary("probe/exemplars", [b"\x00\x01"], kind=metadata.KIND_EXEMPLARS), 0)
        summary.write(writer, _raw_summary("probe/exemplars", [metadata.encode_json([1, 2])], kind=metadata.KIND_EXEMPLARS), 1)
    return root


def _loaded(tags):
    return (
        tags.get("intact", {}).get("probe", {}).get("steps") == [0, 1, 2]
        and tags.get("truncated", {}).get("probe", {}).get("steps", [])[-2:] == [5, 6]
        and all(tags.get(run, {}).get("probe", {}).get("steps", [])[-2:] == [6, 7]
                for run in ("corrupt_payload", "corrupt_length"))
        and len(tags.get("broken_blobs", {}).get("probe", {}).get("steps", [])) == 13
        and "future" in tags.get("newer", {})
        and tags.get("resumed", {}).get("probe/entropy", {}).get("steps", [])[-1:] == [8]
    )


@pytest.fixture(scope="module", params=["false", "true"], ids=["python-loader", "rust-loader"])
def damaged(request, damaged_logdir):
    server = TensorBoard(damaged_logdir, load_fast=request.param)
    try:
        server.wait_for(_loaded)
        server.loader = "python" if request.param == "false" else "rust"
        yield server
    finally:
        server.close()


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


def _topk_index_past_the_keys(blob):
    header, payload = blob_codec.unpack(gzip.decompress(blob), blob_codec.ATTENTION_MAGIC)
    assert header["encoding"] == "topk"  # indices first: the first one now names key N + 5
    payload = bytearray(payload)
    struct.pack_into("<H", payload, 0, header["num_key_tokens"] + 5)
    return blob_codec.compress(blob_codec.pack(blob_codec.ATTENTION_MAGIC, header, [bytes(payload)]))


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
