"""backend: dask on a real multi-process LocalCluster (no mocks): options, full-batch training
equal to NumPy, the cluster's lifetime, and a task count that does not grow with the epochs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask.array", reason="Dask is not installed (pip install 'smx[dask]')")
distributed = pytest.importorskip(
    "distributed", reason="distributed is not installed (pip install 'smx[dask]')")

from smx.backends.dask_backend import FAN_IN, DaskBackend  # noqa: E402
from smx.config import load_config  # noqa: E402
from smx.errors import BackendUnavailable, ConfigError  # noqa: E402
from smx.losses import CrossEntropy  # noqa: E402
from smx.objective import Objective  # noqa: E402
from smx.plugins import Plugins  # noqa: E402
from smx.runner import load_data  # noqa: E402
from smx.training import Trainer, train  # noqa: E402
from smx.types import Block  # noqa: E402

PLUGINS = Plugins(entry_points=False)
DATA = {"name": "synthetic", "n": 400, "val_fraction": 0.1, "test_fraction": 0.1}  # 320 train


@pytest.fixture(scope="module")
def scheduler():
    """One real cluster for the module: 2 worker processes, small memory limits."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="300MiB", dashboard_address=None) as cluster:
        yield cluster


def config(backend: str, scheduler=None, **extra):
    options = {"chunk_rows": 40}
    if scheduler is not None:
        options["cluster"] = scheduler.scheduler_address
    base = {"data": DATA, "epochs": 8, "dtype": "float64", "backend": backend,
            "optimizer": {"name": "lbfgs"},
            **({"backend_options": options} if backend == "dask" else {})}
    return load_config({**base, **extra}, plugins=PLUGINS)


def fit(cfg):
    backend = PLUGINS.backend(cfg.backend)
    try:
        return train(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    finally:
        backend.release("cpu")


@pytest.mark.parametrize("options, where", [
    ({"cluster": "localhost"}, "cluster"),
    ({"workers": 0}, "workers"),
    ({"chunk_rows": 0}, "chunk_rows"),
    ({"nodes": 3}, "nodes"),
])
def test_options_are_validated(options, where):
    with pytest.raises(ConfigError, match=f"backend_options.*{where}"):
        load_config({"backend": "dask", "backend_options": options}, plugins=PLUGINS)


@pytest.mark.parametrize("optimizer", [
    {"name": "lbfgs"},
    {"name": "adam", "lr": 0.05},  # first-order with batch_size >= n: one evaluation per step
])
def test_full_batch_training_matches_numpy(scheduler, optimizer):
    extra = {"optimizer": optimizer, "batch_size": 320}
    ref, got = fit(config("numpy", **extra)), fit(config("dask", scheduler, **extra))
    for name in ("W", "b"):
        np.testing.assert_allclose(got.params[name], ref.params[name], rtol=0, atol=1e-10)
        assert got.params[name].dtype == np.float64
    assert [r["train_loss"] for r in got.history] == pytest.approx(
        [r["train_loss"] for r in ref.history], rel=1e-12)
    assert got.history[-1]["val_accuracy"] == ref.history[-1]["val_accuracy"]


def test_minibatches_gathered_to_the_client_match_numpy(scheduler):
    extra = {"optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64, "epochs": 2}
    ref, got = fit(config("numpy", **extra)), fit(config("dask", scheduler, **extra))
    np.testing.assert_allclose(got.params["W"], ref.params["W"], rtol=0, atol=1e-12)


def count_partials(backend: DaskBackend) -> list[int]:
    calls = []
    inner = backend.partial

    def partial(fn, data):
        calls.append(1)
        return inner(fn, data)

    backend.partial = partial  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("optimizer", [{"name": "adam", "lr": 0.05}, {"name": "lbfgs"}])
def test_tasks_per_evaluation_do_not_grow_with_the_epochs(scheduler, optimizer):
    cfg = config("dask", scheduler, optimizer=optimizer, batch_size=320,
                 backend_options={"cluster": scheduler.scheduler_address, "chunk_rows": 16})
    backend = DaskBackend()
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    try:
        chunks = 320 // 16
        per_call = chunks + -(-chunks // FAN_IN) + 1  # 20 partials, 3 sums, 1 sum of sums
        client, calls = backend.client, count_partials(backend)
        tasks, futures = [], []
        for _ in range(6):
            before = len(calls)
            with distributed.get_task_stream(client) as ts:
                trainer.run_epoch()
            tasks.append(len(ts.data) / (len(calls) - before))
            futures.append(len(client.futures))
        assert tasks == [per_call] * 6
        assert futures == [futures[0]] * 6  # only the placed chunks stay referenced
    finally:
        trainer.close()
        backend.release("cpu")


def test_an_existing_scheduler_is_neither_started_nor_stopped(scheduler):
    fit(config("dask", scheduler, epochs=1))
    with distributed.Client(scheduler.scheduler_address, set_as_default=False) as client:
        assert len(client.scheduler_info()["workers"]) == 2


def test_cluster_local_is_started_for_the_run_and_stopped_after():
    cfg = config("dask", epochs=2, backend_options={
        "cluster": "local", "workers": 2, "memory_limit": "300MiB", "chunk_rows": 100})
    backend = DaskBackend()
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    cluster = backend.cluster
    assert len(cluster.scheduler_info["workers"]) == 2
    result = trainer.fit()
    assert np.isfinite(result.params["W"]).all()
    trainer.close()
    backend.release("cpu")
    assert backend.cluster is None and backend.client is None
    assert cluster.status.name == "closed"


def test_an_unreachable_scheduler_is_one_line():
    cfg = config("dask", backend_options={"cluster": "tcp://127.0.0.1:9", "timeout": 1})
    with pytest.raises(BackendUnavailable) as info:
        Trainer(cfg, load_data(cfg, PLUGINS), DaskBackend(), "cpu", PLUGINS)
    text = str(info.value)
    assert "\n" not in text and "tcp://127.0.0.1:9" in text and "backend_options.cluster" in text


def test_npy_rows_are_read_on_the_workers(scheduler, tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(250, 6)), rng.integers(0, 3, size=250)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    cfg = config("dask", scheduler)
    backend = DaskBackend()
    backend.configure(backend.options.model_validate(cfg.backend_options))
    try:
        with distributed.get_task_stream(backend._connected()) as ts:
            data = backend.place_npy(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"),
                                     "float64")
            xs, ys, _ = backend._chunks[data.X.name]
            backend.client.gather(xs + ys)
        assert sum(t["key"].startswith("_read_rows") for t in ts.data) == 2 * 7  # 250 / 40
        objective = Objective(CrossEntropy(), 0.1)
        params = {"W": rng.normal(size=(6, 3)), "b": np.zeros(3)}
        got = objective.finish(backend.partial(lambda b: objective.partial(params, b), data),
                               params)
        ref = objective.value_and_grad(params, Block(X.astype(np.float32).astype(np.float64), y))
        assert float(got[0]) == pytest.approx(float(ref[0]), rel=1e-13)
        np.testing.assert_allclose(got[1]["W"], ref[1]["W"], rtol=1e-12, atol=1e-14)
    finally:
        backend.release("cpu")
