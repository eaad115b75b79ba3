"""The package's layers: no import circle, no import from a lower layer to a higher one, the serving side torch-free."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tb_attention"

# Bottom-up. The serving tower (serve) stands on storage beside the training tower; folders of one
# rank (integrations, convert, notebook) do not import each other. Top-level modules: the CLI on top;
# the metadata shim, kept for outside callers, over storage; the package's __init__ imports nothing of
# ours (its attributes load lazily, by name).
RANKS = {"storage": 0, "metadata": 1, "serve": 1, "runtime": 1, "metrics": 2, "capture": 3, "probes": 4,
         "integrations": 5, "convert": 5, "notebook": 5, "cli": 6}
TOWER = {"serve": {"storage", "serve"}}  # may import only these
# ... and the one module of the serving tower that the layers above it may import: the pack of the
# routes' answers and its HTML (tb-attention export, Probe.to_html, the notebook's outputs).
TOWER_OPEN = {"tb_attention.serve.export"}
FORBIDDEN = {  # third-party packages a layer never imports, at module level or inside a function
    "serve": {"torch", "transformers", "spacy"},
    "metrics": {"tensorboard", "transformers", "spacy"},
}
# ... and those it never imports when loaded: the codecs take the torch tensors they are given, on
# their device, with the torch that made them (imported in the function, already loaded).
NOT_AT_IMPORT = {"storage": {"torch", "transformers", "spacy"}}
MAX_LINES = 450  # a module longer than this has more than one job


def module_name(path, root):
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root):
    """{module: {imported module of the package: line}} and {module: {third-party top-level name: True when
    imported at module level}}, over every import statement, module-level or inside a function."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    ours, theirs = {}, {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        ours[name], theirs[name] = {}, {}
        tree = ast.parse(path.read_text(), str(path))
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in files else source for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != root.name:
                    top = target.split(".")[0]
                    theirs[name][top] = theirs[name].get(top, False) or id(node) not in in_function
                    continue
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    ours[name].setdefault(target, node.lineno)
    return ours, theirs


def layer_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's __init__


def violations(ours, theirs):
    """What breaks the layering, as sentences."""
    found = []
    for module, imports in sorted(ours.items()):
        layer = layer_of(module)
        for target, line in sorted(imports.items()):
            other = layer_of(target)
            if layer is None:
                found.append(f"{module}:{line} imports {target}: the package's __init__ loads modules lazily, by name")
            elif layer not in RANKS or other not in RANKS:
                found.append(f"{module}:{line} imports {target}: {layer if layer not in RANKS else other} has no place in RANKS")
            elif layer in TOWER and other not in TOWER[layer]:
                found.append(f"{module}:{line} imports {target}: {layer} may import only {sorted(TOWER[layer])}")
            elif other in TOWER and layer not in TOWER[other] and target not in TOWER_OPEN:
                found.append(f"{module}:{line} imports {target}: nothing outside {other} imports it")
            elif other == "metadata":
                found.append(f"{module}:{line} imports {target}: the shim is for outside callers; import storage")
            elif RANKS[other] > RANKS[layer] or (RANKS[other] == RANKS[layer] and other != layer):
                found.append(f"{module}:{line} imports {target}: {layer} (rank {RANKS[layer]}) is below {other} (rank {RANKS[other]})")
    for module, names in sorted(theirs.items()):
        layer = layer_of(module)
        for name in sorted(names.keys() & FORBIDDEN.get(layer, set())):
            found.append(f"{module} imports {name}, which {layer} never does")
        for name in sorted(n for n, at_import in names.items() if at_import and n in NOT_AT_IMPORT.get(layer, ())):
            found.append(f"{module} imports {name} when loaded, which {layer} never does")
    found += [f"import circle: {' -> '.join(cycle)}" for cycle in cycles(ours)]
    return found


def cycles(graph):
    """One cycle (as a closed path) per strongly connected component of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_closed_path(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _closed_path(graph, component):
    start = min(component)
    path, seen = [start], {start}
    while True:
        nxt = min(w for w in graph[path[-1]] if w in component)
        if nxt in seen:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def test_no_module_imports_a_higher_layer_and_no_import_circle():
    ours, theirs = import_graph(PACKAGE)
    assert set(map(layer_of, ours)) - {None} == set(RANKS), "a folder or top-level module without a layer"
    assert violations(ours, theirs) == []


def test_the_check_finds_a_back_edge_a_circle_and_a_forbidden_import(tmp_path):
    package = tmp_path / "tb_attention"
    for path, source in {
        "__init__.py": "",
        "storage/__init__.py": "",
        "storage/schema.py": "import torch\nfrom tb_attention.storage import codecs\n",
        "storage/codecs.py": "from tb_attention.storage import schema\n",
        "serve/__init__.py": "",
        "serve/plugin.py": "def route():\n    from tb_attention.metrics import health\n",
        "metrics/__init__.py": "",
        "metrics/health.py": "from tb_attention.probes import text\n",
        "probes/__init__.py": "",
        "probes/text.py": "from tb_attention.metadata import FORMAT_VERSION\n",
        "metadata.py": "from tb_attention.storage.schema import *  # noqa: F403\n",
    }.items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(source)
    found = violations(*import_graph(package))
    assert "tb_attention.serve.plugin:2 imports tb_attention.metrics.health: serve may import only ['serve', 'storage']" in found, found
    assert any(f.startswith("tb_attention.metrics.health:1 imports tb_attention.probes.text: metrics (rank 2) is below probes") for f in found)
    assert "tb_attention.storage.schema imports torch when loaded, which storage never does" in found
    assert "import circle: tb_attention.storage.codecs -> tb_attention.storage.schema -> tb_attention.storage.codecs" in found
    assert any("the shim is for outside callers" in f for f in found)


def test_no_module_is_longer_than_it_should_be():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these (over {MAX_LINES} lines): {long}"


@pytest.mark.server
def test_the_serving_side_and_the_writers_load_no_torch():
    modules = ["tb_attention.serve.loader", "tb_attention.serve.plugin", "tb_attention.serve.reader", "tb_attention.serve.routes",
               "tb_attention.serve.compare", "tb_attention.storage.summary", "tb_attention.storage.codecs",
               "tb_attention.storage.examples", "tb_attention.metadata", "tb_attention"]
    script = ";".join(f"import {m}" for m in modules) + (
        ";import sys;print(sorted(m for m in ('torch', 'transformers', 'spacy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
