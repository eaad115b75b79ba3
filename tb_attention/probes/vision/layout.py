"""PatchLayout: where each token of a vision transformer's sequence sits on the input image, from the model."""

import dataclasses

import numpy as np

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
        """The `image` field of an example (http_api.md, `/examples`)."""
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


def check_not_windowed(model, config):
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
    check_not_windowed(model, config)
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
