"""SGD with optional (Nesterov) momentum, with PyTorch's update rule so results compare."""

from __future__ import annotations

from pydantic import Field, model_validator

import smx
from smx.optimizers.transforms import (
    ScalarOrSchedule,
    add_decayed_weights,
    chain,
    scale_by_learning_rate,
    trace,
)
from smx.types import OptimizerSpec, PluginParams, Transform


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


def sgd(lr: ScalarOrSchedule = 0.1, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0) -> Transform:
    """PyTorch's SGD: coupled decay, then the (Nesterov) momentum buffer, then −lr."""
    return chain(add_decayed_weights(weight_decay), trace(momentum, nesterov),
                 scale_by_learning_rate(lr))


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="sgd", factory=sgd, params=SGDParams,
        description="stochastic gradient descent, optional (Nesterov) momentum",
    )
