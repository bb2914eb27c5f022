"""The scikit-learn estimator: fits, predicts, clones, and agrees with its own coefficients."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import smx
from smx import SoftmaxRegression
from smx.errors import ConfigError
from smx.losses import CrossEntropy
from smx.modelfile import load_model
from smx.plugins import get_plugins
from smx.types import LossSpec, PluginParams


def test_fit_predict_score_and_decision_function():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = SoftmaxRegression(optimizer="adam", optimizer_params={"lr": 0.05}, epochs=60,
                            batch_size=16, standardize=True).fit(X, names)
    assert list(est.classes_) == ["setosa", "versicolor", "virginica"]
    assert est.score(X, names) > 0.95
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # coef_/intercept_ are in the caller's units even though training standardized
    np.testing.assert_array_equal(np.argmax(est.decision_function(X), axis=1),
                                  np.argmax(proba, axis=1))
    assert est.coef_.shape == (3, 4) and est.n_features_in_ == 4


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_works_in_pipelines_and_cross_validation():
    X, y = load_wine(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), SoftmaxRegression(epochs=20, batch_size=16))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.9
    est = clone(SoftmaxRegression(l2=0.5, optimizer_params={"lr": 0.2}))
    assert est.get_params()["l2"] == 0.5 and est.optimizer_params == {"lr": 0.2}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_strict_backend_matches_numpy():
    X, y = load_iris(return_X_y=True)
    a = SoftmaxRegression(epochs=5, standardize=True).fit(X, y)
    b = SoftmaxRegression(epochs=5, standardize=True, backend="array-api-strict").fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12, atol=1e-12)


def test_bad_parameters_and_data_are_value_errors():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):  # an smx error...
        SoftmaxRegression(optimizer_params={"lr": -1}).fit(X, y)
    with pytest.raises(ValueError, match=r"optimizer\.lr"):  # ...and scikit-learn's ValueError
        SoftmaxRegression(optimizer_params={"lr": -1}).fit(X, y)
    with pytest.raises(ValueError, match="only one class"):
        SoftmaxRegression().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="not among the labels"):
        SoftmaxRegression(class_weight={7: 2.0}).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="iteration limit"):
        est = SoftmaxRegression(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but SoftmaxRegression is expecting 4"):
        est.predict(X[:, :3])


def test_save_writes_a_model_file_that_load_reads_back(tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    est = SoftmaxRegression(C=3.0, standardize=True, epochs=30).fit(frame, y)
    est.save(tmp_path / "m.npz")
    # the CLI's reader agrees with the estimator
    np.testing.assert_array_equal(load_model(tmp_path / "m.npz").predict(X), est.predict(frame))
    back = SoftmaxRegression.load(tmp_path / "m.npz")
    assert back.get_params() == est.get_params()
    assert list(back.feature_names_in_) == ["sl", "sw", "pl", "pw"]
    np.testing.assert_array_equal(back.predict(frame), est.predict(frame))
    np.testing.assert_allclose(back.predict_proba(frame), est.predict_proba(frame), rtol=1e-12)
    np.testing.assert_array_equal(back.coef_, est.coef_)


@pytest.mark.parametrize("C", [1.0, 100.0])
def test_binary_problems_are_fitted_as_logistic_regression_fits_them(C, tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X, y)
    est = SoftmaxRegression(C=C, tol=1e-10, max_iter=1000, optimizer_params={"ftol": 0.0})
    est.fit(X, y)
    assert est.coef_.shape == (1, 30) and est.intercept_.shape == (1,)
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, rtol=0, atol=1e-4 * scale)
    scores = est.decision_function(X)
    assert scores.shape == (len(y),)
    assert roc_auc_score(y, scores) == pytest.approx(roc_auc_score(y, ref.decision_function(X)),
                                                      abs=1e-4)
    np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), atol=1e-4)
    np.testing.assert_array_equal(est.predict(X), est.classes_[(scores > 0).astype(int)])
    # the model file (two softmax columns) predicts what the estimator predicts
    est.save(tmp_path / "m.npz")
    np.testing.assert_allclose(load_model(tmp_path / "m.npz").predict_proba(X),
                               est.predict_proba(X), rtol=1e-10, atol=1e-12)


def _weighted_problem():
    X, y = load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    w = np.random.default_rng(0).integers(0, 4, size=len(y)).astype(float)
    return X, y, w


@pytest.mark.parametrize("class_weight", [None, "balanced", {0: 3.0, 2: 0.5}])
def test_sample_and_class_weights_minimise_scikit_learns_objective(class_weight):
    X, y, w = _weighted_problem()
    kw = {"C": 10.0, "class_weight": class_weight}
    ref = LogisticRegression(**kw, tol=1e-10, max_iter=10_000).fit(X, y, sample_weight=w)
    est = SoftmaxRegression(**kw, tol=1e-10, max_iter=1000, optimizer_params={"ftol": 0.0})
    est.fit(X, y, sample_weight=w)
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, rtol=0, atol=1e-4 * scale)


def test_integer_weights_are_repeated_rows():
    X, y, w = _weighted_problem()
    kw = {"C": 10.0, "tol": 1e-10, "max_iter": 1000, "optimizer_params": {"ftol": 0.0}}
    a = SoftmaxRegression(**kw).fit(X, y, sample_weight=w)
    rows = np.repeat(np.arange(len(y)), w.astype(int))
    b = SoftmaxRegression(**kw).fit(X[rows], y[rows])
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=0, atol=1e-6)


def test_random_state_seeds_minibatch_order():
    X, y = load_iris(return_X_y=True)
    kw = {"optimizer": "sgd", "epochs": 3, "batch_size": 8}
    a = SoftmaxRegression(**kw, random_state=1).fit(X, y)
    b = SoftmaxRegression(**kw, random_state=1).fit(X, y)
    c = SoftmaxRegression(**kw, random_state=2).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)
    assert a.n_iter_ == 3


# --- the loss and backend plugins' parameters ----------------------------------------------


class ScaledParams(PluginParams):
    scale: float = 1.0


class ScaledCrossEntropy(CrossEntropy):
    """Cross-entropy times ``scale``: scale · mean + l2/2·‖W‖² has the optimum of
    mean + (l2/scale)/2·‖W‖², a fit the default loss can reproduce."""

    calls = 0

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.kernel_key = ("scaled_cross_entropy", scale)  # no fused kernel knows it

    def partial(self, xp, Zt, y, w, cw, *, grad=True):
        ScaledCrossEntropy.calls += 1
        loss, weight, G = super().partial(xp, Zt, y, w, cw, grad=grad)
        return loss * self.scale, weight, None if G is None else G * self.scale


class ScaledLossPlugin:
    @smx.hookimpl
    def smx_losses(self):
        yield LossSpec("scaled_cross_entropy", ScaledCrossEntropy, ScaledParams,
                       "test: cross-entropy times a factor")


@pytest.fixture
def scaled_loss():
    """The process-wide plugins with the test loss registered (a fresh manager after)."""
    get_plugins.cache_clear()
    get_plugins().register(ScaledLossPlugin(), name="test-scaled-loss")
    ScaledCrossEntropy.calls = 0
    yield
    get_plugins.cache_clear()


def test_a_registered_loss_plugin_is_the_estimators_loss(scaled_loss):
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    est = SoftmaxRegression(loss="scaled_cross_entropy", loss_params={"scale": 4.0}, l2=0.04,
                            tol=1e-10, max_iter=500).fit(X, y)
    assert ScaledCrossEntropy.calls > 0
    ref = SoftmaxRegression(l2=0.01, tol=1e-10, max_iter=500).fit(X, y)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-5)
    assert clone(est).get_params()["loss_params"] == {"scale": 4.0}


def test_loss_params_reach_the_loss():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    plain = SoftmaxRegression(C=10.0).fit(X, y)
    smoothed = SoftmaxRegression(C=10.0, loss_params={"label_smoothing": 0.1}).fit(X, y)
    assert np.abs(plain.coef_ - smoothed.coef_).max() > 0.1
    # smoothing pulls the probabilities away from 0 and 1
    assert smoothed.predict_proba(X).max() < plain.predict_proba(X).max()
    same = SoftmaxRegression(C=10.0, loss_params={"label_smoothing": 0.0}).fit(X, y)
    np.testing.assert_array_equal(same.coef_, plain.coef_)


@pytest.mark.parametrize("params, needle", [
    ({"loss": "hinge"}, r"unknown loss 'hinge'; valid: cross_entropy"),
    ({"loss_params": {"smoothing": 0.1}}, r"loss\.smoothing: unknown key"),
    ({"loss_params": {"label_smoothing": 2.0}}, r"loss\.label_smoothing"),
    ({"loss_params": {"class_weight": "balanced"}}, r"loss_params must not hold 'class_weight'"),
    ({"loss_params": ["label_smoothing"]}, r"loss_params must be a dict"),
    ({"backend_options": {"fuse": True}}, r"backend_options\.fuse: unknown key; allowed: fused"),
    ({"backend_options": {"fused": "sometimes"}}, r"backend_options\.fused"),
    ({"backend": "auto", "backend_options": {"fuse": True}}, r"backend_options\.fuse"),
    ({"backend_options": "fused"}, r"backend_options must be a dict"),
])
def test_a_bad_loss_or_backend_option_is_a_value_error_naming_it(params, needle):
    X, y = load_iris(return_X_y=True)
    est = SoftmaxRegression(**params)
    assert est.get_params()[next(iter(params))] is next(iter(params.values()))  # unchanged
    with pytest.raises(ValueError, match=needle) as info:
        est.fit(X, y)
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)


def test_backend_options_reach_the_backend(monkeypatch):
    X, y = load_iris(return_X_y=True)
    seen = []
    backend = get_plugins().backend("numpy")
    original = type(backend).configure
    monkeypatch.setattr(type(backend), "configure",
                        lambda self, options: (seen.append(options), original(self, options)))
    est = SoftmaxRegression(optimizer="sgd", epochs=1, backend_options={"fused": False})
    est.fit(X, y)
    assert seen and seen[-1].fused is False
    est.set_params(backend_options={"fused": True})
    assert est.get_params()["backend_options"] == {"fused": True}
    assert clone(est).backend_options == {"fused": True}
