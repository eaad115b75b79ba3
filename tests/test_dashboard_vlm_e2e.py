"""The image view over a vision-language example in a real Chromium against a real `tensorboard --logdir`."""

# A tiny random Qwen2-VL (its own processor, offline) probed on a real photo: pick a text token and
# see its attention over the image; pick a patch and see which text tokens attend to it.

import warnings

import numpy as np
import pytest

from tb_attention import Probe, Writer
from tests.support import vlm_models as V
from tests.support.dashboard_page import FIGURE_READY, Dashboard, browser, needs_chromium  # noqa: F401 (fixtures)
from tests.support.tensorboard import serving

pytestmark = needs_chromium
FIGURE_READY.update({"image": "data-query"})


def photo():
    """scikit-image's astronaut (public domain) at 64 x 48 px: Qwen2-VL's 6 x 8 patches, 3 x 4 tokens."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((64, 48))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("vlm") / "logs"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = V.processor("qwen2_vl")
        model = V.model("qwen2_vl", proc)
    # Example 1 holds two images: a text token's attention is shown over the one picked.
    probe = Probe(proc, [(photo(), "Who is in this picture?"), ([photo(), photo().rotate(180)], "Which one is upside down?")],
                  name="vlm")
    with Writer(logdir / "qwen") as writer:
        probe.log(writer, model, 0)
    with serving(logdir, lambda tags: "vlm" in tags.get("qwen", {})) as tb:
        yield tb


@pytest.fixture
def dashboard(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    board = Dashboard(context.new_page(), server)
    yield board
    context.close()
    assert not board.problems, board.problems


def served(server, layer):
    status, body = server.get("/attention", {"run": "qwen", "tag": "vlm", "step": 0, "example": 0, "layer": layer, "format": "json"})
    assert status == 200, body
    return np.asarray(body["attention"])


def test_a_text_token_shows_its_attention_over_the_image_and_a_patch_the_tokens_attending_to_it(dashboard):
    status, listing = dashboard.server.get("/examples", {"run": "qwen", "tag": "vlm", "step": 0})
    example = listing["examples"][0]
    (piece,) = example["images"][0]["pieces"]
    start, stop = piece["span"]
    assert piece["grid"] == [3, 4]
    dashboard.open(wait_for=None, run="qwen", tag="vlm", view="image", heads=1, layer=1)
    dashboard.wait("image")
    tokens = example["tokens"]
    word = tokens.index("Ġpicture")
    layout = dashboard.layout("image")
    chips = [name for name, _ in dashboard.json("chips", "image")]
    box = layout["chips"][chips.index("Ġpicture")]
    dashboard.click("image", box["x"] + box["w"] / 2, box["y"] + box["h"] / 2)
    dashboard.wait_url("tokens", str(word))
    dashboard.frame.wait_for_selector("canvas[data-figure=image][data-query=Ġpicture]")
    row = served(dashboard.server, 1)[1, word]
    np.testing.assert_allclose(dashboard.json("cells", "image"), row[start:stop], atol=2e-3)
    assert dashboard.data("peak", "image") == f"r{int(np.argmax(row[start:stop])) // 4}c{int(np.argmax(row[start:stop])) % 4}"
    dashboard.screenshot("image_view_vlm_text_token")
    # A patch: the chips now say how much each text token attends to it.
    tile = layout["tiles"][0]
    dashboard.click("image", tile["x"] + 2.5 * tile["w"] / 4, tile["y"] + 1.5 * tile["h"] / 3)
    patch = start + 1 * 4 + 2
    dashboard.wait_url("tokens", str(patch))
    dashboard.frame.wait_for_selector("canvas[data-figure=image][data-query=r1c2]")
    column = served(dashboard.server, 1)[1, :, patch]
    values = dict(dashboard.json("chips", "image"))
    assert abs(values["Ġpicture"] - column[word]) <= 2e-3
    assert values["Ġpicture"] > 0  # a later text token does attend to the patch
    dashboard.screenshot("image_view_vlm_patch")


def test_with_two_images_a_text_token_is_shown_over_the_picked_one_and_the_hint_stays_inside(dashboard):
    status, listing = dashboard.server.get("/examples", {"run": "qwen", "tag": "vlm", "step": 0})
    images = listing["examples"][1]["images"]
    spans = [image["pieces"][0]["span"] for image in images]
    n = len(listing["examples"][1]["tokens"])
    dashboard.open(wait_for=None, run="qwen", tag="vlm", view="image", example=1, heads=1, layer=1)
    dashboard.wait("image")
    assert dashboard.data("picture", "image") == "0"  # the last text token, over the first image
    picker = dashboard.frame.locator("select[data-control=picture]")
    assert picker.is_visible()
    picker.select_option("1")
    dashboard.wait_url("picture", "1")
    dashboard.frame.wait_for_selector("canvas[data-figure=image][data-picture='1']")
    row = served_example(dashboard.server, 1, 1)[1, n - 1]
    np.testing.assert_allclose(dashboard.json("cells", "image"), row[spans[1][0]:spans[1][1]], atol=2e-3)
    layout = dashboard.layout("image")
    assert layout["hint"]["x"] + layout["hint"]["w"] <= layout["width"]  # the hint never runs off the right edge
    dashboard.screenshot("image_view_vlm_second_image")


def served_example(server, example, layer):
    status, body = server.get("/attention", {"run": "qwen", "tag": "vlm", "step": 0, "example": example, "layer": layer,
                                             "format": "json"})
    assert status == 200, body
    return np.asarray(body["attention"])
