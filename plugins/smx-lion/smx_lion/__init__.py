"""Lion, "EvoLved Sign Momentum" (Chen et al. 2023, arXiv:2302.06675), as an smx plugin.

Per parameter, with gradient ``g``, momentum ``m`` (zero at the start) and
learning rate ``lr`` from the schedule::

    c = β1·m + (1 − β1)·g
    p ← p − lr·(sign(c) + λ·p)        (λ·p only for W: smx never decays the intercept)
    m ← β2·m + (1 − β2)·g

Every step has the same size ``lr`` in every coordinate, so Lion wants a
learning rate 3-10x smaller than Adam's.

This module is the template for smx optimizer plugins. The rules it follows:

* An optimizer is a gradient transformation (optax's shape): ``init(params) ->
  state`` and ``update(updates, state, params=None, **extra) -> (updates,
  state)``; smx adds the updates to the parameters. Reuse smx's links where they
  fit: here the decoupled decay and the learning rate come from
  ``smx.optimizers``, and only Lion's own rule is new.
* The learning rate is a link, ``scale_by_learning_rate(lr)``: smx passes ``lr``
  as a number, or as the run's schedule (a function of the step count), and the
  link handles both, so the optimizer never does arithmetic on ``lr`` itself.
* No array library is imported. The namespace comes from the arrays
  (``array_namespace``), so the same code runs on NumPy, CuPy, array-api-strict
  or any backend a user installs.
* ``update`` is pure: it returns new arrays and never writes into its inputs
  (JAX arrays, for one, are immutable), and its state holds arrays in dicts and
  tuples only (a step count: ``smx.optimizers.counter(params)``), so an engine
  can compile it and a checkpoint can store it.
* Python floats mix with arrays only through operators (``0.9 * m``), which
  keeps the arrays' dtype (float32 stays float32).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from array_api_compat import array_namespace
from pydantic import Field

import smx
from smx.optimizers import (
    ScalarOrSchedule,
    Transform,
    add_decayed_weights,
    chain,
    scale_by_learning_rate,
    zeros_like,
)
from smx.types import Params

try:
    __version__ = version("smx-lion")
except PackageNotFoundError:  # imported from a source checkout that was never installed
    __version__ = "0.0.0"


class LionParams(smx.PluginParams):
    """The ``optimizer:`` keys this plugin accepts; anything else is a config error.

    ``smx plugins`` lists these fields with their defaults, and a bad value is
    reported with its key path (``optimizer.beta1: ...``) like a built-in's.
    """

    lr: float = Field(1e-4, gt=0, description="learning rate (3-10x smaller than Adam's)")
    beta1: float = Field(0.9, ge=0, le=1, description="interpolation of the update direction")
    beta2: float = Field(0.99, ge=0, le=1, description="decay of the momentum")
    weight_decay: float = Field(0.0, ge=0, description="decoupled decay of W (λ)")


def scale_by_lion(beta1: float = 0.9, beta2: float = 0.99) -> Transform:
    """Lion's direction ``sign(β1·m + (1 − β1)·g)``, and its momentum update."""

    def update(grads: Params, state: dict[str, Any], params: Params | None = None,
               **extra: Any) -> tuple[Params, dict[str, Any]]:
        m = state["m"]
        direction = {k: array_namespace(g).sign(beta1 * m[k] + (1.0 - beta1) * g)
                     for k, g in grads.items()}
        new_m = {k: beta2 * m[k] + (1.0 - beta2) * g for k, g in grads.items()}
        return direction, {"m": new_m}

    return Transform(lambda params: {"m": zeros_like(params)}, update)


def lion(lr: ScalarOrSchedule = 1e-4, beta1: float = 0.9, beta2: float = 0.99,
         weight_decay: float = 0.0) -> Transform:
    """smx calls ``lion(**validated LionParams)``, with ``lr`` replaced by the run's
    schedule when it has one; ``scale_by_learning_rate`` applies either."""
    return chain(scale_by_lion(beta1, beta2), add_decayed_weights(weight_decay),
                 scale_by_learning_rate(lr))


#: the registration: the hook yields it, and the plugin's conformance test checks it
LION = smx.OptimizerSpec(
    name="lion", factory=lion, params=LionParams,
    description="Lion: sign of interpolated momentum (Chen et al. 2023)",
)


@smx.hookimpl
def smx_optimizers():
    """The hook smx calls: yield one ``OptimizerSpec`` per optimizer this plugin adds."""
    yield LION
