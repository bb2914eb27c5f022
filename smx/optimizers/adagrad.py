"""Adagrad (Duchi et al.), with PyTorch's update rule (lr decay, initial accumulator)."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace
from pydantic import Field

import smx
from smx.optimizers.base import add_weight_decay, tree_map
from smx.types import Array, LossAndGrad, OptimizerSpec, Params, PluginParams


class AdagradParams(PluginParams):
    lr: float = Field(0.01, gt=0, description="learning rate")
    lr_decay: float = Field(0.0, ge=0, description="lr / (1 + (step − 1)·lr_decay)")
    initial_accumulator_value: float = Field(
        0.0, ge=0, description="starting value of the squared-gradient sum"
    )
    eps: float = Field(1e-10, gt=0, description="added to the denominator")
    weight_decay: float = Field(0.0, ge=0, description="L2 decay added to the gradient of W")


class Adagrad:
    def __init__(
        self, lr: float = 0.01, lr_decay: float = 0.0, initial_accumulator_value: float = 0.0,
        eps: float = 1e-10, weight_decay: float = 0.0,
    ) -> None:
        self.lr, self.lr_decay, self.eps = lr, lr_decay, eps
        self.initial, self.weight_decay = initial_accumulator_value, weight_decay

    def init(self, params: Params) -> dict[str, Any]:
        init = self.initial
        return {"t": 0, "sum": tree_map(lambda p: array_namespace(p).full_like(p, init), params)}

    def update(
        self, params: Params, state: dict[str, Any], closure: LossAndGrad, lr: float
    ) -> tuple[Params, dict[str, Any], Array]:
        loss, grads = closure(params)
        grads = add_weight_decay(grads, params, self.weight_decay)
        t = state["t"] + 1
        clr = lr / (1.0 + (t - 1) * self.lr_decay)
        acc = tree_map(lambda s, g: s + g * g, state["sum"], grads)
        eps = self.eps

        def step(p: Array, g: Array, s: Array) -> Array:
            return p - clr * g / (array_namespace(s).sqrt(s) + eps)

        return tree_map(step, params, grads, acc), {"t": t, "sum": acc}, loss


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="adagrad", factory=Adagrad, params=AdagradParams,
        description="Adagrad, per-coordinate steps from the summed squared gradients",
    )
