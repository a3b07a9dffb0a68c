"""Keeping the k lowest: the stable order of ``np.argsort(kind="stable")``, however it is found."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daskgmm.lowest import LowestRows, lowest, merge_lowest

# Few distinct values, so that ties (and NaN) are common; more than lowest sorts outright.
scores = st.lists(st.sampled_from([-1.0, 0.0, -0.0, 2.5, np.inf, -np.inf, np.nan]), max_size=200)


@given(scores, st.integers(0, 210))
def test_lowest_is_the_start_of_a_stable_sort(values, keep):
    values = np.array(values)
    assert np.array_equal(lowest(values, keep), np.argsort(values, kind="stable")[:keep])


@pytest.mark.parametrize("keep", [1, 7, 300, 9_999])
@pytest.mark.parametrize("values", ["ties", "nan-below-keep", "distinct"])
def test_lowest_of_many_scores_is_the_start_of_a_stable_sort(values, keep):
    rng = np.random.default_rng(0)
    scores = {
        "ties": rng.integers(0, 4, size=10_000).astype(np.float64),
        "nan-below-keep": np.where(rng.uniform(size=10_000) < 0.999, np.nan, 1.0),
        "distinct": rng.normal(size=10_000).astype(np.float32),
    }[values]
    assert np.array_equal(lowest(scores, keep), np.argsort(scores, kind="stable")[:keep])


@given(scores, scores, st.integers(1, 45))
def test_merging_two_sets_keeps_the_lowest_of_both_left_first(left, right, keep):
    left, right = np.sort(np.array(left))[:keep], np.sort(np.array(right))[:keep]
    both = np.concatenate([left, right])
    merged, items = merge_lowest((left, np.arange(len(left))),
                                 (right, len(left) + np.arange(len(right))), keep)
    if len(left) and len(right):
        assert np.array_equal(items, np.argsort(both, kind="stable")[:keep])
    assert np.array_equal(merged, both[items], equal_nan=True)


# A NaN log p(x) is a row that is not finite, and the pass raises: no NaN here.
@given(st.lists(st.sampled_from([-1.0, 0.0, 2.5, -np.inf]), max_size=200), st.integers(0, 8),
       st.integers(1, 120))
def test_lowest_rows_found_slice_by_slice_are_those_of_the_whole_block(values, keep, step):
    values = np.array(values)
    keep = min(keep, len(values))
    worst = LowestRows(keep)
    for start in range(0, len(values), step):
        worst.add(values[start : start + step], start)

    expected = np.argsort(values, kind="stable")[:keep]
    assert np.array_equal(worst.indices, expected)
    assert np.array_equal(worst.scores, values[expected])
