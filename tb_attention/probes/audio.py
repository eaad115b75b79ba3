"""Speech probes: Whisper's encoder, decoder and cross attention over fixed audio clips, frames labelled by time."""

# Whisper pads every clip to 30 s (1,500 encoder frames of 20 ms). By default only the frames of
# the real audio (plus `margin` seconds) are stored: the encoder group keeps those frames as queries
# and keys, the cross group those frames as keys; the decoder group is whole. Rows of a sliced
# group sum to the share of attention on the kept frames (less than 1), and every metric (max_logit
# included) is computed over what is stored.

import contextlib
import logging
import math

from tb_attention.probes import audio_inputs as audio
from tb_attention.probes import inputs as probe_inputs
from tb_attention.probes import text as probe
from tb_attention.runtime import defaults, devices, modules

TRIM_MARGIN_SECONDS = 0.1  # kept after the end of the audio: the encoder's receptive field spills over


class AudioProbe(probe.Probe):
    """Audio clips run through an encoder-decoder speech model (Whisper); `probe.log(writer, model, step)`
    logs groups `encoder` (frames x frames), `decoder` (target tokens, causal) and `cross` (target
    tokens over frames), encoder frames labelled by their start time ("0.00s", "0.02s", ...).

    processor: has `feature_extractor` (turns a clip into `input_features`) and `tokenizer` (names the
        target tokens), e.g. a transformers WhisperProcessor.
    audios: mono clips (1-D float arrays), all at `sampling_rate`.
    targets: one per clip, the decoder input ids (teacher forcing):
        - token ids (a list of ints or a 1-D tensor): fed exactly as given;
        - a text: `tokenizer(text_target=text)` ids; Whisper's tokenizer puts its prompt first
          (<|startoftranscript|>, language and task tokens when set, <|notimestamps|>) and
          <|endoftext|> last; another tokenizer's ids get the model's decoder_start_token_id first.
          Whisper transcripts start with a space (" Go forward"), which tokenises differently;
        - None: the model's own greedy transcription, generated once, at the first `log`, and then
          kept, so every later step reads the same tokens (its steps stay comparable): the
          tokenizer's prompt (`prefix_tokens`, else the decoder start token), the generated
          tokens, <|endoftext|>.
    trim: store only the frames of the real audio plus `margin` seconds (a 3 s clip keeps ~155
        of the 1,500 frames); False stores the whole 30 s window.
    names: display names of the clips (the example's text starts with it).
    generate: instead of targets, the `model.generate` arguments of a transcription captured as it is
        written (a GenerationProbe: every decoding step's decoder and cross attention, the encoder's
        frames trimmed as above, the transcript's tokens with their probabilities).
    batch_size: clips per forward, 1 by default (Whisper's full encoder attention is captured before
        it is trimmed: ~0.2 GB per clip for tiny, more for larger models).
    Other options as for Probe (name, with_qk, metrics, include_first, top_k_exemplars,
    max_dense_tokens, all_ranks); no syntax metrics. The model runs in eval mode without gradients,
    its modes restored after; only the writing rank logs.
    """

    def __new__(cls, processor, audios, name=defaults.PROBE_TAG, *, generate=None, targets=None,
                sampling_rate=audio.WHISPER_SAMPLING_RATE, trim=True, margin=TRIM_MARGIN_SECONDS, names=None, **options):
        if generate is None:
            return super().__new__(cls)
        # The decoding that writes each clip's transcript, captured (a GenerationProbe; not an AudioProbe).
        from tb_attention.probes.generation import GenerationProbe

        if targets is not None:
            raise TypeError("an audio probe that generates writes its own transcripts: give generate= or targets=, not both")
        encodings = clip_encodings(processor, audios, sampling_rate, trim, margin, names)
        return GenerationProbe(processor.tokenizer, None, name, generate=generate, _encodings=encodings, **options)

    def __init__(self, processor, audios, name=defaults.PROBE_TAG, *, targets=None, sampling_rate=audio.WHISPER_SAMPLING_RATE,
                 trim=True, margin=TRIM_MARGIN_SECONDS, names=None, **options):
        if options.get("syntax"):
            raise ValueError("an audio probe has no text to parse: syntax metrics are not available")
        if "forward" in options:
            raise TypeError("AudioProbe calls the model itself (input_features, decoder_input_ids): it takes no forward=")
        options["syntax"] = False
        # Whisper's encoder attention is 1,500 x 1,500 per head before trimming: one clip per forward.
        options.setdefault("batch_size", 1)
        tokenizer = processor.tokenizer
        encodings = clip_encodings(processor, audios, sampling_rate, trim, margin, names)
        if targets is not None:
            targets = probe_inputs.as_list(targets)
            if len(targets) != len(encodings):
                raise ValueError(f"{len(targets)} targets for {len(encodings)} clips: give one target per clip")
            for i, (encoding, target) in enumerate(zip(encodings, targets)):
                encoding.update(_target(tokenizer, target, i))
        self.trim = trim
        super().__init__(tokenizer, None, name, _encodings=encodings, **options)
        self.tokenizer = tokenizer

    @property
    def has_targets(self):
        return True  # None: transcribed at the first log

    def _targets(self, model):
        if "target_ids" not in self.encodings[0]:
            self._transcribe(model)
        start = getattr(getattr(model, "config", None), "decoder_start_token_id", None)
        out = []
        for encoding in self.encodings:
            ids = list(encoding["target_ids"])
            if encoding["target_start"] and (start is None or ids[:1] != [int(start)]):
                if start is None:
                    raise ValueError(f"{type(model).__name__} has no config.decoder_start_token_id to start a text target with")
                ids = [int(start)] + ids
            out.append((ids, self.tokenizer.convert_ids_to_tokens(ids)))
        return out

    def _transcribe(self, model):
        """The model's greedy transcription of each clip, kept as its targets from now on."""
        import torch

        from tb_attention import capture

        model = modules.unwrap(model)
        device = devices.device_of(model)
        prompt = list(getattr(self.tokenizer, "prefix_tokens", None) or [model.config.decoder_start_token_id])
        eos = model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, (list, tuple)) else eos
        room = model.config.max_target_positions - len(prompt) - 1
        limit = model.generation_config.max_length
        # Whisper refuses a prompt plus new tokens beyond its positions; its own max_length fits already.
        options = {} if limit and limit <= model.config.max_target_positions else {"max_new_tokens": room}
        with capture.eval_mode(model), torch.no_grad(), _without_whispers_own_generate_warning():
            for encoding in self.encodings:
                features = encoding["input_features"][None].to(device, next(model.parameters()).dtype)
                ids = model.generate(features, do_sample=False, num_beams=1, **options)[0].tolist()
                if ids[: len(prompt)] == prompt:  # older transformers return the prompt too
                    ids = ids[len(prompt):]
                ids = [i for i in ids if i != eos]
                encoding.update(target_ids=prompt + ids + [eos], target_start=False)

    def capture(self, model):
        """Each clip's attention, encoder frames sliced to the stored ones (`Captured`, see capture.py)."""
        import dataclasses

        import torch

        from tb_attention import capture

        model = modules.unwrap(model)
        targets = self._targets(model)
        captured = []
        for start in range(0, len(self.encodings), self.batch_size):
            rows = range(start, min(start + self.batch_size, len(self.encodings)))
            features = torch.stack([self.encodings[i]["input_features"] for i in rows])
            features = features.to(next(model.parameters()).dtype)
            ids, mask = probe_inputs.padded([targets[i][0] for i in rows])
            # q/k always: max_logit over the kept frames needs them (dropped below unless asked for).
            batch = capture.capture_attention(model, input_features=features, decoder_input_ids=ids,
                                              decoder_attention_mask=mask, with_qk=True)
            for i, result in zip(rows, batch):
                groups = [self._sliced(group, self.encodings[i]["frames"]) for group in result.groups]
                first = groups[0]
                captured.append(dataclasses.replace(
                    result, groups=groups, attention=first.attention, positions=first.query_positions,
                    query=first.query, key=first.key))
        return captured

    def _sliced(self, group, frames):
        """The group over the first `frames` encoder frames (queries of `encoder`, keys of `encoder`
        and `cross`), its max_logit recomputed over what is kept."""
        import dataclasses

        frame_queries = group.name == "encoder"
        frame_keys = group.name in ("encoder", "cross")
        q_rows = slice(None, frames) if frame_queries else slice(None)
        k_rows = slice(None, frames) if frame_keys else slice(None)
        query = group.query[:, :, q_rows].clone() if group.query is not None else None
        key = group.key[:, :, k_rows].clone() if group.key is not None else None
        max_logit = group.max_logit
        if frame_keys and query is not None and key is not None:
            max_logit = _max_logit(query, key, group.scaling)
        keep_qk = self.with_qk
        return dataclasses.replace(
            group,
            attention=group.attention[:, :, q_rows, k_rows].clone(),
            query_positions=group.query_positions[q_rows].clone(),
            key_positions=group.key_positions[k_rows].clone(),
            query=query if keep_qk else None,
            key=key if keep_qk else None,
            max_logit=max_logit,
        )

    def _write_options(self):
        # Sliced rows sum to the share of attention on the kept frames, not to 1.
        return {**super()._write_options(), "check_rows": not self.trim}


def clip_encodings(processor, audios, sampling_rate, trim=True, margin=TRIM_MARGIN_SECONDS, names=None):
    """Per clip: its input_features [mels, frames], the stored frames' labels as tokens, a text naming the
    clip and what is kept, `frames` (the stored encoder frames) and `all_frames`."""
    audios = list(audios) if not hasattr(audios, "ndim") or audios.ndim != 1 else [audios]
    if not audios:
        raise ValueError("an audio probe needs at least one clip")
    names = list(names) if names is not None else [f"clip {i}" for i in range(len(audios))]
    if len(names) != len(audios):
        raise ValueError(f"{len(names)} names for {len(audios)} clips")
    encodings = []
    for i, clip in enumerate(audios):
        features, labels = audio.whisper_example(processor, clip, sampling_rate)
        seconds = len(clip) / sampling_rate
        frame_seconds = 2 * processor.feature_extractor.hop_length / sampling_rate  # as whisper_example labels
        kept = len(labels)
        if trim:
            kept = min(kept, math.ceil(seconds / frame_seconds) + round(margin / frame_seconds))
        text = f"{names[i]}: {seconds:.2f} s of audio"
        if kept < len(labels):
            text += f"; frames 0-{kept * frame_seconds:.2f} s of the {len(labels) * frame_seconds:.0f} s window stored"
        encodings.append({"input_features": features[0], "input_ids": None, "tokens": labels[:kept], "text": text,
                          "segments": None, "frames": kept, "all_frames": len(labels)})
    return encodings


def _max_logit(query, key, scaling):
    """[L, H]: the largest scaling·q·kᵀ per head (Whisper's encoder and cross attention have no mask)."""
    import torch

    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    return torch.stack([(q @ k.transpose(-1, -2) * s).amax(dim=(-1, -2)) for q, k, s in zip(query, key, scaling)])


def _target(tokenizer, target, index):
    """A clip's target as stored: ids, and whether the model's start token may have to go first."""
    if isinstance(target, str):
        if not target.strip():
            raise ValueError(f"target {index} is empty")
        return {"target_ids": list(tokenizer(text_target=target)["input_ids"]), "target_start": True}
    return {"target_ids": probe_inputs.id_list(target, f"target {index}"), "target_start": False}


@contextlib.contextmanager
def _without_whispers_own_generate_warning():
    """Whisper's generate passes suppress_tokens beside its own generation_config (transformers 5, a workaround
    in its code), then warns that this is deprecated: a warning about its own call that no user can act on."""
    logger = logging.getLogger("transformers.generation.utils")
    quiet = _MessageFilter("Passing `generation_config` together with generation-related arguments")
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class _MessageFilter(logging.Filter):
    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not record.getMessage().startswith(self.prefix)
