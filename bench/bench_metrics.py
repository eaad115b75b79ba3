"""Benchmark of tb_attention.metrics.attention: vectorised vs literal loop, and update vs a SmolLM2 forward.

    python bench/bench_metrics.py [--batch 16] [--max-tokens 40] [--threads N] [--repeats 5]
                                  [--loop-inputs 16] [--synthetic]

Runs SmolLM2-135M (30 layers x 9 heads, eager attention) on `--batch` Wikipedia sentences
truncated to `--max-tokens` tokens, parses them with spaCy, then times one
`AttentionStats.update` of that batch (with syntax) against the forward pass, and the
vectorised metrics (update + result) against the literal loop of tests/test_metrics.py on
`--loop-inputs` of the inputs. `--synthetic` uses random causal attention of the same shape
instead of the model (no assets needed; no forward or spaCy timing).
"""

import argparse
import importlib.util
import os
import pathlib
import statistics
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tb_attention.metrics.attention import AttentionStats  # noqa: E402


def _loop_reference():
    spec = importlib.util.spec_from_file_location("_loop_reference", ROOT / "tests" / "test_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.loop_metrics, module.random_attention


def _timed(fn, repeats):
    """Median seconds of `repeats` calls after one warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _model_batch(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tb_attention.convert import assets
    from tb_attention.probes import syntax

    folder = str(assets.smollm2_dir())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    sentences = assets.wikipedia_sentences(args.batch)
    batch = tokenizer(
        sentences,
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=args.max_tokens,
        return_offsets_mapping=True,
    )
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    timings = {}
    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.inference_mode():
        timings["forward, eager, output_attentions=True"], out = _timed(
            lambda: eager(**inputs, output_attentions=True), args.repeats
        )
        sdpa = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
        timings["forward, sdpa, no attention output"], _ = _timed(lambda: sdpa(**inputs), args.repeats)
        timings["torch.stack(outputs.attentions, 1)"], attention = _timed(
            lambda: torch.stack(out.attentions, 1), args.repeats
        )
    nlp = syntax.load_spacy()
    timings["spaCy parse + alignment (token_syntax)"], syntaxes = _timed(
        lambda: syntax.token_syntax(tokenizer, sentences, nlp=nlp, encoding=batch), 1
    )
    return attention, batch["attention_mask"], syntaxes, timings


def _synthetic_batch(args, random_attention):
    rng = np.random.default_rng(0)
    lengths = rng.integers(args.max_tokens // 2, args.max_tokens + 1, size=args.batch)
    attention = torch.zeros(args.batch, 30, 9, args.max_tokens, args.max_tokens)
    mask = torch.zeros(args.batch, args.max_tokens, dtype=torch.long)
    for b, n in enumerate(lengths):
        attention[b, :, :, :n, :n] = torch.from_numpy(random_attention(rng, 30, 9, n, causal=True))
        mask[b, :n] = 1
    return attention, mask, None, {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="sentences per batch")
    parser.add_argument("--max-tokens", type=int, default=40, help="tokens per sentence (truncated, padded)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--loop-inputs", type=int, default=None, help="inputs the loop runs on (default: all)")
    parser.add_argument("--synthetic", action="store_true", help="random attention instead of SmolLM2")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loop_metrics, random_attention = _loop_reference()

    if args.synthetic:
        attention, mask, syntaxes, timings = _synthetic_batch(args, random_attention)
    else:
        attention, mask, syntaxes, timings = _model_batch(args)
    B, L, H, N, _ = attention.shape
    print(
        f"batch [B={B}, L={L}, H={H}, N={N}, N], {int(mask.sum())} real tokens; "
        f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )

    stats = AttentionStats(L, H)
    timings["AttentionStats.update (with syntax)" if syntaxes else "AttentionStats.update"], _ = _timed(
        lambda: stats.update(attention, mask=mask, syntax=syntaxes), args.repeats
    )
    timings["AttentionStats.result"], _ = _timed(stats.result, args.repeats)
    for name, seconds in timings.items():
        print(f"{name:45s} {seconds * 1000:9.1f} ms")
    forward = timings.get("forward, eager, output_attentions=True")
    update = next(v for k, v in timings.items() if k.startswith("AttentionStats.update"))
    if forward:
        print(f"update / eager forward: {update / forward:.3f}")

    # Vectorised vs literal loop, on the same unpadded inputs.
    k = args.loop_inputs or B
    lengths = mask.sum(1).tolist()
    left = mask[:, 0].bool().all()  # right padding: real tokens from position 0
    inputs = []
    for b in range(k):
        s = slice(0, lengths[b]) if left else slice(N - lengths[b], N)
        inputs.append(attention[b, :, :, s, s].double().numpy())
    subset = syntaxes[:k] if syntaxes else None

    def vectorised():
        AttentionStats(L, H).update(attention[:k], mask=mask[:k], syntax=subset).result()

    vector_time, _ = _timed(vectorised, args.repeats)
    start = time.perf_counter()
    loop_metrics(inputs, subset)
    loop_time = time.perf_counter() - start
    print(f"loop reference on {k} inputs {loop_time * 1000:12.1f} ms")
    print(f"vectorised (update + result) {vector_time * 1000:12.1f} ms")
    print(f"speedup: {loop_time / vector_time:.0f}x")


if __name__ == "__main__":
    main()
