"""Learning-rate schedules: host-side functions step -> multiplier of the optimizer's lr.

They run on the host (a float per step), so no schedule ever touches the device.
Each accepts ``warmup_epochs``: a linear ramp from ~0 to 1 over that many epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import Field

import smx
from smx.types import PluginParams, ScheduleSpec

Schedule = Callable[[int], float]


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


def with_warmup(fn: Schedule, warmup_steps: int) -> Schedule:
    if warmup_steps <= 0:
        return fn
    return lambda t: fn(t) * min(1.0, (t + 1) / warmup_steps)


def _warm(spe: int, warmup_epochs: float) -> int:
    return round(warmup_epochs * spe)


def constant(*, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0) -> Schedule:
    return with_warmup(lambda t: 1.0, _warm(steps_per_epoch, warmup_epochs))


def step(
    *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
    step_epochs: int = 10, gamma: float = 0.1,
) -> Schedule:
    return with_warmup(
        lambda t: gamma ** (t // (step_epochs * steps_per_epoch)),
        _warm(steps_per_epoch, warmup_epochs),
    )


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

    def fn(t: int) -> float:
        progress = min(1.0, max(0, t - warm) / span)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

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
