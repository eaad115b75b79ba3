"""The dashboard outside TensorBoard: a pack of the routes' answers for a selection of a logdir, and
the HTML that carries it (an exported file, a notebook output). The pack's layout and embedding are
in http_api.md, "Exported files and notebook outputs: the pack"."""

# Every answer is made by the plugin's own `*_impl` methods over TensorBoard's Python loader, so an
# exported file shows exactly what the Attention tab would. Attention and q/k go one layer at a time
# (the dashboard joins a whole group itself) and uncompressed: the stored blobs are Huffman-only
# gzip, and one deflate of the whole pack at level 9 is 5-15 % smaller than their sum.

import base64
import functools
import gzip
import html
import json
import os
import pathlib
import posixpath
import re
import struct
import urllib.parse
import uuid

from tensorboard import context as tb_context
from tensorboard import errors as tb_errors
from tensorboard.plugins import base_plugin

from tb_attention.serve.plugin import AttentionPlugin
from tb_attention.serve.reader import NotFound
from tb_attention.serve.routes import STATIC_DIR, HttpError
from tb_attention.storage import codecs, schema

PACK_MAGIC = b"TBAP"
PACK_VERSION = 1
_PREAMBLE = struct.Struct("<4sII")  # magic, version, index length
_ESCAPE = 0x7E  # latin1 embedding: 0x00, 0x0D, '<' and '~' become ~ then the byte XOR 0x40
_ESCAPED = (0x00, 0x0D, 0x3C, _ESCAPE)
MAX_COMPARED_POINTS = 24  # (run, step) points of a tag beyond which /compare is packed for neighbours only
VIEWS = schema.VIEWS
THEMES = ("light", "dark")
ENCODINGS = ("latin1", "base64")
_ALL = "all"


class ExportError(ValueError):
    """A selection that names what the logdir does not hold, or an option we cannot honour."""


# ---------------------------------------------------------------------------------------------
# The pack


def key(route, params):
    """The pack's key of a request: route?name=value&... sorted by name, values as encodeURIComponent."""
    items = sorted((name, str(value)) for name, value in params.items() if value is not None)
    return route + "?" + "&".join(f"{name}={urllib.parse.quote(value, safe=_URI_SAFE)}" for name, value in items)


_URI_SAFE = "-_.!~*'()"  # what JavaScript's encodeURIComponent leaves as it is


class Pack:
    """The answers of a selection, by key; `to_bytes` gives the compressed pack."""

    def __init__(self, title="", source=""):
        self.title = title
        self.source = source
        self.run_order = []
        self._entries = {}  # key -> [offset, length, kind]
        self._bodies = {}  # key -> bytes, in the order of their offsets
        self._size = 0

    def __contains__(self, k):
        return k in self._entries

    def __len__(self):
        return len(self._entries)

    def keys(self):
        return self._entries.keys()

    def body(self, route, params):
        """The answer's bytes to a request (KeyError when the pack does not hold it)."""
        return self._bodies[key(route, params)]

    def add(self, route, params, body, kind):
        """Adds the answer to a request: `body` a dict (json) or bytes (`binary`, `png`)."""
        if kind == "json":
            body = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        k = key(route, params)
        if k in self._entries:
            raise ValueError(f"the pack already answers {k}")  # offsets follow the bodies' order
        self._entries[k] = [self._size, len(body), kind]
        self._bodies[k] = body
        self._size += len(body)

    def raw(self):
        """The uncompressed pack."""
        index = json.dumps({"entries": self._entries, "run_order": self.run_order, "title": self.title,
                            "source": self.source}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return b"".join([_PREAMBLE.pack(PACK_MAGIC, PACK_VERSION, len(index)), index, *self._bodies.values()])

    def to_bytes(self):
        """The pack gzip-compressed (no timestamp: the same selection gives the same bytes)."""
        return gzip.compress(self.raw(), compresslevel=9, mtime=0)


def read_pack(data):
    """(index, {key: body bytes}) of a compressed pack: the inverse of Pack.to_bytes (for tests and tools)."""
    raw = gzip.decompress(data)
    magic, version, length = _PREAMBLE.unpack_from(raw)
    if magic != PACK_MAGIC or version > PACK_VERSION:
        raise ExportError(f"not a tb-attention pack of version ≤ {PACK_VERSION}")
    start = _PREAMBLE.size + length
    index = json.loads(raw[_PREAMBLE.size : start].decode("utf-8"))
    bodies = {k: raw[start + offset : start + offset + size] for k, (offset, size, _) in index["entries"].items()}
    return index, bodies


# ---------------------------------------------------------------------------------------------
# A selection of a logdir, answered by the plugin


def python_provider(logdir, samples_per_plugin=None, runs=None):
    """TensorBoard's Python loader over `logdir` (local, s3:// or gs://), with its flags fixed by our
    TBLoader (every step of ours kept, unless `samples_per_plugin` says otherwise), loaded once. `runs`:
    only these runs' folders (and their subfolders, as TensorBoard names them) are read."""
    import argparse

    from tensorboard.backend.event_processing import data_provider, io_wrapper, plugin_event_multiplexer

    from tb_attention.serve.loader import TBLoader
    from tb_attention.storage import logdir as logdirs

    flags = argparse.Namespace(samples_per_plugin=dict(samples_per_plugin or {}))
    TBLoader().fix_flags(flags)
    multiplexer = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance=flags.samples_per_plugin)
    if runs is None:
        multiplexer.AddRunsFromDirectory(str(logdir))
    else:  # named as AddRunsFromDirectory(logdir) names them: their paths from the logdir
        relpath = posixpath.relpath if logdirs.is_url(str(logdir)) else os.path.relpath
        for run in runs:
            for folder in io_wrapper.GetLogdirSubdirectories(logdirs.join(str(logdir), run)):
                multiplexer.AddRun(folder, name=relpath(folder, str(logdir)))
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, str(logdir))


def pack_logdir(logdir, runs=None, tags=None, steps=None, examples=None, title=None):
    """The Pack of a logdir's selection:
    - runs: run names (None: every run with attention data);
    - tags: attention tags (None: all of the runs'); their metric and exemplar tags come along, and
      the training monitor's metrics (`attention_health`) when tags is None or names it;
    - steps: None (each tag's newest step), "all", or step numbers (each (run, tag) keeps those it
      holds; a step no selected tag holds is an error);
    - examples: None (all) or example indices, each of which must exist at every selected step."""
    provider = python_provider(logdir, runs=runs)
    plugin = AttentionPlugin(base_plugin.TBContext(data_provider=provider, logdir=str(logdir)))
    pack = Pack(title=title or _default_title(logdir, runs), source=f"tb-attention export of {logdir}")
    _Packer(plugin, pack, lambda: _runs_of(logdir)).add(runs, tags, steps, examples)
    return pack


def _runs_of(logdir):
    """The runs of the whole logdir with data of ours, named (read only to say what a wrong name could be)."""
    plugin = AttentionPlugin(base_plugin.TBContext(data_provider=python_provider(logdir), logdir=str(logdir)))
    return _names(plugin.tags_impl(tb_context.RequestContext(), ""))


def _default_title(logdir, runs):
    name = pathlib.PurePosixPath(str(logdir).rstrip("/")).name or str(logdir)
    return f"{name}: {', '.join(runs)}" if runs else name


class _Packer:
    def __init__(self, plugin, pack, logdir_runs):
        self.plugin = plugin
        self.pack = pack
        self.ctx = tb_context.RequestContext()
        self.logdir_runs = logdir_runs  # () -> the logdir's runs, named, for an error
        self.groups = {}  # tag -> its groups as requests name them: None (the first), then the others' names

    def call(self, impl, *args, **kwargs):
        """An `*_impl` answer; a route's 4xx becomes an ExportError with its message."""
        try:
            return impl(self.ctx, "", *args, **kwargs)
        except (HttpError, NotFound, schema.FormatError, tb_errors.PublicError) as e:
            raise ExportError(str(e)) from None

    def add(self, runs, tags, steps, examples):
        listing = self.call(self.plugin.tags_impl)
        chosen = self._choose(listing, runs, tags, steps)
        served = {}
        for run, entries in chosen.items():
            for tag, (info, kept) in entries.items():
                served.setdefault(run, {})[tag] = dict(info, steps=kept, **_wall_times(info, kept))
                if info["kind"] == schema.KIND_ATTENTION:
                    for step in kept:
                        self._step(run, tag, step, examples)
                elif info["kind"] == schema.KIND_EXEMPLARS:
                    for step in kept:
                        self.pack.add("exemplars", dict(run=run, tag=tag, step=step),
                                      self.call(self.plugin.exemplars_impl, run, tag, step), "json")
                elif info["kind"] == schema.KIND_METRIC:
                    self.pack.add("metric", dict(run=run, tag=tag), self.call(self.plugin.metric_impl, run, tag), "json")
            self._probe_metrics(run, entries)
        self._compare(chosen)
        self.pack.add("tags", {}, served, "json")
        self.pack.run_order = sorted(served)

    def _choose(self, listing, runs, tags, steps):
        """{run: {tag: (its /tags entry, the steps packed)}}, every name checked."""
        attention = {run: {t: e for t, e in entries.items() if e.get("kind") == schema.KIND_ATTENTION}
                     for run, entries in listing.items()}
        if runs is None:
            runs = sorted(run for run, entries in listing.items() if entries)
            if not runs:
                raise ExportError("the logdir holds no tb-attention data: log a probe first (README, 'Log attention')")
        for run in runs:
            if run not in listing:
                raise ExportError(f"no run {run!r} with attention data; the logdir has {self.logdir_runs()}")
        if tags is not None:
            for tag in tags:
                if tag != schema.HEALTH_PROBE and not any(tag in attention[run] for run in runs):
                    held = sorted({t for run in runs for t in attention[run]})
                    raise ExportError(f"no attention tag {tag!r} in run(s) {', '.join(runs)}; they have {held or 'none'}")
        wanted = None if steps in (None, _ALL) else sorted(set(int(s) for s in steps))
        chosen, used = {}, set()
        for run in runs:
            probes = [t for t in attention[run] if tags is None or t in tags]
            health = tags is None or schema.HEALTH_PROBE in tags
            out = {}
            for tag, info in listing[run].items():
                kind, probe = info.get("kind"), info.get("probe", tag)
                if kind == schema.KIND_ATTENTION and tag in probes:
                    held = info["steps"]
                    kept = held[-1:] if steps is None else held if wanted is None else [s for s in held if s in wanted]
                    if not kept:
                        raise ExportError(f"{run!r}/{tag!r} holds none of steps {wanted}; it has steps {held}. "
                                          "Pass steps it holds, or leave this run or tag out")
                    used.update(kept)
                    out[tag] = (info, kept)
                elif kind == schema.KIND_METRIC and (probe in probes or (health and probe == schema.HEALTH_PROBE)):
                    out[tag] = (info, info["steps"])
                elif kind == schema.KIND_EXEMPLARS and probe in probes:
                    out[tag] = (info, None)  # the probe's packed steps, filled below
            for tag, (info, kept) in list(out.items()):
                if kept is None:
                    probe_steps = out[info["probe"]][1]
                    out[tag] = (info, [s for s in info["steps"] if s in probe_steps])
            if out:
                chosen[run] = out
        if wanted is not None and set(wanted) - used:
            raise ExportError(f"no selected attention tag holds step(s) {sorted(set(wanted) - used)}")
        if not chosen:
            raise ExportError("the selection holds no attention data")
        return chosen

    def _step(self, run, tag, step, examples):
        body = self.call(self.plugin.examples_impl, run, tag, step)
        held = [e["index"] for e in body["examples"]] + [e["index"] for e in body["unreadable"]]
        if examples is not None:
            missing = [i for i in examples if i not in held]
            if missing:
                raise ExportError(f"{run!r}/{tag!r} step {step} has examples {sorted(held)}; not {missing}")
            body = dict(body, examples=[e for e in body["examples"] if e["index"] in examples],
                        unreadable=[e for e in body["unreadable"] if e["index"] in examples])
        self.pack.add("examples", dict(run=run, tag=tag, step=step), body, "json")
        if body["examples"]:
            self.groups.setdefault(tag, [None] + [g["name"] for g in body["examples"][0]["groups"][1:]])
        for example in body["examples"]:
            where = dict(run=run, tag=tag, step=step, example=example["index"])
            long = [g["name"] for g in example["groups"] if g.get("encoding") == schema.ENCODING_LONG]
            if long:  # its routes take ranges on demand: no pack of fixed answers holds them yet
                raise ExportError(f"{run!r}/{tag!r} step {step}, example {example['index']} is a long example (group "
                                  f"{long[0]!r}), which an export cannot pack yet: leave it out with --examples (or "
                                  "`examples=`), or view it in TensorBoard")
            for g in example["groups"]:
                named = dict(where, group=None if g is example["groups"][0] else g["name"])
                for layer in range(g["num_layers"]):
                    blob = self.call(self.plugin.attention_impl, **named, layer=layer)
                    self.pack.add("attention", dict(named, layer=layer), codecs.decompress(blob), "binary")
                    if g.get("has_qk"):
                        blob = self.call(self.plugin.qk_impl, **named, layer=layer)
                        self.pack.add("qk", dict(named, layer=layer), codecs.decompress(blob), "binary")
            if example.get("image"):
                self.pack.add("image", where, self.call(self.plugin.image_impl, **where), "png")

    def _probe_metrics(self, run, entries):
        """/metrics at each packed step of each probe, for its first group and each named one."""
        for tag, (info, kept) in entries.items():
            if info["kind"] != schema.KIND_ATTENTION:
                continue
            named = {i["group"] for i, _ in entries.values()
                     if i.get("kind") == schema.KIND_METRIC and i.get("probe") == tag and i.get("group")}
            for step in kept:
                for group in [None, *sorted(named)]:
                    try:
                        body = self.plugin.metrics_impl(self.ctx, "", run, tag, step, group)
                    except HttpError:
                        continue  # no metrics logged at this step (a probe logged without them)
                    self.pack.add("metrics", dict(run=run, probe=tag, step=step, group=group), body, "json")

    def _compare(self, chosen):
        """/compare between the packed (run, step) points of each tag, for each group."""
        points = {}
        for run, entries in chosen.items():
            for tag, (info, kept) in entries.items():
                if info["kind"] == schema.KIND_ATTENTION:
                    points.setdefault(tag, []).extend((run, step) for step in kept)
        for tag, ends in points.items():
            groups = self.groups.get(tag, [None])
            # every ordered pair, a point with itself too (Compare opens with A = B when one step is packed)
            if len(ends) <= MAX_COMPARED_POINTS:
                pairs = [(a, b) for a in ends for b in ends]
            else:  # neighbours, and each point against the first and the last
                pairs = {(a, b) for i, a in enumerate(ends) for b in (a, ends[i - 1], ends[0], ends[-1])}
                pairs = sorted(pairs | {(b, a) for a, b in pairs})
            for (run_a, step_a), (run_b, step_b) in pairs:
                for group in groups:
                    params = dict(tag=tag, run_a=run_a, step_a=step_a, run_b=run_b, step_b=step_b, group=group)
                    try:
                        body = self.plugin.compare_impl(self.ctx, "", tag, run_a, step_a, run_b, step_b, group)
                    except HttpError:
                        continue  # the group is missing at one end
                    self.pack.add("compare", params, body, "json")

def describe(pack):
    """One line on what a pack holds: its runs, steps, examples and answers."""
    examples = sum(1 for k in pack.keys() if k.startswith("examples?"))
    return f"{len(pack.run_order)} run(s) ({', '.join(pack.run_order)}), {examples} step(s) of examples, {len(pack)} answers"


def _wall_times(info, kept):
    if "wall_times" not in info:
        return {}
    by_step = dict(zip(info["steps"], info["wall_times"]))
    return {"wall_times": [by_step[s] for s in kept]}


def _names(listing):
    return ", ".join(repr(r) for r in sorted(listing)) or "no runs"


# ---------------------------------------------------------------------------------------------
# HTML


@functools.cache
def embed_script():
    """The dashboard as one classic script (`tbAttention.mount`), ASCII, built by frontend/build.mjs."""
    path = STATIC_DIR / "embed.js"
    if not path.exists():
        raise ExportError(f"{path} is missing: build the dashboard (cd frontend && npm run build)")
    return path.read_text(encoding="ascii")


def _options(params, theme):
    if theme not in THEMES:
        raise ExportError(f"theme must be one of {THEMES}, got {theme!r}")
    params = {str(k): str(v) for k, v in (params or {}).items() if v is not None}
    return json.dumps({"params": params, "theme": theme}, ensure_ascii=True, separators=(",", ":"))


def latin1_escape(data):
    """The compressed pack as windows-1252 text bytes: NUL, CR, < and ~ escaped (http_api.md)."""
    return _SPECIAL.sub(lambda m: bytes([_ESCAPE, m.group()[0] ^ 0x40]), data)


_SPECIAL = re.compile(b"[" + re.escape(bytes(_ESCAPED)) + b"]")


def _pack_element(data, encoding, element_id):
    if encoding == "base64":
        text = base64.b64encode(data)
    elif encoding == "latin1":
        text = latin1_escape(data)
    else:
        raise ExportError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    opening = (f'<script type="application/x-tb-attention-pack" id="{element_id}-pack" '
               f'data-encoding="{encoding}" data-bytes="{len(data)}">').encode("ascii")
    return opening + text + b"</script>"


def _mount_script(element_id):
    return (f"<script>{embed_script()}\n"
            f'tbAttention.mount(document.getElementById("{element_id}"), '
            f'document.getElementById("{element_id}-pack"));</script>')


def html_document(pack, params=None, theme="light", encoding="latin1"):
    """The bytes of a self-contained HTML file showing the pack (opened from file://, no network)."""
    data = pack.to_bytes()
    element_id = "tba"
    title = html.escape(pack.title or "tb-attention", quote=False)
    charset = "windows-1252" if encoding == "latin1" else "utf-8"
    head = (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="{charset}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_ascii(title)}</title>"
        "<style>html,body{margin:0;height:100%}#tba{height:100vh}</style></head><body>"
        f'<div id="{element_id}" data-options="{html.escape(_options(params, theme))}"></div>'
    )
    return (head.encode("ascii") + _pack_element(data, encoding, element_id)
            + _mount_script(element_id).encode("ascii") + b"</body></html>\n")


def html_fragment(pack, params=None, theme="light", height=640):
    """The HTML of a notebook output showing the pack: base64, a unique id, a resizable box."""
    if not isinstance(height, int) or height < 200:
        raise ExportError(f"height must be a whole number of pixels ≥ 200, got {height!r}")
    element_id = f"tba-{uuid.uuid4().hex}"
    box = (f'<div id="{element_id}" class="tb-attention" data-options="{html.escape(_options(params, theme))}" '
           f'style="height:{height}px;resize:vertical;overflow:hidden;border:1px solid #e0e0e0"></div>')
    return box + _pack_element(pack.to_bytes(), "base64", element_id).decode("ascii") + _mount_script(element_id)


def _ascii(text):
    """Text as ASCII with character references (the file's charset is windows-1252)."""
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")
