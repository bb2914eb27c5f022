"""scikit-learn's array-API convention (issue 20, item 2): fitted ``coef_``, ``intercept_``,
``n_iter_`` and numeric ``classes_`` in the namespace and on the device of the training
input, in the training dtype; predictions in the input's namespace; array-api-strict input
with and without ``array_api_dispatch``; scikit-learn's own array-API checks over every
installed namespace (NumPy, array-api-strict, PyTorch CPU; CuPy and GPUs where present).
The host copy (``model_``) keeps the model file, ``smx predict`` and pickling NumPy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from sklearn.utils._array_api import (
    yield_mixed_namespace_input_permutations,
    yield_namespace_device_dtype_combinations,
)
from sklearn.utils.estimator_checks import (
    check_array_api_input,
    check_array_api_input_and_values,
    check_array_api_mixed_inputs,
    check_array_api_same_namespace,
)

from smx import SoftmaxRegression
from smx.estimator_input import to_numpy

xps = pytest.importorskip("array_api_strict")

X_NP, Y_NP = load_iris(return_X_y=True)
X_NP = StandardScaler().fit_transform(X_NP)


@pytest.fixture(autouse=True)
def scipy_array_api(monkeypatch):
    """scikit-learn's array-API dispatch (and its checks) need SciPy's, as in its CI."""
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")


def strict(a: np.ndarray, device: str = "CPU_DEVICE", dtype=None):
    return xps.asarray(a, dtype=dtype, device=xps.Device(device))


def namespace(a) -> str:
    return type(a).__module__.split(".")[0]


# --- fitted attributes where the data lives --------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "auto"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fitted_attributes_are_in_the_inputs_namespace_device_and_training_dtype(backend,
                                                                                  dtype):
    X, y = strict(X_NP, "device1"), strict(Y_NP, "device1")
    est = SoftmaxRegression(backend=backend, dtype=dtype, C=1.0).fit(X, y)
    want = xps.float64 if dtype == "float64" else xps.float32
    for name in ("coef_", "intercept_", "classes_", "n_iter_"):
        attr = getattr(est, name)
        assert namespace(attr) == "array_api_strict" and attr.device == X.device, name
    assert est.coef_.dtype == est.intercept_.dtype == want
    assert est.classes_.dtype == xps.int64 and est.n_iter_.dtype == xps.int32
    assert est.model_.W.__class__ is np.ndarray  # the host copy the model file writes
    ref = SoftmaxRegression(dtype=dtype, C=1.0).fit(X_NP, Y_NP)
    np.testing.assert_allclose(to_numpy(est.coef_), ref.coef_, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_input_gives_torch_attributes(dtype):
    torch = pytest.importorskip("torch")
    X, y = torch.asarray(X_NP), torch.asarray(Y_NP)
    est = SoftmaxRegression(dtype=dtype, C=1.0).fit(X, y)
    assert isinstance(est.coef_, torch.Tensor) and isinstance(est.classes_, torch.Tensor)
    assert est.coef_.dtype == getattr(torch, dtype) and est.coef_.device == X.device
    assert isinstance(est.predict(X), torch.Tensor)


def test_float32_training_keeps_float32_attributes_on_numpy():
    est = SoftmaxRegression(dtype="float32", C=1.0).fit(X_NP, Y_NP)
    assert est.coef_.dtype == est.intercept_.dtype == np.float32
    assert SoftmaxRegression(C=1.0).fit(X_NP.astype(np.float32), Y_NP).coef_.dtype == np.float64
    binary = SoftmaxRegression(dtype="float32").fit(X_NP, Y_NP == 1)
    assert binary.coef_.dtype == np.float32 and binary.predict_proba(X_NP).shape == (150, 2)


def test_string_classes_stay_numpy():
    names = np.array(["setosa", "versicolor", "virginica"])[Y_NP]
    est = SoftmaxRegression(C=1.0).fit(strict(X_NP), names)
    assert namespace(est.coef_) == "array_api_strict" and isinstance(est.classes_, np.ndarray)
    np.testing.assert_array_equal(est.predict(strict(X_NP)), est.predict(X_NP))


# --- array-api-strict input with and without dispatch --------------------------------------


@pytest.mark.parametrize("dispatch", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "auto"])
@pytest.mark.parametrize("device,dtype", [("CPU_DEVICE", "float64"), ("device1", "float32")])
def test_array_api_strict_input_with_and_without_dispatch(dispatch, backend, device, dtype):
    X = strict(X_NP, device, getattr(xps, dtype))
    y, w = strict(Y_NP, device), strict(np.linspace(0.5, 2.0, 150), device)
    ref = SoftmaxRegression(C=1.0).fit(X_NP.astype(dtype), Y_NP, sample_weight=to_numpy(w))
    with sklearn.config_context(array_api_dispatch=dispatch):
        est = SoftmaxRegression(backend=backend, C=1.0).fit(X, y, sample_weight=w)
        proba, labels = est.predict_proba(X), est.predict(X)
        score = est.score(X, y)
    assert namespace(proba) == namespace(labels) == "array_api_strict"
    assert proba.device == labels.device == X.device
    np.testing.assert_allclose(to_numpy(proba), ref.predict_proba(X_NP.astype(dtype)),
                               atol=1e-5)
    assert isinstance(score, float) and score == pytest.approx(ref.score(X_NP, Y_NP))


def test_under_dispatch_predicting_in_another_namespace_is_refused():
    est = SoftmaxRegression(C=1.0).fit(strict(X_NP), strict(Y_NP))
    for method in ("decision_function", "predict", "predict_proba", "predict_log_proba"):
        with sklearn.config_context(array_api_dispatch=True), \
                pytest.raises(ValueError, match=rf"SoftmaxRegression\.{method}\(\) must use "
                              "the same namespace"):
            getattr(est, method)(X_NP)
    assert isinstance(est.predict(X_NP), np.ndarray)  # without dispatch: any input
    np.testing.assert_array_equal(est.predict(X_NP), to_numpy(est.predict(strict(X_NP))))


# --- the model file, pickling and `smx predict` still work ------------------------------------


def test_a_fit_on_another_library_saves_pickles_and_loads_as_numpy(tmp_path):
    X = strict(X_NP, "device1")
    est = SoftmaxRegression(C=1.0, dtype="float32").fit(X, strict(Y_NP, "device1"))
    est.save(tmp_path / "model.npz")
    loaded = SoftmaxRegression.load(tmp_path / "model.npz")
    assert isinstance(loaded.coef_, np.ndarray) and loaded.coef_.dtype == np.float32
    np.testing.assert_array_equal(loaded.coef_, to_numpy(est.coef_))
    np.testing.assert_array_equal(loaded.predict(X_NP), to_numpy(est.predict(X)))
    torch = pytest.importorskip("torch")
    fitted = SoftmaxRegression(C=1.0).fit(torch.asarray(X_NP), torch.asarray(Y_NP))
    again = pickle.loads(pickle.dumps(fitted))
    assert torch.equal(again.coef_, fitted.coef_)
    np.testing.assert_array_equal(again.predict(X_NP), fitted.predict(X_NP))


# --- scikit-learn's own array-API checks ------------------------------------------------------

ESTIMATORS = {
    "lbfgs": SoftmaxRegression(),
    "lbfgs-auto": SoftmaxRegression(backend="auto"),  # trains on the input's engine
    "sgd-auto": SoftmaxRegression(optimizer="sgd", optimizer_params={"lr": 0.1}, epochs=3,
                                  backend="auto"),
}


def skip_unavailable(check, *args, **kwargs):
    """scikit-learn's checks raise SkipTest for a library or device that is not here."""
    try:
        check(*args, **kwargs)
    except Exception as exc:
        if type(exc).__name__ == "SkipTest":
            pytest.skip(str(exc))
        raise


@pytest.mark.parametrize("combo", list(yield_namespace_device_dtype_combinations()),
                         ids=lambda c: "-".join(str(p) for p in c))
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_scikit_learns_array_api_input_check(name, combo):
    skip_unavailable(check_array_api_input, "SoftmaxRegression", ESTIMATORS[name], *combo,
                     check_sample_weight=True)


@pytest.mark.parametrize("combo", list(yield_namespace_device_dtype_combinations()),
                         ids=lambda c: "-".join(str(p) for p in c))
def test_scikit_learns_array_api_values_check(combo):
    """Trained on the NumPy engine whatever the input: the same values as NumPy input."""
    ns, device, dtype = combo
    skip_unavailable(check_array_api_input_and_values, "SoftmaxRegression",
                     SoftmaxRegression(), ns, device, dtype or "float64",
                     check_sample_weight=True)


@pytest.mark.parametrize("perm", list(yield_mixed_namespace_input_permutations()),
                         ids=lambda p: p[2].replace(" ", "_"))
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_scikit_learns_array_api_mixed_inputs_check(name, perm):
    other, X_where, _ = perm
    skip_unavailable(check_array_api_mixed_inputs, "SoftmaxRegression", ESTIMATORS[name],
                     X_ns_and_device=X_where, other_ns_and_device=other)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_scikit_learns_array_api_same_namespace_check(name):
    skip_unavailable(check_array_api_same_namespace, "SoftmaxRegression", ESTIMATORS[name],
                     "array_api_strict")
