"""From raw (X, y) to what training needs: checked, encoded, split and standardized.

Runs on the host with NumPy, once per run, before anything reaches a device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smx.datasets.partitions import Moments
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
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"X has {int(bad.sum())} NaN/inf value(s) in {len(rows)} row(s); first at row "
            f"{int(rows[0])}, column {int(np.flatnonzero(bad[rows[0]])[0])}",
            where=where,
        )


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
        huge = np.abs(y) >= 2.0**63
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
    with np.errstate(invalid="ignore"):
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


def fit_standardizer(X: np.ndarray, rows: np.ndarray, *, where: str,
                     columns: list[str] | None) -> Standardizer:
    """:meth:`Standardizer.fit` on the training rows ``X`` (``rows``: their numbers in the
    data), refusing a column whose mean or spread overflows float64 (values beyond about
    1e154) instead of storing inf in the model."""
    with np.errstate(all="ignore"):
        std = Standardizer.fit(X)
    bad = ~(np.isfinite(std.mean) & np.isfinite(std.scale))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        i = int(np.argmax(np.abs(X[:, j])))
        raise DataError(f"{_column(columns, j)} holds {X[i, j]:.3g} (row {int(rows[i])}): "
                        "standardising it overflows float64; rescale that column",
                        where=where)
    return std


def prepare(
    X: np.ndarray, y: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int,
    standardize: bool = True, where: str = "data", dtype: str = "float64",
    columns: list[str] | None = None, sample_weight: np.ndarray | None = None,
) -> Splits:
    """Seeded stratified train/validation/test split; standardization fitted on train only.

    Every value that reaches training is checked against ``dtype`` (see
    :func:`check_standardized`); ``columns`` names the features in those errors.
    """
    from sklearn.model_selection import train_test_split

    with np.errstate(over="ignore"):  # float128 past float64's range: inf, refused below
        X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    check_xy(X, y, where)
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
            rest, parts[name] = train_test_split(
                rest, test_size=size, random_state=seed, stratify=y_idx[rest]
            )
    except ValueError as exc:
        raise DataError(f"cannot make a stratified split: {exc}", where=where) from None
    if len(np.unique(y_idx[rest])) < len(classes):
        raise DataError("the training part lacks some classes; lower the val/test fractions",
                        where=where)
    rest, val, test = np.sort(rest), np.sort(parts["val"]), np.sort(parts["test"])
    if columns is not None and len(columns) != X.shape[1]:
        columns = None
    std = fit_standardizer(X[rest], rest, where=where, columns=columns) if standardize \
        else Standardizer.identity(X.shape[1])
    out = {}
    for name, rows in (("train", rest), ("val", val), ("test", test)):
        with np.errstate(all="ignore"):
            out[name] = std(X[rows])
        check_standardized(out[name], rows, dtype=dtype, where=where, columns=columns,
                           raw=X[rows], standardized=standardize)
    return Splits(
        classes=classes,
        X_train=out["train"], y_train=y_idx[rest],
        X_val=out["val"], y_val=y_idx[val],
        X_test=out["test"], y_test=y_idx[test],
        standardizer=std, columns=tuple(columns) if columns else None,
        **({} if w is None else {"w_train": w[rest], "w_val": w[val], "w_test": w[test]}),
    )
