"""The Hugging Face Trainer callback: one callback, one event file, probes every N steps."""

import pytest

from tb_attention import AttentionCallback, Probe
from tests.support.models import Sentences, tiny_gpt2
from tests.support.tensorboard import python_provider, read_blob_steps, read_examples, request_context


@pytest.mark.parametrize("report_to", ["none", "tensorboard"])
def test_trainer_logs_probe_and_scalars_into_one_event_file(tmp_path, gpt2_tokenizer, monkeypatch, report_to):
    from transformers import Trainer, TrainingArguments

    logdir = tmp_path / "runs" / "exp"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(logdir))
    model = tiny_gpt2(layers=2, heads=2, embed=16)
    model.train()
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4, logging_steps=2,
        report_to=report_to, save_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    probe = Probe(gpt2_tokenizer, ["The cat sat.", "A dog ran."], metrics=False)
    callback = AttentionCallback(probe, every_n_steps=2)
    Trainer(model=model, args=args, train_dataset=Sentences(gpt2_tokenizer), callbacks=[callback]).train()
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    provider = python_provider(tmp_path / "runs")
    assert [d.step for d in read_blob_steps(provider, "exp", "probe")] == [2, 4, 6]
    scalars = provider.list_scalars(request_context(), experiment_id="", plugin_name="scalars")
    assert "train/loss" in scalars["exp"]


def test_every_n_steps_must_be_positive(gpt2_tokenizer):
    with pytest.raises(ValueError, match="positive number of steps, got 0"):
        AttentionCallback(Probe(gpt2_tokenizer, ["x y"]), every_n_steps=0)


@pytest.mark.parametrize("report_to", ["none", "tensorboard"])
def test_monitor_is_logged_after_every_optimizer_step_with_the_callbacks_writer(tmp_path, gpt2_tokenizer, monkeypatch,
                                                                                  report_to):
    from transformers import Trainer, TrainingArguments

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "runs" / "exp"))
    writers = []

    class Monitor:  # what AttentionCallback needs of tb_attention.probes.monitor.AttentionMonitor
        def log(self, writer, step):
            sibling = callback._sibling
            writers.append((writer, step, sibling.tb_writer if sibling is not None else callback.tb_writer))

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4, report_to=report_to,
        save_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    callback = AttentionCallback(Probe(gpt2_tokenizer, ["A dog ran."], metrics=False), every_n_steps=None,
                                 monitor=Monitor())
    trainer = Trainer(model=tiny_gpt2(layers=1, heads=2, embed=16).train(), args=args,
                      train_dataset=Sentences(gpt2_tokenizer), callbacks=[callback])
    trainer.train()
    assert [step for _, step, _ in writers] == [1, 2, 3]
    assert all(writer is not None and writer is expected for writer, _, expected in writers)
    siblings = [c for c in trainer.callback_handler.callbacks if type(c).__name__ == "TensorBoardCallback"]
    assert (callback._sibling is not None) == (report_to == "tensorboard") == bool(siblings)
    with pytest.raises(TypeError, match="log\\(writer, step\\)"):
        AttentionCallback(Probe(gpt2_tokenizer, ["x y"]), monitor=42)


def test_trainer_takes_a_generation_probe_unchanged(tmp_path, gpt2_tokenizer, monkeypatch):
    from transformers import Trainer, TrainingArguments

    logdir = tmp_path / "runs" / "gen"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(logdir))
    model = tiny_gpt2(layers=2, heads=2, embed=16)
    model.train()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    probe = Probe(gpt2_tokenizer, ["The cat sat on", "A dog"], name="answers",
                  generate=dict(max_new_tokens=5, pad_token_id=gpt2_tokenizer.eos_token_id))
    Trainer(model=model, args=args, train_dataset=Sentences(gpt2_tokenizer),
            callbacks=[AttentionCallback(probe, every_n_steps=2)]).train()
    assert model.training, "the probe left the model in eval mode"
    provider = python_provider(tmp_path / "runs")
    assert [d.step for d in read_blob_steps(provider, "gen", "answers")] == [2, 4]
    entries = [entry for entry, _, _ in read_examples(provider, "gen", "answers", 4)]
    assert [e["generation"]["prompt"] for e in entries] == ["The cat sat on", "A dog"]
    assert all(len(e["generation"]["ids"]) == 5 for e in entries)
