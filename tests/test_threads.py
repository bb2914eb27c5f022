"""The run's ``threads`` setting reaches the BLAS pool (threadpoolctl) while training."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from smx import hardware
from smx.backends import numpy_pieces
from smx.config import load_config
from smx.datasets.load import load_data
from smx.errors import ConfigError
from smx.plugins import Plugins
from smx.training import Trainer

PLUGINS = Plugins(entry_points=False)


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def _fit(threads, optimizer="lbfgs", seen=None, backend="numpy"):
    cfg = load_config({"data": {"name": "synthetic", "n": 300, "d": 6}, "backend": backend,
                       "optimizer": {"name": optimizer}, "epochs": 3, "threads": threads},
                      plugins=PLUGINS)
    engine = PLUGINS.backend(backend)
    pools = []
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), engine, "cpu", PLUGINS)
    trainer.fit(on_epoch=lambda record: (seen.append(_blas_threads()), pools.append(
        getattr(getattr(engine, "pool_slot", None), "pool", None))))
    trainer.pools = pools
    return trainer


def test_threads_limit_blas_while_training_and_restore_it():
    if not _blas_threads():
        pytest.skip("threadpoolctl sees no BLAS library")
    before = _blas_threads()
    seen: list[list[int]] = []
    trainer = _fit(1, seen=seen)
    assert trainer.threads == 1
    assert seen and all(t == [1] * len(before) for t in seen)
    assert _blas_threads() == before


@pytest.mark.parametrize("threads", [2, 3, None])
def test_numpy_runs_its_pieces_on_a_pool_of_the_threads_with_one_blas_thread(threads):
    """NumPy: ``threads`` pool threads (null: every core) for the row pieces, each GEMM on
    one BLAS thread; all restored afterwards."""
    if not _blas_threads():
        pytest.skip("threadpoolctl sees no BLAS library")
    before = _blas_threads()
    seen: list[list[int]] = []
    trainer = _fit(threads, optimizer="sgd", seen=seen)
    assert trainer.threads == threads
    assert seen and all(t == [1] * len(before) for t in seen)
    expected = threads or numpy_pieces.available_cores()
    assert trainer.pools and all(p.threads == expected for p in trainer.pools)
    assert _blas_threads() == before
    assert PLUGINS.backend("numpy").pool_slot.pool is None


def test_threads_null_leaves_blas_alone_on_other_engines():
    before = _blas_threads()
    seen: list[list[int]] = []
    assert _fit(None, optimizer="sgd", seen=seen, backend="array-api-strict").threads is None
    assert seen and all(t == before for t in seen)


@pytest.mark.parametrize(("cores", "load", "expected"), [
    (2, 0.1, None), (2, 0.6, 1), (2, 3.5, 1), (8, 2.2, 6), (8, 0.4, None), (1, 5.0, None)])
def test_auto_threads_are_the_cores_the_load_leaves(monkeypatch, cores, load, expected):
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(hardware.os, "getloadavg", lambda: (load, load, load))
    assert hardware.resolve_threads("auto") == expected
    assert hardware.resolve_threads(3) == 3
    assert hardware.resolve_threads(None) is None


def test_numba_threads_follow_the_limit():
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    with hardware.thread_limit(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2, True, "many", 1.5])
def test_bad_threads_are_refused(bad):
    with pytest.raises(ConfigError, match="threads"):
        load_config({"threads": bad}, plugins=PLUGINS)


def test_default_is_auto():
    assert load_config({}, plugins=PLUGINS).threads == "auto"
    np.testing.assert_equal(load_config({"threads": 2}, plugins=PLUGINS).threads, 2)
