"""The dashboard at scale and with attention groups, in a real Chromium against a real `tensorboard --logdir`:
metric views fluid at SmolLM2's size; encoder, decoder and cross attention of one example."""

import json

import numpy as np
import pytest

from tests.support.dashboard_page import (  # noqa: F401 (fixtures)
    HEADS,
    LAYERS,
    attention,
    browser,
    close,
    dashboard,
    grid,
    metric,
    needs_chromium,
    playwright_api,
    server,
)

pytestmark = needs_chromium


# ---------------------------------------------------------------------------------------------
# Fluid at SmolLM2's size: 30 layers x 9 heads, 39 metric tags, 100 steps


@pytest.fixture(scope="module")
def smollm_size_server(tmp_path_factory):
    from tests.support.dashboard_logdir import write_training_logdir
    from tests.support.tensorboard import serving

    logdir = tmp_path_factory.mktemp("smollm-size") / "logs"
    steps = range(0, 10000, 100)
    write_training_logdir(logdir, layers=30, heads=9, steps=steps, runs=("smollm-size",), attention_steps={0, 9900})

    def ready(tags):
        return len(tags.get("smollm-size", {}).get("probe/distance", {}).get("steps", [])) == 100

    with serving(logdir, ready) as tb:
        yield tb


HOVER_TIMES = """async ([figure, points]) => {
    const canvas = document.querySelector(`canvas[data-figure=${figure}]`);
    const box = canvas.getBoundingClientRect();
    const times = [];
    for (const [x, y] of points) {
        const t0 = performance.now();
        canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: box.x + x, clientY: box.y + y, bubbles: true}));
        await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
        times.push(performance.now() - t0);
    }
    return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}"""

STEP_TIMES = """async ([figure, steps]) => {
    const canvas = document.querySelector(`canvas[data-figure=${figure}]`);
    const times = [];
    for (const step of steps) {
        const t0 = performance.now();
        const hash = window.parent.location.hash.replace(/&p\\.attention\\.step=\\d+/, '') + `&p.attention.step=${step}`;
        window.parent.location.hash = hash;  // as a user editing the URL: hashchange
        // Drawn, and written back to the URL (the dashboard rewrites the hash a frame after a change).
        while (canvas.dataset.step !== String(step) || !window.parent.location.hash.includes(`step=${step}`)) {
            if (performance.now() - t0 > 5000) throw new Error(`step ${step} was not drawn: the figure shows ${canvas.dataset.step}`);
            await new Promise((resolve) => setTimeout(resolve, 1));
        }
        times.push(performance.now() - t0);
    }
    return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}"""


def test_metric_views_stay_fluid_at_smollm2_size(browser, smollm_size_server):
    from tests.support.dashboard_page import VIEWPORT, Dashboard

    context = browser.new_context(viewport=VIEWPORT)
    board = Dashboard(context.new_page(), smollm_size_server)
    try:
        board.open("metric-curves", view="metrics", picks="3.2,10.4,20.1,29.8", step=5000)
        points = [[40 + (i * 37) % 300, 60 + (i * 23) % 400] for i in range(40)]
        # The best of two rounds: other processes share the machine's cores.
        best = lambda script, figure, values: min(board.frame.evaluate(script, [figure, values]) for _ in range(2))  # noqa: E731
        heatmap_hover = best(HOVER_TIMES, "metric-heatmap", points)
        curves_hover = best(HOVER_TIMES, "metric-curves", [[x + 300, y + 200] for x, y in points])
        metric_step = min(board.frame.evaluate(STEP_TIMES, ["metric-heatmap", list(range(start, start + 1500, 100))]) for start in (100, 1600))
        board.screenshot("metrics_view_smollm2_size")
        board.frame.click("button[data-view=analysis]")
        board.wait("analysis")
        analysis_hover = best(HOVER_TIMES, "analysis", points)
        analysis_step = min(board.frame.evaluate(STEP_TIMES, ["analysis", list(range(start, start + 1000, 100))]) for start in (3200, 4200))
        board.screenshot("analysis_view_smollm2_size")
        timings = {"heatmap hover": heatmap_hover, "curves hover": curves_hover, "metrics step": metric_step,
                   "analysis hover": analysis_hover, "analysis step (fetches /metrics)": analysis_step}
        print("median ms, a frame included:", {k: round(v, 1) for k, v in timings.items()})
        # Every step was drawn (STEP_TIMES throws otherwise). Times only as ratios within this page (load
        # slows both alike): a hover redraws no more than a step does (a step redraws the whole
        # heatmap; the Analysis view's also fetches the step's 39 metrics). Measured on 2 shared
        # cores: hovers ~25 ms, a metrics step ~60 ms, an analysis step ~150 ms.
        assert max(heatmap_hover, curves_hover) < 2 * metric_step, timings
        assert analysis_hover < 2 * analysis_step, timings
        assert not board.problems, board.problems
    finally:
        context.close()


# ---------------------------------------------------------------------------------------------
# Attention groups (storage format v2): encoder, decoder and cross attention of one example

@pytest.fixture(scope="module")
def groups_server(tmp_path_factory):
    from tests.support.dashboard_logdir import write_groups_logdir
    from tests.support.tensorboard import serving

    logdir = tmp_path_factory.mktemp("groups") / "logs"
    written = write_groups_logdir(logdir)
    with serving(logdir, lambda tags: "probe" in tags.get("translate", {})) as tb:
        tb.written = written
        yield tb


def test_cross_attention_draws_decoder_queries_left_and_encoder_keys_right(browser, groups_server):
    from tests.support.dashboard_page import VIEWPORT, Dashboard

    context = browser.new_context(viewport=VIEWPORT)
    board = Dashboard(context.new_page(), groups_server)
    try:
        source, target = groups_server.written["source"], groups_server.written["target"]
        layers, heads = groups_server.written["layers"], groups_server.written["heads"]
        assert len(source) > len(target)  # the encoder's tokens outnumber the decoder's
        board.open(run="translate", tag="probe", group="cross", layer=1, heads=2)
        frame = board.frame
        assert frame.eval_on_selector_all("[data-control=group] option", "os => os.map(o => o.value)") == ["encoder", "decoder", "cross"]
        assert frame.input_value("[data-control=group]") == "cross"
        step = groups_server.written["steps"][-1]
        status, body = groups_server.get("/attention", {"run": "translate", "tag": "probe", "step": step, "example": 0, "group": "cross",
                                                       "layer": 1, "head": 2, "format": "json"})
        assert status == 200 and body["shape"] == [len(target), len(source)] and body["key_tokens"] == source
        weights = np.asarray(body["attention"])  # [queries, keys]
        key = len(target)  # a key past the last query
        board.click_token("to", key)
        board.page.mouse.move(5, 5)
        assert board.data("focus") == f"locked:to:{key}"
        assert f"#{key} {json.dumps(source[key], ensure_ascii=False)}" in frame.text_content("[data-inspector=tokens]")
        # The inspector lists the queries that attend to it most: first the largest weight of its column.
        first = frame.text_content(".inspector-entry >> nth=0")
        assert first.endswith(f"{weights[:, key].max() * 100:.1f}%"), first
        board.screenshot("head_view_cross_attention")
        frame.select_option("[data-control=group]", "decoder")
        board.wait_url("group", "decoder")
        board.wait("head")
        assert board.data("tokens") == str(len(target))
        frame.click("button[data-view=model]")
        board.wait("model")
        assert board.data("thumbnails", "model") == str(layers * heads)
        frame.click("button[data-view=neuron]")
        frame.wait_for_selector("[data-message=neuron]:not([hidden])")
        # The cross group has q/k: the neuron view recomputes its decoder queries over encoder keys.
        frame.select_option("[data-control=group]", "cross")
        board.wait("neuron")
        first, last = map(int, board.data("rows", "neuron").split("-"))
        assert first == 0 and last >= len(source) - 1  # one row per source key (more than the queries)
        fetched = frame.evaluate("performance.getEntriesByType('resource').map((e) => e.name)"
                                 ".filter((u) => /[/](attention|qk)[?]/.test(u))")
        assert fetched and all("layer=" in url for url in fetched), fetched  # every view fetches its layers only
        board.screenshot("neuron_view_cross_attention")
        assert not board.problems, board.problems
    finally:
        context.close()


def test_metrics_and_compare_follow_the_attention_group(browser, groups_server):
    from tests.support.dashboard_page import VIEWPORT, Dashboard

    context = browser.new_context(viewport=VIEWPORT)
    board = Dashboard(context.new_page(), groups_server)
    picker = "[data-control=group]:visible"
    try:
        first, last = groups_server.written["steps"][0], groups_server.written["steps"][-1]
        board.open("metric-heatmap", run="translate", tag="probe", view="metrics", metric="entropy")
        frame = board.frame
        assert frame.eval_on_selector_all(picker + " option", "os => os.map(o => o.value)") == ["encoder", "decoder", "cross"]
        assert frame.input_value(picker) == "encoder"
        encoder = metric(groups_server, "translate", "probe/entropy")  # the first group's tag
        assert close(board.json("values", "metric-heatmap"), grid(encoder["values"][-1]))
        frame.select_option(picker, "cross")
        board.wait_url("group", "cross")
        # The metric menu lists the cross group's metrics only.
        options = frame.eval_on_selector_all("[data-control=metric] option", "os => os.map(o => o.value)")
        assert sorted(options) == ["diagonal_alignment", "entropy"], options
        frame.wait_for_selector("canvas[data-figure=metric-heatmap][data-group=cross][data-metric=entropy]")
        cross_entropy = metric(groups_server, "translate", "probe/cross/entropy")
        assert close(board.json("values", "metric-heatmap"), grid(cross_entropy["values"][-1]))
        frame.select_option("[data-control=metric]", "diagonal_alignment")
        board.wait_url("metric", "diagonal_alignment")
        frame.wait_for_selector("canvas[data-figure=metric-heatmap][data-group=cross][data-metric=diagonal_alignment]")
        served = metric(groups_server, "translate", "probe/cross/diagonal_alignment")
        assert close(board.json("values", "metric-heatmap"), grid(served["values"][-1]))
        board.screenshot("metrics_view_cross_attention")

        # Compare ranks the cross attention's heads by /compare?group=cross.
        board.open("compare-changes", run="translate", tag="probe", view="compare", compare="changes", group="cross", a_step=first)
        query = {"tag": "probe", "run_a": "translate", "step_a": first, "run_b": "translate", "step_b": last}
        status, moved = groups_server.get("/compare", {**query, "group": "cross"})
        assert status == 200 and moved["group"] == "cross" and moved["used"] == 1, moved
        status, default = groups_server.get("/compare", query)
        assert status == 200 and not close(default["moved"], moved["moved"])  # the encoder's moved otherwise
        assert close(board.json("values", "compare-changes"), grid(moved["moved"]), tol=1e-6)
        assert frame.input_value(picker) == "cross"
        ranked = frame.eval_on_selector_all("[data-control=changes] .change-row[data-head]", "rs => rs.map(r => r.dataset.head)")
        l, h = np.unravel_index(np.nanargmax(grid(moved["moved"])), grid(moved["moved"]).shape)
        assert ranked[0] == f"{l}.{h}"
        fetched = frame.evaluate("performance.getEntriesByType('resource').map((e) => e.name).filter((u) => /[/]compare[?]/.test(u))")
        assert fetched and all("group=cross" in url for url in fetched), fetched
        # Cross attention is not square: the difference mode says so instead of pairing query i with key i.
        frame.click("[data-control=compare] [data-value=diff]")
        frame.wait_for_selector("[data-message=compare]:has-text('square self-attention')")
        assert not board.problems, board.problems
    finally:
        context.close()
