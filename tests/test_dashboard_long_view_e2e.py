"""The Long view of a 32,768-token example in a real Chromium against a real `tensorboard --logdir`: the block
map shows the heads' known patterns, pans and zooms (a finer level fetched tile by tile), a brushed query range's
top-k rows point at the known far token, the text scrolls to its end, and nothing N x N is ever asked for."""

import json
import math
import urllib.parse

import pytest

from tests.support import long_view_example as lve
from tests.support.dashboard_page import VIEWPORT, Dashboard, browser, needs_chromium, pixel  # noqa: F401 (fixtures)
from tests.support.tensorboard import serving

pytestmark = needs_chromium

MAX_CELLS = 1 << 20


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("long_view") / "logs"
    lve.write_logdir(logdir)
    with serving(logdir, lambda tags: "long32k" in tags.get("train", {}) and "short" in tags.get("train", {})) as tb:
        yield tb


@pytest.fixture
def board(browser, long_server):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    b = Dashboard(page, long_server)
    b.requests = []
    page.on("request", lambda r: "/data/plugin/attention/" in r.url and b.requests.append(r.url))
    yield b
    context.close()
    assert not b.problems, b.problems


def _routes(board, route):
    """Query parameters of every request the page made to `route`."""
    out = []
    for url in board.requests:
        parts = urllib.parse.urlsplit(url)
        if parts.path.endswith("/" + route):
            out.append({k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()})
    return out


def _span(text):
    a, b = map(int, text.split(":"))
    return b - a


def _assert_nothing_n_by_n(board):
    """Every request is a window, a tile of at most 2^20 cells, at most 4,096 rows, or a profile."""
    for p in _routes(board, "attention"):
        if p.get("tag") == "long32k":
            assert "window" in p and _span(p["window"]) <= 512 and "layer" in p, p
    for p in _routes(board, "long_map"):
        assert _span(p["rows"]) * _span(p["cols"]) <= MAX_CELLS, p
    for p in _routes(board, "long_rows"):
        assert int(p["stop"]) - int(p["start"]) <= 4096, p
    assert not _routes(board, "qk") or all(p.get("tag") != "long32k" for p in _routes(board, "qk"))


def _map(board):
    return board.frame.evaluate("() => ({...document.querySelector('canvas[data-figure=long-map]').dataset})")


def _point(layout, key, query):
    """Canvas coordinates of (key, query) under the map's zoom."""
    z, side = layout["zoom"], layout["side"]
    return (layout["x"] + (key - z["x"]) * z["k"] * side / layout["nk"], layout["y"] + (query - z["y"]) * z["k"] * side / layout["nq"])


def _hover_mass(board, key, query):
    layout = json.loads(_map(board)["layout"])
    board.hover("long-map", *_point(layout, key, query))
    board.frame.wait_for_function("() => document.querySelector('canvas[data-figure=long-map]').dataset.hover !== ''")
    return json.loads(_map(board)["hover"])


def _open(board, **state):
    board.open(wait_for=None, run="train", tag="long32k", view="long", **state)
    board.frame.wait_for_function("() => document.querySelector('canvas[data-figure=long-map]')?.dataset.tiles === '1/1'")


def test_the_map_shows_each_heads_known_pattern(board):
    _open(board, layer=0, heads=2)  # layer 0, head 2: the retrieval head
    assert _map(board)["level"] == "0" and _map(board)["block"] == "64"
    on = _hover_mass(board, 16000, 16000)
    off = _hover_mass(board, 8000, 24000)
    # 16 previous tokens, uniformly: the block's first 15 queries give some to the block before
    assert abs(on["mass"] - (1 - (15 * 16 / 2) / (16 * 64))) < 0.02 and off["mass"] == 0, (on, off)
    needle = _hover_mass(board, lve.NEEDLE, 30040)  # block row 469 holds queries 30,016-30,079: 48 of them answer
    assert needle["row"] == 469 and needle["col"] == lve.NEEDLE // 64
    assert abs(needle["mass"] - lve.NEEDLE_WEIGHT * 48 / 64) < 0.02, needle
    layout = json.loads(_map(board)["layout"])
    board.page.mouse.move(0, 0)
    board.page.wait_for_timeout(100)
    # the pixel whose centre lies nearest a cell's centre shows that cell (cells are ~1.1 px at zoom 1)
    cell = [math.floor(v) for v in _point(layout, 19 * 64 + 32, 469 * 64 + 32)]
    r, g, b = pixel(board, "long-map", *cell)
    assert (r, g, b) != (255, 255, 255) and b < 200, (r, g, b)  # tinted with the head's red, not paper
    assert pixel(board, "long-map", *_point(layout, 16000, 4000)) == [255, 255, 255]
    board.screenshot("long_view_map_retrieval_head")
    # The sink head of layer 0 (head 1): its mass is on the first keys, for every query.
    board.frame.click("[data-control=heads] button:nth-child(2)")
    board.frame.wait_for_function("() => document.querySelector('canvas[data-figure=long-map]').dataset.map === 'layer 0, head 1'")
    board.frame.wait_for_function("() => document.querySelector('canvas[data-figure=long-map]').dataset.tiles === '1/1'")
    assert abs(_hover_mass(board, 10, 20000)["mass"] - 0.7) < 0.02  # 0.55 + 3 x 0.05 on keys 0-3
    assert board.url_state()["heads"] == "1"
    _assert_nothing_n_by_n(board)


def test_zooming_fetches_the_visible_tiles_of_a_finer_level_and_panning_moves_the_view(board):
    _open(board, layer=0, heads=2)
    layout = json.loads(_map(board)["layout"])
    x, y = board.canvas_point("long-map", *_point(layout, lve.NEEDLE, 30000))
    board.page.mouse.move(x, y)
    level, k = 0, 1.0
    for _ in range(20):  # scroll to zoom in, centred on the needle, until blocks of 16 tokens are 4 px or more
        board.page.mouse.wheel(0, -300)
        board.page.wait_for_timeout(200)
        level = int(_map(board)["level"])
        k = json.loads(_map(board)["layout"])["zoom"]["k"]
        if k >= 16:
            break
    assert level == 2 and k >= 16
    board.page.wait_for_timeout(300)  # the zoom reaches the state (and the URL), which fetches the tiles
    board.frame.wait_for_function("() => { const [a, b] = document.querySelector('canvas[data-figure=long-map]').dataset.tiles.split('/'); return a === b; }")
    fine = [p for p in _routes(board, "long_map") if p["level"] != "0"]
    assert fine, board.requests
    finest = [p for p in fine if p["level"] == "2"]
    assert finest and all(_span(p["rows"]) * _span(p["cols"]) <= MAX_CELLS for p in finest)
    # only the visible part of the 2,048 x 2,048 level: the tiles around the needle
    assert all(_span(p["rows"]) <= 512 and _span(p["cols"]) <= 512 for p in finest) and len(finest) <= 8
    state = board.url_state()
    k, zx, zy = map(float, state["lzoom"].split(","))
    assert k >= 16 and zx <= lve.NEEDLE <= zx + lve.N / k and zy <= 30000 <= zy + lve.N / k
    # the finer level resolves the answer queries: block 16 rows 30,000-30,015 all attend to the needle
    cell = _hover_mass(board, 1240, 30008)  # the centre of block (1875, 77)
    assert cell["level"] == 2 and abs(cell["mass"] - lve.NEEDLE_WEIGHT) < 0.02, cell
    board.screenshot("long_view_zoomed_needle")
    view = list(map(int, _map(board)["view"].split(":")))
    box = board.canvas("long-map").bounding_box()
    board.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    board.page.mouse.down()
    board.page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2 + 60, steps=6)
    board.page.mouse.up()
    board.page.wait_for_timeout(300)
    moved = list(map(int, _map(board)["view"].split(":")))
    assert moved[0] < view[0] and moved[2] < view[2]  # dragged right and down: earlier keys and queries
    assert abs((moved[1] - moved[0]) - (view[1] - view[0])) <= 1  # same zoom (rounded token positions)
    assert float(_map(board)["frameMs"]) < 50
    board.wait_url("lzoom", board.url_state()["lzoom"])
    _assert_nothing_n_by_n(board)


def test_a_brushed_range_shows_its_top_k_rows_pointing_at_the_far_token(board):
    _open(board, layer=0, heads=2)
    layout = json.loads(_map(board)["layout"])
    # drag along the query axis, left of the map, over the answer queries
    x = layout["x"] - 20
    _, y0 = _point(layout, 0, lve.ANSWER[0] + 4)
    _, y1 = _point(layout, 0, lve.ANSWER[1] - 4)
    board.page.mouse.move(*board.canvas_point("long-map", x, y0))
    board.page.mouse.down()
    board.page.mouse.move(*board.canvas_point("long-map", x, y1), steps=4)
    board.page.mouse.up()
    board.frame.wait_for_selector("[data-long=summary][data-top]")
    start, stop = map(int, board.url_state()["lbrush"].split(":"))
    assert start <= lve.ANSWER[0] + 60 and stop >= lve.ANSWER[1] - 60 and stop - start <= 4096
    rows = _routes(board, "long_rows")
    assert rows and rows[-1]["start"] == str(start) and rows[-1]["head"] == "2"
    top = json.loads(board.frame.get_attribute("[data-long=summary]", "data-top"))
    answered = min(stop, lve.ANSWER[1]) - max(start, lve.ANSWER[0])
    assert top[0]["key"] == lve.NEEDLE
    assert abs(top[0]["weight"] - lve.NEEDLE_WEIGHT * answered / (stop - start)) < 0.02
    assert int(_map(board)["rows"]) > 0
    assert int(board.data("arcs", "long-rail")) > 0  # the rail's arcs reach the needle, 29k tokens back
    text = board.frame.text_content("[data-long=summary]")
    assert "NEEDLE" in text and "the rest" in text
    board.screenshot("long_view_brushed_answer")
    # the needle's chip scrolls the text there; its token is tinted
    board.frame.click(f"[data-long=summary] button[data-key='{lve.NEEDLE}']")
    board.frame.wait_for_selector(f"[data-long=text] [data-i='{lve.NEEDLE}']")
    assert board.frame.evaluate(f"() => document.querySelector(\"[data-i='{lve.NEEDLE}']\").style.background") != ""
    assert board.frame.text_content(f"[data-i='{lve.NEEDLE}']") == "·NEEDLE"
    board.screenshot("long_view_needle_in_text")
    _assert_nothing_n_by_n(board)


def test_the_text_scrolls_through_32k_tokens_with_only_the_visible_lines_in_the_dom(board):
    _open(board)
    text = "[data-long=text]"
    board.frame.wait_for_selector(f"{text}[data-shown]")
    assert board.frame.get_attribute(text, "data-tokens") == str(lve.N)
    assert board.frame.evaluate("() => document.querySelectorAll('[data-long=text] [data-i]').length") < 1000
    board.frame.evaluate(f"() => document.querySelector('{text}').scrollTop = 1e9")
    board.frame.wait_for_function(f"() => document.querySelector('{text}').dataset.shown.endsWith('-{lve.N}')")
    assert board.frame.text_content(f"[data-i='{lve.N - 1}']") == lve.tokens()[-1].replace(" ", "·")
    assert board.frame.evaluate("() => document.querySelectorAll('[data-long=text] [data-i]').length") < 1000
    # a token with markup stays text
    board.frame.evaluate(f"() => {{ const t = document.querySelector('{text}'); t.scrollTop = t.scrollHeight * {lve.UNSAFE / lve.N}; }}")
    board.frame.wait_for_selector(f"[data-i='{lve.UNSAFE}']")
    assert board.frame.text_content(f"[data-i='{lve.UNSAFE}']") == "<img src=x onerror=aler…"  # shortened to 24
    assert board.frame.evaluate("() => document.querySelectorAll('[data-long=text] img').length") == 0
    board.screenshot("long_view_text_scrolled")
    # clicking a token locks it, and the head view opens a window around it
    board.frame.click(f"[data-i='{lve.UNSAFE}']")
    board.wait_url("tokens", str(lve.UNSAFE))
    board.frame.click("button[data-view=head]")
    board.wait("head")
    note = board.frame.wait_for_selector("[data-window]:not([data-window=''])")
    assert note.get_attribute("data-window") == f"{lve.UNSAFE - 256}:{lve.UNSAFE + 256}"
    assert "of 32,768 (window)" in note.text_content()
    assert board.data("tokens") == "512"
    assert board.data("focus") == "locked:from:256"  # the locked token, inside the window
    board.screenshot("long_view_head_window")
    board.frame.click("[data-control=window-later]")
    board.wait_url("lwin", str(lve.UNSAFE))
    board.frame.click("button[data-view=model]")
    board.wait("model")
    windows = {p["window"] for p in _routes(board, "attention") if p.get("tag") == "long32k"}
    assert f"{lve.UNSAFE}:{lve.UNSAFE + 512}" in windows
    _assert_nothing_n_by_n(board)


def test_the_distance_profile_shows_every_head_and_a_click_opens_one(board):
    _open(board, layer=0)
    board.frame.wait_for_selector("canvas[data-figure=long-profile][data-layout]")
    assert _map(board)["map"] == "layer 0, mean of the heads"
    geometry = json.loads(board.data("layout", "long-profile"))
    assert geometry["rows"] == lve.LAYERS * lve.HEADS and geometry["bins"] == 17
    # layer 1, head 2 has the previous-token pattern: its distance-1 bin is the darkest cell of its row
    row = 1 * lve.HEADS + 2
    y = geometry["y"] + (row + 0.5) * geometry["rowH"]
    shade = [sum(pixel(board, "long-profile", geometry["x"] + (b + 0.5) * geometry["cellW"], y)) for b in range(4)]
    assert shade.index(min(shade)) == 1, shade
    board.click("long-profile", geometry["x"] + 1.5 * geometry["cellW"], y)
    board.wait_url("heads", "2")
    board.wait_url("layer", "1")
    board.frame.wait_for_function("() => document.querySelector('canvas[data-figure=long-map]').dataset.map === 'layer 1, head 2'")
    board.screenshot("long_view_profile")


def test_a_short_example_says_to_use_the_head_view(board):
    board.open(wait_for=None, run="train", tag="short", view="long")
    # "Loading the examples…" shows first; the view's own message replaces it once the example is read.
    board.frame.wait_for_function(
        "() => [...document.querySelectorAll('[data-status]:not([hidden])')]"
        ".some(e => !e.classList.contains('status-loading'))", timeout=30_000)
    status = board.frame.query_selector("[data-status]:not([hidden]):not(.status-loading)")
    assert "stored whole: open it in the Head or Model view" in status.text_content()
