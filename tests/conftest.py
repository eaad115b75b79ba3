"""Shared fixtures: a real `tensorboard` process, attention arrays, tiny models."""

import contextlib
import functools
import inspect
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
PLUGIN_ROUTE = "/data/plugin/attention"


# ---------------------------------------------------------------------------------------------
# Markers: `pytest -m "not browser and not server"` is the fast subset (pytest.ini registers them).
# A test is marked by what it starts, found in its own source, its fixtures' and the test-suite
# helpers they call (transitively), so a new test that starts a TensorBoard, a Chromium or another
# process is marked without anyone remembering to.

_SERVER_SIGNS = ("TensorBoard(", "tensorboard(", "rust_provider(", "subprocess.")
_BROWSER_SIGNS = ("playwright", "chromium", "dashboard_page")


@functools.lru_cache(maxsize=None)
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


def request_context():
    from tensorboard import context

    return context.RequestContext()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoard:
    """A real `tensorboard --logdir` subprocess on 127.0.0.1, queried over HTTP."""

    def __init__(self, logdir, *extra_args, load_fast="auto", reload_interval=1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = pathlib.Path(logdir).parent / f"tensorboard-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        args = [
            sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
            "--port", str(self.port), "--reload_interval", str(reload_interval), *extra_args,
        ]
        if load_fast != "auto":
            args += ["--load_fast", load_fast]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_until_serving()
        except BaseException:
            self.close()  # no server or log file left behind by a failed start
            raise

    def _wait_until_serving(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tensorboard exited: {self.log_path.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.url + "/data/plugins_listing", timeout=2).read()
                return
            time.sleep(0.2)
        raise RuntimeError(f"tensorboard did not serve within {timeout} s")

    def get(self, route, params=None, raw=False):
        """(status, body): body is parsed JSON unless raw; 4xx/5xx are returned, not raised."""
        query = "" if not params else "?" + urllib.parse.urlencode(params)
        url = self.url + (route if route.startswith("/data") else PLUGIN_ROUTE + route) + query
        request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as e:
            status, body, headers = e.code, e.read(), e.headers
        if raw:
            return status, body, headers
        return status, json.loads(body) if body else None

    def wait_for(self, predicate, timeout=60, interval=0.5):
        """Polls /tags until predicate(tags) is true; returns the tags."""
        deadline = time.time() + timeout
        tags = None
        while time.time() < deadline:
            status, tags = self.get("/tags")
            if status == 200 and predicate(tags):
                return tags
            time.sleep(interval)
        raise AssertionError(f"tensorboard did not show the expected data in {timeout} s; last /tags: {tags}")

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


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


def random_attention(rng, layers, heads, n, causal=True, sharpness=3.0):
    """Softmax of random scores: float32 [layers, heads, n, n], rows summing to 1."""
    scores = rng.normal(size=(layers, heads, n, n)) * sharpness
    if causal:
        scores = np.where(np.triu(np.ones((n, n), dtype=bool), 1), -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tiny_gpt2(layers=2, heads=4, embed=32, vocab=None, seed=0, attn_implementation="eager"):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=layers, n_head=heads, n_embd=embed, vocab_size=vocab or 50257, n_positions=1024,
    )
    config._attn_implementation = attn_implementation
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from tb_attention.convert import assets

    return assets.gpt2_tokenizer()


# ---------------------------------------------------------------------------------------------
# TensorBoard's two data providers, in process


def python_provider(logdir, samples_per_plugin=None):
    """The Python loader (event multiplexer), with TensorBoard's flags fixed by our TBLoader."""
    import argparse

    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    from tb_attention.serve.loader import TBLoader

    flags = argparse.Namespace(samples_per_plugin=dict(samples_per_plugin or {}))
    TBLoader().fix_flags(flags)
    multiplexer = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance=flags.samples_per_plugin)
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, str(logdir))


@contextlib.contextmanager
def rust_provider(logdir, samples_per_plugin=None):
    """The Rust data server (tensorboard-data-server) as a subprocess, with our flags."""
    import argparse

    from tensorboard.data import server_ingester
    from tensorboard.util import grpc_util

    from tb_attention.serve.loader import TBLoader

    flags = argparse.Namespace(samples_per_plugin=dict(samples_per_plugin or {}))
    TBLoader().fix_flags(flags)
    ingester = server_ingester.SubprocessServerDataIngester(
        server_ingester.get_server_binary(),
        str(logdir),
        reload_interval=1,
        channel_creds_type=grpc_util.ChannelCredsType.LOCAL,
        samples_per_plugin=flags.samples_per_plugin,
    )
    ingester.start()
    yield ingester.data_provider


def read_blob_steps(provider, run, tag, experiment_id=""):
    from tensorboard.data import provider as tb_provider

    data = provider.read_blob_sequences(
        request_context(),
        experiment_id=experiment_id, plugin_name="attention", downsample=10**9,
        run_tag_filter=tb_provider.RunTagFilter(runs=[run], tags=[tag]),
    )
    return data.get(run, {}).get(tag, [])


def read_step_blob(provider, run, tag, step, manifest, ref):
    """Blob `ref` of an attention step, from its main record or a part tag's."""
    from tb_attention.storage import schema

    part, index = schema.blob_location(manifest, ref, "blob")
    datum = next(d for d in read_blob_steps(provider, run, tag if not part else schema.part_tag(tag, part)) if d.step == step)
    return provider.read_blob(request_context(), blob_key=datum.values[index].blob_key)


def read_examples(provider, run, tag, step, group=None):
    """Decoded examples of one step, read through a data provider like the plugin does:
    (the /examples entry, the group's AttentionExample over all layers, its QueryKey or None)."""
    from tb_attention.storage import codecs, schema

    datum = next(d for d in read_blob_steps(provider, run, tag) if d.step == step)
    manifest = codecs.decode_manifest(provider.read_blob(request_context(), blob_key=datum.values[0].blob_key))
    read = lambda ref: read_step_blob(provider, run, tag, step, manifest, ref)  # noqa: E731
    out = []
    for entry in manifest["examples"]:
        g = schema.find_group(entry, group)
        if "attention_blobs" in g:
            example = codecs.decode_attention(codecs.join_attention_layers([read(r) for r in g["attention_blobs"]])[0])
            qk = None if not g.get("qk_blobs") else codecs.decode_qk(codecs.join_qk_layers([read(r) for r in g["qk_blobs"]]))
        else:  # v1
            example = codecs.decode_attention(read(g["attention_blob"]))
            qk = None if g.get("qk_blob") is None else codecs.decode_qk(read(g["qk_blob"]))
        out.append((schema.example_payload(entry), example, qk))
    return out


def train_step(model, optimizer, batch):
    """One language-model training step on `batch` (ids as labels too); the loss as a float."""
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


def run_in_threads(work, names, repeats=5):
    """Runs work(name) `repeats` times in one thread per name, all at once; {name: last result}.
    An exception in any thread is raised here."""
    import threading

    results, errors = {}, []

    def run(name):
        try:
            for _ in range(repeats):
                results[name] = work(name)
        except Exception as e:  # raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
