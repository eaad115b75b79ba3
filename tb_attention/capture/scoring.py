"""The scoring rules of one input's attention that q·k does not give: its chunks, and its additive bias
as a table per key or per distance (schema.SCORING_RULES), each checked against what the model did."""

# The neuron view recomputes a layer's weights from the stored q/k and these rules (http_api.md, "GET
# /qk"), so a probe with with_qk stores them only where they describe the model's mask and bias exactly,
# and raises otherwise: vectors whose softmax is not the stored weights would be silently wrong.

import torch

from tb_attention.capture.errors import CaptureError

# Logit units: how far a bias entry may be from its table's value (rounding in how a model computes it;
# ALiBi's and T5's tables are exact). A logit off by 1e-4 moves a weight by less than 1e-4.
BIAS_TOLERANCE = 1e-4


def input_rules(bias, keep, *, num_heads, causal, sliding_window=None, where="this layer"):
    """{sliding_window, attention_chunk, bidirectional_spans, key_bias, relative_bias} of one input's
    attention call (None where unused).

    bias: float [H or 1, Nq, Nk] added to the logits besides the mask, or None; keep: bool [H or 1,
    Nq, Nk] (True = the query may attend to the key), or None for no mask; both cropped to the input's
    own queries and keys (positions 0..Nq-1 and 0..Nk-1). causal: as the group is stored;
    sliding_window: the layer's, when the model named it (else one the mask has is found). Raises
    CaptureError, naming `where`, when the rules cannot describe the mask or the bias.
    """
    window, chunk, spans = _mask_rules(keep, causal, sliding_window, where)
    key_bias, relative_bias = _bias_tables(bias, keep, num_heads, where)
    return {"sliding_window": window, "attention_chunk": chunk, "bidirectional_spans": spans, "key_bias": key_bias,
            "relative_bias": relative_bias}


def layer_rules(layers, *, num_heads, causal, model):
    """`input_rules` of every layer of one input, from (bias, keep, sliding_window, layer name) per layer
    (any iterable: a generator builds one layer's tensors at a time): {rule: one value per layer} of the
    rules some layer uses."""
    found = [input_rules(bias, keep, num_heads=num_heads, causal=causal, sliding_window=window, where=f"model {model}, {name}")
             for bias, keep, window, name in layers]
    rules = {rule: [layer[rule] for layer in found] for rule in (found[0] if found else {})}
    return {rule: values for rule, values in rules.items() if any(v is not None for v in values)}


def crop(t, b, n, m):
    """Input b's [H or 1, n, m] of a tensor broadcastable to [B, H, Nq, Nk] (None stays None)."""
    if t is None:
        return None
    t = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
    return t[min(b, t.shape[0] - 1), :, :n, :m].expand(-1, n, m)


def rule_mask(nq, nk, *, causal, sliding_window=None, attention_chunk=None, bidirectional_spans=None, device=None):
    """bool [Nq, Nk]: the keys each query may attend to under the rules (http_api.md). With
    bidirectional_spans ([[a, b], ...], a group stored not causal) the mask is causal, window and chunk
    included, but for the keys of a query's own span (transformers' block overlay, or-ed to the mask)."""
    i = torch.arange(nq, device=device)[:, None]
    j = torch.arange(nk, device=device)[None, :]
    visible = torch.ones(nq, nk, dtype=torch.bool, device=device)
    if causal or bidirectional_spans is not None:
        visible &= j <= i
    if sliding_window:
        visible &= (i - j).abs() < sliding_window
    if attention_chunk:
        visible &= torch.div(i, attention_chunk, rounding_mode="floor") == torch.div(j, attention_chunk, rounding_mode="floor")
    for a, b in bidirectional_spans or ():
        visible |= (a <= i) & (i < b) & (a <= j) & (j < b)
    return visible


def _found_spans(keep):
    """[[a, b], ...]: the runs of queries a..b-1 that see keys past themselves, each run the span up to the
    last key its first query sees (a causal mask made bidirectional within spans: PaliGemma's prefix)."""
    seen = keep.reshape(-1, *keep.shape[-2:]).any(dim=0)
    n = seen.shape[0]
    last = torch.where(seen, torch.arange(seen.shape[1], device=seen.device)[None, :], -1).amax(dim=1).tolist()
    spans, i = [], 0
    while i < n:
        if last[i] > i:
            spans.append([i, min(last[i] + 1, n)])
            i = spans[-1][1]
        else:
            i += 1
    return spans


def _mask_rules(keep, causal, window, where):
    """(sliding_window, attention_chunk, bidirectional_spans) that, with the causal mask, hide exactly the
    keys `keep` hides: the window as given, or the one the mask has (a plain module's window mask); a group
    stored not causal may be causal but within spans (a prefix-LM mask); CaptureError when none do."""
    if keep is None:
        if causal or window:
            raise CaptureError(f"{where}: the layer is {'causal' if causal else 'windowed'} but was given no mask")
        return None, None, None
    keep = keep.bool()
    nq, nk = keep.shape[-2:]

    def explains(**rules):
        return bool((keep == rule_mask(nq, nk, causal=causal, device=keep.device, **rules)).all())

    if explains(sliding_window=window):
        return window, None, None
    if window is None:  # the widest row: w keys of a causal window, 2w - 1 of a bidirectional one
        widest = int(keep.sum(dim=-1).max())
        found = widest if causal else (widest + 1) // 2
        if 0 < found < max(nq, nk) and explains(sliding_window=found):
            return found, None, None
    # A chunk starts at the first query past 0 whose first visible key is itself.
    first = keep.int().argmax(dim=-1)  # [H or 1, Nq]: the first visible key of each query
    starts = (first == torch.arange(nq, device=keep.device)) & keep.any(dim=-1)
    starts[..., 0] = False
    found = starts.any(dim=0).nonzero()
    if len(found) and explains(sliding_window=window, attention_chunk=int(found[0])):
        return window, int(found[0]), None
    if not causal and nq == nk:  # causal but within spans, where it is bidirectional (PaliGemma, Gemma 3's images)
        spans = _found_spans(keep)
        if explains(sliding_window=window, bidirectional_spans=spans):
            return window, None, spans
    rules = ("a causal mask" if causal else "all keys, a causal mask bidirectional within spans") + (
        f", a sliding window of {window}" if window else "")
    raise CaptureError(
        f"{where}: its attention mask is not {rules} or chunks (the rules the neuron view recomputes, "
        "http_api.md), so q/k cannot be stored for it: log without with_qk=True"
    )


def _bias_tables(bias, keep, num_heads, where):
    """(key_bias [H, Nk], relative_bias [H, Nq + Nk - 1]) float32 on the host, each None where unused."""
    if bias is None:
        return None, None
    keep = torch.ones(1, 1, 1, dtype=torch.bool, device=bias.device) if keep is None else keep.bool()
    shape = torch.broadcast_shapes(bias.shape, keep.shape)
    bias, visible = bias.float().expand(shape), keep.expand(shape)
    if not bool(visible.any()):
        return None, None
    tolerance = BIAS_TOLERANCE + 1e-6 * float(bias[visible].abs().max())
    # The bias as a function of the key j alone (ALiBi as BLOOM and Falcon add it)...
    table, fits = _table(bias, visible, tolerance, lambda x: x)
    if fits:
        seen = table[~torch.isnan(table)]
        if len(seen) == 0 or float(seen.max() - seen.min()) <= tolerance:
            return None, None  # a constant: the softmax ignores it
        return _per_head(table, num_heads), None
    # ... or of the distance j - i (T5).
    table, fits = _table(bias, visible, tolerance, _by_distance)
    if fits:
        return None, _per_head(table, num_heads)
    raise CaptureError(
        f"{where}: it adds a bias to its logits that depends on more than the key's position or the distance "
        "j - i between query and key (the biases the neuron view recomputes, http_api.md), so q/k cannot be "
        "stored for it: log without with_qk=True"
    )


def _table(bias, visible, tolerance, columns):
    """(table [H or 1, n] with NaN where no visible cell falls, whether every visible cell of `bias` equals
    its column's entry within `tolerance`), the columns of [H, Nq, Nk] being `columns(x)`'s (masked cells -inf)."""
    high = columns(torch.where(visible, bias, -torch.inf)).amax(dim=1)
    low = -columns(torch.where(visible, -bias, -torch.inf)).amax(dim=1)
    seen = torch.isfinite(high)
    fits = bool(((high - low)[seen] <= tolerance).all())
    return torch.where(seen, (high + low) / 2, torch.nan), fits


def _by_distance(x):
    """[H, Nq, Nk] -> [H, Nq, Nq + Nk - 1] whose column j - i + Nq - 1 holds x[:, i, j] (-inf elsewhere): the
    rows flipped and each shifted by its index, by padding and reading the memory with a shorter row."""
    h, nq, nk = x.shape
    padded = torch.nn.functional.pad(x.flip(1), (0, nq), value=-torch.inf).reshape(h, nq * (nk + nq))
    return padded[:, : nq * (nk + nq - 1)].reshape(h, nq, nk + nq - 1)


def _per_head(table, num_heads):
    """float32 [H, n] on the host, 0 at the entries no visible cell uses."""
    return table.nan_to_num(0.0).expand(num_heads, -1).cpu().clone()
