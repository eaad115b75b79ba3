"""Probes: a fixed set of texts whose attention and metrics are logged as a model trains."""

import warnings

from tb_attention.probes import long as probe_long
from tb_attention.probes import streamed as probe_stream
from tb_attention.probes.inputs import as_list, check_parallel, check_targets, check_texts, id_list, padded, segment_a_end
from tb_attention.probes.packed import ToHtml
from tb_attention.probes.vision import language
from tb_attention.runtime import defaults, distributed, modules
from tb_attention.storage import codecs, schema, summary
from tb_attention.storage.schema import exemplar_table


class Probe(ToHtml):
    """Texts tokenised once; `probe.log(writer, model, step)` logs their attention at `step`.

    texts: strings, or (a, b) pairs for sentence-pair models (where segment A ends is stored);
        an encoder-decoder's source texts.
    targets: for an encoder-decoder, one target per text, fed as the decoder input ids (teacher
        forcing): token ids (a list of ints or a 1-D tensor) exactly as given, or a text, tokenised
        as the tokenizer tokenises targets (`text_target=`) and preceded by the model's
        `decoder_start_token_id` (its config's), so the decoder reads: start token, then the whole
        target, end-of-sequence included. The example then holds three groups, `encoder`,
        `decoder` and `cross` (target tokens over source tokens).
    forward: how to run a batch through the model, forward(model, input_ids, attention_mask) with
        [B, N] right-padded tensors (B up to batch_size, in the order of the texts); it is called for
        any model, Hugging Face or plain, so inputs of the user's reach it (e.g. a vision-language
        model's pixel_values, fed by the function). It gets only these two tensors: sentence pairs
        (token_type_ids) are refused with it, and targets must be fed by it. Without it a Hugging Face
        model gets input_ids, attention_mask (and token_type_ids, decoder inputs) as keywords, and a
        plain module is called as model(input_ids) with one [1, N] LongTensor per text (no padding).
    name: the tag of the attention; metrics go to `<name>/<metric>` (the first group's) and
        `<name>/<group>/<metric>` (others'), exemplars to `<name>/exemplars`.
    with_qk: also store query and key vectors (the neuron view): 4 bytes per head dimension per
        token per head as float16, 8 as float32 where float16 would move the recomputed weights past
        the storage bound (most models), so off by default.
    metrics: compute and log the per-head metrics (distance, entropy, null attention, variability,
        max_logit, and with syntax: dependency alignment and part-of-speech shares; cross attention:
        entropy, null_attention, diagonal_alignment and max_logit, see cross_metrics.py).
    syntax: parse the texts with spaCy for the syntax metrics; None = when spaCy and an English
        pipeline are installed; True = required; False = never.
    include_first: count attention to the first token in the metrics (the paper excludes it).
    top_k_exemplars: inputs kept per head as exemplars.
    max_length: truncate longer texts (tokens); None = the tokenizer's default behaviour.
    batch_size: texts per forward pass.
    long_tokens: inputs of more tokens take the long path (http_api.md, "Long examples"): captured in
        query chunks, never N x N; stored as top-k rows, a block pyramid, the distance profile and sink
        mass; metrics local_share, sink_share and max_logit. No q/k, targets or sentence pairs, and
        a probe's inputs are all long or all not. long_budget: bytes stored per long example (sets k
        and the levels); long_top_k: keys kept per query at most.

    generate: generate from the texts as prompts instead (a dict of `model.generate` arguments or a
        GenerationConfig): a `GenerationProbe` (probes/generation.py), which logs the attention of every
        decoding step over the model's cache; `step=` and `seed=` go with it.

    Users who tokenise themselves: `Probe.from_tokens(token_ids, tokens, ...)`. `probe.to_html(model)`: one
    HTML file of what `log` would write (probes/packed.py).
    """

    def __new__(cls, *args, generate=None, **options):
        if cls is Probe and len(args) >= 2 and language.is_vision_language_input(args[0], args[1]):
            if generate is not None:  # Probe(processor, [(image, text)], generate=...)
                return language.VisionLanguageGenerationProbe(*args, **options, generate=generate)
            return super().__new__(VisionLanguageProbe)  # Probe(processor, [(image, text)])
        if generate is not None and cls is Probe:
            from tb_attention.probes.generation import GenerationProbe

            return GenerationProbe(*args, **options, generate=generate)  # not a Probe: Probe.__init__ is not run
        if generate is None and cls is Probe and ("step" in options or "seed" in options):
            raise TypeError("step= and seed= belong to generation probes: give generate=dict(max_new_tokens=...) too")
        return super().__new__(cls)

    def __init__(
        self,
        tokenizer,
        texts,
        name=defaults.PROBE_TAG,
        *,
        targets=None,
        forward=None,
        with_qk=False,
        metrics=True,
        syntax=None,
        spacy_model=None,
        include_first=False,
        top_k_exemplars=defaults.TOP_K_EXEMPLARS,
        max_length=None,
        batch_size=8,
        max_dense_tokens=codecs.DEFAULT_MAX_DENSE_TOKENS,
        long_tokens=codecs.DEFAULT_LONG_TOKENS,
        long_budget=codecs.DEFAULT_LONG_BUDGET,
        long_top_k=codecs.DEFAULT_LONG_TOP_K,
        all_ranks=False,
        _encodings=None,
    ):
        if "/" in name and name.split("/", 1)[1] in schema.METRICS:
            raise ValueError(f"probe name {name!r} would collide with its metric tags")
        if _encodings is None:
            if tokenizer is None:
                raise TypeError(
                    "Probe needs a tokenizer to tokenise its texts; if you tokenise yourself, use "
                    "Probe.from_tokens(token_ids, tokens, ...)"
                )
            texts = check_texts(texts)
            targets = check_targets(targets, len(texts))
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of texts, got {batch_size}")
        self.tokenizer = tokenizer
        self.name = name
        self.forward = forward
        self.with_qk = with_qk
        self.compute_metrics = metrics
        self.include_first = include_first
        self.top_k_exemplars = top_k_exemplars
        self.batch_size = batch_size
        self.max_dense_tokens = max_dense_tokens
        self.long_tokens, self.long_budget, self.long_top_k = long_tokens, long_budget, long_top_k
        self.all_ranks = all_ranks
        self._syntax_wanted = syntax
        self._spacy_model = spacy_model
        self._syntax = None  # parsed on first use, once
        self.max_length = max_length
        if _encodings is not None:
            self.encodings = _encodings
            self.texts = [e["text"] for e in _encodings]
        else:
            self.texts = texts
            self.encodings = [self._encode(text, max_length) for text in texts]
            for encoding, target in zip(self.encodings, targets or [None] * len(texts)):
                if target is not None:
                    encoding.update(self._encode_target(target, max_length))
        probe_long.check_options(self)

    @classmethod
    def from_tokens(cls, token_ids, tokens, name=defaults.PROBE_TAG, *, target_ids=None, target_tokens=None,
                    texts=None, **options):
        """A probe of inputs tokenised by the caller: token_ids, one sequence of ints (list or 1-D
        tensor) per input, and tokens, one list of token strings per input, as long as its ids.
        target_ids / target_tokens: an encoder-decoder's decoder inputs, fed exactly as given.
        texts: optional display texts (default: the tokens joined by spaces). No syntax metrics
        (no tokenizer to align a parse with). Other options as for Probe."""
        token_ids = [id_list(ids, f"token_ids[{i}]") for i, ids in enumerate(as_list(token_ids))]
        tokens = [list(t) for t in as_list(tokens)]
        if not token_ids:
            raise ValueError("a probe needs at least one input")
        check_parallel(token_ids, tokens, "token_ids", "tokens")
        if (target_ids is None) != (target_tokens is None):
            raise ValueError("give both target_ids and target_tokens, or neither")
        if target_ids is not None:
            target_ids = [id_list(ids, f"target_ids[{i}]") for i, ids in enumerate(as_list(target_ids))]
            target_tokens = [list(t) for t in as_list(target_tokens)]
            check_parallel(target_ids, target_tokens, "target_ids", "target_tokens")
            if len(target_ids) != len(token_ids):
                raise ValueError(f"{len(target_ids)} targets for {len(token_ids)} inputs: give one target per input")
        texts = list(texts) if texts is not None else [" ".join(map(str, t)) for t in tokens]
        if len(texts) != len(token_ids):
            raise ValueError(f"{len(texts)} texts for {len(token_ids)} inputs")
        if options.get("syntax"):
            raise ValueError("syntax metrics need a tokenizer: Probe.from_tokens has none")
        options["syntax"] = False
        encodings = []
        for i, (ids, toks, text) in enumerate(zip(token_ids, tokens, texts)):
            encoding = {"input_ids": ids, "tokens": [str(t) for t in toks], "text": text, "segments": None}
            if target_ids is not None:
                encoding.update(target_ids=target_ids[i], target_tokens=[str(t) for t in target_tokens[i]],
                                target_start=False)
            encodings.append(encoding)
        return cls(None, None, name, _encodings=encodings, **options)

    def _encode(self, text, max_length):
        pair = isinstance(text, tuple)
        options = {"truncation": True, "max_length": max_length} if max_length else {}
        encoding = self.tokenizer(*text, **options) if pair else self.tokenizer(text, **options)
        ids = list(encoding["input_ids"])
        if not ids:
            raise ValueError(f"probe text {text!r} tokenises to nothing")
        segments = None
        if pair:
            segments = [segment_a_end(encoding, len(ids))]
        return {
            "input_ids": ids,
            "tokens": self.tokenizer.convert_ids_to_tokens(ids),
            "text": " ".join(text) if pair else text,
            "segments": segments,
        }

    def _encode_target(self, target, max_length):
        if isinstance(target, str):
            options = {"truncation": True, "max_length": max_length} if max_length else {}
            ids = list(self.tokenizer(text_target=target, **options)["input_ids"])
            start = True  # the model's decoder_start_token_id goes first, at capture time
        else:
            ids, start = target, False
        return {"target_ids": ids, "target_tokens": self.tokenizer.convert_ids_to_tokens(ids), "target_start": start}

    @property
    def has_targets(self):
        return "target_ids" in self.encodings[0]

    # -----------------------------------------------------------------------------------------

    @property
    def syntax(self):
        """Per text, its spaCy parse mapped onto the tokens (None where not parsed)."""
        if self._syntax is None:
            self._syntax = self._parse()
        return self._syntax

    def _parse(self):
        if self._syntax_wanted is False or self.tokenizer is None:
            return [None] * len(self.texts)
        from tb_attention.probes import syntax

        try:
            nlp = syntax.load_spacy(self._spacy_model)
        except syntax.SpacyModelError as e:
            if self._syntax_wanted:
                raise
            warnings.warn(f"probe {self.name!r}: no syntax metrics ({e})", stacklevel=3)
            return [None] * len(self.texts)
        options = {"truncation": True, "max_length": self.max_length} if self.max_length else {}
        parses = []
        for text in self.texts:  # one at a time: a probe may mix single texts and pairs
            a, b = (text, None) if isinstance(text, str) else text
            (parse,) = syntax.token_syntax(self.tokenizer, [a], None if b is None else [b], nlp=nlp, **options)
            parses.append(parse)
        for parse, encoding in zip(parses, self.encodings):
            if len(parse) != len(encoding["input_ids"]):
                raise RuntimeError(f"syntax of {encoding['text']!r} covers {len(parse)} tokens, not {len(encoding['input_ids'])}")
        return parses

    def _targets(self, model):
        """Per input, (decoder input ids, their tokens): text targets get the decoder start token."""
        start = None
        out = []
        for encoding in self.encodings:
            ids, tokens = list(encoding["target_ids"]), list(encoding["target_tokens"])
            if encoding.get("target_start"):
                if start is None:
                    start = getattr(getattr(model, "config", None), "decoder_start_token_id", None)
                    if start is None:
                        raise ValueError(
                            f"{type(model).__name__} has no config.decoder_start_token_id to start a text target "
                            "with: give the targets as token ids, start token included"
                        )
                ids = [int(start)] + ids
                tokens = self.tokenizer.convert_ids_to_tokens([int(start)]) + tokens
            out.append((ids, tokens))
        return out

    def capture(self, model):
        """Each input's attention (and q/k when asked) at the model's current weights (`Captured`).

        `model` as the user holds it: wrappers (DDP, torch.compile) are taken off, and compiled
        code inside runs eagerly (capture_attention), so the user's graphs are neither recompiled
        nor spent."""
        import torch

        from tb_attention import capture

        model = modules.unwrap(model)  # DistributedDataParallel's forward would wait for the other ranks
        targets = self._targets(model) if self.has_targets else None
        hf = capture.is_hf(model)
        if not hf and self.forward is None:  # a plain module: one [1, N] input at a time, no padding
            captured = []
            for encoding in self.encodings:
                ids = torch.tensor([encoding["input_ids"]], dtype=torch.long)
                if targets is not None:
                    raise ValueError(
                        f"{type(model).__name__} is not a Hugging Face encoder-decoder: give Probe a forward= "
                        "that feeds the targets (decoder_input_ids) to it"
                    )
                captured += capture.capture_attention(model, ids, with_qk=self.with_qk)
            return captured
        captured = []
        for start in range(0, len(self.encodings), self.batch_size):
            rows = range(start, min(start + self.batch_size, len(self.encodings)))
            batch = [self.encodings[i] for i in rows]
            # Right padding: real tokens keep positions 0..n-1, so each input attends as if alone.
            input_ids, mask = padded([e["input_ids"] for e in batch])
            kwargs = {}
            if any(e["segments"] for e in batch):
                if self.forward is not None:
                    raise ValueError(
                        f"probe {self.name!r} has sentence pairs and a forward=, which gets only input_ids and "
                        "attention_mask: their token_type_ids would not reach the model. Leave out forward= "
                        "(a Hugging Face model gets token_type_ids), or probe single texts"
                    )
                token_type_ids = torch.zeros_like(input_ids)
                for row, encoding in enumerate(batch):
                    if encoding["segments"]:
                        token_type_ids[row, encoding["segments"][0] : len(encoding["input_ids"])] = 1
                kwargs["token_type_ids"] = token_type_ids
            if targets is not None:
                kwargs["decoder_input_ids"], kwargs["decoder_attention_mask"] = padded([targets[i][0] for i in rows])
            captured += capture.capture_attention(
                model, input_ids, mask, with_qk=self.with_qk, forward=self.forward, **kwargs
            )
        return captured

    def log(self, writer, model, step, *, walltime=None):
        """Captures and writes the probe's attention, metrics and exemplars at `step`.

        The model runs in eval mode without gradients; its mode is restored afterwards, so this
        can be called from inside a training loop. Returns the metrics ({} on a rank that does
        not write): {metric: [L, H]} for the first group, {"<group>/<metric>": ...} for the others.
        """
        sharded = distributed.is_sharded(model)  # its forward is a collective: every rank runs it
        if not sharded and not distributed.is_writing_rank(self.all_ranks):
            return {}
        if any(probe_long.is_long(self, e) for e in self.encodings):
            return probe_long.log_long(self, writer, model, step, walltime=walltime)
        if self._streams(model):
            return probe_stream.log_probe(self, writer, model, step, walltime=walltime)
        distributed.guard_collective(model, f"probe {self.name!r}")
        captured = self.capture(model)
        if not distributed.is_writing_rank(self.all_ranks):
            return {}
        targets = self._targets(model) if self.has_targets else None
        syntax = self.syntax if self.compute_metrics else [None] * len(captured)
        examples = [
            self._example(encoding, result, parse, targets[i][1] if targets else None)
            for i, (encoding, result, parse) in enumerate(zip(self.encodings, captured, syntax))
        ]
        summary.write_examples(writer, self.name, examples, step, walltime=walltime, **self._write_options())
        values = {}
        if self.compute_metrics:
            for index, (group, group_values, table) in enumerate(self._analyse(captured, syntax)):
                summary.metrics(writer, self.name, group_values, step, group=group, first_group=index == 0,
                                all_ranks=True, walltime=walltime)
                if table is not None:
                    summary.exemplars(writer, self.name, table, step, all_ranks=True, walltime=walltime)
                prefix = "" if index == 0 else f"{group}/"
                values.update({prefix + metric: value for metric, value in group_values.items()})
        return values

    def _streams(self, model):
        """Whether `log` streams (stream.py: each layer encoded and summed as it is computed, one layer's
        attention alive at a time): a Hugging Face self-attention model on texts, without q/k, targets,
        sentence pairs or a forward of the user's. The other cases hold every layer until written."""
        from tb_attention import capture

        return (
            type(self)._write_options is Probe._write_options  # subclasses that slice their rows do not
            and not (self.with_qk or self.has_targets or self.forward is not None)
            and not any(e["segments"] for e in self.encodings)
            and capture.is_hf(modules.unwrap(model))
            and not getattr(getattr(modules.unwrap(model), "config", None), "is_encoder_decoder", False)
        )

    def _write_options(self):
        """Encoding options of summary.write_examples (AudioProbe: sliced rows that do not sum to 1)."""
        return {"max_dense_tokens": self.max_dense_tokens}

    def _example(self, encoding, result, parse, target_tokens):
        """One example in the writer's v2 form: a group per attention group, each with its tokens."""
        source_tokens = encoding["tokens"]
        token_lists = {"self": (source_tokens, source_tokens), "encoder": (source_tokens, source_tokens),
                       "decoder": (target_tokens, target_tokens), "cross": (target_tokens, source_tokens)}
        groups = []
        for group in result.groups:
            queries, keys = token_lists[group.name]
            if queries is None or len(queries) != group.attention.shape[2] or len(keys) != group.attention.shape[3]:
                queries = queries if queries is not None and len(queries) == group.attention.shape[2] else [
                    str(i) for i in range(group.attention.shape[2])]  # e.g. audio frames: numbered
                keys = keys if keys is not None and len(keys) == group.attention.shape[3] else [
                    str(j) for j in range(group.attention.shape[3])]
            spec = {
                "name": group.name,
                "attention": group.attention,
                "tokens": list(queries),
                "key_tokens": list(keys),
                "causal": group.causal,
                "layer_names": group.layer_names,
            }
            if self.with_qk and group.query is not None:
                spec.update(query=group.query, key=group.key, scaling=group.scaling)
                spec.update({rule: getattr(group, rule) for rule in schema.SCORING_RULES})
            groups.append(spec)
        return {
            "tokens": groups[0]["tokens"],
            "text": encoding["text"],
            "segments": encoding["segments"],
            "pos": None if parse is None else list(parse.pos),
            "groups": groups,
        }

    def _analyse(self, captured, syntax):
        """Per group: (name, {metric: [L, H]}, exemplar table of http_api.md's /exemplars or None)."""
        from tb_attention import metrics
        from tb_attention.metrics import cross as cross_metrics

        out = []
        for index, name in enumerate(g.name for g in captured[0].groups):
            groups = [c.group(name) for c in captured]
            if name == "cross":
                values = cross_metrics.cross_metrics([g.attention for g in groups])
                table = None
            else:
                stats = metrics.AttentionStats(
                    groups[0].num_layers,
                    groups[0].attention.shape[1],
                    include_first=self.include_first,
                    top_k=self.top_k_exemplars,
                )
                group_syntax = syntax if name in ("self", "encoder") else [None] * len(groups)
                stats.update([g.attention for g in groups],
                             syntax=group_syntax if any(s is not None for s in group_syntax) else None)
                values = stats.result()
                table = None
                if index == 0:
                    table = exemplar_table(
                        [[[(e.key, e.score, e.i, e.j) for e in head] for head in layer] for layer in stats.exemplars()],
                        inputs=[{"tokens": e["tokens"], "text": e["text"], "example": i}
                                for i, e in enumerate(self.encodings)],
                        top_k=self.top_k_exemplars,
                    )
            top = cross_metrics.max_logit(groups)
            if top is not None:
                values["max_logit"] = top
            out.append((name, values, table))
        return out


class VisionLanguageProbe(language.VisionLanguage, Probe):
    __doc__ = language.VisionLanguage.__doc__
