"""The estimator on dask arrays, against a real multi-process LocalCluster: fit keeps X on
the workers (its checks are reductions there) and equals the NumPy fit; predictions of a
dask array are lazy dask arrays equal to NumPy's."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="Dask is not installed (pip install 'smx[dask]')")
distributed = pytest.importorskip(
    "distributed", reason="distributed is not installed (pip install 'smx[dask]')")

from smx import SoftmaxRegression  # noqa: E402
from smx.plugins import get_plugins  # noqa: E402

#: a fixed number of L-BFGS iterations, so both fits stop at the same one (the chunks' partial
#: sums round differently from NumPy's one product, by ~1e-16)
FIXED = {"C": 1.0, "max_iter": 12}
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RNG = np.random.default_rng(0)
X_NP = RNG.normal(size=(300, 6))
Y_NP = np.argmax(X_NP[:, :3] + 0.5 * RNG.normal(size=(300, 3)), axis=1)
W_NP = RNG.uniform(0.5, 2.0, size=300)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="1GiB", dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield cluster, client


def on(cluster, **params) -> SoftmaxRegression:
    options = {"cluster": cluster[0].scheduler_address, "chunk_rows": 70}
    return SoftmaxRegression(backend="dask", backend_options=options, **FIXED, **params)


@pytest.fixture
def no_client_copy(monkeypatch):
    """X computed or converted on the client (np.asarray, .compute()) fails the test."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a dask array of shape {self.shape} was computed on the client")

    monkeypatch.setattr(da.Array, "__array__", refuse)
    monkeypatch.setattr(da.Array, "compute", refuse)


@pytest.mark.parametrize("params, weights", [
    ({}, False),
    ({}, True),
    ({"standardize": True}, True),
])
def test_fit_on_dask_arrays_equals_the_numpy_fit(cluster, no_client_copy, params, weights):
    X = da.from_array(X_NP, chunks=(45, 6))
    y = da.from_array(Y_NP, chunks=45)
    w = da.from_array(W_NP, chunks=45) if weights else None
    est = on(cluster, **params).fit(X, y, sample_weight=w)
    ref = SoftmaxRegression(**FIXED, **params).fit(
        X_NP, Y_NP, sample_weight=W_NP if weights else None)
    assert est.model_.meta["backend"] == "dask"
    assert get_plugins().backend("dask")._chunk_rows == 70  # backend_options reached it
    assert isinstance(est.coef_, np.ndarray) and est.n_features_in_ == 6
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(est.classes_, ref.classes_)


def test_numpy_labels_and_weights_follow_a_dask_x(cluster, no_client_copy):
    labels = np.array(["a", "b", "c"])[Y_NP]
    est = on(cluster).fit(da.from_array(X_NP, chunks=(100, 3)), labels, sample_weight=W_NP)
    ref = SoftmaxRegression(**FIXED).fit(X_NP, labels, sample_weight=W_NP)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-10)
    assert list(est.classes_) == ["a", "b", "c"]


@pytest.mark.parametrize("binary", [False, True])
def test_predictions_of_a_dask_array_are_lazy_and_equal_numpys(cluster, binary):
    y = (Y_NP > 0).astype(int) if binary else Y_NP
    est = SoftmaxRegression(C=1.0).fit(X_NP, y)
    X = da.from_array(X_NP, chunks=(64, 6))
    client = cluster[1]
    for method in ("decision_function", "predict_proba", "predict_log_proba", "predict"):
        lazy = getattr(est, method)(X)
        assert isinstance(lazy, da.Array), method
        got = client.compute(lazy).result()  # one task per block, on the workers
        want = getattr(est, method)(X_NP)
        assert got.shape == want.shape and got.dtype == want.dtype, method
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_lazy_predictions_check_each_block_when_computed(cluster):
    est = SoftmaxRegression(C=1.0).fit(X_NP, Y_NP)
    bad = X_NP.copy()
    bad[250, 2] = np.nan
    lazy = est.predict(da.from_array(bad, chunks=(64, 6)))  # no error yet: nothing computed
    with pytest.raises(ValueError, match="NaN or infinity"):
        cluster[1].compute(lazy).result()
    with pytest.raises(ValueError, match="features"):
        est.predict(da.from_array(X_NP[:, :4]))


def bad_input(case: str):
    X, y = da.from_array(X_NP, chunks=(100, 6)), da.from_array(Y_NP.astype(float), chunks=100)
    return {"nan": (da.where(da.arange(300)[:, None] == 7, np.nan, X), y),
            "rows": (X, y[:-1]), "one class": (X, y * 0), "continuous": (X, y + 0.5),
            "1-D": (X[:, 0], y), "huge": (X * 1e300, y)}[case]


@pytest.mark.parametrize("case, message", [
    ("nan", "NaN or infinity"), ("rows", "inconsistent numbers of samples"),
    ("one class", "only one class"), ("continuous", "continuous"), ("1-D", "Expected 2D"),
    ("huge", r"column 0 holds 1.26e\+299 \(row 0\), too large for float64"),
])
def test_bad_dask_input_is_refused_with_scikit_learns_errors(cluster, no_client_copy, case,
                                                             message):
    with pytest.raises(ValueError, match=message):
        on(cluster).fit(*bad_input(case))


def test_values_too_large_are_named_as_the_numpy_fit_names_them(cluster, no_client_copy):
    with pytest.raises(ValueError) as numpy_error:
        SoftmaxRegression(**FIXED).fit(X_NP * 1e300, Y_NP)
    with pytest.raises(ValueError) as dask_error:
        on(cluster).fit(*bad_input("huge"))
    assert str(dask_error.value) == str(numpy_error.value)


def test_backend_auto_trains_a_dask_array_on_the_dask_engine(cluster, no_client_copy):
    options = {"cluster": cluster[0].scheduler_address, "chunk_rows": 70}
    est = SoftmaxRegression(backend="auto", backend_options=options, **FIXED).fit(
        da.from_array(X_NP, chunks=(100, 6)), da.from_array(Y_NP, chunks=100))
    assert est.model_.meta["backend"] == "dask"
    np.testing.assert_allclose(est.coef_, SoftmaxRegression(**FIXED).fit(X_NP, Y_NP).coef_,
                               rtol=0, atol=1e-10)
