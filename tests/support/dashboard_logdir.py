"""A log directory of known attention for the dashboard's browser tests and benchmark."""

# Attention here is synthetic but shaped like a trained model's (previous-token, first-token,
# self, local and broad heads), written through tb_attention.storage.summary like a user's training loop.
# Metrics follow heads specialising over training: each head drifts from an untrained value
# towards its kind's (a previous-token head ends at distance ~1 and low entropy).

import numpy as np

from tb_attention.storage import summary
from tb_attention.storage.schema import exemplar_table

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


# Where each kind of head ends up after training: distance (tokens), entropy (nats), null attention,
# dependency alignment and variability. Untrained heads start near UNTRAINED.
UNTRAINED = {"distance": 5.4, "entropy": 2.7, "null_attention": 0.08, "dependency_alignment": 0.14, "variability": 0.45}
TRAINED = {
    "previous": {"distance": 1.0, "entropy": 0.35, "null_attention": 0.04, "dependency_alignment": 0.42, "variability": 0.08},
    "first": {"distance": 6.2, "entropy": 1.9, "null_attention": 0.88, "dependency_alignment": 0.12, "variability": 0.2},
    "self": {"distance": 0.2, "entropy": 0.5, "null_attention": 0.03, "dependency_alignment": 0.05, "variability": 0.12},
    "local": {"distance": 2.1, "entropy": 1.4, "null_attention": 0.06, "dependency_alignment": 0.31, "variability": 0.3},
    "broad": {"distance": 5.8, "entropy": 2.8, "null_attention": 0.1, "dependency_alignment": 0.16, "variability": 0.55},
    "next": {"distance": 1.1, "entropy": 0.4, "null_attention": 0.03, "dependency_alignment": 0.4, "variability": 0.1},
}
POS_TAGS = ["NOUN", "VERB", "DET", "ADJ", "PUNCT", "X"]  # X: no probe token has it (NaN)


def metric_values(layers, heads, progress, rng):
    """{metric: float32 [layers, heads]} at a point `progress` (0 to 1) of training."""
    learned = progress ** 0.6
    out = {}
    for metric, start in UNTRAINED.items():
        values = np.empty((layers, heads), dtype=np.float32)
        for layer in range(layers):
            for head in range(heads):
                target = TRAINED[KINDS[(head + layer) % len(KINDS)]][metric]
                noise = rng.normal(scale=0.02 * (abs(start) + 0.1))
                values[layer, head] = start + (target - start) * learned + noise
        out[metric] = values
    shares = rng.dirichlet(np.ones(len(POS_TAGS) - 1), size=(layers, heads)).astype(np.float32)
    depth = np.linspace(0, 1, layers, dtype=np.float32)[:, None]
    for t, tag in enumerate(POS_TAGS[:-1]):  # lower layers favour DET and PUNCT, deeper ones NOUN and VERB
        tilt = (1 + (depth if tag in ("NOUN", "VERB") else -depth) * learned) / 2
        out[f"pos/{tag}"] = shares[:, :, t] * tilt + 0.05
        out[f"pos_from/{tag}"] = shares[:, ::-1, t] * 0.8 + 0.05
    out["pos/X"] = np.full((layers, heads), np.nan, dtype=np.float32)
    return out


def previous_token(examples):
    """float32 [L, H]: the probe's previous_token metric as tb_attention.metrics.attention defines it (weight on
    the token just before, over queries i >= 2, pooled over the inputs)."""
    total, count = 0.0, 0
    for example in examples:
        i = np.arange(2, len(example["tokens"]))
        total = total + example["attention"][:, :, i, i - 1].sum(-1)
        count += len(i)
    return (total / count).astype(np.float32)


def exemplars_of(examples, top_k=3):
    """The /exemplars table of some examples: per head, the inputs ranked by their largest weight
    between two tokens after the first (as tb_attention.metrics.attention ranks them)."""
    layers, heads = examples[0]["attention"].shape[:2]
    table = []
    for layer in range(layers):
        row = []
        for head in range(heads):
            scored = []
            for index, example in enumerate(examples):
                weights = example["attention"][layer, head, 1:, 1:]
                i, j = np.unravel_index(np.argmax(weights), weights.shape)
                scored.append((index, float(weights[i, j]), int(i) + 1, int(j) + 1))
            scored.sort(key=lambda e: -e[1])
            row.append(scored[:top_k])
        table.append(row)
    inputs = [{"tokens": e["tokens"], "text": e.get("text"), "example": index} for index, e in enumerate(examples)]
    return exemplar_table(table, inputs, top_k)


def probe_examples(rng, layers, heads):
    """The probe's three inputs: a sentence with q/k, a sentence pair, untrusted tokens."""
    kv_heads = next(k for k in (2, 3, 1) if heads % k == 0)
    q, k, scaling, attention = query_key(rng, layers, heads, kv_heads, len(SENTENCE), 16)
    pair = PAIR_A + PAIR_B
    return [
        {"attention": attention, "tokens": SENTENCE, "query": q, "key": k, "scaling": scaling,
         "text": "The quick brown fox jumps over the lazy dog, and the café is closed.\n"},
        {"attention": structured_attention(rng, layers, heads, len(pair), causal=False), "tokens": pair,
         "segments": [len(PAIR_A)], "text": "the cat sat on the mat [SEP] it was very comfortable"},
        {"attention": structured_attention(rng, layers, heads, len(XSS), causal=True), "tokens": XSS,
         "text": "Hello <img src=x onerror=alert(1)> <script>alert(2)</script> world &amp; \"quoted\""},
    ]


def write_probe_step(writer, rng, layers, heads, step, progress, tag="probe", attention=True):
    """One step of a probe, as tb_attention.Probe.log writes it: examples, metrics, exemplars
    (`attention` False: the metrics alone)."""
    summary.metrics(writer, tag, metric_values(layers, heads, progress, rng), step)
    if not attention:
        return None
    examples = probe_examples(rng, layers, heads)
    summary.metrics(writer, tag, {"previous_token": previous_token(examples)}, step)
    summary.write_examples(writer, tag, examples, step)  # one write per (tag, step): all examples together
    summary.exemplars(writer, tag, exemplars_of(examples), step)
    return examples


def write_dashboard_logdir(logdir, *, layers=4, heads=6, long_n=1024, steps=(0, 50, 100)):
    """Runs `train` (tags `probe` and `long`), `checkpoint-100` (the probe re-evaluated from the
    last checkpoint) and `eval` (another model); returns what was written, for asserts."""
    rng = np.random.default_rng(2024)
    with summary.Writer(str(logdir / "train")) as writer:
        for step in steps:
            write_probe_step(writer, rng, layers, heads, step, step / steps[-1])
        summary.attention(
            writer, "long", structured_attention(rng, layers, heads, long_n, causal=True), long_tokens(long_n), steps[-1],
        )
    with summary.Writer(str(logdir / f"checkpoint-{steps[-1]}")) as writer:
        write_probe_step(writer, rng, layers, heads, steps[-1], 1.0)
    with summary.Writer(str(logdir / "eval")) as writer:
        summary.attention(writer, "probe", structured_attention(rng, 2, 3, 6, causal=True), SENTENCE[:6], 0)
    return {"layers": layers, "heads": heads, "steps": list(steps), "long_n": long_n}


def write_training_logdir(logdir, *, layers=4, heads=8, steps=range(0, 1201, 50), runs=("train",), attention_steps=None):
    """A longer training run (the dashboard's benchmark and screenshots): a probe at every step, its
    examples at `attention_steps` (None: every step)."""
    steps = list(steps)
    for r, run in enumerate(runs):
        rng = np.random.default_rng(r)
        with summary.Writer(str(logdir / run)) as writer:
            for step in steps:
                with_attention = attention_steps is None or step in attention_steps
                write_probe_step(writer, rng, layers, heads, step, step / steps[-1], attention=with_attention)


# ---------------------------------------------------------------------------------------------
# Attention groups and images (storage format v2): an encoder–decoder probe and a vision probe

SOURCE = ["▁Le", "▁chat", "▁est", "▁assis", "▁sur", "▁le", "▁tapis", ".", "</s>"]
TARGET = ["<pad>", "▁The", "▁cat", "▁sat", "▁on", "▁the", "▁mat", "."]


def png_bytes(pixels):
    """A greyscale PNG of uint8 pixels [rows, cols], built with zlib (chunks: length, type, data, CRC)."""
    import struct
    import zlib

    rows, cols = pixels.shape

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + pixels[r].astype(np.uint8).tobytes() for r in range(rows))
    header = struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def cross_attention(rng, layers, heads, targets, sources):
    """float32 [layers, heads, targets, sources]: each target token near its length-scaled source position."""
    i = np.arange(targets)[:, None] * sources / targets
    j = np.arange(sources)[None, :]
    out = np.empty((layers, heads, targets, sources), dtype=np.float32)
    for layer in range(layers):
        for head in range(heads):
            sharp = 0.3 + 1.5 * (layer + head) / (layers + heads)  # later heads align more
            scores = -sharp * np.abs(j - i) + rng.normal(scale=0.5, size=(targets, sources))
            e = np.exp(scores - scores.max(-1, keepdims=True))
            out[layer, head] = e / e.sum(-1, keepdims=True)
    return out


def write_groups_logdir(logdir, *, layers=3, heads=4, steps=(0, 100)):
    """Runs `translate` (an encoder–decoder probe: groups encoder, decoder, cross, with q/k for cross,
    metrics per group) and `vision` (a ViT-style probe: CLS + a 4 x 6 grid of patches and its image)."""
    rng = np.random.default_rng(7)
    with summary.Writer(str(logdir / "translate")) as writer:
        for step in steps:
            q = rng.normal(size=(layers, heads, len(TARGET), 8))
            k = rng.normal(size=(layers, heads, len(SOURCE), 8))
            groups = [
                {"name": "encoder", "attention": structured_attention(rng, layers, heads, len(SOURCE), causal=False),
                 "layer_names": [f"encoder.block.{n}" for n in range(layers)]},
                {"name": "decoder", "tokens": TARGET, "attention": structured_attention(rng, layers, heads, len(TARGET), causal=True)},
                {"name": "cross", "tokens": TARGET, "key_tokens": SOURCE, "query": q, "key": k, "scaling": 8**-0.5,
                 "attention": cross_attention(rng, layers, heads, len(TARGET), len(SOURCE))},
            ]
            summary.write_examples(writer, "probe", [{"tokens": SOURCE, "text": "Le chat est assis sur le tapis.",
                                                      "groups": groups}], step)
            values = metric_values(layers, heads, step / steps[-1], rng)
            summary.metrics(writer, "probe", {m: values[m] for m in ("entropy", "distance")}, step, group="encoder",
                            first_group=True)
            summary.metrics(writer, "probe", {m: values[m] for m in ("entropy", "distance")}, step, group="decoder")
            summary.metrics(writer, "probe", {"entropy": values["entropy"],
                                              "diagonal_alignment": np.clip(values["variability"], 0, 1)}, step, group="cross")
    grid, patch = (4, 6), (16, 16)
    yy, xx = np.mgrid[: grid[0] * patch[0], : grid[1] * patch[1]]
    pixels = (127 + 100 * np.sin(xx / 9.0) * np.cos(yy / 7.0)).astype(np.uint8)
    tokens = ["[CLS]"] + [f"r{r}c{c}" for r in range(grid[0]) for c in range(grid[1])]
    with summary.Writer(str(logdir / "vision")) as writer:
        for step in steps:
            attention = structured_attention(rng, layers, heads, len(tokens), causal=False)
            image = {"png": png_bytes(pixels), "grid": list(grid), "patch_size": list(patch), "prefix_tokens": 1,
                     "prefix_names": ["CLS"]}
            summary.write_examples(writer, "probe", [{"tokens": tokens, "attention": attention, "image": image}], step)
            summary.metrics(writer, "probe", {"pixel_distance": rng.uniform(8, 40, (layers, heads)),
                                              "prefix_attention": rng.uniform(0, 0.6, (layers, heads))}, step)
    return {"layers": layers, "heads": heads, "steps": list(steps), "source": SOURCE, "target": TARGET,
            "grid": list(grid), "patch_size": list(patch)}
