"""The math: gradient against finite differences and the seed's formula, across backends;
and the objective's partial sums, which add over blocks of rows."""

from __future__ import annotations

import dataclasses

import array_api_strict
import numpy as np
import pytest

from smx import model
from smx.backends.numpy_backend import NumpyBackend
from smx.backends.strict_backend import StrictBackend
from smx.losses import CrossEntropy, targets_t
from smx.objective import Objective, Partial, loss_and_grad, portable_partial
from smx.types import Block


def make_problem(rng, n=40, d=5, k=4, dtype=np.float64):
    X = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, k, size=n)
    params = {"W": rng.normal(size=(d, k)).astype(dtype), "b": rng.normal(size=k).astype(dtype)}
    Y = np.eye(k, dtype=dtype)[y]
    return params, X, y, Y


def loss(params, X, y, l2=0.0, w=None):
    """The objective's value alone (the loss-only path: no gradient computed)."""
    return Objective(CrossEntropy(), l2).value(params, Block(X, y, w))


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_central_differences(rng, l2, weighted):
    params, X, y, _ = make_problem(rng)
    w = rng.uniform(0.5, 2.0, size=X.shape[0]) if weighted else None
    _, grads = loss_and_grad(params, X, y, l2, w)
    h = 1e-6
    for name in ("W", "b"):
        numeric = np.zeros_like(params[name])
        for idx in np.ndindex(params[name].shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            numeric[idx] = (float(loss(plus, X, y, l2, w))
                            - float(loss(minus, X, y, l2, w))) / (2 * h)
        rel = np.linalg.norm(grads[name] - numeric) / np.linalg.norm(numeric)
        assert rel < 1e-6, (name, rel)


def test_gradient_is_the_seed_formula_per_element(rng):
    """dℓ/dθ_ij = (ζ_j(z) − y_j)·x_i for one example, averaged over the batch."""
    params, X, y, _ = make_problem(rng, n=7, d=3, k=4)
    _, grads = loss_and_grad(params, X, y)
    expected = np.zeros_like(params["W"])
    for n in range(X.shape[0]):
        z = X[n] @ params["W"] + params["b"]
        zeta = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        for i in range(X.shape[1]):
            for j in range(params["W"].shape[1]):
                expected[i, j] += (zeta[j] - (1.0 if y[n] == j else 0.0)) * X[n, i]
    np.testing.assert_allclose(grads["W"], expected / X.shape[0], rtol=1e-13, atol=1e-15)


def test_loss_is_cross_entropy_and_matches_loss_and_grad(rng):
    params, X, y, _ = make_problem(rng)
    Z = X @ params["W"] + params["b"]
    p = np.exp(Z - Z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(len(y)), y])) + 0.5 * 0.2 * np.sum(params["W"] ** 2)
    fused, _ = loss_and_grad(params, X, y, 0.2)
    np.testing.assert_allclose(float(loss(params, X, y, 0.2)), expected, rtol=1e-13)
    np.testing.assert_allclose(float(fused), expected, rtol=1e-13)


def test_numpy_and_array_api_strict_agree_in_float64(rng):
    params, X, y, _ = make_problem(rng)
    loss_np, g_np = loss_and_grad(params, X, y, 0.1)
    xp = array_api_strict
    sp = {k: xp.asarray(v) for k, v in params.items()}
    Xs, ys = xp.asarray(X), xp.asarray(y)
    loss_s, g_s = loss_and_grad(sp, Xs, ys, 0.1)
    np.testing.assert_allclose(float(loss_s), float(loss_np), rtol=1e-12, atol=0)
    for k in g_np:
        np.testing.assert_allclose(np.from_dlpack(g_s[k]), g_np[k], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.from_dlpack(model.predict_proba(sp, Xs)),
                               model.predict_proba(params, X), rtol=1e-12)
    np.testing.assert_array_equal(np.from_dlpack(model.predict(sp, Xs)), model.predict(params, X))
    assert float(model.accuracy(sp, Xs, ys)) == float(model.accuracy(params, X, y))


def test_every_core_function_runs_on_array_api_strict(rng):
    params, X, y, _ = make_problem(rng, dtype=np.float32)
    xp = array_api_strict
    dev = xp.Device("device1")
    sp = {k: xp.asarray(v, device=dev) for k, v in params.items()}
    Xs, ys = xp.asarray(X, device=dev), xp.asarray(y, device=dev)
    Yt = targets_t(xp, ys, 4, xp.float32)
    Zt = model.logits_t(sp, Xs)
    part = portable_partial(CrossEntropy(), sp, Block(Xs, ys))
    outputs = [model.logits(sp, Xs), Zt, model.log_softmax(Xs), model.softmax(Xs), Yt,
               *model.linear_grads(sp, Xs, Zt - Yt).values(), part.loss, *part.grads.values(),
               loss(sp, Xs, ys, 0.1), model.predict_proba(sp, Xs), model.predict(sp, Xs),
               model.accuracy(sp, Xs, ys), *loss_and_grad(sp, Xs, ys, 0.1)[1].values(),
               loss_and_grad(sp, Xs, ys, 0.1, xp.ones(40, device=dev))[0]]
    for out in outputs:
        assert out.device == dev
    assert loss_and_grad(sp, Xs, ys)[0].dtype == xp.float32


def test_stable_for_huge_logits():
    Z = np.array([[1000.0, 0.0, -1000.0], [-1e4, 1e4, 0.0]])
    logp = model.log_softmax(Z)
    assert np.isfinite(logp).all()
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0)
    params = {"W": np.array([[800.0, -800.0]])}
    value, grads = loss_and_grad(params, np.array([[1.0], [-1.0]]), np.array([0, 1]))
    assert np.isfinite(float(value)) and np.isfinite(grads["W"]).all()


def test_functions_do_not_mutate_inputs(rng):
    params, X, y, _ = make_problem(rng)
    w = np.ones(X.shape[0])
    before = {k: v.copy() for k, v in params.items()}, X.copy(), y.copy(), w.copy()
    loss_and_grad(params, X, y, 0.5, w)
    loss(params, X, y, 0.5, w)
    model.predict_proba(params, X)
    for k in params:
        np.testing.assert_array_equal(params[k], before[0][k])
    np.testing.assert_array_equal(X, before[1])
    np.testing.assert_array_equal(y, before[2])
    np.testing.assert_array_equal(w, before[3])


def test_l2_applies_to_W_only_and_no_intercept_model(rng):
    params, X, y, _ = make_problem(rng)
    _, g0 = loss_and_grad(params, X, y, 0.0)
    _, g1 = loss_and_grad(params, X, y, 0.7)
    np.testing.assert_allclose(g1["W"] - g0["W"], 0.7 * params["W"], rtol=1e-12)
    np.testing.assert_array_equal(g1["b"], g0["b"])
    _, g = loss_and_grad({"W": params["W"]}, X, y)
    assert set(g) == {"W"}


def test_uniform_weights_equal_plain_mean(rng):
    params, X, y, _ = make_problem(rng)
    a, ga = loss_and_grad(params, X, y, 0.1)
    b, gb = loss_and_grad(params, X, y, 0.1, np.full(X.shape[0], 3.0))
    np.testing.assert_allclose(float(a), float(b), rtol=1e-13)
    np.testing.assert_allclose(ga["W"], gb["W"], rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_takes_class_indices_like_one_hot_on_strict(rng, weighted):
    """Evaluation passes class indices (no one-hot copy of a split stays on the device); they
    give the one-hot cross-entropy −Σ w·Σ_j Y_j log p_j / Σ w + penalty."""
    params, X, y, Y = make_problem(rng, dtype=np.float32)
    xp = array_api_strict
    sp = {k: xp.asarray(v) for k, v in params.items()}
    w_host = rng.uniform(0.5, 2, size=40).astype(np.float32) if weighted else None
    w = None if w_host is None else xp.asarray(w_host)
    by_index = loss(sp, xp.asarray(X), xp.asarray(y), 0.1, w)
    logp = model.log_softmax(X @ params["W"] + params["b"])  # float32 on NumPy
    r = np.ones(40, dtype=np.float32) if w_host is None else w_host
    by_one_hot = (-np.sum(r * np.sum(Y * logp, axis=1)) / np.sum(r)
                  + 0.05 * np.sum(params["W"] ** 2))
    assert by_index.dtype == xp.float32
    np.testing.assert_allclose(float(by_index), float(by_one_hot), rtol=1e-6)


@pytest.mark.parametrize("backend", [NumpyBackend(), StrictBackend()], ids=["numpy", "strict"])
@pytest.mark.parametrize("weighted", [False, True])
def test_placed_data_holds_no_one_hot_copy(rng, backend, weighted):
    """A Block is features, class indices and sample weights: nothing of size n·K."""
    assert [f.name for f in dataclasses.fields(Block)] == ["X", "y", "w"]
    _, X, y, _ = make_problem(rng)
    w = rng.uniform(0.5, 2.0, size=40) if weighted else None
    block = backend.place(X, y, w, "cpu", "float32")
    assert isinstance(block, Block) and block.n == 40
    assert tuple(block.X.shape) == (40, 5) and tuple(block.y.shape) == (40,)
    assert block.y.dtype == backend.namespace().int64
    np.testing.assert_array_equal(backend.to_host(block.y), y)
    if weighted:
        assert tuple(block.w.shape) == (40,) and block.w.dtype == backend.namespace().float32
    else:
        assert block.w is None


# --- the objective: partial sums over blocks of rows, finished once -------------------------


def host(a):
    return a if isinstance(a, (int, float, np.ndarray)) else np.from_dlpack(a)


def assert_partials_equal(a: Partial, b: Partial, **tol):
    np.testing.assert_allclose(host(a.loss), host(b.loss), **tol)
    np.testing.assert_allclose(host(a.weight), host(b.weight), **tol)
    assert (a.grads is None) == (b.grads is None)
    if a.grads is not None:
        assert a.grads.keys() == b.grads.keys()
        for k in a.grads:
            np.testing.assert_allclose(host(a.grads[k]), host(b.grads[k]), **tol)


OBJECTIVES = {
    "portable": lambda: Objective(CrossEntropy(), 0.3),
    "numpy-kernel": lambda: Objective(CrossEntropy(), 0.3,
                                      kernel=NumpyBackend().kernel(CrossEntropy())),
    "smoothed-class-weights": lambda: Objective(CrossEntropy(label_smoothing=0.1), 0.3,
                                                class_weight=np.array([1.0, 2.0, 0.5, 3.0])),
}


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("which", OBJECTIVES)
@pytest.mark.parametrize("intercept", [True, False])
def test_partials_of_two_halves_add_up_to_the_whole(rng, weighted, which, intercept):
    params, X, y, _ = make_problem(rng, n=41)  # halves of 20 and 21 rows
    if not intercept:
        del params["b"]
    w = rng.uniform(0.5, 2.0, size=41) if weighted else None
    objective = OBJECTIVES[which]()
    whole = Block(X, y, w)
    halves = [Block(X[s], y[s], None if w is None else w[s]) for s in (slice(0, 20),
                                                                       slice(20, None))]
    for grad in (True, False):
        total = objective.partial(params, whole, grad=grad)
        summed = objective.partial(params, halves[0], grad=grad) + \
            objective.partial(params, halves[1], grad=grad)
        assert_partials_equal(total, summed, rtol=1e-12, atol=1e-12)
        if grad:
            assert set(total.grads) == set(params)
        if not weighted and which != "smoothed-class-weights":
            assert total.weight == summed.weight == 41 and isinstance(summed.weight, int)
    # finish(sum of halves) is value_and_grad of the whole block
    value, grads = objective.value_and_grad(params, whole)
    summed = objective.partial(params, halves[0]) + objective.partial(params, halves[1])
    v2, g2 = objective.finish(summed, params)
    np.testing.assert_allclose(float(v2), float(value), rtol=1e-12, atol=1e-12)
    assert g2.keys() == grads.keys()
    for k in grads:
        np.testing.assert_allclose(g2[k], grads[k], rtol=1e-12, atol=1e-12)
    # and value (loss only) agrees, with and without the penalty
    np.testing.assert_allclose(float(objective.value(params, whole)), float(value), rtol=1e-12)
    penalty = 0.5 * 0.3 * np.sum(params["W"] ** 2)
    np.testing.assert_allclose(float(objective.value(params, whole, penalty=False)),
                               float(value) - penalty, rtol=1e-12)


def test_partials_add_on_array_api_strict(rng):
    params, X, y, _ = make_problem(rng, n=41)
    w = rng.uniform(0.5, 2.0, size=41)
    xp = array_api_strict
    sp = {k: xp.asarray(v) for k, v in params.items()}
    objective = Objective(CrossEntropy(), 0.3)

    def block(s):
        return Block(xp.asarray(X[s]), xp.asarray(y[s]), xp.asarray(w[s]))

    total = objective.partial(sp, block(slice(None)))
    summed = objective.partial(sp, block(slice(0, 20))) + \
        objective.partial(sp, block(slice(20, None)))
    assert_partials_equal(total, summed, rtol=1e-12, atol=1e-12)
    ref = objective.partial(params, Block(X, y, w))  # and NumPy's, to rounding
    assert_partials_equal(total, ref, rtol=1e-12, atol=1e-12)
