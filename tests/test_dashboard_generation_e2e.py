"""The Generation view in a real Chromium against a real `tensorboard --logdir`: stepping through generated
tokens, the heat strip of each token's attention, who attended to an earlier token, two steps' decodings
aligned at their divergence, and the head view opened on a generated token."""

import json

import numpy as np
import pytest

from tests.support.dashboard_page import attention, browser, dashboard, needs_chromium  # noqa: F401 (fixtures)
from tests.support.generation_logdir import (
    DECODER_PROMPT,
    DIVERGENCE,
    GENERATED,
    OTHER_RUN,
    PROMPT,
    RUN,
    SEQ2SEQ_RUN,
    SOURCE,
    TAG,
    write_generation_logdir,
)
from tests.support.tensorboard import serving

pytestmark = needs_chromium

LAYERS, HEADS = 3, 4
P = len(PROMPT)
STEP = 100  # the panel's default: the newest step
COUNT = len(GENERATED[STEP])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("generation") / "logs"
    logdir.mkdir()
    write_generation_logdir(logdir, layers=LAYERS, heads=HEADS)
    write_real_generation(logdir / REAL_RUN)

    def ready(tags):
        return (len(tags.get(RUN, {}).get(TAG, {}).get("steps", [])) == 2
                and all(TAG in tags.get(r, {}) for r in (OTHER_RUN, SEQ2SEQ_RUN))
                and len(tags.get(REAL_RUN, {}).get("answers", {}).get("steps", [])) == 2)

    with serving(logdir, ready) as tb:
        yield tb


REAL_RUN = "real-gpt2"
REAL_PROMPTS = ["The cat sat on the mat. The cat", "Once upon a time"]


def write_real_generation(directory):
    """A real generation probe: a tiny GPT-2 writes 8 tokens from each prompt at step 0, and again at step 1
    after its weights moved (so the two decodings may part)."""
    import torch

    from tb_attention import Probe, Writer
    from tb_attention.convert import assets
    from tests.support.models import tiny_gpt2

    tokenizer = assets.gpt2_tokenizer()
    model = tiny_gpt2(attn_implementation="sdpa")
    probe = Probe(tokenizer, REAL_PROMPTS, name="answers", generate=dict(max_new_tokens=8, pad_token_id=0), with_qk=True)
    with Writer(directory) as writer:
        probe.log(writer, model, 0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        probe.log(writer, model, 1)


@pytest.fixture(scope="module")
def weights(server):
    """{step: [L, H, N, N]} of example 0 as the backend serves it."""
    return {step: np.stack([attention(server, RUN, TAG, step, 0, layer) for layer in range(LAYERS)]) for step in (0, STEP)}


def open_view(dashboard, **state):
    dashboard.open(wait_for="generation", run=RUN, tag=TAG, view="generation", **state)
    return dashboard


def wait_data(dashboard, name, value, figure="generation"):
    """Waits until the figure's data-<name> is `value`."""
    dashboard.frame.wait_for_function(
        "([figure, name, value]) => document.querySelector(`canvas[data-figure=${figure}]`)?.dataset[name] === value",
        arg=[figure, name, value],
    )


def strip(dashboard):
    return np.array(json.loads(dashboard.data("strip", "generation")))


def expected_row(weights, t, layer=None, head=None):
    """Generated token t's row (query P - 1 + t) over keys 0..P - 1 + t: one head, a layer's mean or every head's."""
    row = P - 1 + t
    w = weights[STEP][:, :, row, : row + 1]
    if head is not None:
        return w[layer, head]
    return w[layer].mean(0) if layer is not None else w.reshape(-1, row + 1).mean(0)


def close(a, b, tol=1e-5):
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol))


def blur(dashboard):
    """Takes the focus off a form control, so that ←/→ reach the dashboard."""
    dashboard.frame.evaluate("document.activeElement && document.activeElement.blur()")


def test_stepping_through_generated_tokens_shows_each_tokens_attention(dashboard, weights):
    open_view(dashboard)
    assert dashboard.data("token", "generation") == "0" and dashboard.data("heat", "generation") == "all"
    assert close(strip(dashboard), expected_row(weights, 0)), strip(dashboard)

    # The slider
    dashboard.frame.fill("[data-control=gen-token]", "3")
    wait_data(dashboard, "token", "3")
    dashboard.wait_url("gtoken", "3")
    assert dashboard.data("row", "generation") == str(P - 1 + 3)
    assert close(strip(dashboard), expected_row(weights, 3))
    assert dashboard.frame.text_content("[data-control=gen-position]") == f"4 / {COUNT}"

    # ←/→
    blur(dashboard)
    dashboard.page.keyboard.press("ArrowRight")
    wait_data(dashboard, "token", "4")
    assert close(strip(dashboard), expected_row(weights, 4))
    dashboard.page.keyboard.press("ArrowLeft")
    dashboard.page.keyboard.press("ArrowLeft")
    wait_data(dashboard, "token", "2")
    assert close(strip(dashboard), expected_row(weights, 2))

    # One head, picked in the toolbar; then a layer's mean
    dashboard.frame.click("[data-control=gen-heat] button[data-value=head]")
    dashboard.frame.select_option("[data-control=layer]", "1")
    dashboard.frame.click("[data-control=heads] button:nth-child(3)")
    wait_data(dashboard, "heat", "head:1.2")
    assert close(strip(dashboard), expected_row(weights, 2, layer=1, head=2))
    assert {k: dashboard.url_state().get(k) for k in ("gheat", "layer", "heads")} == {"gheat": "head", "layer": "1", "heads": "2"}
    dashboard.frame.click("[data-control=gen-heat] button[data-value=layer]")
    wait_data(dashboard, "heat", "layer:1")
    assert close(strip(dashboard), expected_row(weights, 2, layer=1))
    # Each head of the layer as a stripe of its own
    dashboard.frame.click("[data-control=gen-heat] button[data-value=heads]")
    wait_data(dashboard, "heat", "heads:1")
    strips = np.array(json.loads(dashboard.data("strips", "generation")))
    assert close(strips, np.stack([expected_row(weights, 2, layer=1, head=h) for h in range(HEADS)]))
    dashboard.screenshot("generation_view_heads")

    # The grid: the current token's share on the prompt per head; a click picks that head
    grid = np.array(json.loads(dashboard.data("grid", "generation-side")), dtype=float)
    row = weights[STEP][:, :, P - 1 + 2, :]
    assert close(grid, row[:, :, :P].sum(-1) / row.sum(-1), 1e-5), grid
    dashboard.frame.click("[data-control=gen-grid] button[data-value=max]")
    dashboard.wait_url("ggrid", "max")  # the grid is drawn in the render that writes the URL
    grid = np.array(json.loads(dashboard.data("grid", "generation-side")), dtype=float)
    assert close(grid, row.max(-1), 1e-5), grid
    layout = json.loads(dashboard.data("grid-layout", "generation-side"))
    dashboard.click("generation-side", layout["x"] + 0.5 * layout["cellW"], layout["y"] + 2.5 * layout["cellH"])  # layer 2, head 0
    wait_data(dashboard, "heat", "head:2.0")
    assert close(strip(dashboard), expected_row(weights, 2, layer=2, head=0))

    # ▶ plays to the last token
    dashboard.frame.click("[data-control=gen-play]")
    dashboard.frame.wait_for_function(
        "last => document.querySelector('canvas[data-figure=generation]').dataset.token === last",
        arg=str(COUNT - 1), timeout=15_000,
    )
    dashboard.frame.wait_for_selector("[data-control=gen-play]:not([data-playing])")
    assert close(strip(dashboard), expected_row(weights, COUNT - 1, layer=2, head=0))
    dashboard.screenshot("generation_view_last_token")


def test_clicking_an_earlier_token_shows_which_generated_tokens_attended_to_it(dashboard, weights):
    open_view(dashboard, gtoken=3)
    key = PROMPT.index("ĠFrance")
    boxes = {i: (x, y, w) for i, x, y, w in json.loads(dashboard.data("layout", "generation"))}
    x, y, w = boxes[key]
    dashboard.click("generation", x + w / 2, y)
    wait_data(dashboard, "locked", str(key))
    assert dashboard.url_state().get("tokens") == str(key) and dashboard.url_state().get("side") == "to"
    paid = json.loads(dashboard.data("attended", "generation-side"))
    mean = weights[STEP].reshape(-1, *weights[STEP].shape[2:]).mean(0)
    expected = [mean[P - 1 + t, key] for t in range(COUNT)]
    assert len(paid) == COUNT and np.allclose(paid, expected, atol=1e-5), (paid, expected)
    # A generated token attended to by the later ones only: the rows before it paid nothing.
    later = P + 1
    x, y, w = boxes[later]
    dashboard.click("generation", x + w / 2, y)
    wait_data(dashboard, "locked", str(later))
    paid = json.loads(dashboard.data("attended", "generation-side"))
    assert paid[:2] == [None, None] and np.allclose(paid[2:], [mean[P - 1 + t, later] for t in range(2, COUNT)], atol=1e-5)
    dashboard.hover("generation", x + w / 2, y)
    assert "generated token" in dashboard.tooltip("probability")
    dashboard.screenshot("generation_view_attended_by")


def test_two_steps_of_one_prompt_are_aligned_and_their_divergence_marked(dashboard):
    open_view(dashboard)  # step 100 against the Compare view's A: step 0
    dashboard.frame.wait_for_selector("canvas[data-figure=generation-compare][data-divergence]")
    assert dashboard.data("divergence", "generation-compare") == str(DIVERGENCE)
    pairs = json.loads(dashboard.data("pairs", "generation-compare"))
    # "The city is" against "It is": after diverging, "is big ." lines up again.
    assert pairs == [[0, 0, True], [1, 1, True], [2, 2, False], [3, None, False], [4, 3, True], [5, 4, True], [6, 5, True], [7, 6, True]]
    assert json.loads(dashboard.data("labels", "generation-compare")) == ["step 100", "step 0"]  # one run: the steps
    # A click on a column of the comparison shows that token.
    dashboard.screenshot("generation_view_compare_steps")
    # Another run with the same tag: its sampled decoding parts at the second token.
    dashboard.frame.select_option("[data-control=a-run]", OTHER_RUN)
    wait_data(dashboard, "divergence", "1", "generation-compare")
    dashboard.wait_url("a_run", OTHER_RUN)
    assert json.loads(dashboard.data("labels", "generation-compare")) == [f"{RUN} {STEP}", f"{OTHER_RUN} 0"]  # two runs


def test_the_head_view_opens_on_the_row_that_wrote_a_generated_token(dashboard):
    open_view(dashboard, gtoken=3)
    dashboard.frame.click("button[data-open=head]")
    dashboard.wait("head")
    dashboard.wait_url("view", None)
    assert dashboard.url_state().get("tokens") == str(P - 1 + 3)
    dashboard.frame.wait_for_function("() => document.querySelector('canvas[data-figure=head]').dataset.focus === 'locked:from:7'")
    # Back in the Generation view, the token is still the one shown.
    dashboard.frame.click("[data-view=generation]")
    wait_data(dashboard, "token", "3")


def test_an_example_without_generation_explains_itself_and_hides_the_tab(dashboard):
    open_view(dashboard, gtoken=1)
    # Token 1's alternatives include a token of markup: it stays text in the figure and in an export.
    top = json.loads(dashboard.data("top", "generation-side"))
    assert any("<img" in label for label, _ in top), top
    name, svg = dashboard.export("svg")
    assert name == f"attention-generation-{RUN}-{TAG}-step{STEP}-ex0-token1-all.svg", name
    assert b"&#60;img src=x" in svg and b"<img" not in svg
    name, png = dashboard.export("png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    dashboard.frame.click("[data-example='1']")
    dashboard.frame.wait_for_function("() => document.querySelector('[data-status]').textContent.includes('has no generation')")
    dashboard.frame.click("[data-view=head]")
    dashboard.wait("head")
    assert dashboard.frame.locator("[data-view=generation]").is_hidden()


def test_an_encoder_decoder_decoding_shows_the_decoder_rows_and_the_source_they_attended_to(dashboard, server):
    dashboard.open(wait_for="generation", run=SEQ2SEQ_RUN, tag=TAG, view="generation", gtoken=2)
    p = len(DECODER_PROMPT)
    row = p - 1 + 2

    def served(group):
        status, body = server.get("/attention", {"run": SEQ2SEQ_RUN, "tag": TAG, "step": 0, "example": 0, "group": group, "format": "json"})
        assert status == 200, body
        return np.asarray(body["attention"])  # [L, H, Nq, Nk]

    decoder, cross = served("decoder"), served("cross")
    assert close(strip(dashboard), decoder[:, :, row, : row + 1].reshape(-1, row + 1).mean(0))
    dashboard.frame.wait_for_selector("canvas[data-figure=generation-source][data-strip]")
    source = np.array(json.loads(dashboard.data("strip", "generation-source")))
    assert len(source) == len(SOURCE) and close(source, cross[:, :, row, :].reshape(-1, len(SOURCE)).mean(0))
    # One head of the source, as the heat of the text.
    dashboard.frame.click("[data-control=gen-heat] button[data-value=head]")
    dashboard.frame.select_option("[data-control=layer]", "2")
    wait_data(dashboard, "heat", "head:2.0")
    dashboard.frame.wait_for_function(
        "expected => JSON.parse(document.querySelector('canvas[data-figure=generation-source]').dataset.strip || '[]').length === expected",
        arg=len(SOURCE),
    )
    assert close(np.array(json.loads(dashboard.data("strip", "generation-source"))), cross[2, 0, row, :])
    dashboard.screenshot("generation_view_encoder_decoder")
    # The head view opens in the decoder group.
    dashboard.frame.click("button[data-open=head]")
    dashboard.wait("head")
    assert dashboard.url_state().get("group") == "decoder" and dashboard.url_state().get("tokens") == str(row)


def test_a_real_probes_generation_steps_through_as_the_model_wrote_it(dashboard, server):
    status, body = server.get("/examples", {"run": REAL_RUN, "tag": "answers", "step": 1})
    assert status == 200, body
    generation = body["examples"][0]["generation"]
    prompt = generation["prompt_length"]
    served = np.stack([attention(server, REAL_RUN, "answers", 1, 0, layer) for layer in range(2)])  # [L, H, N, N]
    dashboard.open(wait_for="generation", run=REAL_RUN, tag="answers", view="generation")
    assert dashboard.frame.text_content("[data-control=gen-position]") == f"1 / {len(generation['tokens'])}"
    for t in (0, 3, len(generation["tokens"]) - 1):
        dashboard.frame.fill("[data-control=gen-token]", str(t))
        wait_data(dashboard, "token", str(t))
        row = prompt - 1 + t
        assert close(strip(dashboard), served[:, :, row, : row + 1].reshape(-1, row + 1).mean(0)), t
        top = json.loads(dashboard.data("top", "generation-side"))
        assert len(top) == 5
    dashboard.screenshot("generation_view_real_gpt2")
    # The neuron view on the row that wrote the last token: q·k recomputed from the stored vectors = the rows.
    dashboard.frame.click("button[data-open=neuron]")
    dashboard.wait("neuron")
    assert dashboard.data("query", "neuron") == str(row)
    assert float(dashboard.data("difference", "neuron")) <= 0.02
