"""Small seeded problems the rules run on, and the comparisons they make.

Every problem is host NumPy in float64, small enough that a rule takes milliseconds on
the CPU, and shaped to catch the usual slips: an odd row count (a short last chunk),
more classes than features, every class present, weights that are not all equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from smx.testing.contract import fail

#: the relative error a float path may show against a float64 reference of the same sums
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


@dataclass(frozen=True)
class Problem:
    """Rows ``X`` (n, d), class indices ``y`` in 0..k-1 (each class present), positive
    sample weights ``w`` (n,), class weights ``cw`` (k,), and parameters ``W``, ``b``."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    cw: np.ndarray
    W: np.ndarray
    b: np.ndarray

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def k(self) -> int:
        return int(self.W.shape[1])

    def params(self) -> dict[str, np.ndarray]:
        return {"W": self.W.copy(), "b": self.b.copy()}

    def logits_t(self) -> np.ndarray:
        """``(X W + b)ᵀ``, the (k, n) block a loss's ``partial`` gets."""
        return np.ascontiguousarray((self.X @ self.W + self.b).T)


def problem(seed: int = 0, n: int = 23, d: int = 4, k: int = 3) -> Problem:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    return Problem(
        X=rng.normal(size=(n, d)),
        y=y.astype(np.int64),
        w=rng.uniform(0.25, 2.0, size=n),
        cw=rng.uniform(0.5, 2.0, size=k),
        W=rng.normal(scale=0.7, size=(d, k)),
        b=rng.normal(scale=0.3, size=k),
    )


def host(a: Any) -> np.ndarray:
    """A NumPy copy of a host value (a NumPy array, a scalar, a Python number)."""
    return np.array(a, dtype=np.float64) if not isinstance(a, np.ndarray) else a.astype(
        np.float64)


def close(what: str, got: Any, ref: Any, tol: float) -> None:
    """``got`` within ``tol`` of ``ref``, relative to the reference's largest magnitude
    (sums of mixed-sign terms have no meaningful element-wise relative error)."""
    g, r = host(got), host(ref)
    if g.shape != r.shape:
        fail(what, expected=f"shape {r.shape}", got=f"shape {g.shape}")
    if not np.isfinite(g).all():
        fail(what, expected="finite values", got=f"{np.count_nonzero(~np.isfinite(g))} "
                                                  "NaN/inf")
    scale = max(1.0, float(np.max(np.abs(r), initial=0.0)))
    err = float(np.max(np.abs(g - r), initial=0.0))
    if err > tol * scale:
        fail(what, expected=f"{_show(r)} (to {tol:g} relative)",
             got=f"{_show(g)}, off by {err:.3g}")


def identical(what: str, got: Any, ref: Any) -> None:
    """Bit for bit (shapes, dtypes and values)."""
    g, r = np.asarray(got), np.asarray(ref)
    if g.dtype != r.dtype or g.shape != r.shape or not np.array_equal(g, r, equal_nan=True):
        diff = (float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)), initial=0))
                if g.shape == r.shape else None)
        fail(what, expected=f"bit-identical {r.dtype}{list(r.shape)}",
             got=f"{g.dtype}{list(g.shape)}" + (f", differing by up to {diff:.3g}"
                                                 if diff is not None else ""))


def _show(a: np.ndarray) -> str:
    if a.size <= 4:
        return np.array2string(a, precision=10)
    return f"an array of shape {a.shape}"
