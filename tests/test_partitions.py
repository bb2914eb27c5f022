"""Reductions over partitions give what one pass over all rows gives, however rows are cut."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smx.datasets.partitions import Moments, class_counts, moments, row_split
from smx.datasets.split import Standardizer


def cut(n: int, sizes: list[int]) -> list[slice]:
    edges = np.cumsum([0, *sizes])
    edges = [*edges[edges < n].tolist(), n]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(0, 2**31))
def test_merged_moments_equal_one_pass(sizes, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 5)) * rng.uniform(0.1, 1e3, size=5) + rng.uniform(-1e4, 1e4, 5)
    m = moments(X[s] for s in cut(len(X), sizes))
    assert m.n == len(X)
    np.testing.assert_allclose(m.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.std, X.std(axis=0), rtol=1e-10)


def test_one_partition_is_exactly_numpys_mean_and_std():
    X = np.random.default_rng(1).normal(size=(500, 4)) * 3 + 7
    std = Standardizer.fit(X)
    assert np.array_equal(std.mean, X.mean(axis=0)) and np.array_equal(std.scale, X.std(axis=0))
    empty = Moments(0, np.zeros(4), np.zeros(4))  # a partition with no rows merges away
    assert (empty + Moments.of(X)).n == len(X) and (Moments.of(X) + empty).n == len(X)


def test_class_counts_merge_like_unique():
    y = np.random.default_rng(2).choice(np.array(["b", "a", "c"]), size=97)
    classes, counts = class_counts(y[s] for s in cut(len(y), [10, 33, 5, 60]))
    ref_classes, ref_counts = np.unique(y, return_counts=True)
    assert classes.tolist() == ref_classes.tolist() and counts.tolist() == ref_counts.tolist()


@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.0, 0.3), (0.2, 0.0)])
def test_row_split_is_a_seeded_function_of_the_row_index(val, test):
    n = 20_000
    whole = row_split(np.arange(n), 7, val, test)
    pieces = np.concatenate([row_split(np.arange(n)[s], 7, val, test)
                             for s in cut(n, [1, 999, 4000, 37])])
    assert np.array_equal(whole, pieces)  # chunking changes nothing
    fractions = np.bincount(whole, minlength=3) / n
    np.testing.assert_allclose(fractions, [1 - val - test, val, test], atol=0.015)
    assert not np.array_equal(whole, row_split(np.arange(n), 8, val, test))  # the seed matters
