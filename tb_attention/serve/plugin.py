"""HTTP routes of the attention plugin, served from TensorBoard's data provider only."""

# Every route parses its request, calls an `*_impl` method and answers through
# `http_util.Respond` (which adds `X-Content-Type-Options: nosniff`); errors are JSON 4xx (route_util.py).
# The routes are documented in http_api.md; the reads and their caches are in reader.py, the
# payloads' fields in schema.py.

import numpy as np
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin

from tb_attention.serve import compare
from tb_attention.serve.long import LongRoutes
from tb_attention.serve.reader import LRU, Reader
from tb_attention.serve.routes import JSON, bad_request, int_param, json_floats, not_found, param, range_param, route, static_file
from tb_attention.storage import codecs, schema

_JOINED_SIZE = 16  # whole-group blobs assembled from per-layer blobs, remembered
_JOINED_BYTES = 32 << 20  # larger assembled blobs are not remembered
_COMPARED_SIZE = 64  # /compare answers remembered (the view asks again as it redraws)
_LONG_DECODED_SIZE = 32  # decoded blobs of long examples (rows, levels, profiles; a few MiB each by default)
_LONG_ANSWERS_SIZE = 64  # gzip bodies of /long_map and /long_rows (at most ~1 MiB each), asked again as a view pans


def _check_index(name, index, size, owner="the example"):
    if index is not None and index >= size:
        raise not_found(f"{name} {index} does not exist: {owner} has {size} {name}s")


class AttentionPlugin(LongRoutes, base_plugin.TBPlugin):
    """Serves attention examples, metrics and exemplars; the dashboard is a dynamic ES module. Long examples'
    routes come from LongRoutes (serve/long.py)."""

    plugin_name = schema.PLUGIN_NAME

    def __init__(self, context):
        self._reader = Reader(context.data_provider)
        self._joined = LRU(_JOINED_SIZE)
        self._compared = LRU(_COMPARED_SIZE)
        self._long_decoded = LRU(_LONG_DECODED_SIZE)
        self._long_answers = LRU(_LONG_ANSWERS_SIZE)

    def get_plugin_apps(self):
        return {
            "/index.js": self._serve_index,
            "/static/*": self._serve_static,
            "/tags": self._serve_tags,
            "/examples": self._serve_examples,
            "/attention": self._serve_attention,
            "/qk": self._serve_qk,
            "/image": self._serve_image,
            "/compare": self._serve_compare,
            "/metric": self._serve_metric,
            "/metrics": self._serve_metrics,
            "/exemplars": self._serve_exemplars,
            "/long_map": self._serve_long_map,
            "/long_rows": self._serve_long_rows,
            "/long_profile": self._serve_long_profile,
        }

    def is_active(self):
        return False  # activity comes from the data provider (data_plugin_names)

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Attention")

    # -----------------------------------------------------------------------------------------
    # Static files

    @route
    def _serve_index(self, request):
        return static_file(request, "index.js")

    @route
    def _serve_static(self, request):
        prefix = "/static/"
        path = request.path
        return static_file(request, path[path.index(prefix) + len(prefix) :] if prefix in path else "")

    # -----------------------------------------------------------------------------------------
    # Attention examples

    def tags_impl(self, ctx, experiment_id):
        return self._reader.tags(ctx, experiment_id)

    def _step(self, ctx, experiment_id, run, tag, step):
        """(datum, parsed manifest) of an attention step."""
        datum = self._reader.blob_datum(ctx, experiment_id, run, tag, step, schema.KIND_ATTENTION)
        return datum, self._reader.manifest(ctx, datum)

    def _group(self, ctx, experiment_id, run, tag, step, example, group):
        """(datum, example entry, group entry) of an attention request."""
        datum, manifest = self._step(ctx, experiment_id, run, tag, step)
        examples = manifest["examples"]
        if example >= len(examples):
            raise not_found(f"step {step} has {len(examples)} examples; no example {example}")
        entry = examples[example]
        try:
            return datum, entry, schema.find_group(entry, group)
        except KeyError as e:
            raise not_found(e.args[0]) from None

    def examples_impl(self, ctx, experiment_id, run, tag, step):
        datum, manifest = self._step(ctx, experiment_id, run, tag, step)
        examples = [schema.example_payload(e) for e in manifest["examples"] if schema.unreadable(e) is None]
        broken = [{"index": e["index"], "error": schema.unreadable(e)} for e in manifest["examples"] if schema.unreadable(e)]
        return {"run": run, "tag": tag, "step": step, "wall_time": datum.wall_time, "examples": examples,
                "unreadable": broken}

    def _blob(self, ctx, experiment_id, run, tag, datum, ref, what, check):
        return self._reader.step_blob(ctx, experiment_id, run, tag, datum, ref, what, check)

    def _layer_blobs(self, ctx, experiment_id, run, tag, datum, group, kind, layer, what):
        """The stored blobs of a group's `kind` ("attention" or "qk"), for one layer or all of them:
        [(blob, index of the wanted layer within it or None)]."""
        check = codecs.check_attention_blob if kind == "attention" else codecs.check_qk_blob
        refs = _per_layer_refs(group, kind, what)
        if refs is not None:  # v2: one blob per layer
            chosen = list(range(len(refs))) if layer is None else [layer]
            blobs = self._reader.step_blobs(ctx, experiment_id, run, tag, datum, [refs[i] for i in chosen],
                                            lambda n: f"{what}, layer {chosen[n]}", check)
            return [(blob, None) for blob in blobs]
        blob = self._blob(ctx, experiment_id, run, tag, datum, group.get(f"{kind}_blob"), what, check)  # v1
        return [(blob, layer)]

    def _served_blob(self, key, read_parts, join, select):
        """One blob for the layers asked: as stored, one layer of a v1 blob, or the layers joined
        (remembered: a dashboard asks again for what it shows)."""
        joined = self._joined.peek(key)
        if joined is not None:
            return joined
        parts = read_parts()
        if len(parts) == 1:
            blob, layer = parts[0]
            return blob if layer is None else select(blob, layer)
        joined = join([blob for blob, _ in parts])
        joined = joined[0] if isinstance(joined, tuple) else joined
        if len(joined) <= _JOINED_BYTES:
            self._joined.put(key, joined)
        return joined

    def _layered(self, kind, ctx, experiment_id, run, tag, step, example, group, layer, head):
        """What /attention and /qk share: the example's group, its layer and head checked, a reader of the
        blobs asked for and their cache key: (entry, group, read, key)."""
        datum, entry, g = self._group(ctx, experiment_id, run, tag, step, example, group)
        if kind == "qk" and g.get("encoding") == schema.ENCODING_LONG:
            raise not_found(f"example {example} (group {g.get('name')!r}) is a long example: no query/key vectors "
                            "are stored for long inputs")
        if kind == "qk" and g.get("qk_blobs") is None and g.get("qk_blob") is None:
            raise not_found(
                f"no query/key vectors were logged for example {example} (group {g.get('name')!r}) of "
                f"{run!r}/{tag!r} at step {step} (log with with_qk=True to see the neuron view)"
            )
        _check_index("layer", layer, g.get("num_layers") or 0, f"group {g.get('name')!r}")
        _check_index("head", head, g.get("num_heads") or 0, f"group {g.get('name')!r}")
        what = f"{'query/key' if kind == 'qk' else 'attention'} of example {example}, group {g.get('name')!r}"
        read = lambda: self._layer_blobs(ctx, experiment_id, run, tag, datum, g, kind, layer, what)  # noqa: E731
        key = (kind, experiment_id, run, tag, step, datum.wall_time, example, g.get("name"), layer)
        return entry, g, read, key

    def attention_impl(self, ctx, experiment_id, run, tag, step, example, group=None, layer=None, head=None,
                       as_json=False, window=None):
        """The binary blob (bytes) or the JSON body (dict) of /attention (`window` (A, B): of a long group)."""
        entry, g, read, key = self._layered("attention", ctx, experiment_id, run, tag, step, example, group, layer, head)
        if window is not None or g.get("encoding") == schema.ENCODING_LONG:
            return self.window_impl(ctx, experiment_id, run, tag, step, entry, g, layer, head, window, as_json)
        if not as_json:
            return self._served_blob(key, read, codecs.join_attention_layers, codecs.attention_layer_blob)
        parts = read()
        if len(parts) == 1:
            blob, index = parts[0]
            weights = codecs.decode_attention(blob, layer=index, head=head).attention
            if layer is not None and index is None:  # a one-layer blob: drop its layer axis
                weights = weights[0]
        else:
            weights = np.stack([codecs.decode_attention(blob, layer=0, head=head).attention for blob, _ in parts])
        body = {k: g.get(k) for k in ("num_layers", "num_heads", "num_tokens", "num_key_tokens", "causal", "encoding",
                                      "top_k", "layer_names") if k in g}
        body.update(
            group=g.get("name"), tokens=g.get("tokens"), key_tokens=g.get("key_tokens"),
            quantization=codecs.QUANTIZATION, layer=layer, head=head, shape=list(weights.shape),
            attention=weights.tolist(),
        )
        body.update({k: entry[k] for k in ("text", "segments", "pos") if entry.get(k) is not None})
        return body

    def qk_impl(self, ctx, experiment_id, run, tag, step, example, group=None, layer=None, head=None, as_json=False):
        """The binary blob (bytes) or the JSON body (dict) of /qk."""
        _, g, read, cache_key = self._layered("qk", ctx, experiment_id, run, tag, step, example, group, layer, head)
        if not as_json:
            return self._served_blob(cache_key, read, codecs.join_qk_layers, codecs.qk_layer_blob)
        parts = read()
        decoded = [codecs.decode_qk(blob) for blob, _ in parts]
        header = dict(decoded[0].header)
        query = np.concatenate([d.query for d in decoded])
        key = np.concatenate([d.key for d in decoded])
        header["scaling"] = [s for d in decoded for s in d.scaling]
        for name in schema.SCORING_RULES:
            values = [v for d in decoded for v in d.rule(name)]
            header.pop(name, None)
            if any(v is not None for v in values):
                header[name] = values
        index = parts[0][1] if len(parts) == 1 else None
        if index is not None:  # one layer of a v1 blob
            query, key = query[index : index + 1], key[index : index + 1]
            header["scaling"] = header["scaling"][index : index + 1]
            for name in schema.SCORING_RULES:
                if name in header:
                    header[name] = header[name][index : index + 1]
        kv_group = header["num_heads"] // header["num_kv_heads"]
        query = query[0] if layer is not None else query
        key = key[0] if layer is not None else key
        if head is not None:
            query = query[head] if layer is not None else query[:, head]
            key = key[head // kv_group] if layer is not None else key[:, head // kv_group]
        body = {k: header[k] for k in ("num_heads", "num_kv_heads", "head_dim", "dtype", "scaling", *schema.SCORING_RULES)
                if k in header}
        body.update(
            group=g.get("name"), num_layers=g.get("num_layers"), num_tokens=g.get("num_tokens"),
            num_key_tokens=g.get("num_key_tokens"), tokens=g.get("tokens"), key_tokens=g.get("key_tokens"),
            layer=layer, head=head, shape_query=list(query.shape), shape_key=list(key.shape),
            query=query.tolist(), key=key.tolist(),
        )
        return body

    def image_impl(self, ctx, experiment_id, run, tag, step, example):
        datum, manifest = self._step(ctx, experiment_id, run, tag, step)
        examples = manifest["examples"]
        if example >= len(examples):
            raise not_found(f"step {step} has {len(examples)} examples; no example {example}")
        if schema.unreadable(examples[example]):
            raise schema.FormatError(schema.unreadable(examples[example]))
        ref = examples[example].get("image_blob")
        if ref is None:
            raise not_found(f"example {example} of {run!r}/{tag!r} at step {step} has no image")
        png = self._blob(ctx, experiment_id, run, tag, datum, ref, f"image of example {example}", None)
        if png[:8] != schema.PNG_MAGIC:
            raise schema.FormatError(f"the image of example {example} is not PNG data")
        return png

    def compare_impl(self, ctx, experiment_id, tag, run_a, step_a, run_b, step_b, group=None):
        """Per head, the attention moved from step A to step B over the examples they share."""
        datum_a, manifest_a = self._step(ctx, experiment_id, run_a, tag, step_a)
        datum_b, manifest_b = self._step(ctx, experiment_id, run_b, tag, step_b)
        key = (experiment_id, tag, run_a, step_a, datum_a.wall_time, run_b, step_b, datum_b.wall_time, group)
        cached = self._compared.peek(key)
        if cached is not None:
            return cached
        examples_a, examples_b = manifest_a["examples"], manifest_b["examples"]
        pairs, shape = [], None
        skipped = abs(len(examples_a) - len(examples_b))
        for entry_a, entry_b in zip(examples_a, examples_b):
            if schema.unreadable(entry_a) or schema.unreadable(entry_b):
                skipped += 1
                continue
            try:
                ga, gb = schema.find_group(entry_a, group), schema.find_group(entry_b, group)
            except KeyError as e:
                if group is not None and entry_a is examples_a[0]:
                    raise not_found(e.args[0]) from None
                skipped += 1
                continue
            same = all(ga.get(k) == gb.get(k) for k in ("tokens", "key_tokens", "num_layers", "num_heads"))
            same = same and ga.get("encoding") != schema.ENCODING_LONG  # no dense weights to compare
            if not same or (shape is not None and shape != (ga.get("num_layers"), ga.get("num_heads"))):
                skipped += 1
                continue
            shape = (ga.get("num_layers"), ga.get("num_heads"))
            pairs.append((entry_a, ga, entry_b, gb))
        # Every layer of every pair read at once, on the reader's threads (each read is a round trip
        # to the data server); the sums sized by the weights decoded, not by what a manifest claims.
        layers_a = self._all_layers(ctx, experiment_id, run_a, tag, datum_a, [(e, g) for e, g, _, _ in pairs])
        layers_b = self._all_layers(ctx, experiment_id, run_b, tag, datum_b, [(e, g) for _, _, e, g in pairs])
        result = compare.MovedMean()
        for weights_a, weights_b in zip(layers_a, layers_b):
            for layer, (a, b) in enumerate(zip(weights_a(), weights_b())):
                result.add_layer(layer, a, b)
            result.count_used()
        body = {
            "tag": tag, "run_a": run_a, "step_a": step_a, "run_b": run_b, "step_b": step_b,
            "group": group if group is not None else next(
                (e["groups"][0].get("name") for e in examples_a if not schema.unreadable(e)), None),
            "moved": result.result(), "used": result.used, "skipped": skipped,
        }
        self._compared.put(key, body)
        return body

    def _all_layers(self, ctx, experiment_id, run, tag, datum, groups):
        """Per (manifest entry, group): a function giving its layers' attention weights [H, Nq, Nk] in order,
        every blob read at once, each inflated once when its layers are asked for."""
        refs, spans, names = [], [], []
        for entry, g in groups:
            what = f"attention of example {entry['index']}, group {g.get('name')!r}"
            per_layer = _per_layer_refs(g, "attention", what)
            v1 = per_layer is None  # one blob of every layer
            spans.append((len(refs), 1 if v1 else len(per_layer), v1))
            refs += [g.get("attention_blob")] if v1 else per_layer
            names += [what] if v1 else [f"{what}, layer {layer}" for layer in range(len(per_layer))]
        # No check before decoding: decoding checks what it reads (bounded, FormatError), in one inflate, not two.
        blobs = self._reader.step_blobs(ctx, experiment_id, run, tag, datum, refs, lambda n: names[n])

        def layers(start, count, v1):
            if v1:
                return lambda: iter(codecs.decode_attention(blobs[start]).attention)
            return lambda: (codecs.decode_attention(blob, layer=0).attention for blob in blobs[start : start + count])

        return [layers(*span) for span in spans]

    # -----------------------------------------------------------------------------------------
    # Metrics and exemplars

    def metric_impl(self, ctx, experiment_id, run, tag):
        listing, data = self._reader.tensor_data(ctx, experiment_id, run, [tag])
        ts = listing.get(tag)
        if ts is None:
            raise not_found(f"run {run!r} has no metric tag {tag!r}")
        schema.parse_plugin_data(ts.plugin_content)  # a newer format answers 422, as /tags says
        series = data[tag]
        return {
            "run": run,
            "tag": tag,
            "steps": [d.step for d in series],
            "wall_times": [d.wall_time for d in series],
            "values": [json_floats(d.numpy) for d in series],
        }

    def metrics_impl(self, ctx, experiment_id, run, probe, step, group=None):
        listing, data = self._reader.tensor_data(ctx, experiment_id, run)
        names = {}
        for tag, ts in listing.items():
            try:
                content = schema.parse_plugin_data(ts.plugin_content)
            except schema.FormatError:
                continue
            if content.get("kind") != schema.KIND_METRIC or content.get("probe") != probe:
                continue
            first = tag == schema.metric_tag(probe, content.get("metric"))
            if (group is None and first) or (group is not None and content.get("group") == group):
                names[tag] = content.get("metric")
        if not names:
            which = "" if group is None else f" for group {group!r}"
            raise not_found(f"run {run!r} has no metrics of probe {probe!r}{which}")
        metrics = {}
        for tag in sorted(names):
            for datum in data[tag]:
                if datum.step == step:
                    metrics[names[tag]] = json_floats(datum.numpy)
        if not metrics:
            raise not_found(f"probe {probe!r} of run {run!r} has no metrics at step {step}")
        body = {"run": run, "probe": probe, "step": step, "metrics": dict(sorted(metrics.items()))}
        if group is not None:
            body["group"] = group
        return body

    def exemplars_impl(self, ctx, experiment_id, run, tag, step):
        datum = self._reader.blob_datum(ctx, experiment_id, run, tag, step, schema.KIND_EXEMPLARS)
        table = schema.exemplars_payload(self._reader.exemplar_table(ctx, datum))
        return {"run": run, "tag": tag, "step": step, **table}

    # -----------------------------------------------------------------------------------------
    # Routes

    @staticmethod
    def _context(request):
        return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)

    @route
    def _serve_tags(self, request):
        return http_util.Respond(request, self.tags_impl(*self._context(request)), JSON)

    @route
    def _serve_examples(self, request):
        run, tag = param(request, "run"), param(request, "tag")
        step = int_param(request, "step")
        return http_util.Respond(request, self.examples_impl(*self._context(request), run, tag, step), JSON)

    def _example_params(self, request):
        run, tag = param(request, "run"), param(request, "tag")
        step, example = int_param(request, "step"), int_param(request, "example")
        fmt = param(request, "format", required=False)
        if fmt not in (None, "binary", "json"):
            raise bad_request(f"parameter 'format' must be 'json' or 'binary', got {fmt!r}")
        return dict(
            run=run, tag=tag, step=step, example=example, group=param(request, "group", required=False),
            layer=int_param(request, "layer", False), head=int_param(request, "head", False), as_json=fmt == "json",
        )

    def _respond_blob_or_json(self, request, answer):
        if isinstance(answer, dict):
            return http_util.Respond(request, answer, JSON)
        return http_util.Respond(request, answer, "application/octet-stream", content_encoding="gzip")

    @route
    def _serve_attention(self, request):
        params = self._example_params(request)
        window = range_param(request, "window", False)
        return self._respond_blob_or_json(request, self.attention_impl(*self._context(request), **params, window=window))

    @route
    def _serve_qk(self, request):
        params = self._example_params(request)
        return self._respond_blob_or_json(request, self.qk_impl(*self._context(request), **params))

    @route
    def _serve_image(self, request):
        run, tag = param(request, "run"), param(request, "tag")
        step, example = int_param(request, "step"), int_param(request, "example")
        png = self.image_impl(*self._context(request), run, tag, step, example)
        return http_util.Respond(request, png, "image/png")

    @route
    def _serve_compare(self, request):
        tag = param(request, "tag")
        run_a, run_b = param(request, "run_a"), param(request, "run_b")
        step_a, step_b = int_param(request, "step_a"), int_param(request, "step_b")
        group = param(request, "group", required=False)
        body = self.compare_impl(*self._context(request), tag, run_a, step_a, run_b, step_b, group)
        return http_util.Respond(request, body, JSON)

    @route
    def _serve_metric(self, request):
        run, tag = param(request, "run"), param(request, "tag")
        return http_util.Respond(request, self.metric_impl(*self._context(request), run, tag), JSON)

    @route
    def _serve_metrics(self, request):
        run, probe = param(request, "run"), param(request, "probe")
        step = int_param(request, "step")
        group = param(request, "group", required=False)
        return http_util.Respond(request, self.metrics_impl(*self._context(request), run, probe, step, group), JSON)

    @route
    def _serve_exemplars(self, request):
        run, tag = param(request, "run"), param(request, "tag")
        step = int_param(request, "step")
        return http_util.Respond(request, self.exemplars_impl(*self._context(request), run, tag, step), JSON)


def _per_layer_refs(group, kind, what):
    """The blob references of a v2 group's layers (`kind` "attention" or "qk"), their count checked against
    its layers; None for a v1 group, whose layers share one blob."""
    refs = group.get(f"{kind}_blobs")
    if not isinstance(refs, list):
        return None
    if len(refs) != group.get("num_layers"):
        raise schema.FormatError(f"the manifest lists {len(refs)} {what} blobs for {group.get('num_layers')} layers")
    return refs
