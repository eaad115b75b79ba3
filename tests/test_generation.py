"""Generation probes: the generated ids are plain generate's, the stored rows the model's own eager attention
over prompt + generated (teacher forced), for every kind of model and cache; bad input writes nothing."""

import numpy as np
import pytest
import torch

from tb_attention import Probe, Writer, metadata
from tb_attention.metrics.generation import GenerationStats, induction_targets
from tests.support.models import NanoGPT, decoder_lm, hf_model, tiny_gpt2, with_implementation
from tests.support.tensorboard import python_provider, read_examples, request_context

BOUND = metadata.MAX_QUANTIZATION_ERROR
PROMPTS = [[5, 17, 33, 17, 8, 41, 9], [60, 61, 62]]  # token ids: the tiny models' vocabulary is 100 ids


def _log(tmp_path, probe, model, step=0):
    with Writer(tmp_path / "run") as writer:
        values = probe.log(writer, model, step)
    return values, python_provider(tmp_path)


def _plain(model, prompt, options, seed=None):
    ids = torch.tensor([prompt])
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **options)
    return out[0].tolist()


def _check_decoder_only(tmp_path, gpt2_tokenizer, model, options, seed=None):
    probe = Probe(gpt2_tokenizer, PROMPTS, generate=options, seed=seed)
    values, provider = _log(tmp_path, probe, model)
    eager = with_implementation(model, "eager")
    for prompt, (entry, example, _) in zip(PROMPTS, read_examples(provider, "run", "probe", 0)):
        generation = entry["generation"]
        expected = _plain(model, prompt, probe.options, seed)
        assert prompt + generation["ids"] == expected, "capture changed what generate wrote"
        assert generation["prompt_length"] == len(prompt) and generation["group"] == "self"
        fed = prompt + generation["ids"][:-1]
        assert example.attention.shape[2] == len(fed)
        with torch.no_grad():
            reference = torch.stack(eager(torch.tensor([fed]), output_attentions=True).attentions)[:, 0].numpy()
        assert np.abs(example.attention - reference).max() <= BOUND
        assert generation["tokens"] == gpt2_tokenizer.convert_ids_to_tokens(generation["ids"])
        assert all(0 < p <= 1 for p in generation["probs"]) and all(len(t) == 5 for t in generation["top"])
    assert {"entropy", "max_logit", "prompt_share", "induction"} <= set(values)
    return probe, values


@pytest.mark.parametrize("family,implementation", [
    ("gpt2", "eager"), ("gpt2", "sdpa"), ("llama", "sdpa"), ("mistral", "sdpa"), ("gemma2", "eager"),
    ("gpt_oss", "eager"),
])
def test_greedy_generation_is_plain_generate_and_rows_are_eager_attention(tmp_path, gpt2_tokenizer, family, implementation):
    model = decoder_lm(family, implementation)
    _check_decoder_only(tmp_path, gpt2_tokenizer, model, dict(max_new_tokens=12, pad_token_id=0))


def test_a_static_cache_is_read_at_the_positions_it_holds(tmp_path, gpt2_tokenizer):
    model = decoder_lm("llama", "sdpa")
    _check_decoder_only(tmp_path, gpt2_tokenizer, model, dict(max_new_tokens=10, cache_implementation="static",
                                                              pad_token_id=0))


def test_a_sliding_window_cache_keeps_the_window_as_the_model_masked_it(tmp_path, gpt2_tokenizer):
    # Mistral's window is 4 keys: the prompt and 12 new tokens run far past it, rows hold 0 before the window.
    model = decoder_lm("mistral", "sdpa")
    _, _ = _check_decoder_only(tmp_path, gpt2_tokenizer, model, dict(max_new_tokens=12, pad_token_id=0))
    provider = python_provider(tmp_path)
    (_, example, _), _ = read_examples(provider, "run", "probe", 0)
    last = example.attention[:, :, -1]
    n = last.shape[-1]
    assert np.all(last[:, :, : n - 4] == 0) and np.all(last[:, :, n - 4 :].sum(-1) > 0.99)


def test_sampling_with_a_seed_is_reproduced_and_the_callers_random_state_kept(tmp_path, gpt2_tokenizer):
    model = decoder_lm("llama", "eager")
    before = torch.random.get_rng_state()
    probe, _ = _check_decoder_only(tmp_path, gpt2_tokenizer, model,
                                   dict(max_new_tokens=10, do_sample=True, top_k=20, pad_token_id=0), seed=7)
    entry = read_examples(python_provider(tmp_path), "run", "probe", 0)[0][0]
    assert entry["generation"]["seed"] == 7 and entry["generation"]["do_sample"] is True
    torch.random.set_rng_state(before)  # _plain above set the global seed for its reference
    state = torch.random.get_rng_state()
    with Writer(tmp_path / "again") as writer:
        probe.log(writer, model, 1)
    assert torch.equal(torch.random.get_rng_state(), state), "the probe consumed the training loop's random numbers"


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoders_store_each_generated_tokens_decoder_and_cross_rows(tmp_path, gpt2_tokenizer, family):
    model = hf_model(family, "sdpa")
    options = dict(max_new_tokens=6)
    probe = Probe(gpt2_tokenizer, PROMPTS, generate=options)
    values, provider = _log(tmp_path, probe, model)
    groups = {name: read_examples(provider, "run", "probe", 0, group=name) for name in ("encoder", "decoder", "cross")}
    eager = with_implementation(model, "eager")
    for i, prompt in enumerate(PROMPTS):
        entry = groups["decoder"][i][0]
        generation = entry["generation"]
        expected = _plain(model, prompt, probe.options)
        start = expected[: len(expected) - len(generation["ids"])]
        assert start + generation["ids"] == expected and generation["group"] == "decoder"
        assert generation["prompt_length"] == len(start)
        fed = start + generation["ids"][:-1]
        with torch.no_grad():
            out = eager(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([fed]), output_attentions=True)
        for name, reference in (("encoder", out.encoder_attentions), ("decoder", out.decoder_attentions),
                                ("cross", out.cross_attentions)):
            stored = groups[name][i][1].attention
            assert np.abs(stored - torch.stack(reference)[:, 0].numpy()).max() <= BOUND, name
    assert {"entropy", "decoder/prompt_share", "cross/entropy", "cross/max_logit"} <= set(values)


class _CachedNano(NanoGPT):
    """nanoGPT with a KV cache: step(model, ids, cache) feeds only the new tokens."""

    def step(self, ids, cache):
        past = 0 if cache is None else cache[0][0].shape[2]
        x = self.wte(ids) + self.wpe(torch.arange(past, past + ids.shape[1]))
        new_cache = []
        for index, block in enumerate(self.blocks):
            b, n, _ = x.shape
            h = block.ln(x)
            q = block.q(h).view(b, n, block.heads, block.head_dim).transpose(1, 2)
            k, v = block.kv(h).view(b, n, 2, block.kv_heads, block.head_dim).permute(2, 0, 3, 1, 4)
            if cache is not None:
                k, v = torch.cat([cache[index][0], k], 2), torch.cat([cache[index][1], v], 2)
            new_cache.append((k, v))
            mask = torch.ones(n, k.shape[2], dtype=torch.bool).tril(k.shape[2] - n)
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.proj(y.transpose(1, 2).reshape(b, n, -1))
            x = x + block.mlp(x)
        return self.head(x), new_cache


@pytest.mark.parametrize("cached", [True, False])
def test_a_plain_model_generates_through_its_step_function(tmp_path, gpt2_tokenizer, cached):
    torch.manual_seed(0)
    model = _CachedNano(layers=2).eval()
    step = (lambda m, ids, cache: m.step(ids, cache)) if cached else (lambda m, ids, cache: m(ids))
    probe = Probe(gpt2_tokenizer, PROMPTS, generate=dict(max_new_tokens=8), step=step)
    values, provider = _log(tmp_path, probe, model)
    for prompt, (entry, example, _) in zip(PROMPTS, read_examples(provider, "run", "probe", 0)):
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(8):  # greedy, by hand, without a cache
                ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
            assert prompt + entry["generation"]["ids"] == ids
            model(torch.tensor([ids[:-1]]))
        reference = torch.stack(model.reference())[:, 0].numpy()
        assert np.abs(example.attention - reference).max() <= BOUND
    assert "prompt_share" in values


def test_generation_is_served_with_its_metrics(tmp_path, gpt2_tokenizer):
    model = tiny_gpt2(attn_implementation="sdpa")
    probe = Probe(gpt2_tokenizer, ["The cat sat on the mat. The cat"], generate=dict(max_new_tokens=5, pad_token_id=0))
    _, provider = _log(tmp_path, probe, model)
    tensors = provider.read_tensors(request_context(), experiment_id="", plugin_name="attention", downsample=10)["run"]
    assert {"probe/prompt_share", "probe/induction", "probe/max_logit"} <= set(tensors)
    entry = read_examples(provider, "run", "probe", 0)[0][0]
    assert entry["generation"]["prompt"] == "The cat sat on the mat. The cat"
    assert entry["generation"]["stop"] == "max_new_tokens" and entry["generation"]["options"]["max_new_tokens"] == 5


def test_chat_prompts_go_through_the_chat_template(gpt2_tokenizer):
    tokenizer = gpt2_tokenizer
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}" \
                              "{% if add_generation_prompt %}<assistant>{% endif %}"
    try:
        probe = Probe(tokenizer, [[{"role": "user", "content": "Hi there"}]], generate={})
        assert probe.encodings[0]["prompt"] == "<user>Hi there\n<assistant>" and probe.encodings[0]["text"] == "Hi there"
        assert probe.encodings[0]["input_ids"] == tokenizer("<user>Hi there\n<assistant>")["input_ids"]
        assert probe.max_new_tokens == 32 and probe.options["do_sample"] is False
    finally:
        tokenizer.chat_template = None


@pytest.mark.parametrize("options,model,error", [
    (dict(max_new_tokens=0), "gpt2", "max_new_tokens must be a positive number"),
    (dict(max_new_tokens=-3), "gpt2", "max_new_tokens must be a positive number"),
    (dict(max_new_tokens=60), "gpt2", "more than the model's context of 64 positions"),
    (dict(max_new_tokens=4, output_attentions=True), "gpt2", "the probe sets output_attentions itself"),
    (dict(max_new_tokens=4, num_beams=3), "gpt2", "num_beams=3 decodes several sequences"),
    (dict(max_new_tokens=4, num_return_sequences=2, do_sample=True), "gpt2", "num_return_sequences=2"),
    (dict(max_new_tokens=4), "bert", "has no generate"),
    (dict(max_new_tokens=4), "text", "token ids up to 6,342, but the model's vocabulary has 100"),
    (dict(max_new_tokens=4), "nano", "has no generate"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, gpt2_tokenizer, options, model, error):
    prompts = ["The capital of France is Paris"] if model == "text" else PROMPTS
    model = NanoGPT() if model == "nano" else decoder_lm("gpt2" if model == "text" else model)
    with pytest.raises((ValueError, TypeError), match=error):
        probe = Probe(gpt2_tokenizer, prompts, generate=options)
        with Writer(tmp_path / "run") as writer:
            probe.log(writer, model, 0)
    assert not any(p.stat().st_size > 200 for p in tmp_path.rglob("events.out.tfevents.*")), "something was written"


def test_step_without_generate_and_arguments_a_probe_cannot_take(gpt2_tokenizer):
    with pytest.raises(TypeError, match="belong to generation probes"):
        Probe(gpt2_tokenizer, ["a"], step=lambda m, i, c: None)
    with pytest.raises(TypeError, match="does not take targets"):
        Probe(gpt2_tokenizer, ["a"], generate={}, targets=["b"])
    with pytest.raises(ValueError, match="with step=, generation takes only .*; not repetition_penalty"):
        Probe(gpt2_tokenizer, [[1, 2]], generate=dict(max_new_tokens=2, repetition_penalty=1.2),
              step=lambda m, ids, cache: m(ids))


def test_induction_and_prompt_share_against_their_definition():
    ids = [4, 7, 9, 4, 7, 2, 4]  # decoding queries from row 3 (prompt of 4): rows 3 (x=4), 4 (x=7), 5, 6 (x=4)
    queries, keys = induction_targets(ids, 3)
    assert sorted(zip(queries.tolist(), keys.tolist())) == [(3, 1), (4, 2), (6, 1), (6, 4)]
    rng = np.random.default_rng(0)
    weights = np.tril(rng.random((2, 7, 7))) + np.eye(7)
    weights /= weights.sum(-1, keepdims=True)
    stats = GenerationStats(1, 2)
    stats.update(0, weights, ids, 4)
    result = stats.result()
    rows = weights[:, 3:]
    np.testing.assert_allclose(result["prompt_share"][0], rows[:, :, :4].sum((1, 2)) / rows.sum((1, 2)), rtol=1e-6)
    expected = (weights[:, 3, 1] + weights[:, 4, 2] + weights[:, 6, 1] + weights[:, 6, 4]) / 3  # 3 queries repeat
    np.testing.assert_allclose(result["induction"][0], expected, rtol=1e-6)


def test_real_smollm2_answers_as_plain_generate_and_its_rows_are_eager_attention(tmp_path):
    import transformers

    from tb_attention.convert import assets

    folder = str(assets.smollm2_dir())
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    question = [{"role": "user", "content": "What is the capital of France?"}]
    probe = Probe(tokenizer, [question], name="chat", generate=dict(max_new_tokens=16))
    _log(tmp_path, probe, model)
    (entry, example, _), = read_examples(python_provider(tmp_path), "run", "chat", 0)
    generation = entry["generation"]
    prompt = probe.encodings[0]["input_ids"]
    assert prompt + generation["ids"] == _plain(model, prompt, probe.options)
    assert "Paris" in generation["text"]
    fed = prompt + generation["ids"][:-1]
    eager = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        reference = torch.stack(eager(torch.tensor([fed]), output_attentions=True).attentions)[:, 0].numpy()
    assert example.attention.shape == reference.shape == (30, 9, len(fed), len(fed))
    assert np.abs(example.attention - reference).max() <= BOUND


@pytest.mark.parametrize("family,options", [
    ("gemma2", dict(max_new_tokens=10)),  # soft cap, a sliding window of 4 on alternate layers
    ("gpt_oss", dict(max_new_tokens=10)),  # sinks, sliding windows
    ("llama", dict(max_new_tokens=10, cache_implementation="static")),
])
def test_with_qk_stores_each_positions_query_and_key_as_a_teacher_forced_forward_has_them(tmp_path, gpt2_tokenizer,
                                                                                          family, options):
    from tb_attention import capture

    model = decoder_lm(family, "eager")
    probe = Probe(gpt2_tokenizer, PROMPTS[:1], generate={**options, "pad_token_id": 0}, with_qk=True)
    _log(tmp_path, probe, model)
    (entry, example, qk), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    fed = PROMPTS[0] + entry["generation"]["ids"][:-1]
    (reference,) = capture.capture_attention(model, torch.tensor([fed]), with_qk=True)
    np.testing.assert_allclose(qk.query, reference.query.numpy(), atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(qk.key, reference.key.numpy(), atol=2e-2, rtol=1e-2)
    assert qk.scaling == pytest.approx(reference.scaling)
    assert qk.rule("softcap") == (reference.softcap or [None, None])
    assert qk.rule("sliding_window") == (reference.sliding_window or [None, None])
    if reference.sinks:
        np.testing.assert_allclose(np.array(qk.rule("sinks")), np.array(reference.sinks), rtol=1e-3)
    else:
        assert qk.rule("sinks") == [None, None]


def test_a_generation_config_is_taken_as_generate_takes_it(tmp_path, gpt2_tokenizer):
    from transformers import GenerationConfig

    model = decoder_lm("llama", "sdpa")
    config = GenerationConfig(max_new_tokens=7, do_sample=False, pad_token_id=0, eos_token_id=None)
    probe = Probe(gpt2_tokenizer, PROMPTS[:1], generate=config)
    _log(tmp_path, probe, model)
    (entry, _, _), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert PROMPTS[0] + entry["generation"]["ids"] == _plain(model, PROMPTS[0], {"generation_config": config})
    assert entry["generation"]["options"]["generation_config"]["max_new_tokens"] == 7
    with pytest.raises(ValueError, match="sets no max_new_tokens"):
        Probe(gpt2_tokenizer, PROMPTS, generate=GenerationConfig())


def test_demo_smollm2_answers_a_chat_question(tmp_path, monkeypatch):
    from demo import chat
    from tb_attention.convert import assets

    try:
        assets.smollm2_dir()
    except assets.AssetError as e:
        pytest.skip(str(e))
    monkeypatch.setattr(chat, "QUESTIONS", chat.QUESTIONS[:1])  # one question keeps the test short; the demo asks three
    assert chat.main(tmp_path, max_new_tokens=12) == ["The capital of France is Paris."]
    [(entry, example, _)] = read_examples(python_provider(tmp_path), chat.RUN, chat.TAG, 0)
    generation = entry["generation"]
    assert generation["stop"] == "eos" and not generation["do_sample"]
    assert generation["prompt"].startswith("<|im_start|>system") and "What is the capital of France?" in generation["prompt"]
    assert generation["tokens"][:4] == ["The", "Ġcapital", "Ġof", "ĠFrance"]
    n = generation["prompt_length"] + len(generation["ids"]) - 1  # the prompt, then every generated token but the last
    assert example.attention.shape == (30, 9, n, n)  # SmolLM2-135M: 30 layers x 9 heads


def test_demo_gpt2_training_logs_what_it_writes_every_100_steps(tmp_path):
    from demo import train

    train.train(tmp_path / "logs", tmp_path / "work", steps=100, layers=1, heads=2, width=16, probe_every=100,
                health_every=100, checkpoints=None)
    provider = python_provider(tmp_path / "logs")
    for step in (0, 100):
        entries = [entry for entry, _, _ in read_examples(provider, "train", train.GENERATION_TAG, step)]
        assert [e["generation"]["prompt"] for e in entries] == train.GENERATION_PROMPTS
        for entry in entries:
            generation = entry["generation"]
            assert not generation["do_sample"] and generation["options"]["max_new_tokens"] == train.GENERATION_TOKENS
            assert len(generation["ids"]) == train.GENERATION_TOKENS or generation["stop"] == "eos"


def test_a_generated_id_the_tokenizer_cannot_decode_is_named_and_warned_of(tmp_path, gpt2_tokenizer):
    from transformers import LogitsProcessor, LogitsProcessorList

    class Always50300(LogitsProcessor):  # an id of the model's padded vocabulary (50400) past the tokenizer's
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, 50300] = 1e4
            return scores

    model = tiny_gpt2(vocab=50400)
    probe = Probe(gpt2_tokenizer, ["The cat sat"],
                  generate=dict(max_new_tokens=2, pad_token_id=0, logits_processor=LogitsProcessorList([Always50300()])))
    with pytest.warns(UserWarning, match=r"wrote or ranked id 50300, which its tokenizer \(50257 tokens\) has no "
                                         r"token for.*vocabulary is larger.*suppress_tokens"):
        _log(tmp_path, probe, model)
    (entry, _, _), = read_examples(python_provider(tmp_path), "run", "probe", 0)
    assert entry["generation"]["ids"] == [50300, 50300]
    assert entry["generation"]["tokens"] == ["\u27e8id 50300: not in the tokenizer\u27e9"] * 2
    with pytest.raises(ValueError, match="has no token for id 50300, in prompt 0: give prompt ids the tokenizer knows"):
        Probe(gpt2_tokenizer, [[5, 50300]], generate=dict(max_new_tokens=2))
