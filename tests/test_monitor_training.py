"""The attention-health monitor on training steps: the values logged, bit-identical training, steps observed, DDP ranks, the callbacks."""

import os
import tempfile

import pytest
import torch

from tb_attention.metrics import health
from tests.support.health_reference import N_LONG, needs_peak_memory, peak_extra_bytes, reference

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


@pytest.mark.parametrize("name", ["gemma2", "gpt_oss"])
def test_soft_caps_windows_sinks_and_left_padding_of_a_training_batch_equal_the_reference(name):
    import numpy as np

    from tb_attention import AttentionMonitor
    from tb_attention.capture import intercept
    from tests.support.models import decoder_lm

    model = decoder_lm(name, "eager").train()  # Gemma 2: soft cap 5, window 4; gpt-oss: sinks, window 4; GQA
    if name == "gpt_oss":
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.sinks.copy_(torch.linspace(-2.0, 6.0, 4))
    ids = batch(size=3, n=10)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, :6] = 0
    calls = []  # the q, k and rules of each attention computation, seen by a listener of its own
    with torch.no_grad(), intercept.intercepting(model, lambda c: calls.append(dict(
            query=c.query, key=c.key, scale=c.scale, softcap=c.softcap, window=c.sliding_window, sinks=c.sinks))):
        model(input_ids=ids, attention_mask=mask)
    want = [reference(**c, causal=True, real=mask.bool()) for c in calls]
    assert any(c["softcap"] or c["sinks"] is not None for c in calls) and any(c["window"] for c in calls)
    monitor = AttentionMonitor(model, chunk_size=3)
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()
    values = monitor.log(_NullWriter(), 0)
    for layer, expected in enumerate(want):
        for metric in health.METRICS:
            np.testing.assert_allclose(values[metric][layer], expected[metric].numpy(), rtol=1e-4, atol=1e-4)


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
    unmonitored = peak_extra_bytes(lambda: model(ids).sum().backward())
    monitor = AttentionMonitor(model)
    monitored = peak_extra_bytes(lambda: model(ids).sum().backward())
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
