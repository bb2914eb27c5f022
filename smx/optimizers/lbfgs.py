"""Full-batch L-BFGS with a strong-Wolfe line search, the vectors kept on the device.

A solver plugin (``smx_solvers``), not a gradient transformation: it is handed
the full-batch value-and-gradient function and calls it as often as its line
search needs. One :meth:`LBFGS.step` is one L-BFGS iteration (a search direction from the
two-loop recursion, then a line search along it), so the Trainer's ``epochs``
is the iteration budget (``max_iter``). Parameters, gradients and the ``m``
correction pairs never leave the device; only scalars cross to the host, to
decide what the line search and the convergence test must decide: the loss
and directional derivative at each trial step, ``sᵀy``, ``max|d|`` and
``max|g|`` — a handful of floats per iteration, not the vectors.

Convergence is recorded in the state as ``state["converged"]``, a short host
string saying why (gradient max-abs ≤ ``tol``, relative loss change ≤
``ftol`` when that is set, no further progress along a descent direction, or a
line search that found no decrease in ``max_ls`` evaluations); the Trainer's
``should_stop`` reads it and ends the run with that reason. ``ftol`` is off by
default so that ``tol`` is the accuracy a run reaches: a relative loss change
of 1e-12 (the former default) came long before max|g| ≤ 1e-8 on problems as
small as 80 rows, and a search that truly stalls still stops, saying so.

The line search follows Nocedal & Wright (Alg. 3.5/3.6) as PyTorch's and
SciPy's do: bracket with cubic interpolation, then zoom.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace
from pydantic import Field, model_validator

import smx
from smx.optimizers.transforms import tree_map
from smx.types import Array, LossAndGrad, Params, PluginParams, SolverSpec


class LBFGSParams(PluginParams):
    lr: float = Field(1.0, gt=0, description="initial step of each line search")
    history: int = Field(10, ge=1, le=1000, description="correction pairs kept (m)")
    tol: float = Field(1e-6, ge=0, description="stop when max|gradient| ≤ tol")
    ftol: float = Field(
        0.0, ge=0, description="also stop when |Δloss| ≤ ftol·max(|loss|, 1) after an "
        "iteration (0: off, so tol decides; a stalled search still stops, saying so)"
    )
    max_ls: int = Field(25, ge=1, description="most loss evaluations per line search")
    c1: float = Field(1e-4, gt=0, lt=1, description="sufficient-decrease (Armijo) constant")
    c2: float = Field(0.9, gt=0, lt=1, description="curvature constant of the strong Wolfe test")

    @model_validator(mode="after")
    def _c1_below_c2(self) -> LBFGSParams:
        if self.c1 >= self.c2:
            raise ValueError(f"c1 ({self.c1:g}) must be less than c2 ({self.c2:g})")
        return self


def host_float(x: Array) -> float:
    """The one place a device scalar crosses to the host (counted by the tests)."""
    return float(x)


# --- trees of arrays (the parameter dict) -------------------------------------------------


def vdot(a: Params, b: Params) -> Array:
    """Σ over leaves of aᵀb, as a 0-d device array."""
    out = None
    for k in a:
        xp = array_namespace(a[k])
        part = xp.sum(a[k] * b[k])
        out = part if out is None else out + part
    return out


def max_abs(a: Params) -> float:
    """max |a| over all leaves, one host float per leaf."""
    return max(host_float(array_namespace(v).max(array_namespace(v).abs(v))) for v in a.values())


def axpy(alpha: Any, x: Params, y: Params) -> Params:
    """y + alpha·x (alpha a host float or a 0-d device array)."""
    return tree_map(lambda xi, yi: yi + alpha * xi, x, y)


def scale(alpha: Any, x: Params) -> Params:
    return tree_map(lambda xi: alpha * xi, x)


def two_loop(grad: Params, s_hist: list[Params], y_hist: list[Params], rho: list[float],
             gamma: Any) -> Params:
    """The L-BFGS direction −H·g (Nocedal & Wright, Alg. 7.4), with H₀ = gamma·I."""
    q = scale(-1.0, grad)
    alphas = []
    for s, y, r in zip(reversed(s_hist), reversed(y_hist), reversed(rho), strict=True):
        a = vdot(s, q) * r
        alphas.append(a)
        q = axpy(-a, y, q)
    d = scale(gamma, q)
    for s, y, r, a in zip(s_hist, y_hist, rho, reversed(alphas), strict=True):
        beta = vdot(y, d) * r
        d = axpy(a - beta, s, d)
    return d


# --- the line search: host scalars decide, device arrays follow --------------------------


def cubic_min(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
              bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the cubic through (x1, f1, g1), (x2, f2, g2), clipped to ``bounds``."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
    d2_sq = d1 * d1 - g1 * g2
    if d2_sq >= 0:
        d2 = math.sqrt(d2_sq)
        if x1 <= x2:
            t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        else:
            t = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        if math.isfinite(t):
            return min(max(t, lo), hi)
    return (lo + hi) / 2.0


class _Point:
    """A trial step t: host loss f and slope gtd; device loss and gradient."""

    __slots__ = ("f", "g", "gtd", "loss", "t")

    def __init__(self, t: float, loss: Array, g: Params, d: Params) -> None:
        self.t, self.loss, self.g = t, loss, g
        self.f = host_float(loss)
        self.gtd = host_float(vdot(g, d))


def _finite_f(p: _Point) -> float:
    """The loss for comparisons, a non-finite one (NaN, overflow) counted as +inf."""
    return p.f if math.isfinite(p.f) else math.inf


def strong_wolfe(closure: LossAndGrad, x: Params, t: float, d: Params, start: _Point,
                 c1: float, c2: float, max_ls: int, tol_change: float = 1e-12
                 ) -> tuple[_Point, int]:
    """A step along ``d`` meeting the strong Wolfe conditions (or the best one found)."""
    f0, gtd0 = start.f, start.gtd
    d_norm = max_abs(d)

    def at(step: float) -> _Point:
        loss, g = closure(axpy(step, d, x))
        return _Point(step, loss, g, d)

    prev, new = start, at(t)
    evals, done = 1, False
    bracket: list[_Point] = []
    while evals < max_ls:
        if not math.isfinite(new.f) or new.f > f0 + c1 * new.t * gtd0 or (
                evals > 1 and new.f >= prev.f):
            bracket = [prev, new]
            break
        if abs(new.gtd) <= -c2 * gtd0:
            bracket, done = [new], True
            break
        if new.gtd >= 0:
            bracket = [prev, new]
            break
        lo, hi = new.t + 0.01 * (new.t - prev.t), new.t * 10.0
        step = cubic_min(prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd, bounds=(lo, hi))
        prev, new = new, at(step)
        evals += 1
    if not bracket:  # ran out of evaluations while still descending
        bracket = [start, new]

    insufficient = False
    while not done and evals < max_ls and len(bracket) == 2:
        a, b = bracket
        if abs(b.t - a.t) * d_norm < tol_change:
            break
        if not math.isfinite(b.f):  # overflow at the far end: bisect towards the good end
            step = (a.t + b.t) / 2.0
        else:
            step = cubic_min(a.t, a.f, a.gtd, b.t, b.f, b.gtd)
        t_lo, t_hi = min(a.t, b.t), max(a.t, b.t)
        margin = 0.1 * (t_hi - t_lo)
        if min(t_hi - step, step - t_lo) < margin:
            if insufficient or step >= t_hi or step <= t_lo:
                step = t_hi - margin if abs(step - t_hi) < abs(step - t_lo) else t_lo + margin
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        new = at(step)
        evals += 1
        # a non-finite end (NaN or overflow) is the worst end: NaN compares False both ways
        low, high = (0, 1) if _finite_f(bracket[0]) <= _finite_f(bracket[1]) else (1, 0)
        if (not math.isfinite(new.f) or new.f > f0 + c1 * new.t * gtd0
                or new.f >= bracket[low].f):
            bracket[high] = new
        else:
            if abs(new.gtd) <= -c2 * gtd0:
                done = True
            elif new.gtd * (bracket[high].t - bracket[low].t) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = new
    best = min(bracket, key=_finite_f)
    return best, evals


# --- the optimizer -------------------------------------------------------------------------


class LBFGS:
    def __init__(self, lr: float = 1.0, history: int = 10, tol: float = 1e-6,
                 ftol: float = 0.0, max_ls: int = 25, c1: float = 1e-4, c2: float = 0.9
                 ) -> None:
        self.lr, self.history, self.tol, self.ftol = lr, history, tol, ftol
        self.max_ls, self.c1, self.c2 = max_ls, c1, c2

    def init(self, params: Params) -> dict[str, Any]:
        # loss and g: at the current parameters, once known (the last line search computed
        # them); the state travels with the parameters, so a resumed run has them too
        return {"s": [], "y": [], "rho": [], "gamma": 1.0, "iter": 0, "evals": 0,
                "loss": None, "g": None, "converged": None}

    def step(
        self, params: Params, state: dict[str, Any], value_and_grad: LossAndGrad, lr: float
    ) -> tuple[Params, dict[str, Any], Array]:
        """One iteration; returns the loss at the *new* parameters (the accepted step)."""
        state = dict(state)
        closure = value_and_grad
        if state["g"] is not None:
            loss, g = state["loss"], state["g"]
        else:
            loss, g = closure(params)
            state["evals"] += 1
        if state["converged"]:
            return params, state, loss

        g_max = max_abs(g)
        if g_max <= self.tol:
            state.update(loss=loss, g=g,
                         converged=f"gradient max-abs {g_max:.3g} ≤ tol {self.tol:g}")
            return params, state, loss

        first = not state["s"]
        d = two_loop(g, state["s"], state["y"], state["rho"], state["gamma"])
        start = _Point(0.0, loss, g, d)
        if start.gtd >= 0:  # not a descent direction (rounding): restart from steepest descent
            state.update(s=[], y=[], rho=[], gamma=1.0)
            d, first = scale(-1.0, g), True
            start = _Point(0.0, loss, g, d)
        # the first step is scaled so that it moves no coordinate by more than lr
        t0 = lr * min(1.0, 1.0 / g_max) if first else lr
        new, evals = strong_wolfe(closure, params, t0, d, start, self.c1, self.c2, self.max_ls)
        state["evals"] += evals
        state["iter"] += 1

        if not math.isfinite(new.f) or new.f >= start.f:
            why = (f"line search found no decrease in {self.max_ls} evaluations"
                   if evals >= self.max_ls
                   else "no decrease along a descent direction (at machine precision)")
            state.update(loss=loss, g=g, converged=why)
            return params, state, loss

        x_new = axpy(new.t, d, params)
        s = scale(new.t, d)
        y = tree_map(lambda a, b: a - b, new.g, g)
        ys, yy = vdot(y, s), vdot(y, y)
        # SciPy's L-BFGS-B rule: the pair is kept when sᵀy > eps·yᵀy, relative to the pair's
        # size (an absolute threshold drops every pair late in an ill-conditioned fit, where
        # steps are small, and the solver stalls); eps of the parameters' dtype. One host read.
        eps = float(array_namespace(ys).finfo(ys.dtype).eps)
        if host_float(ys - eps * yy) > 0:
            if len(state["s"]) == self.history:
                state.update(s=state["s"][1:], y=state["y"][1:], rho=state["rho"][1:])
            state.update(s=[*state["s"], s], y=[*state["y"], y], rho=[*state["rho"], 1.0 / ys],
                         gamma=ys / yy)
        state.update(loss=new.loss, g=new.g)
        change = abs(start.f - new.f)
        if change <= self.ftol * max(abs(start.f), abs(new.f), 1.0):
            state["converged"] = f"relative loss change {change:.3g} ≤ ftol {self.ftol:g}"
        return x_new, state, new.loss


@smx.hookimpl
def smx_solvers():
    yield SolverSpec(
        name="lbfgs", factory=LBFGS, params=LBFGSParams,
        description="full-batch L-BFGS, strong-Wolfe line search; one iteration per epoch",
    )
