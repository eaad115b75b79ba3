"""Serving benchmark: the plugin's routes against the images plugin's PNG route on the same tensorboard.

    python bench/bench_serve.py [--loaders python,rust] [--rounds 200] [--logdir DIR] [--out FILE]

Writes (or reuses, with --logdir) a logdir of STEPS steps of attention examples of 12 layers x 12
heads (ATTENTION_TAGS: 128-token causal, 512-token causal, 512-token top-k), and an image summary
made as TensorBoard's own image summary makes it (`images` plugin data, a [width, height, png]
string tensor) of a real photograph (scikit-image's astronaut, public domain). Starts a real
`tensorboard --logdir` on 127.0.0.1 with each loader (`--load_fast false`: the Python multiplexer,
`true`: the Rust data server), waits until every step is listed, fetches every target once (the
"first" column: blobs not seen before), then makes ROUNDS rounds of sequential requests, each round
one request per route in a random order, over the same targets (zooming and brushing fetch what
they fetched before). Every request is asked as a browser asks (gzip accepted). Reports p50/p95 per
route and its p50 against the image route's p50 of the same run: the goal is
`p50 <= 1.5 x image p50 + 2 ms`.

Routes are one entry each in ROUTES (a name and a function of (rng, Facts) giving the request);
LONG_ROUTES is the hook for the long-example routes (`/long_map`, `/long_rows`, `/long_profile`,
`/attention?window=`), with their long tag added to ATTENTION_TAGS (a `write` function of its own).
"""

import argparse
import dataclasses
import io
import json
import pathlib
import random
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tb_attention import Writer  # noqa: E402
from tb_attention.storage import summary  # noqa: E402
from tests.support.data import random_attention  # noqa: E402
from tests.support.tensorboard import PLUGIN_ROUTE, TensorBoard  # noqa: E402

LAYERS, HEADS = 12, 12
STEPS = 3
RUN = "train"
IMAGE_TAG = "photo/image_summary"  # the tag TensorBoard's image summary gives name "photo"
LOADERS = {"python": "false", "rust": "true"}


@dataclasses.dataclass
class Tag:
    tokens: int
    examples: int
    options: dict = dataclasses.field(default_factory=dict)  # encode options (max_dense_tokens, top_k)


ATTENTION_TAGS = {
    "dense128": Tag(128, 4),  # stored "causal"
    "dense512": Tag(512, 2),  # stored "causal", 1.5 MB per layer before compression
    "topk512": Tag(512, 1, {"max_dense_tokens": 256, "top_k": 32}),  # stored "topk"
}


def write_logdir(logdir):
    """Run `train`: STEPS steps of every ATTENTION_TAGS tag and of one image; returns bytes on disk."""
    rng = np.random.default_rng(0)
    with Writer(logdir / RUN) as writer:
        for tag, spec in ATTENTION_TAGS.items():
            tokens = [f"Ġtoken{i}" for i in range(spec.tokens)]
            examples = [{"attention": random_attention(rng, LAYERS, HEADS, spec.tokens, sharpness=1.0 + i), "tokens": tokens}
                        for i in range(spec.examples)]
            manifest, blobs, _ = summary.encode_examples(examples, **spec.options)
            for step in range(STEPS):
                summary.write(writer, summary.attention_pb(tag, manifest, blobs), step)
        from tests.support import long_view_example

        long_manifest, long_blobs, _ = summary.encode_examples([long_view_example.long_example()])  # one record
        for step in range(STEPS):
            summary.write(writer, summary.attention_pb(LONG_TAG, long_manifest, long_blobs), step)
        image = image_summary_pb("photo", photograph())
        for step in range(STEPS):
            summary.write(writer, image, step)
    return sum(p.stat().st_size for p in logdir.rglob("*") if p.is_file())


def photograph():
    """A real photograph, 256 x 256 RGB (what a vision probe logs beside its attention)."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((256, 256), Image.BILINEAR))


def image_summary_pb(name, image):
    """TensorBoard's legacy image summary (`tensorboard.plugins.image.summary.pb`) without TensorFlow:
    the image plugin's own metadata and a [width, height, png] string tensor under `<name>/image_summary`."""
    from PIL import Image
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.image import metadata
    from tensorboard.util import tensor_util

    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    content = [str(image.shape[1]).encode(), str(image.shape[0]).encode(), png.getvalue()]
    tensor = tensor_util.make_tensor_proto(np.array(content, dtype=object))
    out = summary_pb2.Summary()
    out.value.add(tag=f"{name}/image_summary", metadata=metadata.create_summary_metadata(name, None), tensor=tensor)
    return out


@dataclasses.dataclass
class Facts:
    """What the requests are drawn from: the steps and, per step, the image route's query."""

    steps: int
    image_queries: list


def attention_layer(tag):
    def target(rng, facts):
        return _plugin("/attention", tag=tag, step=rng.randrange(facts.steps),
                       example=rng.randrange(ATTENTION_TAGS[tag].examples), layer=rng.randrange(LAYERS))
    return target


def attention_head_json(tag):
    def target(rng, facts):
        return _plugin("/attention", tag=tag, step=rng.randrange(facts.steps), example=rng.randrange(ATTENTION_TAGS[tag].examples),
                       layer=rng.randrange(LAYERS), head=rng.randrange(HEADS), format="json")
    return target


def examples_of(tag):
    return lambda rng, facts: _plugin("/examples", tag=tag, step=rng.randrange(facts.steps))


def _plugin(route, **params):
    return PLUGIN_ROUTE + route + "?" + urllib.parse.urlencode({"run": RUN, **params})


def image(rng, facts):
    return "/data/plugin/images/individualImage?" + rng.choice(facts.image_queries)


BASELINE = "image"  # the route every other is measured against
ROUTES = {
    "image": image,
    "attention layer (128 causal)": attention_layer("dense128"),
    "attention layer (512 causal)": attention_layer("dense512"),
    "attention layer (512 top-k)": attention_layer("topk512"),
    "attention head json (128 causal)": attention_head_json("dense128"),
    "examples (128 causal)": examples_of("dense128"),
}
# Long examples (http_api.md, "Long examples"): tests/support/long_view_example.py's 32,768-token example
# (2 layers x 4 heads, levels of 512 and 1,024 cells a side), written at every step as tag LONG_TAG.
LONG_TAG = "long32k"


def _long(route, draw=lambda rng: {}):
    """A long route's target: `draw(rng)` gives its own parameters besides run, tag, step, example and layer."""
    def target(rng, facts):
        return _plugin(route, tag=LONG_TAG, step=rng.randrange(facts.steps), example=0, layer=rng.randrange(2),
                       **draw(rng))
    return target


def _tile(rng):  # a 512 x 512 tile of level 1 (1,024 cells a side), aligned as the Long view asks
    r, c = rng.randrange(2) * 512, rng.randrange(2) * 512
    return {"level": 1, "head": rng.randrange(4), "rows": f"{r}:{r + 512}", "cols": f"{c}:{c + 512}"}


def _rows(rng):
    start = rng.randrange(0, 32768 - 512, 256)
    return {"head": rng.randrange(4), "start": start, "stop": start + 512}


def _window(rng):
    start = rng.randrange(0, 32768 - 256, 256)
    return {"window": f"{start}:{start + 256}"}


LONG_ROUTES = {
    "long_map level 0 (head)": _long("/long_map", lambda rng: {"level": 0, "head": rng.randrange(4)}),
    "long_map level 0 (mean)": _long("/long_map", lambda rng: {"level": 0}),
    "long_map level 1 tile (head)": _long("/long_map", _tile),
    "long_rows 512 (head)": _long("/long_rows", _rows),
    "long_profile": lambda rng, facts: _plugin("/long_profile", tag=LONG_TAG, step=rng.randrange(facts.steps), example=0),
    "attention window 256": _long("/attention", _window),
}


def image_queries(server, steps):
    """The images plugin's own query for its PNG at each step (`blob_key=...` under the data provider)."""
    params = urllib.parse.urlencode({"run": RUN, "tag": IMAGE_TAG, "sample": 0})
    with urllib.request.urlopen(f"{server.url}/data/plugin/images/images?{params}", timeout=60) as response:
        listing = json.loads(response.read())
    if len(listing) != steps:
        raise RuntimeError(f"the images plugin lists {len(listing)} steps of {IMAGE_TAG}, not {steps}")
    return [entry["query"] for entry in listing]


def fetch(base, target):
    """(status, seconds) of one GET asked as a browser asks (gzip accepted), the body read whole."""
    request = urllib.request.Request(base + target, headers={"Accept-Encoding": "gzip"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, time.perf_counter() - start


def ms(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def bench_loader(loader, logdir, args):
    routes = {**ROUTES, **LONG_ROUTES}
    server = TensorBoard(logdir, load_fast=LOADERS[loader], reload_interval=5)
    try:
        server.wait_for(lambda t: all(len(t.get(RUN, {}).get(tag, {}).get("steps", [])) == STEPS for tag in (*ATTENTION_TAGS, LONG_TAG)),
                        timeout=600, interval=1.0)
        facts = Facts(STEPS, image_queries(server, STEPS))
        rng = random.Random(0)
        # The targets: each route's requests drawn once, so that the rounds ask again for what was asked.
        targets = {name: [make(rng, facts) for _ in range(args.targets)] for name, make in routes.items()}
        first, errors = {name: [] for name in routes}, []
        for name in routes:  # warm-up: each target once (first fetches of blobs, the server's own caches)
            for target in dict.fromkeys(targets[name]):
                status, seconds = fetch(server.url, target)
                first[name].append(seconds)
                if status != 200:
                    errors.append((name, target, status))
        times = {name: [] for name in routes}
        for _ in range(args.rounds):
            order = list(routes)
            rng.shuffle(order)
            for name in order:
                target = rng.choice(targets[name])
                status, seconds = fetch(server.url, target)
                times[name].append(seconds)
                if status != 200:
                    errors.append((name, target, status))
    finally:
        server.close()
    base = ms(times[BASELINE], 50)
    lines = [f"### {loader} loader (`--load_fast {LOADERS[loader]}`)\n",
             "| route | first fetch p50 ms | p50 ms | p95 ms | p50 / image p50 | goal p50 <= 1.5 x image + 2 ms |",
             "|---|---|---|---|---|---|"]
    met = True
    for name in routes:
        p50 = ms(times[name], 50)
        goal = 1.5 * base + 2.0
        ok = name == BASELINE or p50 <= goal
        met &= ok
        verdict = "(baseline)" if name == BASELINE else f"{'met' if ok else 'NOT met'} ({p50:.1f} vs {goal:.1f})"
        lines.append(f"| {name} | {ms(first[name], 50):.1f} | {p50:.1f} | {ms(times[name], 95):.1f} | {p50 / base:.2f} | {verdict} |")
    lines.append(f"\nGoal met for every route: {met}. Requests not 200: {len(errors)}{' ' + str(errors[:5]) if errors else ''}.\n")
    return lines, not errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loaders", default="python,rust")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of one request per route")
    parser.add_argument("--targets", type=int, default=24, help="distinct requests drawn per route")
    parser.add_argument("--logdir", type=pathlib.Path, help="write the logdir here once and reuse it (default: a temporary one)")
    parser.add_argument("--out", type=pathlib.Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    tmp = None
    logdir = args.logdir
    if logdir is None:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_serve_"))
        logdir = tmp / "logs"
    try:
        if not (logdir / RUN).exists():
            start = time.perf_counter()
            disk = write_logdir(logdir)
            print(f"logdir {logdir}: {disk / 2**20:.0f} MiB written in {time.perf_counter() - start:.0f} s", flush=True)
        lines = [f"## Serving: {', '.join(f'{t} ({s.examples} x {LAYERS}x{HEADS}x{s.tokens})' for t, s in ATTENTION_TAGS.items())}, "
                 f"{STEPS} steps; plugin from {ROOT}\n",
                 f"Command: `python bench/bench_serve.py {' '.join(sys.argv[1:])}`\n"]
        ok = True
        for loader in args.loaders.split(","):
            section, passed = bench_loader(loader, logdir, args)
            lines += section
            ok &= passed
            print("\n".join(section), flush=True)
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
