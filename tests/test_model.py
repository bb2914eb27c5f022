"""The math: gradient against finite differences and the seed's formula, across backends."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest

from smx import model


def make_problem(rng, n=40, d=5, k=4, dtype=np.float64):
    X = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, k, size=n)
    params = {"W": rng.normal(size=(d, k)).astype(dtype), "b": rng.normal(size=k).astype(dtype)}
    Y = np.eye(k, dtype=dtype)[y]
    return params, X, y, Y


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_central_differences(rng, l2, weighted):
    params, X, _, Y = make_problem(rng)
    w = rng.uniform(0.5, 2.0, size=X.shape[0]) if weighted else None
    _, grads = model.loss_and_grad(params, X, Y, l2, w)
    h = 1e-6
    for name in ("W", "b"):
        numeric = np.zeros_like(params[name])
        for idx in np.ndindex(params[name].shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            numeric[idx] = (float(model.loss(plus, X, Y, l2, w))
                            - float(model.loss(minus, X, Y, l2, w))) / (2 * h)
        rel = np.linalg.norm(grads[name] - numeric) / np.linalg.norm(numeric)
        assert rel < 1e-6, (name, rel)


def test_gradient_is_the_seed_formula_per_element(rng):
    """dℓ/dθ_ij = (ζ_j(z) − y_j)·x_i for one example, averaged over the batch."""
    params, X, y, Y = make_problem(rng, n=7, d=3, k=4)
    _, grads = model.loss_and_grad(params, X, Y)
    expected = np.zeros_like(params["W"])
    for n in range(X.shape[0]):
        z = X[n] @ params["W"] + params["b"]
        zeta = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        for i in range(X.shape[1]):
            for j in range(params["W"].shape[1]):
                expected[i, j] += (zeta[j] - (1.0 if y[n] == j else 0.0)) * X[n, i]
    np.testing.assert_allclose(grads["W"], expected / X.shape[0], rtol=1e-13, atol=1e-15)


def test_loss_is_cross_entropy_and_matches_loss_and_grad(rng):
    params, X, y, Y = make_problem(rng)
    Z = X @ params["W"] + params["b"]
    p = np.exp(Z - Z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(len(y)), y])) + 0.5 * 0.2 * np.sum(params["W"] ** 2)
    fused, _ = model.loss_and_grad(params, X, Y, 0.2)
    np.testing.assert_allclose(float(model.loss(params, X, Y, 0.2)), expected, rtol=1e-13)
    np.testing.assert_allclose(float(fused), expected, rtol=1e-13)


def test_numpy_and_array_api_strict_agree_in_float64(rng):
    params, X, y, Y = make_problem(rng)
    loss_np, g_np = model.loss_and_grad(params, X, Y, 0.1)
    xp = array_api_strict
    sp = {k: xp.asarray(v) for k, v in params.items()}
    Xs, ys = xp.asarray(X), xp.asarray(y)
    Ys = model.one_hot(ys, Y.shape[1], xp.float64)
    loss_s, g_s = model.loss_and_grad(sp, Xs, Ys, 0.1)
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
    Ys = model.one_hot(ys, 4, xp.float32)
    outputs = [model.logits(sp, Xs), model.log_softmax(Xs), model.softmax(Xs), Ys,
               model.loss(sp, Xs, Ys, 0.1), model.predict_proba(sp, Xs), model.predict(sp, Xs),
               model.accuracy(sp, Xs, ys), *model.loss_and_grad(sp, Xs, Ys, 0.1)[1].values(),
               model.loss_and_grad(sp, Xs, Ys, 0.1, xp.ones(40, device=dev))[0]]
    for out in outputs:
        assert out.device == dev
    assert model.loss_and_grad(sp, Xs, Ys)[0].dtype == xp.float32


def test_stable_for_huge_logits():
    Z = np.array([[1000.0, 0.0, -1000.0], [-1e4, 1e4, 0.0]])
    logp = model.log_softmax(Z)
    assert np.isfinite(logp).all()
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0)
    params = {"W": np.array([[800.0, -800.0]])}
    loss, grads = model.loss_and_grad(params, np.array([[1.0], [-1.0]]), np.eye(2))
    assert np.isfinite(float(loss)) and np.isfinite(grads["W"]).all()


def test_functions_do_not_mutate_inputs(rng):
    params, X, _, Y = make_problem(rng)
    before = {k: v.copy() for k, v in params.items()}, X.copy(), Y.copy()
    model.loss_and_grad(params, X, Y, 0.5, np.ones(X.shape[0]))
    model.predict_proba(params, X)
    for k in params:
        np.testing.assert_array_equal(params[k], before[0][k])
    np.testing.assert_array_equal(X, before[1])
    np.testing.assert_array_equal(Y, before[2])


def test_l2_applies_to_W_only_and_no_intercept_model(rng):
    params, X, _, Y = make_problem(rng)
    _, g0 = model.loss_and_grad(params, X, Y, 0.0)
    _, g1 = model.loss_and_grad(params, X, Y, 0.7)
    np.testing.assert_allclose(g1["W"] - g0["W"], 0.7 * params["W"], rtol=1e-12)
    np.testing.assert_array_equal(g1["b"], g0["b"])
    _, g = model.loss_and_grad({"W": params["W"]}, X, Y)
    assert set(g) == {"W"}


def test_uniform_weights_equal_plain_mean(rng):
    params, X, _, Y = make_problem(rng)
    a, ga = model.loss_and_grad(params, X, Y, 0.1)
    b, gb = model.loss_and_grad(params, X, Y, 0.1, np.full(X.shape[0], 3.0))
    np.testing.assert_allclose(float(a), float(b), rtol=1e-13)
    np.testing.assert_allclose(ga["W"], gb["W"], rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_takes_class_indices_like_one_hot_on_strict(rng, weighted):
    """Evaluation passes class indices: no one-hot copy of a split stays on the device."""
    params, X, y, Y = make_problem(rng, dtype=np.float32)
    xp = array_api_strict
    sp = {k: xp.asarray(v) for k, v in params.items()}
    w = xp.asarray(rng.uniform(0.5, 2, size=40).astype(np.float32)) if weighted else None
    by_index = model.loss(sp, xp.asarray(X), xp.asarray(y), 0.1, w)
    by_one_hot = model.loss(sp, xp.asarray(X), xp.asarray(Y), 0.1, w)
    assert by_index.dtype == xp.float32
    np.testing.assert_allclose(float(by_index), float(by_one_hot), rtol=1e-6)


def test_device_data_holds_no_one_hot_copy():
    import dataclasses

    from smx.training import DeviceData

    assert [f.name for f in dataclasses.fields(DeviceData)] == ["X", "y"]
