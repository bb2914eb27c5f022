"""The scikit-learn estimator: fits, predicts, clones, and agrees with its own coefficients."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris, load_wine
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from smx import SoftmaxRegression
from smx.errors import ConfigError, DataError, ModelFileError
from smx.modelfile import load_model


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


def test_works_in_pipelines_and_cross_validation():
    X, y = load_wine(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), SoftmaxRegression(epochs=20, batch_size=16))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.9
    est = clone(SoftmaxRegression(l2=0.5, optimizer_params={"lr": 0.2}))
    assert est.get_params()["l2"] == 0.5 and est.optimizer_params == {"lr": 0.2}


def test_strict_backend_matches_numpy():
    X, y = load_iris(return_X_y=True)
    a = SoftmaxRegression(epochs=5, standardize=True).fit(X, y)
    b = SoftmaxRegression(epochs=5, standardize=True, backend="array-api-strict").fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12, atol=1e-12)


def test_bad_parameters_and_data_are_smx_errors():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        SoftmaxRegression(optimizer_params={"lr": -1}).fit(X, y)
    with pytest.raises(DataError, match="only one class"):
        SoftmaxRegression().fit(X, np.zeros(len(y)))
    est = SoftmaxRegression(epochs=2).fit(X, y)
    with pytest.raises(ModelFileError, match="expects 4 features"):
        est.predict(X[:, :3])


def test_save_writes_a_model_file(tmp_path):
    X, y = load_iris(return_X_y=True)
    est = SoftmaxRegression(epochs=3).fit(X, y)
    est.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(load_model(tmp_path / "m.npz").predict(X), est.predict(X))
