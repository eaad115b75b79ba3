"""Vision transformers: attention over image patches, logged with the image the model saw."""

# An image example is an ordinary attention example whose tokens are the prefix tokens (CLS,
# distillation, registers) followed by the patches in row-major order, named by position
# (`r3c5`), plus `image`: the model's input as a small PNG, the patch grid, the patch size in input
# pixels and the prefix tokens (http_api.md, `/examples`). The grid comes from the processed input and the
# model's patch size; the prefix from the model's kind, checked against the captured token count.
#
# The PNG is the processed input de-normalised (so a centre crop shows as the model saw it), cropped
# to the part the patches cover (a 225-pixel side with 14-pixel patches leaves one pixel unseen), at
# most MAX_IMAGE_SIDE pixels on its long side: the grid maps onto it by simple proportion.

from tb_attention.metrics.image import (
    image_metrics,
    pixel_distance,
    pixel_distance_sums,
    prefix_attention,
    prefix_attention_sums,
    row_sums,
)
from tb_attention.metrics.rollout import HEAD_FUSIONS, rollout, rollout_fixture
from tb_attention.probes.vision.image import MAX_IMAGE_SIDE, image_png, pixel_values_of, seen_image, to_pil
from tb_attention.probes.vision.layout import PatchLayout, WindowedAttentionError, patch_layout, vision_config
from tb_attention.probes.vision.probe import ImageProbe, capture_images

__all__ = [
    "HEAD_FUSIONS",
    "MAX_IMAGE_SIDE",
    "ImageProbe",
    "PatchLayout",
    "WindowedAttentionError",
    "capture_images",
    "image_metrics",
    "image_png",
    "patch_layout",
    "pixel_distance",
    "pixel_distance_sums",
    "pixel_values_of",
    "prefix_attention",
    "prefix_attention_sums",
    "rollout",
    "rollout_fixture",
    "row_sums",
    "seen_image",
    "to_pil",
    "vision_config",
]
