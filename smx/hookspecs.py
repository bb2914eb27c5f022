"""The hooks a plugin implements. Each returns an iterable of registrations.

Example plugin module (listed under ``[project.entry-points.smx]``)::

    import smx

    @smx.hookimpl
    def smx_optimizers():
        yield smx.OptimizerSpec(name="lion", factory=lion, params=LionParams)
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from smx.types import (
    Backend,
    CallbackSpec,
    DatasetSpec,
    LossSpec,
    OptimizerSpec,
    ScheduleSpec,
    SolverSpec,
)

PROJECT = "smx"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def smx_backends() -> Iterable[Backend]:
    """Array libraries: ``yield NumpyBackend()``."""


@hookspec
def smx_optimizers() -> Iterable[OptimizerSpec]:
    """Optimizers: ``yield OptimizerSpec(name="sgd", factory=SGD, params=SGDParams)``."""


@hookspec
def smx_solvers() -> Iterable[SolverSpec]:
    """Full-batch solvers with a line search: ``yield SolverSpec(name="lbfgs", factory=LBFGS)``."""


@hookspec
def smx_losses() -> Iterable[LossSpec]:
    """Losses: ``yield LossSpec(name="cross_entropy", factory=CrossEntropy)``."""


@hookspec
def smx_schedules() -> Iterable[ScheduleSpec]:
    """Learning-rate schedules: ``yield ScheduleSpec(name="cosine", factory=cosine)``."""


@hookspec
def smx_datasets() -> Iterable[DatasetSpec]:
    """Datasets: ``yield DatasetSpec(name="digits", load=load_digits)``."""


@hookspec
def smx_callbacks() -> Iterable[CallbackSpec]:
    """Run callbacks (a config's ``callbacks:``): ``yield CallbackSpec(name="mlflow", ...)``."""
