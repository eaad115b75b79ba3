"""tb_attention.capture.intercept: every attention computation of a forward, against independent references."""

import threading

import pytest
import torch
import torch.nn.functional as F
import transformers

from tb_attention import capture
from tb_attention.capture import intercept
from tb_attention.metrics import health
from tests.support.models import (
    ENCODER_DECODERS,
    Encoder,
    MHAStack,
    NanoGPT,
    encoder_decoder_inputs,
    hf_model,
    with_implementation,
)
from tests.support.threads import run_in_threads

TOLERANCE = 1e-5
IDS = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(1))


def _intercept(model, *args, **kwargs):
    """(output, calls) of one forward under interception; calls keep name, route, flags and weights."""
    calls = []

    def listener(call):
        calls.append(dict(name=call.name, index=call.index, route=call.route, causal=call.causal, cross=call.cross,
                          module=call.module, weights=call.weights(), logits=call.logits(), shape=call.shape))

    with intercept.intercepting(model, listener):
        output = model(*args, **kwargs)
    return output, calls


def _outputs(output):
    if isinstance(output, torch.Tensor):
        return [output]
    return [v for v in output.values() if isinstance(v, torch.Tensor)]


def _assert_identical(a, b):
    for x, y in zip(_outputs(a), _outputs(b), strict=True):
        assert torch.equal(x, y)


def _accepted(family, implementation):
    try:
        return hf_model(family, implementation)
    except (ValueError, ImportError) as e:
        pytest.skip(f"{family} does not accept {implementation}: {str(e)[:80]}")


# ------------------------------------------------------------------------------------------------
# Hugging Face models, inside and outside AttentionInterface


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("family", ["falcon", "bloom", "deberta_v2", "llama", "gpt2"])
def test_decoder_and_encoder_only_families_equal_their_eager_attention(family, implementation):
    if family in ("llama", "gpt2"):
        model = _llama_or_gpt2(family, implementation)
    else:
        model = _accepted(family, implementation).double()  # float64: sdpa and eager then agree to 1e-12
    reference = with_implementation(model, "eager")
    with torch.no_grad():
        expected = reference(input_ids=IDS, output_attentions=True).attentions
        plain = model(input_ids=IDS)
        output, calls = _intercept(model, input_ids=IDS)
    _assert_identical(plain, output)
    assert len(calls) == len(expected) == 2
    assert [c["index"] for c in calls] == [0, 1]
    causal = family != "deberta_v2"
    for call, eager in zip(calls, expected):
        assert call["causal"] is causal and call["cross"] is False
        torch.testing.assert_close(call["weights"], eager.float(), atol=TOLERANCE, rtol=0)
    names = {n for n, _ in model.named_modules()}
    assert all(c["name"] in names and c["name"] for c in calls)


def _llama_or_gpt2(family, implementation):
    torch.manual_seed(0)
    if family == "llama":
        config = transformers.LlamaConfig(
            vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.5,
        )
        return transformers.LlamaForCausalLM._from_config(config, attn_implementation=implementation).double().eval()
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=100, n_positions=64, initializer_range=0.5)
    return transformers.GPT2LMHeadModel._from_config(config, attn_implementation=implementation).double().eval()


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_the_layers_shared_mask_is_checked_once_per_forward(monkeypatch, implementation):
    """Checking a mask (causal? a bias?) reads the device, which on a GPU waits for every kernel
    queued: done once per forward for the mask every layer shares, not once per layer."""
    from tb_attention.capture.intercept import hf

    checks = []
    real = hf._mask_parts
    monkeypatch.setattr(hf, "_mask_parts", lambda *a: checks.append(a) or real(*a))
    model = _llama_or_gpt2("llama", implementation)  # 2 layers
    mask = torch.ones_like(IDS)
    mask[1, :3] = 0  # left padding
    _, first = _intercept(model, IDS, attention_mask=mask)
    _, second = _intercept(model, IDS[:, :6], attention_mask=mask[:, :6])  # a new forward, a new mask
    assert len(first) == len(second) == 2 and len(checks) == 2  # one check per forward
    assert all(call["causal"] for call in first + second)
    assert (first[0]["weights"][1, :, 3:, :3] == 0).all()  # padded keys hidden from real queries
    torch.testing.assert_close(second[1]["weights"][0], first[1]["weights"][0, :, :6, :6], atol=TOLERANCE, rtol=0)


def test_default_sdpa_falcon_gives_its_causal_eager_weights():
    """Falcon under SDPA, which transformers has computed outside AttentionInterface (bare SDPA) and
    inside it, and whose own output_attentions there has been non-causal numbers, then None: neither
    is a reference. The captured weights must be causal and equal Falcon's own eager attention."""
    model = hf_model("falcon", "sdpa")
    with torch.no_grad():
        expected = with_implementation(model, "eager")(input_ids=IDS, output_attentions=True).attentions
        _, calls = _intercept(model, input_ids=IDS)
    future = torch.ones(7, 7, dtype=torch.bool).triu(1)
    assert len(calls) == len(expected) == 2
    for call, eager in zip(calls, expected):
        assert call["causal"] and call["weights"][..., future].max() == 0
        torch.testing.assert_close(call["weights"], eager.float(), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("family", ENCODER_DECODERS)
def test_encoder_decoders_give_encoder_decoder_and_cross_calls(family, implementation):
    model = hf_model(family, implementation).double()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in encoder_decoder_inputs(family).items()}
    with torch.no_grad():
        expected = with_implementation(model, "eager")(**inputs, output_attentions=True)
        plain = model(**inputs)
        output, calls = _intercept(model, **inputs)
    _assert_identical(plain, output)
    kinds = [("cross" if c["cross"] else "decoder" if c["causal"] else "encoder") for c in calls]
    assert kinds == ["encoder", "encoder", "decoder", "cross", "decoder", "cross"]
    reference = [*expected.encoder_attentions]
    for self_attention, cross in zip(expected.decoder_attentions, expected.cross_attentions):
        reference += [self_attention, cross]
    for call, eager in zip(calls, reference, strict=True):
        torch.testing.assert_close(call["weights"], eager.float(), atol=TOLERANCE, rtol=0)
    source = calls[0]["shape"][2]
    assert calls[3]["shape"] == (2, 4, 5, source)  # cross: target queries, source keys


def test_gpt_oss_sinks_and_gemma2_softcap_are_recorded_and_reproduce_eager():
    for name in ("gemma2", "gpt_oss"):
        from tests.test_capture import _tiny

        model = _tiny(name, "eager")
        if name == "gpt_oss":
            with torch.no_grad():
                for layer in model.model.layers:
                    layer.self_attn.sinks.copy_(torch.linspace(-2.0, 6.0, 4))
        records = []
        with torch.no_grad(), intercept.intercepting(
            model, lambda c: records.append((c.softcap, c.sliding_window, c.sinks, c.weights()))  # noqa: B023  (called in this iteration)
        ):
            model(IDS)
        eager = with_implementation(model, "eager")
        with torch.no_grad():
            expected = eager(IDS, output_attentions=True).attentions
        for (softcap, _window, sinks, weights), reference in zip(records, expected, strict=True):
            torch.testing.assert_close(weights, reference, atol=TOLERANCE, rtol=0)
            assert (softcap is not None) == (name == "gemma2") and (sinks is not None) == (name == "gpt_oss")
        assert [r[1] for r in records] == [4 if t == "sliding_attention" else None for t in model.config.layer_types]


def test_flex_attention_implementation_is_evaluated_densely(monkeypatch):
    # transformers compiles flex_attention (a minute on a small CPU); uncompiled it computes the same.
    monkeypatch.setattr(torch, "compile", lambda function, *args, **kwargs: function)
    model = _llama_or_gpt2("llama", "flex_attention").float()
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0  # left padding: the block mask's padding part
    with torch.no_grad():
        expected = with_implementation(model, "eager")(IDS, attention_mask=mask, output_attentions=True).attentions
        plain = model(IDS, attention_mask=mask)
        output, calls = _intercept(model, IDS, attention_mask=mask)
    _assert_identical(plain, output)
    for call, eager in zip(calls, expected, strict=True):
        torch.testing.assert_close(call["weights"][0], eager[0], atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(call["weights"][1, :, 2:], eager[1, :, 2:], atol=TOLERANCE, rtol=0)


# ------------------------------------------------------------------------------------------------
# Plain PyTorch modules


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("mask", ["causal", "bool", "additive", None])
def test_sdpa_calls_equal_softmax_by_hand(mask, kv_heads):
    torch.manual_seed(0)
    model = NanoGPT(mask=mask, kv_heads=kv_heads, scale=0.3 if mask == "bool" else None).eval()
    with torch.no_grad():
        plain = model(IDS)
        output, calls = _intercept(model, IDS)
    assert torch.equal(plain, output)
    assert [c["name"] for c in calls] == ["blocks.0", "blocks.1"]
    assert [c["module"] for c in calls] == list(model.blocks)
    for call, reference in zip(calls, model.reference(), strict=True):
        assert call["route"] == "sdpa" and call["causal"] is (mask is not None)
        torch.testing.assert_close(call["weights"], reference, atol=TOLERANCE, rtol=0)
        assert bool(torch.isinf(call["logits"]).any()) is (mask is not None)


@pytest.mark.parametrize("causal", [True, False])
def test_multihead_attention_stack_equals_its_own_weights(causal):
    torch.manual_seed(0)
    model = MHAStack(causal=causal).eval()
    with torch.no_grad():
        plain = model(IDS)
        output, calls = _intercept(model, IDS)
    assert torch.equal(plain, output)
    assert [c["name"] for c in calls] == ["attn.0", "attn.1"]
    for call, reference in zip(calls, model.reference(IDS), strict=True):
        assert call["route"] == "mha" and call["causal"] is causal and call["shape"] == (2, 4, 7, 7)
        torch.testing.assert_close(call["weights"], reference, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_fast_and_slow_paths(norm_first, grad):
    torch.manual_seed(0)
    model = Encoder(norm_first=norm_first).eval()  # without grad in eval: the fused fast path
    with torch.set_grad_enabled(grad):
        plain = model(IDS)
        output, calls = _intercept(model, IDS)
    assert torch.equal(plain, output)
    assert [c["name"] for c in calls] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    for call, reference in zip(calls, model.reference(IDS), strict=True):
        torch.testing.assert_close(call["weights"], reference, atol=TOLERANCE, rtol=0)


def test_transformer_decoder_cross_attention_is_marked_cross():
    torch.manual_seed(0)
    model = torch.nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                 dim_feedforward=32, dropout=0.0, batch_first=True).eval()
    source, target = torch.randn(2, 6, 16), torch.randn(2, 4, 16)
    causal = model.generate_square_subsequent_mask(4)
    with torch.no_grad():
        plain = model(source, target, tgt_mask=causal)
        output, calls = _intercept(model, source, target, tgt_mask=causal)
    assert torch.equal(plain, output)
    assert [(c["name"], c["cross"], c["causal"], c["shape"][2:]) for c in calls] == [
        ("encoder.layers.0.self_attn", False, False, (6, 6)),
        ("decoder.layers.0.self_attn", False, True, (4, 4)),
        ("decoder.layers.0.multihead_attn", True, False, (4, 6)),
    ]


# ------------------------------------------------------------------------------------------------
# Gradients, state, threads


def _grads(model, forward):
    model.zero_grad()
    torch.manual_seed(1)
    forward().float().pow(2).mean().backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("kind", ["nano", "mha", "encoder", "llama_sdpa", "bart_eager", "bloom"])
def test_gradients_are_bit_identical_under_interception(kind):
    torch.manual_seed(0)
    if kind == "nano":
        model, forward = NanoGPT(), lambda m: m(IDS)
    elif kind == "mha":
        model, forward = MHAStack(), lambda m: m(IDS)
    elif kind == "encoder":
        model, forward = Encoder(), lambda m: m(IDS)
    elif kind == "llama_sdpa":
        model, forward = _llama_or_gpt2("llama", "sdpa").float(), lambda m: m(IDS).logits
    elif kind == "bart_eager":
        model = hf_model("bart", "eager")
        forward = lambda m: m(**encoder_decoder_inputs("bart")).logits  # noqa: E731
    else:
        model, forward = hf_model("bloom", "eager"), lambda m: m(input_ids=IDS).logits
    model.train()  # dropout on: both forwards start from the same random state
    expected = _grads(model, lambda: forward(model))
    seen = []
    with intercept.intercepting(model, lambda call: seen.append(call.weights().requires_grad)):
        got = _grads(model, lambda: forward(model))
    assert seen and not any(seen)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_nothing_stays_patched_after_the_block_even_on_error():
    sdpa, softmax = F.scaled_dot_product_attention, F.softmax
    get_interface = transformers.modeling_utils.AttentionInterface.get_interface
    model = NanoGPT().eval()
    with pytest.raises(RuntimeError, match="inside"):
        with intercept.intercepting(model, lambda call: None):
            assert F.scaled_dot_product_attention is not sdpa
            raise RuntimeError("inside")
    assert F.scaled_dot_product_attention is sdpa and F.softmax is softmax
    assert transformers.modeling_utils.AttentionInterface.get_interface is get_interface
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks
    # What torch.compile'd modules check before warning on every call about global hooks.
    assert not torch.nn.modules.module._has_any_global_hook()


def test_other_models_and_threads_are_not_seen():
    torch.manual_seed(0)
    watched, other = NanoGPT().eval(), NanoGPT().eval()
    calls = []
    with torch.no_grad(), intercept.intercepting(watched, calls.append):
        other(IDS)  # a model outside the block
        thread = threading.Thread(target=lambda: watched(IDS))  # the same model, another thread
        thread.start()
        thread.join()
        assert calls == []
        watched(IDS)
    assert len(calls) == 2


def test_concurrent_interceptions_in_threads_do_not_mix():
    torch.manual_seed(0)
    models = {"nano": NanoGPT().eval(), "mha": MHAStack().eval(), "llama": _llama_or_gpt2("llama", "sdpa")}
    expected = {"nano": lambda: models["nano"].reference(), "mha": lambda: models["mha"].reference(IDS)}

    def work(name):
        with torch.no_grad():
            _, calls = _intercept(models[name], IDS)
            return calls, expected[name]() if name in expected else None

    results = run_in_threads(work, models)
    for name, (calls, reference) in results.items():
        assert len(calls) == 2 and all(c["module"] in set(models[name].modules()) for c in calls)
        if reference is not None:
            for call, weights in zip(calls, reference):
                torch.testing.assert_close(call["weights"], weights, atol=TOLERANCE, rtol=0)


def test_logits_are_scaled_scores_with_masked_keys_at_minus_infinity():
    torch.manual_seed(0)
    model = NanoGPT(mask="causal").eval()
    with torch.no_grad():
        _, calls = _intercept(model, IDS)
    q, k, _, _ = model.blocks[0].last
    expected = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    logits = calls[0]["logits"]
    future = torch.ones(7, 7, dtype=torch.bool).triu(1)
    assert torch.isinf(logits[..., future]).all() and (logits[..., future] < 0).all()
    torch.testing.assert_close(logits[..., ~future], expected[..., ~future], atol=1e-5, rtol=0)


def test_compiled_model_is_intercepted_through_the_module_it_wraps():
    model = NanoGPT().eval()
    compiled = torch.compile(model)
    with torch.no_grad(), intercept.intercepting(compiled, lambda call: None) as interception:
        assert interception.model is model


def test_listener_errors_propagate_and_capture_error_is_the_capture_modules():
    model = NanoGPT().eval()

    def fail(call):
        raise capture.CaptureError("listener says no")

    with pytest.raises(capture.CaptureError, match="listener says no"):
        with torch.no_grad(), intercept.intercepting(model, fail):
            model(IDS)
    assert F.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"


def test_flex_attention_called_by_the_models_code_is_evaluated_densely():
    from tests.support.models import FlexModel, flex_attention

    if flex_attention is None:
        pytest.skip("this torch has no FlexAttention")
    torch.manual_seed(0)
    model = FlexModel().eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        plain = model(x)
        output, calls = _intercept(model, x)
    assert torch.equal(plain, output)
    assert [(c["route"], c["causal"]) for c in calls] == [("flex", True), ("flex", True)]
    for call, reference in zip(calls, model.reference(), strict=True):
        torch.testing.assert_close(call["weights"], reference, atol=TOLERANCE, rtol=0)
    import tests.support.models as models

    assert models.flex_attention.__name__ == "flex_attention" and models.flex_attention is not intercept.flex._flex


def test_flex_score_mod_that_cannot_run_densely_is_a_clear_error():
    from tests.support.models import FlexModel, flex_attention

    if flex_attention is None:
        pytest.skip("this torch has no FlexAttention")
    def branching(score, b, h, q, kv):
        assert q.dim() == 0  # one score at a time, as under FlexAttention's vmap: not dense-evaluable
        return score

    model = FlexModel(score_mod=branching).eval()
    with torch.no_grad(), pytest.raises(capture.CaptureError, match="score_mod cannot be evaluated densely"):
        with intercept.intercepting(model, lambda call: None):
            model(torch.randn(1, 4, 16))


@pytest.mark.parametrize("kind", ["nano_bool", "mha", "bloom", "t5"])
def test_row_chunks_of_logits_and_weights_make_the_whole(kind):
    """The monitor reads long sequences in query chunks: rows=slice(a, b) must be those rows exactly."""
    torch.manual_seed(0)
    if kind == "nano_bool":
        model, inputs = NanoGPT(mask="bool").eval(), {"input_ids": IDS}
    elif kind == "mha":
        model, inputs = MHAStack().eval(), {"input_ids": IDS}
    elif kind == "bloom":
        model, inputs = hf_model("bloom"), {"input_ids": IDS}
    else:
        model, inputs = hf_model("t5", "sdpa"), encoder_decoder_inputs("t5")
    checked = []

    def listener(call):
        n = call.shape[2]
        for whole, part in ((call.logits(), call.logits), (call.weights(), call.weights)):
            chunks = torch.cat([part(slice(a, min(a + 3, n))) for a in range(0, n, 3)], dim=2)
            torch.testing.assert_close(chunks, whole, atol=1e-6, rtol=0)  # -inf where masked, in both
        # The monitor's blocks: rows and keys, masked logits at a finite value.
        whole, keys = call.logits(), slice(1, call.shape[3] - 1)
        block = call.logits(slice(1, n), keys, health.MASKED)
        torch.testing.assert_close(block, whole[:, :, 1:, keys].clamp(min=health.MASKED), atol=1e-6, rtol=0)
        checked.append(call.name)

    with torch.no_grad(), intercept.intercepting(model, listener):
        model(*inputs.values()) if kind != "t5" else model(**inputs)
    assert len(checked) >= 2
