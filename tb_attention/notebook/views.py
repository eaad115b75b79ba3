"""bertviz's `head_view` and `model_view`, on our dashboard: attention you already have, shown in a notebook."""

# The arguments are bertviz's, in its order, so that `from tb_attention.notebook import head_view`
# is the whole switch. The weights become one example in the writer's form (storage/summary.py,
# which checks them), are written to a temporary logdir and packed (probes/packed.py), and the
# output opens on the view asked for.

import operator
import re

from tb_attention.notebook import output
from tb_attention.probes import packed
from tb_attention.storage import summary

RUN, TAG = "notebook", "attention"  # the names the dashboard's panel shows
# bertviz's argument for each attention group of the example, to name it in errors
ARGUMENTS = {"self": "attention", "encoder": "encoder_attention", "decoder": "decoder_attention",
             "cross": "cross_attention"}


def head_view(attention=None, tokens=None, sentence_b_start=None, prettify_tokens=True, layer=None, heads=None,
              encoder_attention=None, decoder_attention=None, cross_attention=None, encoder_tokens=None,
              decoder_tokens=None, include_layers=None, html_action="view", *, display_mode="light",
              height=output.DEFAULT_HEIGHT):
    """The Head view of attention you have: bertviz's `head_view`, with its arguments.

    attention: per layer, [batch (1), heads, N, N] (`model(..., output_attentions=True).attentions`, torch or
        numpy; [heads, N, N] per layer and one [layers, heads, N, N] array work too); tokens: its N strings.
    sentence_b_start: where sentence B starts, for a sentence pair (the Attention filter: A→A, A→B, ...).
    encoder_attention, decoder_attention, cross_attention with encoder_tokens, decoder_tokens: an
        encoder-decoder's groups (any of them), instead of attention and tokens.
    prettify_tokens: show SentencePiece's ▁ as a space and drop </w>, as bertviz does (byte-level Ġ tokens are
        decoded by the dashboard itself, either way); False stores the tokens exactly as given.
    layer, heads: the layer and heads shown first (bertviz's indices); include_layers: only these layers.
    html_action: "view" displays the output, "return" returns an IPython HTML object (its `.data` is the HTML).
    display_mode ("light" or "dark") and height (px) are ours.
    """
    output.check(html_action, display_mode, height)
    example, layers, num_heads = _example(attention, tokens, sentence_b_start, prettify_tokens, encoder_attention,
                                          decoder_attention, cross_attention, encoder_tokens, decoder_tokens,
                                          include_layers)
    params = {"view": "head", "run": RUN, "tag": TAG, "layer": _first_layer(layer, layers)}
    if heads is not None:
        params["heads"] = ",".join(str(h) for h in _indices(heads, num_heads, "heads", "heads"))
    return output.emit(_pack(example, layers, "head_view"), params, display_mode, html_action, height)


def model_view(attention=None, tokens=None, sentence_b_start=None, prettify_tokens=True, display_mode="dark",
               encoder_attention=None, decoder_attention=None, cross_attention=None, encoder_tokens=None,
               decoder_tokens=None, include_layers=None, include_heads=None, html_action="view", *,
               height=output.DEFAULT_HEIGHT):
    """The Model view (every layer × head) of attention you have: bertviz's `model_view`, with its arguments.

    As `head_view`; display_mode: "dark" (bertviz's default) or "light". include_heads: only these heads, shown
    numbered 0, 1, ... in the order given. The layers kept keep the model's index in their stored names
    ("layer 5"), which the Head, Model and Neuron views show.
    """
    output.check(html_action, display_mode, height)
    example, layers, _ = _example(attention, tokens, sentence_b_start, prettify_tokens, encoder_attention,
                                  decoder_attention, cross_attention, encoder_tokens, decoder_tokens,
                                  include_layers, include_heads)
    params = {"view": "model", "run": RUN, "tag": TAG}
    return output.emit(_pack(example, layers, "model_view"), params, display_mode, html_action, height)


# ---------------------------------------------------------------------------------------------


def _example(attention, tokens, sentence_b_start, prettify_tokens, encoder_attention, decoder_attention,
             cross_attention, encoder_tokens, decoder_tokens, include_layers, include_heads=None):
    """(one example in the writer's form, the layers its first group keeps, the heads of its first group)."""
    given = {"encoder_attention": encoder_attention, "decoder_attention": decoder_attention,
             "cross_attention": cross_attention, "encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens}
    if attention is not None:
        if any(v is not None for v in given.values()):
            raise ValueError(
                f"give attention and tokens (a self-attention model) or the encoder-decoder arguments, not both; got "
                f"attention and {', '.join(k for k, v in given.items() if v is not None)}")
        if tokens is None:
            raise ValueError("tokens are required with attention: the input's N token strings, e.g. "
                             "tokenizer.convert_ids_to_tokens(input_ids[0])")
        specs = [("self", attention, tokens, tokens)]
    elif any(a is not None for a in (encoder_attention, decoder_attention, cross_attention)):
        if tokens is not None or sentence_b_start is not None:
            raise ValueError("tokens and sentence_b_start go with attention=; an encoder-decoder's tokens are "
                             "encoder_tokens and decoder_tokens")
        specs = [(name, weights, queries, keys) for name, weights, queries, keys in (
            ("encoder", encoder_attention, encoder_tokens, encoder_tokens),
            ("decoder", decoder_attention, decoder_tokens, decoder_tokens),
            ("cross", cross_attention, decoder_tokens, encoder_tokens)) if weights is not None]
        for name, _, queries, keys in specs:
            for what, value in (("decoder_tokens", queries), ("encoder_tokens", keys)):
                if value is None:
                    raise ValueError(f"{ARGUMENTS[name]} needs {what}: the token strings of the "
                                     f"{what.split('_')[0]} input")
    else:
        raise ValueError("no attention to show: give attention and tokens (outputs.attentions of a model run with "
                         "output_attentions=True), or encoder_attention / decoder_attention / cross_attention with "
                         "encoder_tokens and decoder_tokens")
    groups = []
    for name, weights, queries, keys in specs:
        argument = ARGUMENTS[name]
        array = _layers(weights, argument, square=name != "cross")
        layers = _indices(include_layers, array.shape[0], "include_layers", f"layers of {argument}")
        heads = _indices(include_heads, array.shape[1], "include_heads", f"heads of {argument}")
        array = array[layers][:, heads]
        if name == "cross" and array.shape[2:] != (len(queries), len(keys)):  # the writer would name key_tokens
            raise ValueError(f"cross_attention is [heads, decoder tokens, encoder tokens] per layer: got "
                             f"{list(array.shape[1:])} for {len(queries)} decoder_tokens and {len(keys)} encoder_tokens")
        queries, keys = (_tokens(t, argument, prettify_tokens) for t in (queries, keys))
        group = {"name": name, "attention": array, "tokens": queries, "key_tokens": keys}
        if include_layers is not None:
            group["layer_names"] = [f"layer {i}" for i in layers]
        if not groups:
            shown = layers  # the model's indices of the layers the view opens on
        groups.append(group)
    segments = None
    if sentence_b_start is not None:
        segments = [_sentence_b_start(sentence_b_start, len(groups[0]["tokens"]))]
    example = {"tokens": groups[0]["tokens"], "segments": segments, "groups": groups}
    return example, shown, groups[0]["attention"].shape[1]


def _layers(weights, argument, square):
    """bertviz's per-layer [1, heads, Nq, Nk] tensors (or our forms) as one float32 [layers, heads, Nq, Nk] array."""
    if isinstance(weights, (list, tuple)) and not weights:
        raise ValueError(
            f"{argument} is empty (no layers). With transformers 5 a model's outputs end with cross_attentions, empty "
            "for a model without cross attention, so `outputs[-1]` is not its attention: pass outputs.attentions. A "
            "model computing with SDPA returns no weights either: load it with attn_implementation='eager' (or "
            "output_attentions=True), or let show(model, tokenizer, text) capture them")
    try:
        array, batched = summary.stack_layers(weights)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{argument}: {e}") from None
    if batched:
        if array.shape[0] != 1:
            raise ValueError(
                f"{argument} holds a batch of {array.shape[0]} inputs ([batch, heads, N, N] per layer); a view shows "
                f"one input: pass [layer[i:i + 1] for layer in {argument}] for input i, with its own tokens and "
                "without padding (or log the batch with tb_attention.summary.attention and use show_run)")
        array = array[0]
    if square and array.shape[-1] != array.shape[-2]:
        raise ValueError(
            f"{argument} must be self-attention, [heads, N, N] per layer; got [{array.shape[1]}, {array.shape[2]}, "
            f"{array.shape[3]}]" + (": an encoder-decoder's decoder-over-encoder attention goes in cross_attention"
                                    if argument != "attention" else ""))
    return array


def _tokens(tokens, argument, prettify):
    try:
        tokens = summary.token_strings(tokens)
    except TypeError as e:
        raise TypeError(f"tokens of {argument}: {e}") from None
    if prettify:  # as bertviz's format_special_chars; GPT-2's byte-level Ġ is decoded by the dashboard
        tokens = [t.replace("\u2581", " ").replace("</w>", "") for t in tokens]
    return tokens


def _indices(values, size, argument, what):
    """A list of distinct indices in [0, size), in the order given; None: all of them."""
    if values is None:
        return list(range(size))
    try:
        indices = [operator.index(v) for v in values]
    except TypeError:
        raise TypeError(f"{argument} must be a list of whole numbers, got {values!r}") from None
    wrong = [i for i in indices if not 0 <= i < size]
    if wrong or not indices or len(set(indices)) != len(indices):
        raise ValueError(f"{argument} must be distinct indices of the {size} {what} (0 to {size - 1}), got {values!r}")
    return indices


def _first_layer(layer, layers):
    """The position among the kept layers of bertviz's `layer` (an index of the model's layers)."""
    if layer is None:
        return None
    if layer not in layers:
        raise ValueError(f"layer {layer!r} is not one of the layers shown ({layers[0]} to {layers[-1]}"
                         + (f", include_layers={layers}" if layers != list(range(len(layers))) else "") + ")")
    return layers.index(layer)


def _sentence_b_start(start, num_tokens):
    try:
        start = operator.index(start)
    except TypeError:
        raise TypeError(f"sentence_b_start must be a token index, got {start!r}") from None
    if not 0 < start < num_tokens:
        raise ValueError(f"sentence_b_start must be the index of sentence B's first token, between 1 and "
                         f"{num_tokens - 1} ({num_tokens} tokens), got {start}")
    return start


def _pack(example, layers, title):
    """The pack of the example; the writer's errors name bertviz's argument and layer index."""
    try:
        return packed.pack_written(lambda writer: summary.write_examples(writer, TAG, [example], 0), run=RUN,
                                   title=title)
    except (TypeError, ValueError) as e:
        raise type(e)(_in_arguments(str(e), layers)) from None


def _in_arguments(message, layers):
    """The writer's "example 0, group 'cross': ... layer 2 ..." as "cross_attention: ... layer <its index> ..."."""
    message = re.sub(r"^example 0(?:, group '(\w+)')?: (attention )?",
                     lambda m: ARGUMENTS.get(m.group(1) or "self", m.group(1)) + (" " if m.group(2) else ": "), message)
    return re.sub(r"\blayer (\d+)", lambda m: f"layer {layers[int(m.group(1))]}" if int(m.group(1)) < len(layers)
                  else m.group(), message)
