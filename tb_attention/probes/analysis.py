"""Corpus analysis (Vig & Belinkov 2019): a local model over many sentences, sharded across ranks."""

import collections
import concurrent.futures
import dataclasses
import pathlib
import time

import numpy as np
import torch  # noqa: E402  (after capture, whose import error says how to install it)

from tb_attention import (
    capture,  # first: it explains a missing torch
    metrics,
)
from tb_attention.probes import syntax as syntax_lib
from tb_attention.runtime import defaults, devices, distributed
from tb_attention.storage import codecs, schema, summary
from tb_attention.storage.schema import exemplar_table


class AnalysisError(ValueError):
    """Bad input to the analysis (model folder, sentence file); the message names it."""


# ---------------------------------------------------------------------------------------------
# Inputs


def model_source(path):
    """(folder, from_pretrained options) of a model folder or .gguf file; checks it looks like one."""
    path = pathlib.Path(path)
    if not path.exists():
        raise AnalysisError(f"--model {path}: no such folder or file")
    if path.is_file():
        if path.suffix != ".gguf":
            raise AnalysisError(f"--model {path}: give a model folder (config.json, weights) or a .gguf file")
        return path.parent, {"gguf_file": path.name}
    if not (path / "config.json").exists():
        raise AnalysisError(f"--model {path}: the folder has no config.json; is it a Hugging Face model folder?")
    return path, {}


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name=None):
    """The torch.device to run on: `name` ("cpu", "cuda", "cuda:1"...), else CUDA when available;
    a bare "cuda" under torchrun is the local rank's GPU."""
    if name is None:
        return distributed.default_device()
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise AnalysisError(f"--device {name}: not a device torch knows ({e})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AnalysisError(f"--device {name}: this torch sees no CUDA GPU (torch {torch.__version__})")
        if device.index is None:
            device = torch.device("cuda", distributed.local_rank() % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise AnalysisError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPUs")
    return device


def load_model(path, *, device="cpu", dtype="float32", generate=False):
    """A local Hugging Face model folder (or .gguf file) -> (base model in eval mode, tokenizer).

    The base model (no language-model head) is enough for attention and is faster. dtype: a
    name of DTYPES; the recorded attention is float32 whatever it is (softmax in float32).
    generate: the model with its language-model head, to generate with (encoder-decoders too).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder, options = model_source(path)
    if dtype not in DTYPES:
        raise AnalysisError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    try:
        config = AutoConfig.from_pretrained(str(folder), **options)
        encoder_decoder = getattr(config, "is_encoder_decoder", False)
        if encoder_decoder and not generate:
            raise AnalysisError(f"--model {path}: encoder-decoder models ({config.model_type}) are not supported yet "
                                "(they are with --generate)")
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **options)
        model_class = AutoModel if not generate else AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
        model = model_class.from_pretrained(str(folder), dtype=DTYPES[dtype], **options)
    except AnalysisError:
        raise
    except (OSError, ValueError) as e:
        raise AnalysisError(f"--model {path}: cannot load it with transformers: {e}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise AnalysisError(f"--model {path}: syntax alignment needs a fast tokenizer (tokenizer.json)")
    return model.to(device).eval(), tokenizer


def read_sentences(path, limit=None):
    """One sentence per line; blank lines skipped."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnalysisError(f"--sentences {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise AnalysisError(f"--sentences {path}: not UTF-8 text ({e})") from None
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise AnalysisError(f"--sentences {path}: the file has no sentences")
    return sentences[:limit] if limit else sentences


# ---------------------------------------------------------------------------------------------
# The pass over the corpus


@dataclasses.dataclass
class Analysis:
    """What `analyze_corpus` found: metrics, exemplars and examples to store."""

    stats: metrics.AttentionStats
    sentences: list
    examples: list  # dicts for summary.write_examples: the sample, then exemplar sentences
    exemplars: dict  # the /exemplars table
    seconds: float
    tokens: int


def _batches(tokenizer, sentences, indices, batch_size, max_length):
    """Batches of similar length (less padding), each with its sentences' global indices."""
    lengths = [len(ids) for ids in tokenizer([sentences[i] for i in indices], truncation=True, max_length=max_length)["input_ids"]]
    order = [indices[k] for k in np.argsort(lengths, kind="stable")]
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _prepared(tokenizer, sentences, indices, batch_size, max_length, nlp):
    """(batch, encoding, parses) of each batch of `_batches`, made one batch ahead in a thread:
    tokenizing and parsing (spaCy) run on the CPU while the model computes the batch before."""

    def prepare(batch):
        texts = [sentences[i] for i in batch]
        encoding = _encode(tokenizer, texts, max_length)
        parses = syntax_lib.token_syntax(tokenizer, texts, nlp=nlp, encoding=encoding) if nlp else None
        return batch, encoding, parses

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tb-attention-prepare") as pool:
        pending = collections.deque()
        for batch in _batches(tokenizer, sentences, indices, batch_size, max_length):
            pending.append(pool.submit(prepare, batch))
            if len(pending) > 1:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _encode(tokenizer, texts, max_length):
    return tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_offsets_mapping=True, return_tensors="pt"
    )


def _forward(model, encoding, device):
    model(input_ids=devices.to_device(encoding["input_ids"], device),
          attention_mask=devices.to_device(encoding["attention_mask"], device))


def _example(tokenizer, encoding, row, weights, parse, text):
    """One stored example (unpadded) from a batch row and its recorded [L, H, N, N] weights."""
    keep = encoding["attention_mask"][row].bool()
    ids = encoding["input_ids"][row][keep].tolist()
    index = keep.nonzero().squeeze(1).to(weights.device)
    attention = weights[:, :, index][:, :, :, index]
    return {
        "attention": attention.float().cpu(),
        "tokens": tokenizer.convert_ids_to_tokens(ids),
        "text": text,
        "pos": None if parse is None else list(parse.pos),
    }


def analyze_corpus(
    model,
    tokenizer,
    sentences,
    *,
    batch_size=defaults.BATCH_SIZE,
    max_length=defaults.MAX_LENGTH,
    sample=defaults.SAMPLE,
    exemplar_examples=defaults.EXEMPLAR_EXAMPLES,
    top_k=defaults.TOP_K_EXEMPLARS,
    include_first=False,
    with_syntax=True,
    nlp=None,
    progress=True,
):
    """Runs `model` over `sentences` and accumulates the per-head metrics.

    The model runs where its parameters are, and the metrics are accumulated there. Under
    torch.distributed (torchrun) each rank takes every world-th sentence and the results are
    all-reduced (NCCL for a model on a GPU, else gloo); every rank returns the whole result, rank 0
    with the examples to store.
    """
    if max_length > codecs.DEFAULT_LONG_TOKENS:  # its metrics are sums over whole [N, N] rows, per batch
        raise ValueError(
            f"max_length={max_length}: the corpus analysis holds a batch's dense attention, so sentences stay at "
            f"most {codecs.DEFAULT_LONG_TOKENS} tokens (the probe's long_tokens); log longer texts with a Probe "
            "(`tb-attention probe`), which takes the long path above long_tokens"
        )
    device = devices.device_of(model)
    rank, world = distributed.join("nccl" if device.type == "cuda" else "gloo")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    nlp = (nlp or syntax_lib.load_spacy()) if with_syntax else None
    config = model.config
    stats = metrics.AttentionStats(
        config.num_hidden_layers, config.num_attention_heads, include_first=include_first, top_k=top_k
    )
    mine = list(range(rank, len(sentences), world))
    sample_ids = set(mine[:sample]) if rank == 0 else set()
    examples, token_count = {}, 0
    # The attention of the sentences that would be stored as exemplars if the corpus ended here,
    # kept as the pass goes, so that only those another rank's shard displaced need a forward again.
    # Knowing which they are reads the metrics back after every batch: on an accelerator that
    # would make the host wait for each batch, so there the few exemplars run again at the end.
    held, hold = {}, rank == 0 and device.type == "cpu"
    started = time.perf_counter()
    bar = _progress(len(mine), progress and rank == 0, f"analysing {type(model).__name__}")
    with torch.inference_mode(), capture.recording(model) as recorder:
        for batch, encoding, parses in _prepared(tokenizer, sentences, mine, batch_size, max_length, nlp):
            _forward(model, encoding, device)
            weights = torch.stack(recorder.attentions, 1)  # [B, L, H, N, N], on the model's device
            stats.update(weights, mask=encoding["attention_mask"], syntax=parses, keys=batch)
            wanted = set(_exemplar_keys(stats, exemplar_examples, exclude=sample_ids)) if hold else set()
            held = {key: example for key, example in held.items() if key in wanted}
            for row, i in enumerate(batch):
                if i in sample_ids or i in wanted:
                    example = _example(tokenizer, encoding, row, weights[row], parses and parses[row], sentences[i])
                    (examples if i in sample_ids else held)[i] = example
            token_count += int(encoding["attention_mask"].sum())
            bar.update(len(batch))
    bar.close()
    if world > 1:
        stats.all_reduce()
    sample_keys = sorted(examples)
    exemplar_keys = _exemplar_keys(stats, exemplar_examples, exclude=set(sample_keys))
    if rank == 0 and exemplar_keys:
        examples.update((key, held[key]) for key in exemplar_keys if key in held)
        missing = [key for key in exemplar_keys if key not in held]
        if missing:
            examples.update(_examples_of(model, tokenizer, sentences, missing, max_length, nlp))
    order = sample_keys + exemplar_keys
    stored = {key: position for position, key in enumerate(order)} if rank == 0 else {}
    exemplars = stats.exemplars()
    keys = sorted({e.key for layer in exemplars for head in layer for e in head})
    index_of = {key: n for n, key in enumerate(keys)}
    inputs = [
        {
            "tokens": examples[key]["tokens"] if key in examples else _tokens(tokenizer, sentences[key], max_length),
            "text": sentences[key],
            "example": stored.get(key),
            "sentence": key,
        }
        for key in keys
    ]
    table = exemplar_table(
        [[[(index_of[e.key], e.score, e.i, e.j) for e in head] for head in layer] for layer in exemplars],
        inputs,
        top_k,
    )
    return Analysis(
        stats=stats,
        sentences=sentences,
        examples=[examples[key] for key in order] if rank == 0 else [],
        exemplars=table,
        seconds=time.perf_counter() - started,
        tokens=token_count,
    )


def _exemplar_keys(stats, limit, exclude):
    """Up to `limit` sentences, the best exemplars first: each head's top input, by score."""
    tops = sorted(
        (head[0] for layer in stats.exemplars() for head in layer if head), key=lambda e: (-e.score, e.key)
    )
    keys = []
    for exemplar in tops:
        if len(keys) >= limit:
            break
        if exemplar.key not in exclude and exemplar.key not in keys:
            keys.append(exemplar.key)
    return keys


def _examples_of(model, tokenizer, sentences, keys, max_length, nlp):
    texts = [sentences[k] for k in keys]
    encoding = _encode(tokenizer, texts, max_length)
    parses = syntax_lib.token_syntax(tokenizer, texts, nlp=nlp, encoding=encoding) if nlp else [None] * len(keys)
    with torch.inference_mode(), capture.recording(model) as recorder:
        _forward(model, encoding, devices.device_of(model))
        weights = torch.stack(recorder.attentions, 1)
    return {key: _example(tokenizer, encoding, row, weights[row], parses[row], texts[row]) for row, key in enumerate(keys)}


def _tokens(tokenizer, text, max_length):
    return tokenizer.convert_ids_to_tokens(tokenizer(text, truncation=True, max_length=max_length)["input_ids"])


def _progress(total, enabled, description):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=description, unit="sentence", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------
# Writing


def write_analysis(writer, tag, analysis, step=0):
    """Writes the metrics, exemplars and stored examples of an analysis as `step` of `tag`."""
    summary.metrics(writer, tag, analysis.stats.result(), step)
    if analysis.examples:
        summary.write_examples(
            writer, tag, analysis.examples, step,
            description=f"{len(analysis.examples)} of {len(analysis.sentences)} analysed sentences",
        )
    summary.exemplars(writer, tag, analysis.exemplars, step)


def metadata_summary_line(analysis):
    result = analysis.stats.result()
    return (
        f"{analysis.stats.num_inputs} sentences, {analysis.tokens} tokens in {analysis.seconds:.1f} s; "
        f"{len(result)} metrics of {analysis.stats.num_layers} layers x {analysis.stats.num_heads} heads; "
        f"{len(analysis.examples)} examples stored (format v{schema.FORMAT_VERSION})"
    )
