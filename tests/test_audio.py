"""AudioProbe: Whisper's encoder, decoder and cross attention over real and synthetic clips, as TensorBoard serves them."""

import types

import numpy as np
import pytest
import torch
import transformers

from tb_attention import AudioProbe, Writer, metadata
from tb_attention.convert import assets
from tb_attention.metrics import cross as cross_metrics
from tb_attention.probes import audio_inputs as audio
from tests.support.tensorboard import python_provider, read_examples

BOUND = metadata.MAX_QUANTIZATION_ERROR
RATE = 16000  # Hz
CHUNK_SECONDS = 2  # the tiny model's window: 200 mel frames, 100 encoder frames of 20 ms


def tiny_whisper(attn_implementation="sdpa"):
    """A random-weight Whisper with a 2 s window (100 encoder frames), peaked attention."""
    config = transformers.WhisperConfig(
        vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
        max_source_positions=100, max_target_positions=32, pad_token_id=1, bos_token_id=2, eos_token_id=3,
        decoder_start_token_id=2,
    )
    config.initializer_range = 0.5
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    model.generation_config = transformers.GenerationConfig(decoder_start_token_id=2, eos_token_id=3, pad_token_id=1)
    return model.eval()


class NumberTokenizer:
    """Token ids as their own names; text targets are digit strings ("5 6 7")."""

    prefix_tokens = None

    def __call__(self, text=None, text_target=None):
        return {"input_ids": [int(t) for t in (text_target or text).split()] + [3]}

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


def tiny_processor():
    extractor = transformers.WhisperFeatureExtractor(feature_size=8, sampling_rate=RATE, chunk_length=CHUNK_SECONDS)
    return types.SimpleNamespace(feature_extractor=extractor, tokenizer=NumberTokenizer())


def clips():
    g = np.random.default_rng(0)
    return [g.standard_normal(int(0.5 * RATE)).astype(np.float32) * 0.1,
            g.standard_normal(int(1.23 * RATE)).astype(np.float32) * 0.1]


def _eager(model, features, target):
    eager = type(model)._from_config(model.config, attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = eager.eval()(input_features=features, decoder_input_ids=torch.tensor([target]), output_attentions=True)
    return {"encoder": torch.stack(out.encoder_attentions)[:, 0], "decoder": torch.stack(out.decoder_attentions)[:, 0],
            "cross": torch.stack(out.cross_attentions)[:, 0]}


def test_a_real_tensorboard_serves_whisper_groups_as_eager_attention_sliced_to_the_audio(tmp_path, tensorboard):
    model, processor = tiny_whisper(), tiny_processor()
    targets = [[2, 10, 11, 12], torch.tensor([2, 40, 41])]
    probe = AudioProbe(processor, clips(), targets=targets, names=["short", "long"], batch_size=2)  # padded targets
    model.train()
    with Writer(tmp_path / "run") as writer:
        values = probe.log(writer, model, 3)
    assert model.training and all(p.grad is None for p in model.parameters())
    server = tensorboard(tmp_path)
    server.wait_for(lambda tags: tags.get("run", {}).get("probe", {}).get("steps"))
    # 0.5 s -> 25 frames + 5 of margin; 1.23 s -> 62 + 5 (of the 100 the model sees).
    kept = [30, 67]
    for i, clip in enumerate(clips()):
        features, labels = audio.whisper_example(processor, clip, RATE)
        reference = _eager(model, features, list(torch.as_tensor(targets[i]).tolist()))
        reference["encoder"] = reference["encoder"][..., : kept[i], : kept[i]]
        reference["cross"] = reference["cross"][..., : kept[i]]
        for group, expected in reference.items():
            status, body = server.get("/attention", {"run": "run", "tag": "probe", "step": 3, "example": i,
                                                     "group": group, "format": "json"})
            assert status == 200, body
            served = np.array(body["attention"])
            assert served.shape == tuple(expected.shape), group
            assert np.abs(served - expected.numpy()).max() <= BOUND, group
        assert body["key_tokens"] == labels[: kept[i]] and body["tokens"] == [f"t{t}" for t in torch.as_tensor(targets[i]).tolist()]
    status, body = server.get("/examples", {"run": "run", "tag": "probe", "step": 3})
    assert status == 200
    examples = body["examples"] if isinstance(body, dict) else body
    assert [g["name"] for g in examples[0]["groups"]] == ["encoder", "decoder", "cross"]
    assert examples[1]["text"].startswith("long: 1.23 s of audio; frames 0-1.34 s of the 2 s window")
    # Metrics over what is stored: the cross metrics of the sliced rows.
    sliced = []
    for i, clip in enumerate(clips()):
        features, _ = audio.whisper_example(processor, clip, RATE)
        sliced.append(_eager(model, features, list(torch.as_tensor(targets[i]).tolist()))["cross"][..., : kept[i]])
    expected = cross_metrics.cross_metrics(sliced)
    np.testing.assert_allclose(values["cross/entropy"], expected["entropy"], atol=1e-4)
    np.testing.assert_allclose(values["cross/null_attention"], expected["null_attention"], atol=1e-5)


def test_frame_labels_and_trimming(tmp_path):
    model, processor = tiny_whisper(), tiny_processor()
    probe = AudioProbe(processor, clips(), targets=[[2, 5], [2, 6]], trim=False)
    assert all(e["tokens"] == audio.frame_labels(100) for e in probe.encodings)
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    entry, example, _ = read_examples(python_provider(tmp_path), "run", "probe", 0, group="cross")[0]
    assert example.attention.shape[-1] == 100 and entry["tokens"][-1] == "1.98s"
    trimmed = AudioProbe(processor, clips()[:1], targets=[[2, 5]], margin=0.2)
    assert trimmed.encodings[0]["tokens"] == audio.frame_labels(35)  # 0.5 s + 0.2 s


def test_max_logit_is_over_the_kept_frames(tmp_path):
    model, processor = tiny_whisper("eager"), tiny_processor()
    clip = clips()[0]
    probe = AudioProbe(processor, [clip], targets=[[2, 7, 8]])
    with Writer(tmp_path / "run") as writer:
        values = probe.log(writer, model, 0)
    features, _ = audio.whisper_example(processor, clip, RATE)
    logits = {}

    def keep(name):
        def hook(module, args, kwargs, output):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            source = kwargs.get("key_value_states")
            source = hidden if source is None else source
            b, n, _ = hidden.shape
            q = module.q_proj(hidden).view(b, n, 4, -1).transpose(1, 2)  # 4 heads; Whisper's q·k scale: d^-0.5
            k = module.k_proj(source).view(b, source.shape[1], 4, -1).transpose(1, 2)
            logits[name] = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        return hook

    handles = [model.model.encoder.layers[0].self_attn.register_forward_hook(keep("encoder"), with_kwargs=True),
               model.model.decoder.layers[0].encoder_attn.register_forward_hook(keep("cross"), with_kwargs=True)]
    with torch.no_grad():
        model(input_features=features, decoder_input_ids=torch.tensor([[2, 7, 8]]))
    for handle in handles:
        handle.remove()
    np.testing.assert_allclose(values["max_logit"][0], logits["encoder"][0, :, :30, :30].amax(dim=(-1, -2)).numpy(), rtol=1e-4)
    np.testing.assert_allclose(values["cross/max_logit"][0], logits["cross"][0, :, :, :30].amax(dim=(-1, -2)).numpy(), rtol=1e-4)


def test_targets_text_ids_and_the_models_own_transcription(tmp_path):
    model, processor = tiny_whisper(), tiny_processor()
    texts = AudioProbe(processor, clips(), targets=["5 6", "7"])
    assert [ids for ids, _ in texts._targets(model)] == [[2, 5, 6, 3], [2, 7, 3]]  # start token, text, end
    given = AudioProbe(processor, clips(), targets=[[9, 5], torch.tensor([2, 8])])
    assert [ids for ids, _ in given._targets(model)] == [[9, 5], [2, 8]]  # exactly as given
    own = AudioProbe(processor, clips())
    with torch.no_grad():
        features = torch.stack([e["input_features"] for e in own.encodings])
        generated = model.generate(features, do_sample=False, num_beams=1, max_new_tokens=30)
    with Writer(tmp_path / "run") as writer:
        own.log(writer, model, 0)
        first = [e["target_ids"] for e in own.encodings]
        torch.nn.init.normal_(model.proj_out.weight)  # the model changes; the targets stay
        own.log(writer, model, 1)
    assert [e["target_ids"] for e in own.encodings] == first
    for ids, row in zip(first, generated.tolist()):
        body = [t for t in row if t not in (2, 3, 1)]
        assert ids[0] == 2 and ids[-1] == 3 and ids[1:-1] == body[: len(ids) - 2]
    with pytest.raises(ValueError, match="2 targets for 1 clips"):
        AudioProbe(processor, clips()[:1], targets=[[2], [2]])
    with pytest.raises(ValueError, match="16000 Hz"):
        AudioProbe(processor, clips(), sampling_rate=8000)


@pytest.fixture(scope="module")
def whisper_tiny_en():
    from tb_attention.convert import whisper

    try:
        folder = whisper.whisper_dir()
        speech = {name: (samples, rate) for name, samples, rate, _ in audio.speech_clips()}
    except (assets.AssetError, FileNotFoundError) as e:
        pytest.skip(str(e))
    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()
    return model, transformers.WhisperProcessor.from_pretrained(folder), speech


def test_real_whisper_cross_attention_follows_the_words_through_the_clip(tmp_path, whisper_tiny_en, tensorboard):
    model, processor, speech = whisper_tiny_en
    samples, rate = speech["goforward"]  # 2.79 s: "Go forward 10 meters."
    probe = AudioProbe(processor, [samples], names=["goforward"], name="speech")  # the model's own transcription
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    assert probe.encodings[0]["target_ids"] == [50257, 50362, 1514, 2651, 838, 10700, 13, 50256]
    server = tensorboard(tmp_path)
    server.wait_for(lambda tags: tags.get("run", {}).get("speech", {}).get("steps"))
    cross = []
    for layer, head in model.generation_config.alignment_heads:
        status, body = server.get("/attention", {"run": "run", "tag": "speech", "step": 0, "example": 0,
                                                 "group": "cross", "layer": layer, "head": head, "format": "json"})
        assert status == 200, body
        cross.append(np.array(body["attention"]).reshape(len(body["tokens"]), -1))
    assert body["tokens"][2:6] == ["ĠGo", "Ġforward", "Ġ10", "Ġmeters"]
    frames = len(body["key_tokens"])
    assert frames == 145 and body["key_tokens"][-1] == "2.88s"  # 2.79 s + 0.1 s
    peaks = np.mean(cross, axis=0)[1:5].argmax(-1)  # the queries that predict Go, forward, 10, meters
    # Measured on the eager model over the whole window: 1.00 s, 1.00 s, 1.40 s, 1.74 s.
    assert (np.diff(peaks) >= 0).all() and 40 <= peaks[0] and peaks[-1] < frames, peaks


def test_demo_logs_whisper_transcriptions(tmp_path, whisper_tiny_en, monkeypatch):
    from demo import whisper as demo

    monkeypatch.setattr(demo, "CLIPS", ("goforward",))  # one clip keeps the test short; the demo logs three
    assert demo.main(tmp_path) == ["Go forward 10 meters."]
    entries = read_examples(python_provider(tmp_path), demo.RUN, demo.TAG, 0, group="cross")
    assert len(entries) == 1 and entries[0][0]["text"].startswith("goforward: 2.79 s of audio")


def test_a_generating_audio_probe_stores_the_decoding_that_wrote_the_transcript(tmp_path):
    model, processor = tiny_whisper(), tiny_processor()
    processor.tokenizer.decode = lambda ids, skip_special_tokens=False: " ".join(map(str, ids))
    probe = AudioProbe(processor, clips(), names=["short", "long"], generate=dict(max_new_tokens=6))
    with Writer(tmp_path / "run") as writer:
        values = probe.log(writer, model, 0)
    provider = python_provider(tmp_path)
    groups = {name: read_examples(provider, "run", "probe", 0, group=name) for name in ("encoder", "decoder", "cross")}
    for i, entry in enumerate(e for e, _, _ in groups["decoder"]):
        generation = entry["generation"]
        features = probe.encodings[i]["input_features"][None]
        with torch.no_grad():
            plain = model.generate(features, max_new_tokens=6)[0].tolist()
        # Whisper's generate returns the tokens it wrote (without the start token it was prompted with).
        assert plain[-len(generation["ids"]):] == generation["ids"] and plain[: -len(generation["ids"])] in ([], [2])
        assert generation["prompt_length"] == 1
        reference = _eager(model, features, [2] + generation["ids"][:-1])
        frames = probe.encodings[i]["frames"]
        sliced = {"encoder": reference["encoder"][:, :, :frames, :frames], "decoder": reference["decoder"],
                  "cross": reference["cross"][:, :, :, :frames]}
        for name, expected in sliced.items():
            assert np.abs(groups[name][i][1].attention - expected.numpy()).max() <= BOUND, name
    assert {"decoder/prompt_share", "cross/entropy"} <= set(values)


def test_real_whisper_transcribes_and_stores_each_words_cross_attention(tmp_path, whisper_tiny_en):
    model, processor, speech = whisper_tiny_en
    samples, rate = speech["goforward"]
    probe = AudioProbe(processor, [samples], names=["goforward"], name="speech", generate=dict(max_new_tokens=20))
    with Writer(tmp_path / "run") as writer:
        probe.log(writer, model, 0)
    entry, cross, _ = read_examples(python_provider(tmp_path), "run", "speech", 0, group="cross")[0]
    generation = entry["generation"]
    assert generation["text"].strip() == "Go forward 10 meters." and generation["stop"] == "eos"
    assert generation["ids"] == [1514, 2651, 838, 10700, 13, 50256]
    prompt = generation["prompt_length"]
    assert cross.attention.shape[2] == prompt + len(generation["ids"]) - 1 and cross.attention.shape[3] == 145


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("batch", [1, 3])
def test_whisper_computes_the_same_logits_bit_for_bit_while_recorded(implementation, batch):
    from tb_attention import capture

    model = tiny_whisper(implementation)
    g = torch.Generator().manual_seed(1)
    inputs = {"input_features": torch.randn(batch, 8, 200, generator=g),
              "decoder_input_ids": torch.randint(4, 100, (batch, 6), generator=g)}
    with torch.no_grad():
        plain = model(**inputs).logits
        with capture.recording(model, with_qk=True, with_max_logit=True) as recorder:
            recorded = model(**inputs).logits
    assert len(recorder.calls) == 6  # 2 encoder, 2 decoder, 2 cross layers
    assert torch.equal(plain, recorded)


def test_a_multilingual_whisper_must_be_told_the_language_it_transcribes(tmp_path):
    model, processor = tiny_whisper(), tiny_processor()
    model.generation_config.is_multilingual = True
    probe = AudioProbe(processor, clips()[:1], generate=dict(max_new_tokens=4))
    with pytest.raises(ValueError, match="multilingual: without a language"):
        with Writer(tmp_path / "run") as writer:
            probe.log(writer, model, 0)
