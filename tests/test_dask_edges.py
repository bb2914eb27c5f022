"""backend: dask at its edges, on real multi-process LocalClusters (no mocks): chunks sized
to the workers' memory and refused before any task when they cannot fit, a worker killed
for memory as one line, the run's own peak memory, one chunk_rows setting, and runs that
give the same bytes however their chunks landed on the workers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask.array", reason="Dask is not installed (pip install 'smx[dask]')")
distributed = pytest.importorskip(
    "distributed", reason="distributed is not installed (pip install 'smx[dask]')")

from smx.backends.dask_backend import (  # noqa: E402
    AUTO_SHARE,
    FAN_IN,
    SOURCE_COPIES,
    DaskBackend,
    DaskOptions,
    _peak_rss,
)
from smx.datasets.load import load_data  # noqa: E402
from smx.errors import BackendUnavailable, ConfigError  # noqa: E402
from smx.losses import CrossEntropy  # noqa: E402
from smx.objective import Objective, Partial  # noqa: E402
from smx.training import Trainer, train  # noqa: E402
from smx.types import Block  # noqa: E402
from tests.conftest import assert_one_line_error  # noqa: E402
from tests.test_dask import PLUGINS, config, source_config, task_names, write_source  # noqa: E402

MiB = 2**20


@pytest.fixture(scope="module")
def scheduler():
    """2 worker processes of 1 GiB (see tests/test_dask.py for why not less)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="1GiB", dashboard_address=":0") as cluster:
        yield cluster


def connected(scheduler, **options) -> DaskBackend:
    backend = DaskBackend()
    backend.configure(DaskOptions(cluster=scheduler.scheduler_address, **options))
    backend._connected()
    return backend


# --- 4. chunks sized to the workers ---------------------------------------------------------

def test_chunk_rows_is_auto_by_default_and_sized_to_the_workers_memory(scheduler):
    """auto: a quarter of what a worker thread may hold for a large source's task, and a
    chunk per worker thread for small data."""
    assert DaskOptions().chunk_rows == "auto"
    backend = connected(scheduler)
    try:
        room, threads, (limit, used, _) = backend._task_room()
        assert threads == 2 and limit == 2**30 and 0 < used < limit
        assert room == pytest.approx(0.95 * limit - used)
        rows = backend.chunk_rows_for(10**9, 100, source=True)
        per_row = 100 * SOURCE_COPIES * 8
        assert rows * per_row <= AUTO_SHARE * room < (rows + 1) * per_row
        assert backend.chunk_rows_for(320, 5) == 160
    finally:
        backend.release("cpu")


def sparse_source(tmp_path, n: int, d: int) -> dict:
    """A .npy source of n x d float32 that takes no disk (never written: zeros)."""
    for name, shape, dtype in (("X", (n, d), np.float32), ("y", (n,), np.int64)):
        a = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=dtype,
                                      shape=shape)
        del a
    return {"path": str(tmp_path / "X.npy"), "labels": str(tmp_path / "y.npy")}


def test_a_chunk_that_cannot_fit_is_refused_before_any_task_runs(scheduler, tmp_path,
                                                                 capfd):
    """2,000,000 rows x 64 in one chunk: 4 GiB at a task's peak on a 1 GiB worker. smx run
    says so in one line (the worker's limit, the most rows that fit, what auto picks), exit
    2, before any task runs and before any run folder exists."""
    from smx.cli import main

    source = sparse_source(tmp_path, 2_000_000, 64)
    args = ["run", "data.name=partitioned", f"data.path={source['path']}",
            f"data.labels={source['labels']}", "backend=dask",
            f"backend_options.cluster={scheduler.scheduler_address}",
            "backend_options.chunk_rows=2000000", f"output={tmp_path / 'out'}", "--quiet"]
    with distributed.Client(scheduler.scheduler_address, set_as_default=False) as client, \
            distributed.get_task_stream(client) as ts:
        code = main(args)
    captured = capfd.readouterr()
    proc = type("Proc", (), {"returncode": code, "stderr": captured.err,
                             "stdout": captured.out})
    line = assert_one_line_error(proc, "backend_options.chunk_rows", "memory_limit is 1,024 MiB")
    assert not ts.data and not (tmp_path / "out").exists()
    fits, auto = (int(v.replace(",", "")) for v in
                  (line.split("at most ")[1].split(" rows")[0], line.split("picks ")[1]))
    per_row = 64 * SOURCE_COPIES * 8
    backend = connected(scheduler)
    try:
        room = backend._task_room()[0]
    finally:
        backend.release("cpu")
    assert fits * per_row <= room * 1.05 and auto <= AUTO_SHARE * fits + 1


def test_a_worker_killed_for_memory_is_one_line():
    """A task that outgrows its worker's memory_limit: the nanny restarts the worker and
    the scheduler gives up on the task (KilledWorker; allowed-failures 0 here, so at the
    first death); smx raises one line naming memory_limit and chunk_rows, no traceback."""
    import time

    import dask

    def outgrow(i):
        held = []
        for _ in range(400):  # up to 4 GB, 10 MB at a time: the nanny ends it first
            held.append(np.ones(10 * 2**20 // 8))
            time.sleep(0.005)
        return len(held)

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                     memory_limit="400MiB", dashboard_address=":0") as cluster:
        backend = connected(cluster)
        try:
            with pytest.raises(BackendUnavailable) as info:
                backend.map_reduce(outgrow, [0])  # the data preparation's hook
        finally:
            backend.release("cpu")
    text = str(info.value)
    assert "\n" not in text and "died" in text and "memory_limit per worker: 400 MiB" in text
    assert "backend_options.chunk_rows" in text


@pytest.mark.slow
def test_a_worker_killed_for_memory_while_preparing_the_data_is_one_cli_line(tmp_path):
    """smx run on a Parquet source of one 2,000,000-row group (130 MB), which every chunk's
    task reads whole, on one 400 MiB worker: its nanny restarts it (allowed-failures 0, so
    the scheduler gives up at the first death) and smx prints one line, exit 2, and leaves
    no run folder. Slow: about 10 s (writing the file, a cluster, a death)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from tests.conftest import run_smx

    n, rng = 2_000_000, np.random.default_rng(0)
    table = pa.table({**{f"f{j}": rng.normal(size=n) for j in range(8)},
                      "label": rng.integers(0, 3, n)})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=n)
    del table
    proc = run_smx("run", "data.name=partitioned", "data.path=d.parquet",
                   "data.label_column=label", "backend=dask", "backend_options.workers=1",
                   "backend_options.memory_limit=400MiB", "backend_options.chunk_rows=10000",
                   "epochs=1", "output=out", "--quiet", cwd=tmp_path,
                   env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
    assert_one_line_error(proc, "chunk_stats (preparing the data) died",
                          "memory_limit per worker: 400 MiB")
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (tmp_path / "out").exists()


# --- 6. the run's own peak memory -------------------------------------------------------------

def test_the_summary_reports_the_runs_own_peak_not_the_workers_lifetime(scheduler):
    """A worker that once held 250 MiB more (an earlier run) reports this small run's peak,
    and says since when it measures."""
    def hold(nbytes):
        return float(np.ones(nbytes // 8).sum())  # touched, then freed (mmap: given back)

    with distributed.Client(scheduler.scheduler_address, set_as_default=False) as client:
        client.run(hold, 250 * MiB)
        lifetime = max(client.run(_peak_rss).values())
    assert lifetime > 250 * MiB
    cfg = config("dask", scheduler, epochs=2)
    backend = DaskBackend()
    try:
        train(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
        report = backend.run_report()["dask"]
    finally:
        backend.release("cpu")
    assert 0 < report["peak_rss_max"] < lifetime - 150 * MiB
    assert report["peak_rss_since"] == "run start"


# --- 7. one chunk_rows setting ----------------------------------------------------------------

def test_data_chunk_rows_on_dask_is_refused_naming_the_setting_that_counts(scheduler, tmp_path):
    source = write_source(tmp_path, "npy")
    cfg = config("dask", scheduler, data={"name": "partitioned", **source, "chunk_rows": 100})
    backend = DaskBackend()
    try:
        with pytest.raises(ConfigError) as info:
            load_data(cfg, PLUGINS, backend=backend)
    finally:
        backend.release("cpu")
    text = str(info.value)
    assert "\n" not in text and text.startswith("data.chunk_rows:")
    assert "backend_options.chunk_rows" in text


def test_backend_options_chunk_rows_cuts_a_partitioned_source(scheduler, tmp_path):
    """900 rows in chunks of 150: six tasks in the preparing pass, six chunks placed."""
    cfg = source_config("dask", write_source(tmp_path, "npy"), scheduler, chunk_rows=150)
    backend = DaskBackend()
    try:
        backend.configure(backend.options.model_validate(cfg.backend_options))
        with distributed.get_task_stream(backend._connected()) as ts:
            splits = load_data(cfg, PLUGINS, backend=backend)
        assert splits.X_train.bounds == tuple((a, a + 150) for a in range(0, 900, 150))
        assert task_names(ts).count("chunk_stats") == 6
    finally:
        backend.release("cpu")


# --- 9. the same bytes, run after run ---------------------------------------------------------

def misaligned(a: np.ndarray) -> np.ndarray:
    """``a`` at an odd address, as a chunk lands from a message (a scatter, a steal, a read
    back from disk); run on a worker, where the result then stays as it is."""
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    return out


def test_float32_lbfgs_twice_gives_the_same_bytes_wherever_the_chunks_landed(scheduler):
    """The same float32 L-BFGS twice on the same cluster and chunking, the second with every
    chunk at an unaligned address: the same iterations and the same parameter bytes."""
    cfg = config("dask", scheduler, dtype="float32", epochs=15,
                 data={"name": "synthetic", "n": 1200, "d": 20, "k": 4, "val_fraction": 0,
                       "test_fraction": 0},
                 backend_options={"cluster": scheduler.scheduler_address, "chunk_rows": 200})

    def run(unaligned: bool):
        backend = DaskBackend()
        trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
        try:
            if unaligned:
                name = trainer.train_data.X.name
                xs, ys, ws = backend._chunks[name]
                xs = backend.client.map(misaligned, xs, pure=False)
                assert not any(backend.client.gather(backend.client.map(
                    lambda a: a.flags.aligned, xs, pure=False)))
                backend._chunks[name] = (xs, ys, ws)
            return trainer.fit()
        finally:
            trainer.close()
            backend.release("cpu")

    first, second = run(False), run(True)
    assert len(first.history) == len(second.history) > 5
    for name in ("W", "b"):
        assert first.params[name].dtype == np.float32
        assert first.params[name].tobytes() == second.params[name].tobytes()


def test_float32_partials_are_summed_in_float64_in_the_chunks_order(scheduler):
    """20 float32 chunks: each chunk's partial widened to float64, summed by the tree (groups
    of FAN_IN, in the chunks' order) and cast back once: those exact bytes."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1000, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=1000)
    params = {"W": rng.normal(size=(6, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}
    objective = Objective(CrossEntropy(), 0.0)
    backend = connected(scheduler, chunk_rows=50)
    try:
        data = backend.place(X, y, None, "cpu", "float32")
        got = backend.partial(lambda b: objective.partial(params, b), data)
    finally:
        backend.release("cpu")

    def wide(p: Partial) -> Partial:
        return Partial(np.float64(p.loss), p.weight,
                       {k: v.astype(np.float64) for k, v in p.grads.items()})

    parts = [wide(objective.partial(params, Block(X[a:a + 50], y[a:a + 50])))
             for a in range(0, 1000, 50)]
    while len(parts) > 1:
        groups = [parts[i:i + FAN_IN] for i in range(0, len(parts), FAN_IN)]
        parts = [sum(g[1:], g[0]) for g in groups]
    want = parts[0]
    assert got.grads["W"].dtype == np.float32 and got.weight == 1000
    assert np.asarray(got.loss).tobytes() == np.float32(want.loss).tobytes()
    for k in ("W", "b"):
        assert got.grads[k].tobytes() == want.grads[k].astype(np.float32).tobytes()


def test_a_streamed_chunk_step_reads_its_block_and_steps_on_its_rows():
    """A minibatch step on a streamed source (persist: false) reads chunk i as a Block and
    steps on rows idx of it; it unpacked the Block as a tuple, a TypeError (found by mypy)."""
    from smx.backends.dask_backend import _stream_step

    class Chunks:  # what PartRows/PartLabels give a worker: chunk i read from the source
        def __init__(self, array):
            self.array = array

        def read_chunk(self, i, dtype=None):
            return self.array if dtype is None else self.array.astype(dtype)

    X = np.arange(12.0).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    seen = []

    def step(params, state, block):
        seen.append(block)
        return params, state, 0.0

    _stream_step(0, np.array([1, 3]), {"W": None}, None, rows=Chunks(X), labels=Chunks(y),
                 dtype="float32", step=step)
    (block,) = seen
    np.testing.assert_array_equal(block.X, X[[1, 3]].astype(np.float32))
    np.testing.assert_array_equal(block.y, y[[1, 3]])
    assert block.w is None
