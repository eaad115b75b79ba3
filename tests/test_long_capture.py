"""Long inputs captured in query chunks (capture.long, metrics.long): equal to the dense attention pooled as
http_api.md defines it, O(N · k) memory, the model's outputs untouched, retrieval on a copy task."""

import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from tb_attention.capture import intercept
from tb_attention.capture.long import LongStream, capture_long
from tb_attention.metrics import long as long_metrics
from tb_attention.probes.needle import needle_input
from tb_attention.storage.codecs import long as codec
from tests.support import long_reference

TOKENS = 1024
CHUNK_BYTES = 4 * 4 * TOKENS * 96  # 96 query rows of 4 heads per chunk: several chunks, the last one short


def _llama(implementation, **extra):
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4 * TOKENS, initializer_range=0.5, **extra,
    )
    config._attn_implementation = implementation
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _gpt_oss(implementation):
    config = transformers.GptOssConfig(
        vocab_size=100, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=64, num_local_experts=2, num_experts_per_tok=1,
        max_position_embeddings=4 * TOKENS, initializer_range=0.5,
    )
    config._attn_implementation = implementation
    torch.manual_seed(0)
    return transformers.GptOssForCausalLM(config).eval()


class SdpaBlock(torch.nn.Module):
    """A causal self-attention block on F.scaled_dot_product_attention."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        self.last = (q, k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.proj(y.transpose(1, 2).reshape(b, n, -1))

    def reference(self):
        """float32 [H, N, N]: softmax(q·kᵀ / √d) under the causal mask, by hand in float64."""
        q, k = (t[0].double() for t in self.last)
        logits = q @ k.transpose(-1, -2) * self.head_dim**-0.5
        n = logits.shape[-1]
        return logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -torch.inf).softmax(-1).float()


class SdpaModel(torch.nn.Module):
    def __init__(self, layers=2, dim=32, heads=4, vocab=100):
        super().__init__()
        torch.manual_seed(1)
        self.embed = torch.nn.Embedding(vocab, dim)
        torch.nn.init.normal_(self.embed.weight, std=2.0)
        self.blocks = torch.nn.ModuleList(SdpaBlock(dim, heads) for _ in range(layers))

    def forward(self, input_ids):
        n, dim = input_ids.shape[1], self.embed.weight.shape[1]
        angle = torch.arange(n)[:, None] / 10000 ** (torch.arange(0, dim, 2) / dim)  # sinusoidal positions
        x = self.embed(input_ids) + torch.cat([angle.sin(), angle.cos()], -1)
        for block in self.blocks:
            x = block(x)
        return x


def _ids(n=TOKENS, seed=1):
    return torch.randint(3, 100, (n,), generator=torch.Generator().manual_seed(seed))


def _assert_layer(got, dense, plan, *, causal=True):
    """`got` (a LongLayer) equals the dense weights pooled by the contract's reference (float32 tolerances:
    an sdpa model's hidden states differ from its eager twin's in the last bits, layer after layer)."""
    dense = np.asarray(dense, np.float32)
    ref = long_reference.long_layer(dense, plan, causal)
    kept = ref.top_weight > 0  # keys of weight 0 (hidden by a window) are padding, not kept keys
    assert (got.top_index[~kept] == codec.UNUSED).all()
    # The same keys, but for near-ties the float32 rounding may swap: every kept key has the weight the
    # reference has at its rank, and all but a few slots name the very same key.
    at = np.take_along_axis(dense, np.where(kept, got.top_index, 0).astype(np.int64), -1)
    np.testing.assert_allclose(np.where(kept, at, 0), ref.top_weight, atol=2e-5)
    assert (got.top_index[kept] == ref.top_index[kept]).mean() > 0.999
    np.testing.assert_allclose(got.top_weight, ref.top_weight, atol=2e-5)
    np.testing.assert_allclose(got.remainder, ref.remainder, atol=5e-5)
    assert len(got.levels) == len(plan.levels) >= 2
    for level, expected in zip(got.levels, ref.levels):
        np.testing.assert_allclose(level, expected, atol=2e-5)
    np.testing.assert_allclose(got.profile, ref.profile, atol=2e-5)
    np.testing.assert_allclose(got.sinks, ref.sinks, atol=1e-5)
    np.testing.assert_allclose(got.profile.sum(-1), np.asarray(dense, np.float64).sum(-1).mean(-1), atol=1e-5)


def _capture(model, ids, **options):
    return capture_long(model, ids, chunk_bytes=CHUNK_BYTES, keep_layers=True, **options)


@pytest.mark.parametrize("make", [lambda: _llama("sdpa"), lambda: _llama("eager")], ids=["llama-sdpa", "llama-eager"])
def test_a_long_llama_equals_its_dense_attention_pooled(make):
    """GQA (4 query heads over 2 key heads), rotary; sdpa computes the logits per chunk, eager hands its rows."""
    model, ids = make(), _ids()
    captured = _capture(model, ids)
    with torch.no_grad():
        dense = _llama("eager")(ids[None], output_attentions=True).attentions
    assert captured.plan.top_k == 16 and captured.causal
    for layer, weights in zip(captured.long_layers, dense, strict=True):
        _assert_layer(layer, weights[0].numpy(), captured.plan)


def test_sinks_and_a_sliding_window_gpt_oss():
    """gpt-oss (eager: transformers gives it no sdpa): a learned sink per head takes a share of every row
    (rows sum below 1); a 64-token window on every other layer."""
    ids = _ids()
    captured = _capture(_gpt_oss("eager"), ids)
    with torch.no_grad():
        dense = _gpt_oss("eager")(ids[None], output_attentions=True).attentions
    for layer, weights in zip(captured.long_layers, dense, strict=True):
        assert float(weights[0].sum(-1).min()) < 0.99  # the sink's share is left out
        _assert_layer(layer, weights[0].numpy(), captured.plan)
    far = 1 + int(np.log2(64))  # a windowed layer (gpt-oss alternates) has no mass at distance >= 64
    assert min(float(layer.profile[:, far + 1 :].sum()) for layer in captured.long_layers) == 0.0


def test_a_plain_module_on_scaled_dot_product_attention():
    model = SdpaModel()
    ids = _ids()
    captured = _capture(model, ids)
    with torch.no_grad():
        model(ids[None])  # the reference's q and k, from the same weights
    for layer, block in zip(captured.long_layers, model.blocks, strict=True):
        _assert_layer(layer, block.reference().numpy(), captured.plan)
    assert captured.layer_names == ["blocks.0", "blocks.1"]


def test_the_captures_leave_the_models_outputs_bit_identical():
    model, ids = _llama("sdpa"), _ids()
    with torch.no_grad():
        plain = model(ids[None]).logits
        stream = LongStream(2, chunk_bytes=CHUNK_BYTES)
        with intercept.intercepting(model, stream):
            seen = model(ids[None]).logits
    assert len(stream.result().layers) == 2
    assert torch.equal(plain, seen)


def test_the_budget_sets_k_and_an_impossible_budget_names_long_budget():
    small = capture_long(SdpaModel(), _ids(), budget=2 * 4 * TOKENS * 5 * 4 // 3 + 64, chunk_bytes=CHUNK_BYTES)
    assert small.plan.top_k == 1
    with pytest.raises(ValueError, match="long_budget="):
        capture_long(SdpaModel(), _ids(), budget=1000)


def _peak_rss_during(function):
    """(result, peak RSS above the RSS before, bytes), sampled every 2 ms from /proc."""
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    start = rss()
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = function()
    finally:
        done.set()
        sampler.join()
    return result, max(peak[0], rss()) - start


def test_memory_at_16k_tokens_stays_far_below_one_n_by_n():
    """16,384 tokens, 4 heads: one head's N × N float32 is 1 GiB, a bool causal mask 256 MiB. The capture
    holds the top-k rows (4 heads × N × 16 × 8 bytes = 8 MiB per layer), the levels, and one chunk of
    32 MiB (its logits, weights, cumulative sums)."""
    n = 16384
    model, ids = SdpaModel(), _ids(n)
    with torch.no_grad():
        model(ids[None, :64])  # warm up the allocator and the kernels
    budget = 32 << 20  # k = 16, levels of 8 MiB in all: what is left is the chunk's work
    captured, extra = _peak_rss_during(lambda: capture_long(model, ids, budget=budget, chunk_bytes=32 << 20))
    assert captured.plan.num_queries == n and captured.plan.top_k == 16 and captured.top1.shape == (2, 4, n)
    assert extra < 220 << 20, f"{extra / 2**20:.0f} MiB above the RSS before the capture"


def test_retrieval_scores_the_head_that_copies_the_needle():
    """A copy task: head 0 of a plain module attends, from each query, to the key just after the earlier
    occurrence of its own two tokens (an induction head), so at every answer query its top key is the
    needle token being copied: retrieval 1. The other heads attend by random projections: below 0.5."""
    from tb_attention.convert import assets

    tokenizer = assets.gpt2_tokenizer()
    needle = needle_input(tokenizer, assets.wikipedia_sentences(limit=2000), 1500, 0.4, seed=2)
    ids = torch.tensor(needle.input_ids)
    vocab, heads, d = 50257, 4, 64

    class Induction(torch.nn.Module):
        def forward(self, input_ids):
            rng = torch.Generator().manual_seed(0)
            table, other = torch.randn(vocab, d, generator=rng), torch.randn(vocab, d, generator=rng)
            a, b = table[input_ids[0]], other[input_ids[0]]  # [N, d] each

            def back(x, n):  # position j carries x of token j - n
                return torch.cat([torch.zeros(n, d), x[:-n]])

            q = [(a + back(b, 1)) * 4] + [a @ torch.randn(d, d, generator=rng) / 8 for _ in range(heads - 1)]
            k = [back(a, 1) + back(b, 2)] + [a @ torch.randn(d, d, generator=rng) / 8 for _ in range(heads - 1)]
            q, k = torch.stack(q)[None], torch.stack(k)[None]
            return F.scaled_dot_product_attention(q, k, k, is_causal=True)

    captured = capture_long(Induction(), ids)
    hits, count = long_metrics.retrieval_hits(captured.top1[..., None], needle.answers, needle.keys)
    assert count == len(needle.answers) >= 2
    score = hits / count
    assert score[0, 0] == 1.0
    assert (score[0, 1:] < 0.5).all()
    np.testing.assert_array_equal(needle.input_ids[needle.needle.start : needle.needle.stop],
                                  [needle.input_ids[i + 1] for i in needle.answers])


# ---------------------------------------------------------------------------------------------
# Probe.log of long inputs, served


def test_a_probe_logs_a_long_input_that_the_routes_serve_as_its_dense_attention_pooled(tmp_path):
    """Probe(long_tokens=512) on a 1,024-token input of a plain SDPA module: `/long_rows` are the exact
    top-k of the dense attention (weights within the quantisation), `/long_profile` its profile, and the
    metrics local_share and sink_share what that profile gives."""
    from tb_attention import Probe, Writer
    from tb_attention.storage import codecs
    from tests.support.tensorboard import serving

    model, ids = SdpaModel(), _ids()
    tokens = [f"t{int(i)}" for i in ids]
    probe = Probe.from_tokens([ids.tolist()], [tokens], long_tokens=512, long_budget=8 << 20)
    with Writer(str(tmp_path / "run")) as writer:
        values = probe.log(writer, model, 3)
    with torch.no_grad():
        model(ids[None])
    dense = [block.reference().numpy() for block in model.blocks]
    plan = codec.plan(2, 4, TOKENS, TOKENS, budget=8 << 20)
    profile = np.stack([long_reference.profile(a, plan.distance_bins) for a in dense])
    sinks = np.stack([long_reference.sinks(a, 4) for a in dense])
    np.testing.assert_allclose(values["local_share"], profile[:, :, :8].sum(-1), atol=2e-5)
    np.testing.assert_allclose(values["sink_share"], sinks.sum(-1), atol=2e-5)
    assert set(values) == {"local_share", "sink_share", "max_logit"}

    def ready(tags):
        return tags.get("run", {}).get("probe", {}).get("steps") == [3]

    run = dict(run="run", tag="probe", step=3, example=0)
    with serving(str(tmp_path), ready) as tb:
        status, body = tb.get("/long_profile", run)
        assert status == 200, body
        np.testing.assert_allclose(body["profile"], profile, atol=2e-5)
        np.testing.assert_allclose(body["sinks"], sinks, atol=2e-5)
        assert body["top_k"] == plan.top_k == 16
        index, weight, _ = long_reference.top_rows(dense[1], plan.top_k, causal=True)
        status, rows = tb.get("/long_rows", {**run, "layer": 1, "head": 2, "start": 500, "stop": 700, "format": "json"})
        assert status == 200, rows
        for i, (keys, weights) in enumerate(zip(rows["index"], rows["weight"])):
            used = index[2, 500 + i] != codec.UNUSED
            assert keys == index[2, 500 + i][used].tolist()
            assert np.abs(np.array(weights) - weight[2, 500 + i][used]).max() <= codecs.MAX_QUANTIZATION_ERROR
        status, metric = tb.get("/metric", {"run": "run", "tag": "probe/local_share"})
        assert status == 200 and metric["steps"] == [3]


def test_long_inputs_refuse_what_they_cannot_store_naming_long_tokens():
    ids = _ids(600).tolist()
    tokens = [str(i) for i in ids]
    with pytest.raises(ValueError, match="long_tokens=512.*with_qk"):
        from tb_attention import Probe

        Probe.from_tokens([ids], [tokens], long_tokens=512, with_qk=True)
    with pytest.raises(ValueError, match="long_tokens=512.*a probe of their own"):
        Probe.from_tokens([ids, ids[:100]], [tokens, tokens[:100]], long_tokens=512)
