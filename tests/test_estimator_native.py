"""The estimator keeps PyTorch, JAX and array-api-strict data (any registered engine's
library) where it is (scikit-learn's array-API convention): it trains on that library's
engine and answers in that library."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

import smx
from smx import SoftmaxRegression
from smx.backends.strict_backend import StrictBackend
from smx.estimator_input import native_engine, to_numpy
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


# --- any registered engine's library: array-api-strict, and a third-party engine ------------

xps = pytest.importorskip("array_api_strict")


def strict_iris(device: str = "CPU_DEVICE"):
    dev = xps.Device(device)
    return xps.asarray(X_NP, device=dev), xps.asarray(Y_NP, device=dev)


def test_array_api_strict_input_trains_on_its_engine_and_predicts_in_it():
    X, y = strict_iris()
    kw = {"C": 1.0, "tol": 1e-10, "max_iter": 500}
    est = SoftmaxRegression(backend="auto", **kw).fit(X, y)
    ref = SoftmaxRegression(**kw).fit(X_NP, Y_NP)
    assert est.model_.meta == {"backend": "array-api-strict", "dtype": "float64"}
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-10)
    proba, labels, scores = est.predict_proba(X), est.predict(X), est.decision_function(X)
    for out in (proba, labels, scores):
        assert type(out).__module__.split(".")[0] == "array_api_strict"
    assert proba.dtype == xps.float64 and labels.dtype == xps.int64
    np.testing.assert_allclose(np.asarray(proba), ref.predict_proba(X_NP), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(labels), ref.predict(X_NP))
    np.testing.assert_allclose(np.asarray(est.predict_log_proba(X)),
                               ref.predict_log_proba(X_NP), rtol=0, atol=1e-10)


def test_array_api_strict_input_stays_on_its_device():
    X, y = strict_iris("device1")
    w = np.linspace(0.5, 2.0, len(Y_NP))
    est = SoftmaxRegression(backend="array-api-strict", C=1.0).fit(
        X, y, sample_weight=xps.asarray(w, device=X.device))
    ref = SoftmaxRegression(C=1.0).fit(X_NP, Y_NP, sample_weight=w)
    np.testing.assert_allclose(to_numpy(est.coef_), ref.coef_, rtol=0, atol=1e-8)
    assert est.predict_proba(X).device == X.device == est.predict(X).device
    assert est.coef_.device == est.intercept_.device == est.classes_.device == X.device


def test_array_api_strict_input_with_host_labels_and_string_classes():
    X, _ = strict_iris()
    names = np.array(["setosa", "versicolor", "virginica"])[Y_NP]
    est = SoftmaxRegression(backend="auto", C=1.0, standardize=True).fit(X, names)
    ref = SoftmaxRegression(C=1.0, standardize=True).fit(X_NP, names)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(est.predict(X), ref.predict(X_NP))  # labels on the host


def test_array_api_strict_input_is_checked_in_its_namespace():
    X, y = strict_iris()
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        SoftmaxRegression(backend="auto").fit(X, y[:10])
    bad = xps.where(xps.arange(X.shape[0])[:, None] == 3, xps.nan, X)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        SoftmaxRegression(backend="auto").fit(bad, y)
    est = SoftmaxRegression(backend="auto").fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features"):
        est.predict(X[:, :2])


def test_a_named_other_backend_takes_array_api_strict_input_through_its_host_copy():
    X, y = strict_iris("device1")
    est = SoftmaxRegression(backend="numpy", C=1.0).fit(X, y)
    assert est.model_.meta["backend"] == "numpy"
    ref = SoftmaxRegression(C=1.0).fit(X_NP, Y_NP)
    np.testing.assert_array_equal(to_numpy(est.coef_), ref.coef_)
    assert est.coef_.device == X.device  # trained on the host, fitted where X lives


class StrictTwin(StrictBackend):
    name = "strict-twin"
    description = "a third-party engine on array_api_strict"


class TwinPlugin:
    @smx.hookimpl
    def smx_backends(self):
        yield StrictTwin()


@pytest.fixture
def strict_twin():
    get_plugins.cache_clear()
    get_plugins().register(TwinPlugin(), name="strict-twin-plugin")
    yield
    get_plugins.cache_clear()


def test_a_registered_engine_named_by_backend_takes_its_librarys_input(strict_twin):
    X, y = strict_iris()
    est = SoftmaxRegression(backend="strict-twin", C=1.0).fit(X, y)
    assert est.model_.meta["backend"] == "strict-twin"
    assert type(est.predict(X)).__module__.split(".")[0] == "array_api_strict"
    auto = SoftmaxRegression(backend="auto", C=1.0).fit(X, y)  # the library's own first
    assert auto.model_.meta["backend"] == "array-api-strict"
    np.testing.assert_array_equal(est.coef_, auto.coef_)


def test_inputs_no_engine_runs_on_take_the_numpy_path():
    assert native_engine(X_NP) is None and native_engine([[1.0, 2.0]]) is None
    assert native_engine(xps.asarray(X_NP)) == ("array-api-strict", "cpu")
    assert native_engine(xps.asarray(X_NP, device=xps.Device("device2")),
                         "numpy") == ("array-api-strict", "device2")


def test_the_search_asks_no_engine_of_a_library_array_api_compat_tells(monkeypatch):
    da = pytest.importorskip("dask.array")
    asked = []
    for name in ("torch", "jax", "cupy"):
        backend = get_plugins().get("backend", name)
        monkeypatch.setattr(type(backend), "namespace", lambda self: asked.append(self.name))
    assert native_engine(da.from_array(X_NP)) is None  # no engine's: scikit-learn's path
    assert native_engine(xps.asarray(X_NP)) == ("array-api-strict", "cpu")
    assert asked == []
