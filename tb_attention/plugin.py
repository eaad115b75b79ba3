"""HTTP routes of the attention plugin, served from TensorBoard's data provider only."""

# Every route parses its request, calls an `*_impl` method and answers through
# `http_util.Respond` (which adds `X-Content-Type-Options: nosniff`). Errors are JSON
# `{"error": ...}`: 400 for a malformed or missing parameter, 404 for what does not exist,
# 422 for stored data this version cannot read. The routes are documented in http_api.md.

import collections
import concurrent.futures
import logging
import math
import mimetypes
import pathlib
import re
import threading
import time

import numpy as np
import werkzeug.wrappers
from tensorboard import errors as tb_errors
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin

from tb_attention import metadata

logger = logging.getLogger(__name__)

# A blob tag's steps are re-read when a step is asked for that was not there, or after this long
# (a rewritten step: rare). Each read costs the Rust data server ~40 ms, as much as the blob itself.
_STEP_INDEX_SECONDS = 5.0
_TAG_ENTRIES = 16384  # /tags entries remembered (one per run and tag)
_DOWNSAMPLE = 10**9  # steps per time series: every step the loader kept (0 would return none)
_STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
_CACHE_SIZE = 256  # decoded manifests and exemplar tables
_CHECKED_SIZE = 4096  # blobs known to be readable (a key each)
_INT_PATTERN = re.compile(r"[0-9]{1,19}")  # non-negative base-10 integer (< 2**63: an event's int64 step)
_INT_LIMIT = 2**63
_JSON = "application/json"


class _HttpError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _bad_request(message):
    return _HttpError(400, message)


def _not_found(message):
    return _HttpError(404, message)


def _route(handler):
    """Wraps a handler(self, request) so that every failure answers JSON 4xx, never 500."""

    @werkzeug.wrappers.Request.application
    def wrapper(self, request):
        try:
            if request.method not in ("GET", "HEAD"):
                raise _HttpError(405, f"{request.method} is not allowed; use GET")
            return handler(self, request)
        except _HttpError as e:
            return _error(request, e.code, str(e))
        except metadata.FormatError as e:
            return _error(request, 422, f"cannot read stored data: {e}")
        except tb_errors.PublicError as e:
            return _error(request, e.http_code if 400 <= e.http_code < 500 else 422, str(e))
        except Exception as e:  # a bug or a provider failure: say so, keep TensorBoard serving
            logger.exception("attention plugin: %s %s failed", request.path, request.query_string)
            return _error(request, 422, f"cannot serve this request: {type(e).__name__}: {e}")

    wrapper.__name__ = handler.__name__
    return wrapper


def _error(request, code, message):
    headers = [("Allow", "GET, HEAD")] if code == 405 else None  # a 405 must say what is allowed
    return http_util.Respond(request, {"error": message}, _JSON, code=code, headers=headers)


def _param(request, name, required=True):
    value = request.args.get(name)
    if value is None and required:
        raise _bad_request(f"missing parameter {name!r}")
    return value


def _int_param(request, name, required=True):
    value = _param(request, name, required)
    if value is None:
        return None
    if not _INT_PATTERN.fullmatch(value) or int(value) >= _INT_LIMIT:
        raise _bad_request(f"parameter {name!r} must be a non-negative integer, got {value!r}")
    return int(value)


def _json_floats(array):
    """Nested lists with NaN/inf as null (JSON has no NaN)."""
    array = np.asarray(array, dtype=np.float64)
    if np.all(np.isfinite(array)):
        return array.tolist()
    return np.where(np.isfinite(array), array, None).tolist()


class _LRU:
    """A small thread-safe cache of decoded blobs (TensorBoard serves requests on threads)."""

    def __init__(self, size):
        self._size = size
        self._items = collections.OrderedDict()
        self._lock = threading.Lock()

    def peek(self, key):
        with self._lock:
            return self._items.get(key)

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, key, compute):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        self.put(key, value)
        return value


class AttentionPlugin(base_plugin.TBPlugin):
    """Serves attention examples, metrics and exemplars; the dashboard is a dynamic ES module."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context):
        self._provider = context.data_provider
        self._cache = _LRU(_CACHE_SIZE)
        self._checked = _LRU(_CHECKED_SIZE)
        self._listings = _LRU(_CHECKED_SIZE)  # blob tags' listings, whose plugin data is frozen
        self._step_index = _LRU(_CHECKED_SIZE)  # (time read, {step: datum}) per blob tag
        self._tag_entries = _LRU(_TAG_ENTRIES)  # (listing signature, /tags entry) per tag
        self._tensors = _LRU(_TAG_ENTRIES)  # (listing signature, data one per step) per metric tag
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="attention-plugin")

    def get_plugin_apps(self):
        return {
            "/index.js": self._serve_index,
            "/static/*": self._serve_static,
            "/tags": self._serve_tags,
            "/examples": self._serve_examples,
            "/attention": self._serve_attention,
            "/qk": self._serve_qk,
            "/metric": self._serve_metric,
            "/metrics": self._serve_metrics,
            "/exemplars": self._serve_exemplars,
        }

    def is_active(self):
        return False  # activity comes from the data provider (data_plugin_names)

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Attention")

    # -----------------------------------------------------------------------------------------
    # Static files

    @_route
    def _serve_index(self, request):
        return self._static_file(request, "index.js")

    @_route
    def _serve_static(self, request):
        prefix = "/static/"
        path = request.path
        relative = path[path.index(prefix) + len(prefix) :] if prefix in path else ""
        return self._static_file(request, relative)

    def _static_file(self, request, relative):
        parts = relative.split("/")
        if not relative or "\\" in relative or "\0" in relative or any(p in ("", ".", "..") for p in parts):
            raise _not_found(f"no static file {relative!r}")
        try:
            path = (_STATIC_DIR / relative).resolve()
            if _STATIC_DIR not in path.parents or not path.is_file():
                raise _not_found(f"no static file {relative!r}")
            content = path.read_bytes()
        except OSError:  # e.g. a name too long for the file system
            raise _not_found(f"no static file {relative!r}") from None
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix in (".js", ".mjs"):
            content_type = "text/javascript"
        return http_util.Respond(request, content, content_type)

    # -----------------------------------------------------------------------------------------
    # Reading through the data provider

    @staticmethod
    def _context(request):
        return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)

    def tags_impl(self, ctx, experiment_id):
        # The listings are cheap; reading a tag's steps is not (a metric tag's values come with
        # them). A tag's description is kept until its newest step or wall time changes, so a
        # dashboard polling /tags re-reads only what training wrote since.
        listings = [
            self._pool.submit(listing, ctx, experiment_id=experiment_id, plugin_name=metadata.PLUGIN_NAME)
            for listing in (self._provider.list_blob_sequences, self._provider.list_tensors)
        ]
        series = [f.result() for f in listings]
        readers = (self._provider.read_blob_sequences, self._provider.read_tensors)
        reads = []
        for reader, listing in zip(readers, series):
            stale = [
                (run, tag)
                for run, tags in listing.items()
                for tag, ts in tags.items()
                if (self._tag_entries.peek((experiment_id, run, tag)) or (None,))[0] != _signature(ts)
            ]
            if stale:
                tag_filter = provider.RunTagFilter(runs={r for r, _ in stale}, tags={t for _, t in stale})
                future = self._pool.submit(
                    reader, ctx, experiment_id=experiment_id, plugin_name=metadata.PLUGIN_NAME,
                    downsample=_DOWNSAMPLE, run_tag_filter=tag_filter,
                )
                reads.append((listing, stale, future))
        for listing, stale, future in reads:
            data = future.result()
            for run, tag in stale:
                ts = listing[run][tag]
                entry = _describe_tag(ts, data.get(run, {}).get(tag, []))
                self._tag_entries.put((experiment_id, run, tag), (_signature(ts), entry))
        out = collections.defaultdict(dict)
        for listing in series:
            for run, tags in listing.items():
                for tag in tags:
                    out[run][tag] = self._tag_entries.peek((experiment_id, run, tag))[1]
        return dict(out)

    def _blob_series(self, ctx, experiment_id, run, tag):
        """The listing of a blob tag, or None. Its plugin data is frozen at the tag's first event, so
        a listing once found is remembered (it saves the Rust data server a ~40 ms call)."""
        key = (experiment_id, run, tag)
        ts = self._listings.peek(key)
        if ts is None:
            series = self._provider.list_blob_sequences(
                ctx,
                experiment_id=experiment_id,
                plugin_name=metadata.PLUGIN_NAME,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
            )
            ts = series.get(run, {}).get(tag)
            if ts is not None:
                self._listings.get(key, lambda: ts)
        return ts

    def _blob_datum(self, ctx, experiment_id, run, tag, step, kind):
        """The blob sequence datum of (run, tag, step), checking the tag holds `kind`."""
        ts = self._blob_series(ctx, experiment_id, run, tag)
        if ts is None:
            raise _not_found(f"run {run!r} has no {kind} tag {tag!r}")
        found = metadata.parse_plugin_data(ts.plugin_content).get("kind")
        if found != kind:
            raise _not_found(f"tag {tag!r} of run {run!r} holds {found}, not {kind}")
        key = (experiment_id, run, tag)
        cached = self._step_index.peek(key)
        if cached is None or step not in cached[1] or time.monotonic() - cached[0] > _STEP_INDEX_SECONDS:
            data = self._provider.read_blob_sequences(
                ctx,
                experiment_id=experiment_id,
                plugin_name=metadata.PLUGIN_NAME,
                downsample=_DOWNSAMPLE,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
            )
            cached = (time.monotonic(), {d.step: d for d in data.get(run, {}).get(tag, [])})
            self._step_index.put(key, cached)
        if step in cached[1]:
            return cached[1][step]
        raise _not_found(f"tag {tag!r} of run {run!r} has no step {step}")

    def _read_blob(self, ctx, datum, index, what):
        if index >= len(datum.values):
            raise metadata.FormatError(f"step {datum.step} lacks blob {index} ({what}); the event may be truncated")
        return self._provider.read_blob(ctx, blob_key=datum.values[index].blob_key)

    def _checked_blob(self, ctx, datum, index, what, check):
        """A blob the binary routes serve as is (gzip-encoded): a corrupt one answers 422, not a
        body the browser cannot decode. Checked once per blob, then remembered."""
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise metadata.FormatError(f"the manifest gives no valid blob index for the {what}")
        blob = self._read_blob(ctx, datum, index, what)
        self._checked.get((datum.values[index].blob_key, datum.wall_time), lambda: check(blob) and True)
        return blob

    def _manifest(self, ctx, datum):
        key = ("manifest", datum.values[0].blob_key if datum.values else None, datum.wall_time)
        return self._cache.get(key, lambda: metadata.parse_manifest(self._read_blob(ctx, datum, 0, "manifest")))

    def _example(self, ctx, datum, index):
        examples = self._manifest(ctx, datum)["examples"]
        if index >= len(examples):
            raise _not_found(f"step {datum.step} has {len(examples)} examples; no example {index}")
        return examples[index]

    def examples_impl(self, ctx, experiment_id, run, tag, step):
        datum = self._blob_datum(ctx, experiment_id, run, tag, step, metadata.KIND_ATTENTION)
        examples = [
            {k: v for k, v in e.items() if k not in ("attention_blob", "qk_blob")}
            for e in self._manifest(ctx, datum)["examples"]
        ]
        return {"run": run, "tag": tag, "step": step, "wall_time": datum.wall_time, "examples": examples}

    def attention_blob_impl(self, ctx, experiment_id, run, tag, step, example):
        datum = self._blob_datum(ctx, experiment_id, run, tag, step, metadata.KIND_ATTENTION)
        entry = self._example(ctx, datum, example)
        return self._checked_blob(ctx, datum, entry["attention_blob"], f"attention of example {example}",
                                  metadata.check_attention_blob)

    def qk_blob_impl(self, ctx, experiment_id, run, tag, step, example):
        datum = self._blob_datum(ctx, experiment_id, run, tag, step, metadata.KIND_ATTENTION)
        entry = self._example(ctx, datum, example)
        if entry.get("qk_blob") is None:
            raise _not_found(
                f"no query/key vectors were logged for example {example} of {run!r}/{tag!r} at step {step} "
                "(log with with_qk=True to see the neuron view)"
            )
        return self._checked_blob(ctx, datum, entry["qk_blob"], f"query/key of example {example}",
                                  metadata.check_qk_blob)

    def _tensor_data(self, ctx, experiment_id, run, tags=None):
        """(listing, data) of a run's metric tags: data[tag] is one datum per step, in step order.

        Values are remembered per tag until its listing changes (a new step or a rewrite), so the
        views that ask for one step of every metric do not re-read every step of every metric.
        """
        listing = self._provider.list_tensors(
            ctx, experiment_id=experiment_id, plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=tags),
        ).get(run, {})
        stale = [tag for tag, ts in listing.items() if self._cached_tensors(experiment_id, run, tag, ts) is None]
        if stale:
            read = self._provider.read_tensors(
                ctx, experiment_id=experiment_id, plugin_name=metadata.PLUGIN_NAME, downsample=_DOWNSAMPLE,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=stale),
            ).get(run, {})
            for tag in stale:
                self._tensors.put((experiment_id, run, tag), (_signature(listing[tag]), _one_per_step(read.get(tag, []))))
        return listing, {tag: self._cached_tensors(experiment_id, run, tag, ts) or [] for tag, ts in listing.items()}

    def _cached_tensors(self, experiment_id, run, tag, ts):
        cached = self._tensors.peek((experiment_id, run, tag))
        return cached[1] if cached is not None and cached[0] == _signature(ts) else None

    def metric_impl(self, ctx, experiment_id, run, tag):
        listing, data = self._tensor_data(ctx, experiment_id, run, [tag])
        ts = listing.get(tag)
        if ts is None:
            raise _not_found(f"run {run!r} has no metric tag {tag!r}")
        metadata.parse_plugin_data(ts.plugin_content)  # a newer format answers 422, as /tags says
        series = data[tag]
        return {
            "run": run,
            "tag": tag,
            "steps": [d.step for d in series],
            "wall_times": [d.wall_time for d in series],
            "values": [_json_floats(d.numpy) for d in series],
        }

    def metrics_impl(self, ctx, experiment_id, run, probe, step):
        listing, data = self._tensor_data(ctx, experiment_id, run)
        names = {}
        for tag, ts in listing.items():
            try:
                content = metadata.parse_plugin_data(ts.plugin_content)
            except metadata.FormatError:
                continue
            if content.get("kind") == metadata.KIND_METRIC and content.get("probe") == probe:
                names[tag] = content.get("metric")
        if not names:
            raise _not_found(f"run {run!r} has no metrics of probe {probe!r}")
        metrics = {}
        for tag in sorted(names):
            for datum in data[tag]:
                if datum.step == step:
                    metrics[names[tag]] = _json_floats(datum.numpy)
        if not metrics:
            raise _not_found(f"probe {probe!r} of run {run!r} has no metrics at step {step}")
        return {"run": run, "probe": probe, "step": step, "metrics": dict(sorted(metrics.items()))}

    def exemplars_impl(self, ctx, experiment_id, run, tag, step):
        datum = self._blob_datum(ctx, experiment_id, run, tag, step, metadata.KIND_EXEMPLARS)
        key = ("exemplars", datum.values[0].blob_key if datum.values else None, datum.wall_time)
        table = self._cache.get(key, lambda: metadata.decode_json(self._read_blob(ctx, datum, 0, "exemplars")))
        if not isinstance(table, dict):
            raise metadata.FormatError("exemplar table is not a JSON object")
        return {"run": run, "tag": tag, "step": step, **table}

    # -----------------------------------------------------------------------------------------
    # Routes

    @_route
    def _serve_tags(self, request):
        return http_util.Respond(request, self.tags_impl(*self._context(request)), _JSON)

    @_route
    def _serve_examples(self, request):
        run, tag = _param(request, "run"), _param(request, "tag")
        step = _int_param(request, "step")
        return http_util.Respond(request, self.examples_impl(*self._context(request), run, tag, step), _JSON)

    @_route
    def _serve_attention(self, request):
        run, tag = _param(request, "run"), _param(request, "tag")
        step, example = _int_param(request, "step"), _int_param(request, "example")
        as_json, layer, head = self._format_params(request)
        blob = self.attention_blob_impl(*self._context(request), run, tag, step, example)
        if not as_json:
            return http_util.Respond(request, blob, "application/octet-stream", content_encoding="gzip")
        try:
            decoded = metadata.decode_attention(blob, layer=layer, head=head)  # only what is asked for
        except IndexError as e:
            raise _not_found(str(e)) from None
        weights = decoded.attention
        return http_util.Respond(
            request, {**decoded.header, "shape": list(weights.shape), "attention": weights.tolist()}, _JSON
        )

    @_route
    def _serve_qk(self, request):
        run, tag = _param(request, "run"), _param(request, "tag")
        step, example = _int_param(request, "step"), _int_param(request, "example")
        as_json, layer, head = self._format_params(request)
        blob = self.qk_blob_impl(*self._context(request), run, tag, step, example)
        if not as_json:
            return http_util.Respond(request, blob, "application/octet-stream", content_encoding="gzip")
        decoded = metadata.decode_qk(blob)
        query = _narrow(decoded.query, layer, head, decoded.header)
        group = decoded.header["num_heads"] // decoded.header["num_kv_heads"]
        key = _narrow(decoded.key, layer, None if head is None else head // group, decoded.header, kv=True)
        body = {
            **decoded.header,
            "shape_query": list(query.shape),
            "shape_key": list(key.shape),
            "query": query.tolist(),
            "key": key.tolist(),
        }
        return http_util.Respond(request, body, _JSON)

    @staticmethod
    def _format_params(request):
        fmt = _param(request, "format", required=False)
        if fmt not in (None, "binary", "json"):
            raise _bad_request(f"parameter 'format' must be 'json' or 'binary', got {fmt!r}")
        return fmt == "json", _int_param(request, "layer", False), _int_param(request, "head", False)

    @_route
    def _serve_metric(self, request):
        run, tag = _param(request, "run"), _param(request, "tag")
        return http_util.Respond(request, self.metric_impl(*self._context(request), run, tag), _JSON)

    @_route
    def _serve_metrics(self, request):
        run, probe = _param(request, "run"), _param(request, "probe")
        step = _int_param(request, "step")
        return http_util.Respond(request, self.metrics_impl(*self._context(request), run, probe, step), _JSON)

    @_route
    def _serve_exemplars(self, request):
        run, tag = _param(request, "run"), _param(request, "tag")
        step = _int_param(request, "step")
        return http_util.Respond(request, self.exemplars_impl(*self._context(request), run, tag, step), _JSON)


def _narrow(array, layer, head, header, kv=False):
    """array[layer][head] for the axes asked for, with a 404 naming an index out of range."""
    heads = header["num_kv_heads" if kv else "num_heads"]
    if layer is not None:
        if layer >= header["num_layers"]:
            raise _not_found(f"layer {layer} does not exist: the example has {header['num_layers']} layers")
        array = array[layer]
    if head is not None:
        if head >= heads:
            raise _not_found(f"head {head} does not exist: the example has {heads} heads")
        array = array[:, head] if layer is None else array[head]
    return array


def _signature(ts):
    """What changes in a tag's listing when something is written to it."""
    return (ts.max_step, ts.max_wall_time, ts.plugin_content)


def _describe_tag(ts, data):
    """One entry of /tags: the tag's kind, its steps and what its plugin data says."""
    entry = {}
    if ts.description:
        entry["description"] = ts.description
    if ts.display_name:
        entry["display_name"] = ts.display_name
    try:
        content = metadata.parse_plugin_data(ts.plugin_content)
    except metadata.FormatError as e:
        return {**entry, "kind": "unsupported", "error": str(e), "steps": []}
    entry.update({k: v for k, v in content.items() if k != "version"})
    data = _one_per_step(data)
    entry["steps"] = [d.step for d in data]
    entry["wall_times"] = [d.wall_time for d in data]
    if any(math.isnan(w) for w in entry["wall_times"]):
        entry["wall_times"] = [None if math.isnan(w) else w for w in entry["wall_times"]]
    return entry


def _one_per_step(data):
    """Data in step order, one datum per step: the last written wins.

    A run resumed from a checkpoint logs some steps again. The Rust loader keeps the newest write
    of a step; the Python loader keeps every write of a tensor (and the first of a blob sequence),
    which would put a step twice on a metric's curve.
    """
    by_step = {}
    for datum in data:
        by_step[datum.step] = datum
    return [by_step[step] for step in sorted(by_step)]
