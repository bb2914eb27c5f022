"""The trained model as a device-neutral .npz: W, b, classes, standardization, metadata.

Written atomically with a SHA-256 of its arrays inside (as checkpoints are), read
without pickle and without trusting a byte: every entry is checked by name, shape,
dtype and value range, and the checksum (absent from files written by smx 0.1, which
still load) must match, so a damaged file is one error line, never a different model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smx import model
from smx.checkpoint import checksum
from smx.datasets.files import is_number
from smx.datasets.split import Standardizer, check_features, check_standardized
from smx.errors import DataError, ModelFileError
from smx.io import atomic_write_bytes, npz_bytes
from smx.safe_read import read_npz

FORMAT = "smx-model/1"
#: every entry a model file may hold (``b`` without an intercept, ``sha256`` since 0.2)
ENTRIES = ("format", "W", "b", "classes", "mean", "scale", "meta", "sha256")


@dataclass
class FittedModel:
    W: np.ndarray
    b: np.ndarray | None
    classes: np.ndarray
    standardizer: Standardizer
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.W.shape[0])

    @property
    def columns(self) -> list[str] | None:
        """The training data's feature names (a CSV header), when it had them."""
        cols = self.meta.get("columns")
        ok = isinstance(cols, list) and len(cols) == self.n_features \
            and all(isinstance(c, str) for c in cols)
        return cols if ok else None

    def _check_names(self, names: Any, where: str) -> None:
        """Features named (a CSV header, a DataFrame) where the model knows its training
        columns: the same names in the same order, or the columns would be mixed up."""
        names = [] if names is None else list(names)
        model = self.columns
        if not names or model is None or not all(isinstance(c, str) for c in names) \
                or names == model or len(names) != len(model) or all(map(is_number, names)):
            return  # a count that differs is refused (and explained) by the caller; a row
            # of numbers taken as a header (--header) names nothing
        if sorted(names) == sorted(model):
            raise ModelFileError(f"the columns are the model's in another order (data: "
                                 f"{_names(names)}; model: {_names(model)}); reorder them",
                                 where=where)
        unknown = [c for c in names if c not in model]
        raise ModelFileError(f"column(s) {_names(unknown)} are not the model's (it was "
                             f"trained on {_names(model)}); rename them or pass --no-header "
                             "if the first row is data", where=where)

    def _params(self) -> dict[str, np.ndarray]:
        return {"W": self.W} if self.b is None else {"W": self.W, "b": self.b}

    def _check(self, X: np.ndarray, where: str) -> np.ndarray:
        self._check_names(getattr(X, "columns", None), where)
        with np.errstate(over="ignore"):  # past float64's range: inf, refused below
            X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            got = X.shape[1] if X.ndim == 2 else f"shape {X.shape}"
            raise ModelFileError(
                f"the model expects {self.n_features} features, the data has {got}", where=where
            )
        check_features(X, where)
        with np.errstate(all="ignore"):
            Xs = self.standardizer(X)
        check_standardized(Xs, np.arange(len(X)), dtype="float64", where=where,
                           columns=self.columns, raw=X, standardized=True, purpose="prediction")
        return Xs

    def _sparse_logits(self, X: Any, where: str) -> np.ndarray:
        """Logits of sparse X (scipy.sparse; cupyx is brought to the host) without
        densifying it: the standardisation is folded into the weights,
        ((x − mean)/scale)·W + b == x·(W/scale) + (b − (mean/scale)·W)."""
        import scipy.sparse as sp

        if hasattr(X, "get") and not sp.issparse(X):  # cupyx.scipy.sparse
            X = X.get()
        X = sp.csr_matrix(X, dtype=np.float64)
        if X.shape[1] != self.n_features:
            raise ModelFileError(f"the model expects {self.n_features} features, the data "
                                 f"has {X.shape[1]}", where=where)
        X.sum_duplicates()
        bad = ~np.isfinite(X.data)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            row = int(np.searchsorted(X.indptr, k, side="right")) - 1
            raise DataError(f"X has {int(bad.sum())} NaN/inf value(s); first at row {row}, "
                            f"column {int(X.indices[k])}", where=where)
        std = self.standardizer
        W = self.W.astype(np.float64)
        b = np.zeros(W.shape[1]) if self.b is None else self.b.astype(np.float64)
        if (std.mean != 0).any() or (std.scale != 1).any():
            W = W / std.scale[:, None]
            b = b - std.mean @ W
        return model.logits({"W": W, "b": b}, X)

    def predict_proba(self, X: Any, where: str = "data") -> np.ndarray:
        """Class probabilities of the rows of X: a 2-D array, or a scipy.sparse (or
        cupyx) matrix, which is never densified."""
        if model.is_sparse(X):
            with np.errstate(all="ignore"):
                proba = np.asarray(model.softmax(self._sparse_logits(X, where)))
        else:
            Xs = self._check(X, where)
            with np.errstate(all="ignore"):
                proba = np.asarray(model.predict_proba(self._params(), Xs))
        bad = ~np.isfinite(proba).all(axis=1)
        if bad.any():  # huge weights times large (finite) features
            raise DataError(f"row {int(np.flatnonzero(bad)[0])}: the logits overflow float64 "
                            "(features too large for this model's weights)", where=where)
        return proba

    def predict(self, X: Any, where: str = "data") -> np.ndarray:
        return self.classes[np.argmax(self.predict_proba(X, where), axis=1)]

    def save(self, path: str | Path) -> None:
        """Write the model atomically; refuses NaN/inf, which no model file may hold."""
        arrays = {
            "format": np.asarray(FORMAT),
            "W": self.W,
            "classes": self.classes,
            "mean": self.standardizer.mean,
            "scale": self.standardizer.scale,
            "meta": np.asarray(json.dumps(self.meta, allow_nan=False)),
        }
        if self.b is not None:
            arrays["b"] = self.b
        for name in ("W", "b", "mean", "scale"):
            if name in arrays and not np.isfinite(np.asarray(arrays[name])).all():
                raise ModelFileError(f"refusing to write a model whose {name} holds NaN/inf",
                                     where=str(path))
        arrays["sha256"] = np.asarray(checksum(arrays))
        atomic_write_bytes(path, npz_bytes(arrays))


def load_model(path: str | Path) -> FittedModel:
    """The model in ``path``, or one ModelFileError line saying what is wrong with it."""
    where = str(path)
    arrays = read_npz(path, ModelFileError, what="model file", strict_names=True,
                      missing="model file not found", expected="an smx model file")

    def bad(message: str) -> ModelFileError:
        return ModelFileError(message, where=where)

    unknown = sorted(set(arrays) - set(ENTRIES))
    # meta too: every smx version writes it, so an entry lost to damage cannot pass for
    # an optional one
    missing = [k for k in ("format", "W", "classes", "mean", "scale", "meta")
               if k not in arrays]
    fmt = arrays.get("format")
    if unknown or missing or fmt is None or fmt.shape != () or fmt.dtype.kind != "U" \
            or str(fmt) != FORMAT:
        what = (f"unexpected entries: {', '.join(unknown)}" if unknown else
                f"missing: {', '.join(missing)}" if missing else "no smx-model/1 format tag")
        raise bad(f"not an smx model file ({what})")
    if "sha256" in arrays:  # files of smx 0.1 have none, and still load
        stored = arrays.pop("sha256")
        if stored.shape != () or stored.dtype.kind != "U" or checksum(arrays) != str(stored):
            raise bad("model file checksum mismatch: the file is corrupted")
    W, b = arrays["W"], arrays.get("b")
    classes, mean, scale = arrays["classes"], arrays["mean"], arrays["scale"]
    d, k = W.shape if W.ndim == 2 else (-1, -1)
    shapes_ok = (
        W.ndim == 2 and classes.shape == (k,) and mean.shape == (d,)
        and scale.shape == (d,) and (b is None or b.shape == (k,))
    )
    if not shapes_ok:
        raise bad("inconsistent array shapes in the model file")
    if d < 1 or k < 2:
        raise bad(f"the model has {d} feature(s) and {k} class(es); it needs at least 1 "
                  "and 2")
    for name in ("W", "b", "mean", "scale"):  # a hand-made or damaged file: say so, not garbage
        a = arrays.get(name)
        if a is None:
            continue
        if a.dtype.kind != "f":
            raise bad(f"{name} must hold floats, got dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise bad(f"{name} contains NaN/inf")
    if not (scale > 0).all():
        raise bad("scale must be positive (it divides the features)")
    if classes.dtype.kind not in "biuUS" or len(np.unique(classes)) != k:
        raise bad(f"classes must be {k} distinct integers or strings")
    meta: Any = {}
    if "meta" in arrays:
        raw = arrays["meta"]
        try:
            if raw.shape != () or raw.dtype.kind != "U":
                raise ValueError("not a string")
            meta = json.loads(str(raw))
        except (ValueError, RecursionError) as exc:
            raise bad(f"meta is not valid JSON ({type(exc).__name__})") from None
        if not isinstance(meta, dict):
            raise bad(f"meta must be a JSON object, got {type(meta).__name__}")
    return FittedModel(W, b, classes, Standardizer(mean, scale), meta)


def _names(names: list[str], most: int = 6) -> str:
    shown = ", ".join(repr(c) if c != c.strip() or not c else c for c in names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")
