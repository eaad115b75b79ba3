"""Probes: a fixed set of texts whose attention and metrics are logged as a model trains."""

import warnings

from tb_attention import defaults, metadata, summary


class Probe:
    """Texts tokenised once; `probe.log(writer, model, step)` logs their attention at `step`.

    texts: strings, or (a, b) pairs for sentence-pair models (where segment A ends is stored).
    name: the tag of the attention; metrics go to `<name>/<metric>`, exemplars to `<name>/exemplars`.
    with_qk: also store query and key vectors (the neuron view); ~4 bytes per head dimension per
        token per head, so off by default.
    metrics: compute and log the per-head metrics (distance, entropy, null attention, variability,
        and with syntax: dependency alignment and part-of-speech shares).
    syntax: parse the texts with spaCy for the syntax metrics; None = when spaCy and an English
        pipeline are installed; True = required; False = never.
    include_first: count attention to the first token in the metrics (the paper excludes it).
    top_k_exemplars: inputs kept per head as exemplars.
    max_length: truncate longer texts (tokens); None = the tokenizer's default behaviour.
    batch_size: texts per forward pass.
    """

    def __init__(
        self,
        tokenizer,
        texts,
        name=defaults.PROBE_TAG,
        *,
        with_qk=False,
        metrics=True,
        syntax=None,
        spacy_model=None,
        include_first=False,
        top_k_exemplars=defaults.TOP_K_EXEMPLARS,
        max_length=None,
        batch_size=8,
        max_dense_tokens=metadata.DEFAULT_MAX_DENSE_TOKENS,
        all_ranks=False,
    ):
        if isinstance(texts, (str, tuple)):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("a probe needs at least one text")
        for i, text in enumerate(texts):
            if not (isinstance(text, str) or (isinstance(text, tuple) and len(text) == 2 and all(isinstance(t, str) for t in text))):
                raise TypeError(f"probe text {i} must be a string or a (text_a, text_b) pair, got {text!r}")
            if not (text if isinstance(text, str) else "".join(text)).strip():
                raise ValueError(f"probe text {i} is empty")
        if "/" in name and name.split("/", 1)[1] in metadata.METRICS:
            raise ValueError(f"probe name {name!r} would collide with its metric tags")
        self.tokenizer = tokenizer
        self.texts = texts
        self.name = name
        self.with_qk = with_qk
        self.compute_metrics = metrics
        self.include_first = include_first
        self.top_k_exemplars = top_k_exemplars
        self.batch_size = batch_size
        self.max_dense_tokens = max_dense_tokens
        self.all_ranks = all_ranks
        self._syntax_wanted = syntax
        self._spacy_model = spacy_model
        self._syntax = None  # parsed on first use, once
        self.max_length = max_length
        self.encodings = [self._encode(text, max_length) for text in texts]

    def _encode(self, text, max_length):
        pair = isinstance(text, tuple)
        options = {"truncation": True, "max_length": max_length} if max_length else {}
        encoding = self.tokenizer(*text, **options) if pair else self.tokenizer(text, **options)
        ids = list(encoding["input_ids"])
        if not ids:
            raise ValueError(f"probe text {text!r} tokenises to nothing")
        segments = None
        if pair:
            segments = [_segment_a_end(encoding, len(ids))]
        return {
            "input_ids": ids,
            "tokens": self.tokenizer.convert_ids_to_tokens(ids),
            "text": " ".join(text) if pair else text,
            "segments": segments,
        }

    # -----------------------------------------------------------------------------------------

    @property
    def syntax(self):
        """Per text, its spaCy parse mapped onto the tokens (None where not parsed)."""
        if self._syntax is None:
            self._syntax = self._parse()
        return self._syntax

    def _parse(self):
        if self._syntax_wanted is False:
            return [None] * len(self.texts)
        from tb_attention import syntax

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

    def capture(self, model):
        """Each text's attention (and q/k when asked) at the model's current weights."""
        import torch

        from tb_attention import capture

        model = _unwrap(model)
        captured = []
        for start in range(0, len(self.encodings), self.batch_size):
            batch = self.encodings[start : start + self.batch_size]
            n = max(len(e["input_ids"]) for e in batch)
            # Right padding: real tokens keep positions 0..n-1, so each input attends as if alone.
            input_ids = torch.zeros((len(batch), n), dtype=torch.long)
            mask = torch.zeros((len(batch), n), dtype=torch.long)
            token_type_ids = None
            for row, encoding in enumerate(batch):
                ids = encoding["input_ids"]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
                if encoding["segments"]:
                    token_type_ids = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
                    token_type_ids[row, encoding["segments"][0] : len(ids)] = 1
            kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            captured += capture.capture_attention(model, input_ids, mask, with_qk=self.with_qk, **kwargs)
        return captured

    def log(self, writer, model, step, *, walltime=None):
        """Captures and writes the probe's attention, metrics and exemplars at `step`.

        The model runs in eval mode without gradients; its mode is restored afterwards, so this
        can be called from inside a training loop. Returns the metrics ({} on a rank that does
        not write).
        """
        if not summary.is_writing_rank(self.all_ranks):
            return {}
        captured = self.capture(model)
        syntax = self.syntax if self.compute_metrics else [None] * len(captured)
        examples = []
        for encoding, result, parse in zip(self.encodings, captured, syntax):
            example = {
                "attention": result.attention,
                "tokens": encoding["tokens"],
                "text": encoding["text"],
                "segments": encoding["segments"],
                "pos": None if parse is None else list(parse.pos),
            }
            if self.with_qk:
                example.update(query=result.query, key=result.key, scaling=result.scaling)
                example.update({name: getattr(result, name) for name in metadata.SCORING_RULES})
            examples.append(example)
        summary.write_examples(
            writer, self.name, examples, step, walltime=walltime, max_dense_tokens=self.max_dense_tokens
        )
        values = {}
        if self.compute_metrics:
            values, table = self._analyse(captured, syntax)
            summary.metrics(writer, self.name, values, step, all_ranks=True, walltime=walltime)
            summary.exemplars(writer, self.name, table, step, all_ranks=True, walltime=walltime)
        return values

    def _analyse(self, captured, syntax):
        """Metrics [L, H] per name, and the exemplar table of http_api.md's /exemplars."""
        from tb_attention import metrics

        attentions = [c.attention for c in captured]
        stats = metrics.AttentionStats(
            captured[0].num_layers,
            captured[0].num_heads,
            include_first=self.include_first,
            top_k=self.top_k_exemplars,
        )
        stats.update(attentions, syntax=syntax if any(s is not None for s in syntax) else None)
        table = exemplar_table(
            [[[(e.key, e.score, e.i, e.j) for e in head] for head in layer] for layer in stats.exemplars()],
            inputs=[{"tokens": e["tokens"], "text": e["text"], "example": i} for i, e in enumerate(self.encodings)],
            top_k=self.top_k_exemplars,
        )
        return stats.result(), table


def exemplar_table(exemplars, inputs, top_k):
    """The /exemplars table from per-head lists of (input, score, from, to); `inputs` lists
    every input those indices refer to (tokens, text, and the stored example index or None)."""
    num_layers, num_heads = len(exemplars), len(exemplars[0]) if exemplars else 0
    return {
        "num_layers": num_layers,
        "num_heads": num_heads,
        "top_k": top_k,
        "inputs": inputs,
        "heads": [
            [
                [{"input": int(i), "score": float(s), "from": int(q), "to": int(k)} for i, s, q, k in head]
                for head in layer
            ]
            for layer in exemplars
        ],
    }


def _segment_a_end(encoding, length):
    """Where segment A ends in a pair's tokens (specials before B's first token belong to A)."""
    type_ids = encoding.get("token_type_ids")
    if type_ids is not None and any(type_ids):
        return type_ids.index(1)
    try:
        sequence_ids = encoding.sequence_ids()
    except (AttributeError, ValueError):
        return length
    return next((i for i, s in enumerate(sequence_ids) if s == 1), length)


def _unwrap(model):
    """The module inside DistributedDataParallel: its forward would wait for the other ranks."""
    while type(model).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(model, "module"):
        model = model.module
    return model
