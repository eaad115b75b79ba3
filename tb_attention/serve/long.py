"""Routes of long examples (http_api.md, "Long examples"): /long_map, /long_rows, /long_profile and /attention windows."""

# AttentionPlugin mixes LongRoutes in: it gives `self._reader` (reads and checks blobs), `self._group`
# (a request's example and group) and `self._context`. Decoded blobs are remembered (LongBlobs), so
# panning, zooming and brushing do not inflate the same blob per request.

import json

import numpy as np
from tensorboard.backend import http_util

from tb_attention.serve.routes import JSON, bad_request, int_param, json_floats, not_found, param, range_param, route
from tb_attention.storage import codecs, schema
from tb_attention.storage.codecs import long

MAX_MAP_CELLS = 1 << 20  # cells per /long_map answer
MAX_ROWS = 4096  # queries per /long_rows answer
MAX_WINDOW = 512  # tokens of an /attention window
_ANSWER_BYTES = 2 << 20  # larger /long_map and /long_rows answers are not remembered
_WINDOW_BYTES = 32 << 20  # larger window blobs (every layer of a wide model) are not remembered


class _Level:
    """A decoded level: sqrt-u8 cells [H, rows, cols] and, made when first asked, the mean over heads."""

    def __init__(self, codes):
        self.codes, self._mean = codes, None

    def mean(self):
        if self._mean is None:  # two threads may both make it: the same bytes
            self._mean = codecs.quantize(codecs.dequantize(self.codes).mean(axis=0))
        return self._mean


def _long_group(g, what):
    if g.get("encoding") != schema.ENCODING_LONG:
        raise not_found(f"group {g.get('name')!r} is not a long example (encoding {g.get('encoding')!r}): "
                        f"{what} serves long groups only; read it with /attention")
    return g


def _plan(g):
    """The LongPlan of a checked long group entry."""
    return long.plan_of(g["long"], g["num_layers"], g["num_heads"], g["num_tokens"], g.get("num_key_tokens") or g["num_tokens"])


def _check(name, index, size, owner):
    if index is not None and index >= size:
        raise not_found(f"{name} {index} does not exist: {owner} has {size} {name}s")


class LongRoutes:
    """The long routes' `*_impl` methods and `_serve_*` wrappers (mixed into AttentionPlugin)."""

    def _long_blob(self, ctx, experiment_id, run, tag, datum, ref, what, decode):
        """A decoded long blob, remembered per (step, reference); a damaged one stays a FormatError (422)."""
        key = (experiment_id, run, tag, datum.step, datum.wall_time, ref)

        def read():
            try:
                return decode(self._reader.step_blob(ctx, experiment_id, run, tag, datum, ref, what))
            except schema.FormatError as e:
                return e

        value = self._long_decoded.get(key, read)
        if isinstance(value, schema.FormatError):
            raise type(value)(*value.args)
        return value

    def _remember(self, key, answer):
        """A gzip answer, remembered when small: compressing a million cells costs more than serving them."""
        if len(answer) <= _ANSWER_BYTES:
            self._long_answers.put(key, answer)
        return answer

    def _long(self, ctx, experiment_id, run, tag, step, example, group, route_name, layer=None, head=None):
        """(datum, group entry, LongPlan) of a long route's request, its layer and head checked (404)."""
        datum, _, g = self._group(ctx, experiment_id, run, tag, step, example, group)
        _long_group(g, route_name)
        owner = f"group {g.get('name')!r}"
        _check("layer", layer, g["num_layers"], owner)
        _check("head", head, g["num_heads"], owner)
        return datum, g, _plan(g)

    def _rows(self, ctx, experiment_id, run, tag, datum, g, plan, layer, start, stop):
        """Key indices, codes and remainder codes [H, stop − start, ...] of a layer's queries [start, stop)."""
        parts = []
        for chunk, (a, b) in enumerate(plan.chunks()):
            if b <= start or a >= stop:
                continue
            rows = self._long_blob(
                ctx, experiment_id, run, tag, datum, g["long_rows"][layer][chunk],
                f"rows {a}:{b} of layer {layer}, group {g['name']!r}",
                lambda blob, a=a, b=b: long.decode_rows(blob, layer=layer, num_heads=plan.num_heads, start=a, stop=b,
                                                        top_k=plan.top_k, num_keys=plan.num_keys),
            )
            lo, hi = max(start, a) - a, min(stop, b) - a
            parts.append((rows.index[:, lo:hi], rows.codes[:, lo:hi], rows.remainder[:, lo:hi]))
        return [np.concatenate(x, axis=1) for x in zip(*parts)]

    # -----------------------------------------------------------------------------------------
    # The routes' answers

    def long_map_impl(self, ctx, experiment_id, run, tag, step, example, group=None, layer=0, level=0, head=None,
                      rows=None, cols=None, as_json=False):
        """The /long_map body: gzip TBLM bytes, or a dict with `format=json`."""
        datum, g, plan = self._long(ctx, experiment_id, run, tag, step, example, group, "/long_map", layer, head)
        if level >= len(plan.levels):
            raise bad_request(f"parameter 'level' is {level}: group {g['name']!r} has levels 0 to {len(plan.levels) - 1}")
        block, level_rows, level_cols = plan.levels[level]
        (r0, r1), (c0, c1) = rows or (0, level_rows), cols or (0, level_cols)
        for name, (a, b), size in (("rows", (r0, r1), level_rows), ("cols", (c0, c1), level_cols)):
            if b > size:
                raise bad_request(f"parameter {name!r} is {a}:{b}, outside level {level}'s {size} {name} (0:{size})")
        if (r1 - r0) * (c1 - c0) > MAX_MAP_CELLS:
            raise bad_request(f"parameters 'rows' and 'cols' ask {(r1 - r0) * (c1 - c0):,} cells; an answer holds at "
                              f"most {MAX_MAP_CELLS:,}: ask a smaller range")
        key = ("map", experiment_id, run, tag, step, datum.wall_time, example, g["name"], layer, level, head, r0, r1, c0, c1)
        answer = None if as_json else self._long_answers.peek(key)
        if answer is not None:
            return answer
        decoded = self._long_blob(
            ctx, experiment_id, run, tag, datum, g["long_levels"][layer][level],
            f"level {level} of layer {layer}, group {g['name']!r}",
            lambda blob: _Level(long.decode_level(blob, layer=layer, num_heads=plan.num_heads, level=level,
                                                  block=block, rows=level_rows, cols=level_cols)),
        )
        cells = (decoded.mean() if head is None else decoded.codes[head])[r0:r1, c0:c1]
        header = {"layer": layer, "head": head, "level": level, "block": block, "rows": [r0, r1], "cols": [c0, c1],
                  "level_rows": level_rows, "level_cols": level_cols, "num_tokens": plan.num_queries,
                  "num_key_tokens": plan.num_keys}
        if as_json:
            return {**header, "cells": codecs.dequantize(cells).tolist()}
        return self._remember(key, codecs.compress(long.map_answer(header, cells)))

    def long_rows_impl(self, ctx, experiment_id, run, tag, step, example, group=None, layer=0, head=0, start=0,
                       stop=1, as_json=False):
        """The /long_rows body: gzip TBLR bytes, or a dict with `format=json`."""
        datum, g, plan = self._long(ctx, experiment_id, run, tag, step, example, group, "/long_rows", layer, head)
        if stop > plan.num_queries:
            raise bad_request(f"parameter 'stop' is {stop}: group {g['name']!r} has {plan.num_queries} queries")
        if stop - start > MAX_ROWS:
            raise bad_request(f"parameters 'start' and 'stop' ask {stop - start:,} rows; at most {MAX_ROWS:,} per request")
        key = ("rows", experiment_id, run, tag, step, datum.wall_time, example, g["name"], layer, head, start, stop)
        answer = None if as_json else self._long_answers.peek(key)
        if answer is not None:
            return answer
        index, codes, remainder = (x[head] for x in self._rows(ctx, experiment_id, run, tag, datum, g, plan, layer,
                                                               start, stop))
        header = {"layer": layer, "head": head, "start": start, "stop": stop, "top_k": plan.top_k,
                  "num_key_tokens": plan.num_keys}
        if not as_json:
            return self._remember(key, codecs.compress(long.rows_answer(header, index, codes, remainder)))
        used = index != long.UNUSED
        weight = codecs.dequantize(codes)
        return {**header, "index": [row[u].tolist() for row, u in zip(index, used)],
                "weight": [row[u].tolist() for row, u in zip(weight, used)],
                "remainder": codecs.dequantize(remainder).tolist()}

    def long_profile_impl(self, ctx, experiment_id, run, tag, step, example, group=None, as_gzip=False):
        """The /long_profile body: the distance profile, sinks and their metrics of every layer and head (a dict,
        or with `as_gzip` its gzip JSON bytes, remembered: the view asks again at every step it shows)."""
        datum, g, plan = self._long(ctx, experiment_id, run, tag, step, example, group, "/long_profile")
        key = ("profile", experiment_id, run, tag, step, datum.wall_time, example, g["name"])
        answer = self._long_answers.peek(key) if as_gzip else None
        if answer is not None:
            return answer
        profile, sinks = self._long_blob(
            ctx, experiment_id, run, tag, datum, g["long_profile"], f"distance profile of group {g['name']!r}",
            lambda blob: long.decode_profile(blob, num_layers=plan.num_layers, num_heads=plan.num_heads,
                                             distance_bins=plan.distance_bins, sink_tokens=plan.sink_tokens),
        )
        body = {
            "group": g["name"], "num_layers": plan.num_layers, "num_heads": plan.num_heads,
            "num_tokens": plan.num_queries, "num_key_tokens": plan.num_keys, "top_k": plan.top_k,
            "sink_tokens": plan.sink_tokens, "levels": g["long"]["levels"], "bins": long.bin_edges(plan.distance_bins),
            "profile": json_floats(profile), "sinks": json_floats(sinks),
            "local_share": json_floats(profile[:, :, : long.LOCAL_BINS].sum(-1)), "sink_share": json_floats(sinks.sum(-1)),
        }
        if not as_gzip:
            return body
        return self._remember(key, codecs.compress(json.dumps(body, separators=(",", ":")).encode("utf-8")))

    def window_impl(self, ctx, experiment_id, run, tag, step, entry, g, layer, head, window, as_json):
        """/attention over `window` (queries [A, B) over keys [A, B) + Nk − Nq) of a long group, made from
        its stored top-k rows: a TBAT blob (one layer with `layer`, else every layer) or the JSON body."""
        if g.get("encoding") != schema.ENCODING_LONG:
            raise bad_request(f"parameter 'window' applies to long groups; group {g.get('name')!r} is "
                              f"{g.get('encoding')!r}: ask without it")
        if window is None:
            raise bad_request(f"group {g['name']!r} is a long example ({g['num_tokens']:,} tokens): give "
                              f"window=A:B (at most {MAX_WINDOW} tokens) or read it with /long_map, /long_rows and "
                              "/long_profile")
        a, b = window
        offset = (g.get("num_key_tokens") or g["num_tokens"]) - g["num_tokens"]
        if b - a > MAX_WINDOW or b > g["num_tokens"] or a + offset < 0:
            raise bad_request(f"parameter 'window' is {a}:{b}: a window holds at most {MAX_WINDOW} tokens inside the "
                              f"group's {g['num_tokens']} queries")
        datum = self._reader.blob_datum(ctx, experiment_id, run, tag, step, schema.KIND_ATTENTION)
        plan = _plan(g)
        key = ("window", experiment_id, run, tag, step, datum.wall_time, entry["index"], g["name"], layer, a, b)
        blob = self._joined.peek(key)
        if blob is None:
            blob = self._window_blob(ctx, experiment_id, run, tag, datum, g, plan, layer, a, b)
            if len(blob) <= _WINDOW_BYTES:
                self._joined.put(key, blob)
        if not as_json:
            return blob
        weights = codecs.decode_attention(blob, head=head).attention
        weights = weights[0] if layer is not None else weights
        body = {k: g.get(k) for k in ("num_layers", "num_heads", "causal", "layer_names") if k in g}
        body.update(group=g["name"], tokens=g["tokens"][a:b], key_tokens=g["key_tokens"][a + offset : b + offset],
                    num_tokens=b - a, num_key_tokens=b - a, encoding=codecs.ENCODING_CAUSAL if g["causal"] else
                    codecs.ENCODING_DENSE, quantization=codecs.QUANTIZATION, layer=layer, head=head, window=[a, b],
                    shape=list(weights.shape), attention=weights.tolist())
        return body

    def _window_blob(self, ctx, experiment_id, run, tag, datum, g, plan, layer, a, b):
        offset, width = plan.num_keys - plan.num_queries, b - a
        layers = []
        for number in range(plan.num_layers) if layer is None else [layer]:
            index, codes, _ = self._rows(ctx, experiment_id, run, tag, datum, g, plan, number, a, b)
            cells = np.zeros((plan.num_heads, width, width), dtype=np.uint8)
            column = index.astype(np.int64) - (a + offset)
            inside = (index != long.UNUSED) & (column >= 0) & (column < width)
            heads, rows, slots = np.nonzero(inside)
            cells[heads, rows, column[inside]] = codes[heads, rows, slots]
            layers.append(codecs.encode_attention_layer(
                codecs.dequantize(cells), g["tokens"][a:b], g["key_tokens"][a + offset : b + offset], layer=number,
                causal=bool(g["causal"]), check=False,
            ).blob)  # dequantised codes quantise back to themselves: the stored bytes, unchanged
        return codecs.join_attention_layers(layers, window=[a, b])[0]

    # -----------------------------------------------------------------------------------------
    # Routes

    def _long_params(self, request):
        fmt = param(request, "format", required=False)
        if fmt not in (None, "binary", "json"):
            raise bad_request(f"parameter 'format' must be 'json' or 'binary', got {fmt!r}")
        return dict(run=param(request, "run"), tag=param(request, "tag"), step=int_param(request, "step"),
                    example=int_param(request, "example"), group=param(request, "group", required=False)), fmt == "json"

    def _long_answer(self, request, body):
        if isinstance(body, dict):
            return http_util.Respond(request, body, JSON)
        return http_util.Respond(request, body, "application/octet-stream", content_encoding="gzip")

    @route
    def _serve_long_map(self, request):
        where, as_json = self._long_params(request)
        body = self.long_map_impl(
            *self._context(request), **where, layer=int_param(request, "layer"), level=int_param(request, "level"),
            head=int_param(request, "head", False), rows=range_param(request, "rows", False),
            cols=range_param(request, "cols", False), as_json=as_json,
        )
        return self._long_answer(request, body)

    @route
    def _serve_long_rows(self, request):
        where, as_json = self._long_params(request)
        start, stop = int_param(request, "start"), int_param(request, "stop")
        if stop <= start:
            raise bad_request(f"parameter 'stop' ({stop}) must be above 'start' ({start})")
        body = self.long_rows_impl(*self._context(request), **where, layer=int_param(request, "layer"),
                                   head=int_param(request, "head"), start=start, stop=stop, as_json=as_json)
        return self._long_answer(request, body)

    @route
    def _serve_long_profile(self, request):
        where, _ = self._long_params(request)
        body = self.long_profile_impl(*self._context(request), **where, as_gzip=True)
        return http_util.Respond(request, body, JSON, content_encoding="gzip")
