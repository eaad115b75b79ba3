"""/compare against /attention of the same layers, on both of TensorBoard's loaders.

    python bench/bench_compare.py [--layers 24] [--examples 24] [--heads 12] [--tokens 64] [--repeats 3]

Writes two checkpoints' probes (runs `a` and `b`, LAYERS layers x EXAMPLES examples, one blob per
layer as Probe.log stores them), starts `tensorboard --logdir` with each loader (`--load_fast false`:
the Python multiplexer; `true`: the Rust data server) and times, on a fresh server:
  - /compare of a's and b's probes: the first answer (every layer of every example read) and a repeat;
  - the baseline: /attention of every example of both runs, whole group (each one's layers read at once),
    one request after another: the same blobs read through the route the views use.
The goal: /compare no slower than that baseline (ratio <= 1), and <= 2 s for 24 x 24 on either loader.
"""

import argparse
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tb_attention import Writer
from tb_attention.storage import summary
from tests.support.data import random_attention
from tests.support.tensorboard import TensorBoard

LOADERS = {"python": "false", "rust": "true"}


def write_logdir(root, layers, examples, heads, tokens):
    rng = np.random.default_rng(0)
    words = [f"Ġw{i}" for i in range(tokens)]
    for run, sharpness in (("a", 1.0), ("b", 3.0)):
        prepared = [{"attention": random_attention(rng, layers, heads, tokens, sharpness=sharpness), "tokens": words}
                    for _ in range(examples)]
        with Writer(root / run) as writer:
            summary.write_examples(writer, "probe", prepared, 100)


def timed(call, *args):
    started = time.perf_counter()
    result = call(*args)
    return time.perf_counter() - started, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench_compare_"))
    try:
        logdir = root / "logdir"
        write_logdir(logdir, args.layers, args.examples, args.heads, args.tokens)
        print(f"{args.layers} layers x {args.examples} examples x {args.heads} heads x {args.tokens} tokens, two runs")
        for loader, load_fast in LOADERS.items():
            first, repeat, baseline = [], [], []
            for _ in range(args.repeats):
                server = TensorBoard(logdir, "--samples_per_plugin", "attention=0", load_fast=load_fast)
                try:
                    server.wait_for(lambda tags: all(100 in tags.get(r, {}).get("probe", {}).get("steps", []) for r in "ab"),
                                    timeout=120)
                    params = {"tag": "probe", "run_a": "a", "step_a": 100, "run_b": "b", "step_b": 100}
                    seconds, (status, body) = timed(server.get, "/compare", params)
                    assert status == 200 and body["used"] == args.examples, (status, body)
                    first.append(seconds)
                    repeat.append(timed(server.get, "/compare", params)[0])
                    started = time.perf_counter()
                    for run in "ab":
                        for example in range(args.examples):
                            status, *_ = server.get("/attention", {"run": run, "tag": "probe", "step": 100, "example": example},
                                                    raw=True)
                            assert status == 200
                    baseline.append(time.perf_counter() - started)
                finally:
                    server.close()
            f, r, b = (float(np.median(x)) for x in (first, repeat, baseline))
            print(f"{loader:6s} /compare first {f:6.2f} s, repeated {r * 1000:6.1f} ms; "
                  f"/attention of the same layers {b:6.2f} s; ratio {f / b:4.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
