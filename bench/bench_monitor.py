"""Benchmark of tb_attention.AttentionMonitor: a monitored training step against an unmonitored one.

    python bench/bench_monitor.py [--layers 4] [--heads 4] [--width 128] [--vocab 2048]
                                  [--batch 32] [--tokens 64 512] [--steps 20] [--threads N]

Trains a random GPT-2 (transformers' default attention, SDPA) with AdamW. Each timed step is a
forward, backward and optimizer step at the same weights and batch; monitored steps also run
`monitor.log` (the statistics and the write into an in-memory writer). Monitored and unmonitored
steps alternate, so both see the same machine load; the figures are medians, of wall-clock time and
of the process's CPU time (steadier on a shared machine). Goal: <= 1.3x.
"""

import argparse
import pathlib
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tb_attention import AttentionMonitor  # noqa: E402


class _MemoryWriter:
    """Keeps the summaries (the event file's cost is not the monitor's)."""

    def __init__(self):
        self.count = 0

    def add_summary(self, summary, global_step=None, walltime=None):
        self.count += 1


def build(args, tokens):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=args.vocab, n_positions=max(tokens, 64), n_layer=args.layers, n_head=args.heads,
                        n_embd=args.width, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).train()


def bench(args, tokens):
    model = build(args, tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(args.vocab, (args.batch, tokens), generator=torch.Generator().manual_seed(1))
    monitor = AttentionMonitor(model, every_n_steps=2)  # even steps monitored, odd ones not
    writer = _MemoryWriter()
    times = {True: [], False: []}
    cpu = {True: [], False: []}
    for step in range(2 * args.steps + 2):
        started, started_cpu = time.perf_counter(), time.process_time()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        monitor.log(writer, step)
        if step >= 2:  # the first pair warms up
            times[step % 2 == 0].append(time.perf_counter() - started)
            cpu[step % 2 == 0].append(time.process_time() - started_cpu)
    monitored, plain = statistics.median(times[True]), statistics.median(times[False])
    monitored_cpu, plain_cpu = statistics.median(cpu[True]), statistics.median(cpu[False])
    return {"tokens": tokens, "plain_ms": 1000 * plain, "monitored_ms": 1000 * monitored, "ratio": monitored / plain,
            "cpu_ratio": monitored_cpu / plain_cpu, "written": writer.count}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"GPT-2 {args.layers} layers x {args.heads} heads, width {args.width}, vocab {args.vocab}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| tokens | unmonitored step | monitored step | ratio (wall) | ratio (process CPU time) |")
    print("|---|---|---|---|---|")
    for tokens in args.tokens:
        r = bench(args, tokens)
        print(f"| {r['tokens']} | {r['plain_ms']:.0f} ms | {r['monitored_ms']:.0f} ms | {r['ratio']:.2f}x "
              f"| {r['cpu_ratio']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
