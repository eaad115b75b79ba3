"""A log directory of generation probe examples (http_api.md, `generation`) for the Generation view's tests."""

# Written through tb_attention.storage.summary as the generation probe writes them: each decoding is one
# causal example whose `self` group holds the prompt then the generated tokens but the last, with the
# `generation` field. The same prompt is decoded at steps 0 and 100; the two decodings agree on
# their first two tokens and diverge at the third (GENERATED_0 and GENERATED_100).

import numpy as np

from tb_attention import Writer
from tb_attention.storage import summary
from tests.support.dashboard_logdir import XSS_TOKEN, structured_attention
from tests.support.data import random_attention

RUN, TAG = "train", "generate"
STEPS = (0, 100)
PROMPT = ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]
GENERATED = {
    0: ["ĠParis", ".", "ĠIt", "Ġis", "Ġbig", ".", "<|endoftext|>"],
    100: ["ĠParis", ".", "ĠThe", "Ġcity", "Ġis", "Ġbig", ".", "<|endoftext|>"],
}
DIVERGENCE = 2  # the first generated token where steps 0 and 100 differ
PLAIN_TOKENS = ["A", "Ġplain", "Ġexample"]  # example 1 of each step: no generation
OTHER_RUN = "sampled"  # the same prompt sampled in another run (step 0)
SAMPLED = ["ĠParis", ",", "Ġof", "Ġcourse", "<|endoftext|>"]
SEQ2SEQ_RUN = "translate"  # an encoder-decoder's decoding (step 0): decoder queries, cross attention over the source
SOURCE = ["▁Le", "▁chat", "▁dort", "▁sur", "▁le", "▁tapis", ".", "</s>"]
DECODER_PROMPT = ["<pad>"]
TRANSLATION = ["▁The", "▁cat", "▁sleeps", "▁on", "▁the", "▁mat", ".", "</s>"]


def _token_id(token):
    return sum(map(ord, token)) % 50000  # stable made-up ids: equal tokens, equal ids


def generation_example(generated, rng, layers, heads, seed=None):
    """One generation example: the causal `self` group over the prompt and the generated tokens but
    the last, and its `generation` field (probabilities and top-5 alternatives made up from rng)."""
    tokens = PROMPT + generated[:-1]
    attention = structured_attention(rng, layers, heads, len(tokens), causal=True)
    probs, top = [], []
    for t, token in enumerate(generated):
        p = float(np.round(rng.uniform(0.2, 0.95), 4))
        rest = (1 - p) * np.array([0.5, 0.25, 0.15, 0.1])
        others = [XSS_TOKEN if t == 1 else f"Ġalt{t}", "Ġthe", ",", "Ġa"]
        probs.append(p)
        top.append([[token, _token_id(token), p]] + [[o, _token_id(o), float(np.round(q, 4))] for o, q in zip(others, rest)])
    return {
        "tokens": tokens,
        "text": "".join(PROMPT + generated).replace("Ġ", " "),
        "groups": [{"name": "self", "attention": attention, "tokens": tokens, "causal": True}],
        "generation": {
            "group": "self", "prompt_length": len(PROMPT), "prompt": "The capital of France is",
            "tokens": generated, "ids": [_token_id(t) for t in generated], "probs": probs, "top": top,
            "stop": "eos", "do_sample": seed is not None, "seed": seed, "options": {"max_new_tokens": 16},
        },
    }


def seq2seq_example(rng, layers, heads):
    """An encoder-decoder's decoding: `encoder` over the source, `decoder` (the decoding group) and
    `cross`, the decoder's queries over the source."""
    queries = DECODER_PROMPT + TRANSLATION[:-1]
    cross = random_attention(rng, layers, heads, max(len(queries), len(SOURCE)), causal=False)[:, :, : len(queries), : len(SOURCE)]
    cross = cross / cross.sum(-1, keepdims=True)
    probs = [float(np.round(rng.uniform(0.3, 0.99), 4)) for _ in TRANSLATION]
    return {
        "tokens": SOURCE,
        "groups": [
            {"name": "encoder", "attention": random_attention(rng, layers, heads, len(SOURCE), causal=False), "tokens": SOURCE, "causal": False},
            {"name": "decoder", "attention": structured_attention(rng, layers, heads, len(queries), causal=True), "tokens": queries, "causal": True},
            {"name": "cross", "attention": cross.astype(np.float32), "tokens": queries, "key_tokens": SOURCE, "causal": False},
        ],
        "generation": {
            "group": "decoder", "prompt_length": len(DECODER_PROMPT), "prompt": "Le chat dort sur le tapis.",
            "tokens": TRANSLATION, "ids": [_token_id(t) for t in TRANSLATION], "probs": probs,
            "top": [[[t, _token_id(t), p]] for t, p in zip(TRANSLATION, probs)],
            "stop": "eos", "do_sample": False, "seed": None, "options": {"num_beams": 1},
        },
    }


def plain_example(rng, layers, heads):
    n = len(PLAIN_TOKENS)
    return {"tokens": PLAIN_TOKENS, "groups": [{"name": "self", "attention": structured_attention(rng, layers, heads, n, True), "tokens": PLAIN_TOKENS, "causal": True}]}


def write_generation_logdir(logdir, layers=3, heads=4, seed=0):
    """Run `train`, tag `generate`, steps 0 and 100 (example 0: a generation, example 1: none);
    run `sampled`, the same prompt sampled at step 0; run `translate`, an encoder-decoder's decoding."""
    rng = np.random.default_rng(seed)
    with Writer(logdir / RUN) as writer:
        for step in STEPS:
            examples = [generation_example(GENERATED[step], rng, layers, heads), plain_example(rng, layers, heads)]
            summary.write_examples(writer, TAG, examples, step)
    with Writer(logdir / OTHER_RUN) as writer:
        summary.write_examples(writer, TAG, [generation_example(SAMPLED, rng, layers, heads, seed=7)], 0)
    with Writer(logdir / SEQ2SEQ_RUN) as writer:
        summary.write_examples(writer, TAG, [seq2seq_example(rng, layers, heads)], 0)
