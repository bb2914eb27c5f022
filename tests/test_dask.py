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
from smx.datasets.load import load_data  # noqa: E402
from smx.errors import BackendUnavailable, ConfigError, DataError  # noqa: E402
from smx.losses import CrossEntropy  # noqa: E402
from smx.objective import Objective  # noqa: E402
from smx.plugins import Plugins  # noqa: E402
from smx.training import Trainer, train  # noqa: E402
from smx.types import Block  # noqa: E402

PLUGINS = Plugins(entry_points=False)
DATA = {"name": "synthetic", "n": 400, "val_fraction": 0.1, "test_fraction": 0.1}  # 320 train


@pytest.fixture(scope="module")
def scheduler():
    """One real cluster for the module: 2 worker processes. Their memory_limit leaves room
    for the libraries the tests' tasks import (pyarrow, zarr, pandas where installed): a
    worker over 80% of its limit pauses, and one paused by imported code never resumes
    (300 MiB did that once pyarrow and zarr were in: the old ZARR_HANG)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="1GiB", dashboard_address=":0") as cluster:
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
    ({"chunks": "torch"}, "chunks"),
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


#: mini-batch SGD on Dask draws other batches than NumPy (within chunks): the final
#: objectives agree to this relative tolerance (documented in docs/dask.md)
MINIBATCH_RTOL = 0.02


def test_minibatches_are_drawn_within_chunks_and_stepped_on_the_workers(scheduler):
    extra = {"optimizer": {"name": "sgd", "lr": 0.2}, "batch_size": 16, "epochs": 10}
    ref_cfg, cfg = config("numpy", **extra), config("dask", scheduler, **extra)
    splits = load_data(ref_cfg, PLUGINS)
    ref = train(ref_cfg, splits, PLUGINS.backend("numpy"), "cpu", PLUGINS)
    backend = DaskBackend()
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    try:
        sizes = trainer.train_data.X.chunks[0]  # 8 chunks of 40 rows
        order, bounds = backend.batch_order(trainer.train_data, 16, np.random.default_rng(1))
        assert sorted(order.tolist()) == list(range(320)) and len(bounds) == 8 * 3
        chunk_of = np.repeat(np.arange(len(sizes)), sizes)
        assert all(len(set(chunk_of[order[a:b]])) == 1 for a, b in bounds)
        with distributed.get_task_stream(backend.client) as ts:
            got = trainer.fit()
    finally:
        trainer.close()
        backend.release("cpu")
    names = task_names(ts)
    steps = 10 * 3 * 8
    assert names.count("_chunk_step") == steps and got.steps == steps  # each step a task
    objective = Objective(CrossEntropy(), got.l2)
    data = Block(splits.X_train, splits.y_train)
    final = [float(objective.value_and_grad(r.params, data)[0]) for r in (ref, got)]
    assert final[1] == pytest.approx(final[0], rel=MINIBATCH_RTOL)


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
    calls = count_partials(backend)  # before the Trainer: its step holds the engine's partial
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    try:
        chunks = 320 // 16
        per_call = chunks + -(-chunks // FAN_IN) + 1  # 20 partials, 3 sums, 1 sum of sums
        client = backend.client
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


def test_cluster_local_is_started_for_the_run_and_stopped_after(recwarn):
    import socket

    cfg = config("dask", epochs=2, backend_options={
        "cluster": "local", "workers": 2, "memory_limit": "300MiB", "chunk_rows": 100})
    backend = DaskBackend()
    with socket.socket() as taken:  # another cluster's dashboard on the default port
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("", 8787))
            taken.listen()
        except OSError:
            pass  # taken already: the same situation
        trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    assert not [w for w in recwarn if "already in use" in str(w.message)]
    cluster = backend.cluster
    assert len(cluster.scheduler_info["workers"]) == 2
    result = trainer.fit()
    assert np.isfinite(result.params["W"]).all()
    trainer.close()
    backend.release("cpu")
    assert backend.cluster is None and backend.client is None
    assert cluster.status.name == "closed"


def test_workers_paused_for_memory_are_one_line_not_a_hang():
    """Every worker over Dask's pause threshold (here 1% of memory_limit, so at once):
    smx's wait ends with one line naming memory_limit after backend_options.timeout."""
    import dask

    with dask.config.set({"distributed.worker.memory.pause": 0.01}), distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, memory_limit="1GiB",
            dashboard_address=":0") as cluster:
        client = distributed.Client(cluster, set_as_default=False)
        client.wait_for_workers(1, timeout=30)
        cfg = config("dask", cluster, backend_options={
            "cluster": cluster.scheduler_address, "timeout": 1, "chunk_rows": 100})
        backend = DaskBackend()
        try:
            with pytest.raises(BackendUnavailable) as info:
                train(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
        finally:
            backend.release("cpu")
            client.close()
    text = str(info.value)
    assert "\n" not in text and "paused" in text and "backend_options.memory_limit" in text


def test_gpu_chunks_without_their_libraries_are_one_line():
    """cluster: local-cuda (CuPy chunks) where CuPy or dask-cuda is missing: one line naming
    what to install, before any cluster starts."""
    cupy_missing = PLUGINS.get("backend", "cupy").unavailable_reason()
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        pass
    else:
        if cupy_missing is None:
            pytest.skip("CuPy and dask-cuda are both usable here: nothing is missing")
    cfg = config("dask", backend_options={"cluster": "local-cuda"})
    assert cfg.backend_options["cluster"] == "local-cuda"
    backend = DaskBackend()
    with pytest.raises(BackendUnavailable) as info:
        Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    text = str(info.value)
    assert "\n" not in text and backend.cluster is None
    if cupy_missing:
        assert "backend_options.chunks" in text and "CuPy" in text
    else:
        assert "backend_options.cluster" in text and "pip install dask-cuda" in text


@pytest.mark.gpu
def test_cupy_chunks_on_a_local_cuda_cluster_train_like_numpy():
    """dask-cuda's LocalCUDACluster, one worker per GPU, each chunk a CuPy array on its
    worker's GPU and the parameters on the client's first GPU: lbfgs ends where NumPy does."""
    pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (pip install dask-cuda)")
    cfg = config("dask", backend_options={"cluster": "local-cuda", "chunk_rows": 40})
    ref = fit(config("numpy"))
    backend = DaskBackend()
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    try:
        xs = backend._chunks[trainer.train_data.X.name][0]
        kinds = backend.client.gather(backend.client.map(lambda a: type(a).__module__, xs))
        assert {k.split(".")[0] for k in kinds} == {"cupy"}
        got = trainer.fit()
    finally:
        trainer.close()
        backend.release("cpu")
    for name in ("W", "b"):
        np.testing.assert_allclose(got.params[name], ref.params[name], rtol=0, atol=1e-8)


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


# --- partitioned sources: read on the workers, never through the client ---------------------

def make_rows(n: int, d: int, seed: int, classes: int = 3):
    """Off-centre (so standardised) blobs with unequal classes, and per-row weights."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n, p=np.arange(1, classes + 1) / np.arange(1, classes + 1).sum())
    X = rng.normal(size=(n, d)) + 1.5 * np.eye(classes, d)[y] + 3.0
    return X, y, rng.uniform(0.2, 3.0, size=n)


def write_source(tmp_path, fmt: str, n: int = 900, d: int = 5, seed: int = 0,
                 weights: bool = False) -> dict:
    """A small data set as .npy files, a Parquet file (string labels, 4 row groups) or a
    Zarr group, with per-row weights beside it when asked; the ``data:`` section that
    reads it."""
    X, y, w = make_rows(n, d, seed)
    if fmt == "npy":
        np.save(tmp_path / "X.npy", X)
        np.save(tmp_path / "y.npy", y)
        np.save(tmp_path / "w.npy", w)
        return {"path": str(tmp_path / "X.npy"), "labels": str(tmp_path / "y.npy"),
                **({"sample_weight": str(tmp_path / "w.npy")} if weights else {})}
    if fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        cols = {f"f{j}": X[:, j] for j in range(d)}
        table = pa.table({**cols, "label": np.array(["ant", "bee", "cat"])[y], "w": w})
        pq.write_table(table, tmp_path / "d.parquet", row_group_size=n // 4 + 1)
        return {"path": str(tmp_path / "d.parquet"), "label_column": "label",
                **({"sample_weight": "w"} if weights else {})}
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    group.create_array("X", data=X, chunks=(128, d))
    group.create_array("y", data=y, chunks=(128,))
    group.create_array("w", data=w, chunks=(128,))
    return {"path": str(tmp_path / "d.zarr"), **({"sample_weight": "w"} if weights else {})}


def source_config(backend, source, scheduler=None, chunk_rows=100, **extra):
    """On Dask the chunks are backend_options.chunk_rows; on NumPy, data.chunk_rows."""
    data = {"name": "partitioned", **source, "val_fraction": 0.2, "test_fraction": 0.1}
    if backend != "dask":
        return config(backend, data={**data, "chunk_rows": chunk_rows}, **extra)
    options = {"chunk_rows": chunk_rows}
    if scheduler is not None:
        options["cluster"] = scheduler.scheduler_address
    return config(backend, data=data, backend_options=options, **extra)


def task_names(ts) -> list[str]:
    """The function names of the tasks in a task stream (keys may be tuples)."""
    return [str(k[0] if isinstance(k, tuple) else k).split("-", 1)[0]
            for k in (t["key"] for t in ts.data)]


def forbid_client_reads(monkeypatch, labels: bool = False):
    """Any read of features (and with ``labels``, of labels and weights) in this (the
    client's) process fails the test; the workers are other processes, where the sources
    read as usual."""
    from smx.datasets import sources

    def refuse(self, start, stop):
        raise AssertionError(f"the client read rows {start}:{stop} of {self.path}")

    for cls in (sources.NpySource, sources.ParquetSource, sources.ZarrSource):
        for method in ("read_X", "read_y", "read_w") if labels else ("read_X",):
            monkeypatch.setattr(cls, method, refuse)


@pytest.mark.parametrize("fmt", ["npy", "parquet", "zarr"])
def test_sources_are_read_and_prepared_on_the_workers(scheduler, tmp_path, monkeypatch, fmt):
    source = write_source(tmp_path, fmt)
    ref_cfg = source_config("numpy", source)
    ref_splits = load_data(ref_cfg, PLUGINS)  # the same rows, read here: the reference
    ref = train(ref_cfg, ref_splits, PLUGINS.backend("numpy"), "cpu", PLUGINS)
    forbid_client_reads(monkeypatch)
    cfg, backend = source_config("dask", source, scheduler), DaskBackend()
    try:
        backend.configure(backend.options.model_validate(cfg.backend_options))
        with distributed.get_task_stream(backend._connected()) as ts:
            splits = load_data(cfg, PLUGINS, backend=backend)
            got = train(cfg, splits, backend, "cpu", PLUGINS)
    finally:
        backend.release("cpu")
    keys = task_names(ts)
    assert sum(k.startswith("chunk_stats") for k in keys) == 9  # one pass: 900 rows / 100
    assert sum(k.startswith("_read_part") for k in keys) == 2 * 2 * 9  # train, val: X and y
    assert list(splits.classes) == list(ref_splits.classes)
    assert (len(splits.y_train), len(splits.y_val)) == (len(ref_splits.y_train),
                                                        len(ref_splits.y_val))
    np.testing.assert_allclose(splits.standardizer.mean, ref_splits.standardizer.mean,
                               rtol=1e-13)
    for name in ("W", "b"):
        np.testing.assert_allclose(got.params[name], ref.params[name], rtol=0, atol=1e-10)


@pytest.mark.parametrize("fmt, class_weight, persist", [
    ("npy", "balanced", "auto"), ("parquet", None, "auto"), ("zarr", "balanced", False)])
def test_weighted_sources_fit_like_numpy_in_memory(scheduler, tmp_path, monkeypatch, fmt,
                                                   class_weight, persist):
    """Sample weights read on the workers (a weights .npy, a Parquet column, a Zarr
    array; persisted, or streamed from the source at every evaluation), class_weight
    balanced from the reduction's class totals: the parameters of an
    in-memory NumPy fit of the same rows (an .npz with data.sample_weight), float64, 1e-8.
    The client reads none of X, y or the weights."""
    X, y, w = make_rows(900, 5, 0)
    np.savez(tmp_path / "d.npz", X=X, y=y, w=w)
    # model.C: l2 = 1/(C·Σ r·w), the total weight from the same class totals
    loss = {"loss": {"name": "cross_entropy", "class_weight": class_weight}, "model": {"C": 1.0}}
    data = {"val_fraction": 0, "test_fraction": 0}
    ref_cfg = config("numpy", data={"name": "file", "path": str(tmp_path / "d.npz"),
                                    "sample_weight": "w", **data}, **loss)
    ref = train(ref_cfg, load_data(ref_cfg, PLUGINS), PLUGINS.backend("numpy"), "cpu", PLUGINS)
    source = write_source(tmp_path, fmt, weights=True)
    forbid_client_reads(monkeypatch, labels=True)
    cfg = config("dask", data={"name": "partitioned", **source, "persist": persist, **data},
                 backend_options={"cluster": scheduler.scheduler_address, "chunk_rows": 100},
                 **loss)
    backend = DaskBackend()
    try:
        backend.configure(backend.options.model_validate(cfg.backend_options))
        with distributed.get_task_stream(backend._connected()) as ts:
            got = train(cfg, load_data(cfg, PLUGINS, backend=backend), backend, "cpu", PLUGINS)
    finally:
        report = backend.run_report()["dask"]
        backend.release("cpu")
    keys = task_names(ts)
    if persist:  # X, y and w of each chunk read once (train, and the empty val)
        assert sum(k.startswith("_read_part") for k in keys) == 2 * 3 * 9
    else:
        assert report["persisted"]["train"] is False
        assert sum(k.startswith("_stream_partial") for k in keys) >= 9 * got.history[-1]["epoch"]
    assert got.l2 == pytest.approx(ref.l2, rel=1e-12)
    for name in ("W", "b"):
        np.testing.assert_allclose(got.params[name], ref.params[name], rtol=1e-8, atol=1e-12)
    assert not np.allclose(ref.params["W"], train(  # the weights matter here
        config("numpy", data={"name": "file", "path": str(tmp_path / "d.npz"), **data}),
        load_data(config("numpy", data={"name": "file", "path": str(tmp_path / "d.npz"),
                                        **data}), PLUGINS),
        PLUGINS.backend("numpy"), "cpu", PLUGINS).params["W"], rtol=1e-3)


@pytest.mark.parametrize("weights, message", [
    (np.r_[1.0, -1.0, np.ones(98)], "finite and >= 0; row 1"),
    (np.zeros(100), "zero for every row"),
    (np.ones(99), "100 real numbers"),
])
def test_bad_weights_of_a_source_are_one_line(tmp_path, weights, message):
    X, y, _ = make_rows(100, 3, 1)
    for name, a in (("X", X), ("y", y), ("w", weights)):
        np.save(tmp_path / f"{name}.npy", a)
    cfg = config("numpy", data={"name": "partitioned", "path": str(tmp_path / "X.npy"),
                                "labels": str(tmp_path / "y.npy"),
                                "sample_weight": str(tmp_path / "w.npy"), "chunk_rows": 30})
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_data(cfg, PLUGINS)


def test_the_split_does_not_depend_on_the_chunking(tmp_path):
    source = write_source(tmp_path, "npy", n=500)
    a, b = (load_data(source_config("numpy", source, chunk_rows=c), PLUGINS) for c in (7, 500))
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(np.asarray(getattr(a, f"y_{part}")),
                                      np.asarray(getattr(b, f"y_{part}")))
        np.testing.assert_allclose(np.asarray(getattr(a, f"X_{part}")),
                                   np.asarray(getattr(b, f"X_{part}")), atol=1e-12)
    assert 0.15 < len(a.y_val) / 500 < 0.25 and 0.05 < len(a.y_test) / 500 < 0.15


def test_a_killed_worker_is_replaced_and_the_fit_ends_the_same(scheduler, tmp_path):
    """SIGKILL one worker process after epoch 2 of an L-BFGS fit: its nanny starts a new
    one, the lost chunks are read again from the source, and the parameters equal an
    undisturbed fit's (to rounding)."""
    import os
    import signal

    source = write_source(tmp_path, "npy", n=1200)
    cfg = source_config("dask", source, scheduler, epochs=6)

    def fit_source(on_epoch=None):
        backend = DaskBackend()
        try:
            splits = load_data(cfg, PLUGINS, backend=backend)
            trainer = Trainer(cfg, splits, backend, "cpu", PLUGINS)
            with distributed.get_task_stream(backend.client) as ts:
                result = trainer.fit(on_epoch=on_epoch and (lambda r: on_epoch(backend, r)))
            return result, task_names(ts)
        finally:
            backend.release("cpu")

    undisturbed, _ = fit_source()
    killed = []

    def kill_one(backend, record):
        if record["epoch"] == 2:
            pids = backend.client.run(os.getpid)
            pid = sorted(pids.items())[0][1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    disturbed, keys = fit_source(kill_one)
    with distributed.Client(scheduler.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=30)
        assert killed and killed[0] not in client.run(os.getpid).values()
    assert sum(k.startswith("_read_part") for k in keys) > 0  # lost chunks read again
    for name in ("W", "b"):  # to rounding: a chunk read again may sit at another alignment
        np.testing.assert_allclose(disturbed.params[name], undisturbed.params[name],
                                   rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_out_of_core_data_is_streamed_and_fits_like_numpy(tmp_path):
    """A source several times the workers' total memory_limit: persist: auto streams it
    (each evaluation reads every chunk from the .npy), the workers' peak memory stays below
    their limit, and L-BFGS ends at the in-memory NumPy fit's parameters (float64, 1e-8)."""
    import importlib.util

    # dask.array imports the `sparse` package when it is installed (dask-ml brings it), and
    # with it numba and llvmlite: about 60 MiB more in every worker before any data, and
    # more as it runs (a worker over 80% of its limit pauses)
    limit = (160 if importlib.util.find_spec("sparse") is None else 256) * 2**20
    d = 64
    n = -(-3 * limit // (d * 4 * 200_000)) * 200_000  # float32 on disk: over 3 x the limit
    rng = np.random.default_rng(3)
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
    y = rng.integers(0, 3, size=n)
    for a in range(0, n, 200_000):
        rows = slice(a, a + 200_000)
        X[rows] = rng.normal(size=(len(y[rows]), d)) + np.eye(3, d)[y[rows]]
    X.flush()
    del X
    np.save(tmp_path / "y.npy", y)
    size = (tmp_path / "X.npy").stat().st_size
    assert size >= 3 * limit
    source = {"path": str(tmp_path / "X.npy"), "labels": str(tmp_path / "y.npy")}
    data = {"name": "partitioned", **source, "val_fraction": 0, "test_fraction": 0,
            "standardize": False}
    base = {"data": data, "epochs": 2, "dtype": "float64", "optimizer": {"name": "lbfgs"}}
    ref_cfg = load_config({**base, "backend": "numpy"}, plugins=PLUGINS)
    ref = train(ref_cfg, load_data(ref_cfg, PLUGINS), PLUGINS.backend("numpy"), "cpu", PLUGINS)
    cfg = load_config({**base, "backend": "dask", "backend_options": {
        "workers": 1, "memory_limit": limit, "chunk_rows": 20_000}}, plugins=PLUGINS)
    backend = DaskBackend()
    try:
        got = train(cfg, load_data(cfg, PLUGINS, backend=backend), backend, "cpu", PLUGINS)
        report = backend.run_report()["dask"]
    finally:
        backend.release("cpu")
    print(f"\nout of core: {size / 2**20:.0f} MiB source, workers' memory_limit "
          f"{report['memory_limit_total'] / 2**20:.0f} MiB, peak RSS "
          f"{report['peak_rss_max'] / 2**20:.0f} MiB")
    assert report["persisted"]["train"] is False
    assert report["peak_rss_max"] < limit
    for name in ("W", "b"):
        np.testing.assert_allclose(got.params[name], ref.params[name], rtol=1e-8, atol=1e-12)


def test_a_dask_run_resumes_from_its_checkpoint(scheduler, tmp_path, monkeypatch):
    """smx run killed after epoch 2, then --resume (runner.resume): the same parameters as
    a run straight through, the data read again on the workers."""
    from smx import runner

    source = write_source(tmp_path, "npy")
    cfg = source_config("dask", source, scheduler, epochs=4)
    straight = runner.run(cfg.model_copy(update={"output": str(tmp_path / "a")}),
                          plugins=PLUGINS, progress=False)
    assert straight.summary["dask"]["persisted"]["train"] is True
    real = runner.Trainer.run_epoch

    def killed_after_two(self, *args, **kwargs):
        if self.epoch == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(runner.Trainer, "run_epoch", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg.model_copy(update={"output": str(tmp_path / "b")}), plugins=PLUGINS,
                   progress=False)
    monkeypatch.setattr(runner.Trainer, "run_epoch", real)
    resumed = runner.resume(tmp_path / "b", plugins=PLUGINS, progress=False)
    for name in ("W", "b"):
        np.testing.assert_allclose(resumed.result.params[name], straight.result.params[name],
                                   rtol=1e-12, atol=1e-14)
