"""RMSprop (Hinton), with PyTorch's update rule: optional momentum and centering."""

from __future__ import annotations

from pydantic import Field

import smx
from smx.optimizers.transforms import (
    ScalarOrSchedule,
    add_decayed_weights,
    chain,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)
from smx.types import OptimizerSpec, PluginParams, Transform


class RMSpropParams(PluginParams):
    lr: float = Field(0.01, gt=0, description="learning rate")
    alpha: float = Field(0.99, ge=0, lt=1, description="decay of the squared-gradient average")
    eps: float = Field(1e-8, gt=0, description="added to the denominator")
    momentum: float = Field(0.0, ge=0, lt=1, description="momentum on the scaled step")
    centered: bool = Field(False, description="divide by the gradient's variance estimate")
    weight_decay: float = Field(0.0, ge=0, description="L2 decay added to the gradient of W")


def rmsprop(lr: ScalarOrSchedule = 0.01, alpha: float = 0.99, eps: float = 1e-8,
            momentum: float = 0.0, centered: bool = False, weight_decay: float = 0.0) -> Transform:
    """PyTorch's RMSprop: coupled decay, the RMS scaling, then a momentum buffer on the
    scaled step."""
    return chain(add_decayed_weights(weight_decay), scale_by_rms(alpha, eps, centered),
                 trace(momentum), scale_by_learning_rate(lr))


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="rmsprop", factory=rmsprop, params=RMSpropParams,
        description="RMSprop, optional momentum and centering",
    )
