"""ImageProbe: vision transformers' attention over patches, the image, the patch metrics and rollout."""

import io
import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

from tb_attention.probes import vision  # noqa: E402
from tb_attention.storage import summary
from tests.support.vision_models import (
    FAMILIES,
    SMALL,
    Recorded,
    build,
    eager_attention,
    images,
    loop_pixel_distance,
    png_size,
    processor,
    vision_language_model,
)

T = transformers

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Capture and layout


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_captured_weights_are_the_models_eager_attention(family):
    model = build(family)
    probe = vision.ImageProbe(processor(), images())
    captured = probe.capture(model)
    expected = eager_attention(model, torch.stack(probe.pixel_values))
    assert len(captured) == 3
    for b, (attention, layout, _) in enumerate(captured):
        assert attention.shape == (2, 4, layout.num_tokens, layout.num_tokens)
        torch.testing.assert_close(attention, expected[b], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_grid_patch_size_and_prefix_tokens_come_from_the_model(family):
    model = build(family)
    (_, layout, _), *_ = vision.ImageProbe(processor(), images()[:1]).capture(model)
    prefix = FAMILIES[family][2]
    assert layout.grid == (4, 4) and layout.patch_size == (8, 8)
    assert list(layout.prefix_names) == prefix and layout.prefix_tokens == len(prefix)
    names = layout.token_names()
    assert names[: len(prefix)] == prefix and names[len(prefix)] == "r0c0" and names[-1] == "r3c3"
    assert names[len(prefix) + 5] == "r1c1"  # row-major


def test_a_non_square_input_gets_a_non_square_grid():
    config = T.ViTConfig(image_size=(24, 40), patch_size=8, **SMALL)
    model = T.ViTModel(config).eval()
    probe = vision.ImageProbe(T.ViTImageProcessor(size={"height": 24, "width": 40}), images()[:1])
    (attention, layout, _), = probe.capture(model)
    assert layout.grid == (3, 5) and attention.shape[-1] == 16
    assert png_size(probe.png(0, layout)) == (40, 24)


def test_a_clip_model_is_probed_through_its_vision_tower():
    config = T.CLIPConfig(
        vision_config=dict(image_size=32, patch_size=8, **SMALL), text_config=dict(vocab_size=50, **SMALL)
    )
    torch.manual_seed(0)
    model = T.CLIPModel(config).eval()
    probe = vision.ImageProbe(processor(), images()[:2])
    captured = probe.capture(model)
    expected = eager_attention(model.vision_model, torch.stack(probe.pixel_values))
    assert captured[0][1].prefix_names == ("[CLS]",)
    torch.testing.assert_close(torch.stack([a for a, _, _ in captured]), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family, tower", [("llava", "model.vision_tower"), ("paligemma", "model.vision_tower"),
                                           ("qwen2_vl", None)])
def test_a_vision_language_model_is_refused_naming_its_vision_tower(family, tower):
    model = vision_language_model(family)
    probe = vision.ImageProbe(processor(), images()[:2])
    with pytest.raises(TypeError, match=r"is a vision-language model: ImageProbe is for vision encoders .* needs its "
                                        r"text and image together, as its processor makes them"):
        probe.capture(model)
    if tower is None:  # Qwen2-VL's tower reads flattened patches and their grid
        with pytest.raises(TypeError, match=r"Its vision tower \(model.model.visual\) takes .*flattened patches, not "
                                            r"images: ImageProbe cannot run it"):
            probe.capture(model)
        return
    with pytest.raises(TypeError, match=rf"probed with ImageProbe: probe.log\(writer, model[.]{tower.replace('.', '[.]')}, step\)"):
        probe.capture(model)
    vision_tower = model.get_submodule(tower)  # the advice works: the tower's own attention
    captured = probe.capture(vision_tower)
    expected = eager_attention(vision_tower, torch.stack(probe.pixel_values))
    torch.testing.assert_close(torch.stack([a for a, _, _ in captured]), expected, rtol=0, atol=1e-6)


def test_swin_is_refused_with_the_reason():
    config = T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4)
    model = T.SwinModel(config)
    with pytest.raises(vision.WindowedAttentionError, match=r"local 4x4-patch windows"):
        vision.ImageProbe(processor(), images()[:1]).capture(model)


def test_a_layout_that_does_not_fit_the_tokens_is_an_error_naming_both():
    model = build("vit")
    with pytest.raises(ValueError, match=r"attends over 17 tokens.*2 prefix token"):
        vision.ImageProbe(processor(), images()[:1], prefix_names=["[CLS]", "[X]"]).capture(model)


def test_log_restores_training_mode_and_leaves_no_gradients(monkeypatch):
    Recorded(monkeypatch)
    model = build("deit").train()
    model.layers[0].eval()  # mixed modes come back as they were
    vision.ImageProbe(processor(), images()).log(None, model, 3)
    assert model.training and not model.layers[0].training and model.layers[1].training
    assert all(p.grad is None for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"


def test_only_the_writing_rank_logs(monkeypatch):
    recorded = Recorded(monkeypatch)
    monkeypatch.setattr(summary, "is_writing_rank", lambda all_ranks=False: all_ranks)
    assert vision.ImageProbe(processor(), images()).log(None, build("vit"), 0) == {}
    assert recorded.examples == []


# ---------------------------------------------------------------------------------------------
# What is written


def test_log_hands_the_writer_v2_image_examples_and_metrics(monkeypatch):
    recorded = Recorded(monkeypatch)
    model = build("dinov2_registers")
    probe = vision.ImageProbe(processor(), images(), name="photos")
    values = probe.log(None, model, 7)
    (tag, examples, step), = recorded.examples
    assert (tag, step, len(examples)) == ("photos", 7, 3)
    expected = eager_attention(model, torch.stack(probe.pixel_values))
    for b, example in enumerate(examples):
        (group,) = example["groups"]
        assert group["name"] == "self" and group["causal"] is False
        assert group["layer_names"] == ["encoder.layer.0.attention", "encoder.layer.1.attention"]
        torch.testing.assert_close(group["attention"], expected[b], rtol=0, atol=1e-6)
        image = example["image"]
        assert image["grid"] == [4, 4] and image["patch_size"] == [8, 8]
        assert image["prefix_tokens"] == 5 and image["prefix_names"] == ["[CLS]", "[REG0]", "[REG1]", "[REG2]", "[REG3]"]
        assert example["tokens"] == image["prefix_names"] + [f"r{r}c{c}" for r in range(4) for c in range(4)]
        assert image["png"].startswith(b"\x89PNG")
    (tag, written, step), = recorded.metrics
    assert (tag, step) == ("photos", 7) and written is values
    assert set(values) == {"pixel_distance", "prefix_attention", "entropy", "attention_entropy", "max_weight"}
    assert all(v.shape == (2, 4) and v.dtype == np.float32 for v in values.values())


def test_siglip_has_no_prefix_metrics(monkeypatch):
    recorded = Recorded(monkeypatch)
    values = vision.ImageProbe(processor(), images()).log(None, build("siglip"), 0)
    assert set(values) == {"pixel_distance", "entropy", "attention_entropy", "max_weight"} and recorded.examples[0][1][0]["image"]["prefix_tokens"] == 0


def test_the_png_is_the_image_the_model_saw():
    rng = np.random.default_rng(3)
    original = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    probe = vision.ImageProbe(processor(), [original])
    (_, layout, _), = probe.capture(build("vit"))
    decoded = np.asarray(PIL.open(io.BytesIO(probe.png(0, layout))).convert("RGB"))
    # 32x32 in, no resize: normalised then de-normalised, the pixels come back exactly (± rounding)
    assert decoded.shape == (32, 32, 3) and np.abs(decoded.astype(int) - original).max() <= 1


def test_a_large_input_is_stored_at_most_256_pixels_and_cropped_to_the_patches():
    config = T.ViTConfig(image_size=300, patch_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    model = T.ViTModel(config).eval()
    probe = vision.ImageProbe(processor(300), [np.zeros((300, 300, 3), np.uint8)])
    (_, layout, _), = probe.capture(model)
    assert layout.grid == (18, 18)  # 18 x 16 = 288 of the 300 pixels are seen
    assert png_size(probe.png(0, layout)) == (256, 256)
    layout = vision.PatchLayout((18, 9), (16, 16), ("[CLS]",))
    assert png_size(vision.image_png(PIL.new("RGB", (300, 300)), layout)) == (128, 256)


def test_images_are_read_from_paths_and_channels_first_arrays(tmp_path):
    array = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    PIL.fromarray(array).save(tmp_path / "a.png")
    probe = vision.ImageProbe(processor(), [tmp_path / "a.png", str(tmp_path / "a.png"), array.transpose(2, 0, 1)])
    assert all(torch.equal(p, probe.pixel_values[0]) for p in probe.pixel_values)


@pytest.mark.parametrize("bad, error", [([], ValueError), ([np.zeros((4, 4, 2))], ValueError), ([np.array(["x"])], (TypeError, ValueError))])
def test_bad_images_are_refused(bad, error):
    with pytest.raises(error):
        vision.ImageProbe(processor(), bad)


# ---------------------------------------------------------------------------------------------
# Metrics


def random_attention(rng, layers, heads, n):
    scores = rng.normal(size=(layers, heads, n, n)) * 2
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_pixel_distance_is_the_mean_attention_distance_in_pixels():
    rng = np.random.default_rng(0)
    layout = vision.PatchLayout((3, 4), (5, 7), ("[CLS]", "[DIST]"))
    a = random_attention(rng, 2, 3, layout.num_tokens)
    np.testing.assert_allclose(vision.pixel_distance(a, layout), loop_pixel_distance(a, (3, 4), (5, 7), 2), rtol=1e-6)


def test_pixel_distance_of_known_patterns():
    layout = vision.PatchLayout((4, 4), (16, 16), ("[CLS]",))
    n = layout.num_tokens
    self_only = np.eye(n)[None, None]
    right_neighbour = np.zeros((1, 1, n, n))
    for i in range(n):
        right_neighbour[0, 0, i, i + 1 if 1 <= i and (i - 1) % 4 < 3 else i] = 1
    assert vision.pixel_distance(self_only, layout)[0, 0] == 0
    # 12 of the 16 patches look one patch (16 px) right, 4 look at themselves: 12 * 16 / 16 = 12 px
    assert vision.pixel_distance(right_neighbour, layout)[0, 0] == pytest.approx(12.0)


def test_metrics_over_several_images_are_ratios_of_sums():
    rng = np.random.default_rng(1)
    layouts = [vision.PatchLayout((2, 3), (8, 8), ("[CLS]",)), vision.PatchLayout((3, 3), (8, 8), ("[CLS]",))]
    attentions = [random_attention(rng, 2, 2, layout.num_tokens) for layout in layouts]
    values = vision.image_metrics([torch.as_tensor(a) for a in attentions], layouts)
    num = sum(loop_pixel_distance(a, l.grid, l.patch_size, 1) * a[:, :, 1:, 1:].sum((2, 3)) for a, l in zip(attentions, layouts))
    den = sum(a[:, :, 1:, 1:].sum((2, 3)) for a in attentions)
    np.testing.assert_allclose(values["pixel_distance"], num / den, rtol=1e-6)
    to_prefix = sum(a[:, :, 1:, 0].sum(2) for a in attentions) / sum(a.shape[-1] - 1 for a in attentions)
    np.testing.assert_allclose(values["prefix_attention"], to_prefix, rtol=1e-6)


def test_attention_entropy_and_max_weight_are_means_over_every_query():
    rng = np.random.default_rng(5)
    layouts = [vision.PatchLayout((2, 2), (4, 4), ("[CLS]",)), vision.PatchLayout((1, 3), (4, 4), ("[CLS]",))]
    attentions = [random_attention(rng, 2, 3, layout.num_tokens) for layout in layouts]
    values = vision.image_metrics(attentions, layouts)
    entropy = [[np.mean([-(r * np.log(r)).sum() for a in attentions for r in a[l, h]]) for h in range(3)] for l in range(2)]
    largest = [[np.mean([r.max() for a in attentions for r in a[l, h]]) for h in range(3)] for l in range(2)]
    np.testing.assert_allclose(values["attention_entropy"], entropy, rtol=1e-6)
    np.testing.assert_allclose(values["max_weight"], largest, rtol=1e-6)


def test_prefix_attention_counts_every_prefix_token():
    layout = vision.PatchLayout((2, 2), (4, 4), ("[CLS]", "[REG0]", "[REG1]"))
    a = np.zeros((1, 1, 7, 7))
    a[..., 3:, 1] = 0.25  # patches give a quarter to a register, the rest to themselves
    a[..., 3:, 3:] = 0.75 * np.eye(4)
    a[..., :3, 0] = 1
    assert vision.prefix_attention(a, layout)[0, 0] == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# Rollout


def loop_rollout(a, fusion, discard, heads):
    """Abnar & Zuidema's rollout written out independently: fused heads, discard, residual, product."""
    L, _, n, _ = a.shape
    result = np.eye(n)
    out = []
    for l in range(L):
        chosen = [a[l, h] for h in (heads if heads is not None else range(a.shape[1]))]
        fused = {"mean": sum(chosen) / len(chosen), "max": np.maximum.reduce(chosen), "min": np.minimum.reduce(chosen)}[fusion]
        cells = sorted((fused[i, j], i * n + j) for i in range(n) for j in range(n))
        for _, flat in cells[: int(discard * n * n)]:
            fused[flat // n, flat % n] = 0
        step = np.array([[0.5 * fused[i, j] + 0.5 * (i == j) for j in range(n)] for i in range(n)])
        step = step / step.sum(1, keepdims=True)
        result = step @ result
        out.append(result)
    return np.array(out)


@pytest.mark.parametrize("fusion, discard, heads", [("mean", 0, None), ("max", 0.5, None), ("min", 0.2, [1, 2])])
def test_rollout_equals_an_independent_computation(fusion, discard, heads):
    a = random_attention(np.random.default_rng(2), 3, 4, 6)
    np.testing.assert_allclose(vision.rollout(a, fusion, discard, heads), loop_rollout(a, fusion, discard, heads), rtol=1e-12)


def test_rollout_of_identity_attention_is_identity_and_rows_sum_to_one():
    n = 5
    assert np.allclose(vision.rollout(np.broadcast_to(np.eye(n), (2, 3, n, n)))[-1], np.eye(n))
    r = vision.rollout(random_attention(np.random.default_rng(4), 4, 2, n), "max", 0.6)
    np.testing.assert_allclose(r.sum(-1), 1, rtol=1e-12)


def test_the_frontend_rollout_fixture_is_up_to_date():
    stored = json.loads((ROOT / "frontend/test/fixtures/rollout.json").read_text())
    assert stored == json.loads(json.dumps(vision.rollout_fixture()))
    for case in stored["cases"]:
        np.testing.assert_allclose(
            case["rollout"], loop_rollout(np.array(stored["attention"]), case["head_fusion"], case["discard_ratio"], case["heads"]),
            rtol=1e-12,
        )
