"""Partitioned data sources: rows read in ranges where they are needed, never whole.

A source (``.npy`` files, a Parquet file, a Zarr group) knows its row count and
columns from metadata alone and reads any row range ``[start, stop)`` by itself: a
memory-mapped slice, the Parquet row groups that overlap it, a Zarr slice. Sources
are small picklable records, so a distributed engine ships them in tasks and its
workers read the rows; a single-process engine reads them all on the host.

:func:`prepare_source` makes what :func:`smx.datasets.split.prepare` makes for
in-memory data, in one pass of reductions over chunks (:mod:`smx.datasets.partitions`):
the split is :func:`~smx.datasets.partitions.row_split` of the global row index (so it
does not depend on ``chunk_rows``), the class list is merged
:func:`~smx.datasets.partitions.class_counts`, the standardiser comes from the training
rows' merged :class:`~smx.datasets.partitions.Moments`. The resulting
:class:`~smx.datasets.split.Splits` holds :class:`PartRows` / :class:`PartLabels`
instead of arrays: recipes an engine places by reading on its workers
(``backend.place`` of the Dask engine), or that any other engine turns into host
arrays through ``__array__`` (the in-memory reference on the same rows).
"""

from __future__ import annotations

import functools
import math
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from smx.datasets.partitions import Moments, row_split
from smx.datasets.split import Splits, Standardizer
from smx.errors import DataError
from smx.types import PluginParams

Bounds = tuple[int, int]


class SourceParams(PluginParams):
    """``data:`` options of ``name: partitioned``."""

    path: str = Field(description="features: an .npy file, a .parquet file or a .zarr group")
    labels: str | None = Field(None, description=".npy: the labels .npy file; .zarr: the "
                               "labels array's name (default y)")
    features: str = Field("X", description=".zarr: the features array's name")
    label_column: str | None = Field(None, description=".parquet: the labels column (every "
                                     "other column is a feature)")
    sample_weight: str | None = Field(
        None, description="per-row weights, read on the workers like X: .npy: a weights .npy "
        "file (n numbers); .parquet: the weights column (not a feature); .zarr: the weights "
        "array's name")
    chunk_rows: int | None = Field(None, ge=1, description="rows per chunk read on the host "
                                   "by an engine without workers (default 100000); backend: "
                                   "dask sizes its own chunks (backend_options.chunk_rows)")
    missing_chunks: Literal["error", "fill"] = Field(
        "error", description=".zarr: a chunk missing from the store is an error, or (fill) "
        "reads as the array's fill value, as Zarr does")
    persist: bool | str = Field(
        "auto", description="hold the chunks in the workers' memory (true), read them from the "
        "source at every evaluation (false), or persist when they fit in half the workers' "
        "memory (auto)")


    @field_validator("persist")
    @classmethod
    def _auto_or_flag(cls, value: bool | str) -> bool | str:
        if value != "auto" and not isinstance(value, bool):
            raise ValueError("expected auto, true or false")
        return value


# --- the sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NpySource:
    """Two ``.npy`` files (features, labels), memory-mapped by whoever reads a range."""

    path: str
    labels: str
    n_rows: int
    n_features: int
    itemsize: int
    weights: str | None = None  # a weights .npy (one number per row)

    @classmethod
    def open(cls, path: str, labels: str, weights: str | None = None) -> NpySource:
        X, y = (_mmap(p) for p in (path, labels))
        if X.ndim != 2 or y.ndim != 1 or len(y) != len(X):
            raise DataError(f"features {X.shape} and labels {y.shape} do not fit: need n x d "
                            "and n", where=path)
        _check_kinds(X.dtype, y.dtype, path, labels)
        if weights is not None:
            _check_weights_shape(_mmap(weights), len(X), weights)
        return cls(path, labels, int(X.shape[0]), int(X.shape[1]), X.dtype.itemsize, weights)

    def read_X(self, start: int, stop: int) -> np.ndarray:
        return read_npy_rows(self.path, start, stop, np.float64)

    def read_y(self, start: int, stop: int) -> np.ndarray:
        return read_npy_rows(self.labels, start, stop)

    def read_w(self, start: int, stop: int) -> np.ndarray | None:
        return None if self.weights is None else read_npy_rows(self.weights, start, stop,
                                                               np.float64)


@dataclass(frozen=True)
class ParquetSource:
    """A Parquet file: one labels column, the rest features; reads only the row groups a
    range overlaps (``offsets`` are the groups' first rows, from the file's footer)."""

    path: str
    label_column: str
    columns: tuple[str, ...]
    offsets: tuple[int, ...]
    n_rows: int
    itemsize: int = 8
    weight_column: str | None = None

    @property
    def n_features(self) -> int:
        return len(self.columns)

    @classmethod
    def open(cls, path: str, label_column: str, weight_column: str | None = None
             ) -> ParquetSource:
        meta = _parquet(path).metadata
        schema = meta.schema.to_arrow_schema()
        names = list(schema.names)
        for column, what in ((label_column, "labels"), (weight_column, "sample_weight")):
            if column is not None and column not in names:
                raise DataError(f"no column {column!r} for the {what} (columns: "
                                f"{', '.join(names)})", where=path)
        _check_parquet_types(schema, label_column, path)
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        offsets = tuple(int(v) for v in np.concatenate([[0], np.cumsum(sizes)]))
        features = tuple(c for c in names if c not in (label_column, weight_column))
        if not features:
            raise DataError(f"no feature columns (columns: {', '.join(names)})", where=path)
        return cls(path, label_column, features, offsets, int(meta.num_rows),
                   weight_column=weight_column)

    def _read(self, start: int, stop: int, columns: list[str]) -> Any:
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        last = int(np.searchsorted(self.offsets, stop, side="left"))
        groups = list(range(max(first, 0), min(last, len(self.offsets) - 1)))
        table = _parquet(self.path).read_row_groups(groups, columns=columns)
        return table.slice(start - self.offsets[groups[0]] if groups else 0, stop - start)

    def read_X(self, start: int, stop: int) -> np.ndarray:
        table = self._read(start, stop, list(self.columns))
        return np.stack([table.column(c).to_numpy().astype(np.float64) for c in self.columns],
                        axis=1).reshape(stop - start, len(self.columns))

    def read_y(self, start: int, stop: int) -> np.ndarray:
        column = self._read(start, stop, [self.label_column]).column(0)
        if column.null_count:  # to_numpy would make it NaN or the string 'None': a class
            import pyarrow.compute as pc

            row = start + int(np.flatnonzero(pc.is_null(column).to_numpy(
                zero_copy_only=False))[0])
            raise DataError(f"empty label in column {self.label_column!r} (row {row})",
                            where=self.path)
        y = column.to_numpy()
        return y.astype(str) if y.dtype.kind == "O" else y

    def read_w(self, start: int, stop: int) -> np.ndarray | None:
        if self.weight_column is None:
            return None
        w = self._read(start, stop, [self.weight_column]).column(0).to_numpy()
        return _as_weights(w, self.path)


@dataclass(frozen=True)
class ZarrSource:
    """Two arrays of a Zarr group: features (n x d) and labels (n)."""

    path: str
    features: str
    labels: str
    n_rows: int
    n_features: int
    itemsize: int
    weights: str | None = None  # the weights array's name

    @classmethod
    def open(cls, path: str, features: str, labels: str, weights: str | None = None,
             missing_chunks: str = "error") -> ZarrSource:
        import zarr

        _check_store(path)
        names = (features, labels) + ((weights,) if weights else ())
        try:
            group = zarr.open_group(path, mode="r")
            arrays: list[Any] = [group[name] for name in names]  # arrays, checked below
            X, y, *w = arrays
        except Exception as exc:  # zarr's own errors differ between versions
            raise DataError(f"cannot open arrays {', '.join(map(repr, names))} of the Zarr "
                            f"group ({type(exc).__name__}: {exc})", where=path) from None
        if len(X.shape) != 2 or y.shape != (X.shape[0],):
            raise DataError(f"features {X.shape} and labels {y.shape} do not fit", where=path)
        _check_kinds(np.dtype(X.dtype), np.dtype(y.dtype), f"{path} ({features})",
                     f"{path} ({labels})")
        if w:
            _check_weights_shape(w[0], X.shape[0], f"{path} ({weights})")
        if missing_chunks == "error":
            for name, array in zip(names, (X, y, *w), strict=True):
                _check_chunks_present(array, f"{path} ({name})")
        return cls(path, features, labels, int(X.shape[0]), int(X.shape[1]),
                   np.dtype(X.dtype).itemsize, weights)

    def _array(self, name: str) -> Any:
        import zarr

        return zarr.open_group(self.path, mode="r")[name]

    def read_X(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array(self.features)[start:stop], dtype=np.float64)

    def read_y(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array(self.labels)[start:stop])

    def read_w(self, start: int, stop: int) -> np.ndarray | None:
        if self.weights is None:
            return None
        return _as_weights(np.asarray(self._array(self.weights)[start:stop]), self.path)


Source = NpySource | ParquetSource | ZarrSource


def read_npy_rows(path: str, start: int, stop: int, dtype: Any = None) -> np.ndarray:
    """Rows ``[start, stop)`` of an ``.npy`` file through a memory map (only they are read),
    as a fresh C-ordered array (of ``dtype``; None: the file's)."""
    return np.array(np.load(path, mmap_mode="r")[start:stop], dtype=dtype, order="C")


def _check_weights_shape(w: Any, n: int, where: str) -> None:
    if tuple(w.shape) != (n,) or np.dtype(w.dtype).kind not in "iuf":
        raise DataError(f"sample weights must be {n} real numbers (one per row), got shape "
                        f"{tuple(w.shape)} of {w.dtype}", where=where)


def _as_weights(w: np.ndarray, where: str) -> np.ndarray:
    if w.dtype.kind not in "iuf":
        raise DataError(f"sample weights must be real numbers, got {w.dtype}", where=where)
    return w.astype(np.float64)


def _check_kinds(x: np.dtype, y: np.dtype, where_x: str, where_y: str) -> None:
    """Features are real numbers, labels integers or strings (as an in-memory data set's):
    from the header, before any chunk is read."""
    if x.kind not in "biuf":
        raise DataError(f"features must be real numbers, got dtype {x}", where=where_x)
    if y.kind not in "biufUS":
        raise DataError(f"labels must be integers or strings, got dtype {y}", where=where_y)


def _check_parquet_types(schema: Any, label_column: str, where: str) -> None:
    """The same for a Parquet file's columns (every column but the labels is a feature or
    the weights: numbers)."""
    import pyarrow as pa

    t = pa.types
    for field_ in schema:
        if field_.name == label_column:
            ok = (t.is_integer(field_.type) or t.is_floating(field_.type)
                  or t.is_boolean(field_.type) or t.is_string(field_.type)
                  or t.is_large_string(field_.type))
            what = "labels must be integers or strings"
        else:
            ok = (t.is_integer(field_.type) or t.is_floating(field_.type)
                  or t.is_boolean(field_.type) or t.is_decimal(field_.type))
            what = "must hold numbers"
        if not ok:
            raise DataError(f"column {field_.name!r}: {what}, got {field_.type}", where=where)


def _check_regular(path: str, expected: str = "a file") -> None:
    """A local path names a regular file, checked without opening it (opening a FIFO
    blocks); a path that is something else is named as what it is."""
    from smx.safe_read import kind_of

    if "://" in path:  # a URL: the library reading it checks
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError("file not found", where=path) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read: {getattr(exc, 'strerror', None) or exc}",
                        where=path) from None
    if not stat.S_ISREG(mode):
        raise DataError(f"is {kind_of(mode)}, expected {expected}", where=path)


def _check_store(path: str) -> None:
    """A local Zarr store is a directory holding only folders and regular files: a FIFO
    (a chunk, ``zarr.json``) would block Zarr's read forever, a device read garbage."""
    from smx.safe_read import kind_of

    if "://" in path:
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError("no such Zarr group", where=path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", where=path) from None
    if not stat.S_ISDIR(mode):
        raise DataError(f"is {kind_of(mode)}, expected a Zarr group (a folder)", where=path)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            entry = os.path.join(root, name)
            try:
                mode = os.stat(entry).st_mode
            except OSError as exc:  # a dangling link
                raise DataError(f"cannot read: {exc.strerror or exc}", where=entry) from None
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise DataError(f"is {kind_of(mode)}; a Zarr store holds only files and "
                                "folders", where=entry)


def _check_chunks_present(array: Any, where: str) -> None:
    """Every chunk of a Zarr array is in the store: Zarr reads a missing one as the fill
    value (zeros), which would train on data nobody wrote."""
    total, present = int(array.nchunks), int(array.nchunks_initialized)
    if present < total:
        raise DataError(f"{total - present} of {total} chunks are missing from the store "
                        "(Zarr would read them as its fill value); restore them, or set "
                        "data.missing_chunks: fill to read them so", where=where)


def _parquet(path: str) -> Any:
    """A Parquet file opened with its page checksums verified where it has them."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, page_checksum_verification=True)


def _check_labels(y: np.ndarray, start: int, where: str) -> None:
    """Labels read from a chunk are class names: integers or strings, so a float label must
    be finite and whole (NaN is no class, 1.5 no integer)."""
    if y.dtype.kind != "f":
        return
    bad = ~np.isfinite(y)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"the labels hold NaN/inf; first at row {start + r}", where=where)
    frac = y != np.floor(y)
    if frac.any():
        r = int(np.flatnonzero(frac)[0])
        raise DataError(f"labels look continuous (row {start + r} holds {y[r]:g}); classes "
                        "must be integers or strings", where=where)


def labels_where(source: Source) -> str:
    """Where a source's labels are, for messages: their file, column or array."""
    if isinstance(source, NpySource):
        return source.labels
    if isinstance(source, ParquetSource):
        return f"{source.path} (column {source.label_column!r})"
    return f"{source.path} ({source.labels})"


def _mmap(path: str) -> np.ndarray:
    _check_regular(path, "an .npy file")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"not a plain .npy array: {exc}", where=path) from None


@dataclass(frozen=True)
class Partitioned:
    """What the ``partitioned`` dataset plugin returns instead of arrays: an opened source
    (metadata only) and how to cut and hold it."""

    source: Source
    chunk_rows: int
    persist: str
    #: chunk_rows was given (data.chunk_rows), not the default
    chunk_rows_given: bool = False


def _absolute(path: str) -> str:
    """A local path made absolute (the workers' directory may differ); a URL as it is."""
    return path if "://" in path else str(Path(path).absolute())


KNOWN_SOURCES = (".npy", ".parquet", ".pq", ".zarr")
#: rows per chunk where the host reads a source (engines without workers)
HOST_CHUNK_ROWS = 100_000
#: the settings each format reads (given for another, they would be silently ignored)
SOURCE_SETTINGS = {
    "labels": ((".npy", ".zarr"), "an .npy source (the labels .npy) or a .zarr group (its "
               "labels array)"),
    "label_column": ((".parquet", ".pq"), "a Parquet source"),
    "features": ((".zarr",), "a .zarr group (its features array)"),
}


def open_source(path: str, labels: str | None = None, features: str = "X",
                label_column: str | None = None, chunk_rows: int | None = None,
                persist: str | bool = "auto", sample_weight: str | None = None,
                missing_chunks: str = "error") -> Partitioned:
    """The ``partitioned`` dataset: the format from the path's suffix. Paths become
    absolute here: the workers that read them may run in another directory."""
    suffix = Path(path.rstrip("/")).suffix.lower()
    given = {"labels": labels, "label_column": label_column,
             "features": None if features == "X" else features}
    for name, (kinds, what) in SOURCE_SETTINGS.items():
        if given[name] is not None and suffix in KNOWN_SOURCES and suffix not in kinds:
            raise DataError(f"data.{name} applies to {what}, not to a {suffix} source",
                            where="data")
    path = _absolute(path)
    if suffix == ".npy":
        if labels is None:
            raise DataError("an .npy source needs data.labels naming the labels .npy",
                            where="data")
        source: Source = NpySource.open(
            path, _absolute(labels), None if sample_weight is None else _absolute(sample_weight))
    elif suffix in (".parquet", ".pq"):
        if label_column is None:
            raise DataError("a Parquet source needs data.label_column", where="data")
        _check_regular(path, "a Parquet file")
        source = ParquetSource.open(path, label_column, sample_weight)
    elif suffix == ".zarr":
        source = ZarrSource.open(path, features, labels or "y", sample_weight, missing_chunks)
    else:
        raise DataError(f"unsupported source {suffix or '(none)'!r}; use .npy, .parquet or "
                        ".zarr", where=path)
    if isinstance(persist, bool):
        persist = "true" if persist else "false"
    return Partitioned(source, HOST_CHUNK_ROWS if chunk_rows is None else chunk_rows, persist,
                       chunk_rows is not None)


# --- one pass of reductions ----------------------------------------------------------------


@dataclass(frozen=True)
class SplitRule:
    """Which part (0 train, 1 val, 2 test) a global row belongs to."""

    seed: int
    val_fraction: float
    test_fraction: float

    def parts(self, start: int, stop: int) -> np.ndarray:
        return row_split(np.arange(start, stop), self.seed, self.val_fraction,
                         self.test_fraction)


@dataclass
class ChunkStats:
    """What one pass over the chunks gathers; adds across chunks (any order, any tree)."""

    counts: dict[int, tuple[int, int, int]]  # chunk index -> rows in train, val, test
    train: Moments | None  # of the training rows' features (float64)
    #: label -> [rows, training rows, the training rows' total weight (their count when
    #: unweighted)]: the class list, and the class totals that class weights need
    labels: dict[Any, list[float]] = field(default_factory=dict)
    bad: tuple[int, int] | None = None  # (first row, column) of a NaN/inf
    bad_weight: int | None = None  # first row whose weight is negative, NaN or inf
    weight_total: float = 0.0  # of every row
    lo: np.ndarray | None = None  # per column: the smallest and largest value
    hi: np.ndarray | None = None
    #: (first row, message) of a chunk that could not be read: returned, not raised, so
    #: that a Dask worker logs no "Compute Failed" traceback; the client raises it
    error: tuple[int, str] | None = None

    def __add__(self, other: ChunkStats) -> ChunkStats:
        labels = {label: list(v) for label, v in self.labels.items()}
        for label, values in other.labels.items():
            old = labels.setdefault(label, [0] * len(values))
            labels[label] = [a + b for a, b in zip(old, values, strict=True)]
        train = other.train if self.train is None else (
            self.train if other.train is None else self.train + other.train)
        bads = [b for b in (self.bad, other.bad) if b is not None]
        bad_w = [b for b in (self.bad_weight, other.bad_weight) if b is not None]
        lo = other.lo if self.lo is None else self.lo if other.lo is None else np.minimum(
            self.lo, other.lo)
        hi = other.hi if self.hi is None else self.hi if other.hi is None else np.maximum(
            self.hi, other.hi)
        errors = [e for e in (self.error, other.error) if e is not None]
        return ChunkStats({**self.counts, **other.counts}, train, labels,
                          min(bads) if bads else None, min(bad_w) if bad_w else None,
                          self.weight_total + other.weight_total, lo, hi,
                          min(errors) if errors else None)


def chunk_stats(i: int, bounds: Bounds, *, source: Source, rule: SplitRule) -> ChunkStats:
    """One chunk's contribution, computed where it is read."""
    start, stop = bounds
    try:
        X, y = source.read_X(start, stop), source.read_y(start, stop)
        _check_labels(y, start, labels_where(source))
        w = source.read_w(start, stop)
    except DataError as exc:
        return ChunkStats({}, None, error=(start, str(exc)))
    except (ValueError, TypeError, OverflowError) as exc:  # what the header could not tell
        return ChunkStats({}, None, error=(start, str(DataError(
            f"rows {start}..{stop - 1} cannot be read as numbers and labels "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
            where=str(source.path)))))
    except MemoryError:
        raise
    except Exception as exc:  # a damaged chunk: a decompression error, a truncated page
        return ChunkStats({}, None, error=(start, str(DataError(
            f"rows {start}..{stop - 1} cannot be read: the chunk is damaged "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
            where=str(source.path)))))
    part = rule.parts(start, stop)
    finite = np.isfinite(X)
    bad = None
    if not finite.all():
        r = int(np.flatnonzero(~finite.all(axis=1))[0])
        bad = (start + r, int(np.flatnonzero(~finite[r])[0]))
    train = part == 0
    bad_weight = None
    if w is not None and not (ok := np.isfinite(w) & (w >= 0)).all():
        bad_weight = start + int(np.flatnonzero(~ok)[0])
    labels: dict[Any, list[float]] = {}
    for which, rows in ((0, y), (1, y[train])):
        values, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            labels.setdefault(v, [0, 0, 0])[which] += c
        if which == 1:  # the training rows' weight per class (their count when unweighted)
            sums = counts if w is None else np.bincount(inverse, weights=w[train],
                                                        minlength=len(values))
            for v, t in zip(values.tolist(), sums.tolist(), strict=True):
                labels[v][2] += t
    in_parts = (int(np.count_nonzero(part == 0)), int(np.count_nonzero(part == 1)),
                int(np.count_nonzero(part == 2)))
    # NaN rows are refused (bad) before these are used, and values too large to square are
    # refused from lo/hi (_check_extremes): no warning on a worker's console meanwhile
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = X.min(axis=0, initial=np.inf), X.max(axis=0, initial=-np.inf)
        train_moments = Moments.of(X[train]) if train.any() else None
    return ChunkStats({i: in_parts}, train_moments, labels, bad,
                      bad_weight, float(len(y) if w is None else w.sum()), lo, hi)


def chunk_bounds(n: int, chunk_rows: int) -> list[Bounds]:
    return [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]


MapReduce = Callable[[Callable[..., Any], Sequence[Any], Sequence[Any]], Any]


def local_map_reduce(fn: Callable[..., Any], *items: Sequence[Any]) -> Any:
    """``map`` then ``+``, here: what an engine without workers does."""
    return functools.reduce(lambda a, b: a + b, map(fn, *items))


# --- the parts, as recipes -----------------------------------------------------------------


@dataclass(frozen=True)
class PartRows:
    """The rows of one part of a prepared source, standardised: read chunk by chunk.

    ``np.asarray`` reads them all here (engines without workers); the Dask engine
    reads each chunk on a worker with :meth:`read_chunk`."""

    source: Source
    rule: SplitRule
    part: int
    bounds: tuple[Bounds, ...]
    sizes: tuple[int, ...]  # this part's rows in each chunk
    standardizer: Standardizer
    classes: np.ndarray
    persist: str

    @property
    def shape(self) -> tuple[int, int]:
        return (sum(self.sizes), self.source.n_features)

    def __len__(self) -> int:
        return sum(self.sizes)

    def read_chunk(self, i: int, dtype: str) -> np.ndarray:
        start, stop = self.bounds[i]
        X = self.source.read_X(start, stop)[self.rule.parts(start, stop) == self.part]
        return np.asarray(self.standardizer(X), dtype=dtype, order="C")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        chunks = [self.read_chunk(i, "float64") for i in range(len(self.bounds))]
        out = np.concatenate(chunks) if chunks else np.empty((0, self.source.n_features))
        return out if dtype is None else out.astype(dtype)

    @property
    def nbytes_estimate(self) -> int:
        return len(self) * self.source.n_features * 8



class _PartColumn:
    """A per-row column of a :class:`PartRows`' rows, read chunk by chunk like them
    (``read_chunk``); as a whole (``np.asarray``) only where the client needs it."""

    rows: PartRows
    empty_dtype: Any = np.float64

    @property
    def shape(self) -> tuple[int]:
        return (len(self.rows),)

    def __len__(self) -> int:
        return len(self.rows)

    def read_chunk(self, i: int, dtype: str = "float64") -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        chunks = [self.read_chunk(i) for i in range(len(self.rows.bounds))]
        out = np.concatenate(chunks) if chunks else np.empty(0, self.empty_dtype)
        return out if dtype is None else out.astype(dtype)


@dataclass(frozen=True)
class PartLabels(_PartColumn):
    """The class indices of a :class:`PartRows`' rows (read from the labels alone).

    ``class_totals`` (the training part's): each class's total sample weight (its row count
    when unweighted), from the preparing pass of reductions, so that class weights and the
    total weight need no pass over the labels through the client."""

    rows: PartRows
    class_totals: tuple[float, ...] | None = None
    empty_dtype = np.int64

    def read_chunk(self, i: int, dtype: str = "int64") -> np.ndarray:
        r = self.rows
        start, stop = r.bounds[i]
        y = r.source.read_y(start, stop)[r.rule.parts(start, stop) == r.part]
        return encode_labels(y, r.classes)


@dataclass(frozen=True)
class PartWeights(_PartColumn):
    """The sample weights of a :class:`PartRows`' rows."""

    rows: PartRows

    def read_chunk(self, i: int, dtype: str = "float64") -> np.ndarray:
        r = self.rows
        start, stop = r.bounds[i]
        w = r.source.read_w(start, stop)
        assert w is not None, "a source without weights"
        return np.asarray(w[r.rule.parts(start, stop) == r.part], dtype=dtype)


def encode_labels(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f":
        y = y.astype(np.int64)
    return np.searchsorted(classes, y).astype(np.int64)


def prepare_source(data: Partitioned, *, val_fraction: float, test_fraction: float, seed: int,
                   standardize: bool = True, map_reduce: MapReduce | None = None,
                   where: str = "data", dtype: str = "float64") -> Splits:
    """:func:`smx.datasets.split.prepare` for a source, from one pass of reductions that
    ``map_reduce`` (an engine's, e.g. on Dask workers) runs over the chunks."""
    source = data.source
    bounds = chunk_bounds(source.n_rows, data.chunk_rows)
    if not bounds:
        raise DataError("the source has no rows", where=where)
    rule = SplitRule(seed, val_fraction, test_fraction)
    reduce = map_reduce or local_map_reduce
    stats: ChunkStats = reduce(functools.partial(chunk_stats, source=source, rule=rule),
                               list(range(len(bounds))), bounds)
    if stats.error is not None:
        raise DataError(stats.error[1])
    if stats.bad is not None:
        raise DataError(f"X has NaN/inf values; first at row {stats.bad[0]}, column "
                        f"{stats.bad[1]}", where=where)
    weighted = getattr(source, "weights", None) or getattr(source, "weight_column", None)
    if stats.bad_weight is not None:
        raise DataError(f"sample_weight must be finite and >= 0; row {stats.bad_weight} is "
                        "not", where=where)
    if weighted and stats.weight_total <= 0:
        raise DataError("sample_weight is zero for every row", where=where)
    labels = sorted(stats.labels)
    if any(isinstance(v, float) and not math.isfinite(v) for v in labels):
        raise DataError("the labels hold NaN/inf", where=where)
    if any(isinstance(v, float) and v != round(v) for v in labels):
        raise DataError("labels look continuous; classes must be integers or strings",
                        where=where)
    huge = [v for v in labels if isinstance(v, float) and abs(v) >= 2.0**63]
    if huge:  # integral, but no int64 holds it: the class would be garbage
        raise DataError(f"label {huge[0]!r} is too large for a class number (integers must "
                        "fit in 64 bits)", where=where)
    if len(labels) < 2:
        raise DataError(f"only one class in the labels ({labels[:1]}); need at least two",
                        where=where)
    if any(stats.labels[v][1] == 0 for v in labels) or stats.train is None:
        raise DataError("the training part lacks some classes; lower the val/test fractions",
                        where=where)
    classes = np.array([int(v) if isinstance(v, float) else v for v in labels])
    std = (Standardizer.from_moments(stats.train) if standardize
           else Standardizer.identity(source.n_features))
    _check_extremes(stats, std, standardize, dtype, where)
    sizes = [stats.counts[i] for i in range(len(bounds))]

    totals = tuple(float(stats.labels[v][2]) for v in labels)

    def part(p: int) -> tuple[PartRows, PartLabels, PartWeights | None]:
        rows = PartRows(source, rule, p, tuple(bounds), tuple(s[p] for s in sizes), std,
                        classes, data.persist)
        return (rows, PartLabels(rows, totals if p == 0 else None),
                PartWeights(rows) if weighted else None)

    (Xtr, ytr, wtr), (Xva, yva, wva), (Xte, yte, wte) = part(0), part(1), part(2)
    return Splits(classes=classes, X_train=Xtr, y_train=ytr, X_val=Xva, y_val=yva,  # type: ignore[arg-type]
                  X_test=Xte, y_test=yte, standardizer=std, w_train=wtr, w_val=wva,  # type: ignore[arg-type]
                  w_test=wte)  # type: ignore[arg-type]  # partitions stand in for arrays


def _check_extremes(stats: ChunkStats, std: Standardizer, standardize: bool, dtype: str,
                    where: str) -> None:
    """An in-memory data set's check (smx.datasets.split.check_standardized) from the
    columns' extremes: statistics that overflowed, or values whose logits would overflow
    ``dtype``, are refused naming the column, before training (not when the model is
    written)."""
    from smx.datasets.split import logit_limit

    if stats.lo is None or stats.hi is None:
        return
    limit = logit_limit(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        reach = np.maximum(np.abs(stats.hi - std.mean), np.abs(stats.lo - std.mean)) / std.scale
        extreme = np.where(np.abs(stats.hi) >= np.abs(stats.lo), stats.hi, stats.lo)
    bad = ~(np.isfinite(std.mean) & np.isfinite(std.scale) & (reach <= limit))
    if not bad.any():
        return
    j = int(np.flatnonzero(bad)[0])
    what = f"column {j} holds {extreme[j]:.3g}"
    if standardize and not (np.isfinite(std.mean[j]) and np.isfinite(std.scale[j])
                            and np.isfinite(reach[j])):
        raise DataError(f"{what}: standardising it overflows float64; rescale that column",
                        where=where)
    raise DataError(f"{what}, too large for {dtype} training: |x|"
                    f"{' once standardised' if standardize else ''} must stay below "
                    f"{limit:.2g} so that the logits cannot overflow; rescale that column"
                    + ("" if standardize else " or set data.standardize: true"), where=where)


def prepare_partitioned(data: Partitioned, cfg: Any, plugins: Any, backend: Any = None
                        ) -> Splits:
    """:func:`prepare_source` with the run's config, its reductions run by ``backend``
    (default: the config's) when that engine has workers (``map_reduce``)."""
    from smx.config import check_backend_options

    if backend is None and cfg.backend != "auto":
        backend = plugins.backend(cfg.backend)
    map_reduce = None if backend is None else backend.map_reduce
    if map_reduce is not None:  # the engine's options first: they say where its workers are
        backend.configure(backend.options.model_validate(check_backend_options(cfg, backend)))
        data = _engine_chunks(data, backend)
    return prepare_source(data, val_fraction=cfg.data.val_fraction,
                          test_fraction=cfg.data.test_fraction, seed=cfg.seed,
                          standardize=cfg.data.standardize, map_reduce=map_reduce,
                          dtype=cfg.dtype,
                          where=f"data ({cfg.data.name})")


def _engine_chunks(data: Partitioned, backend: Any) -> Partitioned:
    """The chunks of an engine that sizes them to its workers
    (:meth:`~smx.types.Backend.source_chunk_rows`); ``data.chunk_rows`` would then do
    nothing, so it is refused, naming the setting that counts."""
    rows = backend.source_chunk_rows(data.source.n_rows, data.source.n_features)
    if rows is None:
        return data
    if data.chunk_rows_given:
        from smx.errors import ConfigError

        raise ConfigError(f"does nothing with backend {backend.name}, whose chunks are "
                          "backend_options.chunk_rows (auto: sized to the workers' memory); "
                          "set that instead", where="data.chunk_rows")
    return replace(data, chunk_rows=rows)
