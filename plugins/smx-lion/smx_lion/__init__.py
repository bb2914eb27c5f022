"""Lion, "EvoLved Sign Momentum" (Chen et al. 2023, arXiv:2302.06675), as an smx plugin.

Per parameter, with gradient ``g``, momentum ``m`` (zero at the start) and
learning rate ``lr`` from the schedule::

    c = β1·m + (1 − β1)·g
    p ← p − lr·(sign(c) + λ·p)        (λ·p only for W: smx never decays the intercept)
    m ← β2·m + (1 − β2)·g

Every step has the same size ``lr`` in every coordinate, so Lion wants a
learning rate 3-10x smaller than Adam's.

This module is the template for smx optimizer plugins. The rules it follows:

* No array library is imported. The namespace comes from the arrays
  (``array_namespace``), so the same code runs on NumPy, CuPy, array-api-strict
  or any backend a user installs.
* ``update`` is pure: it returns new arrays and never writes into its inputs
  (JAX arrays, for one, are immutable).
* Python floats mix with arrays only through operators (``0.9 * m``), which
  keeps the arrays' dtype (float32 stays float32).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from array_api_compat import array_namespace
from pydantic import Field

import smx
from smx.types import Array, LossAndGrad, Params

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


class Lion:
    """An (init, update) pair. smx calls ``Lion(**validated LionParams)``."""

    def __init__(
        self, lr: float = 1e-4, beta1: float = 0.9, beta2: float = 0.99,
        weight_decay: float = 0.0,
    ) -> None:
        # ``lr`` is the base rate; smx passes the scheduled rate to every ``update``.
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.weight_decay = weight_decay

    def init(self, params: Params) -> dict[str, Any]:
        """Optimizer state: anything, as long as it is built from ``params`` (same device)."""
        return {"m": {k: array_namespace(p).zeros_like(p) for k, p in params.items()}}

    def update(
        self, params: Params, state: dict[str, Any], closure: LossAndGrad, lr: float
    ) -> tuple[Params, dict[str, Any], Array]:
        """One step. ``closure(params)`` returns (loss, grads) for the current batch.

        Return the loss of the parameters *before* the step, as a device array:
        smx reads it on the host only every ``log_every`` steps.
        """
        loss, grads = closure(params)
        b1, b2, wd = self.beta1, self.beta2, self.weight_decay
        new_params, new_m = {}, {}
        for k, p in params.items():
            xp = array_namespace(p)
            g, m = grads[k], state["m"][k]
            if wd and k == "W":  # decoupled: shrink W itself, not its gradient
                p = p * (1.0 - lr * wd)
            new_params[k] = p - lr * xp.sign(b1 * m + (1.0 - b1) * g)
            new_m[k] = b2 * m + (1.0 - b2) * g
        return new_params, {"m": new_m}, loss


@smx.hookimpl
def smx_optimizers():
    """The hook smx calls: yield one ``OptimizerSpec`` per optimizer this plugin adds."""
    yield smx.OptimizerSpec(
        name="lion", factory=Lion, params=LionParams,
        description="Lion: sign of interpolated momentum (Chen et al. 2023)",
    )
