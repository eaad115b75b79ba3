"""The image view and the Health panel in a real Chromium against a real `tensorboard --logdir`."""

# One log directory holds a vision probe (two steps of a 2-prefix-token ViT over a real photo, with
# its pixel_distance metric), a text probe (no image: the Image tab stays out of the way) and two
# training runs that log the attention-health monitor's metrics, one of them diverging.

import io

import numpy as np
import pytest

from tb_attention.storage import summary
from tests.support.dashboard_page import FIGURE_READY, Dashboard, browser, needs_chromium  # noqa: F401 (fixtures)
from tests.support.tensorboard import serving

pytestmark = needs_chromium

ROWS, COLS, PATCH = 6, 8, 16  # a 96 × 128 px image: rows ≠ cols, so a transposed grid shows
PREFIX = ["CLS", "reg0"]
LAYERS, HEADS = 4, 4
N = len(PREFIX) + ROWS * COLS
RIGHT_HEAD = 1  # in layer 0, each patch attends to the patch on its right (the last column to itself)
HEALTH_STEPS = list(range(0, 201, 10))
GROWING = (2, 1)  # the diverging run's head whose max logit grows fiftyfold (4 → 200)
COLLAPSING = (1, 3)  # the diverging run's head whose attention entropy falls to 7 % (3 → 0.21)

FIGURE_READY.update({"image": "data-query", "health": "data-rows"})


def patch_token(row, col):
    return len(PREFIX) + row * COLS + col


def photo_png():
    """A real photograph (scikit-image's astronaut, public domain) at 128 × 96 px."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((COLS * PATCH, ROWS * PATCH))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def vit_attention(rng, progress):
    """float32 [L, H, N, N]: local heads widening with depth, a right-neighbour head, a CLS sink."""
    centres = np.array([(r, c) for r in range(ROWS) for c in range(COLS)], dtype=np.float64)
    distance = np.linalg.norm(centres[:, None] - centres[None, :], axis=-1)
    out = np.empty((LAYERS, HEADS, N, N), dtype=np.float32)
    for layer in range(LAYERS):
        for head in range(HEADS):
            scores = rng.normal(scale=0.3, size=(N, N))
            patches = scores[len(PREFIX):, len(PREFIX):]
            if layer == 0 and head == RIGHT_HEAD:
                right = np.array([patch_token(r, min(c + 1, COLS - 1)) - len(PREFIX) for r in range(ROWS) for c in range(COLS)])
                patches[np.arange(ROWS * COLS), right] += 8.0
            elif head == 3:
                scores[:, 0] += 4.0 + 2.0 * progress  # the CLS token as a sink
            else:
                patches -= distance * (2.0 / (1 + layer + head)) * (0.5 + progress)
            scores -= scores.max(-1, keepdims=True)
            weights = np.exp(scores)
            out[layer, head] = weights / weights.sum(-1, keepdims=True)
    return out


def write_vision_run(logdir):
    rng = np.random.default_rng(14)
    png = photo_png()
    tokens = PREFIX + [f"r{r}c{c}" for r in range(ROWS) for c in range(COLS)]
    with summary.Writer(str(logdir / "vit")) as writer:
        for step, progress in ((0, 0.0), (100, 1.0)):
            example = {
                "tokens": tokens,
                "groups": [{"name": "self", "attention": vit_attention(rng, progress), "causal": False}],
                "image": {"png": png, "grid": [ROWS, COLS], "patch_size": [PATCH, PATCH], "prefix_tokens": len(PREFIX), "prefix_names": PREFIX},
            }
            summary.write_examples(writer, "images", [example], step)
            distance = np.array([[PATCH * (1.2 + layer * 1.5 + head * 0.4) * (0.6 + 0.4 * progress) for head in range(HEADS)] for layer in range(LAYERS)], np.float32)
            summary.metrics(writer, "images", {"pixel_distance": distance}, step)
        corner = vit_attention(rng, 0.0)[:, :, :4, :4]  # a text probe: no image
        summary.attention(writer, "text", corner / corner.sum(-1, keepdims=True), ["The", "Ġcat", "Ġsat", "."], 100)


def health_values(run, step, rng):
    """The monitor's four metrics [L, H] at a step; in `diverging` one head's logits grow and another's
    entropy collapses from step 100 on."""
    t = max(0.0, (step - 100) / 100)
    logits = 4.0 + rng.normal(scale=0.1, size=(LAYERS, HEADS))
    entropy = 3.0 + rng.normal(scale=0.05, size=(LAYERS, HEADS))
    if run == "diverging":
        logits[GROWING] *= 1 + 49 * t  # 4 → 200: past the default level, 100
        entropy[COLLAPSING] *= 1 - 0.93 * t  # 3 → 0.21: under the default 0.1 × its first value
    return {
        "max_logit": logits.astype(np.float32),
        "attention_entropy": entropy.astype(np.float32),
        "null_attention": np.full((LAYERS, HEADS), 0.2, np.float32),
        "max_weight": np.full((LAYERS, HEADS), 0.4, np.float32),
    }


def write_health_runs(logdir):
    for r, run in enumerate(("stable", "diverging")):
        rng = np.random.default_rng(r)
        with summary.Writer(str(logdir / run)) as writer:
            for step in HEALTH_STEPS:
                summary.metrics(writer, "attention_health", health_values(run, step, rng), step)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("views") / "logs"
    logdir.mkdir()
    write_vision_run(logdir)
    write_health_runs(logdir)

    def ready(tags):
        return "images" in tags.get("vit", {}) and "diverging" in tags and "stable" in tags

    with serving(logdir, ready) as tb:
        yield tb


@pytest.fixture
def dashboard(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    board = Dashboard(page, server)
    yield board
    context.close()
    assert not board.problems, board.problems


def served_layer(server, step, layer):
    status, body = server.get("/attention", {"run": "vit", "tag": "images", "step": step, "example": 0, "layer": layer, "format": "json"})
    assert status == 200, body
    return np.asarray(body["attention"])


# ---------------------------------------------------------------------------------------------
# The image view


def open_image(dashboard, **state):
    dashboard.open(wait_for=None, run="vit", tag="images", view="image", **state)
    return dashboard.wait("image")


def click_patch(dashboard, row, col, tile=0):
    layout = dashboard.layout("image")
    box = layout["tiles"][tile]
    rows, cols = layout["grid"]
    dashboard.click("image", box["x"] + (col + 0.5) * box["w"] / cols, box["y"] + (row + 0.5) * box["h"] / rows)


def test_clicking_a_patch_shows_its_attention_over_the_image(dashboard):
    open_image(dashboard, heads=RIGHT_HEAD)
    assert dashboard.data("query", "image") == "CLS"  # the first prefix token until a patch is picked
    click_patch(dashboard, 2, 3)
    dashboard.wait_url("tokens", str(patch_token(2, 3)))
    dashboard.frame.wait_for_selector("canvas[data-figure=image][data-query=r2c3]")
    # The right-neighbour head of layer 0 puts its weight on the patch to the right.
    assert dashboard.data("peak", "image") == "r2c4"
    weights = served_layer(dashboard.server, 100, 0)[RIGHT_HEAD, patch_token(2, 3)]
    cells = np.asarray(dashboard.json("cells", "image"))
    assert cells.shape == (ROWS * COLS,)
    np.testing.assert_allclose(cells, weights[len(PREFIX):], atol=2e-3)  # the stored weights are 8-bit
    np.testing.assert_allclose(dashboard.json("prefix", "image"), weights[: len(PREFIX)], atol=2e-3)
    dashboard.screenshot("image_view_patch")
    dashboard.page.mouse.move(5, 5)
    dashboard.page.keyboard.press("ArrowDown")  # the arrow keys move the query patch
    dashboard.wait_url("tokens", str(patch_token(3, 3)))
    dashboard.frame.wait_for_selector("canvas[data-figure=image][data-peak=r3c4]")


def test_mean_of_heads_and_one_overlay_per_head(dashboard):
    open_image(dashboard, tokens=patch_token(4, 1), layer=2)
    weights = served_layer(dashboard.server, 100, 2)[:, patch_token(4, 1)]
    np.testing.assert_allclose(dashboard.json("cells", "image"), weights.mean(0)[len(PREFIX):], atol=2e-3)
    dashboard.frame.click("[data-control=image-split] [data-value=each]")
    dashboard.wait_url("isplit", "1")
    dashboard.frame.wait_for_selector(f"canvas[data-figure=image][data-tiles='{HEADS}']")
    np.testing.assert_allclose(dashboard.json("cells", "image"), weights[0][len(PREFIX):], atol=2e-3)  # tile 0: head 0
    click_patch(dashboard, 0, 0, tile=3)  # any tile picks the query
    dashboard.wait_url("tokens", str(patch_token(0, 0)))
    dashboard.screenshot("image_view_heads")


def rollout_reference(attention, through, query, fusion="mean", discard=0.0):
    """Abnar & Zuidema's rollout of one query in float64, written independently of the dashboard."""
    n = attention.shape[-1]
    joint = np.eye(n)
    for layer in attention[: through + 1]:
        fused = getattr(np, fusion)(layer.astype(np.float64), axis=0)
        count = int(np.floor(discard * n * n))
        if count:
            flat = fused.reshape(-1)
            flat[np.argsort(flat, kind="stable")[:count]] = 0
        step = 0.5 * fused + 0.5 * np.eye(n)
        joint = (step / step.sum(-1, keepdims=True)) @ joint
    return joint[query]


def test_rollout_with_head_fusion_and_discard_matches_a_reference(dashboard):
    open_image(dashboard, imode="rollout", layer=LAYERS - 1, fusion="max", discard=0.5)
    served = np.stack([served_layer(dashboard.server, 100, layer) for layer in range(LAYERS)])
    expected = rollout_reference(served, LAYERS - 1, 0, "max", 0.5)
    np.testing.assert_allclose(dashboard.json("cells", "image"), expected[len(PREFIX):], atol=2e-4)
    dashboard.screenshot("image_view_rollout")


def test_pixel_distance_scatter_reads_the_stored_metric(dashboard):
    open_image(dashboard, imode="distance")
    dashboard.frame.wait_for_selector("canvas[data-figure=image][data-dots]")
    status, body = dashboard.server.get("/metric", {"run": "vit", "tag": "images/pixel_distance"})
    assert status == 200, body
    stored = np.asarray(body["values"][-1])
    dots = dashboard.json("dots", "image")
    assert len(dots) == LAYERS * HEADS
    for layer, head, value in dots:
        assert abs(value - stored[layer][head]) < 1e-3
    dashboard.screenshot("image_view_distance")


def test_difference_between_checkpoints_over_the_image(dashboard):
    query = patch_token(3, 5)
    open_image(dashboard, tokens=query, layer=1, idiff=1, a_step=0, b_step=100)
    a = served_layer(dashboard.server, 0, 1)[:, query].mean(0)
    b = served_layer(dashboard.server, 100, 1)[:, query].mean(0)
    np.testing.assert_allclose(dashboard.json("cells", "image"), (b - a)[len(PREFIX):], atol=4e-3)
    dashboard.screenshot("image_view_diff")


def test_image_tab_only_for_examples_with_an_image_and_export(dashboard):
    open_image(dashboard)
    assert dashboard.frame.locator("[role=tab][data-view=image]").is_visible()
    name, svg = dashboard.export("svg")
    assert name.startswith("attention-image-vit-images-step100-ex0") and name.endswith(".svg")
    assert b"<image" in svg and svg.count(b"<image") >= 2  # the photo and the heat
    name, png = dashboard.export("png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    dashboard.open(wait_for="head", run="vit", tag="text")
    dashboard.frame.wait_for_selector("[role=tab][data-view=image]", state="hidden")


# ---------------------------------------------------------------------------------------------
# The Health panel


def test_health_panel_flags_the_growing_and_collapsing_heads_of_the_diverging_run(dashboard):
    dashboard.open(wait_for=None, view="health")
    dashboard.wait("health")
    rows = dashboard.json("rows", "health")
    flagged = [(r["run"], r["metric"], r["layer"], r["head"]) for r in rows]
    assert flagged == [("diverging", "max_logit", *GROWING), ("diverging", "attention_entropy", *COLLAPSING)]
    assert rows[0]["reasons"] == ["level"]
    status, body = dashboard.server.get("/metric", {"run": "diverging", "tag": "attention_health/max_logit"})
    assert abs(rows[0]["value"] - body["values"][-1][GROWING[0]][GROWING[1]]) < 1e-3
    assert abs(rows[0]["first"] - body["values"][0][GROWING[0]][GROWING[1]]) < 1e-3
    dashboard.screenshot("health_panel")
    # A higher level (250; the growth rule is off by default) leaves only the entropy collapse.
    dashboard.frame.fill("[data-control=llevel]", "250")
    dashboard.frame.dispatch_event("[data-control=llevel]", "change")
    dashboard.wait_url("llevel", "250")
    dashboard.frame.wait_for_function("JSON.parse(document.querySelector('canvas[data-figure=health]').dataset.rows).length === 1")
    assert dashboard.json("rows", "health")[0]["metric"] == "attention_entropy"


def test_clicking_a_flagged_head_opens_its_curves_with_every_run(dashboard):
    dashboard.open(wait_for=None, view="health")
    dashboard.wait("health")
    layout = dashboard.layout("health")
    dashboard.click("health", 200, layout["top"] + layout["row"] / 2)
    dashboard.wait_url("view", "metrics")
    state = dashboard.url_state()
    assert state["metric"] == "max_logit" and state["picks"] == f"{GROWING[0]}.{GROWING[1]}"
    assert state["run"] == "diverging" and state["runs"] == "stable" and state["tag"] == "attention_health"
    # The Metrics view shows the monitor's max logit (a probe without attention examples): the
    # heatmap at the newest step, and the head's chart with a line per run.
    dashboard.wait("metric-curves")
    dashboard.wait("metric-heatmap")
    status, body = dashboard.server.get("/metric", {"run": "diverging", "tag": "attention_health/max_logit"})
    np.testing.assert_allclose(np.asarray(dashboard.json("values", "metric-heatmap"), float), body["values"][-1], atol=1e-4)
    head_chart = [c for c in dashboard.json("charts", "metric-curves") if c["head"] == list(GROWING)]
    assert len(head_chart) == 1 and head_chart[0]["lines"] == 2
    dashboard.screenshot("health_opens_metrics")
