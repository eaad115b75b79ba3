"""bertviz's `neuron_view.show`, on our Neuron view: any Hugging Face model and its own tokenizer."""

from tb_attention.notebook import output
from tb_attention.probes import packed


def show(model, model_type, tokenizer, sentence_a, sentence_b=None, display_mode="dark", layer=None, head=None,
         html_action="view", *, height=output.DEFAULT_HEIGHT):
    """The Neuron view (query, key, q·k and the softmax, beside the stored weight) of `model` on a sentence
    or a sentence pair: bertviz's `neuron_view.show`, with its arguments.

    model, tokenizer: any model a Probe captures (transformers' own classes, whatever attn_implementation;
        bertviz needed its patched copies of BERT, GPT-2 and RoBERTa), and its tokenizer.
    model_type: accepted for bertviz's calls and not needed: whether attention is causal is read from the
        weights, and how each layer scores q·k from the model (scaling, soft caps, windows, sinks).
    sentence_b: a second sentence (segment B, for the Attention filter: A→A, A→B, ...).
    layer, head: shown first (0-based); display_mode "dark" (bertviz's default) or "light";
    html_action: "view" displays, "return" returns an IPython HTML object (`.data` is the HTML).
    """
    from tb_attention.probes.text import Probe

    output.check(html_action, display_mode, height)
    if not isinstance(model_type, (str, type(None))):
        raise TypeError(f"model_type is bertviz's model name ('bert', 'gpt2', ...), got {type(model_type).__name__}: "
                        "the arguments are show(model, model_type, tokenizer, sentence_a, sentence_b=None, ...)")
    for name, value in (("layer", layer), ("head", head)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{name} must be a 0-based index, got {value!r}")
    texts = [(sentence_a, sentence_b)] if sentence_b else [sentence_a]
    probe = Probe(tokenizer, texts, with_qk=True, metrics=False, syntax=False)
    run = type(model).__name__
    pack = packed.probe_pack(probe, model, run=run, title=f"{run}: neuron view")
    example = packed.examples(pack, run, probe.name)[0]
    for name, value, size in (("layer", layer, example["num_layers"]), ("head", head, example["num_heads"])):
        if value is not None and value >= size:
            raise ValueError(f"{name} {value} is out of range: {run} has {size} {name}s (0 to {size - 1})")
    params = packed.opening_params(probe, run, {"view": "neuron", "layer": layer, "heads": head})
    return output.emit(pack, params, display_mode, html_action, height)
