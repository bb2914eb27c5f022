"""Training end to end, in process: accuracy, backends, and host round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from smx.backends.numpy_backend import NumpyBackend
from smx.config import load_config
from smx.datasets.load import load_data
from smx.plugins import Plugins
from smx.runner import run
from smx.training import train
from tests.conftest import counting

PLUGINS = Plugins(entry_points=False)
ROOT_CFG = "configs/digits.yaml"


def test_digits_reaches_95_percent(in_tmp, request):
    cfg = load_config(request.config.rootpath / ROOT_CFG, ["output=out"], plugins=PLUGINS)
    outcome = run(cfg, plugins=PLUGINS, progress=False)
    assert outcome.summary["test_accuracy"] >= 0.95
    assert outcome.summary["backend"] == "numpy"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_array_api_strict_trains_like_numpy(dtype):
    base = {"data": {"name": "iris"}, "epochs": 5, "batch_size": 16, "dtype": dtype,
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}
    results = {}
    for backend in ("numpy", "array-api-strict"):
        cfg = load_config({**base, "backend": backend}, plugins=PLUGINS)
        splits = load_data(cfg, PLUGINS)
        results[backend] = train(cfg, splits, PLUGINS.backend(backend), "cpu", PLUGINS)
    a, b = results["numpy"], results["array-api-strict"]
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(a.params["W"], b.params["W"], rtol=tol, atol=tol)
    assert a.params["W"].dtype == np.dtype(dtype)
    assert [r["train_loss"] for r in a.history] == pytest.approx(
        [r["train_loss"] for r in b.history], rel=tol)


CountingBackend = counting(NumpyBackend)


@pytest.mark.parametrize("log_every", [1, 7, 1000])
def test_loss_is_read_only_every_log_every_steps(log_every):
    cfg = load_config({"data": {"name": "synthetic", "n": 1000, "val_fraction": 0.1,
                                "test_fraction": 0.1},
                       "epochs": 3, "batch_size": 10, "log_every": log_every}, plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    backend = CountingBackend()
    logged = []
    result = train(cfg, splits, backend, "cpu", PLUGINS, on_log=lambda s, v: logged.append(s))
    steps_per_epoch = 80
    assert result.steps == 3 * steps_per_epoch
    # per epoch: the running loss (divergence guard), val loss and accuracy in one read,
    # train loss and accuracy in one read; at the end: W and b
    expected = result.steps // log_every + 3 * 3 + 2
    assert backend.to_host_calls == expected
    assert logged == list(range(log_every, result.steps + 1, log_every))


def test_same_seed_same_result_other_seed_differs():
    def fit(seed):
        cfg = load_config({"data": {"name": "wine"}, "epochs": 3, "seed": seed},
                          plugins=PLUGINS)
        return train(cfg, load_data(cfg, PLUGINS), NumpyBackend(), "cpu", PLUGINS).params["W"]

    np.testing.assert_array_equal(fit(1), fit(1))
    assert not np.array_equal(fit(1), fit(2))


def test_batch_size_larger_than_training_set_is_the_whole_set_as_in_the_estimator(capsys):
    """The CLI does what SoftmaxRegression does (one full-batch step per epoch), and says so."""
    cfg = load_config({"data": {"name": "iris"}, "batch_size": 5000, "epochs": 2},
                      plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    n = len(splits.y_train)
    assert f"smx: note: batch_size 5000 is larger than the training set ({n} rows)" \
        in capsys.readouterr().err
    result = train(cfg, splits, NumpyBackend(), "cpu", PLUGINS)
    assert result.steps == 2
