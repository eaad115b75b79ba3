"""tb-attention: log transformer attention during training and explore it in TensorBoard."""

# Attributes load lazily so that `import tb_attention` (and TensorBoard's plugin loader, which
# imports tb_attention.loader) never pays for torch, transformers or spaCy.
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Writer": "tb_attention.summary",
    "Probe": "tb_attention.probe",
    "AudioProbe": "tb_attention.audio_probe",
    "ImageProbe": "tb_attention.vision",
    "AttentionCallback": "tb_attention.callback",
    "AttentionMonitor": "tb_attention.monitor",
    "capture_attention": "tb_attention.capture",
    "summary": "tb_attention.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tb_attention' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    return module if module.__name__.endswith(name) else getattr(module, name)
