"""Cost of one long probe: `probe.log` vs the model's own eager `output_attentions` forward.

    python bench/bench_scale.py [--tokens 2048] [--layers 8] [--heads 16] [--hidden 256] [--json out.json]

A GPT-2-shaped model (8 layers x 16 heads, hidden 256, random weights) on one text of 2,048
tokens (Wikipedia lead sentences, GPT-2's tokenizer). Each side runs in a fresh process: it builds
the model, warms it up on a short input, then measures ONE call: its wall time and its peak RSS
above the RSS just before the call (sampled every 2 ms from /proc). Sides:
  eager: model(input_ids, output_attentions=True) of the model loaded with eager attention, no grad;
  probe: Probe(tokenizer, [text], syntax=False).log(writer, model, 0) on the model as loaded
         (transformers' default attention), writing to a temporary logdir (metrics included);
  stream: the same probe through tb_attention.probes.streamed.log_probe (streaming capture: same records).
Goals (issue 13): probe memory <= 0.5 x eager's, probe time <= 3 x eager's.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = 4096  # bytes per page in /proc/self/statm


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRss:
    """The largest RSS seen while the block runs, sampled by a thread."""

    def __init__(self, interval=0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = _rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def extra(self):
        return self.peak - self.start


def timed_peak(call):
    """(seconds, extra RSS in bytes) of one call; its result is dropped inside the measured block."""
    with PeakRss() as rss:
        started = time.perf_counter()
        call()
        seconds = time.perf_counter() - started
    return seconds, rss.extra


def long_text(tokenizer, tokens):
    """Wikipedia lead sentences joined until the text has at least `tokens` tokens."""
    from tb_attention.convert import assets

    sentences, text = assets.wikipedia_sentences(shuffle=True), ""
    for sentence in sentences:
        text = f"{text} {sentence}" if text else sentence
        if len(text) > 3 * tokens and len(tokenizer(text)["input_ids"]) >= tokens:
            return text
    raise RuntimeError(f"the corpus has fewer than {tokens} tokens")


def build(args, attn_implementation):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=args.layers, n_head=args.heads, n_embd=args.hidden, n_positions=args.tokens,
        attn_implementation=attn_implementation,
    )
    return GPT2LMHeadModel(config).eval()


def measure(side, args):
    """One side in this process: {"seconds", "extra_rss"} of its single measured call."""
    import torch

    from tb_attention import Probe, Writer
    from tb_attention.convert import assets

    torch.set_num_threads(args.threads)
    tokenizer = assets.gpt2_tokenizer()
    text = long_text(tokenizer, args.tokens)
    ids = torch.tensor([tokenizer(text)["input_ids"][: args.tokens]])
    model = build(args, "eager" if side == "eager" else None)
    if side == "eager":
        def call():
            with torch.no_grad():
                return model(input_ids=ids, output_attentions=True).attentions
        with torch.no_grad():
            model(input_ids=ids[:, :64], output_attentions=True)  # warm-up
    else:
        probe = Probe(tokenizer, [text], syntax=False, max_length=args.tokens)
        assert len(probe.encodings[0]["input_ids"]) == args.tokens
        warm = Probe(tokenizer, [text[:200]], syntax=False)
        tmp = tempfile.mkdtemp()
        writer = Writer(tmp)
        warm.log(writer, model, 0)

        if side == "stream":
            from tb_attention.probes import streamed as probe_stream

            def call():
                return probe_stream.log_probe(probe, writer, model, 1)
        else:
            def call():
                return probe.log(writer, model, 1)
    seconds, extra = timed_peak(call)
    return {"side": side, "seconds": seconds, "extra_rss": extra, "tokens": args.tokens}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", choices=["eager", "probe", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--sides", nargs="+", default=["eager", "probe", "stream"], help="which sides to measure")  # a fresh process's side
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args)))
        return
    figures = {}
    for side in ["eager"] + [side for side in args.sides if side != "eager"]:
        command = [sys.executable, __file__, "--side", side] + [
            f"--{name}={getattr(args, name)}" for name in ("tokens", "layers", "heads", "hidden", "threads")
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
        figures[side] = json.loads(done.stdout.strip().splitlines()[-1])
    eager = figures["eager"]
    mib = 2**20
    print(f"GPT-2 shape {args.layers} layers x {args.heads} heads, hidden {args.hidden}, one text of {args.tokens} tokens, "
          f"torch threads {args.threads}")
    print(f"eager output_attentions forward: {eager['seconds']:.2f} s, +{eager['extra_rss'] / mib:.0f} MiB RSS")
    for side in figures:
        if side != "eager":
            f = figures[side]
            print(f"{side + ':':32} {f['seconds']:.2f} s, +{f['extra_rss'] / mib:.0f} MiB RSS; ratios: time "
                  f"{f['seconds'] / eager['seconds']:.2f} (goal <= 3), memory {f['extra_rss'] / eager['extra_rss']:.2f} "
                  "(goal <= 0.5)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
