"""Long groups as the writer takes them: a plan and per-layer LongLayers or EncodedLongLayers, checked and laid out as blobs."""

# examples.encode_step makes a LongGroup of every group spec with a `long` entry (http_api.md, "Long
# examples"); its blobs follow the step's other blobs: per layer its row chunks then its levels, then
# the group's profile.

import numpy as np

from tb_attention.storage import schema
from tb_attention.storage.codecs import long
from tb_attention.storage.schema import FormatError


class LongGroup:
    """One long group of an example: {"plan": LongPlan, "layers": [LongLayer | EncodedLongLayer, ...]}."""

    encoding = schema.ENCODING_LONG
    qk = None

    def __init__(self, name, tokens, key_tokens, spec, where):
        self.name, self.tokens, self.key_tokens, self.where = name, tokens, key_tokens, where
        given = [k for k in ("attention", "query", "key", "qk", *schema.SCORING_RULES) if spec.get(k) is not None]
        if given:
            raise ValueError(f"{where}: a long group stores no {', '.join(given)}: give only `long`")
        data = spec["long"]
        if not isinstance(data, dict) or not isinstance(data.get("plan"), long.LongPlan) or not isinstance(
            data.get("layers"), (list, tuple)
        ):
            raise TypeError(f"{where}: long must be {{'plan': codecs.long.plan(...), 'layers': [LongLayer or "
                            "EncodedLongLayer per layer]}")
        self.plan, self.layers = data["plan"], list(data["layers"])
        p = self.plan
        sizes = (len(self.layers), len(tokens), len(key_tokens))
        if (p.num_layers, p.num_queries, p.num_keys) != sizes:
            raise ValueError(f"{where}: the plan is for {p.num_layers} layers x {p.num_queries} queries x {p.num_keys} "
                             f"keys, the group has {sizes[0]} layers x {sizes[1]} query tokens x {sizes[2]} key tokens")
        if max(sizes[1:]) > long.MAX_LONG_TOKENS:
            raise ValueError(f"{where}: {max(sizes[1:]):,} tokens; a long group holds at most {long.MAX_LONG_TOKENS:,}")
        self.num_heads = p.num_heads
        self.causal = bool(spec.get("causal"))
        if self.causal and len(tokens) > len(key_tokens):
            raise ValueError(f"{where}: causal attention of {len(tokens)} queries over fewer keys ({len(key_tokens)})")
        names = spec.get("layer_names")
        if names is not None and (len(names) != len(self.layers) or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"{where}: layer_names must be {len(self.layers)} strings, one per layer")
        self.layer_names = None if names is None else list(names)

    def prepare(self, where):
        """Encodes the LongLayers given as floats and checks the encoded ones against the plan."""
        for i, layer in enumerate(self.layers):
            try:
                if isinstance(layer, long.LongLayer):
                    self.layers[i] = long.encode_layer(i, layer, self.plan)
                elif isinstance(layer, long.EncodedLongLayer):
                    self._check_encoded(i, layer)
                else:
                    raise TypeError(f"layer {i} is {type(layer).__name__}, not a LongLayer or EncodedLongLayer")
            except (ValueError, FormatError) as e:
                raise ValueError(f"{where}: {e}") from None

    def _check_encoded(self, i, layer):
        p = self.plan
        if len(layer.rows) != len(p.chunks()) or len(layer.levels) != len(p.levels):
            raise ValueError(f"encoded layer {i} has {len(layer.rows)} row chunks and {len(layer.levels)} levels; the "
                             f"plan has {len(p.chunks())} and {len(p.levels)}")
        for name, array, width in (("profile", layer.profile, p.distance_bins), ("sinks", layer.sinks, p.sink_tokens)):
            if np.shape(array) != (p.num_heads, width) or not np.isfinite(array).all():
                raise ValueError(f"encoded layer {i}: {name} must be finite floats [{p.num_heads}, {width}]")
        expected = [{"kind": "rows", "layer": i, "num_heads": p.num_heads, "start": a, "stop": b, "top_k": p.top_k}
                    for a, b in p.chunks()]
        expected += [{"kind": "level", "layer": i, "num_heads": p.num_heads, "level": n, "block": block, "rows": rows,
                      "cols": cols} for n, (block, rows, cols) in enumerate(p.levels)]
        for blob, fields in zip([*layer.rows, *layer.levels], expected):
            header = long.blob_header(blob)
            wrong = {k: header.get(k) for k, v in fields.items() if header.get(k) != v}
            if wrong:
                raise ValueError(f"encoded layer {i}: a {fields['kind']} blob says {wrong}, the plan {fields}")

    def tasks(self, where):
        """(make the blob, what it is) of every blob of the group, in storage order."""
        out = []
        for i, layer in enumerate(self.layers):
            out += [(lambda b=b: b, f"{where}, layer {i}, rows {a}:{z}") for b, (a, z) in zip(layer.rows, self.plan.chunks())]
            out += [(lambda b=b: b, f"{where}, layer {i}, level {n}") for n, b in enumerate(layer.levels)]
        profile = lambda: long.profile_blob([x.profile for x in self.layers], [x.sinks for x in self.layers])  # noqa: E731
        return out + [(profile, f"{where}, distance profile")]

    def entry(self, ref):
        """(the manifest's group entry, the next blob reference) with the group's blobs from reference `ref` on."""
        chunks, levels = len(self.plan.chunks()), len(self.plan.levels)
        rows, level_refs = [], []
        for _ in self.layers:
            rows.append(list(range(ref, ref + chunks)))
            level_refs.append(list(range(ref + chunks, ref + chunks + levels)))
            ref += chunks + levels
        out = {
            "name": self.name, "num_layers": len(self.layers), "num_heads": self.num_heads,
            "num_tokens": len(self.tokens), "num_key_tokens": len(self.key_tokens), "tokens": self.tokens,
            "key_tokens": self.key_tokens, "causal": self.causal, "encoding": schema.ENCODING_LONG, "has_qk": False,
            "long": self.plan.entry(), "long_rows": rows, "long_levels": level_refs, "long_profile": ref,
            "attention_blobs": None, "qk_blobs": None,
        }
        if self.layer_names is not None:
            out["layer_names"] = self.layer_names
        return out, ref + 1
