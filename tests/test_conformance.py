"""smx's own plugins through its conformance kit (smx.testing), as a third party's would be:
every built-in backend (each skipped, with its reason, where its library is missing), the
loss and the datasets, taken from the plugin manager."""

from __future__ import annotations

import pytest

from smx.plugins import Plugins
from smx.testing import parametrize_with_checks, with_params
from tests.conftest import ROOT

PLUGINS = Plugins(entry_points=False)
BUILTIN = {kind: {reg.name: reg.record for reg in PLUGINS.registrations(kind)}
           for kind in ("backend", "loss", "dataset", "optimizer", "solver", "schedule")}
OPTIMIZERS = list(BUILTIN["optimizer"].values())
SOLVERS = list(BUILTIN["solver"].values())
SCHEDULES = [*BUILTIN["schedule"].values(),
             *(with_params(BUILTIN["schedule"][name], warmup_epochs=1.5)
               for name in ("constant", "cosine"))]

#: a real multi-process LocalCluster (started by the engine on first use, stopped below):
#: two workers with a small memory limit, chunks of 40 rows (5 per training set)
DASK = with_params(BUILTIN["backend"]["dask"], workers=2, memory_limit="1GiB", chunk_rows=40)
BACKENDS = [
    *(b for name, b in BUILTIN["backend"].items() if name != "dask"),
    with_params(BUILTIN["backend"]["numpy"], fused=True),  # the Numba SGD step (smx[fast])
    DASK,
]
LOSSES = [*BUILTIN["loss"].values(),
          with_params(BUILTIN["loss"]["cross_entropy"], label_smoothing=0.1)]
DATASETS = [*BUILTIN["dataset"].values(),
            with_params(BUILTIN["dataset"]["file"], path=str(ROOT / "tests" / "data" /
                                                             "tiny.csv"), label_column="label")]


@pytest.fixture(scope="module", autouse=True)
def stop_the_dask_cluster():
    """The kit never releases a backend: its owner does."""
    yield
    DASK.obj.release("cpu")


@parametrize_with_checks(BACKENDS)
def test_backend(obj, check):
    check(obj)


@parametrize_with_checks(LOSSES)
def test_loss(obj, check):
    check(obj)


@parametrize_with_checks(DATASETS)
def test_dataset(obj, check):
    check(obj)


@parametrize_with_checks(OPTIMIZERS)
def test_optimizer(obj, check):
    check(obj)


@parametrize_with_checks(SOLVERS)
def test_solver(obj, check):
    check(obj)


@parametrize_with_checks(SCHEDULES)
def test_schedule(obj, check):
    check(obj)


def test_every_builtin_is_checked():
    names = {kind: {getattr(o, "obj", o).name for o in objs}
             for kind, objs in (("backend", BACKENDS), ("loss", LOSSES), ("dataset", DATASETS),
                                ("optimizer", OPTIMIZERS), ("solver", SOLVERS),
                                ("schedule", SCHEDULES))}
    assert names == {kind: set(found) for kind, found in BUILTIN.items()}
    assert names["solver"] == {"lbfgs"} and len(OPTIMIZERS) >= 5
