"""The schedule rules: a function of the step count that runs where the step runs.

smx evaluates a schedule inside each step (the optimizer's ``scale_by_learning_rate``),
from a 0-d floating count on the engine's device, and on the host (a Python number) for
the records; optax hands its schedules integer counts. The rules evaluate the schedule
every way, over a whole run's steps, and compare.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from smx.testing.contract import Kind, fail, forbids_unknown_keys, jax_float64, skip
from smx.testing.problems import close
from smx.types import ScheduleSpec

KIND = Kind("schedule", accepts=lambda obj: isinstance(obj, ScheduleSpec),
            label=lambda spec: spec.name)

#: the run the schedule is built for: 4 epochs of 7 steps
TOTAL, PER_EPOCH = 28, 7


def build(spec: ScheduleSpec, params: Mapping[str, Any]) -> Any:
    checked = spec.params.model_validate(dict(params)).model_dump()
    return spec.factory(total_steps=TOTAL, steps_per_epoch=PER_EPOCH, **checked)


def values(fn: Any, counts: Any) -> np.ndarray:
    return np.array([float(fn(c)) for c in counts])


@KIND.rule("params-forbid-unknown-keys", gated=False)
def params_forbid_unknown(spec: ScheduleSpec, params: Mapping[str, Any]) -> None:
    """The params model refuses a key it does not define: a misspelt option in a config's
    `schedule:` section must be an error, not silently ignored."""
    forbids_unknown_keys(spec.params, params)


@KIND.rule("returns-a-schedule-or-a-number")
def returns_schedule(spec: ScheduleSpec, params: Mapping[str, Any]) -> None:
    """`factory(total_steps=..., steps_per_epoch=..., **options)` returns a function of the
    step count, or a number for a rate that never changes (then no count is kept)."""
    fn = build(spec, params)
    if not (callable(fn) or isinstance(fn, int | float)):
        fail("the factory's result", expected="a callable or a number", got=type(fn).__name__)


def _schedule(spec: ScheduleSpec, params: Mapping[str, Any]) -> Any:
    fn = build(spec, params)
    if not callable(fn):
        skip("a constant rate (a number): nothing is evaluated per step")
    return fn


@KIND.rule("finite-and-non-negative")
def finite(spec: ScheduleSpec, params: Mapping[str, Any]) -> None:
    """Every step of the run has a finite multiplier ≥ 0 (host numbers): a NaN or negative
    rate would diverge or climb the loss, and smx stops a run only at the next log point."""
    got = values(_schedule(spec, params), range(TOTAL))
    bad = [i for i, v in enumerate(got) if not (math.isfinite(v) and v >= 0)]
    if bad:
        fail(f"the multiplier at step {bad[0]}", expected="finite and ≥ 0", got=got[bad[0]])


@KIND.rule("arrays-agree-with-numbers")
def arrays_agree(spec: ScheduleSpec, params: Mapping[str, Any]) -> None:
    """A 0-d float64 or float32 NumPy count gives the host's value (to 1e-12, float32 to
    1e-6) and answers in the count's dtype: the step and the records see one schedule."""
    fn = _schedule(spec, params)
    ref = values(fn, [float(t) for t in range(TOTAL)])
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-6)):
        counts = [np.asarray(t, dtype=dtype) for t in range(TOTAL)]
        out = fn(counts[3])
        if getattr(out, "dtype", None) != dtype:
            fail(f"the multiplier of a {np.dtype(dtype).name} count",
                 expected=np.dtype(dtype).name, got=getattr(out, "dtype", type(out).__name__))
        close(f"the multipliers of {np.dtype(dtype).name} counts", values(fn, counts), ref, tol)


@KIND.rule("runs-on-array-api-strict")
def strict(spec: ScheduleSpec, params: Mapping[str, Any]) -> None:
    """On array-api-strict counts (the standard and nothing more) it gives the host's
    values: no NumPy function, no Python `if` on the count, so it runs on every engine."""
    import array_api_strict as sx

    fn = _schedule(spec, params)
    ref = values(fn, [float(t) for t in range(TOTAL)])
    got = values(fn, [sx.asarray(float(t), dtype=sx.float64) for t in range(TOTAL)])
    close("the multipliers of array-api-strict counts", got, ref, 1e-12)


@KIND.rule("takes-integer-counts")
def integer_counts(spec: ScheduleSpec, params: Mapping[str, Any]) -> None:
    """Integer counts (0-d int64 arrays; optax hands its schedules int32 ones) give the
    same values: an optimizer may pass its own step count."""
    fn = _schedule(spec, params)
    ref = values(fn, [float(t) for t in range(TOTAL)])
    got = values(fn, [np.asarray(t, dtype=np.int64) for t in range(TOTAL)])
    close("the multipliers of int64 counts", got, ref, 1e-12)


@KIND.rule("traces-under-jax-jit")
def traces(spec: ScheduleSpec, params: Mapping[str, Any]) -> None:
    """`jax.jit(schedule)` on a traced count gives the host's values (float64): the JAX
    engine evaluates it inside the epoch's `lax.scan`."""
    with jax_float64() as (jax, jnp):
        fn = _schedule(spec, params)
        ref = values(fn, [float(t) for t in range(TOTAL)])
        compiled = jax.jit(fn)
        got = values(compiled, [jnp.asarray(float(t)) for t in range(TOTAL)])
        close("the multipliers under jax.jit", got, ref, 1e-12)
