"""Benchmark of Probe.log on a plain SDPA model (nanoGPT-style) against a bare forward of the same texts.

    python bench/bench_probe.py [--layers 4] [--heads 4] [--dim 128] [--texts 8] [--repeats 5]
                                [--threads 1] [--profile]

Builds a random-weight nanoGPT (blocks on F.scaled_dot_product_attention, called as model(input_ids)),
takes `--texts` Wikipedia sentences tokenised with GPT-2's tokenizer, and times, best of `--repeats`
after one warm-up, (a) the bare forward of each text as Probe runs it (one [1, N] input at a time,
eval mode, no grad) and (b) `Probe.log` of the same texts into a fresh event file: with syntax metrics
(spaCy's parse is cached by the probe after its first log), without, and without metrics; (c)
`Probe.capture` alone (the forward under interception, no writing). Prints process CPU time, wall
time and the ratios. `--profile` prints where Probe.log spends its time (cProfile, cumulative).
"""

import argparse
import cProfile
import pathlib
import pstats
import sys
import tempfile
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tb_attention import Probe, Writer  # noqa: E402
from tb_attention.convert import assets


class Block(torch.nn.Module):
    """Pre-norm causal self-attention on SDPA and an MLP."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.out = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class NanoGPT(torch.nn.Module):
    def __init__(self, vocab, layers, heads, dim, context=256):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(vocab, dim), torch.nn.Embedding(context, dim)
        self.blocks = torch.nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.head = torch.nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids):
        x = self.wte(input_ids) + self.wpe(torch.arange(input_ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _wrapped(vocab):
    def wrap(probe):
        for encoding in probe.encodings:
            encoding["input_ids"] = [i % vocab for i in encoding["input_ids"]]
        return probe
    return wrap


def best(fn, repeats):
    """(best process CPU seconds, best wall seconds) of `repeats` calls after one warm-up."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu), min(wall)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--texts", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=None,
                        help="output vocabulary (default GPT-2's 50,257; a small one makes the bare forward cheaper)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tokenizer = assets.gpt2_tokenizer()
    texts = assets.wikipedia_sentences(limit=args.texts, max_words=30)
    vocab = args.vocab or len(tokenizer)
    model = NanoGPT(vocab, args.layers, args.heads, args.dim).eval()
    ids = [torch.tensor([tokenizer(t)["input_ids"]]) % vocab for t in texts]
    lengths = [x.shape[1] for x in ids]
    print(f"model: {args.layers} layers x {args.heads} heads, width {args.dim}, vocabulary {vocab}; {len(texts)} texts of "
          f"{min(lengths)}-{max(lengths)} tokens; torch threads {args.threads}")

    def bare():
        with torch.no_grad():
            for x in ids:
                model(x)

    logdir = pathlib.Path(tempfile.mkdtemp(prefix="bench_probe_"))
    # Probes feed the tokenizer's ids; a small vocabulary wraps them as the bare forward does.
    wrap = (lambda p: p) if vocab == len(tokenizer) else _wrapped(vocab)
    probes = {"Probe.log, syntax metrics (spaCy)": wrap(Probe(tokenizer, texts, syntax=True)),
              "Probe.log, no syntax": wrap(Probe(tokenizer, texts, syntax=False)),
              "Probe.log, no metrics": wrap(Probe(tokenizer, texts, metrics=False))}
    step = iter(range(10**9))
    with Writer(logdir / "run") as writer:
        base_cpu, base_wall = best(bare, args.repeats)
        print(f"{'bare forward':36s} cpu {1000 * base_cpu:8.1f} ms   wall {1000 * base_wall:8.1f} ms")
        for label, probe in probes.items():
            cpu, wall = best(lambda probe=probe: probe.log(writer, model, next(step)), args.repeats)
            print(f"{label:36s} cpu {1000 * cpu:8.1f} ms   wall {1000 * wall:8.1f} ms   "
                  f"ratio cpu {cpu / base_cpu:5.1f}x  wall {wall / base_wall:5.1f}x")
        for label, probe in (("  of which Probe.capture", probes["Probe.log, no metrics"]),):
            cpu, wall = best(lambda probe=probe: probe.capture(model), args.repeats)
            print(f"{label:36s} cpu {1000 * cpu:8.1f} ms   wall {1000 * wall:8.1f} ms   "
                  f"ratio cpu {cpu / base_cpu:5.1f}x  wall {wall / base_wall:5.1f}x")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.repeats):
                probes["Probe.log, syntax metrics (spaCy)"].log(writer, model, next(step))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"tb_attention|torch/nn/modules/module", 30)


if __name__ == "__main__":
    main()
