"""Corpus analysis cost: `tb-attention analyze` vs the bare forward passes of the same model.

    python bench/bench_analyze.py [--sentences 500] [--repeats 2]

Both sides run SmolLM2-135M as `analyze` loads it (the base model, transformers' default
attention) over the same Wikipedia sentences in the same batches (length-sorted, 16 per batch,
at most 128 tokens), tokenisation included. The analysis side is everything `analyze` does
after loading the model: spaCy parsing, capture, metrics, exemplars and writing the run; a
third side leaves out the parsing (no syntax metrics), to tell the parser's share from ours.
Goal: analysis <= 1.2 x bare.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tb_attention.convert import assets  # noqa: E402
from tb_attention.probes import analysis, syntax
from tb_attention.runtime import defaults
from tb_attention.storage import summary


def bare_forward(model, tokenizer, sentences, batch_size, max_length):
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in analysis._batches(tokenizer, sentences, list(range(len(sentences))), batch_size, max_length):
            encoding = tokenizer([sentences[i] for i in batch], padding=True, truncation=True,
                                 max_length=max_length, return_tensors="pt")
            model(input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"])
    return time.perf_counter() - start


def full_analysis(model, tokenizer, sentences, batch_size, max_length, nlp):
    start = time.perf_counter()
    result = analysis.analyze_corpus(model, tokenizer, sentences, batch_size=batch_size, max_length=max_length,
                                     with_syntax=nlp is not None, nlp=nlp, progress=False)
    with tempfile.TemporaryDirectory() as tmp, summary.Writer(tmp) as writer:
        analysis.write_analysis(writer, "corpus", result)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE)
    args = parser.parse_args()
    model, tokenizer = analysis.load_model(assets.smollm2_dir())
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    sentences = assets.wikipedia_sentences(limit=args.sentences, shuffle=True)  # as analyze --corpus takes them
    nlp = syntax.load_spacy()
    nlp("Warm up the parser.")
    bare_forward(model, tokenizer, sentences[:32], args.batch_size, defaults.MAX_LENGTH)  # warm-up
    sides = {"bare forward passes": [], "tb-attention analyze": [], "analyze without syntax (no spaCy)": []}
    for _ in range(args.repeats):  # interleaved, so drift hits every side alike
        times = iter(sides.values())
        next(times).append(bare_forward(model, tokenizer, sentences, args.batch_size, defaults.MAX_LENGTH))
        next(times).append(full_analysis(model, tokenizer, sentences, args.batch_size, defaults.MAX_LENGTH, nlp))
        next(times).append(full_analysis(model, tokenizer, sentences, args.batch_size, defaults.MAX_LENGTH, None))
    print(f"SmolLM2-135M ({model.config._attn_implementation} attention as loaded), {len(sentences)} sentences, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    bare = statistics.median(sides["bare forward passes"])
    for name, runs in sides.items():
        median = statistics.median(runs)
        print(f"{name}: {median:.1f} s (runs: {', '.join(f'{t:.1f}' for t in runs)}), ratio {median / bare:.2f}")
    print("goal: analyze <= 1.2 x bare")


if __name__ == "__main__":
    main()
