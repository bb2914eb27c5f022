"""Adagrad (Duchi et al.), with PyTorch's update rule (lr decay, initial accumulator)."""

from __future__ import annotations

from pydantic import Field

import smx
from smx.optimizers.transforms import (
    ScalarOrSchedule,
    add_decayed_weights,
    chain,
    scale_by_adagrad,
    scale_by_learning_rate,
)
from smx.types import OptimizerSpec, PluginParams, Transform


class AdagradParams(PluginParams):
    lr: float = Field(0.01, gt=0, description="learning rate")
    lr_decay: float = Field(0.0, ge=0, description="lr / (1 + (step − 1)·lr_decay)")
    initial_accumulator_value: float = Field(
        0.0, ge=0, description="starting value of the squared-gradient sum"
    )
    eps: float = Field(1e-10, gt=0, description="added to the denominator")
    weight_decay: float = Field(0.0, ge=0, description="L2 decay added to the gradient of W")


def adagrad(lr: ScalarOrSchedule = 0.01, lr_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            weight_decay: float = 0.0) -> Transform:
    """PyTorch's Adagrad: coupled decay, the accumulated scaling with its lr decay, −lr."""
    return chain(add_decayed_weights(weight_decay),
                 scale_by_adagrad(initial_accumulator_value, eps, lr_decay),
                 scale_by_learning_rate(lr))


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="adagrad", factory=adagrad, params=AdagradParams,
        description="Adagrad, per-coordinate steps from the summed squared gradients",
    )
