"""smx: softmax regression written once against the Array API, everything else a plugin."""

from __future__ import annotations

__version__ = "0.1.0"

from smx.hookspecs import hookimpl
from smx.types import (
    Backend,
    Block,
    DatasetSpec,
    LossSpec,
    OptimizerSpec,
    PluginParams,
    ScheduleSpec,
    SolverSpec,
    Transform,
)

__all__ = [
    "Backend",
    "Block",
    "DatasetSpec",
    "LossSpec",
    "OptimizerSpec",
    "PluginParams",
    "ScheduleSpec",
    "SoftmaxRegression",
    "SolverSpec",
    "Transform",
    "__version__",
    "hookimpl",
]


def __getattr__(name: str):  # the estimator pulls in the runner: import it only when asked
    if name == "SoftmaxRegression":
        from smx.estimator import SoftmaxRegression

        return SoftmaxRegression
    raise AttributeError(name)
