"""Shared fixtures (a real `tensorboard` process, a random generator, GPT-2's tokenizer) and the markers
that sort tests by what they start. Helpers live in tests/support/."""

import functools
import inspect
import pathlib
import textwrap

import numpy as np
import pytest

from tests.support.tensorboard import TensorBoard

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# Markers: `pytest -m "not browser and not server"` is the fast subset (pytest.ini registers them).
# A test is marked by what it starts, found in its own source, its fixtures' and the test-suite
# helpers they call (transitively), so a new test that starts a TensorBoard, a Chromium or another
# process is marked without anyone remembering to.

_SERVER_SIGNS = ("TensorBoard(", "tensorboard(", "serving(", "rust_provider(", "subprocess.", "object_store.running(",
                 "NotebookClient(", "jupyterlab(")  # a Jupyter kernel, a JupyterLab server
_BROWSER_SIGNS = ("playwright", "chromium", "dashboard_page")


@functools.cache
def _source(function):
    """The source of a test-suite function and of the test-suite functions it calls."""
    import ast

    try:
        text = inspect.getsource(function)
        tree = ast.parse(textwrap.dedent(text))
    except (OSError, TypeError, SyntaxError):
        return ""
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    scope = getattr(function, "__globals__", {})
    for name in sorted(called):
        helper = scope.get(name)
        if inspect.isfunction(helper) and helper is not function and _in_tests(helper):
            text += _source(helper)
    return text


def _in_tests(function):
    try:
        return pathlib.Path(inspect.getsourcefile(function)).resolve().is_relative_to(ROOT / "tests")
    except TypeError:
        return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        functions = [getattr(item, "function", None)]
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures is not None:
            functions += [d.func for defs in fixtures.name2fixturedefs.values() for d in defs]
        text = "\n".join(_source(f) for f in functions if f is not None)
        names = set(getattr(item, "fixturenames", ()))
        if any(sign in text for sign in _BROWSER_SIGNS) or item.module.__name__.endswith("_e2e"):
            item.add_marker(pytest.mark.browser)
        if "tensorboard" in names or any(sign in text for sign in _SERVER_SIGNS):
            item.add_marker(pytest.mark.server)


@pytest.fixture
def tensorboard():
    """Factory: tensorboard(logdir, *args, load_fast=...) starts a server, closed after the test."""
    servers = []

    def start(logdir, *args, **kwargs):
        server = TensorBoard(logdir, *args, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from tb_attention.convert import assets

    return assets.gpt2_tokenizer()
