"""smx.testing: the plugin contract as named rules, runnable on any plugin (a conformance kit).

A plugin's test file is a few lines::

    from smx.testing import parametrize_with_checks
    from smx_focal import FOCAL

    @parametrize_with_checks([FOCAL])
    def test_contract(obj, check):
        check(obj)

Each check is one rule of the contract (``"loss.gradient-matches-finite-differences"``);
a broken rule raises :class:`ContractError`, whose message starts with the rule's name.
The rules, one module per kind of plugin (``smx/testing/backend.py``, ``loss.py``,
``dataset.py``), are listed with what each guarantees in docs/testing.md.

Importing this module needs neither pytest nor any array library beyond smx's own.
"""

from __future__ import annotations

from typing import Any

from smx.testing.contract import Check, Configured, ContractError, Skipped, with_params
from smx.testing.registry import checks, parametrize_with_checks, rule_names, run_all

__all__ = [
    "Check",
    "Configured",
    "ContractError",
    "Skipped",
    "check_backend",
    "check_callback",
    "check_dataset",
    "check_loss",
    "check_schedule",
    "check_solver",
    "check_transform",
    "checks",
    "parametrize_with_checks",
    "rule_names",
    "with_params",
]


def check_backend(backend: Any) -> dict[str, str]:
    """Run every ``backend.*`` rule on ``backend`` (a :class:`smx.Backend`, or one wrapped by
    :func:`with_params` with its ``backend_options``), in order.

    Stops at the first broken rule, raising its :class:`ContractError`; otherwise returns
    ``{rule: "passed" | "skipped: <reason>"}`` (an unavailable backend skips all but
    ``backend.unavailable-reason``). The backend is configured with the options and never
    released: call its ``release`` when done (a Dask cluster keeps running until then)."""
    return run_all(backend, "backend")


def check_loss(spec_or_loss: Any) -> dict[str, str]:
    """Run every ``loss.*`` rule on a :class:`smx.LossSpec` (built with its defaults, or the
    params :func:`with_params` gives) or on a loss object itself (the rules that build it
    with other options then skip). Stops at the first broken rule (see
    :func:`check_backend` for what it returns)."""
    return run_all(spec_or_loss, "loss")


def check_dataset(spec: Any) -> dict[str, str]:
    """Run every ``dataset.*`` rule on a :class:`smx.DatasetSpec`, loaded with its params'
    defaults or those :func:`with_params` gives (a loader with required options, such as a
    path, skips without them). Stops at the first broken rule (see :func:`check_backend`)."""
    return run_all(spec, "dataset")


def check_transform(spec_or_factory: Any) -> dict[str, str]:
    """Run every ``optimizer.*`` rule on an :class:`smx.OptimizerSpec` (or a bare factory
    ``factory(lr=..., **options) -> Transform``, wrapped in a spec with no options model):
    optax's shape, purity, the learning rate as a link, a state that checkpoints, ``chain``,
    array-api-strict and ``jax.jit``. Stops at the first broken rule."""
    return run_all(_as_optimizer(spec_or_factory), "optimizer")


def check_solver(spec: Any) -> dict[str, str]:
    """Run every ``solver.*`` rule on an :class:`smx.SolverSpec`: it decreases the objective,
    honours its ``tol``, checkpoints, runs on array-api-strict. Stops at the first broken
    rule."""
    return run_all(spec, "solver")


def check_schedule(spec: Any) -> dict[str, str]:
    """Run every ``schedule.*`` rule on an :class:`smx.ScheduleSpec`: the same values from
    numbers, NumPy, array-api-strict, integer and traced (``jax.jit``) counts. Stops at the
    first broken rule."""
    return run_all(spec, "schedule")


def check_callback(spec: Any) -> dict[str, str]:
    """Run every ``callback.*`` rule on an :class:`smx.CallbackSpec` (built with its defaults
    or the params :func:`with_params` gives): real short runs with it listed in the config,
    in a temporary working directory. Stops at the first broken rule."""
    return run_all(spec, "callback")


def _as_optimizer(obj: Any) -> Any:
    from smx.types import OptimizerSpec, PluginParams

    if isinstance(obj, OptimizerSpec) or not callable(obj) or isinstance(obj, type):
        return obj

    class LrOnly(PluginParams):
        lr: float = 0.01

    return OptimizerSpec(name=getattr(obj, "__name__", "optimizer"), factory=obj,
                         params=LrOnly)
