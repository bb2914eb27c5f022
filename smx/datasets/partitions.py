"""Reductions over partitions: what the data preparation needs, one pass, any chunking.

A data source yields its rows as partitions of known size (an in-memory array is
one partition; memory-mapped ``.npy`` row ranges, Parquet row groups or a Dask
array's chunks are many). Everything the preparation computes from the training
rows is a reduction that merges across partitions, so a lazy or distributed
engine can compute it where the data lives and send only the small results:

- :class:`Moments` (count, mean, sum of squared deviations per column) merge
  with Chan, Golub & LeVeque's pairwise rule, stable where ``Σx²/n − mean²``
  cancels; the standardiser comes from the merged moments;
- :func:`class_counts` merges per-partition label counts into the sorted class
  list (what ``np.unique`` gives for one partition);
- :func:`row_split` assigns a row to train/validation/test by a seeded hash of
  its global index, so the split is the same however the rows are chunked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Per-column count, mean and M2 = Σ (x − mean)² of some rows."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray) -> Moments:
        mean = X.mean(axis=0)
        dev = X - mean
        return cls(int(X.shape[0]), mean, (dev * dev).sum(axis=0))

    def __add__(self, other: Moments) -> Moments:
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta * delta * (self.n * other.n / n)
        return Moments(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.n)


def moments(parts: Iterable[np.ndarray]) -> Moments:
    """The merged moments of every partition's rows."""
    total: Moments | None = None
    for X in parts:
        m = Moments.of(X)
        total = m if total is None else total + m
    if total is None:
        raise ValueError("no partitions")
    return total


def class_counts(parts: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct labels over all partitions and how many rows carry each."""
    counts: dict[object, int] = {}
    for y in parts:
        labels, c = np.unique(y, return_counts=True)
        for label, k in zip(labels.tolist(), c.tolist(), strict=True):
            counts[label] = counts.get(label, 0) + k
    classes = np.array(sorted(counts))  # type: ignore[type-var]  # labels of one kind
    return classes, np.array([counts[c] for c in classes.tolist()], dtype=np.int64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mix (Steele et al.'s SplitMix64 finaliser): a fast, seedable hash."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_split(rows: np.ndarray, seed: int, val_fraction: float, test_fraction: float
              ) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) for each global row index in ``rows``.

    A function of the row index and the seed alone: each partition computes its own
    rows' parts, and the union does not depend on how the rows were partitioned.
    (In-memory data keeps the exact stratified split of :func:`smx.datasets.split.prepare`.)
    """
    mixed = _splitmix64(np.asarray(rows, dtype=np.uint64) ^ _splitmix64(np.asarray([seed]))[0])
    u = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # uniform in [0, 1)
    part = np.zeros(len(u), dtype=np.int8)
    part[u < test_fraction + val_fraction] = 1
    part[u < test_fraction] = 2
    return part
