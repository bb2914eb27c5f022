"""End to end without detours: the run's dtype from file to device, no copy without a split,
standardization in place, scikit-learn's split without scikit-learn, imports only when needed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from smx.datasets.split import prepare, stratified_split


def _data(n=300, d=5, k=3, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(3.0, 2.0, size=(n, d)).astype(dtype), rng.integers(0, k, n))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_data_keeps_its_dtype(dtype):
    X, y = _data(dtype=dtype)
    s = prepare(X, y, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert s.X_train.dtype == s.X_val.dtype == s.X_test.dtype == np.dtype(dtype)


def test_run_dtype_applies_to_every_part():
    X, y = _data(dtype=np.float64)
    s = prepare(X, y, val_fraction=0.2, test_fraction=0.1, seed=0, dtype="float32")
    assert s.X_train.dtype == s.X_val.dtype == s.X_test.dtype == np.float32


def test_no_split_no_standardization_is_the_callers_array():
    X, y = _data()
    s = prepare(X, y, val_fraction=0, test_fraction=0, seed=0, standardize=False,
                dtype="float32")
    assert s.X_train is X


def test_standardized_in_place_only_when_owned():
    X, y = _data()
    before = X.copy()
    s = prepare(X, y, val_fraction=0, test_fraction=0, seed=0, dtype="float32")
    assert not np.shares_memory(s.X_train, X)
    np.testing.assert_array_equal(X, before)
    t = prepare(X, y, val_fraction=0, test_fraction=0, seed=0, dtype="float32", owned=True)
    assert np.shares_memory(t.X_train, X)
    np.testing.assert_array_equal(t.X_train, s.X_train)


def test_float32_standardization_matches_float64():
    """float64 accumulators: the same numbers as standardizing an upcast copy, then casting."""
    X, y = _data(n=5000, d=7)
    X += 1e4  # a large offset, where float32 sums would lose digits
    s = prepare(X, y, val_fraction=0.2, test_fraction=0.1, seed=1, dtype="float32")
    r = prepare(X.astype(np.float64), y, val_fraction=0.2, test_fraction=0.1, seed=1)
    np.testing.assert_allclose(s.standardizer.mean, r.standardizer.mean, rtol=1e-12)
    np.testing.assert_allclose(s.standardizer.scale, r.standardizer.scale, rtol=1e-9)
    np.testing.assert_array_equal(s.X_train, r.X_train.astype(np.float32))
    np.testing.assert_array_equal(s.X_test, r.X_test.astype(np.float32))


@pytest.mark.parametrize(("n", "k", "size", "seed"), [
    (100, 2, 0.25, 0), (1797, 10, 0.2, 3), (150, 3, 0.15, 7), (1000, 7, 0.5, 11),
    (53, 4, 0.3, 2**32 - 1), (500, 3, 0.17647, 5),
])
def test_stratified_split_is_scikit_learns(n, k, size, seed):
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed % 1000)
    y = rng.integers(0, k, n)
    y[:2 * k] = np.repeat(np.arange(k), 2)  # every class at least twice
    train, test = stratified_split(y, size, seed)
    ref_train, ref_test = train_test_split(np.arange(n), test_size=size, random_state=seed,
                                           stratify=y)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(test, ref_test)


def test_stratified_split_refuses_as_scikit_learn_does():
    from sklearn.model_selection import train_test_split

    for y, size in [(np.array([0, 0, 1, 1, 2]), 0.4), (np.arange(10) % 5, 0.2)]:
        with pytest.raises(ValueError) as ours:
            stratified_split(y, size, 0)
        with pytest.raises(ValueError) as theirs:
            train_test_split(np.arange(len(y)), test_size=size, random_state=0, stratify=y)
        assert str(ours.value) == str(theirs.value)


def _modules_after(code: str, cwd) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; "
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=cwd, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_run_on_a_file_imports_neither_scikit_learn_nor_pyplot(tmp_path):
    X, y = _data()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    loaded = _modules_after(
        "from smx.cli import main\n"
        "assert main(['run', '-q', 'data.name=file', 'data.path=d.npz', 'backend=numpy', "
        "'epochs=2', 'output=out']) == 0", tmp_path)
    assert (tmp_path / "out" / "loss.png").is_file()
    # the plot is drawn by its own process, which imported matplotlib while the run trained
    assert not {"sklearn", "scipy", "matplotlib"} & loaded


def test_loss_plot_is_drawn_here_when_its_process_fails(tmp_path, monkeypatch):
    """The plot process is an optimisation only: killed, the run draws the plot itself."""
    from smx import plotting, runner
    from smx.config import load_config

    started = []
    real = plotting.start

    def preload_then_kill():
        real()
        started.append(plotting._worker)
        plotting._worker.kill()

    monkeypatch.setattr(runner, "preload_plotting", preload_then_kill)
    cfg = load_config({"data": {"name": "iris"}, "backend": "numpy", "epochs": 2,
                       "output": str(tmp_path / "run")})
    runner.run(cfg, progress=False)
    assert started and started[0].returncode is not None and plotting._worker is None
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("how", ["diverges", "bad data"])
def test_a_failed_run_leaves_no_plot_process(tmp_path, monkeypatch, how):
    from smx import plotting, runner
    from smx.config import load_config
    from smx.errors import DataError, DivergenceError

    started = []
    real = plotting.start
    monkeypatch.setattr(runner, "preload_plotting",
                        lambda: (real(), started.append(plotting._worker)))
    data = {"name": "iris"}
    if how == "bad data":
        (tmp_path / "d.csv").write_text("a,b,label\n1,2,x\n")
        data = {"name": "file", "path": str(tmp_path / "d.csv")}
    cfg = load_config({"data": data, "backend": "numpy", "epochs": 3,
                       "optimizer": {"name": "sgd", "lr": 1e30},
                       "output": str(tmp_path / "run")})
    with pytest.raises(DivergenceError if how == "diverges" else DataError):
        runner.run(cfg, progress=False)
    assert plotting._worker is None
    assert started and started[0].returncode is not None  # stopped, not left to finish
    assert not (tmp_path / "run" / "loss.png").exists()


def test_smx_run_starts_the_plot_process_before_anything_else(monkeypatch):
    """The CLI starts it first (its import then overlaps the run's); a config error stops
    it at once."""
    from smx import cli, plotting

    seen = []
    monkeypatch.setattr(plotting, "start", lambda: seen.append("start"))
    monkeypatch.setattr(plotting, "discard", lambda: seen.append("discard"))
    assert cli.main(["run", "no-such-config.yaml"]) == 2
    assert seen == ["start", "discard"]


def test_bundled_dataset_without_scikit_learn(tmp_path):
    loaded = _modules_after(
        "from smx.datasets.builtin import _sklearn\nX, y = _sklearn('digits')()\n"
        "assert X.shape == (1797, 64)", tmp_path)
    assert "sklearn" not in loaded


@pytest.mark.parametrize("name", ["digits", "iris", "wine"])
def test_bundled_files_read_as_scikit_learn_reads_them(name):
    from sklearn import datasets

    from smx.datasets.builtin import _read_bundled

    X, y = _read_bundled(name)
    bunch = getattr(datasets, f"load_{name}")()
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)


def test_help_imports_no_pydantic(tmp_path):
    loaded = _modules_after(
        "import contextlib, io\nfrom smx.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])", tmp_path)
    assert not {"pydantic", "pluggy", "numpy"} & loaded


def test_loss_plot_comes_after_the_summary(tmp_path, monkeypatch):
    from smx import runner
    from smx.config import load_config

    seen = []
    real = runner.plot_losses
    monkeypatch.setattr(runner, "plot_losses", lambda history, path, *marked: (
        seen.append((path.parent / "summary.json").is_file()), real(history, path, *marked)))
    cfg = load_config({"data": {"name": "iris"}, "backend": "numpy", "epochs": 2,
                       "output": str(tmp_path / "run")})
    runner.run(cfg, progress=False)
    assert seen == [True] and (tmp_path / "run" / "loss.png").is_file()


def test_no_copy_from_dataset_to_device():
    """No split, no standardization, the run's dtype: the engine trains on the loader's array."""
    import smx
    from smx.config import load_config
    from smx.datasets.load import load_data
    from smx.plugins import Plugins
    from smx.training import Trainer
    from smx.types import DatasetSpec

    X, y = _data(n=200)

    class Held:
        @smx.hookimpl
        def smx_datasets(self):
            yield DatasetSpec("held", lambda: (X, y))

    plugins = Plugins(entry_points=False)
    plugins.register(Held(), "held")
    cfg = load_config({"data": {"name": "held", "val_fraction": 0, "test_fraction": 0,
                                "standardize": False}, "backend": "numpy",
                       "optimizer": {"name": "lbfgs"}, "epochs": 1}, plugins=plugins)
    trainer = Trainer(cfg, load_data(cfg, plugins), plugins.backend("numpy"), "cpu", plugins)
    assert np.shares_memory(trainer.train_data.X, X)
    trainer.fit()
