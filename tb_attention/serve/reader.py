"""The plugin's reads through TensorBoard's data provider, with the caches that make them cheap."""

# TensorBoard's data provider (the Python multiplexer or the Rust data server) is the only source.
# Its calls cost: a Rust read_blob_sequences is ~40 ms whatever it returns, and a metric tag's read
# returns every step. Listings of blob tags are frozen (their plugin data is fixed at the first
# event), so they are remembered; the rest is remembered until the tag's listing changes.

import collections
import concurrent.futures
import math
import threading
import time

from tensorboard.data import provider

from tb_attention.storage import codecs, schema

_STEP_INDEX_SECONDS = 5.0  # a blob tag's steps are re-read after this long (a rewritten step: rare)
_TAG_ENTRIES = 16384  # /tags entries remembered (one per run and tag)
_DOWNSAMPLE = 10**9  # steps per time series: every step the loader kept (0 would return none)
_CACHE_SIZE = 256  # decoded manifests and exemplar tables
_CHECKED_SIZE = 4096  # blobs known to be readable or broken (a key each)
# Blobs as read from the data provider, so that a blob asked again (zooming, brushing) costs no
# read: the Python loader decodes the step's whole tensor for each blob, the Rust one makes a gRPC call.
BLOB_CACHE_BYTES = 32 << 20  # bytes of blobs remembered, in all
_BLOB_ITEM_BYTES = 16 << 20  # larger blobs are read each time (a 4,096-token top-32 layer of 32 heads: ~9 MiB)


class NotFound(LookupError):
    """A run, tag, step or blob that does not exist (the routes answer 404)."""


class LRU:
    """A small thread-safe cache (TensorBoard serves requests on threads)."""

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


class ByteLRU:
    """A thread-safe cache of bytes bounded in bytes: `max_bytes` in all, none above `max_item` bytes."""

    def __init__(self, max_bytes, max_item):
        self._max_bytes, self._max_item = max_bytes, max_item
        self._items = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self):
        return self._bytes

    def peek(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        if len(value) > self._max_item:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += len(value) - (0 if old is None else len(old))
            self._items[key] = value
            while self._bytes > self._max_bytes:
                self._bytes -= len(self._items.popitem(last=False)[1])

    def get(self, key, compute):
        value = self.peek(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value


class Reader:
    """Reads one data provider on behalf of the routes; every method takes (ctx, experiment_id, ...)."""

    def __init__(self, data_provider):
        self._provider = data_provider
        self._cache = LRU(_CACHE_SIZE)
        self._checked = LRU(_CHECKED_SIZE)  # True per (blob, check) passed, the FormatError per blob failed
        self._blobs = ByteLRU(BLOB_CACHE_BYTES, _BLOB_ITEM_BYTES)
        self._listings = LRU(_CHECKED_SIZE)  # blob tags' listings, whose plugin data is frozen
        self._step_index = LRU(_CHECKED_SIZE)  # (time read, {step: datum}) per blob tag
        self._tag_entries = LRU(_TAG_ENTRIES)  # (listing signature, /tags entry) per tag
        self._tensors = LRU(_TAG_ENTRIES)  # (listing signature, data one per step) per metric tag
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="attention-plugin")

    # -----------------------------------------------------------------------------------------
    # /tags

    def tags(self, ctx, experiment_id):
        """{run: {tag: /tags entry}}. A tag's entry is kept until its newest step or wall time
        changes, so a dashboard polling /tags re-reads only what training wrote since."""
        listings = [
            self._pool.submit(listing, ctx, experiment_id=experiment_id, plugin_name=schema.PLUGIN_NAME)
            for listing in (self._provider.list_blob_sequences, self._provider.list_tensors)
        ]
        series = [{run: {t: ts for t, ts in tags.items() if not _is_part(ts)} for run, tags in f.result().items()}
                  for f in listings]
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
                    reader, ctx, experiment_id=experiment_id, plugin_name=schema.PLUGIN_NAME,
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

    # -----------------------------------------------------------------------------------------
    # Blob sequences

    def _blob_series(self, ctx, experiment_id, run, tag):
        """The listing of a blob tag, or None; remembered once found (its plugin data is frozen)."""
        key = (experiment_id, run, tag)
        ts = self._listings.peek(key)
        if ts is None:
            series = self._provider.list_blob_sequences(
                ctx, experiment_id=experiment_id, plugin_name=schema.PLUGIN_NAME,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
            )
            ts = series.get(run, {}).get(tag)
            if ts is not None:
                self._listings.get(key, lambda: ts)
        return ts

    def blob_datum(self, ctx, experiment_id, run, tag, step, kind):
        """The blob sequence datum of (run, tag, step), checking the tag holds `kind`."""
        ts = self._blob_series(ctx, experiment_id, run, tag)
        if ts is None:
            raise NotFound(f"run {run!r} has no {kind} tag {tag!r}")
        found = schema.parse_plugin_data(ts.plugin_content).get("kind")
        if found != kind:
            raise NotFound(f"tag {tag!r} of run {run!r} holds {found}, not {kind}")
        key = (experiment_id, run, tag)
        cached = self._step_index.peek(key)
        if cached is None or step not in cached[1] or time.monotonic() - cached[0] > _STEP_INDEX_SECONDS:
            data = self._provider.read_blob_sequences(
                ctx, experiment_id=experiment_id, plugin_name=schema.PLUGIN_NAME, downsample=_DOWNSAMPLE,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
            )
            cached = (time.monotonic(), {d.step: d for d in data.get(run, {}).get(tag, [])})
            self._step_index.put(key, cached)
        if step in cached[1]:
            return cached[1][step]
        raise NotFound(f"tag {tag!r} of run {run!r} has no step {step}")

    def read_blob(self, ctx, datum, index, what):
        if index >= len(datum.values):
            raise schema.FormatError(f"step {datum.step} lacks blob {index} ({what}); the event may be truncated")
        return self._provider.read_blob(ctx, blob_key=datum.values[index].blob_key)

    def manifest(self, ctx, datum):
        key = ("manifest", datum.values[0].blob_key if datum.values else None, datum.wall_time)
        return self._cache.get(key, lambda: codecs.decode_manifest(self.read_blob(ctx, datum, 0, "manifest")))

    def step_blob(self, ctx, experiment_id, run, tag, datum, ref, what, check=None):
        """Blob `ref` of an attention step (its main record's or a part's); `check` (a codecs check)
        is run once per blob, so the binary routes never serve a body the browser cannot decode."""
        part, index = schema.blob_location(self.manifest(ctx, datum), ref, what)
        if part:
            try:
                datum = self.blob_datum(ctx, experiment_id, run, schema.part_tag(tag, part), datum.step,
                                        schema.KIND_ATTENTION_PART)
            except NotFound as e:
                raise schema.FormatError(f"part {part} of the step, holding the {what}, is missing ({e})") from None
        if index >= len(datum.values):
            return self.read_blob(ctx, datum, index, what)  # raises, naming the missing blob
        # A blob is known by where it is and by the write that stored it (a rewritten step has a
        # new wall time): checked once, its bytes remembered; one that failed is not read again.
        key = (experiment_id, run, tag, part, datum.step, index, datum.values[index].blob_key, datum.wall_time)
        failed = self._checked.peek(key)
        if isinstance(failed, schema.FormatError):
            raise type(failed)(*failed.args)
        blob = self._blobs.get(key, lambda: self.read_blob(ctx, datum, index, what))
        if check is not None and self._checked.peek((key, check)) is None:
            try:
                check(blob)
            except schema.FormatError as e:
                self._checked.put(key, e)
                raise
            self._checked.put((key, check), True)
        return blob

    def step_blobs(self, ctx, experiment_id, run, tag, datum, refs, what, check=None):
        """Several blobs of a step (e.g. a group's layers), read concurrently: each read is a round
        trip to the data server."""
        if len(refs) == 1:
            return [self.step_blob(ctx, experiment_id, run, tag, datum, refs[0], what(0), check)]
        reads = [self._pool.submit(self.step_blob, ctx, experiment_id, run, tag, datum, ref, what(i), check)
                 for i, ref in enumerate(refs)]
        return [r.result() for r in reads]

    def exemplar_table(self, ctx, datum):
        key = ("exemplars", datum.values[0].blob_key if datum.values else None, datum.wall_time)
        return self._cache.get(key, lambda: codecs.decode_json(self.read_blob(ctx, datum, 0, "exemplars")))

    # -----------------------------------------------------------------------------------------
    # Tensors (metrics)

    def tensor_data(self, ctx, experiment_id, run, tags=None):
        """(listing, data) of a run's metric tags: data[tag] is one datum per step, in step order.

        Values are remembered per tag until its listing changes (a new step or a rewrite), so the
        views that ask for one step of every metric do not re-read every step of every metric.
        """
        listing = self._provider.list_tensors(
            ctx, experiment_id=experiment_id, plugin_name=schema.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=tags),
        ).get(run, {})
        stale = [tag for tag, ts in listing.items() if self._cached_tensors(experiment_id, run, tag, ts) is None]
        if stale:
            read = self._provider.read_tensors(
                ctx, experiment_id=experiment_id, plugin_name=schema.PLUGIN_NAME, downsample=_DOWNSAMPLE,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=stale),
            ).get(run, {})
            for tag in stale:
                self._tensors.put((experiment_id, run, tag), (_signature(listing[tag]), one_per_step(read.get(tag, []))))
        return listing, {tag: self._cached_tensors(experiment_id, run, tag, ts) or [] for tag, ts in listing.items()}

    def _cached_tensors(self, experiment_id, run, tag, ts):
        cached = self._tensors.peek((experiment_id, run, tag))
        return cached[1] if cached is not None and cached[0] == _signature(ts) else None


def _is_part(ts):
    """Part tags hold blobs of another tag's steps: /tags does not list them."""
    try:
        return schema.parse_plugin_data(ts.plugin_content).get("kind") == schema.KIND_ATTENTION_PART
    except schema.FormatError:
        return False


def _signature(ts):
    """What changes in a tag's listing when something is written to it."""
    return (ts.max_step, ts.max_wall_time, ts.plugin_content)


def _describe_tag(ts, data):
    """One entry of /tags: the tag's kind, its steps and what its plugin data says."""
    try:
        content = schema.parse_plugin_data(ts.plugin_content)
    except schema.FormatError as e:
        entry = {"kind": "unsupported", "error": str(e), "steps": []}
        entry.update({k: v for k, v in (("description", ts.description), ("display_name", ts.display_name)) if v})
        return entry
    data = one_per_step(data)
    wall_times = [None if math.isnan(d.wall_time) else d.wall_time for d in data]
    return schema.tag_payload(content, [d.step for d in data], wall_times, ts.description, ts.display_name)


def one_per_step(data):
    """Data in step order, one datum per step: the last written wins.

    A run resumed from a checkpoint logs some steps again. The Rust loader keeps the newest write
    of a step; the Python loader keeps every write of a tensor (and the first of a blob sequence),
    which would put a step twice on a metric's curve.
    """
    by_step = {}
    for datum in data:
        by_step[datum.step] = datum
    return [by_step[step] for step in sorted(by_step)]
