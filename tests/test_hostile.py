"""Hostile input to the estimator: every bad input is a ValueError/TypeError naming it (an
smx error that is also one), never an internal error, a wrong answer or a divergence; and
the same for PyTorch tensors and JAX arrays that train where they live."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from smx.estimator import SoftmaxRegression

rng = np.random.default_rng(0)
X = rng.normal(size=(30, 3))
Y = np.arange(30) % 3


def quick(**params) -> SoftmaxRegression:
    return SoftmaxRegression(optimizer="sgd", epochs=2, **params)


ESTIMATOR_CASES = {
    # id: (estimator parameters, fit arguments, words expected in the error)
    "sparse-too-large": ({}, (sp.csr_matrix(X * 1e300), Y), ["column 0 holds", "too large"]),
    "sparse-coo-too-large": ({}, (sp.coo_matrix(X * 1e300), Y), ["too large for float64"]),
    "sparse-too-large-float32": ({"dtype": "float32"}, (sp.csr_matrix(X * 1e25), Y),
                                 ["too large for float32"]),
    "weights-sum-overflows": ({}, (X, Y, np.full(30, 1e308)), ["sample_weight sums to inf"]),
    "weights-subnormal": ({}, (X, Y, np.full(30, 1e-320)), ["sample_weight sums to 3e-319"]),
    "weights-too-large-for-float32": ({"dtype": "float32"}, (X, Y, np.full(30, 1e37)),
                                      ["float32 training can sum"]),
    "unknown-backend": ({"backend": "tpu"}, (X, Y), ["unknown backend 'tpu'"]),
    "unknown-backend-sparse": ({"backend": "tpu"}, (sp.csr_matrix(X), Y),
                               ["unknown backend 'tpu'"]),
    "device-on-cpu-engine": ({"device": "gpu:abc"}, (X, Y), ["runs on the CPU, not 'gpu:abc'"]),
    "device-negative": ({"device": "cuda:-1"}, (X, Y), ["'cuda:-1'"]),
    "device-upper-case": ({"device": "CPU"}, (X, Y), ["no device 'CPU'"]),
    "standardize-a-string": ({"standardize": "no"}, (X, Y), ["standardize must be True or "
                                                             "False, got 'no'"]),
    "fit-intercept-an-int": ({"fit_intercept": 0}, (X, Y), ["fit_intercept"]),
    "C-a-string": ({"C": "x"}, (X, Y), ["model.C", "'x'"]),
    "l2-a-list": ({"l2": [1]}, (X, Y), ["model.l2"]),
    "optimizer-params-a-list": ({"optimizer_params": [1]}, (X, Y),
                                ["optimizer_params must be a dict", "list"]),
    "schedule-params-a-string": ({"schedule_params": "x"}, (X, Y), ["schedule_params"]),
}


@pytest.mark.parametrize(("params", "args", "needles"), list(ESTIMATOR_CASES.values()),
                         ids=list(ESTIMATOR_CASES))
def test_bad_estimator_input_is_a_value_error(params, args, needles):
    with pytest.raises((ValueError, TypeError)) as info:
        quick(**params).fit(*args)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_scores_that_overflow_are_refused_not_argmaxed():
    clf = SoftmaxRegression().fit(X, Y)
    clf.coef_ = np.full_like(clf.coef_, 2.0)  # a model whose scores 1e308 overflows
    with pytest.raises(ValueError, match=r"scores \(X @ coef_.T \+ intercept_\) overflow"):
        clf.predict(np.full((2, 3), 1e308))


def _torch():
    return pytest.importorskip("torch")


def _jax_numpy():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    return jnp


TORCH_CASES = {
    # id: (a function of torch returning fit's arguments, words expected in the error)
    "meta-device": (lambda t: (t.tensor(X).to("meta"), t.tensor(Y)), ["'meta' device"]),
    "complex-X": (lambda t: (t.tensor(X + 1j), t.tensor(Y)), ["Complex data"]),
    "too-large": (lambda t: (t.tensor(X * 1e300), t.tensor(Y)), ["too large for float64"]),
    "too-large-standardised": (lambda t: (t.tensor(np.c_[X[:, :2], np.r_[1e300, -1e300,
                                                                           np.zeros(28)]]),
                                          t.tensor(Y)), ["column 2 holds", "overflows"]),
    "float-labels": (lambda t: (t.tensor(X), t.tensor(Y) * 0.5), ["continuous"]),
    "nan-label": (lambda t: (t.tensor(X), t.where(t.tensor(Y) == 0, t.nan, 1.0)),
                  ["y contains NaN"]),
    "two-column-labels": (lambda t: (t.tensor(X), t.stack([t.tensor(Y)] * 2, 1)),
                          ["y should be a 1d array"]),
    "weights-wrong-length": (lambda t: (t.tensor(X), t.tensor(Y), t.ones(5)),
                             ["sample_weight.shape == (5,)"]),
    "weights-2d": (lambda t: (t.tensor(X), t.tensor(Y), t.ones(30, 1)),
                   ["sample_weight.shape == (30, 1)"]),
    "weights-negative": (lambda t: (t.tensor(X), t.tensor(Y), -t.ones(30)), ["Negative"]),
    "weights-nan": (lambda t: (t.tensor(X), t.tensor(Y), t.full((30,), t.nan)),
                    ["sample_weight contains NaN"]),
    "weights-on-one-class": (lambda t: (t.tensor(X), t.tensor(Y), (t.tensor(Y) == 0) * 1.0),
                             ["only one class"]),
    "host-weights-negative": (lambda t: (t.tensor(X), t.tensor(Y), -np.ones(30)),
                              ["Negative"]),
    "host-labels-continuous": (lambda t: (t.tensor(X), Y * 0.5), ["continuous"]),
}


@pytest.mark.parametrize(("make", "needles"), list(TORCH_CASES.values()), ids=list(TORCH_CASES))
def test_bad_tensor_input_is_a_value_error(make, needles):
    torch = _torch()
    with pytest.raises(ValueError) as info:
        quick(backend="auto", standardize="overflows" in needles).fit(*make(torch))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_tensor_labels_given_as_strings_and_weights_as_a_scalar_train():
    torch = _torch()
    clf = quick(backend="auto").fit(torch.tensor(X), np.array(list("abc"))[Y], 2.0)
    assert list(clf.classes_) == ["a", "b", "c"]
    assert set(clf.predict(torch.tensor(X))) <= {"a", "b", "c"}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_tensors_train(dtype):
    torch = _torch()
    Xt = torch.tensor(X).to(getattr(torch, dtype))
    quick(backend="auto").fit(Xt, torch.tensor(Y))
    quick(backend="numpy").fit(Xt, torch.tensor(Y))


def test_a_tensor_that_requires_grad_trains_on_the_numpy_engine():
    torch = _torch()
    clf = quick(backend="numpy").fit(torch.tensor(X).requires_grad_(True), torch.tensor(Y))
    assert clf.coef_.shape == (3, 3)


@pytest.mark.parametrize(("X_bad", "needle"), [
    (np.full((2, 3), np.nan), "NaN"), (np.ones(3), "Expected 2D array, got 1D")])
def test_bad_tensor_at_predict_is_a_value_error(X_bad, needle):
    torch = _torch()
    clf = quick(backend="auto").fit(torch.tensor(X), torch.tensor(Y))
    with pytest.raises(ValueError, match=needle):
        clf.predict(torch.tensor(X_bad))


JAX_CASES = {
    "too-large": (lambda j: (j.asarray(X, dtype=j.float32) * 1e30, j.asarray(Y)),
                  ["too large for float32"]),
    "float-labels": (lambda j: (j.asarray(X), j.asarray(Y) * 0.5), ["continuous"]),
    "weights-wrong-length": (lambda j: (j.asarray(X), j.asarray(Y), j.ones(3)),
                             ["sample_weight.shape == (3,)"]),
    "weights-negative": (lambda j: (j.asarray(X), j.asarray(Y), -j.ones(30)), ["Negative"]),
}


@pytest.mark.parametrize(("make", "needles"), list(JAX_CASES.values()), ids=list(JAX_CASES))
def test_bad_jax_input_is_a_value_error(make, needles):
    jnp = _jax_numpy()
    with pytest.raises(ValueError) as info:
        quick(backend="auto").fit(*make(jnp))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


# --- the CLI ---------------------------------------------------------------------------------

from tests.test_bad_input import check_error, cli, snapshot  # noqa: E402

TRAIN_CSV = "a,b,label\n" + "".join(f"{i % 7}.5,{i % 3},{i % 2}\n" for i in range(40))


@pytest.fixture(scope="module")
def named_model(tmp_path_factory):
    """A model trained on a CSV whose columns are a, b (label: label)."""
    from smx.config import load_config
    from smx.runner import run

    root = tmp_path_factory.mktemp("named")
    (root / "d.csv").write_text(TRAIN_CSV)
    run(load_config({"data": {"name": "file", "path": str(root / "d.csv"),
                              "label_column": "label"}, "epochs": 1,
                     "output": str(root / "out")}), progress=False)
    return (root / "out" / "model.npz").read_bytes()


@pytest.mark.parametrize(("csv_text", "needles"), [
    ("b,a\n1,2\n", ["p.csv: the columns are the model's in another order (data: b, a; "
                    "model: a, b)"]),
    ("x,b\n1,2\n", ["p.csv: column(s) x are not the model's (it was trained on a, b)"]),
    ("b,a,label\n1,2,0\n", ["p.csv: the columns are the model's in another order"]),
])
def test_predict_refuses_columns_named_otherwise(csv_text, needles, named_model, tmp_path,
                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.npz").write_bytes(named_model)
    (tmp_path / "p.csv").write_text(csv_text)
    code, _, err = cli(["predict", "m.npz", "p.csv"], capsys)
    check_error(code, err, needles)
    (tmp_path / "p.csv").write_text("a,b\n1,2\n")  # the model's own names: predicted
    assert cli(["predict", "m.npz", "p.csv"], capsys)[0] == 0


@pytest.mark.parametrize(("target", "needle"), [("m.npz", "m.npz: is the model file"),
                                                ("p.csv", "p.csv: is the data file")])
def test_predict_never_writes_over_what_it_reads(target, needle, named_model, tmp_path,
                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.npz").write_bytes(named_model)
    (tmp_path / "p.csv").write_text("a,b\n1,2\n")
    before = snapshot(tmp_path)
    code, _, err = cli(["predict", "m.npz", "p.csv", "-o", target], capsys)
    check_error(code, err, [needle])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("argv", "needles"), [
    (["bench", "--only", "foo"], ["bench: argument --only: invalid choice: 'foo'",
                                  "smx bench --help"]),
    (["bench", "--rows", "many"], ["bench: argument --rows: invalid int value: 'many'"]),
    (["bench", "--budget", "nan"], ["--budget: must be 0 (no limit) or more, got nan"]),
    (["bench", "--budget", "inf"], ["--budget:", "got inf"]),
    (["bench", "--classes", "1"], ["--classes: must be at least 2, got 1"]),
    (["parity", "digits", "--dtype", "float16"], ["parity: argument --dtype: invalid choice"]),
    (["predict", "m.npz"], ["predict: the following arguments are required: data"]),
    # the overrides are optional: only the config is named as missing (issue 21, item 11)
    (["parity"], ["parity: the following arguments are required: config (see"]),
    (["frobnicate"], ["argument command: invalid choice: 'frobnicate'"]),
    (["run", "--resume"], ["run: argument --resume: expected one argument"]),
])
def test_argument_errors_are_one_line_without_usage(argv, needles, tmp_path, monkeypatch,
                                                    capsys):
    monkeypatch.chdir(tmp_path)
    try:
        code, _, err = cli(argv, capsys)
    except SystemExit as exc:  # argparse's errors end the process
        code, err = exc.code, capsys.readouterr().err
    check_error(code, err, needles)
    assert len(err.strip().splitlines()) == 1, err  # no usage block
    assert snapshot(tmp_path) == {}


def test_running_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys):
    import smx.bench

    def too_big(*args, **kwargs):
        np.empty(2**47)  # 1 PiB: numpy's _ArrayMemoryError, as smx bench --rows 100000000000 gives

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(smx.bench, "run_bench", too_big)
    code, _, err = cli(["bench", "--quick", "-q"], capsys)
    check_error(code, err, ["bench: out of memory (", "Unable to allocate 1.00 PiB",
                            "use smaller sizes"])


@pytest.mark.parametrize(("weights", "dtype", "needle"), [
    (1e308, "float64", "sums to inf"), (1e-320, "float64", "float64 training can sum"),
    (1e37, "float32", "float32 training can sum"), (1e-44, "float32", "sums to 1.3e-43")])
def test_weights_the_run_cannot_sum_are_one_line(weights, dtype, needle, tmp_path, monkeypatch,
                                                 capsys):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(20, 2)), y=np.arange(20) % 2,
             w=np.full(20, weights))
    before = snapshot(tmp_path)
    code, _, err = cli(["run", "data.name=file", "data.path=d.npz", "data.sample_weight=w",
                        f"dtype={dtype}", "epochs=1", "output=out", "--quiet"], capsys)
    check_error(code, err, ["data.sample_weight: sample_weight", needle])
    assert snapshot(tmp_path) == before


@pytest.mark.filterwarnings("error")
def test_half_and_single_precision_checks_print_no_warning():
    """A RuntimeWarning is a second stderr line (and a traceback under -W error)."""
    from smx.datasets.split import check_standardized, check_xy

    check_xy(np.ones((4, 2)), np.array([0, 1, 0, 1], dtype=np.float16), "d.npz")
    X32 = np.ones((4, 2), dtype=np.float32)
    check_standardized(X32, np.arange(4), dtype="float64", where="d.npz", columns=None,
                       raw=X32, standardized=False)


@pytest.mark.parametrize(("override", "needle"), [
    ("loss.class_weight={0: .nan}", "loss.class_weight.0: Input should be a finite number"),
    ("loss.class_weight={0: x}", "loss.class_weight.0: Input should be a valid number"),
    ("loss.class_weight=[1, 2]", "loss.class_weight: Input should be 'balanced' or a valid "
                                 "dictionary (got [1, 2])"),
    ("loss.class_weight=heavy", "loss.class_weight: Input should be 'balanced' or a valid "
                                "dictionary (got 'heavy')"),
])
def test_a_value_that_fits_no_member_of_a_union_names_the_problem(override, needle, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", "data.name=iris", override, "output=out", "--quiet"], capsys)
    line = check_error(code, err, [needle])
    assert "literal[" not in line and "dict[" not in line


# --- partitioned sources (the Dask engine's): checked from their headers, and per chunk --------

SX = rng.normal(size=(200, 3)) + 3
SY = np.arange(200) % 3


def _npy_source(tmp_path, X=SX, y=SY):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return ["data.path=X.npy", "data.labels=y.npy"]


def _parquet_source(tmp_path, **columns):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    cols = {"f0": SX[:, 0], "f1": SX[:, 1], "label": SY, **columns}
    pq.write_table(pa.table({k: v for k, v in cols.items() if v is not None}),
                   tmp_path / "d.parquet", row_group_size=50)
    return ["data.path=d.parquet", "data.label_column=label"]


def _zarr_source(tmp_path, X=SX, y=SY):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    group.create_array("X", data=X, chunks=(64, *X.shape[1:]))
    group.create_array("y", data=y, chunks=(64,))
    return ["data.path=d.zarr"]


SOURCE_CASES = {
    "npy-string-features": (lambda p: _npy_source(p, X=np.full((200, 3), "a")),
                            ["X.npy: features must be real numbers, got dtype <U1"]),
    "npy-complex-features": (lambda p: _npy_source(p, X=SX + 1j),
                             ["X.npy: features must be real numbers, got dtype complex128"]),
    "npy-complex-labels": (lambda p: _npy_source(p, y=SY + 0j),
                           ["y.npy: labels must be integers or strings, got dtype complex128"]),
    "npy-nan-label": (lambda p: _npy_source(p, y=np.r_[SY[:-1], np.nan]),
                      ["the labels hold NaN/inf"]),
    "npy-label-beyond-int64": (lambda p: _npy_source(p, y=SY * 1e30),
                               ["label 1e+30 is too large for a class number"]),
    "npy-standardising-overflows": (lambda p: _npy_source(p, X=SX * 1e300),
                                    ["column 0 holds", "standardising it overflows float64"]),
    "npy-too-large-unstandardised": (lambda p: [*_npy_source(p, X=SX * 1e30),
                                                "data.standardize=false"],
                                     ["column 0 holds", "too large for float32 training"]),
    "parquet-string-feature": (lambda p: _parquet_source(p, s=np.array(["a"] * 200)),
                               ["d.parquet: column 's': must hold numbers, got string"]),
    "parquet-list-feature": (lambda p: _parquet_source(p, f1=[[1.0]] * 200),
                             ["d.parquet: column 'f1': must hold numbers, got list"]),
    "parquet-null-label": (lambda p: _parquet_source(p, label=[0, 1, 2] * 40 + [None] * 80),
                           ["d.parquet: empty label in column 'label' (row 120)"]),
    "parquet-null-string-label": (lambda p: _parquet_source(p, label=["a", "b", None] * 66
                                                            + ["a", "b"]),
                                  ["d.parquet: empty label in column 'label' (row 2)"]),
    "parquet-only-labels": (lambda p: _parquet_source(p, f0=None, f1=None),
                            ["d.parquet: no feature columns (columns: label)"]),
    "zarr-string-features": (lambda p: _zarr_source(p, X=np.full((200, 3), "a")),
                             ["d.zarr (X): features must be real numbers"]),
    # issue 22: every reader validated as the file readers are
    "npy-nan-label-in-a-later-chunk": (
        lambda p: _npy_source(p, y=np.r_[SY[:120].astype(float), np.nan, SY[121:]]),
        ["y.npy: the labels hold NaN/inf; first at row 120"]),
    "parquet-nan-label": (lambda p: _parquet_source(p, label=np.r_[SY[:130].astype(float),
                                                                  np.inf, SY[131:]]),
                          ["d.parquet (column 'label'): the labels hold NaN/inf; first at "
                           "row 130"]),
    "zarr-fractional-label": (lambda p: _zarr_source(p, y=np.r_[SY[:70] + 0.0, 1.5, SY[71:]]),
                              ["d.zarr (y): labels look continuous (row 70 holds 1.5)"]),
    "zarr-damaged-chunk": (lambda p: _damaged_zarr_chunk(p),
                           ["d.zarr: rows 50..99 cannot be read: the chunk is damaged"]),
    "zarr-missing-chunk": (lambda p: _missing_zarr_chunk(p),
                           ["d.zarr (X): 1 of 4 chunks are missing from the store",
                            "data.missing_chunks: fill"]),
    "zarr-fifo-chunk": (lambda p: _fifo_in_zarr(p, "X/c/1/0"),
                        ["X/c/1/0: is a FIFO (named pipe); a Zarr store holds only files"]),
    "zarr-fifo-metadata": (lambda p: _fifo_in_zarr(p, "zarr.json"),
                           ["zarr.json: is a FIFO (named pipe)"]),
    "zarr-is-a-file": (lambda p: [(p / "d.zarr").write_text("x") and "data.path=d.zarr"],
                       ["d.zarr: is a file, expected a Zarr group (a folder)"]),
    "npy-fifo": (lambda p: _fifo_npy(p), ["X.npy: is a FIFO (named pipe), expected an .npy "
                                          "file"]),
    "parquet-is-a-directory": (lambda p: [(p / "d.parquet").mkdir() or "data.path=d.parquet",
                                          "data.label_column=label"],
                               ["d.parquet: is a directory, expected a Parquet file"]),
    "parquet-damaged-page": (lambda p: _damaged_parquet_page(p),
                             ["d.parquet: rows", "cannot be read"]),
}


def _damaged_zarr_chunk(tmp_path):
    args = _zarr_source(tmp_path, X=SX, y=SY)
    chunk = tmp_path / "d.zarr" / "X" / "c" / "1" / "0"
    chunk.write_bytes(b"\x00garbage" * 8)  # not a valid compressed chunk
    return args


def _missing_zarr_chunk(tmp_path):
    args = _zarr_source(tmp_path, X=SX, y=SY)
    (tmp_path / "d.zarr" / "X" / "c" / "2" / "0").unlink()
    return args


def _fifo_in_zarr(tmp_path, entry):
    args = _zarr_source(tmp_path, X=SX, y=SY)
    target = tmp_path / "d.zarr" / entry
    target.unlink()
    os.mkfifo(target)
    return args


def _fifo_npy(tmp_path):
    args = _npy_source(tmp_path)
    (tmp_path / "X.npy").unlink()
    os.mkfifo(tmp_path / "X.npy")
    return args


def _damaged_parquet_page(tmp_path):
    """A data page whose bytes changed after writing: the page checksum catches it."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"f0": SX[:, 0], "f1": SX[:, 1], "label": SY}),
                   tmp_path / "d.parquet", row_group_size=50, write_page_checksum=True,
                   compression="none")
    raw = bytearray((tmp_path / "d.parquet").read_bytes())
    needle = np.asarray(SX[60:62, 0]).tobytes()  # values of row group 2, column f0
    at = bytes(raw).index(needle)
    raw[at:at + 8] = np.float64(3.0).tobytes()  # a plausible value, not a huge one
    (tmp_path / "d.parquet").write_bytes(bytes(raw))
    return ["data.path=d.parquet", "data.label_column=label"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # zarr: no v3 spec for strings
@pytest.mark.parametrize(("make", "needles"), list(SOURCE_CASES.values()),
                         ids=list(SOURCE_CASES))
def test_bad_partitioned_sources_are_one_line(make, needles, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = make(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = cli(["run", "data.name=partitioned", *args, "data.chunk_rows=50",
                        "backend=numpy", "epochs=1", "output=out", "--quiet"], capsys)
    check_error(code, err, needles)
    assert snapshot(tmp_path) == before


def test_a_chunk_a_dask_worker_cannot_read_is_one_line_and_no_worker_traceback(
        tmp_path, monkeypatch, capfd):
    """The chunk's error travels back in its statistics: a worker that raised would log
    "Compute Failed" and a traceback on the terminal's stderr."""
    pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    args = _parquet_source(tmp_path, label=[0, 1, 2] * 40 + [None] * 80)
    code = main_cli(["run", "data.name=partitioned", *args, "backend_options.chunk_rows=50",
                     "backend=dask", "backend_options.cluster=local", "backend_options.workers=2",
                     "backend_options.memory_limit=400MiB", "epochs=1", "output=out",
                     "--quiet"])
    err = capfd.readouterr().err
    check_error(code, err, ["d.parquet: empty label in column 'label' (row 120)"])
    assert "Compute Failed" not in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def main_cli(argv):
    from smx.cli import main

    return main(argv)


def test_bytes_labels_are_predicted_as_text(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", X=np.r_[SX[:, :2], SX[:, :2] + 9][:60], y=np.array(
        [b"ant", b"bee", b"\xff"] * 20))
    assert cli(["run", "data.name=file", "data.path=d.npz", "epochs=1", "output=out",
                "--quiet"], capsys)[0] == 0
    np.save(tmp_path / "X.npy", SX[:5, :2])
    code, out, err = cli(["predict", "out/model.npz", "X.npy", "--proba"], capsys)
    assert code == 0, err
    assert "b'" not in out and out.splitlines()[0] == "prediction,p_ant,p_bee,p_\\xff"


def test_a_missing_zarr_chunk_reads_as_fill_only_when_asked(tmp_path, monkeypatch, capsys):
    """data.missing_chunks: fill reads a missing chunk as Zarr's fill value, as Zarr
    does: the user asked for it, so the run trains (and says nothing is wrong)."""
    monkeypatch.chdir(tmp_path)
    args = _missing_zarr_chunk(tmp_path)
    code, _, err = cli(["run", "data.name=partitioned", *args, "data.chunk_rows=50",
                        "data.missing_chunks=fill", "backend=numpy", "epochs=1",
                        "output=out", "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "model.npz").is_file()
