"""Generation probes: the attention a model computes while it writes, each decoding step over its cache, logged."""

import json
import math
import random
import warnings

import numpy as np

from tb_attention.probes.inputs import token_names
from tb_attention.probes.packed import ToHtml
from tb_attention.runtime import defaults, distributed, modules
from tb_attention.storage import codecs, schema, summary
from tb_attention.storage.schema import exemplar_table

DEFAULT_MAX_NEW_TOKENS = 32
UNKNOWN_TOKEN = "\u27e8id {}: not in the tokenizer\u27e9"  # a written id the tokenizer cannot name
DEFAULT_SEED = 0  # sampling probes: the same seed at every step, so that steps stay comparable
# generate arguments that decode more than one sequence, or draft with another model: the values that do not
_ONE_SEQUENCE = {"num_beams": (1,), "num_return_sequences": (1,), "num_beam_groups": (1,), "assistant_model": (),
                 "prompt_lookup_num_tokens": (), "penalty_alpha": (0, 0.0), "guidance_scale": (1, 1.0)}
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_target_positions", "seq_length", "n_ctx")


class GenerationProbe(ToHtml):
    """Prompts the model answers at every `log`: its own `generate`, each decoding step's attention kept.

    `Probe(tokenizer, prompts, generate=...)` makes one. Each `log(writer, model, step)` generates from
    every prompt, one at a time, and stores per prompt one causal example: the prompt's rows (the
    prefill), then one row per generated token over every key its cache held, every layer and head, as
    the model computed them (sliding windows, grouped queries, sinks, soft caps; no second forward).
    The example's `generation` field (http_api.md) holds the generated tokens, each one's probability
    and its top-5 alternatives. An encoder-decoder's example has groups `encoder`, `decoder` (the
    decoding) and `cross` (each generated token over the source).

    prompts: texts; chat messages (a list of {"role", "content"} dicts per prompt), put through the
        tokenizer's chat template with the generation prompt added; or token id lists.
    generate: the `model.generate` keyword arguments (a dict), or a transformers GenerationConfig.
        Greedy unless do_sample=True; max_new_tokens defaults to 32. The generated ids are those of a
        plain `model.generate(input_ids, attention_mask, **generate)` of the prompt alone.
    seed: set before sampling (on a forked random state: the caller's is left as it was) and stored;
        default 0 at every log, so that steps compare; None draws a new seed each log.
    step: a model without `generate` (plain PyTorch): step(model, input_ids [1, n], cache) -> logits
        [1, n, vocab] or [1, vocab], or (logits, new cache); see `capture.decoding.generate`. Options
        are then max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id.
    with_qk: also store each position's query and key vectors (the neuron view), as the decoding steps
        computed them: each new row's query, each new position's key as the cache received it.
    Other options as for Probe: name, metrics, include_first, top_k_exemplars, max_dense_tokens, all_ranks.
    Metrics: the probe's per-head metrics over each whole example, max_logit, and over the decoding
    queries prompt_share and induction (http_api.md).
    """

    DASHBOARD_VIEW = "generation"

    def __init__(self, tokenizer, prompts, name=defaults.PROBE_TAG, *, generate, step=None, seed=DEFAULT_SEED,
                 with_qk=False, metrics=True, include_first=False, top_k_exemplars=defaults.TOP_K_EXEMPLARS,
                 max_dense_tokens=codecs.DEFAULT_MAX_DENSE_TOKENS, all_ranks=False, _encodings=None, **unsupported):
        for option in ("targets", "forward", "syntax", "spacy_model", "max_length", "batch_size"):
            if unsupported.get(option) not in (None, False) or (option == "batch_size" and option in unsupported):
                raise TypeError(
                    f"a generation probe does not take {option}=: it generates from each prompt alone"
                    + (" (give step= for a plain model)" if option == "forward" else "")
                )
            unsupported.pop(option, None)
        if unsupported:
            raise TypeError(f"Probe(generate=...) got unexpected arguments: {', '.join(sorted(unsupported))}")
        if tokenizer is None:
            raise TypeError("a generation probe needs the tokenizer, to tokenise its prompts and name the tokens it writes")
        self.options, self.max_new_tokens = _options(generate, step is not None)
        self.do_sample = bool(self.options.get("do_sample") or getattr(self.options.get("generation_config"), "do_sample", False))
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = seed
        self.step_function = step
        if _encodings is not None:  # AudioProbe's clips: input_features and the encoder frames kept
            encodings = _encodings
        else:
            encodings = [self._encode_prompt(tokenizer, prompt, i) for i, prompt in enumerate(_prompt_list(prompts))]
        if "/" in name and name.split("/", 1)[1] in schema.METRICS:
            raise ValueError(f"probe name {name!r} would collide with its metric tags")
        self.tokenizer = tokenizer
        self.name = name
        self.encodings = encodings
        self.texts = [e["text"] for e in encodings]
        self.with_qk = with_qk
        self._warned_unknown = False
        self.compute_metrics = metrics
        self.include_first = include_first
        self.top_k_exemplars = top_k_exemplars
        self.max_dense_tokens = max_dense_tokens
        self.all_ranks = all_ranks

    @staticmethod
    def _encode_prompt(tokenizer, prompt, index):
        if isinstance(prompt, str):
            ids = list(tokenizer(prompt)["input_ids"])
            text = prompt
        elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
            if getattr(tokenizer, "chat_template", None) is None:
                raise ValueError(f"prompt {index} is chat messages, but the tokenizer has no chat template: give a text")
            rendered = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
            # The example is named by what was asked (its last user message); the prompt as rendered is kept too.
            users = [m.get("content") for m in prompt if m.get("role") == "user" and isinstance(m.get("content"), str)]
            text = users[-1] if users else rendered
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids, text = list(prompt), tokenizer.decode(prompt)
        else:
            raise TypeError(f"prompt {index} must be a text, chat messages (a list of role/content dicts) or token ids; "
                            f"got {type(prompt).__name__}")
        if not ids:
            raise ValueError(f"prompt {index} ({text!r}) tokenises to nothing")
        tokens = token_names(tokenizer, ids, f"in prompt {index}", "give prompt ids the tokenizer knows")
        encoding = {"input_ids": ids, "tokens": tokens, "text": text, "segments": None}
        if not isinstance(prompt, str) and isinstance(prompt[0], dict):
            encoding["prompt"] = rendered
        return encoding

    # ------------------------------------------------------------------------------------------

    def check_model(self, model):
        """Errors, before anything runs, for a model this probe cannot generate with."""
        from tb_attention import capture

        module = modules.unwrap(model)
        hf = capture.is_hf(module)
        if self.step_function is None and not (hf and callable(getattr(module, "generate", None))
                                               and getattr(module, "can_generate", lambda: True)()):
            raise TypeError(
                f"{type(module).__name__} has no generate(): give the probe step=lambda model, input_ids, cache: "
                "(logits, cache) to run one decoding step"
            )
        if self.step_function is not None and hf and callable(getattr(module, "generate", None)):
            raise TypeError(f"{type(module).__name__} has generate(): the probe uses it; step= is for plain PyTorch models")
        if distributed.is_sharded(model):
            raise TypeError("generation probes do not run on sharded models (FSDP, ZeRO-3): log them from an unsharded copy")
        if (any(e.get("input_features") is not None for e in self.encodings)
                and getattr(getattr(module, "generation_config", None), "is_multilingual", False)
                and not self.options.get("language")):
            raise ValueError(
                f"{type(module).__name__} is multilingual: without a language its generate first runs a decoder pass "
                "to detect it, which is no step of the transcript; give generate=dict(language='en', ...)"
            )
        config = getattr(module, "config", None)
        decoder = getattr(config, "get_text_config", lambda **_: config)(decoder=True) if config is not None else None
        vocab = getattr(decoder, "vocab_size", None)
        largest = max((max(e["input_ids"]) for e in self.encodings if e.get("input_ids")), default=-1)
        if isinstance(vocab, int) and largest >= vocab:
            raise ValueError(
                f"the prompts hold token ids up to {largest:,}, but the model's vocabulary has {vocab:,}: "
                "give the probe the model's own tokenizer"
            )
        context = next((getattr(decoder, f) for f in _CONTEXT_FIELDS if isinstance(getattr(decoder, f, None), int)), None)
        if context is None or getattr(config, "is_encoder_decoder", False):
            return
        for encoding in self.encodings:
            n = len(encoding["input_ids"] or ())
            if n + self.max_new_tokens > context:
                raise ValueError(
                    f"prompt {encoding['text']!r} has {n} tokens: with max_new_tokens={self.max_new_tokens} that is "
                    f"{n + self.max_new_tokens}, more than the model's context of {context} positions; shorten the "
                    "prompt or lower max_new_tokens"
                )

    def log(self, writer, model, step, *, walltime=None):
        """Generates from every prompt and writes the examples, metrics and exemplars at `step`; returns the metrics."""
        from tb_attention.capture import decoding

        if not distributed.is_writing_rank(self.all_ranks):
            return {}
        summary.check_step(step)
        self.check_model(model)
        seed = self.seed if self.seed is not None else random.randrange(2**31)
        decoded = []
        dtype = next(modules.unwrap(model).parameters()).dtype
        within = self._within(model)
        for encoding in self.encodings:
            inputs = self._model_inputs(encoding, model)
            if encoding.get("input_features") is not None:  # Whisper: the clip's log-mel features
                inputs = {"input_features": encoding["input_features"][None].to(dtype)}
            decoded.append(decoding.generate(
                model, encoding["input_ids"], self.options, seed=seed if self.do_sample else None,
                step=self.step_function, model_inputs=inputs, frames=encoding.get("frames"), with_qk=self.with_qk,
                within=within))
        examples, values, table = self._examples(decoded)
        summary.write_examples(writer, self.name, examples, step, walltime=walltime, max_dense_tokens=self.max_dense_tokens)
        if self.compute_metrics:
            for index, (group, group_values) in enumerate(values):
                summary.metrics(writer, self.name, group_values, step, group=group, first_group=index == 0,
                                all_ranks=True, walltime=walltime)
            summary.exemplars(writer, self.name, table, step, all_ranks=True, walltime=walltime)
        out = {}
        for index, (group, group_values) in enumerate(values):
            out.update({(f"{group}/" if index else "") + metric: value for metric, value in group_values.items()})
        return out

    def _model_inputs(self, encoding, model):
        """More `generate` inputs of a prompt besides its ids (a vision-language model's images), or None."""
        return None

    def _within(self, model):
        """The qualified name of the module whose attention is kept (None: the whole model's)."""
        return None

    def _causal(self, name, dense):
        """Whether a layer of group `name` is stored causal (a prefix LM's prompt attends both ways)."""
        return name not in ("encoder", "cross")

    # ------------------------------------------------------------------------------------------

    def _tokens(self, ids):
        """Token strings of ids the model wrote or ranked. An id the tokenizer has no token for (a model
        whose vocabulary is padded past its tokenizer's) is named as such, with a warning: the model did
        write it, and a training loop should not stop for it."""
        ids = [int(i) for i in ids]
        names = self.tokenizer.convert_ids_to_tokens(ids)
        unknown = [i for i, name in zip(ids, names) if name is None]
        if unknown and not self._warned_unknown:
            self._warned_unknown = True
            size = f" ({len(self.tokenizer)} tokens)" if hasattr(self.tokenizer, "__len__") else ""
            warnings.warn(
                f"generation probe {self.name!r}: the model wrote or ranked id {unknown[0]}, which its tokenizer{size} "
                f"has no token for; it is stored as {UNKNOWN_TOKEN.format(unknown[0])!r}. The model's vocabulary is "
                "larger than the tokenizer's (padded, or another tokenizer's): use the tokenizer the model was "
                "trained with, or keep generation to the tokenizer's ids: "
                "generate=dict(suppress_tokens=list(range(len(tokenizer), model.config.vocab_size)), ...)",
                stacklevel=4,
            )
        return [UNKNOWN_TOKEN.format(i) if name is None else str(name) for i, name in zip(ids, names)]

    def _generation(self, encoding, result, group):
        import torch

        generated = result.generated_ids
        probs, top = [], []
        for token_id, logits in zip(generated, result.logits):
            p = torch.softmax(logits.double(), dim=-1)
            probs.append(float(p[token_id]))
            values, ids = torch.topk(p, min(schema.GENERATION_TOP, p.numel()))
            names = self._tokens(ids.tolist())
            top.append([[name, int(i), float(v)] for name, i, v in zip(names, ids.tolist(), values.tolist())])
        return {
            "group": group,
            "prompt_length": len(result.prompt_ids),
            "prompt": encoding.get("prompt", encoding["text"]),
            "text": (self.tokenizer.decode(generated, skip_special_tokens=True) if hasattr(self.tokenizer, "decode")
                     else " ".join(self._tokens(generated))),
            "tokens": self._tokens(generated),
            "ids": [int(t) for t in generated],
            "probs": probs,
            "top": top,
            "stop": result.stop,
            "do_sample": self.do_sample,
            "seed": result.seed,
            "options": _json_safe(self.options),
        }

    def _examples(self, decoded):
        """(examples for summary.write_examples, [(group, {metric: [L, H]})], exemplar table)."""
        import torch

        from tb_attention import metrics
        from tb_attention.metrics import cross as cross_metrics
        from tb_attention.metrics.generation import GenerationStats

        first = decoded[0].recorder
        group_names = first.group_names()
        decoding_group = "decoder" if first.encoder_decoder else "self"
        stats, max_logits, generation_stats, cross = {}, {}, None, []
        examples = []
        for index, (encoding, result) in enumerate(zip(self.encodings, decoded)):
            recorder = result.recorder
            if recorder.group_names() != group_names:
                raise RuntimeError(f"prompt {index}: the model's attention groups changed between prompts")
            fed = result.prompt_ids + result.generated_ids[:-1]  # the decoding group's query tokens
            tokens = {decoding_group: self._tokens(fed)}
            if first.encoder_decoder:
                tokens["encoder"] = encoding["tokens"]
            groups = []
            for name in group_names:
                queries = tokens["encoder" if name == "encoder" else decoding_group]
                keys = tokens["encoder" if name in ("encoder", "cross") else decoding_group]
                num_layers = len(recorder.layer_names(name))
                if recorder.num_queries(name) != len(queries):
                    raise RuntimeError(
                        f"prompt {index}: the {name} attention read {recorder.num_queries(name)} tokens, not the "
                        f"{len(queries)} of the prompt and the tokens generated"
                    )
                layers, cross_layers, causal_layers = [], [], []
                for layer in range(num_layers):
                    dense = recorder.dense_layer(name, layer, len(keys))
                    causal = self._causal(name, dense)
                    causal_layers.append(causal)
                    layers.append(codecs.encode_attention_layer(dense, queries, keys, layer=layer, causal=causal,
                                                                max_dense_tokens=self.max_dense_tokens, check=False))
                    if self.compute_metrics and name != "cross":
                        group_stats = stats.setdefault(name, [])
                        if layer == len(group_stats):
                            group_stats.append(metrics.AttentionStats(1, dense.shape[0], include_first=self.include_first,
                                                                      top_k=self.top_k_exemplars))
                        group_stats[layer].update(dense[None, None], keys=[index])
                        group_stats[layer].release_workspace()
                    if self.compute_metrics and name == decoding_group:
                        if generation_stats is None:
                            generation_stats = GenerationStats(num_layers, dense.shape[0])
                        generation_stats.update(layer, dense, fed, len(result.prompt_ids))
                    if self.compute_metrics and name == "cross":
                        cross_layers.append(dense)
                    del dense
                if cross_layers:
                    cross.append(torch.stack(cross_layers))
                top = recorder.max_logit(name).numpy()
                max_logits[name] = top if name not in max_logits else np.maximum(max_logits[name], top)
                spec = {"name": name, "attention": layers, "tokens": queries, "key_tokens": keys,
                        "causal": all(causal_layers), "layer_names": recorder.layer_names(name)}
                if self.with_qk:
                    spec.update(_query_key(recorder, name, num_layers))
                groups.append(spec)
            examples.append({
                "tokens": groups[0]["tokens"], "text": encoding["text"], "segments": None, "pos": None,
                "groups": groups, "generation": self._generation(encoding, result, decoding_group),
            })
        if not self.compute_metrics:
            return examples, [], None
        values = []
        for name in group_names:
            if name == "cross":
                group_values = cross_metrics.cross_metrics(cross)
            else:
                per_layer = [s.result() for s in stats[name]]
                group_values = {m: np.concatenate([v[m] for v in per_layer]) for m in per_layer[0]}
            if name == decoding_group:
                group_values.update(generation_stats.result())
            group_values["max_logit"] = max_logits[name].astype(np.float32)
            values.append((name, group_values))
        first_stats = stats[group_names[0]]
        table = exemplar_table(
            [[[(e.key, e.score, e.i, e.j) for e in head] for head in s.exemplars()[0]] for s in first_stats],
            inputs=[{"tokens": e["tokens"], "text": e["text"], "example": i} for i, e in enumerate(examples)],
            top_k=self.top_k_exemplars,
        )
        return examples, values, table


def _query_key(recorder, group, num_layers):
    """The writer's q/k fields of one group: query [L, H, Nq, d], key [L, H_kv, Nk, d], scaling and the
    scoring rules (None where no layer uses one), as Probe stores them for the neuron view."""
    import torch

    pairs = [recorder.query_key(group, layer) for layer in range(num_layers)]
    return {"query": torch.stack([q for q, _ in pairs]), "key": torch.stack([k for _, k in pairs]),
            "scaling": [s[0] for s in recorder.scorings(group)],
            **recorder.scoring_rules(group, causal=group not in ("encoder", "cross"))}


def _prompt_list(prompts):
    if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)):
        prompts = [prompts]  # one text, or one conversation
    prompts = list(prompts)
    if not prompts:
        raise ValueError("a generation probe needs at least one prompt")
    return prompts


def _options(generate, plain):
    """(the generate keyword arguments, max_new_tokens), checked; greedy unless asked to sample."""
    try:
        from transformers import GenerationConfig
    except ImportError:  # plain PyTorch models only
        GenerationConfig = ()
    if GenerationConfig and isinstance(generate, GenerationConfig):
        if plain:
            from tb_attention.capture.decoding import STEP_OPTIONS

            raise TypeError("with step=, give generate as a dict of " + ", ".join(STEP_OPTIONS))
        options = {"generation_config": generate}
        max_new = generate.max_new_tokens
        if max_new is None:
            raise ValueError("the GenerationConfig sets no max_new_tokens: set it (how many tokens each log generates)")
    elif isinstance(generate, dict):
        options = dict(generate)
        for name in ("input_ids", "inputs", "attention_mask", "return_dict_in_generate", "output_logits",
                     "output_scores", "output_attentions", "streamer"):
            if name in options:
                raise TypeError(f"generate={{... {name!r} ...}}: the probe sets {name} itself; leave it out")
        if plain:
            from tb_attention.capture.decoding import check_step_options

            check_step_options(options)
        options.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        options.setdefault("do_sample", False)
        max_new = options["max_new_tokens"]
    else:
        raise TypeError(f"generate must be a dict of model.generate arguments or a GenerationConfig, got {type(generate).__name__}")
    settings = generate.to_dict() if GenerationConfig and isinstance(generate, GenerationConfig) else options
    for name, allowed in _ONE_SEQUENCE.items():
        value = settings.get(name)
        if value is not None and value not in allowed:
            raise ValueError(
                f"generate: {name}={value!r} decodes several sequences (or drafts with another model); a generation "
                f"probe stores the one sequence greedy or sampled decoding writes: leave {name} out"
            )
    if not isinstance(max_new, int) or isinstance(max_new, bool) or max_new <= 0:
        raise ValueError(f"max_new_tokens must be a positive number of tokens, got {max_new!r}")
    if max_new > schema.MAX_GENERATED:
        raise ValueError(f"max_new_tokens={max_new}: at most {schema.MAX_GENERATED:,} generated tokens can be stored")
    return options, max_new


def _json_safe(options):
    out = {}
    for key, value in options.items():
        if hasattr(value, "to_diff_dict"):
            value = value.to_diff_dict()
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            value = repr(value)
        if isinstance(value, float) and not math.isfinite(value):
            value = repr(value)
        out[key] = value
    return out
