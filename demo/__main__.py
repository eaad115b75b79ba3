"""The demo: train a small GPT-2 with a probe, an unstable twin, compare checkpoints, analyse SmolLM2 and MiniLM, serve.

    python -m demo [--out demo_output] [--no-serve] [--full] [--port 6006]
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The unstable twin: 10x the demo's learning rate from the first step. Measured on this GPT-2 (same
# data, 3e-2 held constant): by step 20 its largest logits pass 350 (layers 0 and 2) and heads'
# entropy falls below 0.1 nats with ~99 % of each query's weight on one key; by step 60 max logits
# reach ~1,500 and the loss stalls near 6.5. The main run at step 90: max logits 3-20, no head's
# entropy below 1.3 nats, loss 5.5.
UNSTABLE_RUN = "train-high-lr"
UNSTABLE_LEARNING_RATE = 3e-2
UNSTABLE_STEPS = 150


def stage(number, total, text):
    print(f"\n[{number}/{total}] {text}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "demo_output"), help="where the logdir and checkpoints go")
    parser.add_argument("--no-serve", action="store_true", help="build the logdir and exit (prints its path last)")
    parser.add_argument("--full", action="store_true", help="analyse 10,000 sentences, as in the paper (slow on a CPU)")
    parser.add_argument("--sentences", type=int, default=200, help="sentences per pretrained analysis (default 200)")
    parser.add_argument("--steps", type=int, default=1200, help="training steps (default 1200)")
    parser.add_argument("--port", type=int, default=6006)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    from demo import train
    from tb_attention import assets, cli

    out = pathlib.Path(args.out).resolve()
    logdir, workdir = out / "logdir", out / "work"
    if logdir.exists():
        shutil.rmtree(logdir)  # a rerun replaces the demo's runs (TensorBoard dislikes re-written steps)
    logdir.mkdir(parents=True)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    total = 5 if args.no_serve else 6

    stage(1, total, f"training a small GPT-2 on Wikipedia for {args.steps} steps, logging a probe every 25 steps "
                    "and attention health every 10")
    checkpoints = train.train(logdir, workdir, steps=args.steps, checkpoints=(0, args.steps // 4))

    unstable_steps = min(UNSTABLE_STEPS, args.steps)
    stage(2, total, f"the same GPT-2 at {UNSTABLE_LEARNING_RATE:g} (10x) without warm-up for {unstable_steps} steps "
                    f"(run {UNSTABLE_RUN}): its attention logits grow and entropy collapses (Health panel)")
    train.train(logdir, workdir, steps=unstable_steps, learning_rate=UNSTABLE_LEARNING_RATE, warmup=False,
                health_every=5, checkpoints=None, run=UNSTABLE_RUN)

    stage(3, total, "re-evaluating the saved checkpoints on the same probe, as runs of their own (tb-attention probe)")
    for step, folder in sorted(checkpoints.items()):
        cli.main(["probe", "--model", str(folder), "--texts", str(workdir / "probe.txt"), "--logdir", str(logdir),
                  "--run", f"checkpoint-{step}", "--step", str(step), "--with-qk"])

    count = 10_000 if args.full else args.sentences
    stage(4, total, f"analysing SmolLM2-135M over {count} Wikipedia sentences (tb-attention analyze)")
    cli.main(["analyze", "--model", str(assets.smollm2_dir()), "--corpus", "wikipedia", "--limit", str(count),
              "--logdir", str(logdir), "--run", "smollm2-135m", "--overwrite"])

    stage(5, total, f"analysing all-MiniLM-L6-v2 (BERT) over {count} Wikipedia sentences")
    cli.main(["analyze", "--model", str(assets.minilm_dir()), "--corpus", "wikipedia", "--limit", str(count),
              "--logdir", str(logdir), "--run", "minilm-l6", "--overwrite"])

    minutes = (time.time() - started) / 60
    print(f"\nDemo logdir built in {minutes:.1f} min. Wikipedia text: CC BY-SA 4.0, Wikipedia contributors.")
    if args.no_serve:
        print(logdir)
        return 0
    stage(6, total, "serving TensorBoard")
    print(f"Open http://{args.host}:{args.port}/#attention  (Ctrl+C stops)", flush=True)
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", args.host,
               "--port", str(args.port)]
    try:
        return subprocess.call(command, env=os.environ.copy())
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
