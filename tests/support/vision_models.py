"""Small vision models and inputs for the vision tests: tiny Hugging Face ViTs of each family, images, references."""

import io
import math

import numpy as np
import pytest
import torch
import transformers

from tb_attention.storage import summary

PIL = pytest.importorskip("PIL.Image")
T = transformers


SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


# model class, config, expected prefix token names: 32x32 inputs in 8x8 patches, a 4x4 grid.
FAMILIES = {
    "vit": (T.ViTModel, lambda: T.ViTConfig(image_size=32, patch_size=8, **SMALL), ["[CLS]"]),
    "deit": (T.DeiTModel, lambda: T.DeiTConfig(image_size=32, patch_size=8, **SMALL), ["[CLS]", "[DIST]"]),
    "clip": (T.CLIPVisionModel, lambda: T.CLIPVisionConfig(image_size=32, patch_size=8, **SMALL), ["[CLS]"]),
    "siglip": (T.SiglipVisionModel, lambda: T.SiglipVisionConfig(image_size=32, patch_size=8, **SMALL), []),
    "dinov2": (T.Dinov2Model, lambda: T.Dinov2Config(image_size=32, patch_size=8, **SMALL), ["[CLS]"]),
    "dinov2_registers": (
        T.Dinov2WithRegistersModel,
        lambda: T.Dinov2WithRegistersConfig(image_size=32, patch_size=8, num_register_tokens=4, **SMALL),
        ["[CLS]", "[REG0]", "[REG1]", "[REG2]", "[REG3]"],
    ),
}


def processor(size=32):
    return T.ViTImageProcessor(size={"height": size, "width": size})


def images(seed=0):
    rng = np.random.default_rng(seed)
    # a float RGB array in [0, 1], a grey uint8 array, a PIL image: each kind the probe accepts
    return [rng.random((40, 50, 3)), (rng.random((30, 30)) * 255).astype(np.uint8),
            PIL.fromarray((rng.random((36, 36, 3)) * 255).astype(np.uint8))]


def png_size(png):
    return PIL.open(io.BytesIO(png)).size


def build(family, seed=0):
    cls, config, _ = FAMILIES[family]
    torch.manual_seed(seed)
    return cls(config()).eval()


def vision_language_model(family, seed=0):
    """A tiny random vision-language model (LLaVA, PaliGemma, Qwen2-VL) built from its config, offline."""
    vision = dict(image_size=32, patch_size=8, **SMALL)
    text = dict(vocab_size=200, num_key_value_heads=2, **SMALL)
    torch.manual_seed(seed)
    if family == "llava":
        config = T.LlavaConfig(vision_config=T.CLIPVisionConfig(**vision), text_config=T.LlamaConfig(**text),
                               image_token_index=100)
        return T.LlavaForConditionalGeneration(config).eval()
    if family == "paligemma":
        config = T.PaliGemmaConfig(vision_config=dict(model_type="siglip_vision_model", **vision),
                                   text_config=dict(model_type="gemma", head_dim=8, **text), image_token_index=100,
                                   projection_dim=32)
        return T.PaliGemmaForConditionalGeneration(config).eval()
    if family == "qwen2_vl":
        config = T.Qwen2VLConfig(
            vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, patch_size=8, spatial_merge_size=2),
            text_config=dict(rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, **text),
            image_token_id=150, video_token_id=151, vision_start_token_id=152,
        )
        return T.Qwen2VLForConditionalGeneration(config).eval()
    raise ValueError(family)


def eager_attention(model, pixel_values):
    """[B, L, H, N, N] as the model returns it with eager attention and output_attentions=True."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(pixel_values=pixel_values, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    return torch.stack(out.attentions, 1)


class Recorded:
    """Stands in for the writer: keeps what ImageProbe.log hands to summary."""

    def __init__(self, monkeypatch):
        self.examples, self.metrics = [], []
        monkeypatch.setattr(summary, "write_examples", lambda w, tag, ex, step, **k: self.examples.append((tag, ex, step)))
        monkeypatch.setattr(summary, "metrics", lambda w, tag, values, step, **k: self.metrics.append((tag, values, step)))


def loop_pixel_distance(a, grid, patch, prefix):
    """The definition, one pair at a time."""
    rows, cols = grid
    out = np.zeros(a.shape[:2])
    for l in range(a.shape[0]):
        for h in range(a.shape[1]):
            num = den = 0.0
            for i in range(rows * cols):
                for j in range(rows * cols):
                    yi, xi = (i // cols + 0.5) * patch[0], (i % cols + 0.5) * patch[1]
                    yj, xj = (j // cols + 0.5) * patch[0], (j % cols + 0.5) * patch[1]
                    w = a[l, h, prefix + i, prefix + j]
                    num += w * math.hypot(yi - yj, xi - xj)
                    den += w
            out[l, h] = num / den
    return out
