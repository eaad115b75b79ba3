"""What /qk serves recomputes what /attention serves: q·k with the scoring rules of ALiBi (Falcon, BLOOM),
T5's relative position bias and Llama 4's chunked attention, for probes and generation probes; a mask
or bias the rules cannot describe is refused."""

import numpy as np
import pytest
import torch

from tb_attention import Probe, Writer, capture, metadata
from tests.support.models import VOCAB, NanoGPT, chunked_llama4, decoder_lm, hf_model
from tests.support.tensorboard import plugin_routes

IDS = [[5, 17, 42, 8, 99, 3, 61, 12, 13, 70], [7, 7, 23, 50], [11, 4, 90, 31, 2, 66]]  # one batch: padded
TOKENS = [[f"t{i}" for i in ids] for ids in IDS]
TARGETS = [[0, 40, 41, 42, 43, 44, 45], [0, 9, 8], [0, 77, 78, 79, 80]]
# The served softmax against the served weights: their 8-bit quantisation alone. q/k are float16 only where
# that keeps every logit within codecs.FLOAT16_LOGIT_ERROR, which keeps the weights inside the quantisation's
# bound (codecs/qk.py); else float32 (with float16 throughout, BLOOM's weights were off by 4.6e-3). 1e-6:
# the float32 rounding of the model's own softmax.
QK_BOUND = metadata.MAX_QUANTIZATION_ERROR + 1e-6
RULES = ("attention_chunk", "key_bias", "relative_bias")


def recompute(qk, causal, rules=RULES):
    """[L, H, Nq, Nk] in float64 from a `/qk?format=json` body, as http_api.md ("GET /qk") defines it, with
    the rules named in `rules` (and the soft cap, window and sinks)."""
    out = []
    for layer in range(len(qk["scaling"])):
        rule = lambda name: (qk.get(name) or [None] * len(qk["scaling"]))[layer] if name in rules + (  # noqa: E731,B023
            "softcap", "sliding_window", "sinks", "bidirectional_spans") else None
        heads = []
        for h in range(qk["num_heads"]):
            q = np.array(qk["query"][layer][h], dtype=np.float64)
            k = np.array(qk["key"][layer][h // (qk["num_heads"] // qk["num_kv_heads"])], dtype=np.float64)
            x = qk["scaling"][layer] * q @ k.T
            nq, nk = x.shape
            i, j = np.arange(nq)[:, None], np.arange(nk)[None, :]
            if rule("softcap"):
                x = rule("softcap") * np.tanh(x / rule("softcap"))
            if rule("key_bias"):
                x = x + np.array(rule("key_bias")[h])[None, :]
            if rule("relative_bias"):
                x = x + np.array(rule("relative_bias")[h])[j - i + nq - 1]
            hidden = (j > i) if causal else np.zeros((nq, nk), dtype=bool)
            if rule("sliding_window"):
                hidden = hidden | (np.abs(i - j) >= rule("sliding_window"))
            if rule("attention_chunk"):
                hidden = hidden | (i // rule("attention_chunk") != j // rule("attention_chunk"))
            if rule("bidirectional_spans") is not None:  # causal but within each span
                hidden = hidden | (j > i)
                for a, b in rule("bidirectional_spans"):
                    hidden = hidden & ~((a <= i) & (i < b) & (a <= j) & (j < b))
            x = np.where(hidden, -np.inf, x)
            sink = np.full((nq, 1), rule("sinks")[h]) if rule("sinks") else np.full((nq, 1), -np.inf)
            both = np.concatenate([x, sink], axis=1)
            e = np.exp(both - both.max(axis=1, keepdims=True))
            heads.append((e / e.sum(axis=1, keepdims=True))[:, :-1])
        out.append(heads)
    return np.array(out)


def served(get, example, group=None):
    params = dict(run="run", tag="probe", step=0, example=example, format="json", **({"group": group} if group else {}))
    status, qk = get("/qk", **params)
    assert status == 200, qk
    status, attention = get("/attention", **params)
    assert status == 200, attention
    return qk, attention


def used(qk):
    """Per rule of RULES, the layers that use it."""
    return {name: [i for i, v in enumerate(qk.get(name) or []) if v is not None] for name in RULES}


FAMILIES = {
    # family: (model, the rules each group uses: {group: {rule: layers}})
    "falcon_alibi_eager": (lambda: hf_model("falcon_alibi", "eager"), {"self": {"key_bias": [0, 1]}}),
    "falcon_alibi_sdpa": (lambda: hf_model("falcon_alibi", "sdpa"), {"self": {"key_bias": [0, 1]}}),
    "bloom": (lambda: hf_model("bloom"), {"self": {"key_bias": [0, 1]}}),
    "t5_eager": (lambda: hf_model("t5", "eager"), {"encoder": {"relative_bias": [0, 1]},
                                                   "decoder": {"relative_bias": [0, 1]}, "cross": {}}),
    "t5_sdpa": (lambda: hf_model("t5", "sdpa"), {"encoder": {"relative_bias": [0, 1]},
                                                 "decoder": {"relative_bias": [0, 1]}, "cross": {}}),
    "llama4_eager": (lambda: chunked_llama4("eager"), {"self": {"attention_chunk": [0, 1, 2]}}),
    "llama4_sdpa": (lambda: chunked_llama4("sdpa"), {"self": {"attention_chunk": [0, 1, 2]}}),
    "nano_alibi": (lambda: NanoGPT(mask="additive").eval(), {"self": {"relative_bias": [0, 1]}}),  # a float mask
    # No bias or chunk: peaked weights from large logits, which float16 q/k moved by up to 4.2e-3 (Mistral).
    "mistral_sdpa": (lambda: decoder_lm("mistral", "sdpa"), {"self": {}}),
    "gemma2_eager": (lambda: decoder_lm("gemma2"), {"self": {}}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_served_query_key_and_rules_recompute_the_served_weights(tmp_path, family):
    make, expected = FAMILIES[family]
    model = make()
    t5 = family.startswith("t5")
    targets = dict(target_ids=TARGETS, target_tokens=[[f"y{t}" for t in ts] for ts in TARGETS]) if t5 else {}
    inputs = [ids[:4] for ids in IDS] if family == "nano_alibi" else IDS  # a plain module takes no padding
    probe = Probe.from_tokens(inputs, [t[: len(i)] for t, i in zip(TOKENS, inputs)], with_qk=True, metrics=False,
                              **targets)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    get = plugin_routes(tmp_path)
    without = 0.0
    for example, ids in enumerate(inputs):
        decoder = {"decoder_input_ids": torch.tensor([TARGETS[example]])} if t5 else {}
        (reference,) = capture.capture_attention(model, torch.tensor([ids]), with_qk=True, **decoder)
        for group, rules in expected.items():
            qk, attention = served(get, example, group if t5 else None)
            stored = np.array(attention["attention"])
            assert {name: layers for name, layers in used(qk).items() if layers} == rules, group
            assert np.abs(recompute(qk, attention["causal"]) - stored).max() <= QK_BOUND, group
            # The rules are exact: with the model's own float32 q/k the softmax is the stored weights
            # within their quantisation.
            exact = reference.group(group if t5 else "self")
            qk32 = {**qk, "query": exact.query.tolist(), "key": exact.key.tolist()}
            assert np.abs(recompute(qk32, attention["causal"]) - stored).max() <= metadata.MAX_QUANTIZATION_ERROR + 1e-5
            if rules:
                without = max(without, np.abs(recompute(qk, attention["causal"], rules=()) - stored).max())
    assert without > 3 * QK_BOUND or not any(expected.values())  # the rules matter for the models that have them


def test_bias_tables_have_one_entry_per_key_or_per_distance(tmp_path):
    model = hf_model("t5")
    probe = Probe.from_tokens(IDS[:1], TOKENS[:1], target_ids=TARGETS[:1], target_tokens=[list("abcdefg")],
                              with_qk=True, metrics=False)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    get = plugin_routes(tmp_path)
    qk, _ = served(get, 0, "encoder")
    table = np.array(qk["relative_bias"][0])
    assert table.shape == (4, 10 + 10 - 1)  # per head, j - i from -9 to 9
    # T5's encoder buckets are symmetric in sign but not in value: the table is what the model computed.
    block = model.encoder.block[0].layer[0].SelfAttention
    with torch.no_grad():
        bias = block.compute_bias(10, 10)[0].numpy()  # [H, 10, 10]
    assert np.array_equal(table[:, 9 + np.arange(10)], bias[:, 0, :])  # row 0: j - i = 0..9
    assert np.array_equal(table[:, 9 - np.arange(10)], bias[:, :, 0])  # column 0: j - i = 0..-9
    falcon = hf_model("falcon_alibi")
    with Writer(tmp_path / "falcon") as writer:
        Probe.from_tokens(IDS[:1], TOKENS[:1], with_qk=True, metrics=False, name="probe").log(writer, falcon, 0)
    status, qk = plugin_routes(tmp_path)("/qk", run="falcon", tag="probe", step=0, example=0, format="json")
    slopes = np.array(qk["key_bias"][0])[:, 1] - np.array(qk["key_bias"][0])[:, 0]
    assert np.allclose(np.array(qk["key_bias"][0]), slopes[:, None] * np.arange(10))  # ALiBi: slope · j
    assert np.all(slopes > 0)


class _Scored(torch.nn.Module):
    """One SDPA layer over embeddings with a fixed float mask `bias` or bool mask `keep` [N, N]."""

    def __init__(self, bias=None, keep=None):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(VOCAB, 16)
        self.qkv = torch.nn.Linear(16, 48)
        self.bias, self.keep = bias, keep

    def forward(self, input_ids):
        q, k, v = self.qkv(self.emb(input_ids)).view(1, -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
        n = input_ids.shape[1]
        mask = self.bias[:n, :n] if self.bias is not None else self.keep[:n, :n]
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_a_bias_or_mask_the_rules_cannot_describe_is_refused_with_qk(tmp_path):
    g = torch.Generator().manual_seed(1)
    strided = torch.ones(8, 8, dtype=torch.bool).tril() & (torch.arange(8)[None, :] % 2 == 0) | torch.eye(8, dtype=torch.bool)
    for model, what in ((_Scored(bias=torch.randn(8, 8, generator=g)), "adds a bias to its logits that depends on more"),
                        (_Scored(keep=strided), "its attention mask is not a causal mask")):
        probe = Probe.from_tokens([[1, 2, 3, 4, 5, 6]], [list("abcdef")], with_qk=True, metrics=False)
        with pytest.raises(capture.CaptureError, match=what), Writer(tmp_path / "run") as writer:
            probe.log(writer, model, 0)
        with Writer(tmp_path / "plain") as writer:  # without q/k nothing needs recomputing
            Probe.from_tokens([[1, 2, 3, 4, 5, 6]], [list("abcdef")], metrics=False).log(writer, model, 0)


def test_with_qk_on_a_model_whose_code_gives_no_query_and_key_is_refused(tmp_path):
    """MPT and GPT-Neo make their scores with torch.matmul in their own modules: the weights are
    recorded (from the softmax), q and k are not, so with_qk cannot be honoured and says so."""
    import transformers

    torch.manual_seed(0)
    models = {
        "MptForCausalLM": transformers.MptForCausalLM(transformers.MptConfig(n_layers=2, n_heads=2, d_model=16,
                                                                            vocab_size=VOCAB, max_seq_len=32)),
        "GPTNeoForCausalLM": transformers.GPTNeoForCausalLM(transformers.GPTNeoConfig(
            num_layers=2, num_heads=2, hidden_size=16, vocab_size=VOCAB, max_position_embeddings=32,
            attention_types=[[["global", "local"], 1]], window_size=4)),
    }
    for name, model in models.items():
        model.eval()
        probe = Probe.from_tokens([[1, 2, 3, 4, 5, 6]], [list("abcdef")], with_qk=True, metrics=False)
        with pytest.raises(capture.CaptureError, match=f"model {name}: with_qk=True, but its 'self' attention is "
                           "computed by code that hands tb-attention no query/key vectors"), \
                Writer(tmp_path / name) as writer:
            probe.log(writer, model, 0)
        with Writer(tmp_path / f"{name}-plain") as writer:  # the weights alone are logged as before
            Probe.from_tokens([[1, 2, 3, 4, 5, 6]], [list("abcdef")], metrics=False).log(writer, model, 0)


def test_a_window_mask_of_a_plain_module_is_found_and_stored(tmp_path):
    model = NanoGPT(mask="bool").eval()  # causal within 3 tokens, as a bool mask given to SDPA
    probe = Probe.from_tokens([IDS[0][:8]], [TOKENS[0][:8]], with_qk=True, metrics=False)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    qk, attention = served(plugin_routes(tmp_path), 0)
    assert qk["sliding_window"] == [3, 3]
    assert np.abs(recompute(qk, attention["causal"]) - np.array(attention["attention"])).max() <= QK_BOUND


GENERATING = {
    "bloom": (lambda: hf_model("bloom"), {"self": {"key_bias": [0, 1]}}),
    "falcon_alibi": (lambda: hf_model("falcon_alibi"), {"self": {"key_bias": [0, 1]}}),
    "llama4": (lambda: chunked_llama4(), {"self": {"attention_chunk": [0, 1, 2]}}),
    "t5": (lambda: hf_model("t5"), {"encoder": {"relative_bias": [0, 1]}, "decoder": {"relative_bias": [0, 1]},
                                    "cross": {}}),
}


@pytest.mark.parametrize("family", GENERATING)
def test_a_generation_probes_rules_recompute_the_rows_each_step_computed(tmp_path, gpt2_tokenizer, family):
    make, expected = GENERATING[family]
    probe = Probe(gpt2_tokenizer, [IDS[0][:7]], generate=dict(max_new_tokens=8, pad_token_id=0), with_qk=True,
                  metrics=False)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, make(), 0)
    get = plugin_routes(tmp_path)
    for group, rules in expected.items():
        qk, attention = served(get, 0, group)
        stored = np.array(attention["attention"])
        assert {name: layers for name, layers in used(qk).items() if layers} == rules, group
        assert np.abs(recompute(qk, attention["causal"]) - stored).max() <= QK_BOUND, group
        if rules:
            assert np.abs(recompute(qk, attention["causal"], rules=()) - stored).max() > 3 * QK_BOUND, group


def test_the_rules_of_a_mask_and_bias_are_found_as_http_api_md_defines_them():
    from tb_attention.capture import scoring

    n, heads = 9, 3
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    slopes = torch.tensor([0.5, 0.25, 0.125])[:, None, None]
    find = lambda bias, keep, causal=True, **kw: scoring.input_rules(bias, keep, num_heads=heads, causal=causal, **kw)  # noqa: E731
    causal = (j <= i)[None]
    rules = find(slopes * j, causal)  # BLOOM: slope · key position
    assert rules["relative_bias"] is None and torch.equal(rules["key_bias"], (slopes * j)[:, 0])
    rules = find((slopes * (j - i)).expand(heads, n, n), causal)  # the same as slope · (j - i): one per distance
    d = torch.arange(-(n - 1), n)
    assert rules["key_bias"] is None and torch.equal(rules["relative_bias"], slopes[:, 0] * d.clamp(max=0))  # 0: unseen
    distance = torch.randn(1, 2 * n - 1)
    rules = find(distance[:, j - i + n - 1], None, causal=False)  # T5: one table per distance, shared by heads
    assert rules["key_bias"] is None and torch.equal(rules["relative_bias"], distance.expand(heads, -1))
    assert find(torch.full((1, n, n), 3.0), causal) == dict.fromkeys(rules)  # a constant: nothing to store
    chunks = causal & (i // 4 == j // 4)
    assert find(None, chunks)["attention_chunk"] == 4
    assert find(None, chunks & (i - j < 2), sliding_window=2)["attention_chunk"] == 4
    assert find(None, ((i - j).abs() < 3)[None], causal=False)["sliding_window"] == 3  # found, both sides
    with pytest.raises(capture.CaptureError, match="model m, layer 7: its attention mask is not a causal mask or chunks"):
        find(None, causal & (j != 1), where="model m, layer 7")
    with pytest.raises(capture.CaptureError, match="depends on more than the key's position or the distance"):
        find(torch.randn(heads, n, n), causal)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "paligemma", "idefics3"])
def test_vision_language_probes_store_query_and_key_that_recompute_the_weights(tmp_path, family):
    """Over image and text tokens alike; PaliGemma's prefix-LM mask (the image and prompt bidirectional, the
    suffix causal) as bidirectional_spans, the prefix being the tokens whose token_type_ids are 0."""
    import warnings

    from tests.support import vlm_models as V

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = V.processor(family)
        model = V.model(family, proc)
    h, w = V.image_size(family)
    suffix = {"processor_options": {"suffix": ["a red cat"]}} if family == "paligemma" else {}
    probe = Probe(proc, [(V.image(h, w, 1), "What is this?")], name="probe", with_qk=True, metrics=False, **suffix)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    qk, attention = served(plugin_routes(tmp_path), 0)
    stored = np.array(attention["attention"])
    assert np.abs(recompute(qk, attention["causal"]) - stored).max() <= QK_BOUND
    if family == "paligemma":
        prefix = int((np.array(probe.encodings[0]["model_inputs"]["token_type_ids"]) == 0).sum())
        assert not attention["causal"] and 16 < prefix < len(attention["tokens"])
        assert qk["bidirectional_spans"] == [[[0, prefix]]] * len(qk["scaling"])
        assert np.abs(recompute({**qk, "bidirectional_spans": None}, False) - stored).max() > 3 * QK_BOUND
    else:
        assert attention["causal"] and "bidirectional_spans" not in qk


def test_a_causal_mask_bidirectional_within_spans_is_found():
    from tb_attention.capture import scoring

    n = 9
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    prefix = (j <= i) | (j < 4)  # PaliGemma: the first 4 tokens see each other
    assert scoring.input_rules(None, prefix[None], num_heads=2, causal=False)["bidirectional_spans"] == [[0, 4]]
    images = (j <= i) | ((i // 3 == j // 3) & (i >= 3))  # two blocks after a text token... of 3 tokens each
    assert scoring.input_rules(None, images[None], num_heads=2, causal=False)["bidirectional_spans"] == [[3, 6], [6, 9]]
    windowed = ((j <= i) & (i - j < 2)) | ((i < 5) & (j < 5))  # a sliding layer or-ed with a span wider than it
    rules = scoring.input_rules(None, windowed[None], num_heads=2, causal=False, sliding_window=2)
    assert rules["bidirectional_spans"] == [[0, 5]] and rules["sliding_window"] == 2
    assert torch.equal(scoring.rule_mask(n, n, causal=False, sliding_window=2, bidirectional_spans=[[0, 5]]), windowed)
    assert scoring.input_rules(None, torch.ones(1, n, n, dtype=torch.bool), num_heads=2, causal=False)["bidirectional_spans"] is None
    with pytest.raises(capture.CaptureError, match="is not all keys, a causal mask bidirectional within spans"):
        scoring.input_rules(None, (prefix & (j != 2))[None], num_heads=2, causal=False)
    q, k = np.ones((1, 2, n, 4), np.float32), np.ones((1, 2, n, 4), np.float32)
    for spans in ([[4, 2]], [[0, n + 1]], [[0, 3], [2, 5]], [[0.5, 3]], "ab"):
        with pytest.raises(ValueError, match="bidirectional_spans of layer 0 must be"):
            metadata.encode_qk(q, k, 1.0, bidirectional_spans=[spans])
    with pytest.raises(ValueError, match="spans are of self attention"):
        metadata.encode_qk(q, k[:, :, :5], 1.0, bidirectional_spans=[[[0, 3]]])
