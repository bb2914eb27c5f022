"""From raw (X, y) to what training needs: checked, encoded, split and standardized.

Runs on the host with NumPy, once per run, before anything reaches a device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from smx.datasets.partitions import Moments, moments
from smx.errors import DataError


@dataclass(frozen=True)
class Standardizer:
    """x -> (x - mean) / scale, fitted on the training rows only."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        return cls.from_moments(Moments.of(X))

    @classmethod
    def from_moments(cls, m: Moments) -> Standardizer:
        """From column moments merged over partitions (one partition: ``X.mean``/``X.std``)."""
        scale = m.std
        return cls(m.mean, np.where(scale > 0, scale, 1.0))

    @classmethod
    def identity(cls, d: int) -> Standardizer:
        return cls(np.zeros(d), np.ones(d))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale


@dataclass(frozen=True)
class Splits:
    classes: np.ndarray  # user labels; class index i means classes[i]
    X_train: np.ndarray
    y_train: np.ndarray  # class indices
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    standardizer: Standardizer
    #: per-row sample weights of each part (None: every row weighs 1)
    w_train: np.ndarray | None = None
    w_val: np.ndarray | None = None
    w_test: np.ndarray | None = None
    #: the features' names, when the data had them (a CSV header): the model file keeps them
    columns: tuple[str, ...] | None = None

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def check_features(X: np.ndarray, where: str) -> None:
    """Refuse NaN/inf with how many and the first row (0-based), before any training."""
    if _all_finite(X):
        return
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"X has {int(bad.sum())} NaN/inf value(s) in {len(rows)} row(s); first at row "
            f"{int(rows[0])}, column {int(np.flatnonzero(bad[rows[0]])[0])}",
            where=where,
        )


def _all_finite(X: np.ndarray) -> bool:
    """One float64 sum instead of an n x d mask: NaN/inf propagate, and a float64 sum of
    finite values of X's dtype cannot overflow (float64 X may: the full check then runs)."""
    if X.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(X.sum(dtype=np.float64 if X.dtype.kind == "f" else None)))


def check_weights(w: np.ndarray, n: int, where: str) -> np.ndarray:
    """Sample weights: n finite numbers >= 0, not all zero (as scikit-learn asks)."""
    w = np.asarray(w)
    if w.shape != (n,):
        raise DataError(f"sample_weight must have one weight per row ({n}), got shape {w.shape}",
                        where=where)
    if not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w):
        raise DataError(f"sample_weight must be real numbers, got dtype {w.dtype}", where=where)
    w = w.astype(np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise DataError("sample_weight must be finite and >= 0", where=where)
    if not w.any():
        raise DataError("sample_weight is zero for every row", where=where)
    return w


def check_xy(X: np.ndarray, y: np.ndarray, where: str) -> None:
    if X.ndim != 2:
        raise DataError(f"X must be 2-D, got shape {X.shape}", where=where)
    if y.ndim != 1:
        raise DataError(f"y must be 1-D, got shape {y.shape}", where=where)
    if X.shape[0] == 0:
        raise DataError("the dataset is empty (0 rows)", where=where)
    if X.shape[1] == 0:
        raise DataError("X has no feature columns", where=where)
    if X.shape[0] != y.shape[0]:
        raise DataError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels", where=where)
    check_features(X, where)
    if y.dtype.kind not in "biufUS":  # complex, dates, structured: no class labels
        raise DataError(f"labels must be integers or strings, got dtype {y.dtype}",
                        where=where)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError("y has NaN/inf labels", where=where)
        if (y != np.round(y)).any():
            raise DataError("labels look continuous; classes must be integers or strings "
                            f"(got {y[y != np.round(y)][0].item()!r})", where=where)
        huge = np.abs(y.astype(np.float64)) >= 2.0**63  # float16 holds no 2**63
        if huge.any():  # integral, but no int64 holds it: the class would be garbage
            raise DataError(f"label {y[huge][0].item()!r} is too large for a class number "
                            "(integers must fit in 64 bits)", where=where)
    if len(np.unique(y)) < 2:
        raise DataError(f"only one class in the labels ({y[0].item()!r}); need at least two",
                        where=where)


def _check_class_sizes(classes: np.ndarray, y_idx: np.ndarray, parts: int, where: str) -> None:
    """A stratified split puts every class in every part: refuse, naming the user's label,
    a class with fewer rows than parts (scikit-learn would name an internal index)."""
    if parts < 2:
        return
    counts = np.bincount(y_idx, minlength=len(classes))
    small = np.flatnonzero(counts < parts)
    if len(small):
        shown = ", ".join(f"{classes[i].item()!r} ({counts[i]})" for i in small[:5])
        raise DataError(
            f"too few rows for a stratified train/validation/test split in class(es) {shown}"
            f"{', ...' if len(small) > 5 else ''}; each needs at least {parts} rows (or set "
            "data.val_fraction/data.test_fraction to 0)", where=where)


def logit_limit(dtype: str) -> float:
    """The largest |feature| a run in ``dtype`` accepts: √max of the dtype, so that the
    logits x·W stay finite for weights up to that size as well (1.8e19 in float32,
    1.3e154 in float64)."""
    return float(np.sqrt(np.finfo(np.dtype(dtype)).max))


def _column(columns: list[str] | None, j: int) -> str:
    return f"column {columns[j]!r}" if columns else f"column {j}"


def check_standardized(Xs: np.ndarray, rows: np.ndarray, *, dtype: str, where: str,
                       columns: list[str] | None, raw: np.ndarray, standardized: bool,
                       purpose: str = "training") -> None:
    """Refuse, naming the column and row, a value that standardisation made non-finite
    or that is too large for ``dtype`` (see :func:`logit_limit`)."""
    limit = logit_limit(dtype)
    with np.errstate(invalid="ignore", over="ignore"):  # float32 X: the limit casts to inf
        bad = ~(np.abs(Xs) <= limit)  # NaN/inf too
    if not bad.any():
        return
    i, j = (int(v[0]) for v in np.nonzero(bad))
    value = f"{raw[i, j]:.3g}"
    what = f"{_column(columns, j)} holds {value} (row {int(rows[i])})"
    if standardized and not np.isfinite(Xs[i, j]):
        raise DataError(f"{what}: standardising it overflows float64; rescale that column",
                        where=where)
    shown = f"{abs(float(Xs[i, j])):.3g} once standardised" if standardized else value
    hint = "rescale that column" + ("" if standardized else " or set data.standardize: true") \
        + (" or use dtype float64" if dtype == "float32" else "")
    raise DataError(f"{what}, {'which is ' + shown + ', ' if standardized else ''}too large "
                    f"for {dtype} {purpose}: |x| must stay below {limit:.2g} so that the logits "
                    f"cannot overflow; {hint}", where=where)


def _within(Xs: np.ndarray, limit: float) -> bool:
    """Every value finite and within ±limit, from two reductions (no n x d temporary)."""
    if Xs.size == 0:
        return True
    with np.errstate(invalid="ignore"):
        lo, hi = float(Xs.min()), float(Xs.max())
    return -limit <= lo and hi <= limit  # False for NaN


def _check_statistics(std: Standardizer, X: np.ndarray, rows: np.ndarray, *, where: str,
                      columns: list[str] | None) -> None:
    """Refuse, naming the column, statistics that overflowed float64 (values beyond about
    1e154) instead of storing inf in the model."""
    bad = ~(np.isfinite(std.mean) & np.isfinite(std.scale))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        col = X[rows, j]
        i = int(np.argmax(np.abs(col.astype(np.float64))))
        raise DataError(f"{_column(columns, j)} holds {col[i]:.3g} (row {int(rows[i])}): "
                        "standardising it overflows float64; rescale that column",
                        where=where)


def prepare(
    X: np.ndarray, y: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int,
    standardize: bool = True, where: str = "data", sample_weight: np.ndarray | None = None,
    dtype: str | None = None, owned: bool = False, columns: list[str] | None = None,
) -> Splits:
    """Seeded stratified train/validation/test split; standardization fitted on train only.

    ``dtype`` is the run's: X goes from the caller's array to that dtype in one pass (None:
    float data keeps its dtype, integers become float64); the statistics use float64
    accumulators whatever it is. Without a split and without standardization the training
    X is the caller's array itself, not a copy; ``owned`` (the caller hands X over) lets the
    standardization of an unsplit X happen in place. Every value that reaches training is
    checked against the dtype (see :func:`check_standardized`); ``columns`` names the
    features in those errors.
    """
    X = np.asarray(X)
    if X.dtype.kind == "f" and X.dtype.itemsize > 8:  # float128 past float64's range: inf
        with np.errstate(over="ignore"):
            X = X.astype(np.float64)
    y = np.asarray(y)
    check_xy(X, y, where)
    target = np.dtype(dtype) if dtype is not None else (
        X.dtype if X.dtype.kind == "f" else np.dtype(np.float64))
    w = None if sample_weight is None else check_weights(sample_weight, len(y), where)
    if y.dtype.kind == "f":  # integral floats (1.0 from a CSV or an npz): the classes 0, 1...
        y = y.astype(np.int64)
    classes, y_idx = np.unique(y, return_inverse=True)
    y_idx = y_idx.astype(np.int64)
    _check_class_sizes(classes, y_idx, 1 + (val_fraction > 0) + (test_fraction > 0), where)
    idx = np.arange(len(y_idx))
    parts = {"val": np.empty(0, np.int64), "test": np.empty(0, np.int64)}
    rest = idx
    try:
        for name, frac in [("test", test_fraction), ("val", val_fraction)]:
            if frac <= 0:
                continue
            # fractions are of the whole dataset, whatever was taken before
            size = frac * len(idx) / len(rest)
            train, held = stratified_split(y_idx[rest], size, seed)
            rest, parts[name] = rest[train], rest[held]
    except ValueError as exc:
        raise DataError(f"cannot make a stratified split: {exc}", where=where) from None
    if len(np.unique(y_idx[rest])) < len(classes):
        raise DataError("the training part lacks some classes; lower the val/test fractions",
                        where=where)
    if w is not None and not w[rest].any():
        raise DataError("sample_weight is zero for every row of the training part (the "
                        "weighted rows went to validation/test); lower the val/test fractions",
                        where=where)
    val, test = np.sort(parts["val"]), np.sort(parts["test"])
    train_rows = None if len(rest) == len(idx) else np.sort(rest)  # None: every row, in order
    rows = idx if train_rows is None else train_rows
    if columns is not None and len(columns) != X.shape[1]:
        columns = None
    if standardize:
        with np.errstate(all="ignore"):
            std = Standardizer.from_moments(moments(_chunks(X, train_rows)))
        _check_statistics(std, X, rows, where=where, columns=columns)
    else:
        std = Standardizer.identity(X.shape[1])
    apply = std if standardize else None
    out = {}
    for name, part_rows, in_place in (("train", train_rows, owned), ("val", val, False),
                                      ("test", test, False)):
        with np.errstate(all="ignore"):
            out[name] = _rows_as(X, part_rows, target, apply, in_place=in_place)
        shown = idx if part_rows is None else part_rows
        if not _within(out[name], logit_limit(target.name)):  # cheap: two reductions
            check_standardized(out[name], shown, dtype=target.name, where=where,
                               columns=columns, raw=X[shown],
                               standardized=standardize)
    return Splits(
        classes=classes,
        X_train=out["train"], y_train=y_idx[rows],
        X_val=out["val"], y_val=y_idx[val],
        X_test=out["test"], y_test=y_idx[test],
        standardizer=std, columns=tuple(columns) if columns else None,
        **({} if w is None else {"w_train": w[rows], "w_val": w[val], "w_test": w[test]}),
    )


#: rows per chunk when converting or standardizing: float64 temporaries of a few MiB, not n x d
CHUNK_BYTES = 1 << 23


def _chunk_rows(X: np.ndarray) -> int:
    return max(1, CHUNK_BYTES // (8 * max(1, X.shape[1])))


def _chunks(X: np.ndarray, rows: np.ndarray | None) -> Iterator[np.ndarray]:
    """The rows ``rows`` of X (None: all) in float64, a few MiB at a time."""
    n = X.shape[0] if rows is None else len(rows)
    step = _chunk_rows(X)
    for a in range(0, n, step):
        part = X[a:a + step] if rows is None else X[rows[a:a + step]]
        yield part.astype(np.float64, copy=False)


def _rows_as(X: np.ndarray, rows: np.ndarray | None, dtype: np.dtype,
             std: Standardizer | None, in_place: bool = False) -> np.ndarray:
    """X[rows] (None: all rows) in ``dtype``, standardized by ``std`` when given.

    All rows unstandardized in their own dtype: X itself. Standardized values are
    computed in float64 chunk by chunk (the same numbers as standardizing all of X in
    float64, then casting) and written into X itself when ``in_place`` allows it."""
    if rows is None and std is None:
        return X if X.dtype == dtype else X.astype(dtype)
    n = X.shape[0] if rows is None else len(rows)
    if rows is None and in_place and X.dtype == dtype and X.flags.writeable \
            and X.flags.c_contiguous:
        out = X
    elif rows is not None and std is None:
        return X[rows].astype(dtype, copy=False)
    else:
        out = np.empty((n, X.shape[1]), dtype=dtype)
    step = _chunk_rows(X)
    assert std is not None  # the cases without one returned above
    for a, part in zip(range(0, n, step), _chunks(X, rows), strict=True):
        out[a:a + step] = std(part)
    return out


def stratified_split(y: np.ndarray, test_size: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions of ``y``: exactly scikit-learn's ``train_test_split(...,
    test_size=test_size, random_state=seed, stratify=y)`` (its ``StratifiedShuffleSplit``
    draw, same RNG calls in the same order), without importing scikit-learn (~1 s).
    Raises ValueError where scikit-learn does."""
    n = len(y)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} should be a float in the (0, 1) range")
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_train == 0:
        raise ValueError(f"With n_samples={n}, test_size={test_size} and train_size=None, "
                         "the resulting train set will be empty. Adjust any of the "
                         "aforementioned parameters.")
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise ValueError("The least populated classes in y have only 1 member, which is too "
                         "few. The minimum number of groups for any class cannot be less "
                         f"than 2. Classes with too few members are: "
                         f"{classes[class_counts < 2].tolist()}")
    if n_train < len(classes):
        raise ValueError(f"The train_size = {n_train} should be greater or equal to the "
                         f"number of classes = {len(classes)}")
    if n_test < len(classes):
        raise ValueError(f"The test_size = {n_test} should be greater or equal to the "
                         f"number of classes = {len(classes)}")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[:n_i[i]])
        test.extend(perm[n_i[i]:n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
                      ) -> np.ndarray:
    """scikit-learn's ``utils.extmath._approximate_mode``: per-class draws, ties broken by
    ``rng`` exactly as it does."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rng.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)
