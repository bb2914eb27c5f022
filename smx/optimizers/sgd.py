"""SGD with optional (Nesterov) momentum, with PyTorch's update rule so results compare."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

import smx
from smx.optimizers.base import add_weight_decay, tree_map, zeros_like
from smx.types import Array, LossAndGrad, OptimizerSpec, Params, PluginParams


class SGDParams(PluginParams):
    lr: float = Field(0.1, gt=0, description="learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="heavy-ball momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")
    weight_decay: float = Field(0.0, ge=0, description="L2 decay added to the gradient of W")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDParams:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0 (with momentum 0 it does nothing)")
        return self


class SGD:
    def __init__(
        self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay = weight_decay

    def init(self, params: Params) -> dict[str, Any]:
        return {"buf": zeros_like(params)} if self.momentum else {}

    def update(
        self, params: Params, state: dict[str, Any], closure: LossAndGrad, lr: float
    ) -> tuple[Params, dict[str, Any], Array]:
        loss, grads = closure(params)
        grads = add_weight_decay(grads, params, self.weight_decay)
        if self.momentum:
            m = self.momentum
            buf = tree_map(lambda b, g: m * b + g, state["buf"], grads)
            step = tree_map(lambda g, b: g + m * b, grads, buf) if self.nesterov else buf
            state = {"buf": buf}
        else:
            step = grads
        return tree_map(lambda p, s: p - lr * s, params, step), state, loss


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="sgd", factory=SGD, params=SGDParams,
        description="stochastic gradient descent, optional (Nesterov) momentum",
    )
