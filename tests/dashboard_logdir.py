"""A log directory of known attention for the dashboard's browser tests and benchmark."""

# Attention here is synthetic but shaped like a trained model's (previous-token, first-token,
# self, local and broad heads), written through tb_attention.summary like a user's training loop.

import numpy as np

from tb_attention import summary

SENTENCE = [  # GPT-2 byte-level tokens: Ġ is a space
    "The", "Ġquick", "Ġbrown", "Ġfox", "Ġjumps", "Ġover", "Ġthe", "Ġlazy", "Ġdog", ",", "Ġand",
    "Ġthe", "Ġcaf", "Ã©", "Ġis", "Ġclosed", ".", "Ċ",
]
PAIR_A = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"]
PAIR_B = ["it", "was", "very", "comfortable", "[SEP]"]
XSS_TOKEN = "<img src=x onerror=alert(1)>"
XSS = ["<|endoftext|>", "Hello", XSS_TOKEN, "Ġ<script>alert(2)</script>", "Ġworld", "Ġ&amp;", "Ġ\"quoted\""]
WORDS = ["Ġthe", "Ġmodel", "Ġattends", "Ġto", "Ġtokens", ",", "Ġand", "Ġlearns", "Ġstructure", "."]


def head_scores(n, kind, rng):
    """Attention scores [n, n] of one head of a given kind, before the softmax."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    pattern = {
        "previous": 5.0 * (j == i - 1),
        "first": 4.0 * (j == 0),
        "self": 4.5 * (j == i),
        "local": -0.9 * np.abs(i - j),
        "broad": np.zeros((n, n)),
        "next": 5.0 * (j == i + 1),
    }[kind]
    return pattern + rng.normal(scale=0.7, size=(n, n))


KINDS = ["previous", "first", "self", "local", "broad", "next"]


def structured_attention(rng, layers, heads, n, causal):
    """float32 [layers, heads, n, n], rows summing to 1."""
    out = np.empty((layers, heads, n, n), dtype=np.float32)
    above = np.triu(np.ones((n, n), dtype=bool), 1)
    for layer in range(layers):
        for head in range(heads):
            scores = head_scores(n, KINDS[(head + layer) % len(KINDS)], rng)
            if causal:
                scores = np.where(above, -np.inf, scores)
            scores = scores - scores.max(-1, keepdims=True)
            e = np.exp(scores)
            out[layer, head] = e / e.sum(-1, keepdims=True)
    return out


def query_key(rng, layers, heads, kv_heads, n, dim):
    """q [L, H, n, d], k [L, K, n, d], per-layer scaling and the causal attention they make.

    Positional features make some heads look at the previous token and some at the first."""
    q = rng.normal(scale=0.6, size=(layers, heads, n, dim))
    k = rng.normal(scale=0.6, size=(layers, kv_heads, n, dim))
    positions = np.arange(n)
    freqs = np.linspace(0.3, 1.2, dim // 4)
    for layer in range(layers):
        for kv in range(kv_heads):
            angles_k = positions[:, None] * freqs[None, :]
            k[layer, kv, :, : dim // 4] += 2.0 * np.cos(angles_k)
            k[layer, kv, :, dim // 4 : dim // 2] += 2.0 * np.sin(angles_k)
            k[layer, kv, 0, dim // 2] += 6.0  # a key the "first token" queries find
        for head in range(heads):
            if (head + layer) % 2 == 0:  # previous-token head: q_i matches the position of i - 1
                angles_q = (positions[:, None] - 1) * freqs[None, :]
                q[layer, head, :, : dim // 4] += 2.0 * np.cos(angles_q)
                q[layer, head, :, dim // 4 : dim // 2] += 2.0 * np.sin(angles_q)
            else:
                q[layer, head, :, dim // 2] += 1.5
    scaling = [dim**-0.5] * layers
    group = heads // kv_heads
    scores = np.einsum("lhnd,lhmd->lhnm", q, np.repeat(k, group, axis=1)) * dim**-0.5
    scores = np.where(np.triu(np.ones((n, n), dtype=bool), 1), -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return q.astype(np.float32), k.astype(np.float32), scaling, (e / e.sum(-1, keepdims=True)).astype(np.float32)


def long_tokens(n):
    return [WORDS[i % len(WORDS)] if i else "<|endoftext|>" for i in range(n)]


def write_dashboard_logdir(logdir, *, layers=4, heads=6, long_n=1024, steps=(0, 50, 100)):
    """Runs `train` (tags `probe` and `long`) and `eval`; returns what was written, for asserts."""
    rng = np.random.default_rng(2024)
    with summary.Writer(str(logdir / "train")) as writer:
        for step in steps:  # one write per (tag, step): all examples of the step together
            q, k, scaling, attention = query_key(rng, layers, heads, 2, len(SENTENCE), 16)
            pair = PAIR_A + PAIR_B
            summary.write_examples(writer, "probe", [
                {"attention": attention, "tokens": SENTENCE, "query": q, "key": k, "scaling": scaling,
                 "text": "The quick brown fox jumps over the lazy dog, and the café is closed.\n"},
                {"attention": structured_attention(rng, layers, heads, len(pair), causal=False), "tokens": pair,
                 "segments": [len(PAIR_A)], "text": "the cat sat on the mat [SEP] it was very comfortable"},
                {"attention": structured_attention(rng, layers, heads, len(XSS), causal=True), "tokens": XSS,
                 "text": "Hello <img src=x onerror=alert(1)> <script>alert(2)</script> world &amp; \"quoted\""},
            ], step)
        summary.attention(
            writer, "long", structured_attention(rng, layers, heads, long_n, causal=True), long_tokens(long_n), steps[-1],
        )
    with summary.Writer(str(logdir / "eval")) as writer:
        summary.attention(writer, "probe", structured_attention(rng, 2, 3, 6, causal=True), SENTENCE[:6], 0)
    return {"layers": layers, "heads": heads, "steps": list(steps), "long_n": long_n}
