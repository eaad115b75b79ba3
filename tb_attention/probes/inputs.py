"""A probe's inputs checked and shaped: texts, targets, token ids, and the right-padded batches."""


def segment_a_end(encoding, length):
    """Where segment A ends in a pair's tokens (specials before B's first token belong to A)."""
    type_ids = encoding.get("token_type_ids")
    if type_ids is not None and any(type_ids):
        return type_ids.index(1)
    try:
        sequence_ids = encoding.sequence_ids()
    except (AttributeError, ValueError):
        return length
    return next((i for i, s in enumerate(sequence_ids) if s == 1), length)



def token_names(tokenizer, ids, what, advice):
    """The tokenizer's token string of each id, or a ValueError naming the first id it has no token for
    (convert_ids_to_tokens gives None there), `what` that id was and the `advice` of the caller."""
    ids = [int(i) for i in ids]
    names = tokenizer.convert_ids_to_tokens(ids)
    for i, name in zip(ids, names):
        if name is None:
            size = f", {len(tokenizer)} tokens" if hasattr(tokenizer, "__len__") else ""
            raise ValueError(f"the tokenizer ({type(tokenizer).__name__}{size}) has no token for id {i}, {what}: {advice}")
    return [str(name) for name in names]


def check_texts(texts):
    if isinstance(texts, (str, tuple)):
        texts = [texts]
    texts = list(texts) if texts is not None else []
    if not texts:
        raise ValueError("a probe needs at least one text")
    for i, text in enumerate(texts):
        if not (isinstance(text, str) or (isinstance(text, tuple) and len(text) == 2 and all(isinstance(t, str) for t in text))):
            raise TypeError(f"probe text {i} must be a string or a (text_a, text_b) pair, got {text!r}")
        if not (text if isinstance(text, str) else "".join(text)).strip():
            raise ValueError(f"probe text {i} is empty")
    return texts


def check_targets(targets, count):
    """One target per text: a text, or token ids (a list of ints or a 1-D tensor)."""
    if targets is None:
        return None
    targets = as_list(targets)
    if len(targets) != count:
        raise ValueError(f"{len(targets)} targets for {count} texts: give one target per text")
    return [t if isinstance(t, str) else id_list(t, f"target {i}") for i, t in enumerate(targets)]


def as_list(x):
    """A list of sequences: a 2-D tensor's rows, or the items of a list/tuple."""
    return list(x)


def id_list(ids, what):
    """Token ids as a list of ints, from a list or a 1-D tensor/array."""
    if hasattr(ids, "tolist"):
        if getattr(ids, "ndim", 1) != 1:
            raise ValueError(f"{what} must be one sequence of token ids (a list or a 1-D tensor), got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    if isinstance(ids, str) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError(f"{what} must be token ids (ints), got {ids!r}"[:200])
    if not ids:
        raise ValueError(f"{what} is empty")
    return list(ids)


def check_parallel(ids, tokens, ids_name, tokens_name):
    if len(ids) != len(tokens):
        raise ValueError(f"{len(ids)} {ids_name} for {len(tokens)} {tokens_name}: give one token list per input")
    for i, (a, b) in enumerate(zip(ids, tokens)):
        if len(a) != len(b):
            raise ValueError(f"input {i}: {len(a)} {ids_name} but {len(b)} {tokens_name}")


def padded(sequences):
    """Right-padded [B, N] LongTensor of ids (pad 0) and its [B, N] mask."""
    import torch

    n = max(len(s) for s in sequences)
    ids = torch.zeros((len(sequences), n), dtype=torch.long)
    mask = torch.zeros((len(sequences), n), dtype=torch.long)
    for row, s in enumerate(sequences):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask
