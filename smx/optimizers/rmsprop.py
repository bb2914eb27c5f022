"""RMSprop (Hinton), with PyTorch's update rule: optional momentum and centering."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace
from pydantic import Field

import smx
from smx.optimizers.base import add_weight_decay, tree_map, zeros_like
from smx.types import Array, LossAndGrad, OptimizerSpec, Params, PluginParams


class RMSpropParams(PluginParams):
    lr: float = Field(0.01, gt=0, description="learning rate")
    alpha: float = Field(0.99, ge=0, lt=1, description="decay of the squared-gradient average")
    eps: float = Field(1e-8, gt=0, description="added to the denominator")
    momentum: float = Field(0.0, ge=0, lt=1, description="momentum on the scaled step")
    centered: bool = Field(False, description="divide by the gradient's variance estimate")
    weight_decay: float = Field(0.0, ge=0, description="L2 decay added to the gradient of W")


def nonnegative(v: Array) -> Array:
    """``v`` with negatives set to 0: the variance estimate s − m² is ≥ 0 only in exact
    arithmetic; for a steady gradient it tends to 0 and rounding makes it slightly
    negative (float32, ~1000 steps), and its square root NaN."""
    xp = array_namespace(v)
    return xp.where(v > 0, v, xp.zeros_like(v))


class RMSprop:
    def __init__(
        self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
        centered: bool = False, weight_decay: float = 0.0,
    ) -> None:
        self.lr, self.alpha, self.eps, self.momentum = lr, alpha, eps, momentum
        self.centered, self.weight_decay = centered, weight_decay

    def init(self, params: Params) -> dict[str, Any]:
        state = {"sq": zeros_like(params)}
        if self.centered:
            state["avg"] = zeros_like(params)
        if self.momentum:
            state["buf"] = zeros_like(params)
        return state

    def update(
        self, params: Params, state: dict[str, Any], closure: LossAndGrad, lr: float
    ) -> tuple[Params, dict[str, Any], Array]:
        loss, grads = closure(params)
        grads = add_weight_decay(grads, params, self.weight_decay)
        a, eps = self.alpha, self.eps
        sq = tree_map(lambda s, g: a * s + (1.0 - a) * (g * g), state["sq"], grads)
        new: dict[str, Any] = {"sq": sq}
        if self.centered:
            avg = tree_map(lambda m, g: a * m + (1.0 - a) * g, state["avg"], grads)
            new["avg"] = avg
            denom = tree_map(lambda s, m: array_namespace(s).sqrt(nonnegative(s - m * m)) + eps,
                             sq, avg)
        else:
            denom = tree_map(lambda s: array_namespace(s).sqrt(s) + eps, sq)
        scaled = tree_map(lambda g, d: g / d, grads, denom)
        if self.momentum:
            mu = self.momentum
            scaled = tree_map(lambda b, s: mu * b + s, state["buf"], scaled)
            new["buf"] = scaled
        return tree_map(lambda p, s: p - lr * s, params, scaled), new, loss


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="rmsprop", factory=RMSprop, params=RMSpropParams,
        description="RMSprop, optional momentum and centering",
    )
