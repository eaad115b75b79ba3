"""tb-attention: log transformer attention during training and explore it in TensorBoard."""

# The package's folders are its layers, bottom-up (ARCHITECTURE.md): storage/ (the torch-free
# contract) under serve/ (TensorBoard's side) and under the training side: runtime/ -> metrics/ ->
# capture/ -> probes/ -> integrations/, convert/ and the CLI. tests/test_layering.py keeps it so.
#
# Attributes load lazily so that `import tb_attention` (and TensorBoard's plugin loader, which
# imports tb_attention.serve.loader) never pays for torch, transformers or spaCy.
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

_EXPORTS = {
    "Writer": "tb_attention.storage.summary",
    "Probe": "tb_attention.probes.text",
    "GenerationProbe": "tb_attention.probes.generation",
    "AudioProbe": "tb_attention.probes.audio",
    "ImageProbe": "tb_attention.probes.vision",
    "AttentionCallback": "tb_attention.integrations.trainer",
    "AttentionMonitor": "tb_attention.probes.monitor",
    "capture_attention": "tb_attention.capture.record",
    "summary": "tb_attention.storage.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tb_attention' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    return module if module.__name__.endswith(name) else getattr(module, name)


# Module paths from before the package had layers, for code that imported them: each still
# imports, as the module it became, with a DeprecationWarning naming the new path.
MOVED = {
    "tb_attention.analysis": "tb_attention.probes.analysis",
    "tb_attention.assets": "tb_attention.convert.assets",
    "tb_attention.audio": "tb_attention.probes.audio_inputs",
    "tb_attention.audio_probe": "tb_attention.probes.audio",
    "tb_attention.callback": "tb_attention.integrations.trainer",
    "tb_attention.codecs": "tb_attention.storage.codecs",
    "tb_attention.compare": "tb_attention.serve.compare",
    "tb_attention.cross_metrics": "tb_attention.metrics.cross",
    "tb_attention.defaults": "tb_attention.runtime.defaults",
    "tb_attention.devices": "tb_attention.runtime.devices",
    "tb_attention.distributed": "tb_attention.runtime.distributed",
    "tb_attention.examples": "tb_attention.storage.examples",
    "tb_attention.fastcrc": "tb_attention.storage.fastcrc",
    "tb_attention.health": "tb_attention.metrics.health",
    "tb_attention.intercept": "tb_attention.capture.intercept",
    "tb_attention.loader": "tb_attention.serve.loader",
    "tb_attention.modules": "tb_attention.runtime.modules",
    "tb_attention.monitor": "tb_attention.probes.monitor",
    "tb_attention.plugin": "tb_attention.serve.plugin",
    "tb_attention.probe": "tb_attention.probes.text",
    "tb_attention.reader": "tb_attention.serve.reader",
    "tb_attention.route_util": "tb_attention.serve.routes",
    "tb_attention.schema": "tb_attention.storage.schema",
    "tb_attention.stream": "tb_attention.capture.stream",
    "tb_attention.summary": "tb_attention.storage.summary",
    "tb_attention.syntax": "tb_attention.probes.syntax",
    "tb_attention.vision": "tb_attention.probes.vision",
    "tb_attention.vision.attention_rollout": "tb_attention.metrics.rollout",
    "tb_attention.vision.metrics": "tb_attention.metrics.image",
}


def moved_to(name):
    """The module an old path now names (its submodules too), or None."""
    for old in sorted(MOVED, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return MOVED[old] + name[len(old):]
    return None


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module it moved to (one module object under both names)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if moved_to(name) else None

    def create_module(self, spec):
        new = moved_to(spec.name)
        warnings.warn(f"{spec.name} moved to {new}: import that instead", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets __spec__ to this alias's: put back below
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # executed already, as the module it moved to


# First in line: an old package path must not reach the path finder, which would load its files a
# second time as other module objects (tb_attention.intercept.hf beside tb_attention.capture.intercept.hf).
if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())
