"""Fused kernels and the label-index path give the portable one-hot results."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest

from smx import model
from smx.backends import numpy_kernels
from smx.backends.numpy_backend import NumpyBackend
from smx.backends.numpy_kernels import loss_and_grad as numpy_kernel
from smx.backends.strict_backend import StrictBackend


def problem(rng, dtype, intercept=True, n=64, d=7, k=5, scale=3.0):
    X = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, k, size=n)
    params = {"W": (scale * rng.normal(size=(d, k))).astype(dtype)}
    if intercept:
        params["b"] = rng.normal(size=k).astype(dtype)
    return params, X, y, np.eye(k, dtype=dtype)[y]


def tol(dtype):
    return {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("l2", [0.0, 0.25])
@pytest.mark.parametrize("large", [False, True], ids=["cached-batch", "full-batch"])
def test_numpy_kernel_matches_the_portable_core(rng, monkeypatch, dtype, intercept, l2, large):
    if large:  # take the full-batch product orientation with small data
        monkeypatch.setattr(numpy_kernels, "CACHED_BATCH_BYTES", 0)
    params, X, y, Y = problem(rng, dtype, intercept)
    ref_loss, ref = model.loss_and_grad(params, X, Y, l2)
    loss, grads = numpy_kernel(params, X, y, l2)
    np.testing.assert_allclose(loss, ref_loss, **tol(dtype))
    assert np.asarray(loss).dtype == dtype
    assert grads.keys() == ref.keys()
    for name in ref:
        assert grads[name].dtype == dtype and grads[name].shape == ref[name].shape
        np.testing.assert_allclose(grads[name], ref[name], **tol(dtype))


def test_numpy_kernel_leaves_its_inputs_alone(rng):
    params, X, y, _ = problem(rng, np.float64)
    before = {k: v.copy() for k, v in params.items()}, X.copy(), y.copy()
    numpy_kernel(params, X, y, 0.1)
    for name, value in before[0].items():
        np.testing.assert_array_equal(params[name], value)
    np.testing.assert_array_equal(X, before[1])
    np.testing.assert_array_equal(y, before[2])


def test_numpy_kernel_is_stable_for_huge_logits(rng):
    params, X, y, Y = problem(rng, np.float32, scale=1e4)
    loss, grads = numpy_kernel(params, X, y)
    ref_loss, _ = model.loss_and_grad(params, X, Y)
    assert np.isfinite(loss) and np.isfinite(grads["W"]).all()
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)


def test_numpy_backend_offers_the_kernel_and_strict_does_not():
    assert NumpyBackend().loss_and_grad_kernel() is numpy_kernel
    assert StrictBackend().loss_and_grad_kernel() is None


@pytest.mark.parametrize("weighted", [False, True])
def test_class_indices_give_the_one_hot_results_on_strict(rng, weighted):
    params, X, y, Y = problem(rng, np.float32)
    w = rng.uniform(0.5, 2.0, size=X.shape[0]).astype(np.float32) if weighted else None
    sp = {k: xps.asarray(v) for k, v in params.items()}
    sw = None if w is None else xps.asarray(w)
    by_index = model.loss_and_grad(sp, xps.asarray(X), xps.asarray(y), 0.1, sw)
    one_hot = model.loss_and_grad(sp, xps.asarray(X), xps.asarray(Y), 0.1, sw)
    np.testing.assert_allclose(float(by_index[0]), float(one_hot[0]), rtol=1e-6)
    for name in params:
        np.testing.assert_allclose(np.asarray(by_index[1][name]), np.asarray(one_hot[1][name]),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("label_dtype", [np.int8, np.int16, np.int32, np.uint8])
def test_numpy_kernel_takes_narrow_integer_labels(rng, label_dtype):
    """The flat index y·n + i must not be computed in the labels' own (narrow) dtype."""
    params, X, y, Y = problem(rng, np.float64, n=100)
    ref_loss, ref = model.loss_and_grad(params, X, Y)
    loss, grads = numpy_kernel(params, X, y.astype(label_dtype))
    np.testing.assert_allclose(loss, ref_loss, **tol(np.float64))
    for k in ref:
        np.testing.assert_allclose(grads[k], ref[k], **tol(np.float64))
