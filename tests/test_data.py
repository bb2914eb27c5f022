"""Datasets, user files and the split: formats, labels, stratification, standardization."""

from __future__ import annotations

import numpy as np
import pytest

from smx.datasets.builtin import load_file, synthetic
from smx.datasets.split import prepare
from smx.errors import DataError


def test_split_is_stratified_seeded_and_standardized_on_train_only(rng):
    X = rng.normal(5.0, 3.0, size=(600, 4))
    y = np.repeat(["cat", "dog", "eel"], [300, 200, 100])
    a = prepare(X, y, val_fraction=0.2, test_fraction=0.1, seed=3)
    b = prepare(X, y, val_fraction=0.2, test_fraction=0.1, seed=3)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert list(a.classes) == ["cat", "dog", "eel"]
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (420, 120, 60)
    for part in (a.y_train, a.y_val, a.y_test):  # class proportions kept: 3:2:1
        np.testing.assert_allclose(np.bincount(part) / len(part), [0.5, 1 / 3, 1 / 6], atol=0.02)
    np.testing.assert_allclose(a.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(a.X_train.std(axis=0), 1.0, atol=1e-12)
    assert abs(a.X_val.mean()) > 1e-6  # val/test use the training statistics, not their own
    c = prepare(X, y, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert not np.array_equal(a.y_val, c.y_val) or not np.array_equal(a.X_val, c.X_val)


def test_integer_labels_keep_their_values(rng):
    X = rng.normal(size=(90, 2))
    y = np.repeat([-7, 3, 100], 30)
    s = prepare(X, y, val_fraction=0.1, test_fraction=0.1, seed=0)
    assert list(s.classes) == [-7, 3, 100]
    assert s.y_train.dtype == np.int64 and s.y_train.max() == 2


@pytest.mark.parametrize(("X", "y", "needle"), [
    (np.zeros((0, 3)), np.zeros(0), "empty"),
    (np.ones((10, 2)), np.zeros(9), "10 rows but y has 9"),
    (np.ones((10, 2)), np.zeros(10), "only one class"),
    (np.where(np.eye(10, 2) > 0, np.nan, 1.0), np.arange(10) % 2, "2 NaN/inf value(s)"),
])
def test_bad_arrays_are_refused(X, y, needle):
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        prepare(X, y, val_fraction=0.1, test_fraction=0.1, seed=0)


def test_nan_error_names_first_row(rng):
    X = rng.normal(size=(20, 3))
    X[7, 2] = np.inf
    X[12, 0] = np.nan
    with pytest.raises(DataError, match=r"2 NaN/inf value.*first at row 7, column 2"):
        prepare(X, np.arange(20) % 2, val_fraction=0.1, test_fraction=0.1, seed=0)


def test_file_formats_agree(tmp_path, rng):
    X = rng.normal(size=(30, 3))
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    lines = ["a,b,label,c"] + [f"{a!r},{b!r},{lab},{c!r}"
                               for (a, b, c), lab in zip(X.tolist(), y, strict=True)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    for X2, y2 in [load_file(str(tmp_path / "d.npz")),
                   load_file(str(tmp_path / "X.npy"), labels=str(tmp_path / "y.npy")),
                   load_file(str(tmp_path / "d.csv"), label_column="label")]:
        np.testing.assert_array_equal(X2, X)
        np.testing.assert_array_equal(y2, y)


def test_csv_string_labels(tmp_path):
    (tmp_path / "d.csv").write_text("x,kind\n1.0,red\n2.0,blue\n")
    X, y = load_file(str(tmp_path / "d.csv"), label_column="kind")
    assert X.shape == (2, 1) and list(y) == ["red", "blue"]


@pytest.mark.parametrize(("name", "content", "kwargs", "needle"), [
    ("d.csv", "x,y\n1,0\n2\n", {"label_column": "y"}, r"d\.csv:3: 1 fields, expected 2"),
    ("d.csv", "x,y\n1,0\n", {"label_column": "target"}, "label column 'target' not in"),
    ("d.csv", "x,y\nabc,0\n", {"label_column": "y"}, r"d\.csv:2: column 'x' is not a number"),
    ("d.csv", "x,y\n1,0\n", {}, "data.label_column"),
    ("d.txt", "1 2\n", {}, "unsupported file type"),
    ("d.npz", b"PK\x03\x04garbage", {}, "corrupted or truncated"),
])
def test_bad_files(tmp_path, name, content, kwargs, needle):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=needle):
        load_file(str(path), **kwargs)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_file(str(tmp_path / "nope.npz"))


def test_pickled_npy_refused(tmp_path):
    np.save(tmp_path / "X.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.zeros(1))
    with pytest.raises(DataError, match="would need pickle"):
        load_file(str(tmp_path / "X.npy"), labels=str(tmp_path / "y.npy"))


def test_synthetic_is_seeded_and_separable():
    X, y = synthetic(n=300, d=5, k=3, separation=6.0, seed=1)
    X2, _y2 = synthetic(n=300, d=5, k=3, separation=6.0, seed=1)
    np.testing.assert_array_equal(X, X2)
    assert X.shape == (300, 5) and set(y) == {0, 1, 2} and np.bincount(y).tolist() == [100] * 3


def test_csv_with_bom_and_blank_lines(tmp_path):
    """Excel's UTF-8 BOM, a blank line inside and blank lines at the end are all fine."""
    from smx.datasets.files import load_csv

    path = tmp_path / "d.csv"
    path.write_bytes(("\ufeffa,label\n1,x\n\n2,y\n3,x\n\n \n").encode())
    X, y = load_csv(path, "label")
    np.testing.assert_array_equal(X[:, 0], [1, 2, 3])
    assert list(y) == ["x", "y", "x"]
    path.write_text("a,label\n1,x\n\n2\n")
    with pytest.raises(DataError, match=r"d\.csv:4: 1 fields, expected 2"):
        load_csv(path, "label")  # the line numbers count the skipped blank line


@pytest.mark.parametrize(("labels", "classes"), [
    (["0.0", "1.0"], [0, 1]),
    (["1", "1.0", "2"], [1, 2]),  # 1 and 1.0 are one class
    (["-3.0", "7"], [-3, 7]),
])
def test_integral_float_labels_are_integer_classes(tmp_path, labels, classes):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n" + "".join(f"{i},{labels[i % len(labels)]}\n" for i in range(30)))
    X, y = load_file(path=str(path), label_column="label")
    s = prepare(X, y, val_fraction=0.0, test_fraction=0.0, seed=0)
    assert s.classes.dtype == np.int64 and list(s.classes) == classes


def test_npz_float_labels(tmp_path, rng):
    X = rng.normal(size=(30, 2))
    s = prepare(X, np.arange(30.0) % 3, val_fraction=0.0, test_fraction=0.0, seed=0)
    assert s.classes.dtype == np.int64 and list(s.classes) == [0, 1, 2]
    with pytest.raises(DataError, match="labels look continuous; classes must be integers or "
                                        r"strings \(got 0\.5"):
        prepare(X, np.arange(30) % 3 + 0.5, val_fraction=0.0, test_fraction=0.0, seed=0)


def test_a_too_small_class_is_named_by_its_label(rng):
    X = rng.normal(size=(31, 2))
    y = np.array(["cat"] * 15 + ["dog"] * 15 + ["eel"])
    with pytest.raises(DataError, match=r"class\(es\) 'eel' \(1\); each needs at least 3 rows"):
        prepare(X, y, val_fraction=0.2, test_fraction=0.2, seed=0)
    with pytest.raises(DataError, match=r"'eel' \(1\); each needs at least 2 rows"):
        prepare(X, y, val_fraction=0.2, test_fraction=0.0, seed=0)
    assert len(prepare(X, y, val_fraction=0.0, test_fraction=0.0, seed=0).classes) == 3


@pytest.mark.parametrize("compressed", [False, True])
def test_loading_an_npz_makes_no_whole_array_temporary(tmp_path, compressed):
    """The checked reader fills the array in 1 MiB pieces: a zip entry's readinto is
    read() + copy, so one whole-array request doubled the peak memory of a load."""
    import tracemalloc

    from smx.errors import DataError
    from smx.safe_read import read_npz

    X = np.random.default_rng(0).normal(size=(20_000, 256)).astype(np.float32)  # 20 MiB
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, X=X)
    tracemalloc.start()
    try:
        got = read_npz(path, DataError, what="data")["X"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, X)
    assert peak < 1.25 * X.nbytes
