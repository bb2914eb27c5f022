"""Parameters as scikit-learn takes them (issue 20, item 3): C=np.inf, class_weight keys
matched to labels by value, warm_start, partial_fit, and warnings at the caller's line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from smx import SoftmaxRegression

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_IRIS = StandardScaler().fit_transform(X_IRIS)


def noisy(n_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes: the unpenalised optimum is finite."""
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_redundant=0,
                               n_classes=n_classes, flip_y=0.2, class_sep=0.5,
                               random_state=seed)
    return StandardScaler().fit_transform(X), y


# --- C=np.inf -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 3])
def test_C_inf_is_no_penalty(n_classes):
    X, y = noisy(n_classes)
    est = SoftmaxRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(X, y)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(X, y)
    unpenalised = SoftmaxRegression(l2=0.0, tol=1e-10, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-5)
    np.testing.assert_array_equal(est.coef_, unpenalised.coef_)


@pytest.mark.parametrize("C", [-np.inf, np.nan, 0.0])
def test_C_must_be_a_positive_number_or_inf(C):
    with pytest.raises(ValueError, match="C"):
        SoftmaxRegression(C=C).fit(X_IRIS, Y_IRIS)


# --- class_weight keys ---------------------------------------------------------------------


@pytest.mark.parametrize("keys", [[0, 1, 2], [0.0, 1.0, 2.0], list(np.arange(3))])
@pytest.mark.parametrize("labels", ["int", "float"])
def test_class_weight_keys_match_labels_by_value(keys, labels):
    y = Y_IRIS.astype(np.float64) if labels == "float" else Y_IRIS
    cw = dict(zip(keys, [1.0, 2.0, 3.0], strict=True))
    est = SoftmaxRegression(C=1.0, class_weight=cw, tol=1e-8).fit(X_IRIS, y)
    ref = SoftmaxRegression(C=1.0, tol=1e-8).fit(
        X_IRIS, Y_IRIS, sample_weight=np.array([1.0, 2.0, 3.0])[Y_IRIS])
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-6)


def test_class_weight_text_keys_still_match_their_labels():
    est = SoftmaxRegression(C=1.0, class_weight={"2": 3.0}).fit(X_IRIS, Y_IRIS)
    ref = SoftmaxRegression(C=1.0, class_weight={2: 3.0}).fit(X_IRIS, Y_IRIS)
    np.testing.assert_array_equal(est.coef_, ref.coef_)


def test_a_class_weight_key_naming_no_label_is_a_value_error():
    with pytest.raises(ValueError, match=r"class 0\.5 is not among the labels"):
        SoftmaxRegression(class_weight={0.5: 2.0}).fit(X_IRIS, Y_IRIS)


# --- warnings at the caller's line ---------------------------------------------------------


def test_convergence_warning_points_at_the_callers_line():
    with pytest.warns(ConvergenceWarning) as record:
        SoftmaxRegression(max_iter=2).fit(X_IRIS, Y_IRIS)
    assert [w.filename for w in record] == [__file__]


def test_scikit_learns_validation_warnings_point_at_the_callers_line():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        est = SoftmaxRegression(tol=1e-3).fit(X_IRIS, Y_IRIS[:, None])  # column y
        est.predict(X_IRIS)
    assert record and {w.filename for w in record} == {__file__}, \
        [(w.category.__name__, w.filename) for w in record]


def test_a_warning_turned_into_an_error_still_raises():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning):
            SoftmaxRegression(max_iter=2).fit(X_IRIS, Y_IRIS)
