"""Our views inside a real JupyterLab 4 and Notebook 7, run from the Run menu in Chromium as a user runs a
notebook: bertviz's calls with only the import changed render, answer the mouse, and leave the page alone."""

import json

import pytest

from tests.support.dashboard_page import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, needs_chromium, playwright_api
from tests.support.jupyter import jupyterlab, run_all_cells, write_notebook

pytest.importorskip("jupyterlab")

SETUP = """\
import torch
from transformers import GPT2Config, GPT2LMHeadModel

torch.manual_seed(0)
config = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=100, n_positions=64)
model = GPT2LMHeadModel(config).eval()
model.set_attn_implementation("eager")
tokens = ["The", "Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat", "<img src=x onerror=alert(1)>"]
with torch.no_grad():
    attention = model(torch.arange(1, len(tokens) + 1)[None], output_attentions=True).attentions
"""
# bertviz's README calls, with only the import line changed
HEAD_VIEW = "from tb_attention.notebook import head_view\nhead_view(attention, tokens)"
MODEL_VIEW = "from tb_attention.notebook import model_view\nmodel_view(attention, tokens)"


@needs_chromium
@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_head_and_model_views_run_in_jupyterlab_and_notebook_7(tmp_path, app):
    if app == "notebook":
        pytest.importorskip("notebook")
    write_notebook(tmp_path / "views.ipynb", [SETUP, HEAD_VIEW, MODEL_VIEW])
    with jupyterlab(tmp_path, app) as (url, token), playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems = []
        # (Notebook 7 throws one TypeError of its own at start, with or without our outputs: its stack is
        # all in its own bundle, /static/notebook/)
        page.on("pageerror", lambda e: "/static/notebook/" not in (e.stack or "") and problems.append(f"uncaught: {e}"))
        page.on("dialog", lambda d: (problems.append(f"dialog {d.type}: {d.message}"), d.dismiss()))
        # (JupyterLab's own page logs a 404 or two while it starts: only the outputs' errors count)
        page.on("console", lambda m: m.type == "error" and "tb-attention" in m.text and problems.append(m.text))
        run_all_cells(page, url, token, "views.ipynb", app)
        outputs = page.locator(".jp-OutputArea-output .tb-attention")
        assert outputs.count() == 2
        head = outputs.nth(0).locator("canvas[data-figure=head]")
        head.wait_for(timeout=30_000)
        page.wait_for_selector(".tb-attention canvas[data-figure=head][data-tokens='7']", timeout=30_000)
        page.wait_for_selector(".tb-attention canvas[data-figure=model][data-thumbnails]", timeout=30_000)
        # hover a query token of the head view: its arcs alone are drawn, the model view is untouched
        model_before = outputs.nth(1).locator("canvas[data-figure=model]").get_attribute("data-thumbnails")
        layout = head.get_attribute("data-layout")
        assert layout is not None
        layout = json.loads(layout)
        x0, x1 = layout["query"]
        outputs.nth(0).scroll_into_view_if_needed()  # the notebook scrolls, not the figure inside the output
        box = head.bounding_box()
        page.mouse.move(box["x"] + (x0 + x1) / 2, box["y"] + layout["top"] + 3 * layout["row"])
        page.wait_for_function(
            "() => document.querySelector('.tb-attention').shadowRoot.querySelector('canvas[data-figure=head]')"
            ".dataset.focus === 'hover:from:3'", timeout=10_000)
        assert outputs.nth(1).locator("canvas[data-figure=model]").get_attribute("data-thumbnails") == model_before
        # the hostile token is shown as text in the output, and JupyterLab's own page is unchanged
        assert "<img src=x onerror=alert(1)>" in outputs.nth(0).locator("[data-example='0'] .example-text").inner_text()
        assert page.locator("img[src=x]").count() == 0
        page.screenshot(path=str(SCREENSHOTS / f"notebook_{app}.png"))
        browser.close()
    assert not problems, problems
