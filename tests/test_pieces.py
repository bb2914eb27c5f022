"""Every core, same bits: the NumPy engine's sums over fixed row pieces on a pool of the
run's threads give byte-identical parameters at any thread count (smx/backends/numpy_pieces)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from smx import SoftmaxRegression, hardware
from smx.backends import numpy_kernels, numpy_pieces
from smx.backends.numpy_backend import NumpyBackend
from smx.backends.numpy_pieces import (
    MAX_PIECES,
    MIN_CELLS_PER_THREAD,
    PIECE_CELLS,
    PiecePool,
    add_in_order,
    piece_bounds,
)
from smx.config import load_config
from smx.datasets.load import load_data
from smx.losses import CrossEntropy
from smx.modelfile import load_model
from smx.objective import Objective, portable_partial
from smx.optimizers.sgd import sgd
from smx.plugins import Plugins
from smx.step import TrainStep
from smx.training import Trainer
from smx.types import Block
from tests.conftest import run_smx

PLUGINS = Plugins(entry_points=False)
# 4,000 x 200: 8 pieces of 500 rows in a full batch, 2 in a 1,000-row batch
DATA = {"name": "synthetic", "n": 5000, "d": 200, "k": 5, "separation": 1.0}


@pytest.fixture(autouse=True)
def pool_even_for_small_work(monkeypatch, request):
    """The problems here are small: below MIN_CELLS_PER_THREAD a run keeps its pieces in
    the calling thread, which would leave the pool untested; in-process tests lower it."""
    if "stays_in_the_caller" not in request.node.name:
        monkeypatch.setattr(numpy_pieces, "MIN_CELLS_PER_THREAD", 1)


# --------------------------------------------------------------------- the pieces' order


@pytest.mark.parametrize(("n", "d", "count"), [
    (1024, 256, 4),  # 390 rows of 256 per piece at most: 3 needed, 4 taken
    (200_000, 256, MAX_PIECES),  # 513 needed: capped
    (150, 4, 1), (1797, 64, 2), (3, 200_000, 3),  # one row a piece, never an empty one
    (0, 10, 1)])
def test_piece_bounds_depend_on_the_shape_only(n, d, count):
    bounds = piece_bounds(n, d)
    assert len(bounds) == count
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1 and (n == 0 or min(sizes) >= 1)
    if count < MAX_PIECES and count < n:  # the fewest pieces (a power of two) that fit
        rows = max(1, PIECE_CELLS // d)
        assert count & (count - 1) == 0 and max(sizes) <= rows
        assert count == 1 or -(-n // (count // 2)) > rows


def test_capped_pieces_fall_on_the_block_kernels_own_pieces():
    """Past the cap, each piece is whole pieces of the kernel's (390 rows of 256 float32 at
    10 classes), so the kernel never ends a piece on a short one; below it, unchanged."""
    bounds = piece_bounds(100_000, 256, unit=390)
    assert len(bounds) == MAX_PIECES and bounds[0][0] == 0 and bounds[-1][1] == 100_000
    assert all((b - a) % 390 == 0 and b > a for a, b in bounds[:-1])
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert piece_bounds(1024, 256, unit=390) == piece_bounds(1024, 256)
    kernel = NumpyBackend().kernel(CrossEntropy())
    X = np.zeros((100_000, 256), np.float32)
    assert kernel.bounds(100_000, X, {"W": np.zeros((256, 10), np.float32)}) == bounds


class Term:
    """A value that records how it was added."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __add__(self, other: Term) -> Term:
        return Term(f"({self.text}+{other.text})")


@pytest.mark.parametrize(("n", "expected"), [
    (1, "0"), (2, "(0+1)"), (4, "((0+1)+(2+3))"), (5, "(((0+1)+(2+3))+4)"),
    (8, "(((0+1)+(2+3))+((4+5)+(6+7)))")])
def test_add_in_order_is_a_fixed_pairwise_tree(n, expected):
    assert add_in_order([Term(str(i)) for i in range(n)]).text == expected


def test_the_pool_keeps_piece_order_whichever_thread_finishes_first():
    pool = PiecePool(3)
    seen = set()

    def slow_first(i: int) -> int:
        seen.add(threading.current_thread().name)
        if i == 0:
            threading.Event().wait(0.05)  # piece 0 finishes last
        return i * i

    try:
        assert pool.map(slow_first, 16) == [i * i for i in range(16)]
        assert len(seen) >= 2  # the caller and at least one pool thread took pieces
    finally:
        pool.close()


def test_a_piece_that_raises_raises_in_the_caller_after_the_others_finish():
    pool = PiecePool(2)
    done = []

    def fn(i: int) -> int:
        if i == 3:
            raise ValueError("piece 3")
        done.append(i)
        return i

    try:
        with pytest.raises(ValueError, match="piece 3"):
            pool.map(fn, 8)
    finally:
        pool.close()


def test_one_thread_runs_every_piece_in_the_caller():
    pool = PiecePool(1)
    names = pool.map(lambda i: threading.current_thread().name, 5)
    assert set(names) == {threading.current_thread().name}


# ------------------------------------------------------- the kernel and the step, bit for bit


def problem(dtype, n=3000, d=150, k=6, weighted=True):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, k, n)
    w = rng.uniform(0.5, 2.0, n).astype(dtype) if weighted else None
    cw = rng.uniform(0.5, 2.0, k).astype(dtype) if weighted else None
    params = {"W": (0.1 * rng.normal(size=(d, k))).astype(dtype),
              "b": rng.normal(size=k).astype(dtype)}
    return params, Block(X, y, w), cw


def as_bytes(part):
    return (np.asarray(part.loss).tobytes(), np.asarray(part.weight).tobytes(),
            {k: v.tobytes() for k, v in part.grads.items()})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_pieced_kernel_is_bit_identical_on_any_pool(dtype, weighted):
    params, block, cw = problem(dtype, weighted=weighted)
    assert len(piece_bounds(block.n, block.X.shape[1])) == 8  # 666 rows of 150 at most
    backend = NumpyBackend()
    kernel = backend.kernel(CrossEntropy())
    serial = as_bytes(kernel(params, block, cw))  # no run: the pieces in this thread
    for threads in (1, 2, 3, 5):
        with backend.cpu_threads(threads):
            assert backend.pool_slot.pool.threads == threads
            assert as_bytes(kernel(params, block, cw)) == serial, threads
    ref = portable_partial(CrossEntropy(), params, block, cw)
    got = kernel(params, block, cw)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got.loss, ref.loss, rtol=rtol)
    for key in ref.grads:
        scale = np.abs(ref.grads[key]).max()  # sums over 3,000 rows: float32 cancels
        np.testing.assert_allclose(got.grads[key], ref.grads[key], rtol=rtol,
                                   atol=rtol * scale)


def test_the_pieces_run_on_the_pool_threads(monkeypatch):
    """The pool is used: with 2 threads, pieces are computed on more than one thread."""
    params, block, cw = problem(np.float64)
    names = set()
    real = numpy_kernels.cross_entropy_partial

    def recording(*args, **kwargs):
        names.add(threading.current_thread().name)
        threading.Event().wait(0.01)  # long enough for the pool thread to take a piece
        return real(*args, **kwargs)

    backend = NumpyBackend()
    monkeypatch.setattr(numpy_kernels, "cross_entropy_partial", recording)
    kernel = backend.kernel(CrossEntropy())
    with backend.cpu_threads(2):
        kernel(params, block, cw)
    assert len(names) == 2


def test_work_too_small_for_two_threads_stays_in_the_caller(monkeypatch):
    """A minibatch of a few pieces is computed in the calling thread, pool or not (the
    handoff would cost more than it saves); the bits are the same either way."""
    params, block, cw = problem(np.float64)
    names = set()
    real = numpy_kernels.cross_entropy_partial

    def recording(*args, **kwargs):
        names.add(threading.current_thread().name)
        return real(*args, **kwargs)

    backend = NumpyBackend()
    monkeypatch.setattr(numpy_kernels, "cross_entropy_partial", recording)
    kernel = backend.kernel(CrossEntropy())
    n, d = block.X.shape
    assert len(numpy_pieces.piece_bounds(n, d)) > 1 and n * d < 2 * MIN_CELLS_PER_THREAD
    with backend.cpu_threads(2):
        small = kernel(params, block, cw)
    assert names == {threading.current_thread().name}
    monkeypatch.setattr(numpy_pieces, "MIN_CELLS_PER_THREAD", 1)
    with backend.cpu_threads(2):
        pooled = kernel(params, block, cw)
    assert small.loss.tobytes() == pooled.loss.tobytes()
    assert all(small.grads[k].tobytes() == pooled.grads[k].tobytes() for k in small.grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gathering_step_is_the_portable_step_bit_for_bit(dtype):
    params, data, cw = problem(dtype)
    backend = NumpyBackend()
    objective = Objective(CrossEntropy(), 0.01, class_weight=cw,
                          kernel=backend.kernel(CrossEntropy()))
    step = TrainStep(objective, sgd(lr=0.1, momentum=0.9))
    gathering = backend.fused_step(step, data)
    assert isinstance(gathering, numpy_pieces.GatheringStep)
    idx = np.random.default_rng(2).permutation(data.n)[:2000]
    state = step.transform.init(params)
    with backend.cpu_threads(2):
        p1, _, l1 = gathering(params, state, data, idx)
    p2, _, l2 = step(params, state, backend.batch(data, idx))
    assert np.asarray(l1).tobytes() == np.asarray(l2).tobytes()
    assert all(p1[k].tobytes() == p2[k].tobytes() for k in p2)


# ----------------------------------------------------------- whole runs at 1, 2 and 3 threads


def train(threads, optimizer, dtype, monkeypatch=None):
    cfg = load_config({"data": DATA, "optimizer": optimizer, "epochs": 3, "batch_size": 1000,
                       "dtype": dtype, "threads": threads}, plugins=PLUGINS)
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), PLUGINS.backend("numpy"), "cpu", PLUGINS)
    result = trainer.fit()
    return {k: v.tobytes() for k, v in result.params.items()}, [
        r["train_loss"] for r in result.history]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", [{"name": "sgd", "lr": 0.1, "momentum": 0.9},
                                       {"name": "lbfgs"}], ids=["sgd", "lbfgs"])
def test_a_run_is_byte_identical_at_1_2_and_3_threads(optimizer, dtype):
    runs = [train(t, optimizer, dtype) for t in (1, 2, 3)]
    assert runs[0] == runs[1] == runs[2]


def test_threads_auto_gives_the_same_bits_whatever_the_load(monkeypatch):
    """``auto`` reads the load average: idle, half busy, busy give 4, 3, 1 threads here."""
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 4)
    runs = []
    for load in (0.0, 1.0, 3.5):
        monkeypatch.setattr(hardware.os, "getloadavg", lambda load=load: (load,) * 3)
        runs.append(train("auto", {"name": "sgd", "lr": 0.1}, "float64"))
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.filterwarnings("ignore:lbfgs stopped at its iteration limit")
@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_the_estimator_is_byte_identical_whatever_threads_auto_picks(monkeypatch, optimizer):
    cfg = load_config({"data": DATA}, plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    X, y = splits.X_train, splits.classes[splits.y_train]
    kw = {"optimizer": optimizer, "dtype": "float64", "random_state": 0}
    kw.update({"epochs": 3, "batch_size": 1000, "optimizer_params": {"lr": 0.1}}
              if optimizer == "sgd" else {"max_iter": 15})
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 4)
    coefs = []
    for load in (0.0, 1.0, 3.5):  # 4 (all cores: no limit), 3 and 1 threads
        monkeypatch.setattr(hardware.os, "getloadavg", lambda load=load: (load,) * 3)
        est = SoftmaxRegression(**kw).fit(X, y)
        coefs.append((est.coef_.tobytes(), est.intercept_.tobytes()))
    assert coefs[0] == coefs[1] == coefs[2]


@pytest.mark.parametrize(("optimizer", "dtype"), [("sgd", "float32"), ("lbfgs", "float64")])
def test_smx_run_writes_the_same_model_bytes_at_1_2_and_3_threads(tmp_path, optimizer,
                                                                  dtype):
    models = []
    for threads in (1, 2, 3):
        out = tmp_path / f"t{threads}"
        # 10,500 training rows x 200: a batch (and the full batch) of 2M+ cells, two
        # threads' worth of work even for a subprocess (MIN_CELLS_PER_THREAD)
        proc = run_smx("run", "data.name=synthetic", "data.n=15000", "data.d=200", "data.k=5",
                       f"optimizer.name={optimizer}", "epochs=2", "batch_size=10000",
                       f"dtype={dtype}", f"threads={threads}", f"output={out}", "--quiet",
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        model = load_model(out / "model.npz")
        models.append((model.W.tobytes(), model.b.tobytes()))
    assert models[0] == models[1] == models[2]


def test_a_kernel_shipped_to_a_dask_worker_takes_no_pool_along():
    """Pickled (as Dask ships it), the kernel's slot comes back empty: on a worker each
    thread computes its chunk's pieces in turn, the worker's threads being the parallelism."""
    import pickle

    backend = NumpyBackend()
    kernel = backend.kernel(CrossEntropy())
    params, block, cw = problem(np.float64)
    with backend.cpu_threads(2):
        shipped = pickle.loads(pickle.dumps(kernel))
        assert backend.pool_slot.pool is not None and shipped.slot.pool is None
        assert as_bytes(shipped(params, block, cw)) == as_bytes(kernel(params, block, cw))


def test_the_numba_step_gives_the_same_bits_at_any_thread_count():
    """``fused: true`` runs one row after another on one thread: nothing to split."""
    pytest.importorskip("numba", reason="Numba is not installed (pip install 'smx[fast]')")
    runs = []
    for threads in (1, 2):
        cfg = load_config({"data": DATA, "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 2,
                           "batch_size": 1000, "threads": threads,
                           "backend_options": {"fused": True}}, plugins=PLUGINS)
        trainer = Trainer(cfg, load_data(cfg, PLUGINS), NumpyBackend(), "cpu", PLUGINS)
        assert type(trainer.fused_step).__name__ == "FusedSGD"
        runs.append({k: v.tobytes() for k, v in trainer.fit().params.items()})
    assert runs[0] == runs[1]
