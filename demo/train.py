"""The demo's training run: a small GPT-2 learns Wikipedia on the CPU while a probe logs its attention."""

import math
import pathlib
import time

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import tb_attention
from tb_attention.convert import assets

# Probe sentences: the examples of Vig & Belinkov's poster (Wikipedia sentences), held out of
# training, plus a few with clear syntax. Each has at most ~30 tokens.
PROBE_TEXTS = [
    "Fortezza da Basso is a fort inserted in the fourteenth century walls of Florence.",
    "Florence is a city in central Italy and the capital city of the Tuscany region.",
    "Bert is a yellow Muppet character on the long-running children's television show.",
    "The Australian search and rescue service is provided by AusSAR, which is part of the Australian Maritime Safety Authority (AMSA).",
    "After the two prototypes were completed, production began in Marietta, Georgia.",
    "The cat that the dog chased ran up the old oak tree.",
    "She gave her brother a book about the history of Rome.",
    "Rivers flow from mountains to the sea, carrying water and sediment.",
]

# Generation prompts: openings in the style of the corpus's lead sections. Greedy, so that what the model
# writes at step 0, 300 and 1200 compares token by token (the Generation view's comparison).
GENERATION_PROMPTS = ["The city is located in the", "He was born in"]
GENERATION_TAG = "generation"
GENERATION_TOKENS = 24  # new tokens per prompt and log
GENERATION_EVERY = 100  # steps

VOCAB_SIZE = 2048  # byte-level BPE trained on the corpus: a small vocabulary trains fast on a CPU
SEQUENCE_LENGTH = 64  # tokens per training sequence
EOS = "<|endoftext|>"


def build_tokenizer(sentences, folder):
    """A GPT-2-style byte-level BPE trained on the corpus (deterministic, a few seconds)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    folder = pathlib.Path(folder)
    if (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences, vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_model(tokenizer, layers, heads, width, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=SEQUENCE_LENGTH * 2,
        n_layer=layers,
        n_head=heads,
        n_embd=width,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # transformers finds no loss in the name GPT2LMHeadModel, and warns that it guessed
    return model


def training_sequences(tokenizer, sentences):
    """The corpus as one token stream, sentences separated by EOS, cut into fixed-length rows."""
    ids = []
    for encoded in tokenizer(list(sentences))["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    rows = len(ids) // SEQUENCE_LENGTH
    return torch.tensor(ids[: rows * SEQUENCE_LENGTH]).view(rows, SEQUENCE_LENGTH)


def train(
    logdir,
    workdir,
    *,
    steps=1200,
    batch_size=32,
    layers=4,
    heads=4,
    width=128,
    probe_every=25,
    generate_every=GENERATION_EVERY,
    checkpoints=(0, 300),
    learning_rate=3e-3,
    warmup=True,
    health_every=10,
    run="train",
    seed=0,
):
    """Trains, logging loss, the probe and attention health to `logdir/<run>`; returns {step: checkpoint folder}.

    The defaults were chosen on this project's 2-core CPU machine: in ~5 minutes a previous-token
    head forms (the most common attention head of small language models), along with heads of
    falling entropy; a larger vocabulary or more heads per layer trained slower per step.
    warmup: the learning rate rises linearly over the first 5 % of the steps (else it starts at its
    peak); health_every: steps between attention-health logs (tb_attention.AttentionMonitor);
    checkpoints: steps whose weights are saved (None: none, not even the last); generate_every: steps
    between generation probes (GENERATION_PROMPTS, tag GENERATION_TAG; None: none).
    """
    workdir = pathlib.Path(workdir)
    sentences = [s for s in assets.wikipedia_sentences() if s not in PROBE_TEXTS]
    tokenizer = build_tokenizer(sentences, workdir / f"tokenizer-{VOCAB_SIZE}")
    data = training_sequences(tokenizer, sentences)
    model = build_model(tokenizer, layers, heads, width, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20) if warmup else 1
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    probe = tb_attention.Probe(tokenizer, PROBE_TEXTS, name="probe", with_qk=True)
    generation = tb_attention.Probe(tokenizer, GENERATION_PROMPTS, GENERATION_TAG,
                                    generate=dict(max_new_tokens=GENERATION_TOKENS))
    monitor = tb_attention.AttentionMonitor(model, every_n_steps=health_every)
    writer = SummaryWriter(str(pathlib.Path(logdir) / run))
    generator = torch.Generator().manual_seed(seed)
    saved = {}
    checkpoints = set() if checkpoints is None else set(checkpoints) | {steps}
    model.train()
    generating = []  # seconds of each generation probe's log
    started = time.time()
    progress = tqdm(range(steps + 1), desc=f"training GPT-2 ({run})", unit="step")
    for step in progress:
        if step % probe_every == 0 or step == steps:
            probe.log(writer, model, step)
        if generate_every and (step % generate_every == 0 or step == steps):
            began = time.time()
            generation.log(writer, model, step)
            generating.append(time.time() - began)
        if step in checkpoints:
            folder = workdir / "checkpoints" / f"step-{step}"
            model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            saved[step] = folder
        if step == steps:
            break
        batch = data[torch.randint(len(data), (batch_size,), generator=generator)]
        # Rows of one token stream: nothing is padding, though EOS (the pad id) separates sentences.
        loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        monitor.log(writer, step)  # every step: it computes on the monitored ones only
        if step % 10 == 0:
            writer.add_scalar("loss", loss.item(), step)
            writer.add_scalar("learning_rate", schedule.get_last_lr()[0], step)
            progress.set_postfix(loss=f"{loss.item():.2f}")
    writer.add_scalar("train_seconds", time.time() - started, steps)
    if generating:
        print(f"  the generation probe: {len(generating)} logs in {sum(generating):.1f} s "
              f"of the {time.time() - started:.0f} s", flush=True)
    writer.close()
    (workdir / "probe.txt").write_text("\n".join(PROBE_TEXTS) + "\n", encoding="utf-8")
    return saved
