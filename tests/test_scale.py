"""Compiled models, `analyze --device/--dtype`, and the GPU check script run small on the CPU."""

import json
import logging
import pathlib
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

from tb_attention import Probe, Writer  # noqa: E402
from tb_attention.probes import analysis
from tests.support.models import train_step as _train_step  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEXTS = ["The cat sat on the mat.", "A dog ran to the old barn and back."]


def _gpt2(**options):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config = GPT2Config(**{**shape, **options})
    return GPT2LMHeadModel(config)


class CountingBackend:
    """A torch.compile backend that runs graphs as traced and counts how many it was given."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def _compiled_training(compile_whole):
    """A model, its compiled form (whole or block by block), an optimizer, a batch and the backend."""
    backend = CountingBackend()
    model = _gpt2()
    if compile_whole:
        compiled = torch.compile(model, backend=backend)
    else:
        for block in model.transformer.h:
            block.compile(backend=backend)
        compiled = model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    return model, compiled, optimizer, batch, backend


@pytest.mark.parametrize("compile_whole", [True, False], ids=["torch.compile(model)", "block.compile()"])
def test_a_probe_of_a_compiled_model_compiles_nothing(tmp_path, gpt2_tokenizer, caplog, compile_whole):
    model, compiled, optimizer, batch, backend = _compiled_training(compile_whole)
    for _ in range(2):
        _train_step(compiled, optimizer, batch)
    graphs = backend.graphs
    assert graphs > 0
    probe = Probe(gpt2_tokenizer, TEXTS, syntax=False)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="torch._dynamo"):
        warnings.simplefilter("always")
        with Writer(tmp_path) as writer:
            probe.log(writer, compiled, 0)  # as a user calls it: the probe unwraps and runs eagerly itself
        loss = _train_step(compiled, optimizer, batch)
    assert backend.graphs == graphs, "the probe recompiled the user's graph"
    # Not one warning: neither dynamo's nor torch.compile's "global hooks" warning, which a hook
    # left registered by the probe would raise on every later compiled call.
    assert not [str(w.message) for w in caught]
    assert not [r for r in caplog.records if r.name.startswith("torch._dynamo")]
    # The compiled step after the probe computes what an uncompiled twin computes.
    twin = _gpt2()
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(2):
        _train_step(twin, twin_optimizer, batch)
    assert loss == pytest.approx(_train_step(twin, twin_optimizer, batch), abs=1e-5)


@pytest.mark.parametrize("compile_whole", [True, False], ids=["torch.compile(model)", "block.compile()"])
def test_the_probe_attention_of_a_compiled_model_equals_eager(gpt2_tokenizer, compile_whole):
    model, compiled, optimizer, batch, backend = _compiled_training(compile_whole)
    _train_step(compiled, optimizer, batch)
    probe = Probe(gpt2_tokenizer, TEXTS, syntax=False)
    graphs = backend.graphs
    captured = probe.capture(compiled)
    assert backend.graphs == graphs
    eager = _gpt2(attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    for encoding, result in zip(probe.encodings, captured):
        with torch.no_grad():
            attentions = eager(input_ids=torch.tensor([encoding["input_ids"]]), output_attentions=True).attentions
        assert torch.allclose(result.attention, torch.stack(attentions, 1)[0], atol=1e-6)


class _Metrics:
    """A writer stand-in for the monitor: keeps what it was given."""

    def __init__(self):
        self.summaries = []

    def add_summary(self, summary, step=None, walltime=None):
        self.summaries.append(step)


@pytest.mark.parametrize("compile_whole", [True, False], ids=["torch.compile(model)", "block.compile()"])
def test_a_monitored_compiled_model_compiles_nothing_and_measures_what_eager_does(compile_whole):
    """AttentionMonitor on the training batches of a compiled model: its hooks sit outside what
    dynamo traces and the monitored forward runs eagerly, so no graph is recompiled or added."""
    from tb_attention import AttentionMonitor

    model, compiled, optimizer, batch, backend = _compiled_training(compile_whole)
    twin = _gpt2()
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(2):
        _train_step(compiled, optimizer, batch)
        _train_step(twin, twin_optimizer, batch)
    graphs = backend.graphs
    monitor, twin_monitor = AttentionMonitor(compiled, every_n_steps=2), AttentionMonitor(twin, every_n_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(4):
            loss = _train_step(compiled, optimizer, batch)
            values = monitor.log(_Metrics(), step)
            assert loss == pytest.approx(_train_step(twin, twin_optimizer, batch), abs=1e-5)
            expected = twin_monitor.log(_Metrics(), step)
            assert values.keys() == expected.keys() and bool(values) == (step % 2 == 0)
            for metric in values:
                torch.testing.assert_close(torch.from_numpy(values[metric]), torch.from_numpy(expected[metric]),
                                           atol=1e-5, rtol=1e-5)
    assert backend.graphs == graphs, "monitoring recompiled the user's graph"
    assert not [str(w.message) for w in caught]
    monitor.close()


def test_monitoring_a_model_compiled_in_place_says_what_to_do_instead():
    from tb_attention import AttentionMonitor

    model = _gpt2()
    model.compile(backend="eager")
    with pytest.warns(RuntimeWarning, match=r"compiled whole in place.*torch.compile\(model\)"):
        AttentionMonitor(model).close()


def test_a_model_compiled_around_the_monitor_neither_recompiles_nor_fails_silently():
    """The monitor made first, the module inside then compiled: dynamo traces the monitor's hooks.
    They stay out of the way (no graph per step) and log() says what to do instead."""
    from tb_attention import AttentionMonitor

    model = _gpt2()
    monitor = AttentionMonitor(model, every_n_steps=1)
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    _train_step(compiled, optimizer, batch)
    graphs = backend.graphs
    for step in range(3):
        _train_step(compiled, optimizer, batch)
        with pytest.warns(RuntimeWarning, match=r"compiled around the monitor's hooks.*torch.compile\(model\)"):
            assert monitor.log(_Metrics(), step) == {}
    assert backend.graphs == graphs
    monitor.close()


def test_overlapping_eager_blocks_leave_compilation_on():
    """torch's compile stance is one per process: probes in two threads open and close their eager
    blocks out of order (first in, first out), and compiled code must compile again afterwards."""
    from tb_attention.runtime import modules

    first, second = modules.eager(), modules.eager()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    backend = CountingBackend()
    compiled = torch.compile(lambda x: x * 2 + 1, backend=backend)
    compiled(torch.ones(3))
    assert backend.graphs == 0  # still inside the second block: eager
    second.__exit__(None, None, None)
    compiled(torch.ones(4, 2))
    assert backend.graphs == 1


# ---------------------------------------------------------------------------------------------
# analyze on a device, in a dtype


def test_resolve_device_names_what_is_wrong():
    assert analysis.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(analysis.AnalysisError, match="not a device"):
        analysis.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(analysis.AnalysisError, match="no CUDA"):
            analysis.resolve_device("cuda")
        assert analysis.resolve_device(None) == torch.device("cpu")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tb_attention.convert import assets

    folder = tmp_path_factory.mktemp("gpt2")
    _gpt2(attn_implementation="sdpa").transformer.save_pretrained(folder)
    assets.gpt2_tokenizer().save_pretrained(folder)
    return folder


def test_analyze_in_bfloat16_agrees_with_float32(model_dir):
    sentences = ["The cat sat on the mat.", "A dog ran to the old barn.", "Birds sing at dawn in spring.",
                 "She read the long letter twice before answering it."]
    results = {}
    for dtype in ("float32", "bfloat16"):
        model, tokenizer = analysis.load_model(model_dir, device="cpu", dtype=dtype)
        assert next(model.parameters()).dtype == analysis.DTYPES[dtype]
        found = analysis.analyze_corpus(model, tokenizer, sentences, batch_size=2, with_syntax=False, progress=False,
                                        sample=1, exemplar_examples=1)
        assert found.examples[0]["attention"].dtype == torch.float32
        results[dtype] = found.stats.result()
    for name in ("entropy", "distance", "null_attention", "previous_token"):
        assert results["bfloat16"][name] == pytest.approx(results["float32"][name], abs=0.05, nan_ok=True), name


def test_analyze_command_takes_device_and_dtype(tmp_path, model_dir):
    sentences = tmp_path / "s.txt"
    sentences.write_text("The cat sat on the mat.\nA dog ran to the old barn.\n")
    common = [sys.executable, "-m", "tb_attention.cli", "analyze", "--model", str(model_dir), "--sentences",
              str(sentences), "--no-syntax", "--quiet", "--logdir", str(tmp_path / "logs")]
    done = subprocess.run(common + ["--device", "cpu", "--dtype", "bfloat16"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "logs").glob("*/events.out.tfevents.*"))
    if not torch.cuda.is_available():
        done = subprocess.run(common + ["--device", "cuda", "--run", "x"], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 2 and "no CUDA GPU" in done.stderr


# ---------------------------------------------------------------------------------------------
# The GPU check, scaled down


def test_gpu_check_runs_tiny_on_the_cpu():
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--tiny"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    checks = {line["check"] for line in lines}
    assert {"training_loop", "shape", "long", "analyze", "compiled"} <= checks
    assert not [line for line in lines if line.get("error")], lines
    shapes = [line for line in lines if line["check"] == "shape"]
    assert len(shapes) == 4 and all(line["probe_seconds"] > 0 for line in shapes)
    compiled = next(line for line in lines if line["check"] == "compiled")
    assert compiled["new_graphs_after_probe"] == 0
    longs = [line for line in lines if line["check"] == "long"]
    assert [line["tokens"] for line in longs] == [512, 1024]
    assert all(line["probe_seconds"] > 0 and 0 < line["planned_bytes"] <= line["budget"] for line in longs)


# ---------------------------------------------------------------------------------------------
# Streaming capture


def _records(logdir):
    """{(tag, step): (plugin data bytes, tensor bytes)} of every summary value in a logdir's event files."""
    from tensorboard.backend.event_processing import event_file_loader

    out = {}
    for path in sorted(pathlib.Path(logdir).glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                out[(value.tag, event.step)] = (value.metadata.plugin_data.content, value.tensor.SerializeToString())
    return out


@pytest.mark.parametrize("max_dense_tokens", [64, 8], ids=["causal rows", "top-k"])
def test_streaming_probe_stores_the_same_bytes_as_probe_log(tmp_path, gpt2_tokenizer, max_dense_tokens):
    from tb_attention.probes import streamed as probe_stream

    model = _gpt2()
    texts = TEXTS + ["Streaming keeps one layer at a time, never every layer of every input at once."]
    probe = Probe(gpt2_tokenizer, texts, syntax=False, batch_size=2, max_dense_tokens=max_dense_tokens)
    with Writer(tmp_path / "today") as writer:
        expected_values = probe.log(writer, model, 3)
    with Writer(tmp_path / "stream") as writer:
        values = probe_stream.log_probe(probe, writer, model, 3)
    today, streamed = _records(tmp_path / "today"), _records(tmp_path / "stream")
    assert sorted(today) == sorted(streamed)
    assert today[("probe", 3)] == streamed[("probe", 3)], "the stored attention differs"
    for key in today:  # metrics and exemplars: the same records, values summed in another order (below)
        assert today[key][0] == streamed[key][0], f"{key}: plugin data differs"
    assert sorted(values) == sorted(expected_values)
    for name in values:
        assert values[name] == pytest.approx(expected_values[name], abs=1e-6, nan_ok=True), name


def test_streaming_listener_never_holds_two_layers(gpt2_tokenizer, monkeypatch):
    """The weights of a call are gone before the next call's are computed."""
    import weakref

    from tb_attention.capture import intercept, stream

    model = _gpt2(n_layer=3)
    alive, seen = [], []
    original = intercept.AttentionCall.weights

    def tracked(self, rows=None, **options):
        w = original(self, rows, **options)
        seen.append(sum(ref() is not None for ref in alive))
        alive.append(weakref.ref(w))
        return w

    monkeypatch.setattr(intercept.AttentionCall, "weights", tracked)
    listener = stream.LayerStream()
    ids = torch.tensor([gpt2_tokenizer(TEXTS[1])["input_ids"]])
    stream.capture_streaming(model, [(ids, torch.ones_like(ids), [gpt2_tokenizer.convert_ids_to_tokens(ids[0])], None)],
                             listener)
    assert seen == [0, 0, 0]
    assert len(listener.encoded[0]) == 3
