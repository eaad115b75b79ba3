"""Benchmark of tb_attention.AttentionMonitor: a monitored training step against an unmonitored one.

    python bench/bench_monitor.py [--layers 4] [--heads 4] [--width 128] [--vocab 2048]
                                  [--batch 32] [--tokens 64 512] [--steps 20] [--threads N]
                                  [--attention-only [--long-tokens 4096] [--long-steps 4]]

Trains a random GPT-2 (transformers' default attention, SDPA) with AdamW. Each timed step is a
forward, backward and optimizer step at the same weights and batch; monitored steps also run
`monitor.log` (the statistics and the write into an in-memory writer). Monitored and unmonitored
steps alternate, so both see the same machine load; the figures are medians, of wall-clock time and
of the process's CPU time (steadier on a shared machine). Goal: <= 1.3x.

--attention-only adds the case where attention is nearly all of a step: one causal attention layer
(16 heads of 8 dimensions on F.scaled_dot_product_attention, no MLP), batch 1, --long-tokens
tokens, the same alternation. Goal: <= 2x.
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


class CausalSelfAttention(torch.nn.Module):
    """nanoGPT's attention on F.scaled_dot_product_attention, with a residual and no MLP."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)

    def forward(self, x):
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.out(y.transpose(1, 2).reshape(b, n, e))


class AttentionOnly(torch.nn.Module):
    """One causal attention layer between an embedding and the output projection: attention is the step."""

    def __init__(self, vocab, width=128, heads=16):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.attention = CausalSelfAttention(width, heads)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, input_ids, labels):
        logits = self.head(self.attention(self.embed(input_ids)))
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())


def gpt2(args, tokens):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=args.vocab, n_positions=max(tokens, 64), n_layer=args.layers, n_head=args.heads,
                        n_embd=args.width, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).train()
    return model, lambda ids: model(input_ids=ids, labels=ids).loss


def attention_only(args, tokens):
    torch.manual_seed(0)
    model = AttentionOnly(args.vocab).train()
    return model, lambda ids: model(ids, ids)


def bench(build, args, tokens, batch, steps):
    model, loss_of = build(args, tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(args.vocab, (batch, tokens), generator=torch.Generator().manual_seed(1))
    monitor = AttentionMonitor(model, every_n_steps=2)  # even steps monitored, odd ones not
    writer = _MemoryWriter()
    times = {True: [], False: []}
    cpu = {True: [], False: []}
    for step in range(2 * steps + 2):
        started, started_cpu = time.perf_counter(), time.process_time()
        loss_of(ids).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        monitor.log(writer, step)
        if step >= 2:  # the first pair warms up
            times[step % 2 == 0].append(time.perf_counter() - started)
            cpu[step % 2 == 0].append(time.process_time() - started_cpu)
    monitor.close()
    monitored, plain = statistics.median(times[True]), statistics.median(times[False])
    monitored_cpu, plain_cpu = statistics.median(cpu[True]), statistics.median(cpu[False])
    return {"tokens": tokens, "plain_ms": 1000 * plain, "monitored_ms": 1000 * monitored, "ratio": monitored / plain,
            "cpu_ratio": monitored_cpu / plain_cpu, "written": writer.count}


def _row(label, r):
    return (f"| {label} | {r['tokens']} | {r['plain_ms']:,.0f} ms | {r['monitored_ms']:,.0f} ms | {r['ratio']:.2f}x "
            f"| {r['cpu_ratio']:.2f}x |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, nargs="*", default=[64, 512], help="GPT-2 lengths (none: skip GPT-2)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind")
    parser.add_argument("--attention-only", action="store_true", help="also the 1-layer attention-only model")
    parser.add_argument("--long-tokens", type=int, nargs="+", default=[4096], help="its lengths (batch 1)")
    parser.add_argument("--long-steps", type=int, default=4, help="its timed steps of each kind")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"GPT-2 {args.layers} layers x {args.heads} heads, width {args.width}, vocab {args.vocab}, batch {args.batch}; "
          f"attention-only: 1 layer x 16 heads of 8, batch 1; {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| model | tokens | unmonitored step | monitored step | ratio (wall) | ratio (process CPU time) |")
    print("|---|---|---|---|---|---|")
    for tokens in args.tokens:
        print(_row("GPT-2", bench(gpt2, args, tokens, args.batch, args.steps)), flush=True)
    if args.attention_only:
        for tokens in args.long_tokens:
            print(_row("attention-only", bench(attention_only, args, tokens, 1, args.long_steps)), flush=True)


if __name__ == "__main__":
    main()
