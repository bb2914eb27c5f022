"""Learning-rate schedules: the step count -> a multiplier of the optimizer's ``lr``.

A schedule is evaluated where the step runs: the Trainer hands the optimizer
``lr · schedule`` as its learning rate, and
:func:`~smx.optimizers.transforms.scale_by_learning_rate` evaluates it inside
each step, from the step count in its state (a 0-d array of the updates'
floating dtype, on their device; a compiled engine traces it). The same function
also takes a Python number, which the Trainer uses to record each epoch's ``lr``
on the host. So a schedule is written with the operations below, which both
kinds understand, and imports no array library.

A factory returns a schedule, or a plain number for a rate that never changes
(``constant`` without warmup): the optimizer then scales by a constant and keeps
no step count. Each accepts ``warmup_epochs``: a linear ramp from ~0 to 1 over
that many epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace, is_array_api_obj
from pydantic import Field

import smx
from smx.types import PluginParams, ScheduleSpec

#: step count (0-d floating array or Python number) -> multiplier of the same kind
Schedule = Callable[[Any], Any]


class _HostMath:
    """The few Array API functions schedules use, for Python numbers (host records)."""

    pi = math.pi
    cos = staticmethod(math.cos)
    floor = staticmethod(math.floor)

    @staticmethod
    def clip(x: float, min: float | None = None, max: float | None = None) -> float:
        if min is not None and x < min:
            x = min
        if max is not None and x > max:
            x = max
        return x


def ops(count: Any) -> Any:
    """The namespace to compute a schedule in: the count's own, or :class:`_HostMath` for a
    Python number. Third-party schedules may use it too."""
    return array_namespace(count) if is_array_api_obj(count) else _HostMath


class WarmupParams(PluginParams):
    warmup_epochs: float = Field(0.0, ge=0, description="linear warmup length, in epochs")


class StepParams(WarmupParams):
    step_epochs: int = Field(10, ge=1, description="epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="factor applied at each decay")


class ExponentialParams(WarmupParams):
    gamma: float = Field(0.95, gt=0, le=1, description="factor applied per epoch")


class CosineParams(WarmupParams):
    min_factor: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr")


class InverseTimeParams(WarmupParams):
    decay: float = Field(1.0, ge=0, description="lr / (1 + decay * epoch)")


def floating(t: Any) -> Any:
    """An integer count array (optax hands its schedules int32 counts) as the namespace's
    default floating dtype: integer arithmetic would promote to float32 in JAX, whatever
    the run's precision. Floating arrays and Python numbers pass unchanged."""
    if not is_array_api_obj(t):
        return t
    xp = array_namespace(t)
    if xp.isdtype(t.dtype, "integral"):
        return xp.astype(t, xp.__array_namespace_info__().default_dtypes()["real floating"])
    return t


def with_warmup(fn: Schedule, warmup_steps: int) -> Schedule:
    """``fn(t) · min(1, (t + 1) / warmup_steps)``, for a count of any kind."""
    if warmup_steps <= 0:
        return lambda t: fn(floating(t))

    def warmed(t: Any) -> Any:
        t = floating(t)
        return fn(t) * ops(t).clip((t + 1) / warmup_steps, max=1.0)

    return warmed


def _warm(spe: int, warmup_epochs: float) -> int:
    return round(warmup_epochs * spe)


def _one(t: Any) -> Any:
    """1 in the count's kind (an array stays an array on its device)."""
    return t * 0 + 1.0


def constant(*, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0
             ) -> Schedule | float:
    warm = _warm(steps_per_epoch, warmup_epochs)
    return 1.0 if warm <= 0 else with_warmup(_one, warm)


def step(
    *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
    step_epochs: int = 10, gamma: float = 0.1,
) -> Schedule:
    period = step_epochs * steps_per_epoch
    return with_warmup(lambda t: gamma ** ops(t).floor(t / period),
                       _warm(steps_per_epoch, warmup_epochs))


def exponential(
    *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0, gamma: float = 0.95,
) -> Schedule:
    warm = _warm(steps_per_epoch, warmup_epochs)
    return with_warmup(lambda t: gamma ** (t / steps_per_epoch), warm)


def cosine(
    *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0, min_factor: float = 0.0,
) -> Schedule:
    warm = _warm(steps_per_epoch, warmup_epochs)
    span = max(1, total_steps - warm)

    def fn(t: Any) -> Any:
        xp = ops(t)
        progress = xp.clip((t - warm) / span, min=0.0, max=1.0)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + xp.cos(math.pi * progress))

    return with_warmup(fn, warm)


def inverse_time(
    *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0, decay: float = 1.0,
) -> Schedule:
    return with_warmup(
        lambda t: 1.0 / (1.0 + decay * t / steps_per_epoch), _warm(steps_per_epoch, warmup_epochs)
    )


@smx.hookimpl
def smx_schedules():
    yield ScheduleSpec("constant", constant, WarmupParams, "the optimizer's lr throughout")
    yield ScheduleSpec("step", step, StepParams, "multiply by gamma every step_epochs")
    yield ScheduleSpec("exponential", exponential, ExponentialParams, "gamma ** epoch")
    yield ScheduleSpec("cosine", cosine, CosineParams, "cosine decay to min_factor")
    yield ScheduleSpec("inverse-time", inverse_time, InverseTimeParams, "1 / (1 + decay·epoch)")
