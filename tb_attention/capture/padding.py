"""Each input's own tokens in a padded batch: left padding and holes moved to the right, and back."""

import typing

import torch

from tb_attention.capture.errors import CaptureError


class Side(typing.NamedTuple):
    """One token sequence of a batch (the source, or an encoder-decoder's target), right-padded."""

    order: torch.Tensor  # [B, N]: kept tokens first, in their order
    lengths: list
    ids: torch.Tensor | None  # [B, N] after reordering


def right_pad(inputs, ids_name, mask_name, prefix, device):
    """Moves each row's kept tokens to the front (left padding or holes -> right padding), for
    every per-token input of this side ([B, N, ...] named with `prefix`); returns the Side."""
    tokens = inputs.get(ids_name)
    if tokens is None:
        tokens = inputs.get(prefix + "inputs_embeds")
    if tokens is None:
        return None
    batch, length = tokens.shape[:2]
    mask = inputs.get(mask_name)
    keep = torch.ones(batch, length, dtype=torch.bool, device=device) if mask is None else mask.bool()
    if keep.shape != (batch, length):
        raise ValueError(f"{mask_name} has shape {tuple(keep.shape)}, the input {(batch, length)}")
    lengths = keep.sum(dim=1)
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    right_padded = torch.arange(length, device=device)[None, :] < lengths[:, None]
    if not torch.equal(keep, right_padded):
        for name, value in inputs.items():
            mine = name.startswith(prefix) if prefix else not name.startswith("decoder_")
            if mine and isinstance(value, torch.Tensor) and tuple(value.shape[:2]) == (batch, length):
                index = order.reshape(batch, length, *([1] * (value.dim() - 2))).expand_as(value)
                inputs[name] = value.gather(1, index)
    ids = inputs.get(ids_name)
    return Side(order.cpu(), lengths.tolist(), None if ids is None else ids.cpu())


def side_of(side, batch, n, what):
    """The Side a group's queries or keys belong to; all-kept when the model was not given it."""
    if side is not None and len(side.order[0]) == n:
        return side
    if side is not None and min(side.lengths) < len(side.order[0]):
        raise CaptureError(
            f"the {what} attention spans {n} tokens but the padded input has {len(side.order[0])}: tb-attention "
            "cannot tell which are padding (a model that adds or drops tokens); capture inputs of one length"
        )
    return Side(torch.arange(n).expand(batch, n), [n] * batch, side.ids if side is not None else None)
