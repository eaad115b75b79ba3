"""Tests for tb_attention.capture.record: attention from Hugging Face models, as eager attention computes it."""

import pytest
import torch
import transformers

from tb_attention import capture
from tests.support.models import decoder_lm as _tiny
from tests.support.threads import run_in_threads

VOCAB = 100
TOLERANCE = 1e-5


CAUSAL = {"gpt2": True, "bert": False, "llama": True}


@pytest.fixture(scope="module", params=["gpt2", "bert", "llama"])
def eager_model(request):
    return request.param, _tiny(request.param, "eager")


def _ids(batch, length, seed=1):
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _eager_attention(model, input_ids, attention_mask=None):
    """The reference: transformers' own eager attention, [layers, batch, heads, N, N]."""
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    return torch.stack(out.attentions)


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "gemma2", "gpt_oss"])
def test_captured_attention_equals_eager_output_attentions(name):
    model = _tiny(name, "eager")
    ids = _ids(3, 9)
    expected = _eager_attention(model, ids)
    captured = capture.capture_attention(model, ids)
    assert len(captured) == 3
    for b, c in enumerate(captured):
        assert c.attention.dtype == torch.float32 and c.attention.device.type == "cpu"
        assert c.attention.shape == (2, 4, 9, 9)
        torch.testing.assert_close(c.attention, expected[:, b], atol=TOLERANCE, rtol=0)
        assert c.positions.tolist() == list(range(9))
        assert c.input_ids.tolist() == ids[b].tolist()


def test_query_and_key_reproduce_the_attention(eager_model):
    name, model = eager_model
    captured = capture.capture_attention(model, _ids(2, 8), with_qk=True)
    heads, kv_heads = (4, 2) if name == "llama" else (4, 4)
    causal = torch.ones(8, 8).tril().bool() if CAUSAL[name] else torch.ones(8, 8).bool()
    for c in captured:
        assert c.query.shape == (2, heads, 8, 8) and c.key.shape == (2, kv_heads, 8, 8)
        assert c.scaling == pytest.approx([8**-0.5] * 2)
        key = c.key.repeat_interleave(heads // kv_heads, dim=1)  # key head h // groups serves query head h
        for layer in range(2):
            logits = c.scaling[layer] * c.query[layer] @ key[layer].transpose(-1, -2)
            weights = logits.masked_fill(~causal, float("-inf")).softmax(-1)
            torch.testing.assert_close(weights, c.attention[layer], atol=TOLERANCE, rtol=0)


def _recompute(c, layer, causal=True):
    """Weights from q, k and the recorded scoring rules, as metadata.SCORING_RULES defines them."""
    heads, kv_heads, n = c.query.shape[1], c.key.shape[1], c.query.shape[2]
    key = c.key[layer].repeat_interleave(heads // kv_heads, dim=0)
    logits = c.scaling[layer] * c.query[layer].double() @ key.double().transpose(-1, -2)
    if c.softcap and c.softcap[layer]:
        logits = c.softcap[layer] * torch.tanh(logits / c.softcap[layer])
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    hidden = (j > i) if causal else torch.zeros(n, n, dtype=torch.bool)
    if c.sliding_window and c.sliding_window[layer]:
        hidden = hidden | ((i - j).abs() >= c.sliding_window[layer])
    logits = logits.masked_fill(hidden, float("-inf"))
    if c.sinks and c.sinks[layer] is not None:
        sink = torch.tensor(c.sinks[layer], dtype=torch.float64).reshape(heads, 1, 1).expand(heads, n, 1)
        return torch.cat([logits, sink], -1).softmax(-1)[..., :-1].float()
    return logits.softmax(-1).float()


@pytest.mark.parametrize("name", ["gemma2", "gpt_oss"])
def test_query_key_and_scoring_rules_reproduce_softcapped_windowed_and_sink_attention(name):
    model = _tiny(name, "eager")
    if name == "gpt_oss":  # sinks start at zero; make them matter
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.sinks.copy_(torch.linspace(-2.0, 6.0, 4))
    lengths = [9, 6]
    mask = torch.zeros(2, 9, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, 9 - n:] = 1  # left padding: the window counts the input's own tokens
    captured = capture.capture_attention(model, _ids(2, 9, seed=3), attention_mask=mask, with_qk=True)
    config = model.config
    for c in captured:
        assert c.sliding_window == [4 if t == "sliding_attention" else None for t in config.layer_types]
        if name == "gemma2":
            assert c.softcap == [5.0, 5.0] and c.sinks is None
            assert c.scaling == pytest.approx([config.query_pre_attn_scalar**-0.5] * 2)
        else:
            assert c.softcap is None and len(c.sinks) == 2 and all(len(s) == 4 for s in c.sinks)
            assert c.attention.sum(-1).mean() < 0.95  # the sinks took their share
        for layer in range(2):
            torch.testing.assert_close(_recompute(c, layer), c.attention[layer], atol=TOLERANCE, rtol=0)
        plain = c.query[0] @ c.key[0].repeat_interleave(2, 0).transpose(-1, -2) * c.scaling[0]
        assert (plain.masked_fill(torch.ones(plain.shape[-1], plain.shape[-1]).triu(1).bool(), float("-inf"))
                .softmax(-1) - c.attention[0]).abs().max() > 1e-2  # the rules matter for this model


def test_models_without_extra_scoring_rules_record_none():
    (c,) = capture.capture_attention(_tiny("llama", "eager"), _ids(1, 5), with_qk=True)
    assert (c.softcap, c.sliding_window, c.sinks) == (None, None, None)


def test_query_is_taken_after_rotary_embeddings():
    model = _tiny("llama", "eager")
    ids = _ids(1, 6)
    (c,) = capture.capture_attention(model, ids, with_qk=True)
    with torch.no_grad():
        hidden = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
        before_rotary = model.model.layers[0].self_attn.q_proj(hidden).view(1, 6, 4, 8).transpose(1, 2)[0]
    torch.testing.assert_close(c.query[0, :, 0], before_rotary[:, 0], atol=TOLERANCE, rtol=0)  # position 0: no rotation
    assert (c.query[0, :, 1:] - before_rotary[:, 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_gives_each_input_its_attention_alone(eager_model, padding_side):
    name, model = eager_model
    lengths = [7, 4, 1]
    ids = _ids(3, 7, seed=2)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    if padding_side == "left":
        mask = mask.flip(1)
    ids = ids.masked_fill(mask == 0, 0)  # pad id 0
    captured = capture.capture_attention(model, ids, mask)
    for b, (c, n) in enumerate(zip(captured, lengths)):
        kept = mask[b].nonzero().flatten()
        assert c.positions.tolist() == kept.tolist()
        assert c.input_ids.tolist() == ids[b, kept].tolist()
        alone = _eager_attention(model, ids[b : b + 1, kept])[:, 0]
        assert c.attention.shape == (2, 4, n, n)
        torch.testing.assert_close(c.attention, alone, atol=TOLERANCE, rtol=0)


def test_accepts_a_tokenizer_batch():
    model = _tiny("bert", "eager")
    ids = _ids(2, 5)
    batch = transformers.BatchEncoding(
        {"input_ids": ids, "attention_mask": torch.tensor([[1] * 5, [1] * 3 + [0] * 2]), "token_type_ids": ids * 0}
    )
    by_keywords = capture.capture_attention(model, **batch)
    by_batch = capture.capture_attention(model, batch)
    as_lists = capture.capture_attention(model, {name: value.tolist() for name, value in batch.items()})
    assert [c.num_tokens for c in by_batch] == [5, 3]
    for a, b, c in zip(by_keywords, by_batch, as_lists):
        torch.testing.assert_close(a.attention, b.attention, atol=0, rtol=0)
        torch.testing.assert_close(a.attention, c.attention, atol=0, rtol=0)
    (single,) = capture.capture_attention(model, ids[1, :3])  # one input, no batch dimension
    torch.testing.assert_close(single.attention, by_batch[1].attention, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("training", [False, True])
def test_model_comes_back_as_it_was_even_when_the_forward_fails(training, monkeypatch):
    model = _tiny("llama", "sdpa")
    model.train(training)
    model.model.layers[1].eval()  # a mixed state must come back as it was, too
    modes = [m.training for m in model.modules()]

    captured = capture.capture_attention(model, _ids(1, 5))
    assert captured[0].attention.shape == (2, 4, 5, 5)
    assert model.config._attn_implementation == "sdpa"
    assert [m.training for m in model.modules()] == modes

    def fail(module, args):
        raise RuntimeError("boom")

    hook = model.model.layers[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        capture.capture_attention(model, _ids(1, 5))
    hook.remove()
    assert model.config._attn_implementation == "sdpa"
    assert [m.training for m in model.modules()] == modes
    # And it computes with SDPA again, with no interception left behind.
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        model(_ids(1, 5))
    assert len(calls) == 2  # one per layer


def test_recording_yields_the_batch_on_the_model_device_and_restores_on_error():
    model = _tiny("gpt2", "sdpa")
    ids = _ids(2, 6)
    with torch.no_grad(), capture.recording(model, with_qk=True) as recorder:
        model(ids[:, :3])
        model(ids)  # the recorder holds the latest forward
    assert recorder.num_layers == 2
    assert [tuple(a.shape) for a in recorder.attentions] == [(2, 4, 6, 6)] * 2
    assert all(a.dtype == torch.float32 and a.device == model.device for a in recorder.attentions)
    assert [tuple(k.shape) for k in recorder.keys] == [(2, 4, 6, 8)] * 2
    eager = _tiny("gpt2", "eager")
    torch.testing.assert_close(torch.stack(recorder.attentions), _eager_attention(eager, ids), atol=TOLERANCE, rtol=0)

    with pytest.raises(ValueError, match="inside"):
        with capture.recording(model):
            raise ValueError("inside")
    assert model.config._attn_implementation == "sdpa"


def test_recording_during_a_training_step_keeps_loss_and_gradients():
    model = _tiny("llama", "eager").train()
    ids = _ids(2, 6)
    loss = model(ids, labels=ids).loss
    loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with capture.recording(model) as recorder:
        recorded_loss = model(ids, labels=ids).loss
    recorded_loss.backward()
    assert recorded_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=0)
    assert recorder.num_layers == 2 and not recorder.attentions[0].requires_grad


def test_captures_on_different_models_in_threads_do_not_mix():
    models = {name: _tiny(name, "sdpa") for name in ("gpt2", "llama")}
    ids = _ids(2, 6)
    expected = {name: _eager_attention(_tiny(name, "eager"), ids) for name in models}
    results = run_in_threads(lambda name: capture.capture_attention(models[name], ids), models)
    for name, captured in results.items():
        for b, c in enumerate(captured):
            torch.testing.assert_close(c.attention, expected[name][:, b], atol=TOLERANCE, rtol=0)


def test_model_outside_the_attention_interface_is_captured_as_eager_computes_it():
    config = transformers.GPTNeoConfig(
        num_layers=2, num_heads=4, hidden_size=32, vocab_size=VOCAB, max_position_embeddings=64,
        attention_types=[[["global"], 2]], initializer_range=0.5,
    )
    torch.manual_seed(0)
    model = transformers.GPTNeoForCausalLM(config).eval()  # eager only
    ids = _ids(2, 6)
    captured = capture.capture_attention(model, ids)
    expected = _eager_attention(model, ids)
    for b, c in enumerate(captured):
        assert c.causal is True and c.layer_names == ["transformer.h.0.attn.attention", "transformer.h.1.attn.attention"]
        torch.testing.assert_close(c.attention, expected[:, b], atol=TOLERANCE, rtol=0)


def test_model_without_attention_is_named_in_the_error():
    model = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 8), torch.nn.Linear(8, 8))
    with pytest.raises(capture.CaptureError, match="model Sequential computed no attention that tb-attention can see"):
        capture.capture_attention(model, _ids(1, 4))


def test_smollm2_captured_attention_equals_eager():
    from tb_attention.convert import assets

    try:
        path = assets.smollm2_dir()
    except assets.AssetError as e:
        pytest.skip(str(e))
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    batch = tokenizer(["The cat sat on the mat."], return_tensors="pt")
    expected = _eager_attention(model, batch["input_ids"])
    (c,) = capture.capture_attention(model, **batch, with_qk=True)
    assert c.attention.shape == (30, 9, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    assert c.key.shape[1] == 3  # grouped-query attention: 3 key/value heads
    torch.testing.assert_close(c.attention, expected[:, 0], atol=TOLERANCE, rtol=0)


# ------------------------------------------------------------------------------------------------
# Any module, and encoder-decoders (models and references: tests/support/models.py)


@pytest.mark.parametrize("kind", ["nano", "nano_gqa", "mha", "encoder"])
def test_plain_modules_are_captured_named_after_their_modules(kind):
    from tests.support.models import Encoder, MHAStack, NanoGPT

    torch.manual_seed(0)
    model = {"nano": lambda: NanoGPT(), "nano_gqa": lambda: NanoGPT(kv_heads=2), "mha": lambda: MHAStack(),
             "encoder": lambda: Encoder()}[kind]().eval()
    ids = _ids(2, 7)
    captured = capture.capture_attention(model, ids, with_qk=True)
    reference = model.reference() if kind.startswith("nano") else model.reference(ids)
    names = {"nano": ["blocks.0", "blocks.1"], "mha": ["attn.0", "attn.1"],
             "encoder": ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]}[kind.split("_")[0]]
    for b, c in enumerate(captured):
        assert c.layer_names == names and [g.name for g in c.groups] == ["self"]
        assert c.causal is (kind != "encoder") and c.input_ids.tolist() == ids[b].tolist()
        torch.testing.assert_close(c.attention, torch.stack(reference)[:, b], atol=TOLERANCE, rtol=0)
        assert c.query.shape[:3] == (2, 4, 7) and c.key.shape[:3] == (2, 2 if kind == "nano_gqa" else 4, 7)


def test_plain_module_with_padding_needs_a_forward():
    from tests.support.models import MHAStack, NanoGPT

    model = NanoGPT().eval()
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    with pytest.raises(ValueError, match=r"called as model\(input_ids\), which takes no padding mask"):
        capture.capture_attention(model, _ids(2, 5), mask)
    # A module that takes a padding mask, given through `forward`: each input as if alone.
    torch.manual_seed(0)
    model = MHAStack().eval()
    ids = _ids(2, 5)
    captured = capture.capture_attention(
        model, ids, mask.flip(1), forward=lambda model, input_ids, attention_mask: model(
            input_ids, key_padding_mask=attention_mask == 0
        ),
    )
    for b, (c, n) in enumerate(zip(captured, [5, 3])):
        alone = ids[b : b + 1, mask.flip(1)[b].bool()]
        assert c.attention.shape == (2, 4, n, n) and c.positions.tolist() == mask.flip(1)[b].nonzero().flatten().tolist()
        torch.testing.assert_close(c.attention, torch.stack(model.reference(alone))[:, 0], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("family", ["t5", "bart", "marian", "whisper"])
def test_encoder_decoder_gives_encoder_decoder_and_cross_groups(family):
    from tests.support.models import encoder_decoder_inputs, hf_model

    # float64: a batch with padding under SDPA and each input alone under eager then agree to 1e-12
    # (in float32 they differ by ~1e-5, as transformers' kernels change between releases).
    model = hf_model(family, "sdpa").double()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in encoder_decoder_inputs(family, source=7, target=5).items()}
    lengths, target_lengths = [7, 5], [5, 3]
    if family != "whisper":  # padding on both sides: left for the source, right for the target
        inputs["attention_mask"] = torch.tensor([[1] * 7, [0] * 2 + [1] * 5])
    inputs["decoder_attention_mask"] = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    captured = capture.capture_attention(model, **inputs)
    eager = hf_model(family, "eager").double()
    for b, c in enumerate(captured):
        assert [g.name for g in c.groups] == ["encoder", "decoder", "cross"]
        alone = {k: v[b : b + 1] for k, v in inputs.items()}
        if family != "whisper":
            alone["input_ids"] = alone["input_ids"][:, alone.pop("attention_mask")[0].bool()]
        alone["decoder_input_ids"] = alone["decoder_input_ids"][:, alone.pop("decoder_attention_mask")[0].bool()]
        with torch.no_grad():
            out = eager(**alone, output_attentions=True)
        ns = lengths[b] if family != "whisper" else out.encoder_attentions[0].shape[-1]
        nt = target_lengths[b]
        encoder, decoder, cross = c.groups
        assert encoder.attention.shape == (2, 4, ns, ns) and not encoder.causal
        assert decoder.attention.shape == (2, 4, nt, nt) and decoder.causal
        assert cross.attention.shape == (2, 4, nt, ns)
        torch.testing.assert_close(encoder.attention, torch.stack(out.encoder_attentions)[:, 0].float(), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(decoder.attention, torch.stack(out.decoder_attentions)[:, 0].float(), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(cross.attention, torch.stack(out.cross_attentions)[:, 0].float(), atol=TOLERANCE, rtol=0)
        assert c.decoder_input_ids.tolist() == alone["decoder_input_ids"][0].tolist()
        assert cross.layer_names[0].endswith(("encoder_attn", "EncDecAttention"))
        torch.testing.assert_close(c.attention, encoder.attention, atol=0, rtol=0)


def test_a_compiled_model_is_captured_through_the_module_it_wraps():
    from tests.support.models import NanoGPT

    torch.manual_seed(0)
    model = NanoGPT().eval()
    compiled = torch.compile(model)  # capture runs model itself: nothing is compiled here
    ids = _ids(1, 6)
    (c,) = capture.capture_attention(compiled, ids)
    torch.testing.assert_close(c.attention, torch.stack(model.reference())[:, 0], atol=TOLERANCE, rtol=0)


def test_calls_are_numbered_from_each_forward_of_the_model_and_its_modules_alone_add_up():
    from tests.support.models import NanoGPT

    model = NanoGPT().eval()
    x = torch.randn(1, 5, 32)
    with torch.no_grad(), capture.recording(model) as recorder:
        model(_ids(1, 5))
        model(_ids(1, 4))
        assert recorder.names == ["blocks.0", "blocks.1"] and recorder.attentions[0].shape[-1] == 4
        model.blocks[0](x)
    assert recorder.names == ["blocks.0", "blocks.1", "blocks.0"]


def test_an_interception_entered_inside_the_models_forward_numbers_its_calls_in_order():
    """As the training-health monitor does: enter in the model's forward pre-hook, leave in its forward hook."""
    from tests.support.models import MHAStack

    model = MHAStack().eval()  # its attention modules are the model's direct children
    seen, blocks = [], []

    def enter(module, args):
        blocks.append(capture.intercept.intercepting(model, lambda call: seen.append((call.index, call.name))))
        blocks[-1].__enter__()

    def leave(module, args, output):
        blocks.pop().__exit__(None, None, None)

    model.register_forward_pre_hook(enter)
    model.register_forward_hook(leave)
    with torch.no_grad():
        model(_ids(1, 5))
    assert seen == [(0, "attn.0"), (1, "attn.1")]
