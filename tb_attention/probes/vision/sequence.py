"""Images inside a decoder's sequence: each image's tokens mapped onto its patch grid, and the frame the model saw."""

# A vision-language model's processor puts each image into the text as a run of image tokens (LLaVA,
# PaliGemma: one per patch; Qwen2-VL: one per 2 x 2 merged patches, at the image's own resolution;
# Idefics3 / SmolVLM: a run per tile and one for the downscaled whole). Where each run sits comes from
# the processor's own outputs (the image token in input_ids, pixel_values, image_grid_thw, the tiles)
# and the model's config (patch size, merge size, scale factor); the counts are checked against the
# image tokens in the sequence, so a family read wrongly is an error rather than a misplaced heat.
# http_api.md, "images", defines the stored form: a frame (the picture the model saw, in its pixels)
# and pieces (a span of tokens laid row-major over a box of the frame).

import dataclasses

import numpy as np

from tb_attention.probes.vision.image import seen_image

FAMILIES = ("llava", "paligemma", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm")


@dataclasses.dataclass(frozen=True)
class Piece:
    """Tokens [start, stop) of the sequence: the cells of a rows x cols grid, row-major, over `box`."""

    span: tuple  # (start, stop)
    grid: tuple  # (rows, cols)
    box: tuple  # (top, left, bottom, right) in frame pixels
    name: str | None = None

    def centres(self):
        """float64 [tokens, 2]: each token's cell centre (y, x) in frame pixels, in sequence order."""
        rows, cols = self.grid
        top, left, bottom, right = self.box
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        y = top + (r.reshape(-1) + 0.5) * (bottom - top) / rows
        x = left + (c.reshape(-1) + 0.5) * (right - left) / cols
        return np.stack([y, x], 1).astype(np.float64)

    def entry(self):
        out = {"span": [int(v) for v in self.span], "grid": [int(v) for v in self.grid],
               "box": [float(v) if float(v) != int(v) else int(v) for v in self.box]}
        return {**out, "name": self.name} if self.name else out


@dataclasses.dataclass
class SequenceImage:
    """One image of an input: the frame the model saw (PIL) and the pieces of its tokens."""

    frame: object
    pieces: list

    def positions(self):
        return np.concatenate([np.arange(*p.span) for p in self.pieces])

    def centres(self):
        return np.concatenate([p.centres() for p in self.pieces])

    def entry(self, png):
        """The writer's form of one entry of an example's `images` (http_api.md)."""
        height, width = self.frame.size[1], self.frame.size[0]
        return {"png": png, "size": [height, width], "pieces": [p.entry() for p in self.pieces]}


def family_of(model_or_config):
    config = getattr(model_or_config, "config", model_or_config)
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        raise TypeError(
            f"{type(model_or_config).__name__} (model_type {family!r}) is not a vision-language family tb-attention "
            f"knows how its processor lays images into the sequence; known: {', '.join(FAMILIES)}"
        )
    return family


def image_token_id(config):
    value = getattr(config, "image_token_id", None)
    if value is None:
        value = getattr(config, "image_token_index", None)
    if value is None:
        raise TypeError(f"{type(config).__name__} names no image token (image_token_id)")
    return int(value)


def _pair(value):
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


def _whole(span_start, grid, size, name=None):
    """One piece of grid rows x cols covering a frame of size (height, width)."""
    return Piece((span_start, span_start + grid[0] * grid[1]), grid, (0, 0, size[0], size[1]), name)


def _qwen_frame(flat, t, h, w, merge, patch, temporal):
    """[C, h·patch, w·patch]: Qwen2-VL's flattened patches (blocks of merge x merge, temporal copies) put back."""
    channels = flat.shape[1] // (temporal * patch * patch)
    x = flat.reshape(t, h // merge, w // merge, merge, merge, channels, temporal, patch, patch)[0, ..., 0, :, :]
    return x.permute(4, 0, 2, 5, 1, 3, 6).reshape(channels, h * patch, w * patch)


def _layouts(family, config, processor, batch, originals):
    """Per image: (frame as [C, H, W] pixel values, [(piece grid, box or None for the whole frame, name)])."""
    import torch

    vision = config.vision_config
    pixels = batch["pixel_values"]
    if family in ("llava", "paligemma"):
        if family == "llava" and getattr(config, "vision_feature_select_strategy", "default") != "default":
            raise ValueError("LLaVA with vision_feature_select_strategy='full' (a CLS token among the image tokens) is "
                             "not supported: its image tokens are no patch grid")
        patch = _pair(vision.patch_size)
        if pixels.ndim != 4 or pixels.shape[0] != len(originals):
            raise ValueError(f"the processor made pixel_values of shape {list(pixels.shape)} for {len(originals)} images")
        return [(p, [((p.shape[-2] // patch[0], p.shape[-1] // patch[1]), None, None)]) for p in pixels]
    if family in ("qwen2_vl", "qwen2_5_vl"):
        merge, patch = int(vision.spatial_merge_size), int(vision.patch_size)
        temporal = int(getattr(vision, "temporal_patch_size", 1))
        grids = batch["image_grid_thw"].tolist()
        out, start = [], 0
        for t, h, w in grids:
            if t != 1:
                raise ValueError(f"an image of {t} temporal patches (a video?) is not a single frame")
            out.append((_qwen_frame(pixels[start : start + t * h * w], t, h, w, merge, patch, temporal),
                        [((h // merge, w // merge), None, None)]))
            start += t * h * w
        return out
    # Idefics3 / SmolVLM: per image, rows x cols tiles of max_image_size pixels, then the whole image downscaled.
    rows_cols = processor.image_processor(images=[list(originals)], return_row_col_info=True)
    side = int(vision.image_size) // int(vision.patch_size) // int(config.scale_factor)
    out = []
    tiles = pixels[0]
    real = tiles.flatten(1).abs().sum(1) > 0
    tiles = tiles[real]
    index = 0
    for rows, cols in zip(rows_cols["rows"][0], rows_cols["cols"][0]):
        if rows == 0:  # not split: one tile, the image itself
            out.append((tiles[index], [((side, side), None, None)]))
            index += 1
            continue
        size = tiles.shape[-1]
        frame = torch.zeros(tiles.shape[1], rows * size, cols * size, dtype=tiles.dtype)
        layout = []
        for r in range(rows):
            for c in range(cols):
                frame[:, r * size : (r + 1) * size, c * size : (c + 1) * size] = tiles[index]
                layout.append(((side, side), (r * size, c * size, (r + 1) * size, (c + 1) * size), f"tile r{r + 1}c{c + 1}"))
                index += 1
        layout.append(((side, side), None, "global"))
        index += 1
        out.append((frame, layout))
    return out


def sequence_images(model, processor, batch, originals):
    """The SequenceImages of one processed input (batch: the processor's outputs, batch of 1; originals: its
    images as PIL, in order), checked against the image tokens of its input_ids."""
    config = model.config
    family = family_of(model)
    ids = batch["input_ids"][0].tolist()
    token = image_token_id(config)
    where = [i for i, t in enumerate(ids) if t == token]
    image_processor = getattr(processor, "image_processor", processor)
    images, cursor = [], 0
    for (pixels, layout), original in zip(_layouts(family, config, processor, batch, originals), originals):
        frame = seen_image(image_processor, pixels.float(), original)
        size = (frame.size[1], frame.size[0])
        pieces = []
        for grid, box, name in layout:
            count = grid[0] * grid[1]
            run = where[cursor : cursor + count]
            if len(run) != count or run[-1] - run[0] != count - 1:
                raise ValueError(
                    f"{type(model).__name__}: image {len(images)} should be {count} consecutive image tokens here (a "
                    f"{grid[0]} x {grid[1]} grid), but the input's image tokens are laid out otherwise; tb-attention "
                    "cannot place them on the image"
                )
            piece = _whole(run[0], grid, size, name) if box is None else Piece((run[0], run[0] + count), grid, box, name)
            pieces.append(piece)
            cursor += count
        images.append(SequenceImage(frame, pieces))
    if len(images) != len(originals) or cursor != len(where):
        raise ValueError(f"{type(model).__name__}: {len(where)} image tokens in the input, {cursor} placed on "
                         f"{len(originals)} image(s); tb-attention cannot map them")
    return images
