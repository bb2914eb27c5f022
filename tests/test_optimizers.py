"""Each optimizer against an independent reference, on numpy and array-api-strict.

The references are hand-written NumPy transcriptions of PyTorch's documented
update rules (``torch.optim``; torch itself is not a test dependency), with
the gradient computed here too, so neither the model nor the optimizer code
is reused. As in smx, weight decay applies to W and never to the intercept.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import array_api_strict
import numpy as np
import pytest
from array_api_compat import array_namespace
from scipy.optimize import minimize

import smx
from smx.config import load_config
from smx.datasets.load import load_data
from smx.errors import ConfigError
from smx.losses import CrossEntropy
from smx.objective import Objective, loss_and_grad
from smx.optimizers.lbfgs import LBFGS, two_loop
from smx.optimizers.rmsprop import rmsprop
from smx.optimizers.sgd import sgd
from smx.optimizers.transforms import (
    add_decayed_weights,
    apply_updates,
    chain,
    clip_by_global_norm,
    counter,
    scale_by_learning_rate,
    trace,
)
from smx.plugins import Plugins
from smx.training import Trainer, init_params, train
from smx.types import Block, PluginParams, Transform
from tests.conftest import run_smx, write_yaml

PLUGINS = Plugins(entry_points=False)
OPTIMIZERS = ["adagrad", "adam", "adamw", "lbfgs", "rmsprop", "sgd"]
L2 = 1e-2


def problem(seed: int = 0, n: int = 40, d: int = 5, k: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    params = {"W": rng.normal(scale=0.3, size=(d, k)), "b": rng.normal(scale=0.1, size=k)}
    return X, y, params


def np_loss_grad(params, X, y, l2=L2):
    """Independent NumPy objective: mean cross-entropy + l2/2·‖W‖²."""
    Z = X @ params["W"] + params["b"]
    Z = Z - Z.max(axis=1, keepdims=True)
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    n = X.shape[0]
    loss = -np.log(P[np.arange(n), y]).mean() + 0.5 * l2 * np.sum(params["W"] ** 2)
    G = P.copy()
    G[np.arange(n), y] -= 1.0
    G /= n
    return loss, {"W": X.T @ G + l2 * params["W"], "b": G.sum(axis=0)}


# --- PyTorch's update rules, transcribed ----------------------------------------------------


def decayed(g, p, wd, k):
    return g + wd * p if (wd and k == "W") else g


def ref_sgd(params, grads_fn, lrs, momentum=0.0, nesterov=False, weight_decay=0.0):
    p = {k: v.copy() for k, v in params.items()}
    buf = {}
    for t, lr in enumerate(lrs):
        _, g = grads_fn(p)
        for k in p:
            gk = decayed(g[k], p[k], weight_decay, k)
            if momentum:
                buf[k] = gk.copy() if t == 0 else momentum * buf[k] + gk
                gk = gk + momentum * buf[k] if nesterov else buf[k]
            p[k] = p[k] - lr * gk
    return p


def ref_adam(params, grads_fn, lrs, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
             decoupled=False):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, lr in enumerate(lrs, start=1):
        _, g = grads_fn(p)
        for k in p:
            if decoupled:
                gk = g[k]
                if k == "W":
                    p[k] = p[k] * (1 - lr * weight_decay)
            else:
                gk = decayed(g[k], p[k], weight_decay, k)
            m[k] = beta1 * m[k] + (1 - beta1) * gk
            v[k] = beta2 * v[k] + (1 - beta2) * gk * gk
            denom = np.sqrt(v[k]) / math.sqrt(1 - beta2**t) + eps
            p[k] = p[k] - (lr / (1 - beta1**t)) * m[k] / denom
    return p


def ref_rmsprop(params, grads_fn, lrs, alpha=0.99, eps=1e-8, momentum=0.0, centered=False,
                weight_decay=0.0):
    p = {k: v.copy() for k, v in params.items()}
    sq = {k: np.zeros_like(v) for k, v in p.items()}
    ga = {k: np.zeros_like(v) for k, v in p.items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    for lr in lrs:
        _, g = grads_fn(p)
        for k in p:
            gk = decayed(g[k], p[k], weight_decay, k)
            sq[k] = alpha * sq[k] + (1 - alpha) * gk * gk
            if centered:
                ga[k] = alpha * ga[k] + (1 - alpha) * gk
                avg = np.sqrt(sq[k] - ga[k] ** 2) + eps
            else:
                avg = np.sqrt(sq[k]) + eps
            if momentum:
                buf[k] = momentum * buf[k] + gk / avg
                p[k] = p[k] - lr * buf[k]
            else:
                p[k] = p[k] - lr * gk / avg
    return p


def ref_adagrad(params, grads_fn, lrs, lr_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                weight_decay=0.0):
    p = {k: v.copy() for k, v in params.items()}
    acc = {k: np.full_like(v, initial_accumulator_value) for k, v in p.items()}
    for t, lr in enumerate(lrs, start=1):
        _, g = grads_fn(p)
        for k in p:
            gk = decayed(g[k], p[k], weight_decay, k)
            clr = lr / (1 + (t - 1) * lr_decay)
            acc[k] = acc[k] + gk * gk
            p[k] = p[k] - clr * gk / (np.sqrt(acc[k]) + eps)
    return p


CASES = [
    ("sgd", {}, ref_sgd, {}),
    ("sgd", {"momentum": 0.9}, ref_sgd, {"momentum": 0.9}),
    ("sgd", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}, ref_sgd,
     {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("adam", {}, ref_adam, {}),
    ("adam", {"beta1": 0.8, "weight_decay": 0.1}, ref_adam, {"beta1": 0.8, "weight_decay": 0.1}),
    ("adamw", {}, ref_adam, {"weight_decay": 0.01, "decoupled": True}),
    ("adamw", {"weight_decay": 0.5, "beta2": 0.99}, ref_adam,
     {"weight_decay": 0.5, "beta2": 0.99, "decoupled": True}),
    ("rmsprop", {}, ref_rmsprop, {}),
    ("rmsprop", {"centered": True, "momentum": 0.9, "weight_decay": 0.1}, ref_rmsprop,
     {"centered": True, "momentum": 0.9, "weight_decay": 0.1}),
    ("rmsprop", {"alpha": 0.9, "momentum": 0.5}, ref_rmsprop, {"alpha": 0.9, "momentum": 0.5}),
    ("adagrad", {}, ref_adagrad, {}),
    ("adagrad", {"lr_decay": 0.1, "initial_accumulator_value": 0.5, "weight_decay": 0.1},
     ref_adagrad, {"lr_decay": 0.1, "initial_accumulator_value": 0.5, "weight_decay": 0.1}),
]
LRS = [0.1, 0.05, 0.08, 0.02, 0.1, 0.03]  # as a schedule would vary them


def by_step(lrs):
    """A schedule taking the rates ``lrs`` in turn (the count is a 0-d array of an eager
    library here)."""
    return lambda count: lrs[int(count)]


def make(name: str, options: dict, lrs=None):
    """The named optimizer with ``options``; a transformation's rate follows ``lrs``."""
    spec = PLUGINS.get("optimizer", name)
    params = spec.params.model_validate(options).model_dump()
    if lrs is not None and not isinstance(spec, smx.SolverSpec):
        params["lr"] = by_step(lrs)
    return spec.factory(**params)


def smx_steps(name, options, params, X, y, lrs, xp=np):
    """``lrs`` steps of the named optimizer (a transformation: the caller computes the
    gradient and applies the updates) or solver (handed the value-and-gradient)."""
    Xd, yd = xp.asarray(X), xp.asarray(y)
    p = {k: xp.asarray(v) for k, v in params.items()}
    opt = make(name, options, lrs)
    state = opt.init(p)
    losses = []
    for lr in lrs:
        if isinstance(opt, Transform):
            loss, grads = loss_and_grad(p, Xd, yd, L2)
            updates, state = opt.update(grads, state, p)
            p = apply_updates(p, updates)
        else:
            p, state, loss = opt.step(p, state, lambda q: loss_and_grad(q, Xd, yd, L2), lr)
        losses.append(float(loss))
    return {k: np.asarray(v) for k, v in p.items()}, losses


@pytest.mark.parametrize(("name", "options", "ref", "ref_options"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_first_steps_match_the_pytorch_rule(name, options, ref, ref_options):
    X, y, params = problem()
    expected = ref(params, lambda p: np_loss_grad(p, X, y), LRS, **ref_options)
    got, _ = smx_steps(name, options, params, X, y, LRS)
    for k in params:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-12, atol=1e-13)
        assert not np.allclose(got[k], params[k])  # it moved


@pytest.mark.parametrize("xp", [np, array_api_strict], ids=["numpy", "array-api-strict"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_lowers_the_loss(name, xp):
    X, y, params = problem(seed=1)
    lr = {"sgd": 0.5, "lbfgs": 1.0}.get(name, 0.05)
    got, losses = smx_steps(name, {}, params, X, y, [lr] * 8, xp=xp)
    start, _ = np_loss_grad(params, X, y)
    end, _ = np_loss_grad(got, X, y)
    assert end < 0.9 * start, (start, end)
    assert losses[-1] < losses[0]


def test_strict_and_numpy_take_identical_steps():
    X, y, params = problem(seed=2)
    for name in OPTIMIZERS:
        a, _ = smx_steps(name, {}, params, X, y, LRS)
        b, _ = smx_steps(name, {}, params, X, y, LRS, xp=array_api_strict)
        np.testing.assert_allclose(a["W"], b["W"], rtol=1e-12, atol=1e-14, err_msg=name)


# --- L-BFGS ---------------------------------------------------------------------------------


def test_two_loop_is_the_bfgs_inverse_hessian_product():
    """Against the dense BFGS recursion H ← (I − ρsyᵀ) H (I − ρysᵀ) + ρssᵀ from H₀ = γI."""
    rng = np.random.default_rng(3)
    n, m = 7, 4
    A = rng.normal(size=(n, n))
    A = A @ A.T + n * np.eye(n)  # s, y pairs of a convex quadratic: positive curvature
    S = [rng.normal(size=n) for _ in range(m)]
    Ys = [A @ s for s in S]
    g = rng.normal(size=n)
    gamma = float(S[-1] @ Ys[-1] / (Ys[-1] @ Ys[-1]))
    H = gamma * np.eye(n)
    for s, yv in zip(S, Ys, strict=True):
        r = 1.0 / (yv @ s)
        V = np.eye(n) - r * np.outer(yv, s)
        H = V.T @ H @ V + r * np.outer(s, s)
    tree = lambda v: {"W": v[:5].reshape(5, 1), "b": v[5:]}  # noqa: E731
    d = two_loop(tree(g), [tree(s) for s in S], [tree(v) for v in Ys],
                 [1.0 / float(v @ s) for s, v in zip(S, Ys, strict=True)], gamma)
    np.testing.assert_allclose(np.concatenate([d["W"].ravel(), d["b"]]), -H @ g, rtol=1e-12)


def test_every_lbfgs_step_meets_the_strong_wolfe_conditions():
    X, y, params = problem(seed=4, n=60, d=6, k=4)
    opt = LBFGS(c1=1e-4, c2=0.9, tol=0.0, ftol=0.0)
    state, p = opt.init(params), params
    for _ in range(12):
        new, state, _ = opt.step(p, state, lambda q: loss_and_grad(q, X, y, L2), 1.0)
        if state["converged"]:
            break
        f0, g0 = np_loss_grad(p, X, y)
        f1, g1 = np_loss_grad(new, X, y)
        s = {k: new[k] - p[k] for k in p}
        g0s = sum(np.sum(g0[k] * s[k]) for k in s)
        g1s = sum(np.sum(g1[k] * s[k]) for k in s)
        assert g0s < 0  # a descent direction
        assert f1 <= f0 + 1e-4 * g0s  # sufficient decrease
        assert abs(g1s) <= 0.9 * abs(g0s) + 1e-15  # strong curvature
        p = new


def test_lbfgs_reads_only_a_few_scalars_per_iteration(monkeypatch):
    """Vectors stay on the device: the host sees 0-d values, 7 + 2 per loss evaluation."""
    from smx.optimizers import lbfgs

    reads = []

    def counting(x):
        assert getattr(x, "ndim", 0) == 0
        reads.append(x)
        return float(x)

    monkeypatch.setattr(lbfgs, "host_float", counting)
    X, y, params = problem(seed=6)
    Xd, yd = array_api_strict.asarray(X), array_api_strict.asarray(y)
    p = {k: array_api_strict.asarray(v) for k, v in params.items()}
    opt = LBFGS(tol=0.0, ftol=0.0)
    state = opt.init(p)
    for _ in range(6):
        before, evals = len(reads), state["evals"]
        p, state, _ = opt.step(p, state, lambda q: loss_and_grad(q, Xd, yd, L2), 1.0)
        new_evals = state["evals"] - evals
        assert 1 <= new_evals <= 3
        assert len(reads) - before <= 7 + 2 * new_evals


def test_lbfgs_line_search_recovers_from_a_huge_first_step():
    X, y, params = problem(seed=7)
    got, losses = smx_steps("lbfgs", {}, params, X, y, [1e8] * 5)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < np_loss_grad(params, X, y)[0]
    assert all(np.isfinite(v).all() for v in got.values())


def test_lbfgs_reaches_the_scipy_optimum_and_says_why_it_stopped():
    X, y, params = problem(seed=5, n=80, d=6, k=4)
    shapes = {k: v.shape for k, v in params.items()}

    def flat_fg(v):
        p = {"W": v[:24].reshape(shapes["W"]), "b": v[24:]}
        f, g = np_loss_grad(p, X, y)
        return f, np.concatenate([g["W"].ravel(), g["b"]])

    x0 = np.concatenate([params["W"].ravel(), params["b"]])
    ref = minimize(flat_fg, x0, jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000})
    opt = LBFGS(tol=1e-8, ftol=0.0)
    state, p = opt.init(params), params
    for _ in range(500):
        p, state, loss = opt.step(p, state, lambda q: loss_and_grad(q, X, y, L2), 1.0)
        if state["converged"]:
            break
    assert state["converged"].startswith("gradient max-abs")
    assert float(loss) == pytest.approx(ref.fun, rel=1e-12)
    np.testing.assert_allclose(np.concatenate([p["W"].ravel(), p["b"]]), ref.x, atol=1e-7)
    # once converged, further updates are no-ops
    again, _, _ = opt.step(p, state, lambda q: loss_and_grad(q, X, y, L2), 1.0)
    assert again is p


def test_lbfgs_matches_scikit_learn_on_standardized_digits():
    """All 1797 digits rows (val/test fractions 0), standardized by smx, float64, C=1.

    scikit-learn's objective C·Σloss + ½‖W‖² is smx's mean loss + l2/2·‖W‖² times C·n, with
    l2 = 1/(C·n) (``model.C``). The reference is fitted tightly (tol=1e-10): its default
    tol stops a few percent away from the optimum (see DESIGN.md).
    """
    from sklearn.linear_model import LogisticRegression

    cfg = load_config({
        "data": {"name": "digits", "val_fraction": 0, "test_fraction": 0},
        "model": {"C": 1.0}, "dtype": "float64",
        "optimizer": {"name": "lbfgs", "tol": 1e-10}, "epochs": 1000,
    }, plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    result = train(cfg, splits, PLUGINS.backend("numpy"), "cpu", PLUGINS)
    assert result.stop_reason.startswith("converged")
    assert len(result.history) < 1000

    X, y = splits.X_train, splits.y_train
    assert X.shape == (1797, 64) and result.l2 == pytest.approx(1 / 1797)
    sk = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X, y)
    objective = Objective(CrossEntropy(), result.l2)
    ours = float(objective.value(result.params, Block(X, y)))
    theirs = float(objective.value({"W": sk.coef_.T, "b": sk.intercept_}, Block(X, y)))
    assert ours == pytest.approx(theirs, rel=1e-6)
    W, W_sk = result.params["W"], sk.coef_.T
    assert np.abs(W - W_sk).max() <= 1e-3 * np.abs(W_sk).max()
    b, b_sk = result.params["b"], sk.intercept_
    b, b_sk = b - b.mean(), b_sk - b_sk.mean()
    assert np.abs(b - b_sk).max() <= 1e-3 * np.abs(b_sk).max()


def test_converged_run_records_the_reason(in_tmp):
    from smx.runner import run

    cfg = load_config({"data": {"name": "iris"}, "optimizer": {"name": "lbfgs", "tol": 1e-4},
                       "epochs": 500, "output": "out"}, plugins=PLUGINS)
    outcome = run(cfg, plugins=PLUGINS, progress=False)
    assert outcome.summary["stop_reason"].startswith("converged: gradient max-abs")
    assert outcome.summary["epochs"] < 500


# --- every optimizer trains digits on both backends -----------------------------------------

TRAIN = {
    "sgd": ({"lr": 0.1, "momentum": 0.9}, 3),
    "adam": ({"lr": 0.01}, 3),
    "adamw": ({"lr": 0.01}, 3),
    "rmsprop": ({"lr": 0.005}, 3),
    "adagrad": ({"lr": 0.1}, 3),
    "lbfgs": ({}, 25),
}


@pytest.mark.parametrize("backend", ["numpy", "array-api-strict"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_digits(name, backend):
    options, epochs = TRAIN[name]
    cfg = load_config({"data": {"name": "digits"}, "backend": backend, "epochs": epochs,
                       "optimizer": {"name": name, **options}}, plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    trainer = Trainer(cfg, splits, PLUGINS.backend(backend), "cpu", PLUGINS)
    result = trainer.fit()
    assert result.history[-1]["val_accuracy"] >= 0.9, result.history[-1]


# --- options: listed with defaults, unknown ones rejected with the valid names ---------------

OPTIONS = {
    "adamw": "lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.01",
    "rmsprop": "lr=0.01, alpha=0.99, eps=1e-08, momentum=0.0, centered=False, weight_decay=0.0",
    "adagrad": "lr=0.01, lr_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, "
               "weight_decay=0.0",
    "lbfgs": "lr=1.0, history=10, tol=1e-06, ftol=0.0, max_ls=25, c1=0.0001, c2=0.9",
}


def test_plugins_command_shows_each_optimizers_options(tmp_path):
    proc = run_smx("plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name, options in OPTIONS.items():
        line = next(ln for ln in proc.stdout.splitlines() if f" {name} " in ln)
        kind = "solver" if name == "lbfgs" else "optimizer"  # both chosen by optimizer.name
        assert line.startswith(kind) and options in line, line


@pytest.mark.parametrize("name", OPTIONS)
def test_unknown_option_names_the_key_and_the_valid_ones(name):
    valid = ", ".join(sorted(part.split("=")[0] for part in OPTIONS[name].split(", ")))
    with pytest.raises(ConfigError, match=rf"^optimizer\.bogus: unknown key; allowed: {valid}$"):
        load_config({"optimizer": {"name": name, "bogus": 1}}, plugins=PLUGINS)


def test_lbfgs_rejects_c1_not_below_c2():
    with pytest.raises(ConfigError, match=r"c1 \(0.95\) must be less than c2 \(0.9\)"):
        load_config({"optimizer": {"name": "lbfgs", "c1": 0.95}}, plugins=PLUGINS)


def test_cli_says_why_a_run_stopped_early(tmp_path):
    cfg = write_yaml(tmp_path / "l.yaml", "data:\n  name: iris\noptimizer:\n  name: lbfgs\n"
                     "  tol: 1.0e-4\nepochs: 500\n")
    proc = run_smx("run", str(cfg), "output=out", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"stopped after epoch \d+: converged: gradient max-abs", proc.stdout)


def nan_beyond(xp, c: float):
    """(x − 1)² with its minimum at 1, NaN (an overflow, say) for x > c."""
    def closure(p):
        x = p["W"]
        bad = x > c
        loss = xp.sum(xp.where(bad, xp.nan, (x - 1.0) ** 2))
        return loss, {"W": xp.where(bad, xp.nan, 2.0 * (x - 1.0))}
    return closure


@pytest.mark.parametrize("xp", [np, array_api_strict], ids=["numpy", "array-api-strict"])
@pytest.mark.parametrize(("c", "lr"), [(3.0, 5.0), (1.5, 100.0), (2.0, 30.0)])
def test_lbfgs_line_search_steps_back_from_a_nan_region(xp, c, lr):
    """A NaN end of the bracket is its worst end, and a NaN trial step is rejected."""
    closure = nan_beyond(xp, c)
    opt = LBFGS(lr=lr, tol=1e-8)
    p = {"W": xp.asarray([0.0])}
    state = opt.init(p)
    for _ in range(30):
        p, state, _ = opt.step(p, state, closure, lr)
        if state["converged"]:
            break
    assert state["converged"].startswith(("gradient max-abs", "relative loss change"))
    assert abs(float(p["W"][0]) - 1.0) < 1e-4


def test_lbfgs_says_when_the_line_search_ran_out_of_evaluations():
    closure = nan_beyond(np, 1.5)
    opt = LBFGS(max_ls=2)
    p0 = {"W": np.asarray([0.0])}
    p, state, loss = opt.step(p0, opt.init(p0), closure, 1e6)
    assert state["converged"] == "line search found no decrease in 2 evaluations"
    assert p is p0 and float(loss) == 1.0


@pytest.mark.parametrize("xp", [np, array_api_strict], ids=["numpy", "array-api-strict"])
def test_centered_rmsprop_stays_finite_under_a_steady_float32_gradient(xp):
    """s − m² tends to 0 for a constant gradient; rounding must not take it below 0 (NaN)."""
    g = xp.asarray(np.arange(1, 101, dtype=np.float32) / 100)
    opt = rmsprop(lr=1e-3, centered=True)
    p = {"W": xp.zeros(100, dtype=xp.float32)}
    state = opt.init(p)
    for _ in range(1500):
        updates, state = opt.update({"W": g}, state, p)
        p = apply_updates(p, updates)
    assert p["W"].dtype == xp.float32
    assert bool(xp.all(xp.isfinite(p["W"])))


# --- smx 0.1's trajectories, replayed ---------------------------------------------------------

TRAJECTORIES = Path(__file__).parent / "data" / "trajectories_v0.1.npz"
#: the settings tests/data/trajectories_v0.1.npz was recorded with (smx 0.1, 20 steps each)
SETTINGS = {
    "sgd": "optimizer.name=sgd optimizer.lr=0.1",
    "sgd_momentum": "optimizer.name=sgd optimizer.lr=0.05 optimizer.momentum=0.9",
    "sgd_nesterov_wd": "optimizer.name=sgd optimizer.lr=0.05 optimizer.momentum=0.9 "
                       "optimizer.nesterov=true optimizer.weight_decay=0.01",
    "sgd_cosine_clip": "optimizer.name=sgd optimizer.lr=0.2 schedule.name=cosine "
                       "schedule.warmup_epochs=0.5 clip_grad_norm=0.5",
    "adam": "optimizer.name=adam optimizer.lr=0.01",
    "adam_wd": "optimizer.name=adam optimizer.lr=0.01 optimizer.weight_decay=0.05",
    "adamw": "optimizer.name=adamw optimizer.lr=0.01 optimizer.weight_decay=0.1",
    "rmsprop": "optimizer.name=rmsprop optimizer.lr=0.01",
    "rmsprop_centered_mom_wd": "optimizer.name=rmsprop optimizer.lr=0.005 optimizer.centered=true "
                               "optimizer.momentum=0.5 optimizer.weight_decay=0.01",
    "adagrad": "optimizer.name=adagrad optimizer.lr=0.1",
    "adagrad_decay_init_wd": "optimizer.name=adagrad optimizer.lr=0.1 optimizer.lr_decay=0.01 "
                             "optimizer.initial_accumulator_value=0.1 optimizer.weight_decay=0.01",
    "lbfgs": "optimizer.name=lbfgs epochs=20",
    "sgd_fullbatch_exp": "optimizer.name=sgd optimizer.lr=0.5 batch_size=80 epochs=20 "
                         "schedule.name=exponential",
    "sgd_nointercept": "optimizer.name=sgd optimizer.lr=0.1 model.fit_intercept=false",
}
BASE = {"data": {"name": "synthetic", "n": 100, "d": 5, "k": 3, "val_fraction": 0.2,
                 "test_fraction": 0.0},
        "dtype": "float64", "batch_size": 4, "epochs": 1,
        "model": {"l2": 0.01, "init_scale": 0.3}, "seed": 3}


@pytest.fixture(scope="module")
def trajectories():
    with np.load(TRAJECTORIES) as saved:
        return {k: saved[k] for k in saved.files}


def test_the_recording_holds_every_setting(trajectories):
    names = {key.split("/")[0] for key in trajectories}
    assert names == set(SETTINGS)


@pytest.mark.parametrize("name", SETTINGS)
def test_smx_0_1_trajectories_are_replayed_to_rounding(trajectories, name):
    """The transformations (and the L-BFGS solver) take smx 0.1's steps: same parameters
    after 20 steps to 1e-12 relative, float64, on the numpy backend."""
    cfg = load_config(BASE, SETTINGS[name].split(), plugins=PLUGINS)
    result = train(cfg, load_data(cfg, PLUGINS), PLUGINS.backend("numpy"), "cpu", PLUGINS)
    assert result.steps == int(trajectories[f"{name}/steps"])
    expected = {k.split("/")[1] for k in trajectories if k.startswith(f"{name}/")} - {"steps"}
    assert set(result.params) == expected
    for k, got in result.params.items():
        ref = trajectories[f"{name}/{k}"]
        assert got.dtype == np.float64 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14, err_msg=f"{name}/{k}")
        assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max(), f"{name}/{k}"


# --- transformations compose ----------------------------------------------------------------


def torch_clip(g, max_norm):
    """PyTorch's clip_grad_norm_, on a dict of NumPy arrays."""
    norm = np.sqrt(sum(np.sum(v * v) for v in g.values()))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return {k: v * scale for k, v in g.items()}


@pytest.mark.parametrize("xp", [np, array_api_strict], ids=["numpy", "array-api-strict"])
def test_a_chain_is_clipping_then_sgd_by_hand(xp):
    X, y, params = problem(seed=8)
    clip = lambda p: (0.0, torch_clip(np_loss_grad(p, X, y)[1], 0.3))  # noqa: E731
    expected = ref_sgd(params, clip, LRS, momentum=0.9, nesterov=True, weight_decay=0.1)
    assert np.sqrt(sum(np.sum(v * v) for v in np_loss_grad(params, X, y)[1].values())) > 0.3

    Xd, yd = xp.asarray(X), xp.asarray(y)
    # the same method written three ways: links, a chain holding a built-in, nested chains
    txs = {
        "links": chain(clip_by_global_norm(0.3), add_decayed_weights(0.1), trace(0.9, True),
                       scale_by_learning_rate(by_step(LRS))),
        "built-in": chain(clip_by_global_norm(0.3), sgd(by_step(LRS), momentum=0.9,
                                                        nesterov=True, weight_decay=0.1)),
        "nested": chain(chain(clip_by_global_norm(0.3), add_decayed_weights(0.1)),
                        chain(trace(0.9, True), scale_by_learning_rate(by_step(LRS)))),
    }
    for how, tx in txs.items():
        p = {k: xp.asarray(v) for k, v in params.items()}
        state = tx.init(p)
        for _ in LRS:
            _, grads = loss_and_grad(p, Xd, yd, L2)
            updates, state = tx.update(grads, state, p)
            p = apply_updates(p, updates)
        for k in params:
            np.testing.assert_allclose(np.asarray(p[k]), expected[k], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{how}: {k}")


def test_add_decayed_weights_never_touches_the_intercept():
    rng = np.random.default_rng(9)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    grads = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    out, state = add_decayed_weights(0.5).update(grads, (), params)
    assert state == ()
    np.testing.assert_array_equal(out["W"], grads["W"] + 0.5 * params["W"])
    np.testing.assert_array_equal(out["b"], grads["b"])
    assert set(out) == {"W", "b"}
    out, _ = add_decayed_weights(0.5).update({"W": grads["W"]}, (), {"W": params["W"]})
    assert set(out) == {"W"}  # a model without intercept


@pytest.mark.parametrize(("name", "options"), [
    ("sgd", {"weight_decay": 0.1}), ("sgd", {"weight_decay": 0.1, "momentum": 0.9}),
    ("adam", {"weight_decay": 0.1}), ("adamw", {"weight_decay": 0.1}),
    ("rmsprop", {"weight_decay": 0.1, "centered": True, "momentum": 0.5}),
    ("adagrad", {"weight_decay": 0.1, "initial_accumulator_value": 0.1}),
])
def test_weight_decay_of_every_built_in_leaves_the_intercept_alone(name, options):
    """With a zero gradient only decay moves anything: W shrinks, b stays exactly put."""
    rng = np.random.default_rng(10)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    tx = make(name, options, LRS)
    p, state = params, tx.init(params)
    for _ in LRS:
        updates, state = tx.update(zero, state, p)
        p = apply_updates(p, updates)
    np.testing.assert_array_equal(p["b"], params["b"])
    assert np.linalg.norm(p["W"]) < np.linalg.norm(params["W"])


class SignParams(PluginParams):
    lr: float = 0.01


def sign_sgd(lr=0.01) -> Transform:
    """A third-party optimizer in a few lines: sign(g), then smx's learning-rate link; its
    own state counts the steps."""
    def update(grads, state, params=None, **extra):
        xp = array_namespace(grads["W"])
        return {k: xp.sign(g) for k, g in grads.items()}, state + 1
    return chain(Transform(lambda params: counter(params), update), scale_by_learning_rate(lr))


class SignPlugin:
    @smx.hookimpl
    def smx_optimizers(self):
        yield smx.OptimizerSpec(name="sign-sgd", factory=sign_sgd, params=SignParams,
                                description="a third-party optimizer")


@pytest.mark.parametrize("backend", ["numpy", "array-api-strict"])
def test_a_third_party_transform_trains_through_the_trainer(backend):
    plugins = Plugins(entry_points=False)
    plugins.register(SignPlugin(), name="sign-plugin")
    assert "sign-sgd" in plugins.names("optimizer")
    cfg = load_config({"data": {"name": "iris"}, "backend": backend, "dtype": "float64",
                       "epochs": 3, "batch_size": 104, "clip_grad_norm": 100.0,
                       "optimizer": {"name": "sign-sgd", "lr": 0.05}}, plugins=plugins)
    splits = load_data(cfg, plugins)
    trainer = Trainer(cfg, splits, plugins.backend(backend), "cpu", plugins)
    result = trainer.fit()
    # (the clip link's state, then the chain's: its own count and the constant rate's)
    clip_state, (count, rate_state) = trainer.opt_state
    assert result.steps == 3 and clip_state == () and int(count) == 3 and rate_state == ()
    # by hand: full-batch sign descent on the independent objective
    p = init_params(splits.n_features, splits.n_classes, cfg)
    for _ in range(3):
        _, g = np_loss_grad(p, splits.X_train, splits.y_train, result.l2)
        p = {k: v - 0.05 * np.sign(g[k]) for k, v in p.items()}
    for k in p:
        np.testing.assert_allclose(result.params[k], p[k], rtol=1e-12, atol=1e-14)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
