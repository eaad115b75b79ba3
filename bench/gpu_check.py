"""The GPU check of issue 13: one script, one JSON line per check, under 8 minutes on one H200.

    python bench/gpu_check.py [--budget 450] [--tiny] [--device cuda]

Self-contained: random-weight models from configs and a word-level tokenizer over synthetic
words, so it needs only torch, transformers, tokenizers and this repository (no downloads,
no spaCy). Every timing is taken after torch.cuda.synchronize(); memory is the peak CUDA
allocation above what was allocated before the call. A check that runs out of memory (or fails
otherwise) prints its error and the next check runs. Checks:
  training_loop  a 12 x 12-head model (hidden 768) training in bf16 autocast, 16 x 1,024 tokens per
                 step; a probe of 8 texts every few steps: probe seconds / step seconds.
  shape          a 7B-shaped Llama (32 layers x 32 heads, 8 KV heads, hidden 4,096, bf16, random
                 weights) at 512 / 2,048 / 4,096 / 8,192 tokens: probe.log vs the model's eager
                 output_attentions forward and vs its bare (sdpa) forward; peak memory of each.
  analyze        analyze_corpus (capture + metrics + writing, no syntax) of a 12 x 12 model over
                 2,000 sentences vs the bare forward passes of the same batches (and the forwards
                 under capture alone, without the metrics: capture_only_ratio).
  compiled       the training model torch.compile'd (inductor): step time before and after a
                 probe, graphs compiled by the probe (goal 0), probe seconds.
  generate       the 7B-shaped Llama writes 512 new tokens from a 32-token prompt (greedy): plain
                 `generate` vs the generation probe's captured generate (every decoding step's rows),
                 and probe.log (captured, encoded, written); peak memory of each, ids identical.
  long           the 7B-shaped Llama at 32,768 and 131,072 tokens (issue 22): probe.log on the long path
                 (query chunks; long_budget 256 MiB, 1 GiB at 128k where 256 MiB keeps no top-1 row) vs
                 the bare sdpa forward; peak memory of each (goal: fits one 80 GB GPU, <= 3 x the forward).
--tiny scales every shape down (2-4 layers, hidden 64, 32-256 tokens) so that the script runs on
a CPU in a minute; the test suite runs it that way.
"""

import argparse
import contextlib
import gc
import json
import pathlib
import sys
import tempfile
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tb_attention import Probe, Writer, capture  # noqa: E402
from tb_attention.probes import analysis

VOCAB = 8000  # synthetic words w0 .. w7999


def emit(**line):
    print(json.dumps(line), flush=True)


def word_tokenizer():
    """A fast word-level tokenizer over w0..w{VOCAB-1}, with GPT-2-like specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2, **{f"w{i}": i + 3 for i in range(VOCAB)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def text_of(words, seed):
    generator = torch.Generator().manual_seed(seed)
    # A Zipf-like draw, so attention has frequent and rare tokens to tell apart.
    ranks = torch.multinomial(1.0 / torch.arange(1, VOCAB + 1), words, replacement=True, generator=generator)
    return " ".join(f"w{int(r)}" for r in ranks)


class Clock:
    """Wall seconds and peak device memory above the start of a block, synchronised on CUDA."""

    def __init__(self, device):
        self.device = device
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.peak = None
        self.seconds = time.perf_counter() - self.start


def gib(n):
    return None if n is None else round(n / 2**30, 3)


@contextlib.contextmanager
def check(name, deadline, **fields):
    """Runs one check's body; prints its error (OOM included) as the check's line instead of failing."""
    if time.monotonic() > deadline:
        emit(check=name, **fields, skipped="time budget spent")
        yield None
        return
    try:
        yield fields
    except Exception as e:  # noqa: BLE001 (a check reports every failure and the next one runs)
        oom = isinstance(e, torch.OutOfMemoryError)
        emit(check=name, **fields, error="out of memory" if oom else f"{type(e).__name__}: {e}",
             **({} if oom else {"traceback": traceback.format_exc()[-1500:]}))
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def timed_log(args, probe, model):
    """(the Clock of probe.log at step 0 into a fresh logdir, the bytes its event files hold)."""
    with tempfile.TemporaryDirectory() as logdir, Writer(logdir) as writer:
        with Clock(args.device) as clock:
            probe.log(writer, model, 0)
        writer.flush()
        stored = sum(f.stat().st_size for f in pathlib.Path(logdir).rglob("events.out.tfevents.*"))
    return clock, stored


# ---------------------------------------------------------------------------------------------
# Models


def gpt2(args, tokenizer, n_positions):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=4, n_embd=64) if args.tiny else dict(n_layer=12, n_head=12, n_embd=768)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, bos_token_id=2, eos_token_id=2, **shape)
    return GPT2LMHeadModel(config).to(args.device)


def llama_7b_shaped(args, tokenizer, positions):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = (dict(num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, hidden_size=64,
                  intermediate_size=128) if args.tiny else
             dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096,
                  intermediate_size=11008))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=positions, bos_token_id=2, eos_token_id=2,
                         pad_token_id=1, **shape)
    dtype = torch.float32 if args.device.type == "cpu" else torch.bfloat16
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def train_step(model, optimizer, batch, device):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------
# Checks


def check_training_loop(args, tokenizer, deadline):
    batch_shape = (2, 64) if args.tiny else (16, 1024)
    with check("training_loop", deadline, batch=list(batch_shape), probe_texts=8) as fields:
        if fields is None:
            return
        model = gpt2(args, tokenizer, max(batch_shape[1], 128))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = torch.randint(3, len(tokenizer), batch_shape, device=args.device)
        probe = Probe(tokenizer, [text_of(24 + 8 * i, seed=i) for i in range(8)], syntax=False)
        train_step(model, optimizer, batch, args.device)  # warm-up
        steps = []
        with tempfile.TemporaryDirectory() as logdir, Writer(logdir) as writer:
            with Clock(args.device) as first_probe:
                probe.log(writer, model, 0)
            for _ in range(3):
                with Clock(args.device) as step:
                    train_step(model, optimizer, batch, args.device)
                steps.append(step.seconds)
            with Clock(args.device) as again:
                probe.log(writer, model, 1)
        step_seconds = sorted(steps)[1]
        emit(check="training_loop", **fields, step_seconds=round(step_seconds, 4),
             probe_seconds=round(again.seconds, 4), first_probe_seconds=round(first_probe.seconds, 4),
             probe_per_step=round(again.seconds / step_seconds, 3), model_training=model.training,
             probe_peak_gib=gib(again.peak))


def check_shapes(args, tokenizer, deadline):
    lengths = (32, 64, 128, 256) if args.tiny else (512, 2048, 4096, 8192)
    model = None
    with check("shape", deadline, stage="build") as fields:
        if fields is None:
            return
        model = llama_7b_shaped(args, tokenizer, max(lengths))
        weights = sum(p.numel() for p in model.parameters())
        emit(check="shape_model", parameters=weights, layers=model.config.num_hidden_layers,
             heads=model.config.num_attention_heads, kv_heads=model.config.num_key_value_heads,
             dtype=str(next(model.parameters()).dtype))
    if model is None:
        return
    for n in lengths:
        with check("shape", deadline, tokens=n) as fields:
            if fields is None:
                continue
            text = text_of(n, seed=n)
            ids = torch.tensor([tokenizer(text)["input_ids"][:n]], device=args.device)
            line = dict(fields)
            with torch.no_grad():
                model(input_ids=ids[:, :16])  # warm-up of this length's kernels is the bare forward's job
                with Clock(args.device) as bare:
                    model(input_ids=ids, logits_to_keep=1)
            line.update(bare_seconds=round(bare.seconds, 4), bare_peak_gib=gib(bare.peak))
            try:
                model.config._attn_implementation_internal, previous = "eager", model.config._attn_implementation
                with torch.no_grad(), Clock(args.device) as eager:
                    attentions = model(input_ids=ids, output_attentions=True, logits_to_keep=1).attentions
                del attentions
                line.update(eager_seconds=round(eager.seconds, 4), eager_peak_gib=gib(eager.peak))
            except torch.OutOfMemoryError:
                line.update(eager_seconds=None, eager_error="out of memory")
            finally:
                model.config._attn_implementation_internal = previous
                gc.collect()
                if args.device.type == "cuda":
                    torch.cuda.empty_cache()
            probe = Probe(tokenizer, [text], syntax=False, max_length=n)
            logged, stored = timed_log(args, probe, model)
            line.update(probe_seconds=round(logged.seconds, 4), probe_peak_gib=gib(logged.peak), stored_bytes=stored)
            if line.get("eager_seconds"):
                line["probe_vs_eager"] = round(logged.seconds / line["eager_seconds"], 3)
            line["probe_vs_bare"] = round(logged.seconds / bare.seconds, 3)
            emit(check="shape", **line)


def check_long(args, tokenizer, deadline):
    from tb_attention.storage.codecs import long as long_codec

    lengths = (512, 1024) if args.tiny else (32768, 131072)
    long_tokens = 256 if args.tiny else long_codec.DEFAULT_LONG_TOKENS
    model = None
    with check("long", deadline, stage="build") as fields:
        if fields is None:
            return
        model = llama_7b_shaped(args, tokenizer, max(lengths))
    if model is None:
        return
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    for n in lengths:
        with check("long", deadline, tokens=n) as fields:
            if fields is None:
                continue
            text = text_of(n, seed=n)
            ids = torch.tensor([tokenizer(text)["input_ids"][:n]], device=args.device)
            with torch.no_grad():
                model(input_ids=ids[:, :16])
                with Clock(args.device) as bare:
                    model(input_ids=ids, logits_to_keep=1)
            budget = long_codec.DEFAULT_LONG_BUDGET if n <= 32768 else 1 << 30
            plan = long_codec.plan(layers, heads, n, n, budget=budget)
            probe = Probe(tokenizer, [text], syntax=False, max_length=n, long_tokens=long_tokens, long_budget=budget)
            logged, stored = timed_log(args, probe, model)
            peak = None if logged.peak is None else logged.peak + model_bytes
            emit(check="long", **fields, bare_seconds=round(bare.seconds, 3), probe_seconds=round(logged.seconds, 3),
                 probe_vs_bare=round(logged.seconds / bare.seconds, 3), bare_peak_gib=gib(bare.peak),
                 probe_peak_gib=gib(logged.peak), with_model_gib=gib(peak),
                 fits_80gb=None if peak is None else peak <= 80e9, budget=budget, top_k=plan.top_k,
                 levels=[b for b, _, _ in plan.levels], planned_bytes=plan.stored_bytes(), stored_bytes=stored)


def check_analyze(args, tokenizer, deadline):
    count = 64 if args.tiny else 2000
    with check("analyze", deadline, sentences=count) as fields:
        if fields is None:
            return
        model = gpt2(args, tokenizer, 128).transformer.eval()
        sentences = [text_of(8 + (i * 7) % 40, seed=10_000 + i) for i in range(count)]

        def bare():
            with torch.inference_mode():
                for batch in analysis._batches(tokenizer, sentences, list(range(count)), 16, 128):
                    encoding = tokenizer([sentences[i] for i in batch], padding=True, truncation=True, max_length=128,
                                         return_tensors="pt")
                    model(input_ids=encoding["input_ids"].to(args.device),
                          attention_mask=encoding["attention_mask"].to(args.device))

        def recorded():  # the forwards under capture, no metrics: what capture alone costs
            with torch.inference_mode(), capture.recording(model) as recorder:
                for batch in analysis._batches(tokenizer, sentences, list(range(count)), 16, 128):
                    encoding = tokenizer([sentences[i] for i in batch], padding=True, truncation=True, max_length=128,
                                         return_tensors="pt")
                    model(input_ids=encoding["input_ids"].to(args.device),
                          attention_mask=encoding["attention_mask"].to(args.device))
                    torch.stack(recorder.attentions, 1)

        def analyse():
            result = analysis.analyze_corpus(model, tokenizer, sentences, batch_size=16, max_length=128,
                                             with_syntax=False, progress=False)
            with tempfile.TemporaryDirectory() as logdir, Writer(logdir) as writer:
                analysis.write_analysis(writer, "corpus", result)

        bare()  # warm-up
        times = {"bare": [], "recorded": [], "analyze": []}
        for _ in range(2):  # interleaved, so drift hits both alike
            for name, run in (("bare", bare), ("recorded", recorded), ("analyze", analyse)):
                with Clock(args.device) as clock:
                    run()
                times[name].append(clock.seconds)
        b, a = min(times["bare"]), min(times["analyze"])
        emit(check="analyze", **fields, bare_seconds=round(b, 3), analyze_seconds=round(a, 3),
             ratio=round(a / b, 3), goal=1.5 if args.device.type == "cuda" else 1.2,
             capture_only_ratio=round(min(times["recorded"]) / b, 3))


def check_compiled(args, tokenizer, deadline):
    batch_shape = (2, 64) if args.tiny else (8, 1024)
    with check("compiled", deadline, batch=list(batch_shape)) as fields:
        if fields is None:
            return
        import torch._dynamo

        model = gpt2(args, tokenizer, max(batch_shape[1], 128))
        compiled = torch.compile(model, backend="eager" if args.tiny else "inductor")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = torch.randint(3, len(tokenizer), batch_shape, device=args.device)
        for _ in range(2):
            train_step(compiled, optimizer, batch, args.device)  # compiles

        def timed_steps():
            times = []
            for _ in range(3):
                with Clock(args.device) as step:
                    train_step(compiled, optimizer, batch, args.device)
                times.append(step.seconds)
            return sorted(times)[1]

        before = timed_steps()
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        probe = Probe(tokenizer, [text_of(24 + 8 * i, seed=i) for i in range(8)], syntax=False)
        with tempfile.TemporaryDirectory() as logdir, Writer(logdir) as writer, Clock(args.device) as logged:
            probe.log(writer, compiled, 0)  # as a user calls it: Probe unwraps it and runs it eagerly
        after = timed_steps()
        emit(check="compiled", **fields, step_seconds_before=round(before, 4), step_seconds_after=round(after, 4),
             probe_seconds=round(logged.seconds, 4),
             new_graphs_after_probe=torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs)


def check_generate(args, tokenizer, deadline):
    from tb_attention.capture import decoding

    new = 32 if args.tiny else 512
    with check("generate", deadline, prompt_tokens=32, new_tokens=new) as fields:
        if fields is None:
            return
        model = llama_7b_shaped(args, tokenizer, 32 + new + 8)
        prompt = tokenizer(text_of(40, seed=7))["input_ids"][:32]
        ids = torch.tensor([prompt], device=args.device)
        options = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=1)
        with torch.no_grad():
            model.generate(ids[:, :8], attention_mask=torch.ones_like(ids[:, :8]), max_new_tokens=4, pad_token_id=1)
            with Clock(args.device) as plain:
                expected = model.generate(ids, attention_mask=torch.ones_like(ids), **options)[0, 32:].tolist()
        with Clock(args.device) as captured:
            result = decoding.generate(model, prompt, options)
        same = result.generated_ids == expected
        del result
        gc.collect()
        probe = Probe(tokenizer, [prompt], generate=options, metrics=False)
        logged, stored = timed_log(args, probe, model)
        emit(check="generate", **fields, ids_identical=same, plain_seconds=round(plain.seconds, 3),
             captured_seconds=round(captured.seconds, 3), probe_seconds=round(logged.seconds, 3),
             captured_vs_plain=round(captured.seconds / plain.seconds, 3),
             probe_vs_plain=round(logged.seconds / plain.seconds, 3), plain_peak_gib=gib(plain.peak),
             captured_peak_gib=gib(captured.peak), probe_peak_gib=gib(logged.peak), stored_bytes=stored)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="shapes scaled down, for a CPU")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--budget", type=float, default=450, help="seconds; checks not started by then are skipped")
    parser.add_argument("--only", nargs="*",
                        choices=["training_loop", "shape", "long", "analyze", "compiled", "generate"])
    args = parser.parse_args()
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    deadline = time.monotonic() + args.budget
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu"
    import transformers

    emit(check="machine", device=name, torch=torch.__version__, transformers=transformers.__version__,
         tiny=args.tiny)
    tokenizer = word_tokenizer()
    checks = {"training_loop": check_training_loop, "shape": check_shapes, "long": check_long, "analyze": check_analyze,
              "compiled": check_compiled, "generate": check_generate}
    for key, run in checks.items():
        if not args.only or key in args.only:
            run(args, tokenizer, deadline)


if __name__ == "__main__":
    main()
