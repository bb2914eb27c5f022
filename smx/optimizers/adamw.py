"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, PyTorch's update rule.

Decay shrinks W by ``lr·weight_decay`` before the Adam step instead of entering
the gradient, so it is not rescaled by the second-moment estimate. As
everywhere in smx, the intercept is never decayed.
"""

from __future__ import annotations

from pydantic import Field

import smx
from smx.optimizers.adam import AdamParams
from smx.optimizers.transforms import (
    ScalarOrSchedule,
    add_decayed_weights,
    chain,
    scale_by_adam,
    scale_by_learning_rate,
)
from smx.types import OptimizerSpec, Transform


class AdamWParams(AdamParams):
    weight_decay: float = Field(
        0.01, ge=0, description="decoupled decay: W ← W·(1 − lr·weight_decay) each step"
    )


def adamw(lr: ScalarOrSchedule = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.01) -> Transform:
    """``p − lr·(adam + wd·p)``: PyTorch's ``p·(1 − lr·wd)`` then the Adam step, in one."""
    return chain(scale_by_adam(beta1, beta2, eps), add_decayed_weights(weight_decay),
                 scale_by_learning_rate(lr))


@smx.hookimpl
def smx_optimizers():
    yield OptimizerSpec(
        name="adamw", factory=adamw, params=AdamWParams,
        description="Adam with decoupled weight decay (AdamW)",
    )
