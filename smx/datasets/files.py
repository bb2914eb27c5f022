"""Reading user data files (.npz, .csv, .npy pair) with one clear line for each way they fail.

Pickles are never loaded: ``allow_pickle=False`` everywhere.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from smx.errors import DataError


def _open_check(path: Path) -> None:
    if not path.exists():
        raise DataError("file not found", where=str(path))
    if path.is_dir():
        raise DataError("is a directory, expected a data file", where=str(path))
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", where=str(path)) from None


def _load_npy(path: Path) -> np.ndarray:
    _open_check(path)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"not a plain .npy array (pickled objects are refused): {exc}",
                        where=str(path)) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"corrupted or truncated .npy file: {exc}", where=str(path)) from None


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz with arrays ``X`` and (for training) ``y``."""
    _open_check(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "X" not in f.files:
                raise DataError(f"no array 'X' (it has: {', '.join(f.files) or 'none'})",
                                where=str(path))
            return f["X"], (f["y"] if "y" in f.files else None)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"corrupted or unreadable .npz file: {exc}", where=str(path)) from None


def _parse_labels(raw: list[str]) -> np.ndarray:
    try:
        return np.asarray([int(v) for v in raw], dtype=np.int64)
    except ValueError:
        return np.asarray(raw)


def load_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A CSV with a header row; every column but ``label_column`` is a numeric feature."""
    _open_check(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read as CSV text: {exc}", where=str(path)) from None
    if not rows:
        raise DataError("empty file, expected a header row", where=str(path))
    header, body = [h.strip() for h in rows[0]], rows[1:]
    label_idx = None
    if label_column is not None:
        if label_column not in header:
            raise DataError(
                f"label column {label_column!r} not in the header (columns: {', '.join(header)})",
                where=str(path),
            )
        label_idx = header.index(label_column)
    X = np.empty((len(body), len(header) - (label_idx is not None)), dtype=np.float64)
    labels: list[str] = []
    for i, row in enumerate(body):
        line = i + 2
        if len(row) != len(header):
            raise DataError(f"{len(row)} fields, expected {len(header)} (ragged CSV)",
                            where=f"{path}:{line}")
        feats = [v for j, v in enumerate(row) if j != label_idx]
        try:
            X[i] = [float(v) for v in feats]
        except ValueError:
            bad = next(j for j, v in enumerate(row) if j != label_idx and not _is_float(v))
            raise DataError(f"column {header[bad]!r} is not a number: {row[bad]!r}",
                            where=f"{path}:{line}") from None
        if label_idx is not None:
            labels.append(row[label_idx].strip())
    return X, (_parse_labels(labels) if label_idx is not None else None)


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def load_features(
    path: str | Path, *, label_column: str | None = None, labels: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """X (and y when present) from any supported file, by extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y = load_npz(path)
    elif suffix == ".csv":
        X, y = load_csv(path, label_column)
    elif suffix == ".npy":
        X, y = _load_npy(path), (_load_npy(Path(labels)) if labels is not None else None)
    else:
        raise DataError(f"unsupported file type {suffix or '(none)'!r}; use .npz, .csv or .npy",
                        where=str(path))
    if X.ndim != 2:
        raise DataError(f"X must be 2-D (rows x features), got shape {X.shape}", where=str(path))
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise DataError(f"X must be real numbers, got dtype {X.dtype}", where=str(path))
    return X, y
