"""Fused kernels and the label-index path give the portable one-hot results."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest

from smx import model
from smx.backends import numpy_kernels
from smx.backends.numpy_backend import NumpyBackend
from smx.backends.numpy_kernels import cross_entropy_partial as numpy_kernel
from smx.backends.strict_backend import StrictBackend
from smx.losses import CrossEntropy
from smx.objective import Objective, Partial, portable_partial
from smx.types import Block


def problem(rng, dtype, intercept=True, n=64, d=7, k=5, scale=3.0):
    X = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, k, size=n)
    params = {"W": (scale * rng.normal(size=(d, k))).astype(dtype)}
    if intercept:
        params["b"] = rng.normal(size=k).astype(dtype)
    return params, X, y, np.eye(k, dtype=dtype)[y]


def tol(dtype):
    return {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


#: the options the kernel accepts: sample weights, class weights, both (unsmoothed only)
WEIGHTS = ["none", "sample", "class", "both"]


def weights(rng, which, n, k, dtype):
    w = rng.uniform(0.5, 2.0, size=n).astype(dtype) if which in ("sample", "both") else None
    cw = rng.uniform(0.5, 2.0, size=k).astype(dtype) if which in ("class", "both") else None
    return w, cw


def assert_partial_matches(got: Partial, ref: Partial, dtype):
    np.testing.assert_allclose(got.loss, ref.loss, **tol(dtype))
    assert np.asarray(got.loss).dtype == dtype
    if isinstance(ref.weight, int):
        assert got.weight == ref.weight and isinstance(got.weight, int)
    else:
        np.testing.assert_allclose(got.weight, ref.weight, **tol(dtype))
        assert np.asarray(got.weight).dtype == dtype
    if ref.grads is None:
        assert got.grads is None
        return
    assert got.grads.keys() == ref.grads.keys()
    for name in ref.grads:
        g, r = got.grads[name], ref.grads[name]
        assert g.dtype == dtype and g.shape == r.shape
        np.testing.assert_allclose(g, r, **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("l2", [0.0, 0.25])
@pytest.mark.parametrize("large", [False, True], ids=["cached-batch", "full-batch"])
@pytest.mark.parametrize("which", WEIGHTS)
def test_numpy_kernel_matches_the_portable_core(rng, monkeypatch, dtype, intercept, l2, large,
                                                which):
    if large:  # take the full-batch product orientation with small data
        monkeypatch.setattr(numpy_kernels, "CACHED_BATCH_BYTES", 0)
    params, X, y, _ = problem(rng, dtype, intercept)
    w, cw = weights(rng, which, X.shape[0], params["W"].shape[1], dtype)
    block, ce = Block(X, y, w), CrossEntropy()
    for grad in (True, False):
        ref = portable_partial(ce, params, block, cw, grad=grad)
        got = numpy_kernel(params, block, cw, grad=grad)
        assert_partial_matches(got, ref, dtype)
    # and finished, with the penalty: the objective with the kernel is the portable one
    ref_loss, ref = Objective(ce, l2, class_weight=cw).value_and_grad(params, block)
    loss, grads = Objective(ce, l2, class_weight=cw, kernel=numpy_kernel).value_and_grad(
        params, block)
    np.testing.assert_allclose(loss, ref_loss, **tol(dtype))
    assert np.asarray(loss).dtype == dtype
    assert grads.keys() == ref.keys()
    for name in ref:
        assert grads[name].dtype == dtype and grads[name].shape == ref[name].shape
        np.testing.assert_allclose(grads[name], ref[name], **tol(dtype))


@pytest.mark.parametrize("which", WEIGHTS)
def test_numpy_kernel_leaves_its_inputs_alone(rng, which):
    params, X, y, _ = problem(rng, np.float64)
    w, cw = weights(rng, which, X.shape[0], 5, np.float64)
    inputs = [params, X, y, w, cw]
    before = [{k: v.copy() for k, v in params.items()}, X.copy(), y.copy(),
              None if w is None else w.copy(), None if cw is None else cw.copy()]
    Objective(CrossEntropy(), 0.1, class_weight=cw, kernel=numpy_kernel).value_and_grad(
        params, Block(X, y, w))
    numpy_kernel(params, Block(X, y, w), cw, grad=False)
    for name, value in before[0].items():
        np.testing.assert_array_equal(params[name], value)
    for now, then in zip(inputs[1:], before[1:], strict=True):
        if then is not None:
            np.testing.assert_array_equal(now, then)


def test_numpy_kernel_is_stable_for_huge_logits(rng):
    params, X, y, _ = problem(rng, np.float32, scale=1e4)
    part = numpy_kernel(params, Block(X, y))
    ref = portable_partial(CrossEntropy(), params, Block(X, y))
    assert np.isfinite(part.loss) and np.isfinite(part.grads["W"]).all()
    np.testing.assert_allclose(part.loss / part.weight, ref.loss / ref.weight, rtol=1e-5)


def test_numpy_backend_offers_the_kernel_and_strict_does_not():
    kernel = NumpyBackend().kernel(CrossEntropy())
    assert kernel.block_kernel is numpy_kernel  # over fixed row pieces (numpy_pieces)
    assert NumpyBackend().kernel(CrossEntropy(label_smoothing=0.0)).block_kernel is numpy_kernel
    # an option the kernel does not compute, or a loss it does not know: the portable core
    assert NumpyBackend().kernel(CrossEntropy(label_smoothing=0.1)) is None
    assert NumpyBackend().kernel(object()) is None
    assert StrictBackend().kernel(CrossEntropy()) is None


def one_hot_reference(xp, params, X, Y, l2, w):
    """The portable one-hot formulas in the arrays' own dtype: mean of −Σ_j Y_j log p_j
    (weighted), ``(softmax − Y)·w / Σw`` for the logits, plus the penalty."""
    Z = model.logits(params, X)
    n = X.shape[0]
    r = xp.ones((n,), dtype=X.dtype) if w is None else w
    total = xp.sum(r)
    value = -xp.sum(r * xp.sum(Y * model.log_softmax(Z), axis=1)) / total
    value = value + 0.5 * l2 * xp.sum(params["W"] * params["W"])
    G = (model.softmax(Z) - Y) * r[:, None] / total
    return value, {"W": X.T @ G + l2 * params["W"], "b": xp.sum(G, axis=0)}


@pytest.mark.parametrize("weighted", [False, True])
def test_class_indices_give_the_one_hot_results_on_strict(rng, weighted):
    params, X, y, Y = problem(rng, np.float32)
    w = rng.uniform(0.5, 2.0, size=X.shape[0]).astype(np.float32) if weighted else None
    sp = {k: xps.asarray(v) for k, v in params.items()}
    sw = None if w is None else xps.asarray(w)
    by_index = Objective(CrossEntropy(), 0.1).value_and_grad(
        sp, Block(xps.asarray(X), xps.asarray(y), sw))
    one_hot = one_hot_reference(xps, sp, xps.asarray(X), xps.asarray(Y), 0.1, sw)
    assert by_index[0].dtype == xps.float32
    np.testing.assert_allclose(float(by_index[0]), float(one_hot[0]), rtol=1e-6)
    for name in params:
        np.testing.assert_allclose(np.from_dlpack(by_index[1][name]),
                                   np.from_dlpack(one_hot[1][name]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("label_dtype", [np.int8, np.int16, np.int32, np.uint8])
def test_numpy_kernel_takes_narrow_integer_labels(rng, label_dtype):
    """The flat index y·n + i must not be computed in the labels' own (narrow) dtype."""
    params, X, y, _ = problem(rng, np.float64, n=100)
    ref = portable_partial(CrossEntropy(), params, Block(X, y))
    got = numpy_kernel(params, Block(X, y.astype(label_dtype)))
    assert_partial_matches(got, ref, np.float64)
