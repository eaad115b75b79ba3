"""The image view and the Health panel in a real Chromium against a real `tensorboard --logdir`."""

# One log directory holds a vision probe (two steps of a 2-prefix-token ViT over a real photo, with
# its pixel_distance metric), a text probe (no image: the Image tab stays out of the way) and two
# training runs that log the attention-health monitor's metrics, one of them diverging.

import io
import json

import numpy as np
import pytest

from conftest import TensorBoard
from dashboard_page import FIGURE_READY, Dashboard, browser, needs_chromium  # noqa: F401 (fixtures)
from tb_attention import summary

pytestmark = needs_chromium

ROWS, COLS, PATCH = 6, 8, 16  # a 96 × 128 px image: rows ≠ cols, so a transposed grid shows
PREFIX = ["CLS", "reg0"]
LAYERS, HEADS = 4, 4
N = len(PREFIX) + ROWS * COLS
RIGHT_HEAD = 1  # in layer 0, each patch attends to the patch on its right (the last column to itself)
HEALTH_STEPS = list(range(0, 201, 10))
GROWING = (2, 1)  # the diverging run's head whose max logit grows tenfold
COLLAPSING = (1, 3)  # the diverging run's head whose attention entropy falls to an eighth

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
        text = ["The", "Ġcat", "Ġsat", "."]
        summary.attention(writer, "text", vit_attention(rng, 0)[:, :, :4, :4] / vit_attention(rng, 0)[:, :, :4, :4].sum(-1, keepdims=True), text, 0)


def health_values(run, step, rng):
    """The monitor's four metrics [L, H] at a step; in `diverging` one head's logits grow and another's
    entropy collapses from step 100 on."""
    t = max(0.0, (step - 100) / 100)
    logits = 4.0 + rng.normal(scale=0.1, size=(LAYERS, HEADS))
    entropy = 3.0 + rng.normal(scale=0.05, size=(LAYERS, HEADS))
    if run == "diverging":
        logits[GROWING] *= 1 + 9 * t
        entropy[COLLAPSING] *= 1 - 0.875 * t
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
    tb = TensorBoard(logdir)
    try:
        tb.wait_for(lambda tags: "images" in tags.get("vit", {}) and "diverging" in tags and "stable" in tags)
        yield tb
    finally:
        tb.close()


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
