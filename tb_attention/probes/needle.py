"""Needle-in-a-haystack probes: a fact hidden in Wikipedia sentences at a given depth, asked and answered at
the end; `NeedleProbe` logs each head's retrieval score (Wu et al. 2024) with the long metrics."""

# An input is token ids put together piece by piece (so every position is known exactly, whatever
# the tokenizer would merge across pieces): haystack sentences up to the depth, the needle sentence
# "The secret number of <name> is <value>.", the rest of the haystack, then "What is the secret number
# of <name>? The secret number of <name> is <value>." The value's tokens are the same ids in the needle
# and in the answer. Answer query i is the query whose next token is the m-th value token of the answer
# (token i + 1); the key it should retrieve is the m-th value token inside the needle.

import dataclasses
import random

from tb_attention.probes import long as probe_long
from tb_attention.probes.text import Probe

NAMES = ("Aldous", "Beatrix", "Cassius", "Dorothea", "Evander", "Florentine", "Gideon", "Henrietta")


@dataclasses.dataclass
class Needle:
    """One needle-in-a-haystack input: ids, tokens and text, and where the copy happens."""

    input_ids: list
    tokens: list
    text: str
    depth: float
    needle: range  # token positions of the value inside the needle sentence
    answers: list  # query positions i whose next token (i + 1) copies a value token
    keys: list  # per answer query, the position of the value token it copies inside the needle


def needle_input(tokenizer, sentences, num_tokens, depth, *, seed=0, digits=6):
    """A `Needle` of exactly `num_tokens` tokens with the needle at `depth` (0 = first, 1 = last) of the
    haystack, built from `sentences` (e.g. tb_attention.convert.assets.wikipedia_sentences()) taken in
    order from a seeded start."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be from 0 (the haystack's start) to 1 (its end), got {depth!r}")
    rng = random.Random(seed)
    name = rng.choice(NAMES)
    value = "".join(rng.choice("123456789") for _ in range(digits))

    def ids(text):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    value_ids = ids(" " + value)
    before, after = ids(f" The secret number of {name} is"), ids(".")
    question = ids(f" What is the secret number of {name}? The secret number of {name} is")
    fixed = len(before) + 2 * len(value_ids) + len(after) + len(question)
    room = num_tokens - fixed
    if room < 1:
        raise ValueError(f"num_tokens={num_tokens} leaves no room for a haystack: the needle and question take {fixed}")
    haystack, bounds = [], [0]  # token ids, and where each sentence ends
    start = rng.randrange(len(sentences))
    for n in range(len(sentences)):
        if len(haystack) >= room:
            break
        haystack += ids(" " + sentences[(start + n) % len(sentences)])
        bounds.append(len(haystack))
    if len(haystack) < room:
        raise ValueError(f"{len(sentences)} sentences make {len(haystack)} tokens, fewer than the {room} needed")
    haystack = haystack[:room]
    bounds = [b for b in bounds if b <= room]
    cut = min(bounds, key=lambda b: abs(b - depth * room))  # the sentence boundary nearest the depth
    needle_start = cut + len(before)
    input_ids = haystack[:cut] + before + value_ids + after + haystack[cut:] + question + value_ids
    answer_start = len(input_ids) - len(value_ids)
    return Needle(
        input_ids=input_ids,
        tokens=tokenizer.convert_ids_to_tokens(input_ids),
        text=tokenizer.decode(input_ids),
        depth=depth,
        needle=range(needle_start, needle_start + len(value_ids)),
        answers=[answer_start + m - 1 for m in range(len(value_ids))],
        keys=[needle_start + m for m in range(len(value_ids))],
    )


class NeedleProbe(Probe):
    """Needle-in-a-haystack inputs (`needle_input`) at every (length, depth) asked, logged on the long path
    (whatever their length): their attention as long examples, and per head `retrieval`, the share of
    answer queries whose top key is the needle token they copy, with local_share, sink_share, max_logit.

    NeedleProbe(tokenizer, sentences, lengths=[8192], depths=[0.1, 0.5, 0.9]); other options as Probe's
    (long_budget, long_top_k, forward, name, ...).
    """

    def __init__(self, tokenizer, sentences, lengths, depths, name="needle", *, seed=0, **options):
        if options.get("with_qk") or options.get("syntax"):
            raise ValueError("a NeedleProbe stores long examples: no with_qk, no syntax")
        self.needles = [needle_input(tokenizer, sentences, n, d, seed=seed + i)
                        for i, (n, d) in enumerate((n, d) for n in lengths for d in depths)]
        encodings = [{"input_ids": x.input_ids, "tokens": x.tokens, "text": x.text, "segments": None}
                     for x in self.needles]
        options = {"long_tokens": 0, **options, "syntax": False}
        super().__init__(tokenizer, None, name, _encodings=encodings, **options)

    def log(self, writer, model, step, *, walltime=None):
        """Writes the needles' long examples and metrics (retrieval included) at `step`; returns the metrics."""
        if not all(probe_long.is_long(self, e) for e in self.encodings):
            raise ValueError(f"NeedleProbe {self.name!r} logs on the long path: give long_tokens below its shortest "
                             "input (default 0)")
        needles = [(x.answers, x.keys) for x in self.needles]
        return probe_long.log_long(self, writer, model, step, walltime=walltime, needles=needles)
