"""Live writing: a training process logs a probe every second while tensorboard reads, with both loaders."""

import os
import signal
import subprocess
import sys
import time

from tests.support.tensorboard import ROOT

# The training process: a torch SummaryWriter (the user's), a scalar and a probe per step, each
# step's tokens naming the step so that a step served under the wrong number shows.
WRITER = r"""
import sys, time
import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tb_attention.storage import summary

logdir, first, last, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
flush_each = sys.argv[5] == "1"
rng = np.random.default_rng(first)
writer = SummaryWriter(logdir, flush_secs=1)
n = 96
causal = np.triu(np.ones((n, n), dtype=bool), 1)
for step in range(first, last):
    start = time.time()
    scores = np.where(causal, -np.inf, rng.normal(size=(4, 2, 4, n, n)) * 3)  # 4 inputs, 2 layers, 4 heads
    attention = np.exp(scores - scores.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    writer.add_scalar("loss", 1.0 / (step + 1), step)
    summary.metrics(writer, "probe", {"entropy": np.full((2, 4), step, np.float32)}, step)
    summary.attention(writer, "probe", attention, [[f"s{step}i{b}t{i}" for i in range(n)] for b in range(4)], step)
    if flush_each:
        writer.flush()
        print("flushed", step, flush=True)
    time.sleep(max(0.0, interval - (time.time() - start)))
writer.close()
"""

LOADERS = {"python": "false", "rust": "true"}


def _start_writer(logdir, first, last, interval, flush_each=False):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", WRITER, str(logdir), str(first), str(last), str(interval), "1" if flush_each else "0"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _probe_steps(server):
    status, tags = server.get("/tags")
    assert status == 200, tags
    run = tags.get("train", {})
    return run.get("probe", {}).get("steps", []), run.get("probe/entropy", {}).get("steps", [])


def _check_step(server, step):
    status, body = server.get("/examples", {"run": "train", "tag": "probe", "step": step})
    assert status == 200, body
    assert [e["tokens"][0] for e in body["examples"]] == [f"s{step}i{b}t0" for b in range(4)]
    status, _, _ = server.get("/attention", {"run": "train", "tag": "probe", "step": step, "example": 3}, raw=True)
    assert status == 200


def _check_all(servers, steps):
    for name, server in servers.items():
        server.wait_for(lambda t: t.get("train", {}).get("probe", {}).get("steps") == steps, timeout=30)
        probe, entropy = _probe_steps(server)
        assert probe == entropy == steps, name
        for step in steps:
            _check_step(server, step)
        status, body = server.get("/metric", {"run": "train", "tag": "probe/entropy"})
        assert status == 200 and [v[0][0] for v in body["values"]] == steps, name


def test_every_step_logged_while_tensorboard_reads_appears_once(tmp_path, tensorboard):
    """25 steps, one a second, ~100 KB each (so records land in the file in pieces), polled every
    0.25 s by a tensorboard per loader. At every poll each loader lists steps 0..k with none missing,
    none twice and none going away, and the newest listed step is served whole; at the end all 25."""
    steps = 25
    logdir = tmp_path / "logs"
    (logdir / "train").mkdir(parents=True)
    servers = {name: tensorboard(logdir, load_fast=flag) for name, flag in LOADERS.items()}
    writer = _start_writer(logdir / "train", 0, steps, interval=1.0)
    seen = {name: 0 for name in servers}
    try:
        deadline = time.time() + 90
        while writer.poll() is None and time.time() < deadline:
            for name, server in servers.items():
                probe, entropy = _probe_steps(server)
                assert probe == list(range(len(probe))) and entropy == list(range(len(entropy))), (name, probe, entropy)
                assert len(probe) >= seen[name], f"{name}: steps went away"
                seen[name] = len(probe)
                if probe:
                    _check_step(server, probe[-1])
            time.sleep(0.25)
        assert writer.wait(timeout=30) == 0, writer.stderr.read()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert all(count >= 5 for count in seen.values()), f"steps were not visible while training ran: {seen}"
    _check_all(servers, list(range(steps)))


def test_a_killed_run_keeps_every_flushed_step_and_resumes(tmp_path, tensorboard):
    """The training process is killed (SIGKILL) mid-run, maybe in the middle of a record; a new process
    resumes in the same directory. Every step flushed before the kill is served by both loaders, as is
    every step of the resumed process; the step being written at the kill is logged again on resume."""
    logdir = tmp_path / "logs"
    (logdir / "train").mkdir(parents=True)
    servers = {name: tensorboard(logdir, load_fast=flag) for name, flag in LOADERS.items()}
    writer = _start_writer(logdir / "train", 0, 100, interval=0.2, flush_each=True)
    try:
        for line in writer.stdout:
            if line.split() == ["flushed", "5"]:
                break
        time.sleep(0.1)  # into step 6
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    for server in servers.values():
        server.wait_for(lambda t: t.get("train", {}).get("probe", {}).get("steps", [])[:6] == list(range(6)))
    time.sleep(2.5)  # both loaders have read all the killed process left (reload every second)
    lost = max(max(_probe_steps(server)[0]) for server in servers.values()) + 1  # first step not written whole
    assert lost >= 6
    time.sleep(1.1)  # a new event file name (its name carries the second)
    resumed = _start_writer(logdir / "train", lost, lost + 3, interval=0.2, flush_each=True)
    assert resumed.wait(timeout=60) == 0, resumed.stderr.read()
    _check_all(servers, list(range(lost + 3)))
