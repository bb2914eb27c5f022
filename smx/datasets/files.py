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
    """Integers, else floats (``prepare`` keeps integral ones as classes, refuses the
    rest as continuous), else the strings themselves."""
    try:
        return np.asarray([int(v) for v in raw], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.asarray([float(v) for v in raw], dtype=np.float64)
    except ValueError:
        return np.asarray(raw)


def load_csv(path: Path, label_column: str | None,
             label_required: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """A CSV with a header row; every column but ``label_column`` is a numeric feature.

    A UTF-8 byte-order mark is dropped and fully blank lines are skipped; errors give the
    line in the file. Without ``label_required``, a missing ``label_column`` just means
    every column is a feature (prediction data with or without its labels).
    """
    _open_check(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader
                    if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read as CSV text: {exc}", where=str(path)) from None
    if not rows:
        raise DataError("empty file, expected a header row", where=str(path))
    (header_line, raw_header), body = rows[0], rows[1:]
    header = [h.strip() for h in raw_header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"column name(s) {', '.join(map(repr, dupes))} appear more than once "
                        "in the header", where=f"{path}:{header_line}")
    label_idx = None
    if label_column is not None:
        if label_column in header:
            label_idx = header.index(label_column)
        elif label_required:
            raise DataError(
                f"label column {label_column!r} not in the header (columns: {', '.join(header)})",
                where=str(path),
            )
    X = np.empty((len(body), len(header) - (label_idx is not None)), dtype=np.float64)
    labels: list[str] = []
    for i, (line, row) in enumerate(body):
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
            label = row[label_idx].strip()
            if not label:
                raise DataError(f"empty label in column {label_column!r}",
                                where=f"{path}:{line}")
            labels.append(label)
    return X, (_parse_labels(labels) if label_idx is not None else None)


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def load_features(
    path: str | Path, *, label_column: str | None = None, labels: str | Path | None = None,
    label_required: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """X (and y when present) from any supported file, by extension (``label_required``:
    see :func:`load_csv`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y = load_npz(path)
    elif suffix == ".csv":
        X, y = load_csv(path, label_column, label_required)
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


def split_off_weights(path: Path, X: np.ndarray, name: str, label_column: str | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The sample weights named ``name`` and the features without them: an array of an
    .npz, or a column of a CSV (which ``load_csv`` read as a feature)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if name not in f.files:
                raise DataError(f"no array {name!r} for data.sample_weight (it has: "
                                f"{', '.join(f.files)})", where=str(path))
            w = np.asarray(f[name])
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next((row for row in csv.reader(fh) if any(c.strip() for c in row)), [])
        features = [h.strip() for h in header if h.strip() != label_column]
        if name not in features:
            raise DataError(f"no column {name!r} for data.sample_weight (columns: "
                            f"{', '.join(features)})", where=str(path))
        j = features.index(name)
        w, X = X[:, j].copy(), np.delete(X, j, axis=1)
    else:
        raise DataError("data.sample_weight needs a .csv or .npz file", where=str(path))
    if w.shape != (X.shape[0],) or not np.issubdtype(w.dtype, np.number):
        raise DataError(f"sample weights {name!r} must be {X.shape[0]} numbers, got shape "
                        f"{w.shape}", where=str(path))
    return X, w.astype(np.float64)
