"""Integrations: the examples (custom model, accelerate) and the PyTorch Lightning callback, on CPU with the real libraries."""

import importlib.util

import pytest
import torch

from tb_attention import Probe
from tests.support.tensorboard import ROOT, python_provider, read_blob_steps, read_examples, request_context

EXAMPLES = ROOT / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(EXAMPLES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def _scalar_tags(provider, run):
    return set(provider.list_scalars(request_context(), experiment_id="", plugin_name="scalars").get(run, {}))


def _metric_tags(provider, run):
    return set(provider.list_tensors(request_context(), experiment_id="", plugin_name="attention").get(run, {}))


def test_custom_model_example_logs_a_probe_and_batch_metrics(tmp_path):
    example = _example("custom_model")
    example.main(str(tmp_path / "custom"), steps=4, every=2)
    provider = python_provider(tmp_path)
    assert [d.step for d in read_blob_steps(provider, "custom", "probe")] == [0, 2, 4]
    assert {"probe/entropy", "probe/max_logit", "train_batch/entropy", "train_batch/distance"} <= _metric_tags(provider, "custom")
    entry, example_attention, _ = read_examples(provider, "custom", "probe", 4)[0]
    assert entry["groups"][0]["layer_names"] == ["blocks.0", "blocks.1"]
    assert example_attention.attention.shape == (2, 4, 7, 7) and entry["causal"] is True
    assert "loss" in _scalar_tags(provider, "custom")


def test_accelerate_example_logs_through_the_tracker(tmp_path):
    example = _example("accelerate_train")
    example.main(str(tmp_path / "acc"), steps=4, every=2)
    events = list((tmp_path / "acc").rglob("events.out.tfevents.*"))
    assert len(events) == 1  # loss and attention in one event file
    provider = python_provider(tmp_path / "acc")
    assert [d.step for d in read_blob_steps(provider, "run", "probe")] == [0, 2, 4]
    assert "loss" in _scalar_tags(provider, "run")


# ------------------------------------------------------------------------------------------------
# PyTorch Lightning

lightning = pytest.importorskip("lightning")


class RecordingMonitor:
    """Stands in for tb_attention.probes.monitor.AttentionMonitor: anything with log(writer, step)."""

    def __init__(self):
        self.steps = []

    def log(self, writer, step):
        assert writer is not None
        self.steps.append(step)
        return {}


class LitGPT(lightning.LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.training_step(batch, batch_idx))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class LitHF(LitGPT):
    """A Hugging Face causal LM trained on its own labels."""

    def training_step(self, batch, batch_idx):
        loss = self.model(input_ids=batch, labels=batch).loss
        self.log("train_loss", loss)
        return loss


def _trainer(tmp_path, callback, **options):
    from lightning.pytorch.loggers import TensorBoardLogger

    return lightning.Trainer(
        max_steps=4, accelerator="cpu", devices=1, logger=TensorBoardLogger(str(tmp_path), name="lit", version=""),
        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1, **options,
    )


def _data(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.DataLoader([torch.randint(0, 100, (12,), generator=g) for _ in range(n)], batch_size=4)


def test_lightning_callback_logs_probe_monitor_and_scalars_into_one_event_file(tmp_path):
    from tb_attention.integrations.lightning import AttentionProbeCallback
    from tests.support.models import NanoGPT

    torch.manual_seed(0)
    module = LitGPT(NanoGPT())
    monitor = RecordingMonitor()
    probe = Probe.from_tokens([[5, 6, 7, 8]], [["a", "b", "c", "d"]])
    callback = AttentionProbeCallback(probe, every_n_steps=2, monitor=monitor)
    _trainer(tmp_path, callback, accumulate_grad_batches=1).fit(module, _data())
    assert len(list((tmp_path / "lit").glob("events.out.tfevents.*"))) == 1
    provider = python_provider(tmp_path)
    assert [d.step for d in read_blob_steps(provider, "lit", "probe")] == [2, 4]
    assert monitor.steps == [1, 2, 3, 4]
    assert "train_loss" in _scalar_tags(provider, "lit")
    entry, attention, _ = read_examples(provider, "lit", "probe", 4)[0]
    assert entry["groups"][0]["layer_names"] == ["model.blocks.0", "model.blocks.1"]


def test_lightning_callback_with_gradient_accumulation_logs_each_optimizer_step_once(tmp_path):
    from tb_attention.integrations.lightning import AttentionProbeCallback
    from tests.support.models import NanoGPT

    torch.manual_seed(0)
    monitor = RecordingMonitor()
    probe = Probe.from_tokens([[5, 6, 7]], [["a", "b", "c"]], metrics=False)
    callback = AttentionProbeCallback(probe, every_n_steps=1, monitor=monitor, get_model=lambda m: m.model)
    _trainer(tmp_path, callback, accumulate_grad_batches=2).fit(LitGPT(NanoGPT()), _data(32))
    assert monitor.steps == [1, 2, 3, 4]
    assert [d.step for d in read_blob_steps(python_provider(tmp_path), "lit", "probe")] == [1, 2, 3, 4]


def test_lightning_callback_logs_after_validation_and_wraps_hf_models(tmp_path, gpt2_tokenizer):
    from tb_attention.integrations.lightning import AttentionProbeCallback
    from tests.support.models import tiny_gpt2

    model = tiny_gpt2(layers=1, heads=2, embed=16, vocab=100)
    probe = Probe.from_tokens([[5, 6, 7]], [["a", "b", "c"]], metrics=False)
    callback = AttentionProbeCallback(probe, every_n_steps=None, get_model=lambda m: m.model)
    trainer = _trainer(tmp_path, callback, val_check_interval=2, num_sanity_val_steps=1)
    trainer.fit(LitHF(model), _data(), _data(4))
    assert [d.step for d in read_blob_steps(python_provider(tmp_path), "lit", "probe")] == [2, 4]


def test_lightning_callback_needs_a_tensorboard_writer(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from tb_attention.integrations.lightning import AttentionProbeCallback
    from tests.support.models import NanoGPT

    callback = AttentionProbeCallback(Probe.from_tokens([[5, 6]], [["a", "b"]]), every_n_steps=1)
    trainer = lightning.Trainer(max_steps=1, accelerator="cpu", logger=CSVLogger(str(tmp_path)), callbacks=[callback],
                                enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(RuntimeError, match="needs a TensorBoardLogger"):
        trainer.fit(LitGPT(NanoGPT()), _data(4))
    with pytest.raises(TypeError, match="log\\(writer, step\\)"):
        AttentionProbeCallback(Probe.from_tokens([[5, 6]], [["a", "b"]]), monitor=object())


def test_lightning_callback_takes_a_generation_probe_unchanged(tmp_path, gpt2_tokenizer):
    from tb_attention.integrations.lightning import AttentionProbeCallback
    from tests.support.models import tiny_gpt2

    model = tiny_gpt2(layers=1, heads=2, embed=16, vocab=100)
    probe = Probe(gpt2_tokenizer, [[5, 6, 7], [9, 8]], generate=dict(max_new_tokens=4, pad_token_id=0))
    callback = AttentionProbeCallback(probe, every_n_steps=2, get_model=lambda m: m.model)
    _trainer(tmp_path, callback).fit(LitHF(model), _data())
    provider = python_provider(tmp_path)
    assert [d.step for d in read_blob_steps(provider, "lit", "probe")] == [2, 4]
    entries = [entry for entry, _, _ in read_examples(provider, "lit", "probe", 4)]
    assert [e["generation"]["prompt_length"] for e in entries] == [3, 2]
    assert "probe/prompt_share" in _metric_tags(provider, "lit")
