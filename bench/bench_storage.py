"""Storage benchmark: bytes per attention value, write time vs torch.save, /attention latency vs images.

    python bench/bench_storage.py [--requests 200]

Each figure is a ratio against a baseline measured in the same run:
  1. stored bytes per attention value of a 12 x 12 x 128 causal example (baseline: float32, 4 bytes);
  2. the time to write one probe step (8 such examples) through tb_attention, flushed to disk,
     against torch.save of the same float32 tensors;
  3. p50/p95 of GET /attention for one example on a real `tensorboard`, against TensorBoard's own
     images plugin serving an image of about the same byte size from the same server.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tb_attention import Writer, metadata  # noqa: E402
from tb_attention.storage import summary
from tests.support.data import random_attention  # noqa: E402
from tests.support.tensorboard import TensorBoard

LAYERS, HEADS, TOKENS, EXAMPLES = 12, 12, 128, 8


def gpt2_attention(seed):
    """Attention of a randomly initialised 12 x 12 GPT-2 on 128 random tokens: [12, 12, 128, 128]."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=768, attn_implementation="eager")).eval()
    ids = torch.randint(0, 50257, (1, TOKENS))
    with torch.no_grad():
        return torch.stack(model(input_ids=ids, output_attentions=True).attentions)[:, 0].numpy()


def smollm2_attention():
    """Attention of SmolLM2-135M (trained) on Wikipedia text, 12 layers x 9 heads x 128 tokens."""
    from transformers import AutoModel, AutoTokenizer

    from tb_attention.convert import assets

    folder = assets.smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    text = " ".join(assets.wikipedia_sentences(limit=12))
    ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=TOKENS)
    with torch.no_grad():
        return torch.stack(model(**ids, output_attentions=True).attentions)[:LAYERS, 0].numpy()


def bytes_per_value():
    rows = []
    rng = np.random.default_rng(0)
    cases = [
        ("GPT-2 12x12, random init", gpt2_attention(0)),
        ("SmolLM2-135M (trained), layers 0-11", smollm2_attention()),
        ("synthetic peaked (softmax of 3 N(0,1))", random_attention(rng, LAYERS, HEADS, TOKENS, sharpness=3.0)),
    ]
    for name, attention in cases:
        blob = metadata.encode_attention(attention, [f"t{i}" for i in range(attention.shape[-1])])
        decoded = metadata.decode_attention(blob).attention
        per_value = len(blob) / attention.size
        rows.append((name, per_value, 4.0 / per_value, float(np.abs(decoded - attention).max())))
    return rows


def write_times(repeats=7):
    attention = [gpt2_attention(seed) for seed in range(2)]
    examples = [{"attention": attention[i % 2], "tokens": [f"t{j}" for j in range(TOKENS)]} for i in range(EXAMPLES)]
    tensors = [torch.from_numpy(e["attention"]) for e in examples]
    ours, baseline = [], []
    with tempfile.TemporaryDirectory() as tmp:
        writer = Writer(pathlib.Path(tmp) / "run")
        for step in range(repeats):
            start = time.perf_counter()
            summary.write_examples(writer, "probe", examples, step)
            writer.flush()
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            torch.save(tensors, pathlib.Path(tmp) / f"step{step}.pt")
            baseline.append(time.perf_counter() - start)
        writer.close()
    return statistics.median(ours), statistics.median(baseline)


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def route_latency(requests):
    """p50/p95 (ms) of /attention and of the images plugin's individualImage, same server."""
    from torch.utils.tensorboard import SummaryWriter

    with tempfile.TemporaryDirectory() as tmp:
        logdir = pathlib.Path(tmp) / "logs"
        attention = gpt2_attention(0)
        writer = SummaryWriter(str(logdir / "run"))
        summary.attention(writer, "probe", attention, [f"t{i}" for i in range(TOKENS)], 0)
        blob_size = len(metadata.encode_attention(attention, [f"t{i}" for i in range(TOKENS)]))
        # Uniform noise compresses to ~nothing in PNG terms: pick a side giving about the same bytes.
        rng = np.random.default_rng(0)
        side = int(np.sqrt(blob_size / 3)) + 1
        writer.add_image("image", rng.integers(0, 256, (3, side, side), dtype=np.uint8), 0)
        writer.close()
        server = TensorBoard(logdir)
        try:
            server.wait_for(lambda tags: "probe" in tags.get("run", {}))
            listing = None
            deadline = time.time() + 60
            while time.time() < deadline and not listing:
                _, listing = server.get("/data/plugin/images/images", {"run": "run", "tag": "image"})
                time.sleep(0.5)
            image_url = server.url + "/data/plugin/images/individualImage?" + listing[0]["query"]
            attention_url = server.url + "/data/plugin/attention/attention?" + urllib.parse.urlencode(
                {"run": "run", "tag": "probe", "step": 0, "example": 0}
            )
            sizes, timings = {}, {"attention": [], "image": []}
            for _ in range(5):  # warm both routes
                for name, url in (("attention", attention_url), ("image", image_url)):
                    sizes[name] = len(_fetch(url))
            for _ in range(requests):
                for name, url in (("attention", attention_url), ("image", image_url)):
                    start = time.perf_counter()
                    _fetch(url)
                    timings[name].append(time.perf_counter() - start)
        finally:
            server.close()
    return sizes, {name: (percentile(t, 50), percentile(t, 95)) for name, t in timings.items()}


def _fetch(url):
    # As a browser asks: gzip accepted; the bytes on the wire are what we time.
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"## Storage ({LAYERS} layers x {HEADS} heads x {TOKENS} tokens, causal)\n")
    print("| attention | stored bytes / value | vs float32 | max abs error |")
    print("|---|---|---|---|")
    for name, per_value, ratio, error in bytes_per_value():
        print(f"| {name} | {per_value:.3f} | {ratio:.1f}x smaller | {error:.5f} (bound {metadata.MAX_QUANTIZATION_ERROR:.5f}) |")
    ours, baseline = write_times()
    print(f"\n## Writing one probe step ({EXAMPLES} examples)\n")
    print(f"tb_attention (encode + write + flush): {ours * 1000:.1f} ms; torch.save of the float32 tensors: "
          f"{baseline * 1000:.1f} ms; ratio {ours / baseline:.2f} (goal <= 1)")
    sizes, latency = route_latency(args.requests)
    print(f"\n## GET latency on a real tensorboard ({args.requests} sequential requests each)\n")
    print("| route | bytes on the wire | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    for name in ("attention", "image"):
        print(f"| {name} | {sizes[name]} | {latency[name][0]:.1f} | {latency[name][1]:.1f} |")
    print(f"\np95 ratio attention / image: {latency['attention'][1] / latency['image'][1]:.2f} (goal <= 1, and p95 <= 50 ms)")


if __name__ == "__main__":
    main()
