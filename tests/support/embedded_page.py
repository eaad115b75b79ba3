"""The dashboard outside TensorBoard (an exported file, a notebook output) in a real Chromium, offline."""

# The page is opened from file:// with every other request aborted and recorded, so a test can say
# both "it rendered" and "it asked for nothing". The dashboard renders into its container's open
# shadow root: Playwright's CSS selectors pierce it, document.querySelectorAll does not.

import pathlib

import pytest

from tests.support.dashboard_page import FIGURE_READY, VIEWPORT, Dashboard

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:"


class EmbeddedPage(Dashboard):
    """An HTML file showing the dashboard; `frame` is where it renders (the page, or a sandboxed iframe)."""

    def __init__(self, page, frame=None, parent=None):
        if parent is None:
            super().__init__(page, server=None)  # records console errors, uncaught exceptions, dialogs
            self.requests = []  # what the page tried to fetch beyond file:// (aborted)
        else:
            self.page, self.server, self.problems, self.requests = page, None, parent.problems, parent.requests
        self._frame = frame

    @property
    def frame(self):
        return self._frame or self.page.main_frame

    def open_file(self, path, wait_for="head"):
        self.page.goto(pathlib.Path(path).resolve().as_uri())
        return self.wait(wait_for) if wait_for else self

    def in_frame(self, selector="iframe"):
        """The same page helper, on the dashboard inside the page's iframe."""
        return EmbeddedPage(self.page, self.page.wait_for_selector(selector).content_frame(), parent=self)

    def wait(self, figure="head", container=None):
        scope = f"{container} " if container else ""
        self.frame.wait_for_selector(f"{scope}canvas[data-figure={figure}]", state="visible", timeout=30_000)
        self.frame.wait_for_selector(f"{scope}canvas[data-figure={figure}][{FIGURE_READY[figure]}]", timeout=30_000)
        return self

    def tooltip(self, containing=""):
        shown = (
            "text => [...document.querySelectorAll('*')].flatMap(e => e.shadowRoot ? "
            "[...e.shadowRoot.querySelectorAll('[data-tooltip]')] : []).find(t => !t.hidden && t.textContent.includes(text))"
        )
        self.frame.wait_for_function(f"({shown}) !== undefined", arg=containing)
        return self.frame.evaluate(f"text => ({shown})(text).textContent", containing)


def offline_page(browser):
    """(context, EmbeddedPage): a new page whose requests other than file:// are aborted and recorded."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    board = EmbeddedPage(page)

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            board.requests.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    return context, board


@pytest.fixture
def offline(browser):
    """An offline page (import it with `browser` from tests.support.dashboard_page); fails the test on a
    console error, an uncaught exception, a dialog or any request beyond file://."""
    context, board = offline_page(browser)
    yield board
    context.close()
    assert not board.problems, board.problems
    assert not board.requests, f"the page asked the network for {board.requests}"


def with_csp(html_bytes):
    """The page with a Content-Security-Policy that forbids every remote resource."""
    return html_bytes.replace(b"<head>", f'<head><meta http-equiv="Content-Security-Policy" content="{CSP}">'.encode(), 1)


def in_sandboxed_iframe(html_text, height=700):
    """A page holding `html_text` in `<iframe sandbox="allow-scripts" srcdoc=...>`, as Colab shows outputs."""
    import html

    return (f'<!doctype html><html><head><meta charset="utf-8"></head><body>'
            f'<iframe sandbox="allow-scripts" style="width:100%;height:{height}px;border:0" '
            f'srcdoc="{html.escape(html_text, quote=True)}"></iframe></body></html>')
