"""Attention health: the chunked statistics against full-matrix references, and the training monitor."""

import math
import os
import tempfile

import pytest
import torch

from tb_attention.metrics import health


def reference(query, key, *, scale, causal=False, softcap=None, window=None, sinks=None, real=None):
    """The four statistics by hand, one query row at a time, from full float64 q·kᵀ matrices."""
    b_size, h_size, nq, _ = query.shape
    nk, groups = key.shape[2], query.shape[1] // key.shape[1]
    real = torch.ones(b_size, nk, dtype=torch.bool) if real is None else real
    out = {m: [] for m in health.METRICS}
    for h in range(h_size):
        top, entropies, nulls, weights = -math.inf, [], [], []
        for b in range(b_size):
            x = scale * query[b, h].double() @ key[b, h // groups].double().T  # [Nq, Nk]
            if softcap:
                x = softcap * torch.tanh(x / softcap)
            positions = [j for j in range(nk) if real[b, j]]
            first = positions[0]
            for i in range(nq):
                pos = i + nk - nq
                if not real[b, pos]:
                    continue
                allowed = [j for j in positions if (not causal or j <= pos) and (not window or abs(pos - j) < window)]
                row = x[i, allowed]
                top = max(top, row.max().item())
                extra = [] if sinks is None else [float(sinks[h])]
                p = torch.softmax(torch.cat([row, torch.tensor(extra, dtype=torch.float64)]), 0)[: len(allowed)]
                entropies.append(-(p * p.log()).sum().item())
                weights.append(p.max().item())
                if pos > first:
                    nulls.append(p[allowed.index(first)].item() if first in allowed else 0.0)
        out["max_logit"].append(top)
        out["attention_entropy"].append(sum(entropies) / len(entropies))
        out["null_attention"].append(sum(nulls) / len(nulls))
        out["max_weight"].append(sum(weights) / len(weights))
    return {m: torch.tensor(v, dtype=torch.float64) for m, v in out.items()}


def assert_matches(got, want, tol=1e-4):
    for metric in health.METRICS:
        assert torch.allclose(got[metric].double(), want[metric], atol=tol, rtol=tol), (metric, got[metric], want[metric])


def qk(b, h, h_kv, nq, nk, d, seed=0, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, nq, d, generator=g) * spread, torch.randn(b, h_kv, nk, d, generator=g)


@pytest.mark.parametrize("chunk_size", [1, 5, 256])
def test_causal_grouped_query_statistics_equal_the_full_matrix_reference(chunk_size):
    query, key = qk(2, 6, 2, 13, 13, 8)
    got = health.statistics(query, key, scale=8**-0.5, causal=True, chunk_size=chunk_size)
    assert_matches(got, reference(query, key, scale=8**-0.5, causal=True))


def test_bidirectional_statistics_with_soft_cap_window_and_sinks():
    query, key = qk(2, 4, 4, 11, 11, 16, seed=1, spread=6.0)
    sinks = torch.tensor([0.0, 2.0, -1.0, 5.0])
    got = health.statistics(query, key, scale=0.25, softcap=3.0, sliding_window=4, sinks=sinks, chunk_size=3)
    want = reference(query, key, scale=0.25, softcap=3.0, window=4, sinks=sinks)
    assert_matches(got, want)
    assert (got["max_logit"] <= 3.0).all()  # the soft cap bounds what the model actually used


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_is_neither_a_query_nor_a_key_and_null_means_the_first_real_key(side):
    query, key = qk(3, 2, 2, 10, 10, 4, seed=2)
    lengths = [10, 7, 4]
    real = torch.zeros(3, 10, dtype=torch.bool)
    for b, n in enumerate(lengths):
        if side == "right":
            real[b, :n] = True
        else:
            real[b, 10 - n :] = True
    got = health.statistics(query, key, scale=0.5, causal=True, key_mask=real, chunk_size=4)
    assert_matches(got, reference(query, key, scale=0.5, causal=True, real=real))


def test_a_bool_or_additive_mask_equals_the_same_mask_given_as_rules():
    query, key = qk(2, 3, 3, 9, 9, 4, seed=3)
    allowed = torch.ones(9, 9, dtype=torch.bool).tril()
    want = reference(query, key, scale=0.5, causal=True)
    assert_matches(health.statistics(query, key, scale=0.5, attn_mask=allowed[None, None], chunk_size=2), want)
    additive = torch.zeros(2, 1, 9, 9).masked_fill(~allowed, torch.finfo(torch.float32).min)
    assert_matches(health.statistics(query, key, scale=0.5, attn_mask=additive, chunk_size=4), want)


def test_queries_after_a_cache_see_every_earlier_key():
    query, key = qk(1, 2, 1, 4, 12, 8, seed=4)
    got = health.statistics(query, key, scale=0.3, causal=True, chunk_size=3)
    assert_matches(got, reference(query, key, scale=0.3, causal=True))


def test_max_logit_is_the_probe_entry_point_and_matches_statistics():
    query, key = qk(1, 4, 4, 7, 7, 8, seed=5)
    assert torch.equal(health.max_logit(query, key, scale=0.2, causal=True),
                       health.statistics(query, key, scale=0.2, causal=True)["max_logit"])


def test_row_max_logits_are_each_rows_largest_masked_logit_and_their_max_is_max_logit():
    query, key = qk(2, 3, 3, 10, 10, 8, seed=7)
    rows = health.row_max_logits(lambda r: health.scores(query, key, r, scale=0.4, causal=True), 10, chunk_size=3)
    full = (0.4 * query.double() @ key.double().transpose(-1, -2)).masked_fill(
        torch.ones(10, 10, dtype=torch.bool).triu(1), -math.inf)
    assert torch.allclose(rows.double(), full.amax(dim=-1), atol=1e-5)
    assert torch.equal(rows.amax(dim=(0, 2)), health.max_logit(query, key, scale=0.4, causal=True, chunk_size=3))


def test_a_nan_logit_shows_in_the_statistics_instead_of_vanishing():
    query, key = qk(1, 2, 2, 5, 5, 4, seed=6)
    query[0, 1, 3, 0] = math.nan
    got = health.statistics(query, key, causal=True)
    assert math.isnan(got["attention_entropy"][1]) and not math.isnan(got["attention_entropy"][0])


def test_bad_arguments_are_named():
    query, key = qk(1, 3, 2, 4, 4, 4)
    with pytest.raises(ValueError, match="multiple of the key heads"):
        health.statistics(query, key)
    with pytest.raises(ValueError, match="chunk_size"):
        health.statistics(*qk(1, 2, 2, 4, 4, 4), chunk_size=0)


def _peak_extra_bytes(fn):
    """Peak resident memory `fn` adds (Linux: clear_refs 5 resets the high-water mark VmHWM)."""
    import re

    def field(name):
        return int(re.search(rf"{name}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = field("VmRSS")
    fn()
    return field("VmHWM") - before


def _can_measure_peak_memory():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM" in open("/proc/self/status").read()
    except OSError:
        return False


needs_peak_memory = pytest.mark.skipif(not _can_measure_peak_memory(), reason="needs Linux's /proc/self/clear_refs")

N_LONG = 4096  # tokens of the memory-bound test


@needs_peak_memory
def test_statistics_at_4096_tokens_stay_far_below_one_full_attention_matrix():
    heads, full = 4, 4 * N_LONG * N_LONG * 4  # bytes of one float32 [H, N, N]
    query, key = qk(1, heads, heads, N_LONG, N_LONG, 32)
    health.statistics(query[:, :, :64], key[:, :, :64], causal=True)  # kernels loaded before measuring
    chunked = _peak_extra_bytes(lambda: health.statistics(query, key, causal=True, chunk_size=128))
    assert chunked < full / 4, f"{chunked / 2**20:.0f} MiB extra for a {full / 2**20:.0f} MiB [H, N, N]"
    # The measurement itself is sound: one chunk of all N rows does hold full matrices.
    unchunked = _peak_extra_bytes(lambda: health.statistics(query, key, causal=True, chunk_size=N_LONG))
    assert unchunked >= full


# ---------------------------------------------------------------------------------------------
# The monitor on training steps


def gpt2(layers=2, heads=4, embed=32, seed=0, dropout=0.0, attn_implementation=None):
    """A tiny random GPT-2 in training mode, under transformers' default attention (SDPA) unless told."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, n_head=heads, n_embd=embed, vocab_size=97, n_positions=64,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=0, eos_token_id=0)
    if attn_implementation:
        config._attn_implementation = attn_implementation
    return GPT2LMHeadModel(config).train()


class SdpaBlock(torch.nn.Module):
    """A plain-PyTorch causal self-attention block on F.scaled_dot_product_attention (nanoGPT's shape)."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)
        self.last_qk = None

    def forward(self, x):
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        self.last_qk = (q.detach(), k.detach())
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.out(y.transpose(1, 2).reshape(b, n, e))


class SdpaModel(torch.nn.Module):
    def __init__(self, layers=2, dim=32, heads=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(97, dim)
        self.blocks = torch.nn.ModuleList(SdpaBlock(dim, heads) for _ in range(layers))
        self.head = torch.nn.Linear(dim, 97)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def loss(self, ids):
        logits = self(ids)
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))


def batch(size=3, n=16, seed=0):
    return torch.randint(97, (size, n), generator=torch.Generator().manual_seed(seed))


def gpt2_reference(model, hidden_states):
    """Per layer, the four statistics from GPT-2's own q and k (ln_1, c_attn, heads), full matrices."""
    config = model.config
    d = config.n_embd // config.n_head
    rows = []
    for block, hidden in zip(model.transformer.h, hidden_states):
        with torch.no_grad():
            q, k, _ = block.attn.c_attn(block.ln_1(hidden)).split(config.n_embd, dim=2)
        q = q.view(*q.shape[:2], config.n_head, d).transpose(1, 2)
        k = k.view(*k.shape[:2], config.n_head, d).transpose(1, 2)
        rows.append(reference(q, k, scale=d**-0.5, causal=True))
    return {m: torch.stack([r[m] for r in rows]).numpy() for m in health.METRICS}


def read_metrics(logdir, run="run", tag="attention_health"):
    """{metric: {step: [L, H]}} as the plugin's data provider serves them."""
    from tests.support.tensorboard import python_provider, request_context

    provider = python_provider(logdir)
    tensors = provider.read_tensors(request_context(), experiment_id="", plugin_name="attention", downsample=1000)
    return {
        name.split("/", 1)[1]: {d.step: d.numpy for d in series}
        for name, series in tensors[run].items() if name.startswith(tag + "/")
    }


def test_logged_values_equal_gpt2s_own_q_and_k_by_hand_at_every_step(tmp_path):
    import numpy as np

    from tb_attention import AttentionMonitor, Writer

    model = gpt2()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    monitor = AttentionMonitor(model, every_n_steps=1)
    expected = {}
    with Writer(tmp_path / "run") as writer:
        for step in range(3):
            ids = batch(seed=step)
            out = model(input_ids=ids, labels=ids, output_hidden_states=True)
            out.loss.backward()
            expected[step] = gpt2_reference(model, out.hidden_states)  # the weights this forward used
            optimizer.step()
            optimizer.zero_grad()
            values = monitor.log(writer, step)
            for metric in health.METRICS:
                np.testing.assert_allclose(values[metric], expected[step][metric], rtol=1e-4, atol=1e-4)
    assert monitor.layer_names == ["transformer.h.0.attn", "transformer.h.1.attn"]
    served = read_metrics(tmp_path)
    assert set(served) == set(health.METRICS)
    assert sorted(served["max_logit"]) == [0, 1, 2]
    for step in range(3):
        for metric in health.METRICS:
            np.testing.assert_allclose(served[metric][step], expected[step][metric], rtol=1e-4, atol=1e-4)
    assert not np.allclose(served["max_logit"][0], served["max_logit"][2])  # the weights moved


def test_padding_of_the_training_batch_is_left_out(tmp_path):
    import numpy as np

    from tb_attention import AttentionMonitor

    model = gpt2()
    ids = batch(size=2, n=12)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding: positions 7.. of the second row are not real queries
    monitor = AttentionMonitor(model)
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    out.logits.sum().backward()
    values = monitor.log(_NullWriter(), 0)
    config, d = model.config, model.config.n_embd // model.config.n_head
    for layer, (block, hidden) in enumerate(zip(model.transformer.h, out.hidden_states)):
        with torch.no_grad():
            q, k, _ = block.attn.c_attn(block.ln_1(hidden)).split(config.n_embd, dim=2)
        q, k = (t.view(2, 12, config.n_head, d).transpose(1, 2) for t in (q, k))
        want = reference(q, k, scale=d**-0.5, causal=True, real=mask.bool())
        for metric in health.METRICS:
            np.testing.assert_allclose(values[metric][layer], want[metric].numpy(), rtol=1e-4, atol=1e-4)


class _NullWriter:
    """A writer that keeps what it is given (the summaries are checked elsewhere)."""

    def __init__(self):
        self.summaries = []

    def add_summary(self, summary, global_step=None, walltime=None):
        self.summaries.append((global_step, summary))


def _parameters_and_grads(model):
    return [(name, p.detach().clone(), None if p.grad is None else p.grad.clone()) for name, p in model.named_parameters()]


def _train(model, loss_of, steps, monitor=None, seed=0):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses, grads = [], []
    for step in range(steps):
        torch.manual_seed(100 + step)  # dropout draws the same masks in both twins
        loss = loss_of(model, batch(seed=seed + step))
        loss.backward()
        grads.append(_parameters_and_grads(model))
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
        if monitor is not None:
            assert monitor.log(_NullWriter(), step)  # values were computed on this step
    return losses, grads


@pytest.mark.parametrize("kind", ["gpt2-sdpa", "gpt2-eager", "plain-sdpa"])
def test_outputs_and_gradients_are_bit_identical_to_an_unmonitored_twin(kind):
    import copy

    from tb_attention import AttentionMonitor

    if kind.startswith("gpt2"):
        model = gpt2(dropout=0.1, attn_implementation="eager" if kind == "gpt2-eager" else None)
        loss_of = lambda m, ids: m(input_ids=ids, labels=ids).loss  # noqa: E731
    else:
        model = SdpaModel()
        loss_of = lambda m, ids: m.loss(ids)  # noqa: E731
    twin = copy.deepcopy(model)
    monitor = AttentionMonitor(model, every_n_steps=1)
    losses, grads = _train(model, loss_of, 3, monitor)
    twin_losses, twin_grads = _train(twin, loss_of, 3)
    for a, b in zip(losses, twin_losses):
        assert torch.equal(a, b)
    for step_a, step_b in zip(grads, twin_grads):
        for (name, p, g), (_, p2, g2) in zip(step_a, step_b):
            assert torch.equal(p, p2) and torch.equal(g, g2), name


def test_plain_sdpa_values_equal_the_blocks_own_q_and_k():
    import numpy as np

    from tb_attention import AttentionMonitor

    model = SdpaModel()
    monitor = AttentionMonitor(model)
    model.loss(batch()).backward()
    values = monitor.log(_NullWriter(), 0)
    for layer, block in enumerate(model.blocks):
        q, k = block.last_qk
        want = reference(q, k, scale=8**-0.5, causal=True)
        for metric in health.METRICS:
            np.testing.assert_allclose(values[metric][layer], want[metric].numpy(), rtol=1e-4, atol=1e-4)


def test_a_head_whose_queries_grow_every_step_shows_a_growing_max_logit(tmp_path):
    import numpy as np

    from tb_attention import AttentionMonitor, Writer

    model = gpt2()
    head, d = 2, model.config.n_embd // model.config.n_head
    monitor = AttentionMonitor(model, every_n_steps=1)
    ids = batch()
    with Writer(tmp_path / "run") as writer:
        for step in range(5):
            model(input_ids=ids, labels=ids).loss.backward()
            monitor.log(writer, step)
            with torch.no_grad():  # layer 0, head 2: its query projection grows by half each step
                model.transformer.h[0].attn.c_attn.weight[:, head * d : (head + 1) * d] *= 1.5
                model.transformer.h[0].attn.c_attn.bias[head * d : (head + 1) * d] *= 1.5
    served = read_metrics(tmp_path)
    grown = [served["max_logit"][s][0, head] for s in range(5)]
    assert all(b > a * 1.3 for a, b in zip(grown, grown[1:])), grown
    others = np.array([np.delete(served["max_logit"][s][0], head) for s in range(5)])
    assert (others == others[0]).all()  # the layer's other heads use the same inputs: unchanged
    entropy = [served["attention_entropy"][s][0, head] for s in range(5)]
    assert entropy[-1] < entropy[0]  # sharper logits, lower entropy


def test_only_every_nth_step_is_observed_and_other_steps_leave_attention_alone():
    from tb_attention import AttentionMonitor

    model = SdpaModel()
    original = torch.nn.functional.scaled_dot_product_attention
    seen = []
    model.blocks[0].register_forward_pre_hook(
        lambda module, args: seen.append(torch.nn.functional.scaled_dot_product_attention is not original)
    )
    monitor = AttentionMonitor(model, every_n_steps=3)
    logged = []
    for step in range(7):
        model.loss(batch(seed=step)).backward()
        logged.append(bool(monitor.log(_NullWriter(), step)))
    assert logged == [True, False, False, True, False, False, True]
    # Intercepted (SDPA wrapped) on steps 0, 3 and 6 only: unmonitored steps run the plain function.
    assert seen == [True, False, False, True, False, False, True]


def test_evaluation_forwards_are_not_counted_and_accumulated_forwards_pool():
    import numpy as np

    from tb_attention import AttentionMonitor

    model = SdpaModel()
    monitor = AttentionMonitor(model)
    a, b = batch(size=2, seed=1), batch(size=2, seed=2)
    for ids in (a, b):  # gradient accumulation: two forwards, one step
        model.loss(ids).backward()
    with torch.no_grad():
        model(batch(size=4, seed=3))  # an evaluation between them: not a training forward
    pooled = monitor.log(_NullWriter(), 0)
    model.loss(torch.cat([a, b])).backward()
    whole = monitor.log(_NullWriter(), 1)
    for metric in health.METRICS:
        np.testing.assert_allclose(pooled[metric], whole[metric], rtol=1e-5, atol=1e-6)


def test_explicit_steps_and_a_missed_step_are_explained():
    from tb_attention import AttentionMonitor

    model = SdpaModel()
    monitor = AttentionMonitor(model, every_n_steps=10)
    with pytest.warns(RuntimeWarning, match="no training forward was seen for step 0"):
        monitor.log(_NullWriter(), 0)  # nothing ran yet
    monitor.step(10)
    model.loss(batch()).backward()
    assert monitor.log(_NullWriter(), 10)
    monitor.step(10)
    model.loss(batch()).backward()
    assert monitor.log(_NullWriter(), 10) == {}  # written once: TensorBoard drops a step written twice
    model.loss(batch()).backward()  # step 11: not monitored
    assert monitor.log(_NullWriter(), 11) == {}
    with pytest.warns(RuntimeWarning, match="after every step"):
        monitor.log(_NullWriter(), 20)  # step 20's forward was never seen (log skipped steps 12-19)


def test_the_monitor_refuses_bad_arguments_and_needs_a_writer_on_rank_zero():
    from tb_attention import AttentionMonitor

    with pytest.raises(ValueError, match="every_n_steps"):
        AttentionMonitor(SdpaModel(), every_n_steps=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        AttentionMonitor(object())
    model = SdpaModel()
    monitor = AttentionMonitor(model)
    model.loss(batch()).backward()
    with pytest.raises(TypeError, match="writer"):
        monitor.log(None, 0)
    monitor.close()  # the hooks are gone: later forwards are not seen
    model.loss(batch()).backward()
    with pytest.warns(RuntimeWarning, match="no training forward"):
        assert monitor.log(_NullWriter(), 1) == {}


@needs_peak_memory
def test_a_monitored_forward_at_4096_tokens_adds_far_less_than_one_full_attention_matrix():
    from tb_attention import AttentionMonitor

    heads = 16
    full = heads * N_LONG * N_LONG * 4  # bytes of one float32 [H, N, N]: 1 GiB
    model = SdpaModel(layers=1, dim=128, heads=heads)
    ids = batch(size=1, n=N_LONG)
    model(ids[:, :64]).sum().backward()  # kernels loaded before measuring
    unmonitored = _peak_extra_bytes(lambda: model(ids).sum().backward())
    monitor = AttentionMonitor(model)
    monitored = _peak_extra_bytes(lambda: model(ids).sum().backward())
    assert monitor.log(_NullWriter(), 0)["max_logit"].shape == (1, heads)
    extra = monitored - unmonitored  # chunks of 32 rows, and the interception's [N, N] bool masks
    assert extra < full / 8, f"the listener added {extra / 2**20:.0f} MiB; one [H, N, N] is {full / 2**20:.0f} MiB"


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    from tb_attention import AttentionMonitor

    torch.set_num_threads(1)  # a forked child: no OpenMP pool of the parent's
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(SdpaModel())
    monitor = AttentionMonitor(model)
    writer = _NullWriter() if rank == 0 else None  # only rank 0 has a writer, as under the Trainer
    _ddp_loss(model, rank).backward()
    values = monitor.log(writer, 0)
    torch.save({"values": values, "written": 0 if writer is None else len(writer.summaries)},
               os.path.join(out_dir, f"{rank}.pt"))
    # DDP's reducer holds the process group: dropped after destroy_process_group, its gloo group's
    # destructor sometimes waits for ever on its worker threads (seen once in the full suite).
    del monitor, model
    dist.destroy_process_group()


def _ddp_loss(model, rank):
    ids = batch(size=2, seed=10 + rank)  # each rank its own shard
    logits = model(ids)
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))


def test_two_gloo_ranks_reduce_to_the_statistics_of_their_whole_batch():
    import numpy as np

    from tb_attention import AttentionMonitor

    model = SdpaModel()
    monitor = AttentionMonitor(model)
    model.loss(torch.cat([batch(size=2, seed=10), batch(size=2, seed=11)])).backward()
    whole = monitor.log(_NullWriter(), 0)
    shards = {}
    for rank in range(2):
        model.zero_grad()
        model.loss(batch(size=2, seed=10 + rank)).backward()
        shards[rank] = monitor.log(_NullWriter(), rank + 1)
    assert not np.allclose(shards[0]["max_logit"], shards[1]["max_logit"])  # the ranks do differ
    with tempfile.TemporaryDirectory() as tmp:
        # fork: a spawned child would spend seconds importing torch again
        torch.multiprocessing.start_processes(
            _ddp_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, start_method="fork"
        )
        got = [torch.load(os.path.join(tmp, f"{rank}.pt"), weights_only=False) for rank in range(2)]
    assert [g["written"] for g in got] == [4, 0]  # four metrics, written by rank 0 only
    for g in got:  # every rank gets the reduced values back
        for metric in health.METRICS:
            np.testing.assert_allclose(g["values"][metric], whole[metric], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[0]["values"]["max_logit"],
                                  np.maximum(shards[0]["max_logit"], shards[1]["max_logit"]))


def test_the_trainer_callback_needs_only_monitor_log_and_a_probe_logs_max_logit_beside_it(
    tmp_path, monkeypatch, gpt2_tokenizer
):
    from transformers import Trainer, TrainingArguments

    from tb_attention import AttentionCallback, AttentionMonitor, Probe
    from tests.support.models import tiny_gpt2

    class Texts(torch.utils.data.Dataset):
        ids = torch.tensor(gpt2_tokenizer("The cat sat on the mat and looked at the dog.")["input_ids"])

        def __len__(self):
            return 16

        def __getitem__(self, i):
            return {"input_ids": self.ids, "labels": self.ids}

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "runs" / "exp"))
    model = tiny_gpt2(layers=2, heads=2, embed=16, attn_implementation="sdpa").train()
    monitor = AttentionMonitor(model, every_n_steps=2)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    probe = Probe(gpt2_tokenizer, ["The cat sat.", "A dog ran."], syntax=False)
    callback = AttentionCallback(probe, every_n_steps=2, monitor=monitor)
    Trainer(model=model, args=args, train_dataset=Texts(), callbacks=[callback]).train()
    served = read_metrics(tmp_path / "runs", run="exp")
    assert sorted(served) == sorted(health.METRICS)
    assert sorted(served["max_logit"]) == [2, 4] and served["max_logit"][2].shape == (2, 2)
    assert sorted(read_metrics(tmp_path / "runs", run="exp", tag="probe")["max_logit"]) == [2, 4]
