"""Vision-language models: Probe(processor, [(image, text)]) over tiny random LLaVA, Qwen2-VL, PaliGemma and Idefics3."""

import io
import warnings

import numpy as np
import pytest
import torch

from tb_attention import Probe, Writer
from tb_attention.metrics.image import sequence_image_metrics
from tb_attention.storage import schema
from tests.support import vlm_models as V
from tests.support.tensorboard import TensorBoard, python_provider, read_examples

PIL = pytest.importorskip("PIL.Image")
BOUND = 2 / 510 + 1 / 510**2  # the storage's absolute bound (http_api.md)


@pytest.fixture(scope="module", params=V.FAMILIES)
def vlm(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = V.processor(request.param)
        return request.param, proc, V.model(request.param, proc)


def inputs(family, seed=1):
    h, w = V.image_size(family)
    a, b = V.image(h, w, seed), V.image(h, w, seed + 1)
    return [(a, "What is this garment?"), ([a, b], "Which of the two is brighter?")]


def logged(tmp_path, probe, model, steps=(0,)):
    with Writer(tmp_path / "run") as writer:
        for step in steps:
            values = probe.log(writer, model, step)
    return read_examples(python_provider(tmp_path), "run", "vlm", steps[-1]), values


def test_stored_attention_is_the_models_eager_attention_and_spans_are_the_processors_image_tokens(tmp_path, vlm):
    family, proc, model = vlm
    probe = Probe(proc, inputs(family), name="vlm")
    stored, _ = logged(tmp_path, probe, model)
    image_token = model.config.image_token_id
    for (payload, example, _), encoding in zip(stored, probe.encodings):
        batch = V.processed(proc, encoding["originals"], encoding["prompt"])
        reference = V.eager_attention(model, batch).numpy()
        assert example.attention.shape == reference.shape  # the decoder's layers only, over the whole sequence
        assert np.abs(example.attention - reference).max() <= BOUND
        ids = batch["input_ids"][0].tolist()
        assert payload["tokens"] == proc.tokenizer.convert_ids_to_tokens(ids)
        spans = [p["span"] for image in payload["images"] for p in image["pieces"]]
        assert [i for start, stop in spans for i in range(start, stop)] == [i for i, t in enumerate(ids) if t == image_token]
        assert len(payload["images"]) == len(encoding["originals"])
        assert payload["image"] is None
    if family == "qwen2_vl":  # dynamic resolution: a 32 x 48 image is 4 x 6 patches, merged 2 x 2 into 2 x 3 tokens
        assert stored[0][0]["images"][0]["pieces"][0]["grid"] == [2, 3]
        assert stored[0][0]["images"][0]["size"] == [32, 48]
    if family == "idefics3":  # 2 x 2 tiles of 32 pixels, then the whole image, each 2 x 2 tokens
        names = [p.get("name") for p in stored[0][0]["images"][0]["pieces"]]
        assert names == ["tile r1c1", "tile r1c2", "tile r2c1", "tile r2c2", "global"]
        assert stored[0][0]["images"][0]["pieces"][1]["box"] == [0, 32, 32, 64]


def test_a_bright_patch_moves_to_the_token_the_mapping_names(vlm):
    """Independent of the mapping: a bright cell changes most what the decoder reads at one token of each
    piece (the vision tower mixes patches, but each token's own patch dominates), which must be the one
    the stored grid puts there."""
    family, proc, model = vlm
    h, w = V.image_size(family)
    grey = np.full((h, w, 3), 96, np.uint8)
    probe = Probe(proc, [(PIL.fromarray(grey), "What is this?")], name="vlm")
    probe.capture(model)
    ((image, _),) = probe._sequence_images(model)[0]
    prompt = probe.encodings[0]["prompt"]
    before = V.decoder_inputs_embeds(model, V.processed(proc, [PIL.fromarray(grey)], prompt))
    moved = 0
    for piece in image.pieces:
        rows, cols = piece.grid
        top, left, bottom, right = piece.box
        cell_h, cell_w = (bottom - top) / rows, (right - left) / cols
        for r, c in [(0, 0), (rows - 1, cols - 1), (rows - 1, 0)]:
            bright = grey.copy()
            y, x = int(top + r * cell_h), int(left + c * cell_w)
            bright[y : int(y + cell_h), x : int(x + cell_w)] = 255
            after = V.decoder_inputs_embeds(model, V.processed(proc, [PIL.fromarray(bright)], prompt))
            change = (after - before).norm(dim=-1)[piece.span[0] : piece.span[1]]
            assert int(change.argmax()) == r * cols + c, (piece, r, c)
            moved += 1
    assert moved >= 3


def test_generation_stores_the_answers_rows_over_the_image(tmp_path, vlm):
    family, proc, model = vlm
    h, w = V.image_size(family)
    probe = Probe(proc, [(V.image(h, w, 3), "Describe it.")], name="vlm", generate=dict(max_new_tokens=3))
    ((payload, example, _),), values = logged(tmp_path, probe, model)
    generation = payload["generation"]
    assert len(generation["tokens"]) == 3 and payload["images"]
    fed = probe.encodings[0]["input_ids"] + generation["ids"][:-1]
    batch = {**probe.encodings[0]["model_inputs"], "input_ids": torch.tensor([fed]), "attention_mask": torch.ones(1, len(fed), dtype=torch.long)}
    if "token_type_ids" in batch:  # PaliGemma: generated tokens are suffix (causal) tokens
        batch["token_type_ids"] = torch.cat([batch["token_type_ids"], torch.ones(1, 2, dtype=torch.long)], 1)
    if "mm_token_type_ids" in batch:
        batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros(1, 2, dtype=batch["mm_token_type_ids"].dtype)], 1)
    reference = V.eager_attention(model, batch).numpy()
    assert np.abs(example.attention - reference).max() <= BOUND + 1e-5
    image_keys = [i for image in payload["images"] for p in image["pieces"] for i in range(*p["span"])]
    answer_rows = example.attention[:, :, generation["prompt_length"] - 1 :, :][..., image_keys]
    assert answer_rows.sum() > 0  # the answer's tokens do look at the image
    assert values["image_share"].shape == values["pixel_distance"].shape == (2, 4)
    assert payload["groups"][0]["causal"] == (family != "paligemma")  # PaliGemma's prefix attends both ways


def loop_metrics(attention, images):
    """image_share and pixel_distance by their definitions (http_api.md), one weight at a time."""
    L, H, N, _ = attention.shape
    image_tokens = {int(p) for positions, _ in images for p in positions}
    first = min(image_tokens)
    share, distance = np.zeros((L, H)), np.zeros((L, H))
    for l in range(L):
        for h in range(H):
            on = total = 0.0
            for i in range(first + 1, N):
                if i in image_tokens:
                    continue
                total += attention[l, h, i].sum()
                on += sum(attention[l, h, i, j] for j in image_tokens)
            share[l, h] = on / total
            num = mass = 0.0
            for positions, centres in images:
                for a, i in enumerate(positions):
                    for b, j in enumerate(positions):
                        num += attention[l, h, i, j] * np.hypot(*(centres[a] - centres[b]))
                        mass += attention[l, h, i, j]
            distance[l, h] = num / mass
    return share, distance


def test_image_share_and_pixel_distance_follow_their_definitions():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 12, 12)) ** 4
    a = np.tril(a)
    a /= a.sum(-1, keepdims=True)
    images = [(np.arange(2, 6), np.array([[4, 4], [4, 12], [12, 4], [12, 12]], float)),
              (np.arange(7, 9), np.array([[8, 8], [8, 24]], float))]
    values = sequence_image_metrics([torch.tensor(a)], [images])
    share, distance = loop_metrics(a, images)
    np.testing.assert_allclose(values["image_share"], share, rtol=1e-5)
    np.testing.assert_allclose(values["pixel_distance"], distance, rtol=1e-5)


def test_served_through_tensorboard_text_queries_over_image_keys_and_each_image(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = V.processor("llava")
        model = V.model("llava", proc)
    probe = Probe(proc, inputs("llava"), name="vlm")
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
        torch.nn.init.normal_(model.model.language_model.layers[1].self_attn.q_proj.weight, std=0.5)
        probe.log(writer, model, 10)  # over training steps: the weights moved
    server = TensorBoard(tmp_path)
    try:
        tags = server.wait_for(lambda t: 10 in t.get("run", {}).get("vlm", {}).get("steps", []))
        assert tags["run"]["vlm/image_share"]["kind"] == "metric"
        status, listing = server.get("/examples", {"run": "run", "tag": "vlm", "step": 10})
        assert status == 200
        second = listing["examples"][1]
        assert [image["pieces"][0]["span"] for image in second["images"]] == [[0, 16], [16, 32]]
        batch = V.processed(proc, probe.encodings[1]["originals"], probe.encodings[1]["prompt"])
        reference = V.eager_attention(model, batch).numpy()
        status, body = server.get("/attention", {"run": "run", "tag": "vlm", "step": 10, "example": 1, "layer": 1,
                                                 "head": 2, "format": "json"})
        served = np.asarray(body["attention"])
        text_rows = range(32, len(second["tokens"]))
        assert np.abs(served[32:, 16:32] - reference[1, 2][32:, 16:32]).max() <= BOUND  # text over image 1
        assert served[list(text_rows)][:, :32].sum() > 0
        for index in range(2):
            status, png, headers = server.get("/image", {"run": "run", "tag": "vlm", "step": 10, "example": 1,
                                                         "image": index}, raw=True)
            assert status == 200 and headers["Content-Type"] == "image/png"
            served_image = np.asarray(PIL.open(io.BytesIO(png)))
            assert served_image.shape == (32, 32, 3)
            assert np.abs(served_image.astype(int) - np.asarray(probe.encodings[1]["originals"][index])).max() <= 2
        status, body = server.get("/image", {"run": "run", "tag": "vlm", "step": 10, "example": 0, "image": 1})
        assert status == 404 and "no image 1" in body["error"]
        status, body = server.get("/metric", {"run": "run", "tag": "vlm/image_share"})
        assert status == 200 and len(body["values"]) == 2
    finally:
        server.close()


def test_placeholders_that_do_not_match_the_images_are_refused():
    proc = V.processor("llava")
    with pytest.raises(ValueError, match="2 image placeholders .* for 1 image"):
        Probe(proc, [(V.image(32, 32), "<image><image>What?")])


def test_a_model_of_an_unknown_family_is_refused(tmp_path):
    from tests.support.models import tiny_gpt2

    proc = V.processor("llava")
    probe = Probe(proc, [(V.image(32, 32), "What?")], name="vlm")
    with Writer(tmp_path / "run") as writer, pytest.raises(TypeError, match="not a vision-language family"):
        probe.log(writer, tiny_gpt2(), 0)


def test_the_manifest_refuses_spans_outside_the_tokens_or_not_the_grid():
    good = {"size": [32, 32], "pieces": [{"span": [0, 4], "grid": [2, 2], "box": [0, 0, 32, 32]}], "blob": 3}
    assert schema.check_images([good], 10, "x", stored=True)[0]["pieces"][0]["grid"] == [2, 2]
    for bad, message in [({**good, "pieces": [{"span": [8, 12], "grid": [2, 2], "box": [0, 0, 32, 32]}]}, "inside"),
                         ({**good, "pieces": [{"span": [0, 4], "grid": [1, 2], "box": [0, 0, 32, 32]}]}, "grid"),
                         ({**good, "pieces": [{"span": [0, 4], "grid": [2, 2], "box": [0, 0, 40, 32]}]}, "frame")]:
        with pytest.raises(schema.FormatError, match=message):
            schema.check_images([bad], 10, "x", stored=True)
