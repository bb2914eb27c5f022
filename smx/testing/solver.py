"""The solver rules: a full-batch method with a line search, handed value-and-gradient.

A solver plugin's factory (``SolverSpec.factory``) returns an object with
``init(params)`` and ``step(params, state, value_and_grad, lr) -> (params, state, loss)``,
one iteration per call. The rules run it on a small seeded, well-conditioned float64
softmax problem (with an l2 penalty, so the optimum is unique).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from smx.testing.contract import Kind, fail, forbids_unknown_keys
from smx.testing.problems import close, identical, problem
from smx.types import SolverSpec

KIND = Kind("solver", accepts=lambda obj: isinstance(obj, SolverSpec),
            label=lambda spec: spec.name)

L2 = 1e-2
#: iterations a rule allows a solver to reach its tolerance on the small problem
MAX_ITER = 200


def build(spec: SolverSpec, params: Mapping[str, Any], **extra: Any) -> Any:
    checked = spec.params.model_validate({**params, **extra}).model_dump()
    solver = spec.factory(**checked)
    if not (callable(getattr(solver, "init", None)) and callable(getattr(solver, "step", None))):
        fail("factory(**options)", expected="an object with init and step",
             got=type(solver).__name__)
    return solver


def objective(xp: Any) -> tuple[dict[str, Any], Any]:
    """Initial parameters and the penalised objective's value-and-gradient, in ``xp``."""
    from smx.objective import loss_and_grad

    pr = problem(5, n=80, d=4, k=3)
    X, y = xp.asarray(pr.X), xp.asarray(pr.y)
    params = {"W": xp.asarray(np.zeros_like(pr.W)), "b": xp.asarray(np.zeros_like(pr.b))}
    return params, lambda p: loss_and_grad(p, X, y, L2)


def numpy_xp() -> Any:
    import array_api_compat.numpy as xp

    return xp


def iterate(solver: Any, params: dict[str, Any], fg: Any, n: int, lr: float = 1.0,
            state: Any = None) -> tuple[dict[str, Any], Any, list[float]]:
    state = solver.init(params) if state is None else state
    losses = []
    for _ in range(n):
        params, state, loss = solver.step(params, state, fg, lr)
        losses.append(float(loss))
        if isinstance(state, dict) and state.get("converged"):
            break
    return params, state, losses


def max_abs_grad(fg: Any, params: dict[str, Any]) -> float:
    return max(float(np.max(np.abs(np.asarray(g)))) for g in fg(params)[1].values())


@KIND.rule("params-forbid-unknown-keys", gated=False)
def params_forbid_unknown(spec: SolverSpec, params: Mapping[str, Any]) -> None:
    """The params model refuses a key it does not define: a misspelt option in a config's
    `optimizer:` section must be an error, not silently ignored."""
    forbids_unknown_keys(spec.params, params)


@KIND.rule("decreases-the-objective")
def decreases(spec: SolverSpec, params: Mapping[str, Any]) -> None:
    """Each iteration returns the objective at the parameters it returns (smx's
    `train_loss` is that less the penalty, with no second pass) and never increases it:
    a line search accepts only decrease."""
    solver = build(spec, params)
    p, fg = objective(numpy_xp())
    state = solver.init(p)
    last = float(fg(p)[0])
    for i in range(10):
        p, state, loss = solver.step(p, state, fg, 1.0)
        close(f"the loss iteration {i + 1} returns", float(loss), float(fg(p)[0]), 1e-12)
        if float(loss) > last * (1 + 1e-15):
            fail(f"the objective after iteration {i + 1}", expected=f"≤ {last:.17g}",
                 got=f"{float(loss):.17g}")
        last = float(loss)
        if isinstance(state, dict) and state.get("converged"):
            break


@KIND.rule("honours-tol")
def honours_tol(spec: SolverSpec, params: Mapping[str, Any]) -> None:
    """With `tol` set tight (1e-8), on a small well-conditioned problem the solver stops
    only once the gradient's max-abs is ≤ tol, and says so in `state["converged"]`: a
    user's `tol` is the accuracy they get (scikit-learn's meaning)."""
    if "tol" not in spec.params.model_fields:
        fail("the params model's fields", expected="a `tol` field (the gradient tolerance)",
             got=", ".join(spec.params.model_fields) or "none")
    solver = build(spec, params, tol=1e-8)
    p, fg = objective(numpy_xp())
    p, state, _ = iterate(solver, p, fg, MAX_ITER)
    why = state.get("converged") if isinstance(state, dict) else None
    if not why:
        fail(f"state['converged'] after {MAX_ITER} iterations", expected="a reason to stop",
             got=repr(why))
    g = max_abs_grad(fg, p)
    if g > 1e-8:
        fail("the gradient max-abs when it stopped", expected="≤ tol 1e-08",
             got=f"{g:.3g} (it stopped because: {why})")


@KIND.rule("state-survives-a-checkpoint")
def checkpoint(spec: SolverSpec, params: Mapping[str, Any]) -> None:
    """The state after a few iterations, written in smx's pickle-free checkpoint format and
    read back, continues bit for bit like the state never saved: `smx run --resume`."""
    import io

    from smx.checkpoint import flatten_tree, map_arrays, unflatten_tree

    solver = build(spec, params)
    p, fg = objective(numpy_xp())
    mid, state, _ = iterate(solver, p, fg, 3)
    straight, _, _ = iterate(solver, mid, fg, 3, state=state)
    arrays: dict[str, np.ndarray] = {}
    tree = flatten_tree(map_arrays(state, np.asarray), arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stubs: **kwds
    buffer.seek(0)
    with np.load(buffer) as saved:
        loaded = unflatten_tree(tree, {k: saved[k] for k in saved.files})
    resumed, _, _ = iterate(solver, mid, fg, 3, state=loaded)
    for k in p:
        identical(f"params[{k!r}] resumed from the saved state", resumed[k], straight[k])


@KIND.rule("runs-on-array-api-strict")
def strict(spec: SolverSpec, params: Mapping[str, Any]) -> None:
    """On array-api-strict it takes NumPy's iterations to 1e-10 (float64): the Array API
    only, and host reads only through explicit conversions of the scalars it decides on."""
    import array_api_strict as sx

    solver = build(spec, params)
    p, fg = objective(numpy_xp())
    ref, _, _ = iterate(solver, p, fg, 5)
    sp, sfg = objective(sx)
    got, _, _ = iterate(build(spec, params), sp, sfg, 5)
    for k in p:
        close(f"params[{k!r}] on array-api-strict", np.asarray(got[k]), np.asarray(ref[k]),
              1e-10)
