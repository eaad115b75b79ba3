"""Vision-language probes: images and texts through the model's own processor, the decoder's attention over both."""

# `Probe(processor, [(image, "What is this garment?")])` makes a VisionLanguageProbe (text.py: Probe with
# the VisionLanguage methods below, which go before Probe's, so that Probe need not be imported here): the processor
# builds the inputs (image tokens, Qwen2-VL's dynamic resolution and merged patches, Idefics3's tiles,
# several images per input), the whole model runs, and each example stores the decoder's attention
# over the sequence the model read, the tokens, and per image its frame (the picture the model saw)
# with its tokens mapped onto it (sequence.py; http_api.md, "images"). With `generate=` it is a
# VisionLanguageGenerationProbe: the answer's tokens over the image, each decoding step as computed.
# Only the decoder's attention is kept (`within`): the vision tower's runs over its own patches.

import pathlib

import numpy as np

from tb_attention.probes.generation import GenerationProbe
from tb_attention.probes.vision.image import MAX_IMAGE_SIDE, frame_png, to_pil
from tb_attention.probes.vision.sequence import family_of, sequence_images
from tb_attention.runtime import defaults, modules
from tb_attention.storage import codecs

_DECODERS = ("language_model", "text_model")  # a vision-language model's decoder, by attribute name


def is_vision_language_input(processor, texts):
    """Whether Probe(processor, texts) is a vision-language probe: a processor with an image processor
    and a tokenizer, given (image(s), text) pairs."""
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        return False
    items = [texts] if isinstance(texts, tuple) else list(texts) if isinstance(texts, (list, tuple)) else []
    return bool(items) and all(isinstance(t, tuple) and len(t) == 2 and not isinstance(t[0], str) for t in items)


def _is_image(value):
    return isinstance(value, (str, pathlib.Path)) or hasattr(value, "convert") or (
        isinstance(value, np.ndarray) and value.dtype != object) or hasattr(value, "detach")


def _placeholders(processor, text, count, index):
    """The text with one image placeholder per image: as given, or put before the text when it has none."""
    token = getattr(processor, "image_token", None)
    if token is None:
        raise TypeError(f"{type(processor).__name__} names no image_token: give the processor of a vision-language model")
    found = text.count(token)
    if found == 0:
        tokenizer = processor.tokenizer
        start, end = (getattr(processor, f"vision_{w}_token", None) or f"<|vision_{w}|>" for w in ("start", "end"))
        wrap = "qwen" in type(processor).__name__.lower() and all(
            tokenizer.convert_tokens_to_ids(t) != tokenizer.unk_token_id for t in (start, end))
        one = f"{start}{token}{end}" if wrap else token
        return one * count + text
    if found != count:
        raise ValueError(f"input {index}: its text holds {found} image placeholders ({token!r}) for {count} image(s)")
    return text


def encode_input(processor, item, index, processor_options=None):
    """One (image or images, text or chat messages) input through the processor, batch of one: the
    probe's encoding (input_ids, tokens, text, the other model inputs, the images as PIL)."""
    if not (isinstance(item, tuple) and len(item) == 2):
        raise TypeError(f"input {index} must be (image or list of images, text), got {type(item).__name__}")
    images, text = item
    images = [images] if _is_image(images) else list(images)
    if not images:
        raise ValueError(f"input {index} has no image: probe texts alone with Probe(tokenizer, texts)")
    try:
        originals = [to_pil(image) for image in images]
    except (OSError, TypeError, ValueError) as e:
        raise type(e)(f"input {index}: {e}") from None
    if isinstance(text, list) and text and all(isinstance(m, dict) for m in text):
        if getattr(processor, "chat_template", None) is None:
            raise ValueError(f"input {index} is chat messages, but the processor has no chat template: give a text")
        shown = next((m["content"] for m in reversed(text) if m.get("role") == "user" and isinstance(m.get("content"), str)),
                     None)
        text = processor.apply_chat_template(text, add_generation_prompt=True, tokenize=False)
        shown = shown or text
    elif isinstance(text, str):
        shown = text
        text = _placeholders(processor, text, len(originals), index)
    else:
        raise TypeError(f"input {index}: its text must be a string or chat messages, got {type(text).__name__}")
    nested = "idefics" in type(processor).__name__.lower() or "smolvlm" in type(processor).__name__.lower()
    batch = processor(images=[originals] if nested else originals, text=[text], return_tensors="pt",
                      **(processor_options or {}))
    batch = dict(batch)
    ids = batch.pop("input_ids")
    batch.pop("attention_mask", None)
    batch.pop("labels", None)  # PaliGemma's, for training
    if ids.shape[0] != 1:
        raise ValueError(f"input {index}: the processor made {ids.shape[0]} sequences of one input")
    ids = [int(t) for t in ids[0].tolist()]
    return {"input_ids": ids, "tokens": processor.tokenizer.convert_ids_to_tokens(ids), "text": shown, "prompt": text,
            "segments": None, "model_inputs": batch, "originals": originals, "index": index}


def decoder_name(model):
    """The qualified name of the model's decoder (the attention kept), or TypeError."""
    family_of(model)
    for name, _ in model.named_modules():
        if name.split(".")[-1] in _DECODERS:
            return name
    raise TypeError(f"{type(model).__name__}: no language_model or text_model module to take the attention of")


def _encode_inputs(probe, processor, inputs, processor_options, max_image_side):
    """The processor's encoding of each (image(s), text) input; the probe keeps the processor and image size."""
    inputs = [inputs] if isinstance(inputs, tuple) else list(inputs)
    if not inputs:
        raise ValueError("a vision-language probe needs at least one (image, text) input")
    probe.processor, probe.max_image_side, probe._placed = processor, int(max_image_side), None
    return [encode_input(processor, item, i, processor_options) for i, item in enumerate(inputs)]


class _Images:
    """What both vision-language probes keep of their inputs' images: placed once per model family, PNGs made once."""

    def _sequence_images(self, model):
        if self._placed is None or self._placed[0] != model.config.model_type:
            placed = []
            for e in self.encodings:
                batch = {"input_ids": np.asarray([e["input_ids"]]), **e["model_inputs"]}
                images = sequence_images(model, self.processor, _Tensors(batch), e["originals"])
                placed.append([(image, frame_png(image.frame, self.max_image_side)) for image in images])
            self._placed = (model.config.model_type, placed)
        return self._placed[1]

    def _image_entries(self, model, index):
        return [image.entry(png) for image, png in self._sequence_images(model)[index]]

    def _image_metrics(self, model, attentions):
        from tb_attention.metrics.image import sequence_image_metrics

        placed = self._sequence_images(model)
        images = [[(image.positions(), image.centres()) for image, _ in per_input] for per_input in placed]
        return sequence_image_metrics(attentions, images)

    def _inputs(self, encoding, model):
        """The processor's tensors for the model: floats in its dtype, on its device."""
        from tb_attention.runtime import devices

        dtype = next(modules.unwrap(model).parameters()).dtype
        device = devices.device_of(modules.unwrap(model))
        return {k: (v.to(dtype) if v.is_floating_point() else v).to(device) for k, v in encoding["model_inputs"].items()}


class _Tensors(dict):
    """A processor batch whose input_ids are a tensor, as sequence_images reads them."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if key == "input_ids":
            import torch

            return torch.as_tensor(value)
        return value


class VisionLanguage(_Images):
    """What makes a Probe a vision-language probe (text.VisionLanguageProbe: this, then Probe).

    Images and texts through a vision-language model (LLaVA, Qwen2-VL / Qwen2.5-VL, PaliGemma,
    Idefics3 / SmolVLM); `probe.log(writer, model, step)` logs the decoder's attention at `step`.

    `Probe(processor, [(image, "What is this garment?"), ([image_a, image_b], "Which is larger?")])`
    makes one. processor: the model's own processor (image processor and tokenizer). Each input is an
    image (PIL, array, path) or a list of them, and a text (its image placeholders as the processor
    writes them, e.g. "<image>"; put before the text when it has none) or chat messages (the
    processor's chat template, generation prompt added). Each example holds the decoder's attention
    over the whole sequence (image tokens included), the tokens, and `images`: per image the frame the
    model saw and its tokens' span on its patch grid (http_api.md). Metrics: the text probe's over the
    whole sequence, and image_share and pixel_distance (within each image).
    processor_options: more keyword arguments for the processor call.
    Other options as for Probe: name, with_qk (the decoder's q/k; PaliGemma's prefix-LM mask as bidirectional_spans,
    http_api.md), metrics, include_first, top_k_exemplars, max_dense_tokens, all_ranks.
    """

    DASHBOARD_VIEW = "image"

    def __init__(self, processor, inputs, name=defaults.PROBE_TAG, *, metrics=True, include_first=False,
                 top_k_exemplars=defaults.TOP_K_EXEMPLARS, max_dense_tokens=codecs.DEFAULT_MAX_DENSE_TOKENS,
                 all_ranks=False, max_image_side=MAX_IMAGE_SIDE, processor_options=None, with_qk=False, **unsupported):
        for option in ("targets", "forward", "syntax", "spacy_model", "max_length", "_encodings"):
            if unsupported.pop(option, None) not in (None, False):
                raise TypeError(f"a vision-language probe does not take {option}=")
        unsupported.pop("batch_size", None)  # each input runs alone: its images make its own batch
        if unsupported:
            raise TypeError(f"Probe(processor, ...) got unexpected arguments: {', '.join(sorted(unsupported))}")
        encodings = _encode_inputs(self, processor, inputs, processor_options, max_image_side)
        super().__init__(processor.tokenizer, None, name, metrics=metrics, syntax=False, include_first=include_first,
                         top_k_exemplars=top_k_exemplars, max_dense_tokens=max_dense_tokens, all_ranks=all_ranks,
                         with_qk=with_qk, _encodings=encodings)

    def _streams(self, model):
        return False

    def capture(self, model):
        import torch

        from tb_attention import capture

        model = modules.unwrap(model)
        within = decoder_name(model)
        captured = []
        for encoding in self.encodings:
            ids = torch.tensor([encoding["input_ids"]], dtype=torch.long)
            captured += capture.capture_attention(model, ids, torch.ones_like(ids), within=within, with_qk=self.with_qk,
                                                  **self._inputs(encoding, model))
        self._model = model
        return captured

    def _example(self, encoding, result, parse, target_tokens):
        example = super()._example(encoding, result, parse, target_tokens)
        example["images"] = self._image_entries(self._model, encoding["index"])
        return example

    def _analyse(self, captured, syntax):
        out = super()._analyse(captured, syntax)
        out[0][1].update(self._image_metrics(self._model, [c.groups[0].attention for c in captured]))
        return out


class VisionLanguageGenerationProbe(_Images, GenerationProbe):
    """`Probe(processor, [(image, "What is this?")], generate=dict(max_new_tokens=...))`: the model's own
    `generate` from each image and prompt, every decoding step's attention over the sequence kept, the
    example holding the images as VisionLanguageProbe's do; the answer's tokens over the image.
    Metrics: the generation probe's, and image_share (prompt text and decoding queries) and pixel_distance."""

    DASHBOARD_VIEW = "image"

    def __init__(self, processor, inputs, name=defaults.PROBE_TAG, *, generate, max_image_side=MAX_IMAGE_SIDE,
                 processor_options=None, **options):
        if options.pop("with_qk", False):
            raise TypeError("a vision-language generation probe does not take with_qk=")
        encodings = _encode_inputs(self, processor, inputs, processor_options, max_image_side)
        super().__init__(processor.tokenizer, None, name, generate=generate, _encodings=encodings, **options)

    def _model_inputs(self, encoding, model):
        return self._inputs(encoding, model)

    def _within(self, model):
        return decoder_name(modules.unwrap(model))

    def _causal(self, name, dense):
        # PaliGemma attends both ways within its prefix (image and prompt): stored dense, as computed.
        return super()._causal(name, dense) and codecs.is_causal_layer(dense)

    def _examples(self, decoded):
        examples, values, table = super()._examples(decoded)
        model = self._model
        for example, encoding in zip(examples, self.encodings):
            example["images"] = self._image_entries(model, encoding["index"])
        if values:
            import torch

            attentions = []
            for result in decoded:
                recorder, n = result.recorder, len(result.prompt_ids) + len(result.generated_ids) - 1
                attentions.append(torch.stack([recorder.dense_layer("self", layer, n)
                                               for layer in range(len(recorder.layer_names("self")))]))
            values[0][1].update(self._image_metrics(model, attentions))
        return examples, values, table

    def log(self, writer, model, step, *, walltime=None):
        self._model = modules.unwrap(model)
        family_of(self._model)
        return super().log(writer, model, step, walltime=walltime)
