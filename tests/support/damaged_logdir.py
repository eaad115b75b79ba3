"""A log directory with every kind of damage (truncated, corrupt, newer, hostile, bombs), for the serving tests."""

import gzip
import struct

import numpy as np
import pytest

from tb_attention import Writer, metadata
from tb_attention.storage import summary
from tb_attention.storage.codecs import blob as blob_codec
from tests.support.data import random_attention

HOSTILE_TOKENS = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"'><svg onload=alert(1)>", "javascript:alert(1)",
    "</script><script>alert(1)</script>", "{{constructor.constructor('alert(1)')()}}", "${alert(1)}", "&lt;b&gt;",
    "<!--", "]]>", "\u202eevil", "\x00", "\n\r\t", "\u2028\u2029", "😀", "", " ", "%00%2e%2e/", "A" * 2000,
]

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


def every_run_loaded(tags):
    return (
        tags.get("intact", {}).get("probe", {}).get("steps") == [0, 1, 2]
        and tags.get("truncated", {}).get("probe", {}).get("steps", [])[-2:] == [5, 6]
        and all(tags.get(run, {}).get("probe", {}).get("steps", [])[-2:] == [6, 7]
                for run in ("corrupt_payload", "corrupt_length"))
        and len(tags.get("broken_blobs", {}).get("probe", {}).get("steps", [])) == 13
        and "future" in tags.get("newer", {})
        and tags.get("resumed", {}).get("probe/entropy", {}).get("steps", [])[-1:] == [8]
    )


def _topk_index_past_the_keys(blob):
    header, payload = blob_codec.unpack(gzip.decompress(blob), blob_codec.ATTENTION_MAGIC)
    assert header["encoding"] == "topk"  # indices first: the first one now names key N + 5
    payload = bytearray(payload)
    struct.pack_into("<H", payload, 0, header["num_key_tokens"] + 5)
    return blob_codec.compress(blob_codec.pack(blob_codec.ATTENTION_MAGIC, header, [bytes(payload)]))
