"""The dashboard in a real Chromium against a real `tensorboard --logdir` process."""

# Dashboard I: the head, model and neuron views, URL state, export. Fixtures and the page helper:
# dashboard_page.py (every test fails on a console error, an exception or a dialog).

import json
import re

import numpy as np

from tests.support.dashboard_logdir import PAIR_A, SENTENCE, XSS_TOKEN, structured_attention
from tests.support.dashboard_page import HEADS, LAYERS, VIEWPORT, Dashboard, attention, browser, dashboard, needs_chromium, server  # noqa: F401 (fixtures)

pytestmark = needs_chromium


# ---------------------------------------------------------------------------------------------


def test_tab_appears_with_runs_tags_steps_and_examples(dashboard):
    dashboard.page.goto(dashboard.server.url + "/")
    dashboard.page.get_by_text("Attention", exact=False).first.wait_for()
    dashboard.wait()
    frame = dashboard.frame
    runs = frame.eval_on_selector_all("[data-control=run] option", "os => os.map(o => o.value)")
    assert runs[:3] == ["checkpoint-100", "eval", "train"]  # sorted; a later test adds a run "live"
    frame.select_option("[data-control=run]", "train")
    frame.wait_for_function("document.querySelector('[data-control=tag]').options.length === 2")
    assert frame.eval_on_selector_all("[data-control=tag] option", "os => os.map(o => o.value)") == ["long", "probe"]
    frame.select_option("[data-control=tag]", "probe")
    frame.wait_for_selector("[data-example='2']")
    assert frame.locator("[data-control=examples] .example").count() == 3
    assert frame.text_content("[data-control=step-value]") == "100"
    dashboard.wait_url("run", "train")
    dashboard.screenshot("tab")


def test_head_view_draws_every_token_and_one_arc_per_head_query_key_weight(dashboard):
    dashboard.open(run="train", tag="probe", layer=1, min=0)
    weights = attention(dashboard.server, "train", "probe", 100, 0, 1)
    assert dashboard.data("tokens") == str(len(SENTENCE))
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights > 0))
    swatches = dashboard.frame.locator("[data-control=heads] .swatch")
    assert swatches.count() == HEADS
    colors = swatches.evaluate_all("bs => bs.map(b => getComputedStyle(b).getPropertyValue('--swatch'))")
    assert len(set(colors)) == HEADS
    dashboard.screenshot("head_view")


def test_pruning_drops_faint_arcs(dashboard):
    dashboard.open(run="train", tag="probe", min=0.2)
    weights = attention(dashboard.server, "train", "probe", 100, 0, 0)
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights >= 0.2))
    dashboard.open(run="train", tag="probe", min=0, topk=2)
    assert int(dashboard.data("arcs")) == int(sum(min(2, np.count_nonzero(row > 0)) for row in weights.reshape(-1, weights.shape[-1])))


def test_hover_isolates_one_tokens_arcs_and_click_locks_it(dashboard):
    dashboard.open(run="train", tag="probe", min=0)
    weights = attention(dashboard.server, "train", "probe", 100, 0, 0)
    dashboard.hover_token("from", 8)
    assert dashboard.data("focus") == "hover:from:8"
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights[:, 8] > 0))
    assert '#8 "Ġdog"' in dashboard.frame.text_content("[data-inspector=tokens]")
    dashboard.screenshot("head_view_hover")
    dashboard.hover_token("to", 3)  # a key: the queries that attend to it
    assert dashboard.data("focus") == "hover:to:3"
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights[:, :, 3] > 0))
    dashboard.click_token("from", 5)
    dashboard.page.mouse.move(5, 5)  # leaving the figure keeps the lock
    assert dashboard.data("focus") == "locked:from:5"
    dashboard.wait_url("tokens", "5")
    dashboard.click_token("from", 9, modifiers="Shift")  # a second token: their attention is summed
    assert dashboard.data("focus") == "locked:from:5,9"
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights[:, [5, 9]] > 0))
    dashboard.screenshot("head_view_multi_select")
    dashboard.page.mouse.move(5, 5)
    dashboard.page.keyboard.press("Escape")
    assert dashboard.data("focus") == ""
    assert "tokens" not in dashboard.url_state() or dashboard.wait_url("tokens", None) is None


def test_head_swatches_toggle_and_double_click_solo(dashboard):
    dashboard.open(run="train", tag="probe", min=0)
    weights = attention(dashboard.server, "train", "probe", 100, 0, 0)
    swatch = dashboard.frame.locator("[data-control=heads] .swatch")
    swatch.nth(2).click()
    dashboard.wait_url("heads", "0,1,3,4,5")
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights[[0, 1, 3, 4, 5]] > 0))
    swatch.nth(4).dblclick()
    dashboard.wait_url("heads", "4")
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights[4] > 0))
    assert swatch.evaluate_all("bs => bs.map(b => b.getAttribute('aria-pressed'))") == ["false"] * 4 + ["true", "false"]


def test_layer_picker_and_sentence_pair_filter(dashboard):
    dashboard.open(run="train", tag="probe", example=1, min=0)
    frame = dashboard.frame
    frame.select_option("[data-control=layer]", "2")
    dashboard.wait_url("layer", "2")
    weights = attention(dashboard.server, "train", "probe", 100, 1, 2)
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights > 0))
    a = len(PAIR_A)
    frame.click("[data-pair=AB]")
    dashboard.wait_url("pair", "AB")
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights[:, :a, a:] > 0))
    dashboard.screenshot("head_view_pair_AB")
    frame.click("[data-pair=BA]")
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(weights[:, a:, :a] > 0))


def test_hiding_first_and_special_tokens_with_renormalising(dashboard):
    dashboard.open(run="train", tag="probe", example=1, min=0.3)
    weights = attention(dashboard.server, "train", "probe", 100, 1, 0)
    special = [0, len(PAIR_A) - 1, len(weights[0]) - 1]  # [CLS] and the two [SEP]
    frame = dashboard.frame
    frame.check("[data-control=hide]")
    dashboard.wait_url("hide", "1")
    hidden = weights.copy()
    hidden[:, :, special] = 0
    assert int(dashboard.data("arcs")) == int(np.count_nonzero(hidden >= 0.3))
    frame.check("[data-control=renorm]")
    dashboard.wait_url("renorm", "1")
    renormalised = hidden / hidden.sum(-1, keepdims=True)
    expected = np.count_nonzero(renormalised >= 0.3)
    assert abs(int(dashboard.data("arcs")) - int(expected)) <= 2  # float32 vs float64 at the threshold
    dashboard.screenshot("head_view_hidden_renormalised")


def test_model_view_draws_every_head_and_a_click_opens_it_in_the_head_view(dashboard):
    dashboard.open("model", run="train", tag="probe", view="model")
    assert dashboard.data("thumbnails", "model") == str(LAYERS * HEADS)
    dashboard.screenshot("model_view")
    layout = dashboard.layout("model")
    box = dashboard.canvas("model").bounding_box()
    layer, head = 2, 3
    dashboard.page.mouse.click(
        box["x"] + layout["left"] + head * layout["step"] + layout["thumb"] / 2,
        box["y"] + layout["top"] + layer * layout["step"] + layout["thumb"] / 2,
    )
    dashboard.wait("head")
    dashboard.wait_url("view", None)  # the head view is the default: no key
    assert (dashboard.url_state()["layer"], dashboard.url_state()["heads"]) == ("2", "3")
    assert dashboard.frame.input_value("[data-control=layer]") == "2"


def test_model_view_keeps_the_locked_token(dashboard):
    dashboard.open("model", run="train", tag="probe", view="model", tokens=4)
    dashboard.screenshot("model_view_locked_token")
    dashboard.frame.click("button[data-view=head]")
    dashboard.wait("head")
    assert dashboard.data("focus") == "locked:from:4"


def test_neuron_view_shows_query_key_and_softmax_and_explains_missing_vectors(dashboard):
    dashboard.open("neuron", run="train", tag="probe", view="neuron", layer=1, heads=3, tokens=8)
    assert dashboard.data("query", "neuron") == "8"
    assert "key head 1 of 2" in dashboard.frame.text_content(".view-neuron .inspector")  # 6 query heads, 2 key heads
    dashboard.screenshot("neuron_view")
    layout = dashboard.layout("neuron")
    box = dashboard.canvas("neuron").bounding_box()
    dashboard.page.mouse.move(box["x"] + sum(layout["query"]) / 2, box["y"] + layout["top"] + 12 * layout["row"])
    assert dashboard.data("query", "neuron") == "12"  # hovering a query token shows its computation
    assert float(dashboard.data("difference", "neuron")) <= 0.004  # recomputed softmax = stored weights, within the storage bound
    dashboard.frame.click("[data-example='1']")  # the sentence pair was logged without q/k
    # The message says "Loading…" until the example's attention has arrived.
    dashboard.frame.wait_for_function("document.querySelector('[data-message=neuron]:not([hidden])')?.textContent.includes('No query/key vectors were logged')")
    dashboard.screenshot("neuron_view_without_qk")


def test_deep_link_restores_the_state_and_the_url_follows_changes(dashboard):
    state = {"run": "train", "tag": "probe", "step": 50, "example": 2, "view": "head", "layer": 3,
             "heads": "1,4", "tokens": "2", "min": 0.05}
    dashboard.open(**state)
    frame = dashboard.frame
    assert frame.input_value("[data-control=run]") == "train"
    assert frame.text_content("[data-control=step-value]") == "50"
    assert frame.get_attribute("[data-example='2']", "aria-selected") == "true"
    assert frame.input_value("[data-control=layer]") == "3"
    pressed = frame.locator("[data-control=heads] .swatch").evaluate_all("bs => bs.map(b => b.getAttribute('aria-pressed'))")
    assert pressed == ["false", "true", "false", "false", "true", "false"]
    assert dashboard.data("focus") == "locked:from:2"
    frame.click("button[data-view=model]")
    dashboard.wait_url("view", "model")
    frame.fill("[data-control=step]", "0")  # the slider: drag to the first step
    frame.dispatch_event("[data-control=step]", "change")
    dashboard.wait_url("step", "0")
    dashboard.page.reload()
    dashboard.wait("model")
    assert dashboard.frame.text_content("[data-control=step-value]") == "0"
    assert dashboard.url_state() == {**{k: str(v) for k, v in state.items()}, "view": "model", "step": "0"}


def test_tokens_are_text_and_nothing_in_them_runs(dashboard):
    dashboard.open(run="train", tag="probe", example=2, tokens=2)
    frame = dashboard.frame
    assert XSS_TOKEN in frame.text_content("[data-example='2'] .example-text")
    assert frame.locator("img").count() == 0 and frame.locator("script").count() == 1  # our module only
    assert json.dumps(XSS_TOKEN) in frame.text_content("[data-inspector=tokens]")
    _, svg = dashboard.export("svg")
    assert b"&#60;img src=x onerror=" in svg and b"<img" not in svg  # the label may be shortened
    dashboard.screenshot("head_view_untrusted_tokens")
    # (the fixture fails the test on any dialog, console error or exception)


def test_1024_token_example_stays_interactive(dashboard):
    dashboard.open(run="train", tag="long", min=0.05)
    assert dashboard.data("tokens") == "1024"
    assert dashboard.frame.text_content("[data-control=example-details]").count("sparse") == 1
    first, last = map(int, dashboard.data("rows").split("-"))
    assert first == 0 and 20 < last < 60  # only the visible rows are drawn
    dashboard.screenshot("head_view_1024_tokens")
    # Hovering redraws the focused token's arcs (how fast: bench/bench_frontend.py, hover at 1024 tokens).
    x, y = dashboard.token_point("from", 10)
    focused = dashboard.frame.evaluate(
        """([x, y]) => {
            const canvas = document.querySelector('canvas[data-figure=head]');
            const box = canvas.getBoundingClientRect();
            const focused = [];
            for (let i = 0; i < 20; i++) {
              canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: box.x + x, clientY: box.y + y + (i % 2) * 20, bubbles: true}));
              focused.push(canvas.dataset.focus);
            }
            return focused;
        }""",
        [x - dashboard.canvas().bounding_box()["x"], y - dashboard.canvas().bounding_box()["y"]],
    )
    # Each event redraws at once (synchronously), alternating between two tokens, and the rows drawn stay the visible ones.
    assert len(set(focused[0::2])) == len(set(focused[1::2])) == 1 and focused[0] != focused[1], focused
    assert all(f.startswith("hover:from:") for f in focused), focused
    assert dashboard.data("rows") == f"{first}-{last}"
    # Scrolling to the end shows the last tokens, and hovering there works.
    dashboard.frame.evaluate("document.querySelector('.view-head .scroller').scrollTop = 1e6")
    dashboard.frame.wait_for_function("document.querySelector('canvas[data-figure=head]').dataset.rows.endsWith('-1023')")
    dashboard.hover_token("from", 1023)
    assert dashboard.data("focus") == "hover:from:1023"
    dashboard.screenshot("head_view_1024_tokens_end")
    dashboard.frame.click("button[data-view=model]")
    dashboard.wait("model")
    dashboard.screenshot("model_view_1024_tokens")
    # A deep link to a locked token far down scrolls it into view.
    dashboard.open(run="train", tag="long", tokens=900)
    first, last = map(int, dashboard.data("rows").split("-"))
    assert first < 900 < last and dashboard.data("focus") == "locked:from:900"
    dashboard.screenshot("head_view_1024_tokens_locked")


def test_export_saves_the_view_with_its_locked_tokens_as_svg_and_png(dashboard):
    dashboard.open(run="train", tag="probe", tokens=6, min=0)
    weights = attention(dashboard.server, "train", "probe", 100, 0, 0)
    name, svg = dashboard.export("svg")
    assert re.fullmatch(r"attention-head-train-probe-step100-ex0-layer0\.svg", name)
    text = svg.decode()
    assert text.startswith("<svg") and text.count("<text") == 3 * len(SENTENCE) + 2  # index, query, key per token; 2 titles
    assert "font: 600 13px" in text  # the locked token is bold
    paths = re.findall(r'<path d="([^"]+)"', text)
    assert sum(p.count("M") for p in paths) == np.count_nonzero(weights[:, 6] > 0)
    dashboard.hover_token("from", 3)  # S saves what is shown now, the hover included...
    _, hovered = dashboard.export("svg", key="s")
    assert hovered.decode().count("font: 600 13px") == 1  # ...but the lock wins over the hover
    dashboard.page.keyboard.press("Escape")
    dashboard.hover_token("from", 3)
    _, hovered = dashboard.export("svg", key="s")
    paths = re.findall(r'<path d="([^"]+)"', hovered.decode())
    assert sum(p.count("M") for p in paths) == np.count_nonzero(weights[:, 3] > 0)
    name, png = dashboard.export("png")
    assert name.endswith(".png") and png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    box = dashboard.canvas().bounding_box()
    assert (width, height) == (round(box["width"]) * 2, round(box["height"]) * 2)


def test_layout_fills_the_frame_and_follows_its_size(dashboard):
    dashboard.open(run="train", tag="probe")
    before = dashboard.canvas().bounding_box()
    dashboard.page.set_viewport_size({"width": 1000, "height": 700})
    dashboard.frame.wait_for_function(
        f"""() => {{
            const box = document.querySelector('canvas[data-figure=head]').getBoundingClientRect();
            return box.width < {before['width'] - 100} && box.bottom <= window.innerHeight;
        }}"""
    )
    after = dashboard.canvas().bounding_box()
    frame_box = dashboard.page.locator("iframe").bounding_box()
    assert after["x"] + after["width"] <= frame_box["x"] + frame_box["width"] + 1
    assert after["y"] + after["height"] <= frame_box["y"] + frame_box["height"] + 1
    dashboard.screenshot("head_view_narrow")


def test_keyboard_moves_the_locked_token_and_the_layer(dashboard):
    dashboard.open(run="train", tag="probe", tokens=4)
    dashboard.click_token("from", 4)
    dashboard.click_token("from", 4)  # unlock, lock again: the frame has the keyboard focus
    dashboard.page.keyboard.press("ArrowDown")
    dashboard.page.keyboard.press("ArrowDown")
    dashboard.page.mouse.move(5, 5)
    assert dashboard.data("focus") == "locked:from:6"
    dashboard.page.keyboard.press("ArrowRight")
    dashboard.wait_url("layer", "1")
    assert dashboard.frame.input_value("[data-control=layer]") == "1"


def test_a_step_logged_while_the_page_is_open_shows_after_tensorboard_reloads(dashboard, server):
    from tb_attention.storage import summary

    rng = np.random.default_rng(5)
    live = server.logdir / "live"
    with summary.Writer(str(live)) as writer:
        summary.attention(writer, "probe", structured_attention(rng, 2, 2, 5, causal=True), list("abcde"), 0)
    server.wait_for(lambda tags: "live" in tags)
    dashboard.open(run="live", tag="probe")
    assert dashboard.frame.text_content("[data-control=step-value]") == "0"
    with summary.Writer(str(live)) as writer:  # training goes on: a later step, a longer input
        summary.attention(writer, "probe", structured_attention(rng, 2, 2, 7, causal=True), list("abcdefg"), 10)
    server.wait_for(lambda tags: tags.get("live", {}).get("probe", {}).get("steps") == [0, 10])
    dashboard.page.click("button.reload-button")  # TensorBoard's reload (its timer does the same)
    dashboard.frame.wait_for_function("document.querySelector('[data-control=step-value]').textContent === '10'")
    dashboard.frame.wait_for_selector("canvas[data-figure=head][data-tokens='7']")
    assert "step" not in dashboard.url_state()  # still following the newest step


def test_neuron_view_recomputes_a_softcapped_sliding_window_model_as_stored(dashboard, server, gpt2_tokenizer):
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from tb_attention import Probe, Writer

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(gpt2_tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4, attn_logit_softcapping=3.0,
        initializer_range=0.3,  # peaked rows, so that the cap and the window change the softmax
    )
    with Writer(server.logdir / "gemma2") as writer:
        Probe(gpt2_tokenizer, ["The old man, who lived alone by the river, wrote letters every day."], with_qk=True, metrics=False).log(writer, Gemma2ForCausalLM(config).eval(), 0)
    server.wait_for(lambda tags: "gemma2" in tags)
    dashboard.open("neuron", run="gemma2", tag="probe", view="neuron", layer=0, heads=1, tokens=7)
    frame = dashboard.frame
    assert float(dashboard.data("difference", "neuron")) <= 0.02
    hint = frame.text_content(".view-neuron .inspector")
    assert "logits soft-capped at ±3" in hint and "sliding window of 4 tokens" in hint
    assert "softmax = stored" in hint
    dashboard.screenshot("neuron_view_softcap_window")
    frame.select_option("[data-control=layer]", "1")  # the full-attention layer: no window
    dashboard.wait_url("layer", "1")
    frame.wait_for_function("!document.querySelector('.view-neuron .inspector').textContent.includes('sliding window')")
    assert float(dashboard.data("difference", "neuron")) <= 0.02


def test_neuron_view_recomputes_t5s_relative_bias_and_llama4s_chunks_as_stored(dashboard, server):
    from tb_attention import Probe, Writer
    from tests.support.models import chunked_llama4, hf_model

    ids, tokens = [5, 17, 42, 8, 99, 3, 61, 12, 13, 70], [f"t{i}" for i in (5, 17, 42, 8, 99, 3, 61, 12, 13, 70)]
    with Writer(server.logdir / "t5") as writer:
        Probe.from_tokens([ids], [tokens], target_ids=[[0, 40, 41, 42, 43, 44]], target_tokens=[list("abcdef")],
                          with_qk=True, metrics=False).log(writer, hf_model("t5"), 0)
    with Writer(server.logdir / "llama4") as writer:
        Probe.from_tokens([ids], [tokens], with_qk=True, metrics=False).log(writer, chunked_llama4(), 0)
    server.wait_for(lambda tags: "t5" in tags and "llama4" in tags)
    for group in ("encoder", "decoder"):
        dashboard.open("neuron", run="t5", tag="probe", view="neuron", group=group, layer=1, heads=2, tokens=4)
        frame = dashboard.frame
        frame.wait_for_function("document.querySelector('.view-neuron .inspector').textContent.includes('relative positions')")
        assert float(dashboard.data("difference", "neuron")) <= 0.02, group
        assert "softmax = stored" in frame.text_content(".view-neuron .inspector")
    dashboard.screenshot("neuron_view_relative_bias")
    dashboard.open("neuron", run="llama4", tag="probe", view="neuron", layer=0, heads=1, tokens=7)
    frame.wait_for_function("document.querySelector('.view-neuron .inspector').textContent.includes('chunks of 3 tokens')")
    assert float(dashboard.data("difference", "neuron")) <= 0.02
    assert "softmax = stored" in frame.text_content(".view-neuron .inspector")
