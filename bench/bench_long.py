"""Long inputs on a CPU (issue 22): `probe.log` of one long text vs the model's plain SDPA forward.

    python bench/bench_long.py [--tokens 8192 16384 32768] [--layers 4] [--heads 8] [--head-dim 64]
                               [--threads 2] [--logdir DIR] [--json out.json]

A GPT-2-shaped causal LM (4 layers x 8 heads of dimension 64, GPT-2's 50,257-token vocabulary,
random weights, transformers' SDPA attention) over Wikipedia lead sentences (GPT-2's tokenizer) cut
to each length. Each side runs in a fresh process: it builds the model, warms it up on 64 tokens,
then measures ONE call: its wall time and its peak RSS above the RSS just before the call (sampled
every 2 ms from /proc, bench_scale.PeakRss). Sides:
  forward: model(input_ids) under torch.no_grad(): the plain forward, every position's logits
           included (6.6 GB at 32,768 tokens);
  probe:   Probe.from_tokens([ids], [tokens]).log(writer, model, 0): the long path (capture.long: query
           chunks, top-k rows, block pyramid, profile, sinks; metrics; written), default budget.
Goals: probe time <= 3 x forward; probe peak RSS at most 1 GiB above the forward's; stored bytes per
example (the plan's rows and levels before compression; the event file after) within the budget.
--logdir keeps what the probe side wrote (DIR/<tokens>), e.g. for the dashboard's timing in Chromium,
which adds its own side here (bench/frontend/ drives the browser).
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_scale import timed_peak  # noqa: E402

VOCAB = 50257  # GPT-2's


def token_ids(tokens):
    """(ids, token strings) of Wikipedia lead sentences, exactly `tokens` long (GPT-2's tokenizer)."""
    from tb_attention.convert import assets

    tokenizer = assets.gpt2_tokenizer()
    ids = []
    for sentence in assets.wikipedia_sentences(shuffle=True):
        ids += tokenizer(" " + sentence)["input_ids"]
        if len(ids) >= tokens:
            ids = ids[:tokens]
            return ids, tokenizer.convert_ids_to_tokens(ids)
    raise RuntimeError(f"the corpus has fewer than {tokens} tokens")


def build(args, positions):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.layers, n_head=args.heads, n_embd=args.heads * args.head_dim,
                        n_positions=positions, vocab_size=VOCAB)
    config._attn_implementation = "sdpa"
    return GPT2LMHeadModel(config).eval()


def measure(side, tokens, args):
    """One side in this process: {"seconds", "extra_rss", ...} of its single measured call."""
    import torch

    from tb_attention import Probe, Writer

    torch.set_num_threads(args.threads)
    ids, strings = token_ids(tokens)
    model = build(args, tokens)
    batch = torch.tensor([ids])
    with torch.no_grad():
        model(batch[:, :64])  # warm-up
    line = {"side": side, "tokens": tokens}
    if side == "forward":
        def call():
            with torch.no_grad():
                return model(batch)
    else:
        logdir = pathlib.Path(args.logdir) / str(tokens) if args.logdir else pathlib.Path(tempfile.mkdtemp())
        writer = Writer(str(logdir))
        probe = Probe.from_tokens([ids], [strings], name="long")
        Probe.from_tokens([ids[:64]], [strings[:64]], name="warm").log(writer, model, 0)

        def call():
            return probe.log(writer, model, 1)
    seconds, extra = timed_peak(call)
    line.update(seconds=round(seconds, 2), extra_rss=extra)
    if side == "probe":
        from tb_attention.storage.codecs import long as long_codec

        writer.flush()
        plan = long_codec.plan(args.layers, args.heads, tokens, tokens)
        events = sum(f.stat().st_size for f in logdir.rglob("events.out.tfevents.*"))
        line.update(budget=plan.budget, planned_bytes=plan.stored_bytes(), event_bytes=events, top_k=plan.top_k,
                    levels=[block for block, _, _ in plan.levels])
    return line


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--logdir", help="keep the probe side's logdir here (DIR/<tokens>)")
    parser.add_argument("--sides", nargs="+", default=["forward", "probe"], choices=["forward", "probe"])
    parser.add_argument("--side", help=argparse.SUPPRESS)  # a fresh process's side
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.tokens[0], args)))
        return
    rows = []
    for tokens in args.tokens:
        lines = {}
        for side in args.sides:
            command = [sys.executable, __file__, "--side", side, "--tokens", str(tokens), "--layers", str(args.layers),
                       "--heads", str(args.heads), "--head-dim", str(args.head_dim), "--threads", str(args.threads)]
            if args.logdir:
                command += ["--logdir", args.logdir]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise SystemExit(f"{side} at {tokens} tokens failed:\n{done.stderr[-3000:]}")
            lines[side] = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(lines[side]), flush=True)
        if {"forward", "probe"} <= set(lines):
            forward, probe = lines["forward"], lines["probe"]
            row = {"tokens": tokens, "time_ratio": round(probe["seconds"] / forward["seconds"], 2),
                   "rss_above_forward_gib": round((probe["extra_rss"] - forward["extra_rss"]) / 2**30, 2),
                   "forward_rss_gib": round(forward["extra_rss"] / 2**30, 2),
                   "probe_rss_gib": round(probe["extra_rss"] / 2**30, 2),
                   "within_budget": probe["planned_bytes"] <= probe["budget"] and probe["event_bytes"] <= probe["budget"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
