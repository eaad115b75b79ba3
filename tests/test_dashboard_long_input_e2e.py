"""A 4,096-token example of 32 x 32 heads in a real Chromium against a real `tensorboard --logdir`: one layer fetched
at a time, the model view drawn as it scrolls, every interaction in proportion to the first paint."""

import time
from statistics import median

import pytest

from tests.support.dashboard_page import HEADS, LAYERS, VIEWPORT, Dashboard, attention, browser, dashboard, needs_chromium, server  # noqa: F401 (fixtures)
from tests.support.tensorboard import serving

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    """A TensorBoard with one 32-layer × 32-head, 4,096-token example (top-k 8, 40 MB stored)."""
    from tb_attention.storage import codecs, summary
    from tests.support import long_example

    logdir = tmp_path_factory.mktemp("long") / "logs"
    toks = long_example.tokens(60)  # the direct top-k builder stores what the encoder would
    for layer in range(4):
        encoded = codecs.encode_attention_layer(long_example.dense_layer(layer, 9, 60), toks, layer=layer, causal=True,
                                                max_dense_tokens=4, top_k=8)
        assert long_example.build_layer(layer, toks, heads=9, top_k=8).blob == encoded.blob
    example = long_example.long_example()
    with summary.Writer(str(logdir / "train")) as writer, pytest.warns(UserWarning, match="top 8 weights"):
        summary.write_examples(writer, "long4k", [example], 1, top_k=8)
    with serving(logdir, lambda tags: "long4k" in tags.get("train", {})) as tb:
        tb.layer_bytes = [len(layer.blob) for layer in example["groups"][0]["attention"]]  # as served (gzip)
        yield tb


@pytest.fixture
def long_dashboard(browser, long_server):
    context = browser.new_context(viewport=VIEWPORT)
    board = Dashboard(context.new_page(), long_server)
    yield board
    context.close()
    assert not board.problems, board.problems


ATTENTION_FETCHES = """() => performance.getEntriesByType('resource')
    .filter((e) => new URL(e.name).pathname.endsWith('/attention'))
    .map((e) => ({url: e.name, bytes: e.encodedBodySize}))"""


def _hover_ms(board, figure, points):
    """Synchronous handling times (ms) of a mousemove at each canvas point, sorted."""
    return board.frame.evaluate(
        """([figure, points]) => {
            const canvas = document.querySelector(`canvas[data-figure=${figure}]`);
            const box = canvas.getBoundingClientRect();
            const times = [];
            for (const [x, y] of points) {
              const at = {clientX: box.x + x, clientY: box.y + y, bubbles: true};
              const t0 = performance.now();
              canvas.dispatchEvent(new MouseEvent('mousemove', at));
              times.push(performance.now() - t0);
            }
            return times.sort((a, b) => a - b);
        }""",
        [figure, points],
    )


def test_4096_token_example_of_32_by_32_heads_stays_interactive(long_dashboard):
    # What is fetched and drawn is asserted; the times only as ratios to the model view's first paint
    # in the same page (load slows both alike). Measured on a shared 2-core machine: first paint
    # 2.6-3.2 s (22 layers of 1.2 MB fetched, decoded and pooled), a scroll to the end 1.0-2.0 s, a
    # model-view hover 2-7 ms (median), a click to the head view 0.1-0.5 s (its layer is cached), a
    # head-view hover 23-45 ms. Speed goals in absolute numbers: bench/bench_frontend.py.
    board = long_dashboard
    total = sum(board.server.layer_bytes)
    board.open(run="train", tag="long4k")
    assert board.data("tokens") == "4096"
    fetched = board.frame.evaluate(ATTENTION_FETCHES)
    assert len(fetched) == 1 and "layer=0" in fetched[0]["url"]  # the head view fetches one layer
    head_bytes = fetched[0]["bytes"]
    assert head_bytes == board.server.layer_bytes[0]
    x, y = board.token_point("from", 20)
    box = board.canvas().bounding_box()
    head_hovers = _hover_ms(board, "head", [[x - box["x"], y - box["y"] + d] for d in (0, 20, 40, 60, 80, 100)])
    # The model view: first paint of every visible thumbnail.
    started = time.perf_counter()
    board.frame.click("button[data-view=model]")
    board.wait("model")
    paint = time.perf_counter() - started
    first, last = map(int, board.data("layers", "model").split("-"))
    assert first == 0 and last < 31
    assert int(board.data("thumbnails", "model")) == (last + 1) * 32
    fetched = board.frame.evaluate(ATTENTION_FETCHES)
    assert sorted(int(f["url"].split("layer=")[1].split("&")[0]) for f in fetched) == list(range(last + 2))  # one ahead
    at_paint = sum(f["bytes"] for f in fetched)
    board.screenshot("model_view_4096_tokens")
    # A scroll to the last layer fetches and draws it.
    started = time.perf_counter()
    board.frame.evaluate("document.querySelector('.view-model .scroller').scrollTop = 1e6")
    board.frame.wait_for_function(
        "() => { const c = document.querySelector('canvas[data-figure=model]');"
        " return c.dataset.layers.endsWith('-31') && c.dataset.thumbnails !== undefined; }"
    )
    scroll = time.perf_counter() - started
    board.screenshot("model_view_4096_tokens_end")
    layout = board.layout("model")
    centre = lambda layer, head: [layout["left"] + head * layout["step"] + layout["thumb"] / 2,  # noqa: E731
                                  layout["top"] + layer * layout["step"] + layout["thumb"] / 2]
    hovers = _hover_ms(board, "model", [centre(31, h) for h in range(0, 32, 3)] + [centre(25, h) for h in range(1, 32, 3)])
    started = time.perf_counter()
    board.click("model", *centre(30, 17))
    board.frame.wait_for_function("document.querySelector('[data-control=layer]')?.value === '30'")
    board.wait("head")
    click = time.perf_counter() - started
    assert board.url_state()["layer"] == "30" and board.url_state()["heads"] == "17"
    fetched = board.frame.evaluate(ATTENTION_FETCHES)
    urls = [f["url"] for f in fetched]
    assert all("layer=" in url for url in urls), urls
    assert len(set(urls)) == len(urls)  # no layer fetched twice
    moved = sum(f["bytes"] for f in fetched)
    print(f"\n4096 tokens, 32 x 32 heads: model view first paint {paint:.2f} s, scroll to the end {scroll:.2f} s, "
          f"hover median {median(hovers):.1f} ms (max {hovers[-1]:.1f}), click to the head view {click:.2f} s, head view "
          f"hover median {median(head_hovers):.1f} ms (max {head_hovers[-1]:.1f}); fetched "
          f"{head_bytes / 1e6:.2f} MB for the head view, {at_paint / 1e6:.1f} MB at the model view's first paint, "
          f"{moved / 1e6:.1f} MB after scrolling to the end, of the example's {total / 1e6:.1f} MB")
    # Generous ratios (the measured ones are 2-10x wider): scrolling draws a few layers, not all 32
    # again; a hover redraws one thumbnail's outline or one token's arcs, not the view; opening a
    # cached head fetches nothing new.
    paint_ms = paint * 1000
    assert scroll < 3 * paint, f"scrolling to the last layer took {scroll:.2f} s, the first paint {paint:.2f} s"
    assert median(hovers) < paint_ms / 20, f"model view hovers took {hovers} ms, the first paint {paint_ms:.0f} ms"
    assert median(head_hovers) < paint_ms / 10, f"head view hovers took {head_hovers} ms, the first paint {paint_ms:.0f} ms"
    assert click < 2 * paint, f"opening a head took {click:.2f} s, the first paint {paint:.2f} s"
    assert moved <= total
