"""Every Dask option checked before a cluster starts, and clusters whose workers die at
start-up or never join: each one ``smx: error:`` line and exit 2, after at most the
engine's ``timeout`` (the wait counts time without any worker too). Real processes: the
CLI as a user runs it, real LocalClusters."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("dask.array", reason="Dask is not installed (pip install 'smx[dask]')")
distributed = pytest.importorskip(
    "distributed", reason="distributed is not installed (pip install 'smx[dask]')")

from smx import SoftmaxRegression  # noqa: E402
from smx.backends.dask_backend import DaskOptions  # noqa: E402
from tests.conftest import assert_one_line_error, run_smx  # noqa: E402

RUN = ("run", "data.name=synthetic", "data.n=200", "epochs=2", "backend=dask", "output=out",
       "--quiet")


def one_line(proc, *needles: str) -> str:
    line = assert_one_line_error(proc, *needles)
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    return line


@pytest.mark.parametrize("option, needles", [
    ("cluster=ws://10.0.0.5:8786", ("backend_options.cluster", "tcp://", "ucx://", "ws://")),
    ("cluster=foo://x", ("backend_options.cluster", "inproc://", "foo://x")),
    ("cluster=tcp://", ("backend_options.cluster", "tls://")),
    ("cluster=localhost:8786", ("backend_options.cluster", "local-cuda")),
    ("memory_limit=lots", ("backend_options.memory_limit", "2GiB", "lots")),
    ("memory_limit=2 gigs", ("backend_options.memory_limit", "Dask's units")),
    ("memory_limit=-1", ("backend_options.memory_limit", "positive")),
    ("memory_limit=-5GB", ("backend_options.memory_limit", "positive")),
    ("memory_limit=0", ("backend_options.memory_limit", "positive")),
    ("memory_limit=[1]", ("backend_options.memory_limit",)),
])
def test_bad_dask_options_are_one_line_before_any_cluster_starts(tmp_path, option, needles):
    proc = run_smx(*RUN, f"backend_options.{option}", cwd=tmp_path, timeout=60)
    one_line(proc, *needles)
    assert not (tmp_path / "out").exists()
    assert "distributed" not in proc.stderr and "Nanny" not in proc.stderr


@pytest.mark.parametrize("value", ["local", "local-cuda", "tcp://10.0.0.5:8786",
                                   "tls://host:8786", "inproc://10.0.0.5/1234/1",
                                   "ucx://10.0.0.5:13337"])
def test_the_accepted_cluster_forms(value):
    assert DaskOptions(cluster=value).cluster == value


@pytest.mark.parametrize("value", ["auto", "2GiB", "512 MB", "1.5GB", 10**9])
def test_memory_limits_dask_parses(value):
    assert DaskOptions(memory_limit=value).memory_limit == value


def test_the_estimator_refuses_bad_dask_options_as_a_value_error():
    import dask.array as da
    import numpy as np

    X = da.from_array(np.eye(4))
    with pytest.raises(ValueError, match=r"backend_options\.cluster"):
        SoftmaxRegression(backend="dask", backend_options={"cluster": "ws://x"}).fit(
            X, np.array([0, 1, 0, 1]))


def test_workers_dying_at_start_up_are_one_line_after_the_timeout(tmp_path):
    """memory_limit=1MiB: each worker is over its limit as it starts, so its nanny kills it
    and restarts it, and the scheduler mostly has no worker at all. The run ends after the
    engine's timeout (3 s) with one line naming memory_limit; no run folder."""
    t0 = time.monotonic()
    proc = run_smx(*RUN, "backend_options.memory_limit=1MiB", "backend_options.workers=1",
                   "backend_options.timeout=3", cwd=tmp_path, timeout=120)
    elapsed = time.monotonic() - t0
    one_line(proc, "backend_options.memory_limit", "no Dask worker", "1MiB")
    assert not (tmp_path / "out").exists()
    assert elapsed < 60, elapsed  # the cluster's start and stop, and 3 s of waiting


def test_a_scheduler_without_workers_is_one_line_after_the_timeout(tmp_path):
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as bare:
        t0 = time.monotonic()
        proc = run_smx(*RUN, f"backend_options.cluster={bare.scheduler_address}",
                       "backend_options.timeout=2", cwd=tmp_path, timeout=120)
        elapsed = time.monotonic() - t0
    one_line(proc, "backend_options.cluster", "no Dask worker was running",
             bare.scheduler_address)
    assert elapsed < 30, elapsed
