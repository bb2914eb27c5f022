"""smx: softmax regression written once against the Array API, everything else a plugin."""

from __future__ import annotations

__version__ = "0.2.0"

__all__ = [
    "Backend",
    "Block",
    "Callback",
    "CallbackSpec",
    "DatasetSpec",
    "LossSpec",
    "OptimizerSpec",
    "PluginParams",
    "RunInfo",
    "ScheduleSpec",
    "SoftmaxRegression",
    "SolverSpec",
    "Transform",
    "__version__",
    "hookimpl",
]

#: names imported on first use: ``smx --help`` needs none of pluggy, pydantic or the estimator
_LAZY = {"hookimpl": "smx.hookspecs", "SoftmaxRegression": "smx.estimator",
         **{name: "smx.types" for name in (
             "Backend", "Block", "Callback", "CallbackSpec", "DatasetSpec", "LossSpec",
             "OptimizerSpec", "PluginParams", "RunInfo", "ScheduleSpec", "SolverSpec",
             "Transform")}}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smx' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
