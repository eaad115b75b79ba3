"""The Long view in headless Chromium on a 32,768-token example: first paint and pan/zoom frame times."""

# Usage (from the repository root, with the project's .venv active):
#   python bench/bench_long_view.py [--repeats 5] [--frames 120]
#
# The example (tests/support/long_view_example.py: 2 layers x 4 heads, k = 16, levels of 64, 32 and 16
# tokens) is written by the writer and served by a real `tensorboard`. Measured in the page:
#   - first paint: from a click on the Long tab (the head view open before it, the example list loaded)
#     to the frame that draws the coarsest level's tile and the distance profile (both fetched then);
#   - a pan or zoom frame: the work of one frame of a gesture (the d3-zoom event handlers, then the
#     map's draw in the next animation frame: tiles, brushed rows, axes), for a wheel zooming in and out
#     from the whole map, a drag at zoom 3 (a finer level's tiles), then a drag at zoom 24 (level 2's tiles,
#     64 brushed rows drawn as dots).
# Goals (issue 22): first paint <= 1 s, a frame <= 16 ms.

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.support import long_view_example as lve  # noqa: E402  (after the path)
from tests.support.dashboard_page import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, Dashboard  # noqa: E402
from tests.support.tensorboard import serving  # noqa: E402

# One gesture in the page: `steps` frames, each dispatching the events of one frame of a drag (or a
# wheel notch), then waiting for the map's draw; the work is the handlers' time plus the draw's.
GESTURE = """async ([kind, steps]) => {
  const canvas = document.querySelector('canvas[data-figure=long-map]');
  const layout = JSON.parse(canvas.dataset.layout);
  const box = canvas.getBoundingClientRect();
  const cx = box.x + layout.x + layout.side / 2, cy = box.y + layout.y + layout.side / 2;
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const work = [];
  const at = (dx, dy) => ({clientX: cx + dx, clientY: cy + dy, bubbles: true, view: window, button: 0, buttons: 1});
  if (kind === 'drag') canvas.dispatchEvent(new MouseEvent('mousedown', at(0, 0)));
  await frame();
  for (let s = 1; s <= steps; s++) {
    const t0 = performance.now();
    if (kind === 'drag') window.dispatchEvent(new MouseEvent('mousemove', at(3 * Math.sin(s / 7) * 40, 2 * Math.cos(s / 9) * 40)));
    else canvas.dispatchEvent(new WheelEvent('wheel', {...at(0, 0), deltaY: s % 40 < 20 ? -40 : 40, deltaMode: 0}));
    const handlers = performance.now() - t0;
    await frame();
    work.push(handlers + Number(canvas.dataset.frameMs));
  }
  if (kind === 'drag') window.dispatchEvent(new MouseEvent('mouseup', at(0, 0)));
  return work;
}"""

FIRST_PAINT = """async () => {
  const t0 = performance.now();
  document.querySelector('button[data-view=long]').click();
  const ready = () => {
    const map = document.querySelector('canvas[data-figure=long-map]');
    return map && map.dataset.tiles === '1/1' && document.querySelector('canvas[data-figure=long-profile][data-layout]');
  };
  while (!ready()) await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  return performance.now() - t0;
}"""


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="first paints measured (a fresh page each)")
    parser.add_argument("--frames", type=int, default=120, help="frames per gesture")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        logdir = pathlib.Path(tmp) / "logs"
        started = time.perf_counter()
        lve.write_logdir(logdir, steps=(0,))
        print(f"wrote the 32,768-token example in {time.perf_counter() - started:.1f} s")
        with serving(logdir, lambda tags: "long32k" in tags.get("train", {})) as tb, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            paints = []
            for _ in range(args.repeats):
                context = browser.new_context(viewport=VIEWPORT)
                board = Dashboard(context.new_page(), tb)
                board.open(run="train", tag="long32k", layer=0, heads=2)  # the head view, a window
                paints.append(board.frame.evaluate(FIRST_PAINT))
                context.close()
            context = browser.new_context(viewport=VIEWPORT)
            board = Dashboard(context.new_page(), tb)
            board.open(wait_for=None, run="train", tag="long32k", view="long", layer=0, heads=2)
            board.frame.wait_for_function("() => document.querySelector('canvas[data-figure=long-map]')?.dataset.tiles === '1/1'")
            gestures = {"wheel zoom in and out, from the whole map": board.frame.evaluate(GESTURE, ["wheel", args.frames])}
            board.open(wait_for=None, run="train", tag="long32k", view="long", layer=0, heads=2, lzoom="3,8000,8000")
            board.frame.wait_for_function("""() => { const c = document.querySelector('canvas[data-figure=long-map]');
                const [a, b] = (c?.dataset.tiles ?? '0/1').split('/'); return c.dataset.level !== '0' && a === b; }""")
            gestures["pan at zoom 3, a finer level's tiles"] = board.frame.evaluate(GESTURE, ["drag", args.frames])
            # deep: the finer level's tiles around the answer queries, their top-k rows brushed
            board.open(wait_for=None, run="train", tag="long32k", view="long", layer=0, heads=2, lzoom="24,600,29400",
                       lbrush=f"{lve.ANSWER[0]}:{lve.ANSWER[1]}")
            board.frame.wait_for_function("""() => { const c = document.querySelector('canvas[data-figure=long-map]');
                const [a, b] = (c?.dataset.tiles ?? '0/1').split('/'); return c.dataset.level === '2' && a === b && Number(c.dataset.rows) > 0; }""")
            gestures["pan at zoom 24, level 2, 64 brushed rows"] = board.frame.evaluate(GESTURE, ["drag", args.frames])
            assert not board.problems, board.problems
            browser.close()
    print(f"first paint (Long tab -> map and profile drawn), {args.repeats} pages: median {statistics.median(paints):.0f} ms, "
          f"max {max(paints):.0f} ms")
    results = {"first_paint_ms": paints}
    for name, work in gestures.items():
        print(f"{name}: frame work median {statistics.median(work):.2f} ms, p95 {percentile(work, 0.95):.2f} ms, "
              f"max {max(work):.2f} ms ({len(work)} frames)")
        results[name] = work
    out = ROOT / "bench" / ".work" / "long_view.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
