"""Probes of sharded (FSDP2, FSDP1, ZeRO-3) and replicated (DDP) models on 2 CPU ranks over gloo."""

import functools
import json
import os
import pathlib
import socket
import time

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from tb_attention.runtime import distributed, modules  # noqa: E402
from tb_attention.storage import codecs
from tests.support.models import train_step as _train_step  # noqa: E402

WORLD = 2
TEXTS = ["The cat sat on the mat.", "A dog ran to the old barn and back."]
HANG_LIMIT = 300  # seconds before a test's ranks count as hung


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(scenario, tmp_path, **options):
    """Runs `scenario(rank, out, **options)` on WORLD spawned ranks; returns each rank's JSON result."""
    port = _free_port()
    context = mp.start_processes(
        _rank_main, args=(WORLD, port, scenario.__name__, str(tmp_path), options), nprocs=WORLD, join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + HANG_LIMIT
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{scenario.__name__}: the ranks hung for {HANG_LIMIT} s")
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _rank_main(rank, world, port, scenario, out, options):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))  # as torchrun sets them
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = globals()[scenario](rank, pathlib.Path(out), **options)
    finally:
        dist.destroy_process_group()
    (pathlib.Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, attn_implementation="eager",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # no dropout: twins stay equal
    return GPT2LMHeadModel(config)


def _engine_step(engine, batch):
    loss = engine(input_ids=batch, labels=batch).loss
    engine.backward(loss)
    engine.step()  # steps the optimizer and zeroes the gradients
    return float(loss.detach())


def _trainer(model):
    """A function that trains `model` (as `_shard` returned it) one step on a batch and returns the loss."""
    if type(model).__name__ == "DeepSpeedEngine":  # it holds its optimizer
        return functools.partial(_engine_step, model)
    return functools.partial(_train_step, model, torch.optim.SGD(model.parameters(), lr=0.1))


def _shard(model, kind):
    if kind == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)
        return fully_shard(model)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        # device_id="cpu": FSDP1 shards on the CPU over gloo when told so (else it looks for an accelerator).
        return FullyShardedDataParallel(model, use_orig_params=True, device_id=torch.device("cpu"))
    if kind == "zero3":
        import deepspeed

        # Joins the process group the ranks made (gloo); a plain SGD needs none of DeepSpeed's compiled ops.
        # DeepSpeed clips gradients to norm 1 by default, which the twin's plain SGD does not.
        config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3},
                  "zero_allow_untested_optimizer": True, "gradient_clipping": 0.0}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        return engine  # what the user holds and probes
    if kind == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    raise ValueError(kind)


def _probe_everywhere(probe, model, writer, step):
    """Probe.log on this rank; on rank 0, the attention it stored, read back through TensorBoard's
    Python loader ([layers, heads, N, N] per example)."""
    from tests.support.tensorboard import python_provider, read_examples

    probe.log(writer, model, step)
    if not distributed.is_writing_rank():
        return []
    writer.flush()
    logdir = pathlib.Path(writer.get_logdir())
    return [example for _, example, _ in read_examples(python_provider(logdir.parent), logdir.name, probe.name, step)]


# ---------------------------------------------------------------------------------------------
# Scenarios (run on every rank)


def train_with_probe(rank, out, kind, probe_ranks, expect_error=False):
    """3 training steps with a probe after the first, on `probe_ranks`; losses, the probe's first
    attention, and those of an unsharded twin trained alike with no probe."""
    from tb_attention import Probe, Writer
    from tb_attention.convert import assets

    batch = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    twin = _tiny_gpt2()  # same seed: same weights; both ranks see the same batch, so FSDP's mean gradient = its own
    train_twin = _trainer(twin)
    model = _shard(_tiny_gpt2(), kind)
    train = _trainer(model)
    probe = Probe(assets.gpt2_tokenizer(), TEXTS, syntax=False, metrics=False)
    logdir = out / f"logs{rank}"
    losses, twin_losses, result = [], [], {}
    with Writer(logdir) as writer:
        for step in range(3):
            losses.append(train(batch))
            twin_losses.append(train_twin(batch))
            if step == 0 and rank in probe_ranks:
                started = time.perf_counter()
                try:
                    captured = _probe_everywhere(probe, model, writer, step)
                except distributed.CollectiveError as e:
                    result["error"] = str(e)
                    result["error_after"] = time.perf_counter() - started
                    break
                if captured and rank == 0:
                    result["attention"] = captured[0].attention.tolist()
                    with torch.no_grad():
                        ids = torch.tensor([probe.encodings[0]["input_ids"]])
                        reference = twin.eval()(input_ids=ids, output_attentions=True).attentions
                        twin.train()
                    result["reference"] = torch.stack(reference, 1)[0].tolist()
            elif step == 0 and expect_error:  # the probing rank raises after its timeout; meet it after that
                break
    dist.barrier()
    files = list(logdir.glob("events.out.tfevents.*"))
    result.update(losses=losses, twin_losses=twin_losses, event_bytes=sum(f.stat().st_size for f in files),
                  sharded=distributed.is_sharded(model), training=model.training)
    return result


# ---------------------------------------------------------------------------------------------
# Tests


def _check_probed_training(results):
    for rank, result in enumerate(results):
        assert "error" not in result, result.get("error")
        assert len(result["losses"]) == 3, f"rank {rank} stopped training"
        # The probe changed nothing the training computes: the unsharded twin without a probe agrees.
        assert result["losses"] == pytest.approx(result["twin_losses"], abs=1e-5)
        assert result["training"], "the model was left in eval mode"
    assert results[0]["losses"] == results[1]["losses"]
    got, want = torch.tensor(results[0]["attention"]), torch.tensor(results[0]["reference"])
    assert got.shape == want.shape == (2, 2, 7, 7)
    assert torch.allclose(got, want, atol=codecs.MAX_QUANTIZATION_ERROR)  # as stored
    assert results[0]["event_bytes"] > 1000 and results[1]["event_bytes"] < 200  # rank 0 wrote, rank 1 did not


def test_fsdp2_probe_on_every_rank_and_training_goes_on(tmp_path):
    results = _run_ranks(train_with_probe, tmp_path, kind="fsdp2", probe_ranks=[0, 1])
    assert all(r["sharded"] for r in results)
    _check_probed_training(results)


def test_fsdp1_probe_on_every_rank_and_training_goes_on(tmp_path):
    results = _run_ranks(train_with_probe, tmp_path, kind="fsdp1", probe_ranks=[0, 1])
    assert all(r["sharded"] for r in results)
    _check_probed_training(results)


def _import_deepspeed(monkeypatch):
    # DeepSpeed's CPU accelerator (over the ranks' gloo group), chosen when deepspeed is imported;
    # the spawned ranks inherit it.
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    pytest.importorskip("deepspeed")


def test_zero3_probe_on_every_rank_and_training_goes_on(tmp_path, monkeypatch):
    _import_deepspeed(monkeypatch)
    results = _run_ranks(train_with_probe, tmp_path, kind="zero3", probe_ranks=[0, 1])
    assert all(r["sharded"] for r in results)
    _check_probed_training(results)


@pytest.mark.parametrize("kind", ["fsdp2", "fsdp1", "zero3"])
def test_a_sharded_probe_on_one_rank_raises_a_clear_error_within_seconds(tmp_path, monkeypatch, kind):
    if kind == "zero3":
        _import_deepspeed(monkeypatch)
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "3")  # the spawned ranks inherit it
    results = _run_ranks(train_with_probe, tmp_path, kind=kind, probe_ranks=[0], expect_error=True)
    error = results[0]["error"]
    assert "every rank" in error and "1 of 2 ranks" in error and "probe 'probe'" in error
    assert 2.5 < results[0]["error_after"] < 10
    assert "error" not in results[1]


def test_ddp_probe_on_rank_zero_as_before(tmp_path):
    results = _run_ranks(train_with_probe, tmp_path, kind="ddp", probe_ranks=[0])
    assert not any(r["sharded"] for r in results)
    _check_probed_training_ddp = results  # rank 1 never probes a replicated model: nothing to wait for
    for result in _check_probed_training_ddp:
        assert result["losses"] == pytest.approx(result["twin_losses"], abs=1e-5)
    assert results[0]["event_bytes"] > 1000


# ---------------------------------------------------------------------------------------------
# One process


def test_rank_helpers_follow_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (3, 4, 1)
    assert not distributed.is_writing_rank() and distributed.is_writing_rank(all_ranks=True)
    monkeypatch.setenv("RANK", "0")
    assert distributed.is_writing_rank()


def test_unwrap_takes_off_compile_and_data_parallel():
    inner = _tiny_gpt2()
    assert modules.unwrap(torch.compile(torch.nn.DataParallel(inner), backend="eager")) is inner
    assert modules.unwrap(inner) is inner
    assert not distributed.is_sharded(torch.compile(inner, backend="eager"))


def test_guard_is_a_no_op_without_sharding():
    distributed.guard_collective(_tiny_gpt2(), "probe")  # one process, no process group: returns at once
