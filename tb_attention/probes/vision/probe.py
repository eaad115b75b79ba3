"""ImageProbe: images preprocessed once, their attention captured and logged with the image and patch grid."""

import pathlib

import numpy as np

from tb_attention.metrics.image import image_metrics
from tb_attention.probes.packed import ToHtml
from tb_attention.probes.vision.image import MAX_IMAGE_SIDE, image_png, pixel_values_of, seen_image, to_pil
from tb_attention.probes.vision.layout import check_not_windowed, patch_layout, vision_config
from tb_attention.runtime import defaults, devices, modules
from tb_attention.storage import codecs, schema, summary


def _tower(model):
    """The module to run: the model inside DDP / torch.compile, a CLIP/SigLIP model's vision tower."""
    model = modules.unwrap(model)
    config = getattr(model, "config", None)
    if getattr(config, "vision_config", None) is not None and hasattr(model, "vision_model"):
        return model.vision_model
    return model


_VISION_TOWERS = ("vision_tower", "vision_model", "visual")  # a vision-language model's vision encoder, by name


def _refuse_vision_language(model):
    """A TypeError saying what to do, for a model that reads text and images together (LLaVA, PaliGemma,
    Qwen2-VL): fed pixel_values alone it fails inside transformers, or computes without its text."""
    import inspect

    config = getattr(model, "config", None)
    if getattr(config, "text_config", None) is None or getattr(config, "vision_config", None) is None:
        return
    towers = [(name, module) for name, module in model.named_modules()
              if name.split(".")[-1] in _VISION_TOWERS and name.count(".") <= 1]
    advice = ""
    if towers:
        name, tower = towers[0]
        try:
            takes_images = "pixel_values" in inspect.signature(tower.forward).parameters
        except (TypeError, ValueError):
            takes_images = False
        advice = (f" Its vision tower can be probed with ImageProbe: probe.log(writer, model.{name}, step)." if takes_images
                  else f" Its vision tower (model.{name}) takes {type(tower).__name__}'s flattened patches, not images: "
                       "ImageProbe cannot run it.")
    raise TypeError(
        f"{type(model).__name__} is a vision-language model: ImageProbe is for vision encoders (ViT, DINOv2, DeiT, "
        "a CLIP or SigLIP model) and feeds them pixel_values alone, while a vision-language model needs its text and "
        "image together, as its processor makes them: Probe(processor, [(image, text)]) probes the whole model."
        f"{advice}"
    )


def _is_hf(model):
    try:
        import transformers
    except ImportError:
        return False
    return isinstance(getattr(model, "config", None), transformers.PreTrainedConfig)


def capture_images(model, pixel_values):
    """One forward over a batch of images: (per layer float32 CPU [B, H, N, N], per layer its module name).

    Every self-attention computation of the forward is seen through `tb_attention.capture.intercept`
    (Hugging Face AttentionInterface under any implementation, bare F.scaled_dot_product_attention
    calls, nn.MultiheadAttention). The caller sets eval mode and no_grad.
    """
    import torch

    from tb_attention import capture
    from tb_attention.capture import intercept

    device, dtype = devices.device_of(model), next((p.dtype for p in model.parameters()), torch.float32)
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


class ImageProbe(ToHtml):
    """Images preprocessed once; `probe.log(writer, model, step)` logs their attention at `step`.

    model: a vision encoder (ViT, DeiT, DINOv2, CLIP or SigLIP, whose vision tower runs), fed pixel_values
        alone. A vision-language model (LLaVA, PaliGemma, Qwen2-VL) is refused with what to do: its
        vision tower, where it takes images (`model.model.vision_tower`), is a vision encoder.

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

    DASHBOARD_VIEW = "image"

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
        max_dense_tokens=codecs.DEFAULT_MAX_DENSE_TOKENS,
        all_ranks=False,
    ):
        if isinstance(images, (str, pathlib.Path)) or hasattr(images, "convert") or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object
        ):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("an image probe needs at least one image")
        if "/" in name and name.split("/", 1)[1] in schema.METRICS:
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
        _refuse_vision_language(tower)
        check_not_windowed(tower, vision_config(tower))  # before a forward whose shapes would only confuse
        results = []
        with capture.eval_mode(tower), torch.no_grad():
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
        """The v2 examples (http_api.md, `/examples`) of captured images."""
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
