"""The trained model as a device-neutral .npz: W, b, classes, standardization, metadata.

Written atomically, read with ``allow_pickle=False``: a model file can be
shared and loaded without running anyone's code.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smx import model
from smx.datasets.split import Standardizer, check_features
from smx.errors import ModelFileError
from smx.io import atomic_write_bytes, npz_bytes

FORMAT = "smx-model/1"


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

    def _params(self) -> dict[str, np.ndarray]:
        return {"W": self.W} if self.b is None else {"W": self.W, "b": self.b}

    def _check(self, X: np.ndarray, where: str) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            got = X.shape[1] if X.ndim == 2 else f"shape {X.shape}"
            raise ModelFileError(
                f"the model expects {self.n_features} features, the data has {got}", where=where
            )
        check_features(X, where)
        return self.standardizer(X)

    def predict_proba(self, X: np.ndarray, where: str = "data") -> np.ndarray:
        return np.asarray(model.predict_proba(self._params(), self._check(X, where)))

    def predict(self, X: np.ndarray, where: str = "data") -> np.ndarray:
        return self.classes[np.argmax(self.predict_proba(X, where), axis=1)]

    def save(self, path: str | Path) -> None:
        arrays = {
            "format": np.asarray(FORMAT),
            "W": self.W,
            "classes": self.classes,
            "mean": self.standardizer.mean,
            "scale": self.standardizer.scale,
            "meta": np.asarray(json.dumps(self.meta)),
        }
        if self.b is not None:
            arrays["b"] = self.b
        atomic_write_bytes(path, npz_bytes(arrays))


def load_model(path: str | Path) -> FittedModel:
    path = Path(path)
    if not path.exists():
        raise ModelFileError("model file not found", where=str(path))
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ModelFileError("not an smx model file (a single array, not an .npz archive)",
                                 where=str(path))
        with loaded as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"corrupted or truncated model file ({exc})", where=str(path)) \
            from None
    missing = [k for k in ("format", "W", "classes", "mean", "scale") if k not in arrays]
    if missing or str(arrays.get("format")) != FORMAT:
        raise ModelFileError(
            f"not an smx model file (missing: {', '.join(missing) or 'format tag'})",
            where=str(path),
        )
    W, b = arrays["W"], arrays.get("b")
    d, k = W.shape if W.ndim == 2 else (-1, -1)
    shapes_ok = (
        W.ndim == 2 and arrays["classes"].shape == (k,) and arrays["mean"].shape == (d,)
        and arrays["scale"].shape == (d,) and (b is None or b.shape == (k,))
    )
    if not shapes_ok:
        raise ModelFileError("inconsistent array shapes in the model file", where=str(path))
    for name in ("W", "b", "mean", "scale"):  # a hand-made or damaged file: say so, not garbage
        a = arrays.get(name)
        if a is None:
            continue
        if a.dtype.kind != "f":
            raise ModelFileError(f"{name} must hold floats, got dtype {a.dtype}", where=str(path))
        if not np.isfinite(a).all():
            raise ModelFileError(f"{name} contains NaN/inf", where=str(path))
    if not (arrays["scale"] > 0).all():
        raise ModelFileError("scale must be positive (it divides the features)",
                             where=str(path))
    try:
        meta = json.loads(str(arrays.get("meta", "{}")))
    except json.JSONDecodeError:
        meta = {}
    return FittedModel(W, b, arrays["classes"], Standardizer(arrays["mean"], arrays["scale"]),
                       meta)
