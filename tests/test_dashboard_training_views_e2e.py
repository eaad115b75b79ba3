"""Dashboard II in a real Chromium against a real `tensorboard --logdir`: metrics over steps, the
aggregate analysis, exemplars, comparison of steps and checkpoints, a run that is still writing."""

# The log directory (dashboard_logdir.py): run `train` logs a probe (examples, metrics, exemplars) at
# steps 0, 50 and 100; `checkpoint-100` is the same probe re-evaluated from the last checkpoint;
# `eval` is another model (2 layers x 3 heads, other tokens). Fixtures: dashboard_page.py.

import json
import re

import numpy as np
import pytest

from tests.support.dashboard_logdir import XSS_TOKEN, metric_values, probe_examples, write_probe_step
from tests.support.dashboard_page import (  # noqa: F401 (fixtures)
    HEADS,
    LAYERS,
    attention,
    browser,
    cell_center,
    close,
    dashboard,
    grid,
    metric,
    needs_chromium,
    pixel,
    playwright_api,
    probe_metrics,
    server,
    set_slider,
)

pytestmark = needs_chromium

LIVE_POLL_S = 10  # frontend/src/app.ts LIVE_POLL_MS
TB_PALETTE = ["#425066", "#12b5cb", "#e52592", "#f9ab00", "#9334e6", "#7cb342", "#e8710a"]  # TensorBoard 2.x


# ---------------------------------------------------------------------------------------------
# Metrics over training steps


def test_metric_heatmap_cells_equal_the_metric_values_at_the_chosen_step_and_follow_the_slider(dashboard):
    server = dashboard.server
    series = metric(server, "train", "probe/distance")
    assert series["steps"] == [0, 50, 100]
    dashboard.open("metric-heatmap", run="train", tag="probe", view="metrics", metric="distance", step=50)
    assert dashboard.data("step", "metric-heatmap") == "50"
    assert close(dashboard.json("values", "metric-heatmap"), grid(series["values"][1]))
    layout = dashboard.json("layout", "metric-heatmap")
    assert (layout["layers"], layout["heads"]) == (LAYERS, HEADS)
    dashboard.hover("metric-heatmap", *cell_center(layout, 2, 3))
    text = dashboard.tooltip("Layer 2 · head 3")
    assert f"{series['values'][1][2][3]:.3f}".rstrip("0") in text  # 3 decimals, as shown
    dashboard.screenshot("metrics_view")
    name, svg = dashboard.export("svg")
    assert name == "attention-metrics-train-probe-distance-step50.svg"
    assert svg.count(b"<rect") >= LAYERS * HEADS and b">Distance</text>" in svg
    set_slider(dashboard, 2)  # the next step
    dashboard.frame.wait_for_selector("canvas[data-figure=metric-heatmap][data-step='100']")
    assert close(dashboard.json("values", "metric-heatmap"), grid(series["values"][2]))
    assert "step" not in dashboard.url_state()  # the newest step: follow it
    # A part of speech no probe token has is NaN: drawn as "no value", not as a colour of the scale.
    dashboard.frame.select_option("[data-control=metric]", "pos/X")
    dashboard.wait_url("metric", "pos/X")
    dashboard.frame.wait_for_selector("canvas[data-figure=metric-heatmap][data-metric='pos/X']")
    assert np.isnan(grid(dashboard.json("values", "metric-heatmap"))).all()
    x, y = cell_center(dashboard.json("layout", "metric-heatmap"), 1, 1)
    assert pixel(dashboard, "metric-heatmap", x - 6, y - 4) == [0xF1, 0xF1, 0xF1]  # away from its slash
    dashboard.hover("metric-heatmap", x, y)
    assert "no value" in dashboard.tooltip("Layer 1 · head 1")


def test_play_steps_through_every_step_then_follows_the_newest(dashboard):
    dashboard.open("metric-heatmap", run="train", tag="probe", view="metrics")
    seen = dashboard.frame.evaluate(
        """async () => {
            const canvas = document.querySelector('canvas[data-figure=metric-heatmap]');
            const steps = [];
            const watch = new MutationObserver(() => { if (steps[steps.length - 1] !== canvas.dataset.step) steps.push(canvas.dataset.step); });
            watch.observe(canvas, {attributes: true, attributeFilter: ['data-step']});
            document.querySelector('[data-control=play]').click();
            await new Promise((resolve) => setTimeout(resolve, 3500));
            watch.disconnect();
            return steps;
        }"""
    )
    assert seen == ["0", "50", "100"]
    assert dashboard.frame.get_attribute("[data-control=play]", "aria-pressed") == "false"
    assert "step" not in dashboard.url_state()


def test_picked_heads_are_plotted_over_steps_with_runs_overlaid_in_tensorboards_colours(dashboard):
    server = dashboard.server
    dashboard.open("metric-heatmap", run="train", tag="probe", view="metrics", metric="entropy")
    layout = dashboard.json("layout", "metric-heatmap")
    dashboard.click("metric-heatmap", *cell_center(layout, 1, 2))
    dashboard.wait_url("heads", "2")
    assert dashboard.url_state()["layer"] == "1"  # the head is the selected head of the other views too
    dashboard.click("metric-heatmap", *cell_center(layout, 3, 0), modifiers="Shift")
    dashboard.wait_url("picks", "1.2,3.0")
    charts = dashboard.json("charts", "metric-curves")
    assert [(c["kind"], c["head"]) for c in charts] == [("all", None), ("layers", None), ("head", [1, 2]), ("head", [3, 0])]
    assert [c["lines"] for c in charts] == [1, LAYERS, 1, 1]
    # Overlay the checkpoint's run: its chip takes TensorBoard's colour for its place in TensorBoard's run list.
    dashboard.frame.click("[data-control=runs] [data-run='checkpoint-100']")
    dashboard.wait_url("runs", "checkpoint-100")
    dashboard.frame.wait_for_function("JSON.parse(document.querySelector('canvas[data-figure=metric-curves]').dataset.charts)[2].lines === 2")
    status, order = server.get("/data/runs")
    colors = dashboard.frame.eval_on_selector_all(
        "[data-control=runs] .chip", "cs => cs.map(c => [c.dataset.run, getComputedStyle(c).getPropertyValue('--chip').trim()])"
    )
    assert status == 200 and colors and all(color == TB_PALETTE[order.index(run) % 7] for run, color in colors)
    dashboard.screenshot("metrics_view_picked_heads_two_runs")
    # Smoothing and a log step axis, as in TensorBoard's scalars, live in the URL.
    dashboard.frame.fill("[data-control=smoothing]", "0.6")
    dashboard.frame.dispatch_event("[data-control=smoothing]", "input")
    dashboard.wait_url("smooth", "0.6")
    dashboard.frame.click("[data-control=xaxis] [data-value=log]")
    dashboard.wait_url("xaxis", "log")
    # Hovering a curve reads every run's value at the nearest step.
    chart = charts[2]["box"]
    dashboard.hover("metric-curves", chart["x"] + chart["w"] - 14, chart["y"] + chart["h"] / 2)
    text = dashboard.tooltip("step 100")
    expected = metric(server, "checkpoint-100", "probe/entropy")["values"][0][1][2]
    assert "checkpoint-100" in text and f"{expected:.3f}".rstrip("0") in text
    dashboard.screenshot("metrics_view_smoothed_log_axis")


def test_run_colours_are_the_ones_tensorboards_own_run_table_shows(dashboard):
    dashboard.open("metric-heatmap", run="train", tag="probe", view="metrics")
    ours = dict(dashboard.frame.eval_on_selector_all(
        "[data-control=runs] .chip", "cs => cs.map(c => [c.dataset.run, getComputedStyle(c.querySelector('.chip-key')).borderColor])"
    ))
    dashboard.page.goto(dashboard.server.url + "/#timeseries")
    try:
        dashboard.page.wait_for_selector("tb-data-table-content-row .run-color-swatch", timeout=20000)
    except playwright_api.Error:
        pytest.skip("this TensorBoard's time series page has no run table as 2.21 draws it")
    theirs = dict(dashboard.page.eval_on_selector_all(
        "tb-data-table-content-row",
        "rows => rows.filter(r => r.querySelector('.run-color-swatch')).map(r => [r.textContent.trim(), getComputedStyle(r.querySelector('.run-color-swatch')).backgroundColor])",
    ))
    assert set(ours) == {"train", "checkpoint-100"} and all(ours[run] == theirs[run] for run in ours), (ours, theirs)


def test_ranking_lists_heads_by_value_and_by_change_since_the_first_step(dashboard):
    values = grid(metric(dashboard.server, "train", "probe/distance")["values"][2])
    first = grid(metric(dashboard.server, "train", "probe/distance")["values"][0])
    dashboard.open("metric-heatmap", run="train", tag="probe", view="metrics", metric="distance")
    rows = dashboard.frame.eval_on_selector_all("[data-control=ranking] .rank-row[data-head]", "rs => rs.map(r => r.dataset.head)")
    order = sorted((values[l, h], l, h) for l in range(LAYERS) for h in range(HEADS))
    assert rows == [f"{l}.{h}" for _, l, h in order]
    dashboard.frame.click("[data-control=rank] [data-value=change]")
    dashboard.wait_url("rank", "change")
    rows = dashboard.frame.eval_on_selector_all("[data-control=ranking] .rank-row[data-head]", "rs => rs.map(r => r.dataset.head)")
    change = sorted((-abs(values[l, h] - first[l, h]), l, h) for l in range(LAYERS) for h in range(HEADS))
    assert rows[:5] == [f"{l}.{h}" for _, l, h in change[:5]]
    dashboard.frame.click("[data-control=ranking] .rank-row[data-head] >> nth=0")  # a row picks its head
    _, l, h = change[0]
    dashboard.wait_url("heads", str(h))
    assert dashboard.url_state().get("layer", "0") == str(l)  # (layer 0 is the default: not in the URL)


def test_previous_token_heads_are_ranked_by_the_stored_metric(dashboard):
    server = dashboard.server
    # The reference: the weight on the token just before, over queries i >= 2, pooled over the
    # probe's inputs (metrics.py), from the served weights (quantised: within 0.004).
    total, count = np.zeros((LAYERS, HEADS)), 0
    for example in range(3):
        weights = np.stack([attention(server, "train", "probe", 100, example, layer) for layer in range(LAYERS)])  # [L, H, N, N]
        i = np.arange(2, weights.shape[-1])
        total += weights[:, :, i, i - 1].sum(-1)
        count += len(i)
    stored = np.asarray(metric(server, "train", "probe/previous_token")["values"][-1], dtype=float)
    assert np.allclose(stored, total / count, atol=0.005)
    share = stored
    dashboard.open("metric-heatmap", run="train", tag="probe", view="metrics", rank="previous")
    dashboard.frame.wait_for_selector("[data-control=ranking] .rank-row[data-head]")
    rows = dashboard.frame.eval_on_selector_all("[data-control=ranking] .rank-row[data-head]", "rs => rs.map(r => r.dataset.head)")
    order = sorted((-share[l, h], l, h) for l in range(LAYERS) for h in range(HEADS))
    assert rows[:3] == [f"{l}.{h}" for _, l, h in order[:3]]
    top = dashboard.frame.text_content("[data-control=ranking] .rank-row[data-head] >> nth=0")
    assert f"{-order[0][0] * 100:.1f}%" in top
    dashboard.screenshot("metrics_view_previous_token_heads")


# ---------------------------------------------------------------------------------------------
# The aggregate analysis


def test_analysis_heatmaps_show_the_step_values_and_the_scatter_states_the_correlation(dashboard):
    server = dashboard.server
    served = probe_metrics(server, "train", 50)
    dashboard.open("analysis", run="train", tag="probe", view="analysis", step=50)
    assert dashboard.data("step", "analysis") == "50"
    cards = dashboard.json("cards", "analysis")
    kinds = [(c["kind"], c["metric"]) for c in cards]
    assert kinds[:7] == [("metric", m) for m in ["distance", "entropy", "dependency_alignment", "variability", "null_attention", "pos/NOUN", "pos_from/NOUN"]]
    assert kinds[7:] == [("scatter", "distance vs entropy"), ("scatter", "distance vs dependency_alignment")]
    distance, entropy = grid(served["distance"]).ravel(), grid(served["entropy"]).ravel()
    assert cards[7]["subtitle"] == f"r = {np.corrcoef(distance, entropy)[0, 1]:.2f} over {LAYERS * HEADS} heads"
    heatmap = cards[1]["heatmap"]  # entropy
    dashboard.hover("analysis", *cell_center(heatmap, 3, 4))
    text = dashboard.tooltip("Layer 3 · head 4")
    assert f"{served['entropy'][3][4]:.3f}".rstrip("0") in text
    dashboard.screenshot("analysis_view")
    dashboard.click("analysis", *cell_center(heatmap, 3, 4))  # a head opens its arcs
    dashboard.wait("head")
    assert (dashboard.url_state()["layer"], dashboard.url_state()["heads"]) == ("3", "4")
    assert dashboard.url_state()["step"] == "50"


def test_analysis_shows_every_part_of_speech_received_and_paid(dashboard):
    dashboard.open("analysis", run="train", tag="probe", view="analysis", section="pos")
    cards = dashboard.json("cards", "analysis")
    assert cards[0]["kind"] == "tags"
    assert [c["metric"] for c in cards[1:]] == [f"pos/{t}" for t in ["ADJ", "DET", "NOUN", "PUNCT", "VERB", "X"]]
    dashboard.screenshot("analysis_view_pos_received")
    dashboard.frame.click("[data-control=section] [data-value=pos_from]")
    dashboard.wait_url("section", "pos_from")
    dashboard.frame.wait_for_function("JSON.parse(document.querySelector('canvas[data-figure=analysis]').dataset.cards)[1].metric === 'pos_from/ADJ'")


# ---------------------------------------------------------------------------------------------
# Exemplars


def test_exemplars_show_a_heads_known_top_input_with_its_arc_and_open_it_in_the_head_view(dashboard):
    server = dashboard.server
    status, table = server.get("/exemplars", {"run": "train", "tag": "probe/exemplars", "step": 100})
    assert status == 200
    layer, head = 2, 3
    dashboard.open("exemplars", run="train", tag="probe", view="exemplars", layer=layer, heads=head)
    rows = dashboard.json("rows", "exemplars")
    expected = table["heads"][layer][head]
    assert [(r["input"], r["from"], r["to"]) for r in rows] == [(e["input"], e["from"], e["to"]) for e in expected]
    # The known top input: the one whose largest weight between tokens after the first is largest.
    best = []
    for example in range(3):
        weights = attention(server, "train", "probe", 100, example, layer)[head][1:, 1:]
        best.append(weights.max())
    assert rows[0]["input"] == int(np.argmax(best))
    top = rows[0]
    weights = attention(server, "train", "probe", 100, top["example"], layer)[head]
    assert abs(weights[top["from"], top["to"]] - top["score"]) < 0.004  # stored weights are quantised
    dashboard.screenshot("exemplars_view")
    dashboard.click("exemplars", 200, top["top"] + 20)
    dashboard.wait("head")
    state = dashboard.url_state()
    assert (state["layer"], state["heads"], state.get("example", "0"), state["tokens"]) == (str(layer), str(head), str(top["example"]), str(top["from"]))
    assert dashboard.data("focus") == f"locked:from:{top['from']}"


# ---------------------------------------------------------------------------------------------
# Compare


def test_difference_view_equals_b_minus_a(dashboard):
    server = dashboard.server
    layer, head = 1, 2
    dashboard.open("compare-diff", run="train", tag="probe", view="compare", a_run="train", a_step=0, b_step=100, layer=layer, heads=head)
    assert dashboard.data("head", "compare-diff") == f"{layer}.{head}"
    a = attention(server, "train", "probe", 0, 0, layer)[head]
    b = attention(server, "train", "probe", 100, 0, layer)[head]
    matrix = dashboard.json("layout", "compare-diff")["matrix"]
    assert matrix["n"] == len(a)
    diff = b - a
    cells = [np.unravel_index(np.argmax(diff), diff.shape), np.unravel_index(np.argmin(diff), diff.shape), (5, 3)]
    for i, j in cells:
        dashboard.hover("compare-diff", matrix["x"] + (j + 0.5) * matrix["cell"], matrix["y"] + (i + 0.5) * matrix["cell"])
        text = dashboard.tooltip(f"query #{i} ")
        shown = {k: float(v.replace("−", "-")) for k, v in re.findall(r"(B − A|A|B)([-+−]?\d(?:\.\d+)?)", text)}
        assert abs(shown["A"] - a[i, j]) < 6e-4 and abs(shown["B"] - b[i, j]) < 6e-4
        assert abs(shown["B − A"] - (b[i, j] - a[i, j])) < 6e-4
    assert abs(float(dashboard.data("max-abs", "compare-diff")) - np.abs(
        np.stack([attention(server, "train", "probe", 100, 0, l) - attention(server, "train", "probe", 0, 0, l) for l in range(LAYERS)])
    ).max()) < 1e-5
    dashboard.screenshot("compare_difference")
    assert dashboard.frame.locator("[data-banner]").is_hidden()  # same tokens: nothing to warn about
    # Another B: the difference is taken again, never from the weights of the B before.
    drawn_for_100 = dashboard.data("max-abs", "compare-diff")
    dashboard.frame.select_option("[data-control=b-step]", "50")
    dashboard.wait_url("b_step", "50")
    # The URL changes at once; the figure once step 50's weights are fetched and drawn (its scale changes).
    dashboard.frame.wait_for_function(
        "old => document.querySelector('canvas[data-figure=compare-diff]').dataset.maxAbs !== old", arg=drawn_for_100)
    b50 = attention(server, "train", "probe", 50, 0, layer)[head]
    i, j = 7, 2
    dashboard.page.mouse.move(0, 0)
    dashboard.hover("compare-diff", matrix["x"] + (j + 0.5) * matrix["cell"], matrix["y"] + (i + 0.5) * matrix["cell"])
    text = dashboard.tooltip(f"query #{i} ")
    shown = {k: float(v.replace("−", "-")) for k, v in re.findall(r"(B − A|A|B)([-+−]?\d(?:\.\d+)?)", text)}
    assert abs(shown["B"] - b50[i, j]) < 6e-4 and abs(shown["B − A"] - (b50[i, j] - a[i, j])) < 6e-4


def test_compare_ranks_heads_by_metric_change_between_two_checkpoints(dashboard):
    server = dashboard.server
    a = grid(probe_metrics(server, "checkpoint-100", 100)["distance"])
    b = grid(probe_metrics(server, "train", 100)["distance"])
    dashboard.open("compare-changes", run="train", tag="probe", view="compare", compare="changes", delta="distance", a_run="checkpoint-100")
    assert close(dashboard.json("values", "compare-changes"), b - a)
    ranked = dashboard.frame.eval_on_selector_all("[data-control=changes] .change-row[data-head]", "rs => rs.map(r => r.dataset.head)")
    l, h = np.unravel_index(np.argmax(np.abs(b - a)), a.shape)
    assert ranked[0] == f"{l}.{h}"
    dashboard.screenshot("compare_changes_distance")
    dashboard.frame.click("[data-control=changes] .change-row[data-head] >> nth=0")  # the head's difference
    dashboard.wait("compare-diff")
    assert dashboard.data("head", "compare-diff") == f"{l}.{h}"


def test_compare_ranks_heads_by_how_far_their_attention_moved_over_the_probe_inputs(dashboard):
    server = dashboard.server
    moved = np.zeros((LAYERS, HEADS))
    for example in range(3):
        for layer in range(LAYERS):
            a = attention(server, "train", "probe", 0, example, layer)
            b = attention(server, "train", "probe", 100, example, layer)
            moved[layer] += 0.5 * np.abs(b - a).sum(-1).mean(-1) / 3  # per query row, then over rows and inputs
    dashboard.open("compare-changes", run="train", tag="probe", view="compare", compare="changes", a_step=0)
    assert close(dashboard.json("values", "compare-changes"), moved, tol=1e-4)
    ranked = dashboard.frame.eval_on_selector_all("[data-control=changes] .change-row[data-head]", "rs => rs.map(r => r.dataset.head)")
    l, h = np.unravel_index(np.argmax(moved), moved.shape)
    assert ranked[0] == f"{l}.{h}"
    assert "mean of 3 probe inputs" in dashboard.frame.text_content(".view-compare .inspector")
    dashboard.screenshot("compare_changes_attention_moved")


def test_compare_side_by_side_shares_the_selection(dashboard):
    dashboard.open("head", run="train", tag="probe", view="compare", compare="head", a_step=0, tokens=5, layer=2)
    frame = dashboard.frame
    frame.wait_for_function("document.querySelectorAll('canvas[data-figure=head][data-tokens]').length === 2")
    focus = lambda: frame.eval_on_selector_all("canvas[data-figure=head]", "cs => cs.map(c => c.dataset.focus)")  # noqa: E731
    assert focus() == ["locked:from:5", "locked:from:5"]
    labels = frame.eval_on_selector_all(".compare-label", "ls => ls.map(l => l.textContent)")
    assert labels == ["Atrain · step 0", "Btrain · step 100"]
    canvas_b = frame.locator("canvas[data-figure=head]").nth(1)
    layout = json.loads(canvas_b.get_attribute("data-layout"))
    box = canvas_b.bounding_box()
    dashboard.page.mouse.click(box["x"] + sum(layout["query"]) / 2, box["y"] + layout["top"] + 8 * layout["row"])
    dashboard.wait_url("tokens", "8")
    frame.wait_for_function("[...document.querySelectorAll('canvas[data-figure=head]')].every(c => c.dataset.focus === 'locked:from:8')")
    dashboard.screenshot("compare_heads_side_by_side")
    frame.click("[data-control=compare] [data-value=model]")
    frame.wait_for_function("document.querySelectorAll('canvas[data-figure=model][data-thumbnails]').length === 2")
    dashboard.screenshot("compare_models_side_by_side")


def test_tokens_that_differ_between_a_and_b_are_named_not_silently_aligned(dashboard):
    dashboard.open(None, run="train", tag="probe", view="compare", b_run="eval")
    frame = dashboard.frame
    frame.wait_for_selector("[data-banner]:not([hidden])")
    banner = frame.text_content("[data-banner]")
    assert "A has 4 layers × 6 heads and B 2 × 3" in banner
    assert "A has 18 tokens, B has 6" in banner
    assert '#6: A "Ġthe" · B (none)' in banner
    # The banner shows once both examples are known; the message once both attentions have loaded.
    frame.wait_for_function("document.querySelector('[data-message=compare]').textContent.includes('different models')")
    dashboard.screenshot("compare_different_tokens")


# ---------------------------------------------------------------------------------------------
# Live: a run still writing


def test_a_step_written_after_the_page_opened_appears_within_the_poll_period(dashboard, server):
    from tb_attention.storage import summary

    rng = np.random.default_rng(7)
    live = server.logdir / "growing"
    with summary.Writer(str(live)) as writer:
        write_probe_step(writer, rng, 2, 3, 0, 0.0)
    server.wait_for(lambda tags: "probe/distance" in tags.get("growing", {}))
    dashboard.open("metric-heatmap", run="growing", tag="probe", view="metrics")
    assert dashboard.data("step", "metric-heatmap") == "0"
    with summary.Writer(str(live)) as writer:  # training goes on
        write_probe_step(writer, rng, 2, 3, 10, 0.5)
    server.wait_for(lambda tags: tags.get("growing", {}).get("probe/distance", {}).get("steps") == [0, 10])
    # No reload button: the dashboard's own poll of /tags brings the step.
    dashboard.frame.wait_for_selector("canvas[data-figure=metric-heatmap][data-step='10']", timeout=(LIVE_POLL_S + 5) * 1000)
    assert dashboard.frame.text_content("[data-control=step-value]") == "10"
    served = metric(server, "growing", "probe/distance")
    assert close(dashboard.json("values", "metric-heatmap"), grid(served["values"][1]))
    # A pinned step stays pinned while new steps arrive.
    set_slider(dashboard, 0)
    dashboard.wait_url("step", "0")
    with summary.Writer(str(live)) as writer:
        write_probe_step(writer, rng, 2, 3, 20, 1.0)
    server.wait_for(lambda tags: tags.get("growing", {}).get("probe", {}).get("steps") == [0, 10, 20])
    dashboard.frame.wait_for_function(
        "document.querySelector('[data-control=step]').max === '2'", timeout=(LIVE_POLL_S + 5) * 1000
    )
    assert dashboard.data("step", "metric-heatmap") == "0" and dashboard.url_state()["step"] == "0"


# ---------------------------------------------------------------------------------------------
# Untrusted tokens and URL state


def test_untrusted_tokens_stay_text_in_exemplars_compare_tooltips_and_exports(dashboard, server):
    from tb_attention.storage import summary

    # A run whose probe input #2 has other untrusted tokens than train's: the banner lists them.
    rng = np.random.default_rng(9)
    examples = probe_examples(rng, LAYERS, HEADS)
    other = dict(examples[2], tokens=[t.replace("alert(2)", "alert(3)").replace("world", "<svg/onload=alert(4)>") for t in examples[2]["tokens"]])
    with summary.Writer(str(server.logdir / "untrusted")) as writer:
        summary.write_examples(writer, "probe", [examples[0], examples[1], other], 100)
        summary.metrics(writer, "probe", metric_values(LAYERS, HEADS, 1.0, rng), 100)
    server.wait_for(lambda tags: "untrusted" in tags)
    dashboard.open("exemplars", run="train", tag="probe", view="exemplars", layer=0, heads=0)
    frame = dashboard.frame
    rows = dashboard.json("rows", "exemplars")
    xss = next(r for r in rows if r["input"] == 2)
    dashboard.hover("exemplars", 200, xss["top"] + 20)
    assert XSS_TOKEN in dashboard.tooltip("Hello")
    _, svg = dashboard.export("svg")
    assert b"&#60;img src=x onerror=" in svg and b"<img" not in svg and b"<script" not in svg
    dashboard.open("compare-diff", run="train", tag="probe", view="compare", example=2, b_run="untrusted")
    banner = frame.text_content("[data-banner]")
    assert "differ at 2 of 7 positions" in banner and "<svg/onload=alert(4)>" in banner and "alert(3)" in banner
    matrix = dashboard.json("layout", "compare-diff")["matrix"]
    dashboard.hover("compare-diff", matrix["x"] + 2.5 * matrix["cell"], matrix["y"] + 4.5 * matrix["cell"])
    text = dashboard.tooltip("query #4")
    assert '"Ġ<svg/onload=alert(4)>"' in text and XSS_TOKEN in text
    dashboard.screenshot("compare_untrusted_tokens")
    _, svg = dashboard.export("svg")  # the matrix's token labels
    assert b"&#60;svg/onload" in svg and b"<svg/onload" not in svg and b"<img" not in svg  # (labels are shortened)
    for view, figure in (("metrics", "metric-heatmap"), ("analysis", "analysis")):
        frame.click(f"button[data-view={view}]")
        dashboard.wait(figure)
    assert frame.locator("img, svg").count() == 0 and frame.locator("script").count() == 1
    # (the fixture fails the test on any dialog, console error or exception)


def test_a_deep_link_restores_the_new_views_state(dashboard):
    state = {"run": "train", "tag": "probe", "view": "compare", "metric": "entropy", "runs": "checkpoint-100", "smooth": "0.5",
             "xaxis": "log", "picks": "1.2,3.0", "rank": "high", "section": "pos", "pos": "VERB", "a_run": "checkpoint-100",
             "a_step": "100", "b_run": "train", "b_step": "50", "compare": "changes", "delta": "entropy"}
    dashboard.open("compare-changes", **state)
    frame = dashboard.frame
    assert frame.input_value("[data-control=a-run]") == "checkpoint-100" and frame.input_value("[data-control=b-step]") == "50"
    assert frame.input_value("[data-control=delta]") == "entropy"
    frame.click("button[data-view=metrics]")
    dashboard.wait("metric-curves")
    assert frame.input_value("[data-control=metric]") == "entropy"
    assert frame.input_value("[data-control=smoothing]") == "0.5"
    assert [c["head"] for c in dashboard.json("charts", "metric-curves")][2:] == [[1, 2], [3, 0]]
    dashboard.page.reload()
    dashboard.wait("metric-curves")
    assert dashboard.url_state() == {**state, "view": "metrics"}
