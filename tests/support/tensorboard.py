"""A real `tensorboard --logdir` process for the tests, and TensorBoard's data providers read as the plugin reads them."""

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLUGIN_ROUTE = "/data/plugin/attention"


def request_context():
    from tensorboard import context

    return context.RequestContext()


def stop(process, timeout=10):
    """Terminates a server subprocess; killed if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(logdir, ready, *args, **kwargs):
    """A real `tensorboard` on `logdir` (arguments as TensorBoard's), yielded once its /tags satisfy
    `ready(tags)`; closed on leaving, however the block ends."""
    server = TensorBoard(logdir, *args, **kwargs)
    try:
        server.wait_for(ready)
        yield server
    finally:
        server.close()


class TensorBoard:
    """A real `tensorboard --logdir` subprocess on 127.0.0.1, queried over HTTP."""

    def __init__(self, logdir, *extra_args, load_fast="auto", reload_interval=1, log_folder=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # beside the logdir, or in log_folder (a URL logdir has no local folder)
        self.log_path = pathlib.Path(log_folder or pathlib.Path(logdir).parent) / f"tensorboard-{self.port}.log"
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
        stop(self.process)
        self._log.close()


def python_provider(logdir, samples_per_plugin=None):
    """The Python loader (event multiplexer), with TensorBoard's flags fixed by our TBLoader."""
    from tb_attention.serve.export import python_provider

    return python_provider(logdir, samples_per_plugin)


def plugin_routes(logdir):
    """get(route, **params) -> (status, JSON body) of our plugin's routes as TensorBoard mounts them, over
    its Python loader on `logdir`, without a server process."""
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    from tb_attention.serve.plugin import AttentionPlugin

    apps = AttentionPlugin(base_plugin.TBContext(data_provider=python_provider(logdir), logdir=str(logdir))).get_plugin_apps()

    def get(route, **params):
        response = Client(apps[route], Response).get(PLUGIN_ROUTE + route, query_string=params)
        return response.status_code, json.loads(response.get_data())

    return get


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
