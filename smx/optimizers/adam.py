"""Adam (Kingma & Ba), bias-corrected, with PyTorch's update rule."""

from __future__ import annotations

from pydantic import Field

import smx
from smx.optimizers.transforms import (
    ScalarOrSchedule,
    add_decayed_weights,
    chain,
    scale_by_adam,
    scale_by_learning_rate,
)
from smx.types import OptimizerSpec, PluginParams, Transform


class AdamParams(PluginParams):
    lr: float = Field(1e-3, gt=0, description="learning rate")
    beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first moment")
    beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second moment")
    eps: float = Field(1e-8, gt=0, description="added to the denominator")
    weight_decay: float = Field(0.0, ge=0, description="L2 decay added to the gradient of W")


def adam(lr: ScalarOrSchedule = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
         eps: float = 1e-8, weight_decay: float = 0.0) -> Transform:
    """PyTorch's Adam: decay added to the gradient, so the second moment rescales it."""
    return chain(add_decayed_weights(weight_decay), scale_by_adam(beta1, beta2, eps),
                 scale_by_learning_rate(lr))


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="adam", factory=adam, params=AdamParams, description="Adam, bias-corrected",
    )
