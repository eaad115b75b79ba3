"""Tests for tb_attention.metrics.attention: every metric against a literal loop, hand-worked cases, merging."""

import math
import os
import tempfile

import numpy as np
import pytest
import torch

from tb_attention import metrics
from tb_attention.metrics.attention import AttentionStats, Exemplar, compute_metrics
from tb_attention.probes.syntax import TokenSyntax
from tb_attention.storage.schema import UPOS

VARIABILITY_TOKENS = 10


# ---------------------------------------------------------------------------------------------
# The definitions (DESIGN.md section 4), written as literal loops. bench/bench_metrics.py times
# the vectorised code against this.


def loop_metrics(
    attentions, syntaxes=None, *, include_first=False, dependency_direction="either", pos_tags=UPOS, top_k=5
):
    """attentions: list of unpadded numpy [L, H, n, n]. Returns (metrics dict, exemplars[l][h])."""
    num_layers, num_heads = attentions[0].shape[:2]
    syntaxes = syntaxes if syntaxes is not None else [None] * len(attentions)
    has_syntax = any(s is not None for s in syntaxes)
    first_key = 0 if include_first else 1  # the first-token rule
    names = ["entropy", "distance", "null_attention", "previous_token", "variability"]
    if has_syntax:
        names += ["dependency_alignment"] + [f"pos/{t}" for t in pos_tags] + [f"pos_from/{t}" for t in pos_tags]
    out = {name: np.full((num_layers, num_heads), np.nan) for name in names}
    exemplars = [[[] for _ in range(num_heads)] for _ in range(num_layers)]
    tags_seen = {p for s in syntaxes if s is not None for p in s.pos}
    for l in range(num_layers):
        for h in range(num_heads):
            mass = distance = entropy = entropy_tokens = null = query_tokens = 0.0
            previous = previous_tokens = 0.0
            syntax_mass = dependency = 0.0
            pos_to = {t: 0.0 for t in pos_tags}
            pos_from = {t: 0.0 for t in pos_tags}
            candidates = []
            for x, (a, s) in enumerate(zip(attentions, syntaxes)):
                w = a[l, h]
                n = w.shape[0]
                relations = set() if s is None else {(int(hd), int(d)) for hd, d in s.dependencies}
                for i in range(n):
                    if i >= 1:  # null attention counts queries after the first
                        null += w[i, 0]
                        query_tokens += 1
                    if i - 1 >= first_key:  # the token before i, unless it is a left-out first token
                        previous += w[i, i - 1]
                        previous_tokens += 1
                    if include_first or w[i, 0] <= 0.9:
                        z = sum(w[i, j] for j in range(first_key, n))
                        if z > 0:
                            e = 0.0
                            for j in range(first_key, n):
                                p = w[i, j] / z
                                if p > 0:
                                    e -= p * math.log(p)
                            entropy += e
                            entropy_tokens += 1
                    for j in range(first_key, n):
                        mass += w[i, j]
                        distance += w[i, j] * abs(i - j)
                        if s is None:
                            continue
                        syntax_mass += w[i, j]
                        if dependency_direction == "either":
                            related = (i, j) in relations or (j, i) in relations
                        elif dependency_direction == "head":  # j is i's head
                            related = (j, i) in relations
                        else:  # j is i's dependent
                            related = (i, j) in relations
                        if related:
                            dependency += w[i, j]
                        if s.pos[j] in pos_to:
                            pos_to[s.pos[j]] += w[i, j]
                        if s.pos[i] in pos_from:
                            pos_from[s.pos[i]] += w[i, j]
                best = None
                for i in range(1, n):
                    for j in range(1, n):
                        if best is None or w[i, j] > best[0]:
                            best = (w[i, j], i, j)
                if best is not None:
                    candidates.append((-best[0], x, best[1], best[2]))
            deviation = variability_mass = 0.0
            for i in range(VARIABILITY_TOKENS):
                for j in range(first_key, VARIABILITY_TOKENS):
                    values = [a[l, h, i, j] for a in attentions if a.shape[-1] > max(i, j)]
                    if values:
                        mean = sum(values) / len(values)
                        deviation += sum(abs(v - mean) for v in values)
                        variability_mass += sum(values)
            ratio = lambda a, b: a / b if b > 0 else np.nan  # noqa: E731
            out["entropy"][l, h] = ratio(entropy, entropy_tokens)
            out["distance"][l, h] = ratio(distance, mass)
            out["null_attention"][l, h] = ratio(null, query_tokens)
            out["previous_token"][l, h] = ratio(previous, previous_tokens)
            out["variability"][l, h] = ratio(deviation, 2 * variability_mass)
            if has_syntax:
                out["dependency_alignment"][l, h] = ratio(dependency, syntax_mass)
                for t in pos_tags:
                    if t in tags_seen:
                        out[f"pos/{t}"][l, h] = ratio(pos_to[t], syntax_mass)
                        out[f"pos_from/{t}"][l, h] = ratio(pos_from[t], syntax_mass)
            candidates.sort()
            exemplars[l][h] = [Exemplar(x, -score, i, j) for score, x, i, j in candidates[:top_k]]
    return out, exemplars


# ---------------------------------------------------------------------------------------------
# Random inputs


def random_attention(rng, num_layers, num_heads, n, causal):
    """Row-stochastic [L, H, n, n]; some rows put > 90 % on the first token (entropy skips them)."""
    logits = rng.normal(size=(num_layers, num_heads, n, n)) * 2
    if causal:
        logits = np.where(np.tril(np.ones((n, n), dtype=bool)), logits, -np.inf)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    sink = rng.random((num_layers, num_heads, n)) < 0.3
    a[sink] *= 0.05
    a[..., 0][sink] += 0.95
    return a


def random_syntax(rng, n):
    pos = [None if rng.random() < 0.15 else str(rng.choice(UPOS[:8])) for _ in range(n)]  # some tags never occur
    pairs = {(int(h), int(d)) for h, d in rng.integers(0, n, size=(n, 2)) if h != d}
    dependencies = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return TokenSyntax(pos=pos, word=list(range(n)), dependencies=dependencies)


def random_corpus(seed, causal, lengths=(7, 12, 3, 10, 1, 15, 9), num_layers=2, num_heads=3, with_syntax=True):
    rng = np.random.default_rng(seed)
    attentions = [random_attention(rng, num_layers, num_heads, n, causal) for n in lengths]
    syntaxes = [random_syntax(rng, n) if k != 2 else None for k, n in enumerate(lengths)] if with_syntax else None
    return attentions, syntaxes


def padded(attentions, side, rng):
    """A batch [B, L, H, N, N] padded on `side`, and its mask. Padding holds junk: random weights
    in padded columns, NaN in padded rows (a softmax over nothing but masked keys)."""
    n_max = max(a.shape[-1] for a in attentions)
    batch = rng.random((len(attentions), *attentions[0].shape[:2], n_max, n_max))
    mask = np.zeros((len(attentions), n_max), dtype=np.int64)
    for b, a in enumerate(attentions):
        n = a.shape[-1]
        s = slice(0, n) if side == "right" else slice(n_max - n, n_max)
        batch[b, :, :, s, s] = a
        mask[b, s] = 1
        batch[b, :, :, mask[b] == 0, :] = np.nan
    return batch, mask


def assert_same_metrics(got, want, atol=1e-5):
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol, equal_nan=True, err_msg=name)


def assert_same_exemplars(got, want):
    for got_head, want_head in zip(sum(got, []), sum(want, [])):
        assert [(e.key, e.i, e.j) for e in got_head] == [(e.key, e.i, e.j) for e in want_head]
        np.testing.assert_allclose([e.score for e in got_head], [e.score for e in want_head], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Every metric against the loop


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("include_first", [False, True], ids=["first-token-excluded", "first-token-included"])
@pytest.mark.parametrize("layout", ["list", "right-padded", "left-padded"])
def test_every_metric_matches_the_loop_definition(causal, include_first, layout):
    attentions, syntaxes = random_corpus(seed=1, causal=causal)
    want, want_exemplars = loop_metrics(attentions, syntaxes, include_first=include_first, top_k=3)
    stats = AttentionStats(2, 3, include_first=include_first, top_k=3)
    if layout == "list":
        stats.update([torch.tensor(a, dtype=torch.float32) for a in attentions], syntax=syntaxes)
    else:
        batch, mask = padded(attentions, layout.split("-")[0], np.random.default_rng(2))
        stats.update(torch.tensor(batch, dtype=torch.float32), mask=torch.tensor(mask), syntax=syntaxes)
    assert_same_metrics(stats.result(), want)
    assert_same_exemplars(stats.exemplars(), want_exemplars)


@pytest.mark.parametrize("direction", ["head", "dependent"])
def test_dependency_alignment_in_one_direction_matches_the_loop(direction):
    attentions, syntaxes = random_corpus(seed=3, causal=False)
    want, _ = loop_metrics(attentions, syntaxes, dependency_direction=direction)
    got = compute_metrics(attentions, syntaxes, dependency_direction=direction)
    np.testing.assert_allclose(got["dependency_alignment"], want["dependency_alignment"], atol=1e-5)


def test_numpy_float64_input_matches_the_loop_closely():
    attentions, syntaxes = random_corpus(seed=4, causal=True)
    want, _ = loop_metrics(attentions, syntaxes)
    assert_same_metrics(compute_metrics(attentions, syntaxes), want, atol=1e-6)  # float32 results


def test_half_precision_attention_is_accepted():
    attentions, _ = random_corpus(seed=5, causal=True, with_syntax=False)
    want, _ = loop_metrics(attentions)
    got = compute_metrics([torch.tensor(a, dtype=torch.float16) for a in attentions])
    assert_same_metrics(got, want, atol=2e-3)


# ---------------------------------------------------------------------------------------------
# Worked by hand

# A causal input of 3 tokens (one layer, one head) and a second one of 2 tokens.
CAUSAL_3 = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])[None, None]
CAUSAL_2 = np.array([[1.0, 0.0], [0.4, 0.6]])[None, None]
# A bidirectional input of 3 tokens: "The cat sat".
BIDIRECTIONAL_3 = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])[None, None]
THE_CAT_SAT = TokenSyntax(
    pos=["DET", "NOUN", "VERB"], word=[0, 1, 2], dependencies=np.array([[1, 0], [2, 1]])  # cat -> The, sat -> cat
)


def test_distance_null_attention_and_entropy_by_hand():
    got = compute_metrics([CAUSAL_3])
    # Counted weights (j > 0): a11 = .5, a21 = .3, a22 = .5; sum 1.3.
    # distance = (.5*0 + .3*1 + .5*0) / 1.3
    assert got["distance"][0, 0] == pytest.approx(0.3 / 1.3)
    # null attention over queries i >= 1 = (a10 + a20) / 2 = (.5 + .2) / 2 (a00 = 1 by construction)
    assert got["null_attention"][0, 0] == pytest.approx(0.7 / 2)
    # entropy: row 0 has 100 % on the first token -> skipped; row 1 renormalised over j > 0 is
    # [1] -> 0; row 2 is [.3, .5] / .8 = [.375, .625] -> -(.375 ln .375 + .625 ln .625) = .661563.
    assert got["entropy"][0, 0] == pytest.approx((0.0 + 0.6615632) / 2)
    # One input: every weight equals its mean over inputs.
    assert got["variability"][0, 0] == 0.0


def test_first_token_included_by_option_by_hand():
    got = compute_metrics([CAUSAL_3], include_first=True)
    # All weights count; sum 3. distance = (a10*1 + a20*2 + a21*1) / 3 = (.5 + .4 + .3) / 3
    assert got["distance"][0, 0] == pytest.approx(1.2 / 3)
    # entropy over full rows, none skipped: (0 + ln 2 + H(.2, .3, .5) = 1.029653) / 3
    assert got["entropy"][0, 0] == pytest.approx((0 + math.log(2) + 1.0296530) / 3)


def test_variability_over_inputs_of_different_length_by_hand():
    got = compute_metrics([CAUSAL_3, CAUSAL_2])
    # Cells with j > 0 of the first 10 tokens. (1,1): .5 and .6, mean .55, deviations .05 + .05.
    # (2,1), (2,2): only the 3-token input has them -> no deviation; the rest are 0 in both.
    # Counted weight: 1.3 (first input) + .6 (second). variability = .1 / (2 * 1.9)
    assert got["variability"][0, 0] == pytest.approx(0.1 / 3.8)


def test_dependency_alignment_and_parts_of_speech_by_hand():
    got = compute_metrics([BIDIRECTIONAL_3], [THE_CAT_SAT], dependency_direction="either")
    # Counted weights (j > 0): row 0: .5 .3, row 1: .1 .8, row 2: .3 .1; sum 2.1.
    # Related pairs: (0,1) The-cat .5, (1,2) cat-sat .8, (2,1) sat-cat .3.
    assert got["dependency_alignment"][0, 0] == pytest.approx(1.6 / 2.1)
    # Received: cat (column 1) .5 + .1 + .3; sat (column 2) .3 + .8 + .1; The only at j = 0: none.
    assert got["pos/NOUN"][0, 0] == pytest.approx(0.9 / 2.1)
    assert got["pos/VERB"][0, 0] == pytest.approx(1.2 / 2.1)
    assert got["pos/DET"][0, 0] == 0.0
    # Paid: The (row 0) .8, cat (row 1) .9, sat (row 2) .4.
    assert got["pos_from/DET"][0, 0] == pytest.approx(0.8 / 2.1)
    assert got["pos_from/NOUN"][0, 0] == pytest.approx(0.9 / 2.1)
    assert got["pos_from/VERB"][0, 0] == pytest.approx(0.4 / 2.1)
    # No adjective anywhere: undefined, not 0.
    assert np.isnan(got["pos/ADJ"][0, 0]) and np.isnan(got["pos_from/ADJ"][0, 0])


def test_dependency_directions_by_hand():
    head = compute_metrics([BIDIRECTIONAL_3], [THE_CAT_SAT], dependency_direction="head")
    dependent = compute_metrics([BIDIRECTIONAL_3], [THE_CAT_SAT], dependency_direction="dependent")
    # j is i's head: The -> cat (a01 = .5), cat -> sat (a12 = .8).
    assert head["dependency_alignment"][0, 0] == pytest.approx(1.3 / 2.1)
    # j is i's dependent: sat -> cat (a21 = .3); cat -> The is attention to the first token.
    assert dependent["dependency_alignment"][0, 0] == pytest.approx(0.3 / 2.1)


def test_exemplars_rank_inputs_by_their_largest_weight_away_from_the_first_token():
    stats = AttentionStats(1, 1, top_k=2).update([CAUSAL_3, BIDIRECTIONAL_3, CAUSAL_2])
    # Largest a_ij with i, j > 0: input 0: a22 = .5; input 1: a12 = .8; input 2: a11 = .6.
    assert stats.exemplars()[0][0] == [Exemplar(1, pytest.approx(0.8), 1, 2), Exemplar(2, pytest.approx(0.6), 1, 1)]


def test_syntax_metrics_are_absent_without_syntax():
    assert sorted(compute_metrics([CAUSAL_3])) == ["distance", "entropy", "null_attention", "previous_token", "variability"]


def test_previous_token_by_hand():
    # CAUSAL_3 rows: [1, 0, 0], [.5, .5, 0], [.2, .3, .5]. With the first-token rule only query 2
    # counts (query 1's predecessor is the first token): a21 = .3. With it: (a10 + a21) / 2 = .4.
    assert compute_metrics([CAUSAL_3])["previous_token"][0, 0] == pytest.approx(0.3)
    assert compute_metrics([CAUSAL_3], include_first=True)["previous_token"][0, 0] == pytest.approx(0.4)


def test_inputs_without_syntax_do_not_count_in_syntax_metrics():
    with_none = compute_metrics([BIDIRECTIONAL_3, CAUSAL_3], [THE_CAT_SAT, None])
    alone = compute_metrics([BIDIRECTIONAL_3], [THE_CAT_SAT])
    assert with_none["dependency_alignment"][0, 0] == pytest.approx(alone["dependency_alignment"][0, 0])
    assert with_none["pos/NOUN"][0, 0] == pytest.approx(alone["pos/NOUN"][0, 0])


def test_results_are_float32_layer_by_head_arrays():
    attentions, syntaxes = random_corpus(seed=6, causal=True)
    got = compute_metrics(attentions, syntaxes)
    assert {k for k in got if "/" not in k} == set(metrics_names())
    assert {k for k in got if "/" in k} == {f"{p}{t}" for p in ("pos/", "pos_from/") for t in UPOS}
    assert all(v.dtype == np.float32 and v.shape == (2, 3) for v in got.values())


def metrics_names():
    from tb_attention.storage.schema import STATS_METRICS

    return STATS_METRICS


# ---------------------------------------------------------------------------------------------
# Merging


@pytest.mark.parametrize("cuts", [(1,), (3, 4), (1, 2, 5, 6)])
def test_merging_consecutive_shards_equals_one_pass(cuts):
    attentions, syntaxes = random_corpus(seed=7, causal=True)
    one = AttentionStats(2, 3, top_k=4).update(attentions, syntax=syntaxes)
    bounds = [0, *cuts, len(attentions)]
    shards = [
        AttentionStats(2, 3, top_k=4).update(attentions[a:b], syntax=syntaxes[a:b]) for a, b in zip(bounds, bounds[1:])
    ]
    merged = shards[0]
    for shard in shards[1:]:
        merged.merge(shard)
    assert_same_metrics(merged.result(), one.result(), atol=1e-6)
    assert_same_exemplars(merged.exemplars(), one.exemplars())


def test_merging_interleaved_shards_with_keys_equals_one_pass():
    attentions, syntaxes = random_corpus(seed=8, causal=False)
    one = AttentionStats(2, 3, top_k=4).update(attentions, syntax=syntaxes, keys=range(len(attentions)))
    even, odd = AttentionStats(2, 3, top_k=4), AttentionStats(2, 3, top_k=4)
    for k, (a, s) in enumerate(zip(attentions, syntaxes)):
        (even if k % 2 == 0 else odd).update([a], syntax=[s], keys=[k])
    merged = odd.merge(even)
    assert_same_metrics(merged.result(), one.result(), atol=1e-6)
    assert_same_exemplars(merged.exemplars(), one.exemplars())


def test_the_callers_attention_is_not_kept():
    attentions, _ = random_corpus(seed=10, causal=True, with_syntax=False)
    batch, mask = padded(attentions, "right", np.random.default_rng(11))
    batch = torch.tensor(batch, dtype=torch.float32)
    stats = AttentionStats(2, 3).update(batch, mask=torch.tensor(mask))
    before = stats.result()
    batch.fill_(0.5)  # e.g. the caller reuses its buffer for the next batch
    assert_same_metrics(stats.result(), before, atol=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_an_update_never_reads_the_device(side):
    """On a GPU a read back (.item(), .cpu(), bool of a tensor) makes the host wait for every
    kernel queued before it. Attention on the meta device has no values to read: an update
    that tried would raise. The exemplar keys and the syntax come from the host."""
    attentions, syntaxes = random_corpus(seed=12, causal=True)
    batch, mask = padded(attentions, side, np.random.default_rng(13))
    stats = AttentionStats(2, 3, top_k=4)
    stats.update(torch.tensor(batch, dtype=torch.float32).to("meta"), mask=torch.tensor(mask), syntax=syntaxes,
                 keys=range(len(attentions)))
    assert stats.num_inputs == len(attentions)
    assert stats.sums["entropy"].device.type == "meta" and stats._top_score.device.type == "meta"


def test_variability_can_be_turned_off():
    got = compute_metrics([CAUSAL_3, CAUSAL_2], variability=False)
    assert np.isnan(got["variability"]).all() and got["distance"][0, 0] > 0


def test_merging_settings_that_differ_is_refused():
    with pytest.raises(ValueError, match="different settings"):
        AttentionStats(1, 1).merge(AttentionStats(1, 1, include_first=True))


def _all_reduce_worker(rank, world, init_file, shards, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child: no OpenMP pool of the parent's
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    attentions, syntaxes = shards[rank]
    stats = AttentionStats(2, 3, top_k=4).update(attentions, syntax=syntaxes)
    stats.all_reduce()
    torch.save({"result": stats.result(), "exemplars": stats.exemplars()}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_all_reduce_across_processes_equals_one_pass():
    attentions, syntaxes = random_corpus(seed=9, causal=True)
    one = AttentionStats(2, 3, top_k=4).update(attentions, syntax=syntaxes)
    shards = [(attentions[:3], syntaxes[:3]), (attentions[3:], syntaxes[3:])]
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        # fork: a spawned child would spend seconds importing torch again
        torch.multiprocessing.start_processes(
            _all_reduce_worker, args=(2, init_file, shards, tmp), nprocs=2, start_method="fork"
        )
        for rank in range(2):
            got = torch.load(os.path.join(tmp, f"{rank}.pt"), weights_only=False)
            assert_same_metrics(got["result"], one.result(), atol=1e-6)
            assert_same_exemplars(got["exemplars"], one.exemplars())


# ---------------------------------------------------------------------------------------------
# Input checks


def test_syntax_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="syntax for 3 tokens, attention over 2"):
        compute_metrics([CAUSAL_2], [THE_CAT_SAT])


def test_attention_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"expected \[B, 2, 3, N, N\]"):
        AttentionStats(2, 3).update(torch.zeros(1, 2, 4, 5, 5))


def test_pad_attention_marks_real_tokens():
    batch, mask = metrics.pad_attention([np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))])
    assert batch.shape == (2, 1, 1, 3, 3)
    assert mask.tolist() == [[True, True, False], [True, True, True]]
