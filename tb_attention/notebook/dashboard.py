"""The whole dashboard in a notebook: a model captured as a probe would (`show`), or a training run's logdir (`show_run`)."""

from tb_attention.notebook import output
from tb_attention.probes import packed


def show(model, tokenizer, text_or_texts=None, *, view=None, display_mode="light", html_action="view",
         height=output.DEFAULT_HEIGHT, **probe_options):
    """Every view of `model` on one text or several: captured and written exactly as `Probe.log` would
    (attention, metrics, exemplars; query/key vectors with with_qk=True), then shown in the notebook.

    tokenizer: the model's tokenizer; text_or_texts: a text, an (a, b) sentence pair, or a list of them.
    probe_options: Probe's (README, "Log attention from a training loop"): targets= for an encoder-decoder,
        with_qk=True for the Neuron view, generate=dict(max_new_tokens=...) for the Generation view, syntax=...
    Or give a probe you made instead of the tokenizer (any of ours: Probe, ImageProbe, AudioProbe,
        GenerationProbe), and no texts: show(model, probe).
    view: the view it opens on (head, model, neuron, generation, image, metrics, analysis, exemplars, compare,
        health; default: the probe's own: head for texts, generation, image).
    """
    output.check(html_action, display_mode, height)
    output.check_view(view)
    if hasattr(tokenizer, "log") and hasattr(tokenizer, "to_html"):
        probe = tokenizer
        if text_or_texts is not None or probe_options:
            raise TypeError("show(model, probe) takes the probe's own inputs and options: give no texts or options")
    else:
        from tb_attention.probes.text import Probe

        if text_or_texts is None:
            raise TypeError("show needs the texts to run the model on: show(model, tokenizer, 'The cat sat.')")
        texts = [text_or_texts] if isinstance(text_or_texts, (str, tuple)) else text_or_texts
        probe = Probe(tokenizer, texts, **probe_options)
    run = type(model).__name__
    pack = packed.probe_pack(probe, model, run=run)
    params = packed.opening_params(probe, run, {"view": view} if view is not None else None)
    return output.emit(pack, params, display_mode, html_action, height)


def show_run(logdir, run, step=None, tag=None, *, examples=None, view=None, display_mode="light", html_action="view",
             height=output.DEFAULT_HEIGHT):
    """What a training run logged, in the notebook: the dashboard over `run` of `logdir` (local, s3://, gs://),
    or over a list of runs (checkpoints logged as runs of their own, side by side in Compare).

    step: the step shown (default: each tag's newest), a list of steps, or "all" (every step of the run's probes:
        the Metrics view's curves and Compare's steps, a larger output); tag: one attention tag (default: all of
        the run's, with their metrics and exemplars); examples: example indices to keep (default: all).
    The selection is tb-attention export's (serve/export.py, `pack_logdir`).
    """
    from tb_attention.serve import export

    output.check(html_action, display_mode, height)
    output.check_view(view)
    if isinstance(step, (list, tuple)):
        steps = list(step)
    else:
        steps = None if step is None else "all" if step == "all" else [step]
    runs = [run] if isinstance(run, str) else list(run)
    pack = export.pack_logdir(logdir, runs=runs, tags=None if tag is None else [tag], steps=steps,
                              examples=examples, title=", ".join(runs))
    shown = step if isinstance(step, int) and not isinstance(step, bool) else None
    params = {"run": runs[0], "tag": tag, "step": shown, "view": view}
    return output.emit(pack, params, display_mode, html_action, height)
