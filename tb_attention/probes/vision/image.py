"""The image the model saw: any input as PIL, its pixel values, de-normalised back, and the stored PNG."""

import io
import pathlib

import numpy as np

MAX_IMAGE_SIDE = 256  # pixels, long side of the stored PNG


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
    covered = picture.crop((0, 0, layout.grid[1] * layout.patch_size[1], layout.grid[0] * layout.patch_size[0]))
    return frame_png(covered, max_side)


def frame_png(covered, max_side=MAX_IMAGE_SIDE):
    """PNG bytes of a PIL image, scaled to at most max_side pixels on its long side."""
    from PIL import Image

    width, height = covered.size
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        covered = covered.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    covered.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
