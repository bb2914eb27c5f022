"""The kit's optimizer, solver and schedule rules fail, each by its name, on plugins broken
the way plugin authors break them; and a bare transformation factory can be checked."""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace
from pydantic import Field

import smx
from smx.optimizers import (
    Transform,
    chain,
    counter,
    identity,
    scale_by_learning_rate,
    zeros_like,
)
from smx.optimizers.lbfgs import LBFGS, LBFGSParams
from smx.schedules import floating, ops
from smx.testing import (
    ContractError,
    check_schedule,
    check_solver,
    check_transform,
    checks,
    rule_names,
)
from smx.types import OptimizerSpec, PluginParams, ScheduleSpec, SolverSpec


class LrParams(PluginParams):
    lr: float = Field(0.05, gt=0)


def spec(name: str, factory, params=LrParams) -> OptimizerSpec:
    return OptimizerSpec(name=name, factory=factory, params=params)


def sign_link(update) -> Transform:
    return Transform(lambda p: {"m": zeros_like(p)}, update)


def momentum_sign(lr=0.05):
    """A correct optimizer: sign of a momentum, then the learning-rate link."""
    def update(g, state, params=None, **extra):
        m = {k: 0.9 * state["m"][k] + g[k] for k in g}
        return {k: array_namespace(v).sign(v) for k, v in m.items()}, {"m": m}
    return chain(sign_link(update), scale_by_learning_rate(lr))


def ignores_the_schedule(lr=0.05):
    """Scales by a fixed 0.05 whatever ``lr`` is."""
    return chain(identity(), Transform(lambda p: (), lambda g, s, p=None, **e: (
        {k: -0.05 * v for k, v in g.items()}, s)))


def python_step_count(lr=0.05):
    """Keeps its step count as a Python int."""
    def update(g, state, params=None, **extra):
        return g, state + 1
    return chain(Transform(lambda p: 0, update), scale_by_learning_rate(lr))


def writes_into_its_state(lr=0.05):
    """Accumulates in place (NumPy's ``+=``): checkpoints and JAX break."""
    def update(g, state, params=None, **extra):
        for k in g:
            state["m"][k] += g[k]
        return dict(state["m"]), state
    return chain(sign_link(update), scale_by_learning_rate(lr))


def numpy_only(lr=0.05):
    """Calls NumPy on the arrays it is given."""
    def update(g, state, params=None, **extra):
        return {k: np.sign(v) for k, v in g.items()}, state
    return chain(Transform(lambda p: (), update), scale_by_learning_rate(lr))


def host_branch(lr=0.05):
    """Decides on the host: ``if float(...)`` fails under ``jax.jit``."""
    def update(g, state, params=None, **extra):
        xp = array_namespace(g["W"])
        big = float(xp.max(xp.abs(g["W"]))) > 1e6
        return ({k: v * 0.0 for k, v in g.items()} if big else g), state
    return chain(Transform(lambda p: (), update), scale_by_learning_rate(lr))


def smx_0_1_signature(lr=0.05):
    """``update(grads, state, params, lr)``: the pre-optax signature."""
    def update(g, state, params, lr):
        return {k: -lr * v for k, v in g.items()}, state
    return Transform(lambda p: (), update)


class NoLr(PluginParams):
    beta: float = 0.9


BROKEN_OPTIMIZERS = [
    (spec("ignores-schedule", ignores_the_schedule), "optimizer.learning-rate-is-a-link"),
    (spec("python-count", python_step_count), "optimizer.state-holds-only-arrays"),
    (spec("in-place", writes_into_its_state), "optimizer.pure"),
    (spec("numpy-only", numpy_only), "optimizer.runs-on-array-api-strict"),
    (spec("host-branch", host_branch), "optimizer.traces-under-jax-jit"),
    (spec("old-signature", smx_0_1_signature), "optimizer.update-has-optax-shape"),
    (spec("no-lr", lambda beta=0.9: momentum_sign(), NoLr), "optimizer.declares-lr"),
]


@pytest.mark.parametrize(("broken", "rule"), BROKEN_OPTIMIZERS, ids=lambda x: getattr(
    x, "name", x))
def test_a_broken_optimizer_fails_the_rule_it_breaks(broken, rule):
    if rule.endswith("jax-jit"):
        pytest.importorskip("jax", reason="JAX is not installed")
    check = dict(checks(broken))[rule]
    with pytest.raises(ContractError) as info:
        check.run(broken)
    assert info.value.rule == rule and str(info.value).startswith(f"{rule}: ")


def test_a_correct_optimizer_passes_and_a_bare_factory_is_checked():
    report = check_transform(spec("momentum-sign", momentum_sign))
    assert set(report) == set(rule_names("optimizer"))
    assert all(v == "passed" or v.startswith("skipped: JAX") for v in report.values())
    assert set(check_transform(momentum_sign)) == set(rule_names("optimizer"))


class LooseLBFGS(LBFGS):
    """Stops on a relative loss change of 1e-6: short of a tight ``tol``."""

    def __init__(self, **kw):
        super().__init__(**{**kw, "ftol": 1e-6})


class Uphill:
    """Takes a fixed step along the gradient: the objective climbs."""

    def __init__(self, lr=1.0, tol=1e-6, **_):
        self.tol = tol

    def init(self, params):
        return {"converged": None}

    def step(self, params, state, value_and_grad, lr):
        _, g = value_and_grad(params)
        new = {k: params[k] + 0.5 * g[k] for k in params}
        return new, state, value_and_grad(new)[0]


@pytest.mark.parametrize(("solver", "rule"), [
    (SolverSpec("loose", LooseLBFGS, LBFGSParams), "solver.honours-tol"),
    (SolverSpec("uphill", Uphill, LBFGSParams), "solver.decreases-the-objective"),
], ids=["loose-tol", "uphill"])
def test_a_broken_solver_fails_the_rule_it_breaks(solver, rule):
    with pytest.raises(ContractError) as info:
        check_solver(solver)
    assert info.value.rule == rule


def _math_cos(*, total_steps, steps_per_epoch):
    """Uses ``math`` on the count: fine for numbers, a host read (and float64) for arrays."""
    return lambda t: 0.5 * (1 + math.cos(math.pi * float(t) / total_steps))


def _branching(*, total_steps, steps_per_epoch):
    """Branches on the count in Python: no trace can take it."""
    def fn(t):
        t = floating(t)
        return t * 0 + 1.0 if t < total_steps / 2 else t * 0 + 0.1
    return fn


def _good(*, total_steps, steps_per_epoch):
    return lambda t: ops(floating(t)).clip(1.0 - floating(t) / total_steps, min=0.0)


@pytest.mark.parametrize(("factory", "rule"), [
    (_math_cos, "schedule.arrays-agree-with-numbers"),
    (_branching, "schedule.traces-under-jax-jit"),
], ids=["math-cos", "branching"])
def test_a_broken_schedule_fails_the_rule_it_breaks(factory, rule):
    pytest.importorskip("jax", reason="JAX is not installed")
    with pytest.raises(ContractError) as info:
        check_schedule(ScheduleSpec("broken", factory))
    assert info.value.rule == rule


def test_a_correct_schedule_passes():
    report = check_schedule(ScheduleSpec("linear", _good))
    assert all(v == "passed" or v.startswith("skipped: JAX") for v in report.values())


def test_every_kind_has_its_rules():
    assert {r.split(".")[0] for r in rule_names()} == {
        "backend", "loss", "dataset", "optimizer", "solver", "schedule", "callback"}
    assert counter({"W": np.zeros(2)}).shape == ()
    assert smx.OptimizerSpec is OptimizerSpec


def test_the_jax_rules_leave_jaxs_process_wide_x64_switch_alone(monkeypatch):
    """The optimizer and schedule kinds trace under ``jax.jit`` in float64 with 64-bit types
    held in this thread only (the JAX engine's ``run_context``): the process-wide
    ``jax_enable_x64`` is never set, even for the rule's duration, so other threads of a
    plugin author's program keep JAX's default float32."""
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    was = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)  # JAX's default, whatever earlier tests left
    try:
        flips = []
        update = jax.config.update
        monkeypatch.setattr(jax.config, "update", lambda name, value: (
            flips.append((name, value)), update(name, value)))
        report = check_transform(spec("momentum-sign", momentum_sign))
        report |= check_schedule(ScheduleSpec("linear", _good))
        monkeypatch.undo()
        assert report["optimizer.traces-under-jax-jit"] == "passed"
        assert report["schedule.traces-under-jax-jit"] == "passed"
        assert flips == [] and not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", was)
