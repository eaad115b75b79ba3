"""The Attention tab in a real Chromium against a real `tensorboard --logdir`: fixtures and a page helper."""

# One TensorBoard and one browser per test module; one page per test. Every test fails on a
# console error, an uncaught exception or a dialog (the token `<img src=x onerror=alert(1)>` must
# stay text). Screenshots go to artifacts/screenshots/.

import json
import os
import shutil
import time
import urllib.parse

import numpy as np
import pytest

from tests.support.dashboard_logdir import write_dashboard_logdir
from tests.support.tensorboard import ROOT, serving

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
LAYERS, HEADS = 4, 6

# The attribute each figure sets once it has drawn its data.
FIGURE_READY = {
    "head": "data-tokens", "model": "data-thumbnails", "neuron": "data-query", "metric-heatmap": "data-values",
    "metric-curves": "data-charts", "analysis": "data-cards", "exemplars": "data-rows", "compare-diff": "data-layout",
    "compare-changes": "data-values", "generation": "data-strip",
}

needs_chromium = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("dashboard") / "logs"
    logdir.mkdir()
    with pytest.warns(UserWarning, match="top 32 weights"):  # the 1024-token example is stored sparse
        write_dashboard_logdir(logdir, layers=LAYERS, heads=HEADS)

    def ready(tags):
        return "long" in tags.get("train", {}) and "eval" in tags and "checkpoint-100" in tags

    with serving(logdir, ready) as tb:
        tb.logdir = logdir
        yield tb


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Dashboard:
    """A TensorBoard page showing the Attention tab, with helpers that read what it drew."""

    def __init__(self, page, server):
        self.page = page
        self.server = server
        self.problems = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("dialog", lambda d: (self.problems.append(f"dialog {d.type}: {d.message}"), d.dismiss()))

    def open(self, wait_for="head", **state):
        items = ["attention"] + [f"p.attention.{k}={urllib.parse.quote(str(v), safe='')}" for k, v in state.items()]
        self.page.goto(f"{self.server.url}/#{'&'.join(items)}")
        return self.wait(wait_for) if wait_for else self

    def wait(self, figure="head"):
        self.frame.wait_for_selector(f"canvas[data-figure={figure}]", state="visible")
        attribute = FIGURE_READY[figure]
        self.frame.wait_for_selector(f"canvas[data-figure={figure}][{attribute}]")
        return self

    @property
    def frame(self):
        """The Attention tab's iframe (TensorBoard creates it once its plugin list has loaded)."""
        deadline = time.time() + 30
        while time.time() < deadline:
            for frame in self.page.frames:
                if "plugin_entry.html" in frame.url:
                    return frame
            self.page.wait_for_timeout(50)
        raise AssertionError("the Attention tab's iframe did not load")

    def canvas(self, figure="head"):
        return self.frame.locator(f"canvas[data-figure={figure}]")

    def data(self, name, figure="head"):
        return self.canvas(figure).get_attribute(f"data-{name}")

    def layout(self, figure="head"):
        return json.loads(self.data("layout", figure))

    def url_state(self):
        hash_ = urllib.parse.urlsplit(self.page.url).fragment
        items = dict(item.split("=", 1) for item in hash_.split("&") if "=" in item)
        return {k[len("p.attention."):]: urllib.parse.unquote(v) for k, v in items.items() if k.startswith("p.attention.")}

    def wait_url(self, key, value):
        """Waits until the URL holds key=value (None: no key, i.e. the default)."""
        deadline = time.time() + 5
        while time.time() < deadline:
            if self.url_state().get(key) == value:
                return
            self.page.wait_for_timeout(50)  # (time.sleep would not let Playwright see navigations)
        raise AssertionError(f"URL state {key}={value!r} never appeared: {self.url_state()}")

    def token_point(self, side, index):
        """Page coordinates of token `index` in the query ("from") or key ("to") column."""
        layout = self.layout()
        box = self.canvas().bounding_box()
        x0, x1 = layout["query" if side == "from" else "key"]
        return box["x"] + (x0 + x1) / 2, box["y"] + layout["top"] + index * layout["row"]

    def hover_token(self, side, index):
        self.page.mouse.move(*self.token_point(side, index))

    def click_token(self, side, index, modifiers=None):
        self._click_at(*self.token_point(side, index), modifiers)

    def _click_at(self, x, y, modifiers=None):
        """Moves to page point (x, y) and clicks there, holding `modifiers` (e.g. "Shift") if given."""
        self.page.mouse.move(x, y)
        if modifiers:
            self.page.keyboard.down(modifiers)
        self.page.mouse.click(x, y)
        if modifiers:
            self.page.keyboard.up(modifiers)

    def json(self, name, figure):
        """A figure's data attribute, parsed."""
        return json.loads(self.data(name, figure))

    def canvas_point(self, figure, x, y):
        """Page coordinates of a point given in a canvas's own coordinates."""
        box = self.canvas(figure).bounding_box()
        return box["x"] + x, box["y"] + y

    def hover(self, figure, x, y):
        self.page.mouse.move(*self.canvas_point(figure, x, y))

    def click(self, figure, x, y, modifiers=None):
        self._click_at(*self.canvas_point(figure, x, y), modifiers)

    def tooltip(self, containing=""):
        """The text of the visible tooltip (waits until one shows, with `containing` in it)."""
        self.frame.wait_for_function(
            "text => [...document.querySelectorAll('[data-tooltip]')].some(t => !t.hidden && t.textContent.includes(text))",
            arg=containing,
        )
        return self.frame.evaluate("[...document.querySelectorAll('[data-tooltip]')].find(t => !t.hidden).textContent")

    def screenshot(self, name):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    def export(self, fmt, key=None):
        """(file name, bytes) of an export by its button, or by its key (which keeps the hover)."""
        with self.page.expect_download() as download:
            if key:
                self.page.keyboard.press(key)
            else:
                self.frame.click(f"button[data-export={fmt}]")
        return download.value.suggested_filename, open(download.value.path(), "rb").read()


@pytest.fixture
def dashboard(browser, server):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    board = Dashboard(page, server)
    yield board
    context.close()
    assert not board.problems, board.problems


def attention(server, run, tag, step, example, layer):
    """[H, N, N] weights of one layer as the backend serves them (JSON form)."""
    status, body = server.get("/attention", {"run": run, "tag": tag, "step": step, "example": example, "layer": layer, "format": "json"})
    assert status == 200, body
    return np.asarray(body["attention"])


# Values as the routes serve them, and comparisons with what the views drew


def metric(server, run, tag):
    status, body = server.get("/metric", {"run": run, "tag": tag})
    assert status == 200, body
    return body


def probe_metrics(server, run, step, probe="probe"):
    status, body = server.get("/metrics", {"run": run, "probe": probe, "step": step})
    assert status == 200, body
    return body["metrics"]


def close(a, b, tol=1e-6):
    a = np.array(a, dtype=float)
    b = np.array(b, dtype=float)
    return a.shape == b.shape and bool(np.all((np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= tol)))


def grid(values):
    """A served [L][H] grid with NaN for null."""
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def cell_center(layout, layer, head):
    return layout["x"] + (head + 0.5) * layout["cellW"], layout["y"] + (layer + 0.5) * layout["cellH"]


def set_slider(dashboard, index):
    dashboard.frame.fill("[data-control=step]", str(index))
    dashboard.frame.dispatch_event("[data-control=step]", "change")


def pixel(dashboard, figure, x, y):
    """RGB of a canvas at a point in its CSS coordinates."""
    return dashboard.frame.evaluate(
        """([figure, x, y]) => {
            const canvas = document.querySelector(`canvas[data-figure=${figure}]`);
            const scale = canvas.width / canvas.getBoundingClientRect().width;
            return [...canvas.getContext('2d').getImageData(Math.round(x * scale), Math.round(y * scale), 1, 1).data.slice(0, 3)];
        }""",
        [figure, x, y],
    )
