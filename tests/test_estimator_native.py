"""The estimator keeps PyTorch and JAX data where it is (scikit-learn's array-API convention):
it trains on that library without a trip of X through NumPy and answers in that library."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from smx import SoftmaxRegression
from smx.plugins import get_plugins

X_NP, Y_NP = load_iris(return_X_y=True)
X_NP = StandardScaler().fit_transform(X_NP)


def to_native(lib: str, a: np.ndarray):
    if lib == "torch":
        torch = pytest.importorskip("torch", reason="torch is not installed")
        return torch.asarray(a)
    jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")
    return jnp.asarray(a)


@pytest.fixture(params=["torch", "jax"])
def lib(request):
    return request.param


def test_fit_trains_on_the_inputs_library_and_predicts_in_it(lib, monkeypatch):
    X, y = to_native(lib, X_NP.astype(np.float32)), to_native(lib, Y_NP)
    backend = get_plugins().backend(lib)
    seen = []
    original = type(backend).from_host

    def watching(self, array, device, dtype=None):
        seen.append(type(array).__module__.split(".")[0])
        return original(self, array, device, dtype)

    monkeypatch.setattr(type(backend), "from_host", watching)
    est = SoftmaxRegression(backend="auto", dtype="float32", C=1.0).fit(X, y)
    monkeypatch.undo()
    assert est.model_.meta["backend"] == lib
    # X (and y) reached the engine as the library's own arrays, never as NumPy
    assert seen[0] == seen[1] == ("torch" if lib == "torch" else "jaxlib"), seen
    ref = SoftmaxRegression(dtype="float32", C=1.0).fit(X_NP.astype(np.float32), Y_NP)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=2e-3, atol=2e-3)
    proba, labels = est.predict_proba(X), est.predict(X)
    assert type(proba).__module__.split(".")[0] == type(X).__module__.split(".")[0]
    np.testing.assert_allclose(np.asarray(proba), ref.predict_proba(X_NP), atol=2e-3)
    assert np.mean(np.asarray(labels) == ref.predict(X_NP)) > 0.97
    assert type(labels).__module__.split(".")[0] == type(X).__module__.split(".")[0]


def test_numpy_input_keeps_numpy_behaviour():
    est = SoftmaxRegression(backend="auto").fit(X_NP, Y_NP)
    assert est.model_.meta["backend"] == "numpy" and isinstance(est.predict(X_NP), np.ndarray)


def test_a_named_other_backend_still_takes_native_input_through_numpy(lib):
    X = to_native(lib, X_NP)
    est = SoftmaxRegression(backend="numpy").fit(np.asarray(X), Y_NP)
    assert est.model_.meta["backend"] == "numpy"
