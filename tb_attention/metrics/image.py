"""Image metrics: pure, vectorised; attention [L, H, N, N] per image, tokens laid out by a PatchLayout."""


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
    max_weight (means over every query of its entropy and of its largest weight: http_api.md, "Metric definitions").
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


# Vision-language models: images inside a decoder's sequence (http_api.md, "images"). An image is given
# as (positions, centres): its tokens' indices in the sequence, int64 [M], and each token's cell centre
# (y, x) in the pixels of the frame the model saw, float64 [M, 2].


def sequence_pixel_distance_sums(attention, images):
    """(Σ a_ij·‖c_i − c_j‖, Σ a_ij) per layer and head, float64 [L, H] each, over queries i and keys j
    of the same image, summed over the images. attention [L, H, N, N]."""
    import torch

    a = torch.as_tensor(attention)
    numerator = torch.zeros(a.shape[:2], dtype=torch.float64, device=a.device)
    mass = torch.zeros_like(numerator)
    for positions, centres in images:
        index = torch.as_tensor(positions, device=a.device)
        c = torch.as_tensor(centres, dtype=torch.float64, device=a.device)
        block = a[..., index[:, None], index[None, :]].to(torch.float64)
        numerator += torch.einsum("lhij,ij->lh", block, torch.cdist(c, c))
        mass += block.sum((-2, -1))
    return numerator, mass


def image_share_sums(attention, images):
    """(attention text queries pay to image tokens, all attention they pay), float64 [L, H] each. Text
    queries: tokens of no image after the first image token (those before cannot see one in a
    causal model)."""
    import torch

    a = torch.as_tensor(attention)
    n = a.shape[-1]
    image = torch.zeros(n, dtype=torch.bool, device=a.device)
    for positions, _ in images:
        image[torch.as_tensor(positions, device=a.device)] = True
    first = int(image.nonzero()[0]) if bool(image.any()) else n
    text = ~image
    text[: first + 1] = False
    rows = a[..., text, :].to(torch.float64)
    return rows[..., image].sum((-2, -1)), rows.sum((-2, -1))


def sequence_image_metrics(attentions, images):
    """image_share and pixel_distance ({name: float32 [L, H]}) of vision-language inputs, ratios of sums
    over all of them: attentions, one [L, H, N, N] per input; images, per input its [(positions, centres)]."""
    sums = {"image_share": [0, 0], "pixel_distance": [0, 0]}
    for attention, per_image in zip(attentions, images):
        for name, (numerator, denominator) in (("image_share", image_share_sums(attention, per_image)),
                                               ("pixel_distance", sequence_pixel_distance_sums(attention, per_image))):
            sums[name][0] = sums[name][0] + numerator
            sums[name][1] = sums[name][1] + denominator
    return {name: _ratio(*pair) for name, pair in sums.items()}
