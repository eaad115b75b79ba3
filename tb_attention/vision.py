"""Vision transformers: attention over image patches, logged with the image the model saw."""

# An image example is an ordinary attention example whose tokens are the prefix tokens (CLS,
# distillation, registers) followed by the patches in row-major order, named by position
# (`r3c5`), plus `image`: the model's input as a small PNG, the patch grid, the patch size in input
# pixels and the prefix tokens (CONTRACTS.md B). The grid comes from the processed input and the
# model's patch size; the prefix from the model's kind, checked against the captured token count.
#
# The PNG is the processed input de-normalised (so a centre crop shows as the model saw it), cropped
# to the part the patches cover (a 225-pixel side with 14-pixel patches leaves one pixel unseen), at
# most MAX_IMAGE_SIDE pixels on its long side: the grid maps onto it by simple proportion.

import dataclasses
import io
import math
import pathlib

import numpy as np

from tb_attention import defaults, metadata, modules, summary

MAX_IMAGE_SIDE = 256  # pixels, long side of the stored PNG
HEAD_FUSIONS = ("mean", "max", "min")  # how attention rollout merges a layer's heads

# Prefix tokens of the Hugging Face vision transformers, by config.model_type, in sequence order.
_PREFIX_NAMES = {
    "vit": ("[CLS]",),
    "deit": ("[CLS]", "[DIST]"),
    "clip_vision_model": ("[CLS]",),
    "clip": ("[CLS]",),
    "siglip_vision_model": (),
    "siglip": (),
    "dinov2": ("[CLS]",),
    "vit_msn": ("[CLS]",),
    "beit": ("[CLS]",),
    "data2vec-vision": ("[CLS]",),
}


class WindowedAttentionError(ValueError):
    """The model attends within local windows (Swin), so it has no image-wide patch attention."""


# ---------------------------------------------------------------------------------------------
# Patch layout


@dataclasses.dataclass(frozen=True)
class PatchLayout:
    """Where each token of a vision transformer's sequence sits on the input image."""

    grid: tuple  # (rows, cols) of patches
    patch_size: tuple  # (height, width) of a patch in input pixels
    prefix_names: tuple  # names of the tokens before the patches (CLS, distillation, registers)

    @property
    def prefix_tokens(self):
        return len(self.prefix_names)

    @property
    def num_patches(self):
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self):
        return self.prefix_tokens + self.num_patches

    def token_names(self):
        """Prefix names, then `r<row>c<col>` for each patch in sequence (row-major) order."""
        rows, cols = self.grid
        return list(self.prefix_names) + [f"r{r}c{c}" for r in range(rows) for c in range(cols)]

    def centres(self):
        """float64 [patches, 2]: each patch's centre (y, x) in input pixels, in sequence order."""
        rows, cols = self.grid
        ph, pw = self.patch_size
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        return np.stack([(r.reshape(-1) + 0.5) * ph, (c.reshape(-1) + 0.5) * pw], 1).astype(np.float64)

    def image_entry(self, png):
        """The `image` field of an example (CONTRACTS.md B)."""
        return {
            "png": png,
            "grid": list(self.grid),
            "patch_size": list(self.patch_size),
            "prefix_tokens": self.prefix_tokens,
            "prefix_names": list(self.prefix_names),
        }


def _pair(value, what):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or (height, width), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def vision_config(model):
    """The config that describes the model's image encoder (a CLIP/SigLIP model's vision_config), or None."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    sub = getattr(config, "vision_config", None)
    return sub if sub is not None else config


def _check_not_windowed(model, config):
    model_type = getattr(config, "model_type", "") or ""
    if "swin" in model_type or type(model).__name__.lower().startswith("swin"):
        window = getattr(config, "window_size", "?")
        raise WindowedAttentionError(
            f"{type(model).__name__} is a Swin transformer: each layer attends within local {window}x{window}-patch "
            "windows (shifted every other layer, patches merged between stages), so no layer has one attention "
            "map over the image's patches for ImageProbe to show. Use a global-attention vision transformer "
            "(ViT, DeiT, CLIP/SigLIP vision, DINOv2)"
        )


def _patch_size_of(model, config):
    """The model's patch size (height, width) in input pixels, or None when it cannot be told."""
    if config is not None and getattr(config, "patch_size", None) is not None:
        return _pair(config.patch_size, "config.patch_size")
    embed = getattr(model, "patch_embed", None)  # timm
    if embed is not None and getattr(embed, "patch_size", None) is not None:
        return _pair(embed.patch_size, "patch_embed.patch_size")
    import torch

    for module in model.modules():  # a patchifying convolution: kernel = stride
        if isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) == tuple(module.stride):
            return tuple(module.kernel_size)
    return None


def _prefix_names_of(model, config):
    """Names of the model's prefix tokens, or None when its kind does not say (then counted)."""
    model_type = getattr(config, "model_type", None)
    if model_type == "dinov2_with_registers":
        return ("[CLS]",) + tuple(f"[REG{i}]" for i in range(int(config.num_register_tokens)))
    if model_type in _PREFIX_NAMES:
        return _PREFIX_NAMES[model_type]
    if config is None and hasattr(model, "cls_token"):  # timm: cls, dist (DeiT), then registers
        names = ("[CLS]",) if getattr(model, "cls_token", None) is not None else ()
        if getattr(model, "dist_token", None) is not None:
            names += ("[DIST]",)
        registers = getattr(model, "reg_token", None)
        names += tuple(f"[REG{i}]" for i in range(0 if registers is None else registers.shape[1]))
        return names
    return None


def patch_layout(model, image_size, num_tokens=None, *, patch_size=None, prefix_names=None):
    """The PatchLayout of `model` on an input of `image_size` (height, width) pixels.

    patch_size / prefix_names override what the model's config (or module) says. With num_tokens
    (the captured sequence length) the layout is checked against it, and a model of unknown kind
    gets its prefix count from it (`[CLS]` for one, `[P0]`, `[P1]`... for more).
    """
    config = vision_config(model)
    _check_not_windowed(model, config)
    size = _pair(patch_size, "patch_size") if patch_size is not None else _patch_size_of(model, config)
    if size is None:
        raise ValueError(
            f"cannot tell the patch size of {type(model).__name__} (no config.patch_size, patch_embed.patch_size or "
            "patchifying Conv2d): pass ImageProbe(..., patch_size=N)"
        )
    height, width = image_size
    grid = (height // size[0], width // size[1])
    if min(grid) < 1:
        raise ValueError(f"an input of {height}x{width} pixels has no {size[0]}x{size[1]} patch")
    names = tuple(prefix_names) if prefix_names is not None else _prefix_names_of(model, config)
    patches = grid[0] * grid[1]
    if names is None:
        if num_tokens is None:
            raise ValueError(f"cannot tell the prefix tokens of {type(model).__name__}: pass prefix_names")
        extra = num_tokens - patches
        names = ("[CLS]",) if extra == 1 else tuple(f"[P{i}]" for i in range(max(extra, 0)))
    layout = PatchLayout(grid, size, tuple(str(n) for n in names))
    if num_tokens is not None and num_tokens != layout.num_tokens:
        raise ValueError(
            f"{type(model).__name__} attends over {num_tokens} tokens, but a {height}x{width} input in "
            f"{size[0]}x{size[1]} patches gives {grid[0]}x{grid[1]} = {patches} patches plus {layout.prefix_tokens} "
            f"prefix token(s) {list(layout.prefix_names)} = {layout.num_tokens}; pass patch_size / prefix_names "
            "to ImageProbe if the model is of another kind"
        )
    return layout


# ---------------------------------------------------------------------------------------------
# Images


def to_pil(image):
    """A PIL RGB image from a PIL image, a path, or an array ([H, W], [H, W, 1|3|4] or [3, H, W];
    uint8, or floats in [0, 1])."""
    from PIL import Image

    if isinstance(image, (str, pathlib.Path)):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels first
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array must be [H, W], [H, W, 3|4] or [3, H, W], got shape {list(array.shape)}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"an image array must hold numbers, got {array.dtype}")
        scale = 255.0 if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def pixel_values_of(processor, image):
    """float32 [3, H, W]: `image` (PIL) as `processor` prepares it for the model."""
    import torch

    out = processor(images=[image], return_tensors="pt") if _is_hf_processor(processor) else processor(image)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["pixel_values"]
    out = torch.as_tensor(out)
    if out.ndim == 4 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 3:
        raise ValueError(f"the processor made pixel values of shape {list(out.shape)}, expected [channels, H, W]")
    return out.to(torch.float32)


def _is_hf_processor(processor):
    return hasattr(processor, "preprocess") or type(processor).__module__.startswith("transformers")


def seen_image(processor, pixel_values, original):
    """The model's input as a PIL RGB image: the pixel values de-normalised with the processor's
    mean, std and rescale factor, or (a processor without them) the original resized to the input."""
    from PIL import Image

    height, width = pixel_values.shape[-2:]
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is None or std is None or pixel_values.shape[0] not in (1, 3):
        return original.resize((width, height), Image.Resampling.BICUBIC)
    x = pixel_values.detach().cpu().double().numpy()
    if getattr(processor, "do_normalize", True):
        x = x * np.asarray(std, dtype=np.float64).reshape(-1, 1, 1) + np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
    if getattr(processor, "do_rescale", True):
        x = x / float(getattr(processor, "rescale_factor", 1 / 255))
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).convert("RGB")


def image_png(picture, layout, max_side=MAX_IMAGE_SIDE):
    """PNG bytes of the part of `picture` (the model's input) the patches cover, long side <= max_side."""
    from PIL import Image

    covered = picture.crop((0, 0, layout.grid[1] * layout.patch_size[1], layout.grid[0] * layout.patch_size[0]))
    width, height = covered.size
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        covered = covered.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    covered.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Metrics (pure, vectorised; attention [L, H, N, N] per image, tokens laid out by a PatchLayout)


def pixel_distance_sums(attention, layout):
    """(Σ a_ij·‖c_i − c_j‖, Σ a_ij) per layer and head, float64 [L, H] each, over patch queries i
    and patch keys j (prefix tokens left out; c = patch centres in input pixels)."""
    import torch

    a = torch.as_tensor(attention)
    p = layout.prefix_tokens
    centres = torch.as_tensor(layout.centres(), device=a.device)
    distance = torch.cdist(centres, centres)  # [M, M] pixels
    patches = a[..., p:, p:].to(torch.float64)
    return torch.einsum("lhij,ij->lh", patches, distance), patches.sum((-2, -1))


def pixel_distance(attention, layout):
    """The mean attention distance in input pixels per layer and head, float32 [L, H] (Dosovitskiy
    et al. 2021, fig. 7): Σ a_ij·‖c_i − c_j‖ / Σ a_ij over patch queries and patch keys."""
    numerator, mass = pixel_distance_sums(attention, layout)
    return _ratio(numerator, mass)


def prefix_attention_sums(attention, layout):
    """(attention patch queries pay to prefix tokens, all attention they pay), float64 [L, H] each."""
    import torch

    a = torch.as_tensor(attention)
    p = layout.prefix_tokens
    queries = a[..., p:, :].to(torch.float64)
    return queries[..., :p].sum((-2, -1)), queries.sum((-2, -1))


def prefix_attention(attention, layout):
    """Share of the patch queries' attention that goes to the prefix tokens, float32 [L, H]."""
    return _ratio(*prefix_attention_sums(attention, layout))


def _ratio(numerator, denominator):
    import torch

    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), torch.nan).to(torch.float32).cpu().numpy()


def row_sums(attention):
    """Per layer and head, float64 [L, H] each: Σ over queries of the row entropy −Σ p log p
    (natural log, nothing left out), Σ over queries of the row's largest weight, and the query count."""
    import torch

    a = torch.as_tensor(attention).to(torch.float64)
    entropy = -(a * torch.log(a.clamp_min(torch.finfo(torch.float64).tiny))).sum(-1).sum(-1)
    return entropy, a.amax(-1).sum(-1), torch.full(a.shape[:2], float(a.shape[-2]), dtype=torch.float64)


def image_metrics(attentions, layouts):
    """The metrics of a set of images ({name: float32 [L, H]}): ratios of sums over all images.

    pixel_distance; with prefix tokens, prefix_attention (the image form of null_attention: every
    prefix token counts as a sink); entropy (the paper's rule: the first token left out and rows renormalised
    when it is a prefix token, every token counted when there is none); attention_entropy and
    max_weight (means over every query of its entropy and of its largest weight: CONTRACTS.md C).
    """
    from tb_attention import metrics

    sums = {"pixel_distance": [0, 0], "prefix_attention": [0, 0], "attention_entropy": [0, 0], "max_weight": [0, 0]}
    for attention, layout in zip(attentions, layouts):
        entropy, largest, queries = row_sums(attention)
        parts = {
            "pixel_distance": pixel_distance_sums(attention, layout),
            "prefix_attention": prefix_attention_sums(attention, layout),
            "attention_entropy": (entropy, queries),
            "max_weight": (largest, queries),
        }
        for name, (numerator, denominator) in parts.items():
            sums[name][0] = sums[name][0] + numerator
            sums[name][1] = sums[name][1] + denominator
    values = {name: _ratio(*pair) for name, pair in sums.items()}
    has_prefix = all(layout.prefix_tokens > 0 for layout in layouts)
    num_layers, num_heads = values["pixel_distance"].shape
    stats = metrics.AttentionStats(num_layers, num_heads, include_first=not has_prefix, variability=False)
    stats.update(list(attentions))
    result = stats.result()
    values["entropy"] = result["entropy"]
    if not has_prefix:
        del values["prefix_attention"]  # SigLIP: no prefix token to attend to
    return values


# ---------------------------------------------------------------------------------------------
# Attention rollout (Abnar & Zuidema 2020): the reference the image view's rollout is tested against


def rollout(attention, head_fusion="mean", discard_ratio=0.0, heads=None):
    """Attention rollout through each layer: float64 [L, N, N], entry l = Â_l ··· Â_0.

    attention [L, H, N, N]. Per layer: the chosen heads (default all) fused by their mean, max or
    min; the floor(discard_ratio · N²) smallest fused weights set to 0 (ties: lower flat index
    first); the residual added as Â = 0.5·A + 0.5·I; rows renormalised to sum to 1. Row i of entry l
    says how much of token i's representation after layer l flows from each input token.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attention must be [layers, heads, N, N], got shape {list(a.shape)}")
    if heads is not None:
        a = a[:, list(heads)]
    fused = getattr(np, head_fusion)(a, axis=1)  # [L, N, N]
    n = a.shape[-1]
    discard = math.floor(discard_ratio * (n * n))
    identity = np.eye(n)
    joint, out = identity, []
    for layer in fused:
        layer = layer.copy()
        if discard:
            flat = layer.reshape(-1)
            flat[np.argsort(flat, kind="stable")[:discard]] = 0.0
        step = 0.5 * layer + 0.5 * identity
        step /= step.sum(-1, keepdims=True)
        joint = step @ joint
        out.append(joint)
    return np.stack(out)


def rollout_fixture(seed=0, layers=3, heads=4, grid=(3, 3), prefix=1):
    """Input attention and expected rollouts for a few settings (the frontend's rollout test)."""
    rng = np.random.default_rng(seed)
    n = prefix + grid[0] * grid[1]
    scores = rng.normal(size=(layers, heads, n, n)) * 2.0
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    # float32 values, so that the JSON numbers are exactly what both sides compute from.
    attention = (weights / weights.sum(-1, keepdims=True)).astype(np.float32).astype(np.float64)
    settings = [
        {"head_fusion": "mean", "discard_ratio": 0.0, "heads": None},
        {"head_fusion": "max", "discard_ratio": 0.0, "heads": None},
        {"head_fusion": "min", "discard_ratio": 0.0, "heads": None},
        {"head_fusion": "mean", "discard_ratio": 0.5, "heads": None},
        {"head_fusion": "max", "discard_ratio": 0.9, "heads": None},
        {"head_fusion": "mean", "discard_ratio": 0.0, "heads": [0, 2]},
    ]
    cases = []
    for setting in settings:
        expected = rollout(attention, setting["head_fusion"], setting["discard_ratio"], setting["heads"])
        cases.append({**setting, "discarded": math.floor(setting["discard_ratio"] * (n * n)), "rollout": expected.tolist()})
    return {
        "definition": " ".join(rollout.__doc__.split()),
        "grid": list(grid),
        "prefix_tokens": prefix,
        "shape": [layers, heads, n, n],
        "attention": attention.tolist(),
        "cases": cases,
    }


# ---------------------------------------------------------------------------------------------
# Capture


def _tower(model):
    """The module to run: the model inside DDP / torch.compile, a CLIP/SigLIP model's vision tower."""
    from tb_attention import intercept

    model = modules.unwrap(model)
    config = getattr(model, "config", None)
    if getattr(config, "vision_config", None) is not None and hasattr(model, "vision_model"):
        return model.vision_model
    return model


def _is_hf(model):
    try:
        import transformers
    except ImportError:
        return False
    return isinstance(getattr(model, "config", None), transformers.PreTrainedConfig)


def capture_images(model, pixel_values):
    """One forward over a batch of images: (per layer float32 CPU [B, H, N, N], per layer its module name).

    Every self-attention computation of the forward is seen through `tb_attention.intercept`
    (Hugging Face AttentionInterface under any implementation, bare F.scaled_dot_product_attention
    calls, nn.MultiheadAttention). The caller sets eval mode and no_grad.
    """
    import torch

    from tb_attention import capture, intercept

    device, dtype = capture._device_of(model), next((p.dtype for p in model.parameters()), torch.float32)
    pixels = pixel_values.to(device, dtype if dtype.is_floating_point else torch.float32)
    layers, names = [], []

    def listener(call):
        if not call.cross:
            layers.append(call.weights().to("cpu", torch.float32))
            names.append(call.name)

    with intercept.intercepting(model, listener):
        if _is_hf(model):
            model(pixel_values=pixels)
        else:
            model(pixels)
    if not layers:
        raise capture.CaptureError(f"{type(model).__name__} computed no attention that could be intercepted")
    return layers, names


# ---------------------------------------------------------------------------------------------
# The probe


class ImageProbe:
    """Images preprocessed once; `probe.log(writer, model, step)` logs their attention at `step`.

    processor: the model's image processor (e.g. `AutoImageProcessor.from_pretrained(...)`), or any
        callable mapping a PIL image to pixel values [3, H, W] (then the stored image is the original
        resized to the input, as de-normalising needs the processor's mean and std).
    images: PIL images, arrays ([H, W], [H, W, 3], [3, H, W]; uint8 or floats in [0, 1]) or paths.
    name: the tag of the attention; metrics go to `<name>/<metric>`.
    metrics: compute and log pixel_distance, prefix_attention, entropy, attention_entropy and max_weight.
    patch_size / prefix_names: override what the model's config says (models of other kinds).
    batch_size: images per forward pass.
    max_image_side: the stored PNG's long side at most (pixels).
    max_dense_tokens: longer sequences keep only each row's top weights (see `summary.write_examples`).
    """

    def __init__(
        self,
        processor,
        images,
        name=defaults.PROBE_TAG,
        *,
        metrics=True,
        patch_size=None,
        prefix_names=None,
        batch_size=8,
        max_image_side=MAX_IMAGE_SIDE,
        max_dense_tokens=metadata.DEFAULT_MAX_DENSE_TOKENS,
        all_ranks=False,
    ):
        if isinstance(images, (str, pathlib.Path)) or hasattr(images, "convert") or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object
        ):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("an image probe needs at least one image")
        if "/" in name and name.split("/", 1)[1] in metadata.METRICS:
            raise ValueError(f"probe name {name!r} would collide with its metric tags")
        # A CLIPProcessor-style bundle: its image processor knows the mean and std to undo.
        processor = getattr(processor, "image_processor", None) or processor
        self.processor = processor
        self.name = name
        self.compute_metrics = metrics
        self.patch_size = patch_size
        self.prefix_names = prefix_names
        self.batch_size = int(batch_size)
        self.max_image_side = int(max_image_side)
        self.max_dense_tokens = max_dense_tokens
        self.all_ranks = all_ranks
        self.pixel_values, self.pictures = [], []
        for i, image in enumerate(images):
            try:
                original = to_pil(image)
                pixels = pixel_values_of(processor, original)
            except (OSError, TypeError, ValueError) as e:
                raise type(e)(f"probe image {i}: {e}") from None
            self.pixel_values.append(pixels)
            self.pictures.append(seen_image(processor, pixels, original))
        self._pngs = {}  # (image, layout) -> PNG bytes, made once

    def __len__(self):
        return len(self.pixel_values)

    def capture(self, model):
        """Per image: (attention float32 [L, H, N, N], its PatchLayout, layer names or None)."""
        import torch

        from tb_attention import capture

        tower = _tower(model)
        _check_not_windowed(tower, vision_config(tower))  # before a forward whose shapes would only confuse
        results = []
        with capture._eval_mode(tower), torch.no_grad():
            start = 0
            while start < len(self.pixel_values):
                # Consecutive images of one size go through together.
                shape, stop = self.pixel_values[start].shape, start + 1
                while stop < len(self.pixel_values) and stop - start < self.batch_size and self.pixel_values[stop].shape == shape:
                    stop += 1
                layers, names = capture_images(tower, torch.stack(self.pixel_values[start:stop]))
                shapes = {tuple(a.shape) for a in layers}
                if len(shapes) != 1:
                    raise capture.CaptureError(
                        f"{type(tower).__name__}: attention layers have shapes {sorted(shapes)}; ImageProbe needs "
                        "one [batch, heads, N, N] self-attention per layer over the same tokens"
                    )
                attention = torch.stack(layers, 1)  # [B, L, H, N, N]
                layout = patch_layout(
                    tower, tuple(shape[-2:]), attention.shape[-1], patch_size=self.patch_size, prefix_names=self.prefix_names
                )
                results += [(attention[b].clone(), layout, names) for b in range(stop - start)]
                start = stop
        return results

    def png(self, index, layout):
        """The stored PNG of image `index` under `layout` (made once)."""
        key = (index, layout)
        if key not in self._pngs:
            self._pngs[key] = image_png(self.pictures[index], layout, self.max_image_side)
        return self._pngs[key]

    def examples(self, captured):
        """The v2 examples (CONTRACTS.md B) of captured images."""
        examples = []
        for index, (attention, layout, names) in enumerate(captured):
            group = {"name": "self", "attention": attention, "causal": False}
            if names:
                group["layer_names"] = list(names)
            examples.append(
                {
                    "tokens": layout.token_names(),
                    "groups": [group],
                    "image": layout.image_entry(self.png(index, layout)),
                }
            )
        return examples

    def log(self, writer, model, step, *, walltime=None):
        """Captures and writes the images' attention, with their image and patch grid, and metrics.

        The model runs in eval mode without gradients; its mode is restored afterwards, so this
        can be called from inside a training loop. Returns the metrics ({} on a rank that does
        not write).
        """
        if not summary.is_writing_rank(self.all_ranks):
            return {}
        captured = self.capture(model)
        summary.write_examples(
            writer, self.name, self.examples(captured), step, walltime=walltime, max_dense_tokens=self.max_dense_tokens
        )
        values = {}
        if self.compute_metrics:
            values = image_metrics([a for a, _, _ in captured], [layout for _, layout, _ in captured])
            summary.metrics(writer, self.name, values, step, all_ranks=True, walltime=walltime)
        return values
