"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, PyTorch's update rule.

Decay shrinks W by ``lr·weight_decay`` before the Adam step instead of entering
the gradient, so it is not rescaled by the second-moment estimate. As
everywhere in smx, the intercept is never decayed.
"""

from __future__ import annotations

from pydantic import Field

import smx
from smx.optimizers.adam import Adam, AdamParams
from smx.types import OptimizerSpec


class AdamWParams(AdamParams):
    weight_decay: float = Field(
        0.01, ge=0, description="decoupled decay: W ← W·(1 − lr·weight_decay) each step"
    )


class AdamW(Adam):
    decoupled = True

    def __init__(
        self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay)


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="adamw", factory=AdamW, params=AdamWParams,
        description="Adam with decoupled weight decay (AdamW)",
    )
