"""Reading user data files (.npz, .csv, .npy pair) with one clear line for each way they fail.

Pickles are never loaded, and only regular files are opened (a FIFO or a device is
refused instead of hanging): :mod:`smx.safe_read` does the reading. A CSV may also
come from standard input (``-``, for ``smx predict``).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from smx.errors import DataError
from smx.safe_read import open_regular, read_npy, read_npz

#: the name ``smx predict`` takes for standard input
STDIN = "-"


class Columns(np.ndarray):
    """A feature matrix that carries its columns' names (a CSV header), so that errors
    and the model file can name a column instead of numbering it."""

    columns: tuple[str, ...] = ()


def with_columns(X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    out = X.view(Columns)
    out.columns = tuple(names)
    return out


def column_names(X: object, n: int) -> list[str] | None:
    """The names a feature matrix carries (smx's CSV reader, a pandas DataFrame), if any."""
    names = getattr(X, "columns", None)
    if names is None:
        return None
    try:
        names = [str(c) for c in names]
    except TypeError:
        return None
    return names if len(names) == n and names else None


def _load_npy(path: Path) -> np.ndarray:
    return read_npy(path, DataError, what=".npy file", expected="a data file")


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz with arrays ``X`` and (for training) ``y``."""
    skipped: list[str] = []
    arrays = read_npz(path, DataError, what=".npz file", only={"X", "y"}, skipped=skipped,
                      expected="an .npz data file")
    if "X" not in arrays:
        names = sorted([*arrays, *skipped])
        raise DataError(f"no array 'X' (it has: {', '.join(names) or 'none'})", where=str(path))
    return arrays["X"], arrays.get("y")


def _parse_labels(raw: list[str]) -> np.ndarray:
    """Integers, else floats (``prepare`` keeps integral ones as classes, refuses the
    rest as continuous), else the strings themselves."""
    try:
        return np.asarray([int(v) for v in raw], dtype=np.int64)
    except (ValueError, OverflowError):  # beyond int64: as floats, which prepare refuses
        pass
    try:
        return np.asarray([float(v) for v in raw], dtype=np.float64)
    except ValueError:
        return np.asarray(raw)


def _csv_rows(path: Path | str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row; standard input is read, not closed."""
    stdin = str(path) == STDIN
    if stdin and getattr(sys.stdin, "buffer", None) is None:
        raise DataError("standard input is closed", where="<stdin>")
    raw = sys.stdin.buffer if stdin else open_regular(path, DataError, expected="a data file")
    fh = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(fh)
        return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    finally:
        if stdin:
            fh.detach()
        else:
            fh.close()


def _where(path: Path | str) -> str:
    return "<stdin>" if str(path) == STDIN else str(path)


def is_number(v: str) -> bool:
    """Whether a CSV cell reads as a number (a header row has names, not numbers)."""
    try:
        float(v)
    except ValueError:
        return False
    return True


def load_csv(path: Path | str, label_column: str | None, label_required: bool = True, *,
             header: bool | None = True, columns: Sequence[str] | None = None,
             notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A CSV whose columns are numeric features, but ``label_column``.

    ``header``: True, the first row names the columns; False, every row is data;
    None, decide: a first row of text is a header, a first row of numbers is data when
    the model's ``columns`` are named otherwise, and ambiguous (an error asking for
    ``--header``/``--no-header``) when there are no names to compare with. A row is
    never silently taken for a header.

    A UTF-8 byte-order mark is dropped and fully blank lines are skipped; errors give the
    line in the file. Without ``label_required``, a missing ``label_column`` just means
    every column is a feature (prediction data with or without its labels). ``path``
    ``-`` reads standard input. X carries the header's feature names (:class:`Columns`).
    """
    where = _where(path)
    try:
        rows = _csv_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read as CSV text: {exc}", where=where) from None
    if not rows:
        raise DataError("empty file, expected a header row" if header is not False
                        else "empty file, expected rows of numbers", where=where)
    header_line, first = rows[0][0], [h.strip() for h in rows[0][1]]
    if header is None:
        header = _decide_header(first, columns, where, notes)
    if header:
        body, names = rows[1:], first
    else:
        body = rows
        names = [f"column {j}" for j in range(len(first))]
        if label_column is not None and label_required:
            raise DataError(f"the file has no header row, so no column is named "
                            f"{label_column!r}", where=where)
        label_column = None
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise DataError(f"column name(s) {', '.join(map(repr, dupes))} appear more than once "
                        "in the header", where=f"{where}:{header_line}")
    label_idx = None
    if label_column is not None:
        if label_column in names:
            label_idx = names.index(label_column)
        elif label_required:
            raise DataError(
                f"label column {label_column!r} not in the header (columns: {', '.join(names)})",
                where=where,
            )
    X = np.empty((len(body), len(names) - (label_idx is not None)), dtype=np.float64)
    labels: list[str] = []
    for i, (line, row) in enumerate(body):
        if len(row) != len(names):
            raise DataError(f"{len(row)} fields, expected {len(names)} (ragged CSV)",
                            where=f"{where}:{line}")
        feats = [v for j, v in enumerate(row) if j != label_idx]
        try:
            X[i] = [float(v) for v in feats]
        except ValueError:
            bad = next(j for j, v in enumerate(row) if j != label_idx and not is_number(v))
            what = f"column {names[bad]!r}" if header else f"column {bad}"
            raise DataError(f"{what} is not a number: {row[bad]!r}",
                            where=f"{where}:{line}") from None
        if label_idx is not None:
            label = row[label_idx].strip()
            if not label:
                raise DataError(f"empty label in column {label_column!r}",
                                where=f"{where}:{line}")
            labels.append(label)
    if header:
        X = with_columns(X, [n for j, n in enumerate(names) if j != label_idx])
    return X, (_parse_labels(labels) if label_idx is not None else None)


def _decide_header(first: list[str], columns: Sequence[str] | None, where: str,
                   notes: list[str] | None) -> bool:
    if not all(is_number(c) for c in first):
        return True  # text in the first row: column names
    if columns is not None and list(columns) == first:
        return True  # the model's own (numeric) column names
    if columns is not None and not all(is_number(c) for c in columns):
        if notes is not None:
            notes.append(f"{where} has no header row (its first row is numbers; the model's "
                         f"columns are named {', '.join(columns[:3])}"
                         f"{', ...' if len(columns) > 3 else ''}): every row is read as data")
        return False
    shown = ", ".join(first[:4]) + (", ..." if len(first) > 4 else "")
    raise DataError(f"the first row ({shown}) is all numbers: is it a header? Pass --no-header "
                    "if the file has none (every row is data) or --header if it is one",
                    where=where)


def load_features(
    path: str | Path, *, label_column: str | None = None, labels: str | Path | None = None,
    label_required: bool = True, header: bool | None = True,
    columns: Sequence[str] | None = None, notes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """X (and y when present) from any supported file, by extension (``label_required``,
    ``header``, ``columns``: see :func:`load_csv`; ``-`` is a CSV on standard input)."""
    path = Path(path) if str(path) != STDIN else STDIN
    suffix = ".csv" if path == STDIN else Path(path).suffix.lower()
    if suffix == ".npz":
        X, y = load_npz(Path(path))
    elif suffix == ".csv":
        X, y = load_csv(path, label_column, label_required, header=header, columns=columns,
                        notes=notes)
    elif suffix == ".npy":
        X, y = _load_npy(Path(path)), (_load_npy(Path(labels)) if labels is not None else None)
    else:
        raise DataError(f"unsupported file type {suffix or '(none)'!r}; use .npz, .csv or .npy",
                        where=str(path))
    where = _where(path)
    if X.ndim != 2:
        raise DataError(f"X must be 2-D (rows x features), got shape {X.shape}", where=where)
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise DataError(f"X must be real numbers, got dtype {X.dtype}", where=where)
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
