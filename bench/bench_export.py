"""Exported files: size against the stored bytes, time to export, time to the first drawn figure.

    python bench/bench_export.py [--logdir L --run R ...] [--steps 49]

Without --logdir it writes a training-like logdir (tests/support/dashboard_logdir.py: 4 layers x 8
heads, a probe of 3 examples at each of --steps steps, metrics and exemplars at each). Per encoding:
  - export: `tb-attention export --step all` of the runs, wall clock (the logdir is read by
    TensorBoard's Python loader, every answer made by the plugin, the pack deflated at level 9);
  - size: the file against the runs' event files plus the bundle (static/embed.js); goal <= 1.1;
  - open: Chromium opens the file from disk with the network blocked; time until the head view has
    drawn (canvas[data-figure=head][data-tokens]), then until Compare has.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tb_attention.serve import export  # noqa: E402
from tests.support.dashboard_logdir import write_training_logdir  # noqa: E402


def stored_bytes(logdir, runs):
    return sum(f.stat().st_size for run in runs for f in (pathlib.Path(logdir) / run).rglob("*") if f.is_file())


def time_export(logdir, runs, out, encoding):
    args = [sys.executable, "-m", "tb_attention.cli", "export", "--logdir", str(logdir), "--step", "all",
            "--encoding", encoding, "-o", str(out)]
    for run in runs:
        args += ["--run", run]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def time_open(path):
    from playwright.sync_api import sync_playwright

    from tests.support.embedded_page import offline_page

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        context, board = offline_page(browser)
        start = time.perf_counter()
        board.open_file(path)
        first = time.perf_counter() - start
        start = time.perf_counter()
        board.frame.click("[data-view=compare]")
        board.wait("compare-diff")
        compare = time.perf_counter() - start
        context.close()
        browser.close()
        assert not board.problems and not board.requests, (board.problems, board.requests)
    return first, compare


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", help="an existing logdir (default: a synthetic one)")
    parser.add_argument("--run", action="append", help="runs to export (default: train)")
    parser.add_argument("--steps", type=int, default=49, help="probe steps of the synthetic logdir")
    args = parser.parse_args()
    runs = args.run or ["train"]
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir
        if logdir is None:
            logdir = pathlib.Path(tmp) / "logs"
            write_training_logdir(logdir, layers=4, heads=8, steps=range(0, 25 * args.steps, 25))
        stored = stored_bytes(logdir, runs)
        bundle = (export.STATIC_DIR / "embed.js").stat().st_size
        print(f"logdir {logdir}, runs {', '.join(runs)}: {stored / 2**20:.1f} MiB stored; bundle {bundle / 2**10:.0f} KiB\n")
        print("| encoding | export s | file MiB | file / (stored + bundle) | first figure s | Compare s |")
        print("|---|---|---|---|---|---|")
        for encoding in ("latin1", "base64"):
            out = pathlib.Path(tmp) / f"export-{encoding}.html"
            seconds = time_export(logdir, runs, out, encoding)
            size = out.stat().st_size
            first, compare = time_open(out)
            print(f"| {encoding} | {seconds:.1f} | {size / 2**20:.1f} | {size / (stored + bundle):.3f} | {first:.2f} | {compare:.2f} |")


if __name__ == "__main__":
    main()
