"""Dashboard speed against bertviz, in the same headless Chromium, on the same 12 x 12 attention."""

# Usage (from the repository root, with the project's .venv active):
#   python bench/bench_frontend.py [--sizes 128,256,1024] [--repeats 3] [--skip-bertviz]
#
# Measures, for 12 layers x 12 heads:
#   - first render of the model view and of the head view (navigation start -> last DOM/canvas
#     change before the page goes quiet, the same rule for both tools; ours includes fetching the
#     binary weights from a real `tensorboard` process, bertviz's includes parsing its inline JSON);
#   - one hover update of the head view: the event's handlers plus the style and layout work they
#     leave (forced by reading a layout property), for a different token each time.
# bertviz (PyPI, not a project dependency) is installed with `pip install --target bench/.bertviz`;
# its HTML loads require.js, d3 5 and jQuery from a CDN, which is unreachable here, so those come
# from the npm registry (bench/frontend/package.json) and the HTML's URLs are rewritten to them.

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
BERTVIZ_DIR = BENCH / ".bertviz"
BERTVIZ_VERSION = "1.4.1"
JS_LIBS = BENCH / "frontend" / "node_modules"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
LAYERS = HEADS = 12
QUIET_MS = 2500  # a page is drawn when nothing in its DOM changed for this long
BERTVIZ_TIMEOUT_S = 600  # per bertviz page (it may draw for minutes); past it, "did not finish"
HOVERS = 60  # hover events per measurement
SCROLL_FRAMES = 60  # animation frames of scrolling per measurement

# Records the time of the last DOM change (nodes, attributes, text) of the page, from its start.
_WATCH_DOM = """
window.__bench = {last: 0, changes: 0};
new MutationObserver(() => { window.__bench.last = performance.now(); window.__bench.changes++; })
  .observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def ensure_tools():
    if not JS_LIBS.joinpath("requirejs").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=BENCH / "frontend", check=True)
    if not BERTVIZ_DIR.joinpath("bertviz").is_dir():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(BERTVIZ_DIR)]
        subprocess.run([*pip, "--no-deps", f"bertviz=={BERTVIZ_VERSION}"], check=True)
        subprocess.run([*pip, "ipython"], check=True)  # bertviz imports IPython.display


def write_logdir(logdir, sizes):
    """One run `bench`, one tag per size (`n128`, ...), step 0, written through tb_attention."""
    from tb_attention.storage import summary
    from tests.support.dashboard_logdir import long_tokens, structured_attention

    rng = np.random.default_rng(0)
    data = {}
    with summary.Writer(str(logdir / "bench")) as writer:
        for n in sizes:
            attention = structured_attention(rng, LAYERS, HEADS, n, causal=False)
            data[n] = (attention, long_tokens(n))
            summary.attention(writer, f"n{n}", attention, data[n][1], 0, causal=False)
    return data


def bertviz_html(view, attention, tokens):
    """bertviz's own HTML for `view`, with its CDN script URLs pointing at local copies."""
    sys.path.insert(0, str(BERTVIZ_DIR))
    import torch
    from bertviz import head_view, model_view

    layers = [torch.from_numpy(attention[layer][None]) for layer in range(attention.shape[0])]
    render = head_view if view == "head" else model_view
    html = render(attention=layers, tokens=tokens, html_action="return").data
    for cdn, local in {
        "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js": JS_LIBS / "requirejs" / "require.js",
        "https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min": JS_LIBS / "d3" / "dist" / "d3.min",
        "https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.0/jquery.min": JS_LIBS / "jquery" / "dist" / "jquery.min",
    }.items():
        assert cdn in html, f"bertviz {BERTVIZ_VERSION} no longer loads {cdn}"
        html = html.replace(cdn, local.as_uri())
    return f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'></head><body>\n{html}\n</body></html>\n"


def wait_drawn(page, ready_js, timeout_s):
    """Milliseconds from navigation start to the last DOM change before QUIET_MS of quiet."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = page.evaluate(f"({{last: window.__bench.last, now: performance.now(), ready: Boolean({ready_js})}})")
        if state["ready"] and state["now"] - state["last"] > QUIET_MS:
            return state["last"]
        page.wait_for_timeout(200)
    return None


def measure_ours(browser, server, view, n, repeats):
    figure = "model" if view == "model" else "head"
    ready = f"document.querySelector('canvas[data-figure={figure}][data-{'thumbnails' if figure == 'model' else 'arcs'}]')"
    times, fetches = [], []
    for _ in range(repeats):
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(_WATCH_DOM)
        page = context.new_page()
        page.set_default_timeout(BERTVIZ_TIMEOUT_S * 1000)
        page.goto(f"{server.url}/data/plugin_entry.html?name=attention#run=bench&tag=n{n}&view={view}")
        times.append(wait_drawn(page, ready, 120))
        fetches.append(page.evaluate(
            "performance.getEntriesByType('resource').filter(e => e.name.includes('/attention?'))[0]?.duration ?? null"
        ))
        if view == "model":
            drawn = int(page.get_attribute("canvas[data-figure=model]", "data-thumbnails"))
            assert drawn > 0
        context.close()
    return {"ms": statistics.median(times), "runs_ms": times, "fetch_ms": statistics.median(fetches)}


def hover_ours(browser, server, n):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{server.url}/data/plugin_entry.html?name=attention#run=bench&tag=n{n}")
    page.wait_for_selector("canvas[data-figure=head][data-arcs]")
    times = page.evaluate(
        """(hovers) => {
            const canvas = document.querySelector('canvas[data-figure=head]');
            const layout = JSON.parse(canvas.dataset.layout);
            const box = canvas.getBoundingClientRect();
            const x = box.x + (layout.query[0] + layout.query[1]) / 2;
            const times = [];
            for (let k = 0; k < hovers; k++) {
              const y = box.y + layout.top + ((k * 7) % 30) * layout.row;  // a different visible token each time
              const t0 = performance.now();
              canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: x, clientY: y, bubbles: true}));
              void document.body.offsetHeight;  // the style and layout work the event left, too
              times.push(performance.now() - t0);
            }
            return times;
        }""",
        HOVERS,
    )
    arcs = int(page.get_attribute("canvas[data-figure=head]", "data-arcs"))
    page.mouse.move(1, 1)
    # Scrolling: one scroll step per animation frame; the frame interval shows dropped frames.
    frames = page.evaluate(
        """(steps) => new Promise((resolve) => {
            const scroller = document.querySelector('.view-head .scroller');
            const stamps = [];
            const step = (t) => {
              stamps.push(t);
              if (stamps.length > steps) return resolve(stamps.slice(1).map((s, i) => s - stamps[i]));
              scroller.scrollTop += 37;
              requestAnimationFrame(step);
            };
            requestAnimationFrame(step);
        })""",
        SCROLL_FRAMES,
    )
    context.close()
    return summarize_hovers(times) | {"arcs_last_hover": arcs, "scroll_frame_mean_ms": statistics.fmean(frames), "scroll_frame_max_ms": max(frames)}


def measure_bertviz(path, view, timeout_s):
    """Runs one bertviz page in its own browser process, killed after `timeout_s`: a page that is
    still drawing blocks the browser's main thread, and with it any request to stop it."""
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--bertviz-page", str(path), view],
            capture_output=True, text=True, timeout=timeout_s, check=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"ms": None, "timeout_s": timeout_s}


def bertviz_page(path, view):
    """--bertviz-page PATH VIEW: draws one bertviz page, prints its timings as JSON."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(_WATCH_DOM)
        page = context.new_page()
        page.set_default_timeout(0)
        page.goto(path.as_uri(), timeout=0)
        ms = wait_drawn(page, "document.querySelector('#vis svg, svg')", BERTVIZ_TIMEOUT_S)
        result = {"ms": ms, "svg_elements": page.evaluate("document.querySelectorAll('svg *').length")}
        if view == "head" and ms is not None:
            times = page.evaluate(
                """(hovers) => {
                    const tokens = [...document.querySelectorAll('#left > g:not(.attentionBoxes) > g')];
                    const times = [];
                    for (let k = 0; k < hovers; k++) {
                      const t0 = performance.now();
                      tokens[(k * 7) % Math.min(30, tokens.length)].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
                      void document.body.offsetHeight;  // the style and layout work the event left, too
              times.push(performance.now() - t0);
                    }
                    return times;
                }""",
                HOVERS,
            )
            result["hover"] = summarize_hovers(times)
        browser.close()
    print(json.dumps(result))


def summarize_hovers(times):
    times = sorted(times[1:])  # the first event also warms up the code path
    return {"mean_ms": statistics.fmean(times), "p95_ms": times[int(0.95 * (len(times) - 1))], "max_ms": times[-1]}


def main():
    if sys.argv[1:2] == ["--bertviz-page"]:
        return bertviz_page(pathlib.Path(sys.argv[2]), sys.argv[3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks: stop tensorboard
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="128,256,1024", help="token counts (default 128,256,1024)")
    parser.add_argument("--bertviz-sizes", default="128,256", help="sizes bertviz is asked to draw (default 128,256)")
    parser.add_argument("--repeats", type=int, default=3, help="first-render runs of ours per case (median)")
    parser.add_argument("--bertviz-timeout", type=int, default=BERTVIZ_TIMEOUT_S, help="seconds per bertviz page")
    parser.add_argument("--skip-bertviz", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    bertviz_sizes = [] if args.skip_bertviz else [int(s) for s in args.bertviz_sizes.split(",")]

    from playwright.sync_api import sync_playwright

    from tests.support.tensorboard import TensorBoard

    if bertviz_sizes:
        ensure_tools()
    logdir = WORK / "logdir"
    if logdir.exists():
        subprocess.run(["rm", "-rf", str(logdir)], check=True)
    logdir.mkdir(parents=True)
    print(f"writing {LAYERS} x {HEADS} attention at {sizes} tokens ...", flush=True)
    data = write_logdir(logdir, sorted(set(sizes) | set(bertviz_sizes)))
    server = TensorBoard(logdir)
    server.wait_for(lambda tags: all(f"n{n}" in tags.get("bench", {}) for n in sizes))
    results = {"ours": {}, "bertviz": {}, "chromium": None, "viewport": VIEWPORT}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            results["chromium"] = browser.version
            for n in sizes:
                for view in ("model", "head"):
                    r = measure_ours(browser, server, view, n, args.repeats)
                    results["ours"][f"{view}_{n}"] = r
                    print(f"ours     {view:5} view first render, {n:4} tokens: {r['ms']:8.0f} ms (fetch of /attention {r['fetch_ms']:.0f} ms)", flush=True)
                r = hover_ours(browser, server, n)
                results["ours"][f"hover_{n}"] = r
                print(f"ours     head view hover, {n:4} tokens: mean {r['mean_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, max {r['max_ms']:.2f} ms; "
                      f"scrolling: a frame every {r['scroll_frame_mean_ms']:.1f} ms (max {r['scroll_frame_max_ms']:.1f} ms)", flush=True)
            for n in bertviz_sizes:
                for view in ("model", "head"):
                    path = WORK / f"bertviz_{view}_{n}.html"
                    path.write_text(bertviz_html(view, *data[n]), encoding="utf-8")
                    print(f"bertviz  {view:5} view, {n:4} tokens: {path.stat().st_size / 1e6:.0f} MB of HTML, drawing ...", flush=True)
                    r = measure_bertviz(path, view, args.bertviz_timeout)
                    results["bertviz"][f"{view}_{n}"] = r
                    shown = f"did not finish in {args.bertviz_timeout} s" if r["ms"] is None else f"{r['ms']:8.0f} ms ({r['svg_elements']} SVG elements)"
                    print(f"bertviz  {view:5} view first render, {n:4} tokens: {shown}", flush=True)
                    if "hover" in r:
                        h = r["hover"]
                        print(f"bertviz  head view hover, {n:4} tokens: mean {h['mean_ms']:.2f} ms, p95 {h['p95_ms']:.2f} ms", flush=True)
            browser.close()
    finally:
        server.close()
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print_summary(results)


def print_summary(results):
    ours, bertviz = results["ours"], results["bertviz"]
    print("\n| measurement | tb-attention | bertviz | speed-up |\n|---|---|---|---|")
    for key in sorted(ours, key=lambda k: (k.split("_")[0], int(k.split("_")[1]))):
        view, n = key.split("_")
        mine = ours[key]
        theirs = bertviz.get(key)
        if view == "hover":
            theirs = bertviz.get(f"head_{n}", {}).get("hover")
            a, b = mine["mean_ms"], theirs["mean_ms"] if theirs else None
            label = f"head view hover, {n} tokens (mean; p95 {mine['p95_ms']:.1f} ms)"
        else:
            a, b = mine["ms"], theirs["ms"] if theirs else None
            label = f"{view} view first render, {n} tokens"
        b_text = "not run" if theirs is None else (f"not drawn in {theirs.get('timeout_s', '?')} s" if b is None else f"{b:,.1f} ms")
        ratio = f"{b / a:,.0f}x" if b else "-"
        print(f"| {label} | {a:,.1f} ms | {b_text} | {ratio} |")


if __name__ == "__main__":
    main()
