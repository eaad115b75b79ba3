"""A generation probe's capture against plain `generate`, same model, same cache, same arguments.

    python bench/bench_generate.py [--new 64] [--prompt 32] [--repeats 5] [--tiny]

SmolLM2-135M-Instruct (real weights, 30 layers x 9 heads, 3 key/value heads; `--tiny`: a random
2-layer Llama, for checking the script) generates `--new` tokens greedily from a `--prompt`-token
prompt, on the CPU. Each repeat times, interleaved: plain `model.generate` and
`capture.decoding.generate` (every decoding step's rows recorded), and a third run writing the
probe's example (the rows encoded layer by layer). Reported: the medians and their ratios (goal:
captured generate <= 1.5x plain), and the capture's extra memory: the rows it holds (float32,
O(layers x heads x N) per step, the whole lower triangle by the end) against one layer's N x N x heads.
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

from tb_attention import Probe, Writer  # noqa: E402
from tb_attention.capture import decoding  # noqa: E402


def load(tiny):
    import transformers

    if tiny:
        from tests.support.models import decoder_lm

        return decoder_lm("llama", "sdpa"), None
    from tb_attention.convert import assets

    folder = str(assets.smollm2_dir())
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = load(args.tiny)
    vocab = model.config.vocab_size
    prompt = torch.randint(10, min(vocab, 20000), (args.prompt,), generator=torch.Generator().manual_seed(0)).tolist()
    # No early stop: every run writes exactly --new tokens.
    options = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, pad_token_id=0)
    ids = torch.tensor([prompt])

    def plain():
        with torch.no_grad():
            return model.generate(ids, attention_mask=torch.ones_like(ids), **options)[0, len(prompt):].tolist()

    def captured():
        return decoding.generate(model, prompt, options)

    def logged():
        probe = Probe(tokenizer, [prompt], generate=options, metrics=False)
        with tempfile.TemporaryDirectory() as folder, Writer(folder) as writer:
            probe.log(writer, model, 0)

    plain(), captured()  # warm up
    times = {"plain generate": [], "captured generate": [], "captured + written (probe.log)": []}
    for _ in range(args.repeats):
        for name, fn in zip(times, (plain, captured, logged if tokenizer is not None else captured)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = captured()
    assert result.generated_ids == plain(), "capture changed what generate wrote"
    base = statistics.median(times["plain generate"])
    print(f"model: {'tiny llama' if args.tiny else 'SmolLM2-135M-Instruct'}, prompt {args.prompt} tokens, "
          f"{args.new} new, {args.repeats} repeats, {torch.get_num_threads()} threads")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:32s} median {median * 1e3:8.1f} ms   ratio {median / base:5.2f}x")
    layers = result.recorder.groups["self"]
    held = sum(rows.numel() * rows.element_size() for layer in layers for _, rows in layer.rows)
    n = result.recorder.num_queries("self")
    heads = layers[0].rows[0][1].shape[0]
    print(f"  rows held after {n} tokens: {held / 2**20:.2f} MiB over {len(layers)} layers "
          f"(one layer's dense N x N x heads: {heads * n * n * 4 / 2**20:.2f} MiB; all layers dense: "
          f"{len(layers) * heads * n * n * 4 / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
