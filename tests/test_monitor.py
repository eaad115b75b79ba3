"""Attention-health statistics in query chunks against full-matrix references: masks, soft caps, windows, sinks, memory."""

import math

import pytest
import torch

from tb_attention.metrics import health
from tests.support.health_reference import N_LONG, needs_peak_memory, peak_extra_bytes, reference


def assert_matches(got, want, tol=1e-4):
    for metric in health.METRICS:
        assert torch.allclose(got[metric].double(), want[metric], atol=tol, rtol=tol), (metric, got[metric], want[metric])


def qk(b, h, h_kv, nq, nk, d, seed=0, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, nq, d, generator=g) * spread, torch.randn(b, h_kv, nk, d, generator=g)


@pytest.mark.parametrize("chunk_size", [1, 5, 256])
def test_causal_grouped_query_statistics_equal_the_full_matrix_reference(chunk_size):
    query, key = qk(2, 6, 2, 13, 13, 8)
    got = health.statistics(query, key, scale=8**-0.5, causal=True, chunk_size=chunk_size)
    assert_matches(got, reference(query, key, scale=8**-0.5, causal=True))


def test_bidirectional_statistics_with_soft_cap_window_and_sinks():
    query, key = qk(2, 4, 4, 11, 11, 16, seed=1, spread=6.0)
    sinks = torch.tensor([0.0, 2.0, -1.0, 5.0])
    got = health.statistics(query, key, scale=0.25, softcap=3.0, sliding_window=4, sinks=sinks, chunk_size=3)
    want = reference(query, key, scale=0.25, softcap=3.0, window=4, sinks=sinks)
    assert_matches(got, want)
    assert (got["max_logit"] <= 3.0).all()  # the soft cap bounds what the model actually used


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_is_neither_a_query_nor_a_key_and_null_means_the_first_real_key(side):
    query, key = qk(3, 2, 2, 10, 10, 4, seed=2)
    lengths = [10, 7, 4]
    real = torch.zeros(3, 10, dtype=torch.bool)
    for b, n in enumerate(lengths):
        if side == "right":
            real[b, :n] = True
        else:
            real[b, 10 - n :] = True
    got = health.statistics(query, key, scale=0.5, causal=True, key_mask=real, chunk_size=4)
    assert_matches(got, reference(query, key, scale=0.5, causal=True, real=real))


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_causal_padding_sinks_and_soft_cap_together_after_a_cache_equal_the_reference(chunk_size):
    query, key = qk(3, 4, 2, 9, 12, 8, seed=8, spread=5.0)  # 9 queries after 3 cached keys, GQA
    real = torch.ones(3, 12, dtype=torch.bool)
    real[1, :5] = False  # left padding, into the queries
    real[2, 10:] = False  # right padding
    sinks = torch.tensor([-1.0, 0.5, 3.0, 8.0])
    rules = dict(scale=0.5, causal=True, softcap=4.0)
    got = health.statistics(query, key, **rules, sinks=sinks, key_mask=real, query_mask=real[:, 3:], chunk_size=chunk_size)
    assert_matches(got, reference(query, key, **rules, sinks=sinks, real=real))
    window = health.statistics(query, key, **rules, sliding_window=3, key_mask=real, query_mask=real[:, 3:],
                               chunk_size=chunk_size)
    assert_matches(window, reference(query, key, **rules, window=3, real=real))


def test_masks_fill_only_the_columns_they_mask_and_equal_a_full_fill():
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 3, 5, 11, generator=g)
    causal = torch.ones(5, 11, dtype=torch.bool).tril(6)  # the last 5 rows of 11: the diagonal block
    padding = torch.rand(2, 1, 1, 11, generator=g) > 0.3
    for keep in (causal, padding, causal & padding, torch.ones(5, 11, dtype=torch.bool), torch.rand(5, 1, generator=g) > 0.5):
        want = logits.masked_fill(~keep, health.MASKED)
        assert torch.equal(health.fill_masked(logits.clone(), keep, health.MASKED), want)


def test_a_bool_or_additive_mask_equals_the_same_mask_given_as_rules():
    query, key = qk(2, 3, 3, 9, 9, 4, seed=3)
    allowed = torch.ones(9, 9, dtype=torch.bool).tril()
    want = reference(query, key, scale=0.5, causal=True)
    assert_matches(health.statistics(query, key, scale=0.5, attn_mask=allowed[None, None], chunk_size=2), want)
    additive = torch.zeros(2, 1, 9, 9).masked_fill(~allowed, torch.finfo(torch.float32).min)
    assert_matches(health.statistics(query, key, scale=0.5, attn_mask=additive, chunk_size=4), want)


def test_queries_after_a_cache_see_every_earlier_key():
    query, key = qk(1, 2, 1, 4, 12, 8, seed=4)
    got = health.statistics(query, key, scale=0.3, causal=True, chunk_size=3)
    assert_matches(got, reference(query, key, scale=0.3, causal=True))


def test_max_logit_is_the_probe_entry_point_and_matches_statistics():
    query, key = qk(1, 4, 4, 7, 7, 8, seed=5)
    assert torch.equal(health.max_logit(query, key, scale=0.2, causal=True),
                       health.statistics(query, key, scale=0.2, causal=True)["max_logit"])


def test_row_max_logits_are_each_rows_largest_masked_logit_and_their_max_is_max_logit():
    query, key = qk(2, 3, 3, 10, 10, 8, seed=7)
    rows = health.row_max_logits(lambda r: health.scores(query, key, r, scale=0.4, causal=True), 10, chunk_size=3)
    full = (0.4 * query.double() @ key.double().transpose(-1, -2)).masked_fill(
        torch.ones(10, 10, dtype=torch.bool).triu(1), -math.inf)
    assert torch.allclose(rows.double(), full.amax(dim=-1), atol=1e-5)
    assert torch.equal(rows.amax(dim=(0, 2)), health.max_logit(query, key, scale=0.4, causal=True, chunk_size=3))


def test_a_nan_logit_shows_in_the_statistics_instead_of_vanishing():
    query, key = qk(1, 2, 2, 5, 5, 4, seed=6)
    query[0, 1, 3, 0] = math.nan
    got = health.statistics(query, key, causal=True)
    assert math.isnan(got["attention_entropy"][1]) and not math.isnan(got["attention_entropy"][0])


def test_bad_arguments_are_named():
    query, key = qk(1, 3, 2, 4, 4, 4)
    with pytest.raises(ValueError, match="multiple of the key heads"):
        health.statistics(query, key)
    with pytest.raises(ValueError, match="chunk_size"):
        health.statistics(*qk(1, 2, 2, 4, 4, 4), chunk_size=0)


@needs_peak_memory
def test_statistics_at_4096_tokens_stay_far_below_one_full_attention_matrix():
    heads, full = 4, 4 * N_LONG * N_LONG * 4  # bytes of one float32 [H, N, N]
    query, key = qk(1, heads, heads, N_LONG, N_LONG, 32)
    health.statistics(query[:, :, :64], key[:, :, :64], causal=True)  # kernels loaded before measuring
    chunked = peak_extra_bytes(lambda: health.statistics(query, key, causal=True, chunk_size=128))
    assert chunked < full / 4, f"{chunked / 2**20:.0f} MiB extra for a {full / 2**20:.0f} MiB [H, N, N]"
    # The measurement itself is sound: one chunk of all N rows does hold full matrices.
    unchunked = peak_extra_bytes(lambda: health.statistics(query, key, causal=True, chunk_size=N_LONG))
    assert unchunked >= full
