"""Tokens that could spoof others, in a real Chromium: bidi overrides and zero-width characters are shown as escapes."""

import json

import numpy as np
import pytest

from tb_attention import Writer
from tb_attention.storage import summary
from tests.support.dashboard_page import VIEWPORT, Dashboard, browser, needs_chromium  # noqa: F401 (fixtures)
from tests.support.data import random_attention
from tests.support.tensorboard import serving

pytestmark = needs_chromium

BIDI = "\u202eevil.exe\u202c"  # displays as "exe.live" when drawn as is
TOKENS = ["Open", BIDI, "\u200b", "now", "a\u200db"]


@pytest.fixture(scope="module")
def spoof_server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("spoof") / "logs"
    attention = random_attention(np.random.default_rng(3), 2, 2, len(TOKENS))
    with Writer(logdir / "train") as writer:
        summary.write_examples(writer, "probe", [{"attention": attention, "tokens": TOKENS, "text": "".join(TOKENS)}], 0)
    with serving(logdir, lambda tags: "probe" in tags.get("train", {})) as tb:
        yield tb


def test_bidi_and_zero_width_tokens_are_shown_as_escapes(browser, spoof_server):
    context = browser.new_context(viewport=VIEWPORT)
    board = Dashboard(context.new_page(), spoof_server)
    try:
        board.open(run="train", tag="probe", tokens=1)  # token 1 selected: the inspector shows it
        frame = board.frame
        shown = frame.text_content("[data-example='0'] .example-text")
        # The override and the zero-width characters appear as escapes, never as themselves.
        assert "\\u202eevil.exe\\u202c" in shown and "\\u200b" in shown and "a\\u200db" in shown, shown
        assert not any(c in shown for c in "\u202e\u202c\u200b\u200d"), shown
        # The inspector keeps the exact token, JSON-escaped.
        assert json.dumps(BIDI) in frame.text_content("[data-inspector=tokens]")
        _, svg = board.export("svg")
        assert "\u202e".encode() not in svg and b"\\u202e" in svg
        board.screenshot("head_view_spoofing_tokens")
        assert not board.problems, board.problems
    finally:
        context.close()
