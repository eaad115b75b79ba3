"""Every logged step comes back: Python loader, Rust data server, a real `tensorboard` with no flags."""

import time

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from tb_attention.storage import summary
from tests.support.data import random_attention
from tests.support.tensorboard import python_provider, read_blob_steps, read_examples, request_context, rust_provider

STEPS = 150


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """150 steps of a 2-example probe and a metric, written through a torch SummaryWriter."""
    root = tmp_path_factory.mktemp("retention")
    rng = np.random.default_rng(7)
    writer = SummaryWriter(root / "train")
    for step in range(STEPS):
        attention = random_attention(rng, 2, 2, 4)
        summary.attention(writer, "probe", np.stack([attention, attention]), [list("abcd")] * 2, step)
        summary.metrics(writer, "probe", {"entropy": np.full((2, 2), step, dtype=np.float32)}, step)
    writer.close()
    return root


def _check_all_steps(provider):
    steps = [d.step for d in read_blob_steps(provider, "train", "probe")]
    assert steps == list(range(STEPS))
    tensors = provider.read_tensors(
        request_context(), experiment_id="", plugin_name="attention", downsample=10**9
    )["train"]["probe/entropy"]
    assert [d.step for d in tensors] == list(range(STEPS))
    assert [float(d.numpy[0, 0]) for d in tensors] == list(range(STEPS))
    # The last step's weights are intact, not only listed.
    (_, example, _), _ = read_examples(provider, "train", "probe", STEPS - 1)
    assert example.attention.shape == (2, 2, 4, 4)


def test_python_loader_keeps_every_step(logdir):
    _check_all_steps(python_provider(logdir))


def test_rust_data_server_keeps_every_step(logdir):
    with rust_provider(logdir) as provider:
        deadline = time.time() + 60
        while time.time() < deadline:
            if len(read_blob_steps(provider, "train", "probe")) == STEPS:
                break
            time.sleep(0.5)
        _check_all_steps(provider)


@pytest.mark.parametrize("load_fast", ["auto", "false"])
def test_real_tensorboard_with_no_flags_serves_every_step(logdir, tensorboard, load_fast):
    server = tensorboard(logdir, load_fast=load_fast)
    tags = server.wait_for(lambda t: len(t.get("train", {}).get("probe", {}).get("steps", [])) == STEPS)
    assert tags["train"]["probe"]["steps"] == list(range(STEPS))
    assert tags["train"]["probe/entropy"]["steps"] == list(range(STEPS))
    status, body = server.get("/metric", {"run": "train", "tag": "probe/entropy"})
    assert status == 200 and [v[0][0] for v in body["values"]] == list(range(STEPS))
    for step in (0, 75, STEPS - 1):
        status, body = server.get("/examples", {"run": "train", "tag": "probe", "step": step})
        assert status == 200 and len(body["examples"]) == 2


def test_a_users_samples_per_plugin_still_wins(logdir, tensorboard):
    server = tensorboard(logdir, "--samples_per_plugin", "attention=20", load_fast="false")
    tags = server.wait_for(lambda t: "probe" in t.get("train", {}))
    assert len(tags["train"]["probe"]["steps"]) == 20
    assert tags["train"]["probe"]["steps"][-1] == STEPS - 1
