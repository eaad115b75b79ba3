"""Load benchmark: concurrent requests on a real tensorboard; errors, latency, memory against the logdir's size.

    python bench/bench_load.py [--steps 100] [--examples 8] [--loaders python,rust]
                               [--sequential 200] [--burst 200] [--requests 2000] [--concurrency 32]
                               [--routes K,..] [--out FILE]

Writes a logdir of STEPS steps, each with EXAMPLES examples of 12 x 12 x 128 causal attention, ten
[12, 12] metrics and an exemplar table; starts `tensorboard --logdir` on 127.0.0.1 with each loader
(`--load_fast false`: Python multiplexer, `true`: Rust data server) and waits until every step is
listed. Then, on that server only:
  1. sequential: SEQUENTIAL requests one at a time (each route's own latency);
  2. burst: BURST requests released at once, one per thread;
  3. sustained: REQUESTS requests from CONCURRENCY threads;
each a mix of GET /attention (binary, gzip accepted as a browser does), /attention?format=json for one
head, /examples, /tags, /metric and /metrics over random steps and examples. Reports the requests that
did not answer 200 (the goal is 0), p50/p95/max latency, and the resident memory of the tensorboard
process plus its children (the Rust data server) against the logdir's bytes on disk (goal <= 1.5x).
Linux only (memory is read from /proc).
"""

import argparse
import concurrent.futures
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tb_attention import Writer, metadata  # noqa: E402
from tb_attention.storage import summary
from tests.support.data import random_attention  # noqa: E402
from tests.support.tensorboard import PLUGIN_ROUTE, TensorBoard

LAYERS, HEADS, TOKENS = 12, 12, 128
METRICS = [*metadata.METRICS, "pos/NOUN", "pos/VERB", "pos/DET", "pos/ADP", "pos/PUNCT"]
LOADERS = {"python": "false", "rust": "true"}


def write_logdir(logdir, steps, examples):
    """The run `train`: per step EXAMPLES distinct-content examples, the metrics and exemplars."""
    rng = np.random.default_rng(0)
    tokens = [f"Ġtoken{i}" for i in range(TOKENS)]
    prepared = [
        {"attention": random_attention(rng, LAYERS, HEADS, TOKENS, sharpness=0.5 + i), "tokens": tokens}
        for i in range(examples)
    ]
    manifest, blobs, _ = summary.encode_examples(prepared)  # encoded once, written every step
    table = {"num_layers": LAYERS, "num_heads": HEADS, "top_k": 3,
             "inputs": [{"tokens": tokens, "text": None, "example": 0}],
             "heads": [[[{"input": 0, "score": 0.5, "from": 2, "to": 1}] * 3] * HEADS] * LAYERS}
    with Writer(logdir / "train") as writer:
        for step in range(steps):
            summary.write(writer, summary.attention_pb("probe", manifest, blobs), step)
            summary.metrics(writer, "probe", {m: rng.random((LAYERS, HEADS)).astype(np.float32) for m in METRICS}, step)
            summary.exemplars(writer, "probe", table, step)
    return sum(p.stat().st_size for p in logdir.rglob("*") if p.is_file())


def process_tree_memory(pid):
    """{process name: (resident bytes now, peak resident bytes)} of a process and its descendants."""
    pids, out = [pid], {}
    while pids:
        current = pids.pop()
        try:
            status = pathlib.Path(f"/proc/{current}/status").read_text()
            for task in pathlib.Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        name = "tensorboard" if current == pid else fields["Name"].strip()
        out[name] = (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)
    return out


MIX = {"attention": 40, "head_json": 10, "examples": 15, "tags": 10, "metric": 15, "metrics": 10}  # % of requests


def make_requests(count, steps, examples, seed, kinds=tuple(MIX)):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        step, example = rng.randrange(steps), rng.randrange(examples)
        kind = rng.choices(kinds, [MIX[k] for k in kinds])[0]
        params = {
            "attention": {"run": "train", "tag": "probe", "step": step, "example": example},
            "head_json": {"run": "train", "tag": "probe", "step": step, "example": example, "format": "json",
                          "layer": rng.randrange(LAYERS), "head": rng.randrange(HEADS)},
            "examples": {"run": "train", "tag": "probe", "step": step},
            "tags": {},
            "metric": {"run": "train", "tag": f"probe/{rng.choice(METRICS)}"},
            "metrics": {"run": "train", "probe": "probe", "step": step},
        }[kind]
        route = "/attention" if kind == "head_json" else f"/{kind}"
        out.append((kind, route + ("?" + urllib.parse.urlencode(params) if params else "")))
    return out


def fetch(base, target):
    """(status, seconds, bytes on the wire) of one GET, asked as a browser asks (gzip accepted)."""
    request = urllib.request.Request(base + PLUGIN_ROUTE + target, headers={"Accept-Encoding": "gzip"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            size, status = len(response.read()), response.status
    except urllib.error.HTTPError as e:
        size, status = len(e.read()), e.code
    except OSError as e:  # refused, reset, timed out: an error too
        size, status = 0, f"{type(e).__name__}"
    return status, time.perf_counter() - start, size


def run_requests(base, requests, concurrency, burst=False):
    barrier = threading.Barrier(concurrency) if burst else None

    def one(request):
        if barrier:
            barrier.wait()
        return (request[0], *fetch(base, request[1]))

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, requests))
    return results, time.perf_counter() - start


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def summarise(name, results, elapsed):
    errors = [r for r in results if r[1] != 200]
    times = [r[2] for r in results]
    row = (f"| {name} | {len(results)} | {len(errors)} | {percentile(times, 50):.1f} | {percentile(times, 95):.1f} | "
           f"{max(times) * 1000:.0f} | {len(results) / elapsed:.0f} |")
    return row, errors


def bench_loader(loader, logdir, disk_bytes, args):
    lines = []
    start = time.perf_counter()
    server = TensorBoard(logdir, load_fast=LOADERS[loader], reload_interval=5)
    try:
        server.wait_for(lambda t: len(t.get("train", {}).get("probe", {}).get("steps", [])) == args.steps,
                        timeout=1800, interval=1.0)
        load_seconds = time.perf_counter() - start
        time.sleep(6)  # one more reload cycle, so memory is measured at rest
        memory_loaded = process_tree_memory(server.process.pid)
        rows, all_errors, by_kind = [], [], {}
        phases = [
            (f"sequential: {args.sequential} from 1 thread", args.sequential, 1, False),
            (f"burst: {args.burst} at once", args.burst, args.burst, True),
            (f"sustained: {args.requests} from {args.concurrency} threads", args.requests, args.concurrency, False),
        ]
        for seed, (name, count, threads, burst) in enumerate(phases):
            if not count:
                continue
            requests = make_requests(count, args.steps, args.examples, seed, args.routes)
            results, elapsed = run_requests(server.url, requests, threads, burst=burst)
            row, errors = summarise(name, results, elapsed)
            rows.append(row)
            all_errors += errors
            for kind, _status, seconds, size in results:
                by_kind.setdefault((seed, kind), []).append((seconds, size))
        memory_after = process_tree_memory(server.process.pid)
        alive = server.process.poll() is None
    finally:
        server.close()
    lines.append(f"### {loader} loader (`--load_fast {LOADERS[loader]}`)\n")
    lines.append(f"Every step listed after {load_seconds:.0f} s. Server alive after the load: {alive}.\n")
    lines.append("| phase | requests | not 200 | p50 ms | p95 ms | max ms | requests/s |")
    lines.append("|---|---|---|---|---|---|---|")
    lines += rows
    lines.append("\n| route | requests (alone + sustained) | p50 ms alone | p95 ms alone | p50 ms sustained "
                 "| p95 ms sustained | mean bytes on the wire |")
    lines.append("|---|---|---|---|---|---|---|")
    for kind in MIX:
        alone, loaded = by_kind.get((0, kind), []), by_kind.get((2, kind), [])
        if not loaded:
            continue
        cells = [f"{percentile([v[0] for v in values], q):.1f}" if values else "-"
                 for values in (alone, loaded) for q in (50, 95)]
        size = statistics.mean(v[1] for v in loaded)
        lines.append(f"| {kind} | {len(alone)} + {len(loaded)} | {' | '.join(cells)} | {size:.0f} |")
    mib = 2**20
    rss_loaded = sum(rss for rss, _ in memory_loaded.values())
    rss_after, peak = (sum(values) for values in zip(*memory_after.values()))
    parts = ", ".join(f"{name} {rss / mib:.0f} MiB ({peak / mib:.0f} peak)" for name, (rss, peak) in memory_after.items())
    lines.append(
        f"\nMemory (tensorboard + children): {rss_loaded / mib:.0f} MiB resident once loaded, "
        f"{rss_after / mib:.0f} MiB after the requests, {peak / mib:.0f} MiB peak (sum of each process's VmHWM). "
        f"Logdir on disk: {disk_bytes / mib:.0f} MiB. Ratio resident/disk: {rss_loaded / disk_bytes:.2f} loaded, "
        f"{rss_after / disk_bytes:.2f} after, {peak / disk_bytes:.2f} peak (goal <= 1.5). By process, after: {parts}.\n"
    )
    if all_errors:
        lines.append(f"Errors (first 10): {all_errors[:10]}\n")
    return lines, not all_errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--loaders", default="python,rust")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=200, help="requests made one at a time first")
    parser.add_argument("--routes", type=lambda s: tuple(s.split(",")), default=tuple(MIX),
                        help=f"kinds of request to mix (default all: {','.join(MIX)})")
    parser.add_argument("--out", type=pathlib.Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        start = time.perf_counter()
        disk_bytes = write_logdir(tmp / "logs", args.steps, args.examples)
        lines = [
            f"## Load: {args.steps} steps x {args.examples} examples of {LAYERS}x{LAYERS}x{TOKENS} causal attention, "
            f"{len(METRICS)} metrics and exemplars per step\n",
            f"Logdir: {disk_bytes / 2**20:.0f} MiB on disk, written in {time.perf_counter() - start:.0f} s. "
            f"Command: `python bench/bench_load.py {' '.join(sys.argv[1:])}`\n",
        ]
        ok = True
        for loader in args.loaders.split(","):
            section, passed = bench_loader(loader, tmp / "logs", disk_bytes, args)
            lines += section
            ok &= passed
            print("\n".join(section), flush=True)
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
