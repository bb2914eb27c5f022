"""The estimator on dask arrays, in dask-ml's manner: ``fit`` keeps X on the cluster's
workers and ``predict`` answers lazily.

``fit(dask_X, y)`` checks the input with reductions computed on the Dask engine's cluster
(finiteness and the logit limit from each column's largest magnitude, the classes, the
weights, the standardisation statistics); only those small results, never X, come to the
client. The rows then go to :meth:`~smx.backends.dask_backend.DaskBackend.place` as dask
arrays, which it rechunks to its ``chunk_rows`` and keeps on the workers, and training runs
through the estimator's own path (``SoftmaxRegression._train``). Predictions of a dask
array are dask arrays of one task per block, computed wherever the caller computes them
(a distributed client's workers); a block holding NaN/inf, or whose scores overflow,
raises the same ``ValueError`` as NumPy input when it is computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import log_expit, log_softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, column_or_1d

from smx.datasets.split import Standardizer, logit_limit
from smx.estimator_input import check_row

if TYPE_CHECKING:
    from smx.backends.dask_backend import DaskBackend

_NAN = "Input X contains NaN or infinity."
_OVERFLOW = ("X holds values so large that the scores (X @ coef_.T + intercept_) overflow; "
             "rescale X as it was at fit time")


def is_dask(a: Any) -> bool:
    """A dask array (without importing dask when it is not loaded)."""
    from array_api_compat import is_dask_array

    return bool(is_dask_array(a))


def _check_shape(X: Any) -> None:
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
    if any(np.isnan(c) for c in X.shape):
        raise ValueError("X has chunks of unknown size (e.g. after boolean indexing); call "
                         "X.compute_chunk_sizes() first")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"Found array with shape {tuple(X.shape)}: at least one sample and "
                         "one feature are required")


def _host_labels(y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels given on the client (NumPy, a list...): scikit-learn's checks, encoded."""
    from smx.estimator_input import to_numpy

    y = column_or_1d(np.asarray(to_numpy(y)), warn=True)
    if len(y) != n:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                         f"[{n}, {len(y)}]")
    if y.dtype.kind in "fc":
        from sklearn.utils.validation import _assert_all_finite

        _assert_all_finite(y, input_name="y")
    check_classification_targets(y)
    classes, y_idx = np.unique(y, return_inverse=True)
    return classes, y_idx.astype(np.int64).reshape(-1)


def _encode(block: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class indices of a block of labels (every label is among ``classes``)."""
    return np.searchsorted(classes, block).astype(np.int64)


def fit_inputs(est: Any, X: Any, y: Any, sample_weight: Any, dask_engine: DaskBackend,
               dtype: str) -> tuple[Any, Any, Any, np.ndarray, Standardizer]:
    """(X, class indices, weights) as dask arrays chunked like X's rows, the classes and the
    standardizer, after scikit-learn's checks made as reductions on ``dask_engine``'s cluster
    (configured already): two passes of reductions at most, nothing of X's size on the
    client. ``dask_engine`` computes them (its one-line errors for dying or paused workers)."""
    import dask.array as da

    _check_shape(X)
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64 if dtype == "float64" else np.float32)
    X = X.rechunk({1: -1})
    n, d = (int(s) for s in X.shape)
    rows = X.chunks[0]
    first: dict[str, Any] = {"colmax": da.max(da.abs(X), axis=0)}
    y_dask = is_dask(y)
    if y_dask:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y should be a 1d array, got an array of shape {tuple(y.shape)} "
                             "instead.")
        if y.shape[0] != n:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{n}, {y.shape[0]}]")
        if y.dtype.kind == "c":
            raise ValueError("Complex data not supported")
        y = y.rechunk((rows,))
        first["classes"] = da.unique(y)
        if y.dtype.kind == "f":
            first["y_bad"] = da.any(~da.isfinite(y) | (y != da.round(y)))
    w_dask = is_dask(sample_weight)
    if w_dask:
        w = sample_weight
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(f"sample_weight.shape == {tuple(w.shape)}, expected ({n},)!")
        if w.dtype.kind not in "fiub":
            raise ValueError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
        w = w.astype(np.float64).rechunk((rows,))
        first["w_finite"] = da.all(da.isfinite(w))
        first["w_min"] = da.min(w)
    if est.standardize:
        ws = None if not w_dask else w[:, None]
        first["count"] = da.sum(w) if w_dask else n
        first["sum"] = da.sum(X if ws is None else X * ws, axis=0, dtype=np.float64)
    got = dict(zip(first, dask_engine.compute(*first.values()), strict=True))

    colmax = np.asarray(got["colmax"], dtype=np.float64)
    if not np.isfinite(colmax).all():
        raise ValueError(_NAN)
    if y_dask:
        if got.get("y_bad"):
            raise ValueError("Input y contains NaN or infinity, or is continuous: Unknown "
                             "label type: continuous. A classifier expects discrete classes.")
        classes = np.asarray(got["classes"])
        check_classification_targets(classes)
        y_idx = y.map_blocks(_encode, classes, dtype=np.int64)
    else:
        classes, y_host = _host_labels(y, n)
        y_idx = da.from_array(y_host, chunks=(rows,))
    if sample_weight is None:
        w = None
    elif w_dask:
        if not got["w_finite"]:
            raise ValueError("Input sample_weight contains NaN or infinity.")
        if got["w_min"] < 0:
            raise ValueError("Negative values in data passed to `sample_weight`.")
    else:
        from smx.estimator_input import to_numpy

        w = da.from_array(_check_sample_weight(to_numpy(sample_weight), np.empty((n, 0)),
                                               dtype=np.float64, ensure_non_negative=True),
                          chunks=(rows,))

    second: dict[str, Any] = {"totals": da.bincount(y_idx, weights=w, minlength=len(classes))}
    raw = X
    if est.standardize:
        mean = np.asarray(got["sum"], dtype=np.float64) / float(got["count"])
        centred = (X - mean.astype(X.dtype)) ** 2
        second["var"] = da.sum(centred if w is None else centred * w[:, None], axis=0,
                               dtype=np.float64)
    got2 = dict(zip(second, dask_engine.compute(*second.values()), strict=True))
    totals = np.asarray(got2["totals"], dtype=np.float64)
    present = int(np.count_nonzero(totals > 0))
    if len(classes) < 2 or present < 2:
        raise ValueError(f"{type(est).__name__} needs samples of at least 2 classes in the "
                         f"data, but the data contains only one class: {classes[0]!r}"
                         if present else "every sample weight is zero: there is no class "
                         "to learn")
    if est.standardize:
        scale = np.sqrt(np.asarray(got2["var"], dtype=np.float64) / float(got["count"]))
        std = Standardizer(mean, np.where(scale > 0, scale, 1.0))
        X = (X - std.mean.astype(X.dtype)) / std.scale.astype(X.dtype)
        colmax = (colmax + np.abs(std.mean)) / std.scale  # an upper bound per column
    else:
        std = Standardizer.identity(d)
    _check_magnitudes(X, raw, colmax, dask_engine, dtype, est.standardize)
    y_idx.class_totals = tuple(float(t) for t in totals)  # the Trainer reads no labels
    return X, y_idx, w, classes, std


def _check_magnitudes(X: Any, raw: Any, colmax: np.ndarray, dask_engine: DaskBackend,
                      dtype: str,
                      standardized: bool) -> None:
    """Fit's logit-limit check from the columns' largest magnitudes; the offending row is
    fetched (one row) only when a column is over."""
    import dask.array as da

    bad = ~(colmax <= logit_limit(dtype))
    if not bad.any():
        return
    if standardized:  # colmax was a bound: the exact maxima of the standardized columns
        colmax = np.asarray(dask_engine.compute(da.max(da.abs(X), axis=0))[0], dtype=np.float64)
        bad = ~(colmax <= logit_limit(dtype))
        if not bad.any():
            return
    # the first row over the limit, as the NumPy fit names it
    i = int(dask_engine.compute(da.argmax(da.any(~(da.abs(X) <= logit_limit(dtype)), axis=1)))[0])
    row_s, row_r = dask_engine.compute(X[i, :], raw[i, :])
    check_row(np.asarray(row_s, np.float64), np.asarray(row_r, np.float64), i, dtype,
              standardized)


# --- lazy predictions: one task per block ----------------------------------------------------

def _block_scores(block: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """One block's scores, with the checks NumPy input gets in ``_scores``."""
    if not np.isfinite(block).all():
        raise ValueError(_NAN)
    dt = np.result_type(block.dtype, coef.dtype) if block.dtype.kind == "f" else coef.dtype
    with np.errstate(over="ignore", invalid="ignore"):
        scores = block.astype(dt, copy=False) @ coef.T.astype(dt) + intercept.astype(dt)
    if not np.isfinite(scores).all():
        raise ValueError(_OVERFLOW)
    return scores[:, 0] if scores.shape[1] == 1 else scores


def scores(X: Any, coef: np.ndarray, intercept: np.ndarray) -> Any:
    """``X @ coef.T + intercept`` as a dask array: (n, K), or (n,) for one score column."""
    _check_shape(X)
    if X.shape[1] != coef.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features, but the estimator is expecting "
                         f"{coef.shape[1]} features as input")
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    X = X.rechunk({1: -1})
    dt = np.result_type(X.dtype, coef.dtype) if X.dtype.kind == "f" else coef.dtype
    k = coef.shape[0]
    if k == 1:
        return X.map_blocks(_block_scores, coef, intercept, dtype=dt, drop_axis=1)
    return X.map_blocks(_block_scores, coef, intercept, dtype=dt, chunks=(X.chunks[0], (k,)))


def _block_log_proba(s: np.ndarray) -> np.ndarray:
    if s.ndim == 1:
        return np.column_stack([log_expit(-s), log_expit(s)])
    return log_softmax(s, axis=1)


def log_proba(s: Any, n_classes: int) -> Any:
    """Per-block log-probabilities of lazy scores."""
    if s.ndim == 1:
        return s.map_blocks(_block_log_proba, dtype=s.dtype, new_axis=1,
                            chunks=(s.chunks[0], (n_classes,)))
    return s.map_blocks(_block_log_proba, dtype=s.dtype)


def _block_predict(s: np.ndarray, classes: np.ndarray) -> np.ndarray:
    idx = (s > 0).astype(np.intp) if s.ndim == 1 else np.argmax(s, axis=1)
    return classes[idx]


def predict(s: Any, classes: np.ndarray) -> Any:
    """Per-block labels of lazy scores."""
    if s.ndim == 1:
        return s.map_blocks(_block_predict, classes, dtype=classes.dtype)
    return s.map_blocks(_block_predict, classes, dtype=classes.dtype, drop_axis=1)
