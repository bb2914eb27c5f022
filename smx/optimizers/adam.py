"""Adam (Kingma & Ba), bias-corrected, with PyTorch's update rule."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace
from pydantic import Field

import smx
from smx.optimizers.base import add_weight_decay, tree_map, zeros_like
from smx.types import Array, LossAndGrad, OptimizerSpec, Params, PluginParams


class AdamParams(PluginParams):
    lr: float = Field(1e-3, gt=0, description="learning rate")
    beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first moment")
    beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second moment")
    eps: float = Field(1e-8, gt=0, description="added to the denominator")
    weight_decay: float = Field(0.0, ge=0, description="L2 decay added to the gradient of W")


class Adam:
    #: decoupled weight decay (AdamW) instead of adding it to the gradient
    decoupled = False

    def __init__(
        self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay = weight_decay

    def init(self, params: Params) -> dict[str, Any]:
        return {"t": 0, "m": zeros_like(params), "v": zeros_like(params)}

    def update(
        self, params: Params, state: dict[str, Any], closure: LossAndGrad, lr: float
    ) -> tuple[Params, dict[str, Any], Array]:
        loss, grads = closure(params)
        if self.decoupled and self.weight_decay:
            params = {
                k: p * (1.0 - lr * self.weight_decay) if k == "W" else p
                for k, p in params.items()
            }
        elif not self.decoupled:
            grads = add_weight_decay(grads, params, self.weight_decay)
        b1, b2, eps = self.beta1, self.beta2, self.eps
        t = state["t"] + 1
        m = tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state["m"], grads)
        v = tree_map(lambda v, g: b2 * v + (1.0 - b2) * (g * g), state["v"], grads)
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t

        def step(p: Array, m: Array, v: Array) -> Array:
            xp = array_namespace(p)
            return p - (lr / c1) * m / (xp.sqrt(v / c2) + eps)

        return tree_map(step, params, m, v), {"t": t, "m": m, "v": v}, loss


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="adam", factory=Adam, params=AdamParams, description="Adam, bias-corrected",
    )
