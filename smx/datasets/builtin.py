"""Built-in datasets: scikit-learn's bundled sets, a synthetic generator, and user files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

import smx
from smx.datasets.files import load_features, split_off_weights
from smx.errors import DataError
from smx.types import DatasetSpec, PluginParams


class NoParams(PluginParams):
    pass


#: the bundled datasets' files inside scikit-learn (what its ``load_<name>`` parses)
BUNDLED = {"digits": "digits.csv.gz", "iris": "iris.csv", "wine": "wine_data.csv"}


def _sklearn(name: str):
    def load() -> tuple[np.ndarray, np.ndarray]:
        found = _read_bundled(name)
        if found is not None:
            return found
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)

    return load


def _read_bundled(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """scikit-learn's bundled file read as its loader reads it, without importing
    scikit-learn (~1 s, SciPy included); None when the file is not where it was."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package, does not import it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / BUNDLED[name]
    if not path.is_file():
        return None
    if path.suffix == ".gz":  # digits: rows of 64 pixels then the label, no header
        import gzip

        with gzip.open(path) as fh:
            data = np.loadtxt(fh, delimiter=",")
        return data[:, :-1], data[:, -1].astype(int)
    import csv

    with path.open(newline="") as fh:  # header: n_samples, n_features, class names...
        rows = list(csv.reader(fh))
    n, d = int(rows[0][0]), int(rows[0][1])
    data = np.asarray(rows[1:n + 1], dtype=np.float64)
    return data[:, :d], data[:, -1].astype(int)


class SyntheticParams(PluginParams):
    n: int = Field(2000, ge=2, description="rows")
    d: int = Field(20, ge=1, description="features")
    k: int = Field(3, ge=2, description="classes")
    separation: float = Field(2.0, ge=0, description="distance scale between class means")
    seed: int = Field(0, ge=0, description="generator seed (independent of the run's seed)")


def synthetic(n: int = 2000, d: int = 20, k: int = 3, separation: float = 2.0,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: class means ~ N(0, separation²/d · I), unit noise, balanced classes."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, separation / np.sqrt(d), size=(k, d))
    y = np.arange(n) % k
    rng.shuffle(y)
    X = means[y] + rng.standard_normal((n, d))
    return X, y


class FileParams(PluginParams):
    path: str = Field(description="a .npz (X, y), .csv or .npy file of features")
    label_column: str | None = Field(None, description="CSV: the column holding the labels")
    labels: str | None = Field(None, description=".npy: the file holding the labels")
    sample_weight: str | None = Field(
        None, description="per-row weights: a CSV column or an .npz array of that name")


#: which file types each setting applies to: given for another, it would be silently ignored
APPLIES = {"label_column": (".csv", "a .csv"), "labels": (".npy", "an .npy of features")}


def load_file(path: str, label_column: str | None = None, labels: str | None = None,
              sample_weight: str | None = None) -> tuple[np.ndarray, ...]:
    suffix = Path(path).suffix.lower() if path != "-" else ".csv"
    for name, value in (("label_column", label_column), ("labels", labels)):
        kinds, what = APPLIES[name]
        if value is not None and suffix not in kinds:
            raise DataError(f"data.{name} applies to {what}, not to a {suffix or 'suffixless'} "
                            "file (an .npz holds its labels as y, a .csv names its label "
                            "column, an .npy of features names a labels .npy)", where="data")
    if path.lower().endswith(".csv") and label_column is None:
        raise DataError("a CSV needs data.label_column naming its label column", where="data")
    if path.lower().endswith(".npy") and labels is None:
        raise DataError("an .npy file needs data.labels naming the labels .npy", where="data")
    X, y = load_features(path, label_column=label_column, labels=labels)
    if y is None:
        raise DataError("no labels: an .npz needs an array 'y'", where=path)
    if sample_weight is None:
        return X, y
    X, w = split_off_weights(Path(path), X, sample_weight, label_column)
    return X, y, w


@smx.hookimpl
def smx_datasets():
    for name, what in [("digits", "8x8 handwritten digits, 1797 x 64, 10 classes"),
                       ("iris", "iris flowers, 150 x 4, 3 classes"),
                       ("wine", "wine cultivars, 178 x 13, 3 classes")]:
        yield DatasetSpec(name, _sklearn(name), NoParams, f"scikit-learn bundled: {what}",
                          owned=True)
    yield DatasetSpec("synthetic", synthetic, SyntheticParams, "Gaussian blobs (n, d, k, seed)",
                      owned=True)
    yield DatasetSpec("file", load_file, FileParams, "user file: .npz, .csv or .npy pair",
                      owned=True)
    from smx.datasets.sources import SourceParams, open_source

    yield DatasetSpec("partitioned", open_source, SourceParams,
                      "rows read in chunks where they are needed: .npy, .parquet or .zarr")
