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


# --- warm_start ----------------------------------------------------------------------------


def test_warm_start_lbfgs_continues_from_the_previous_fit():
    X, y = noisy()
    kw = {"C": 1.0, "tol": 1e-8, "warm_start": True}
    with pytest.warns(ConvergenceWarning):
        est = SoftmaxRegression(max_iter=3, **kw).fit(X, y)
    est.set_params(max_iter=1000).fit(X, y)
    cold = SoftmaxRegression(max_iter=1000, **{**kw, "warm_start": False}).fit(X, y)
    np.testing.assert_allclose(est.coef_, cold.coef_, atol=1e-6)
    again = est.n_iter_[0]
    est.fit(X, y)  # from the optimum: nothing left to do
    assert est.n_iter_[0] <= 1 < again
    est.set_params(warm_start=False).fit(X, y)
    assert est.n_iter_[0] == cold.n_iter_[0]


@pytest.mark.parametrize("standardize", [False, True])
def test_warm_start_minibatch_starts_at_the_previous_coefficients(standardize):
    X, y = noisy()
    est = SoftmaxRegression(optimizer="adam", optimizer_params={"lr": 0.05}, max_iter=5,
                            standardize=standardize, random_state=0).fit(X, y)
    before = est.coef_.copy(), est.intercept_.copy()
    # other rows (so other statistics when standardized); a step too small to move
    est.set_params(warm_start=True, optimizer="sgd", optimizer_params={"lr": 1e-12},
                   max_iter=1).fit(X[:150] * 2.0 + 1.0, y[:150])
    np.testing.assert_allclose(est.coef_, before[0], atol=1e-9)  # in the caller's units
    np.testing.assert_allclose(est.intercept_, before[1], atol=1e-9)


def test_warm_start_on_other_classes_is_a_value_error_naming_it():
    X, y = noisy()
    est = SoftmaxRegression(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="warm_start"):
        est.fit(X, y % 2)
    with pytest.raises(ValueError, match="warm_start"):
        est.fit(X[:, :3], y)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_warm_start_must_be_a_boolean(value):
    with pytest.raises(ValueError, match="warm_start must be True or False"):
        SoftmaxRegression(warm_start=value).fit(X_IRIS, Y_IRIS)


# --- partial_fit ---------------------------------------------------------------------------


def sgd(**kw) -> SoftmaxRegression:
    return SoftmaxRegression(**{"optimizer": "sgd", "optimizer_params": {"lr": 0.1},
                                "batch_size": 16, "random_state": 0, **kw})


def test_partial_fit_is_only_there_for_minibatch_optimizers():
    assert not hasattr(SoftmaxRegression(), "partial_fit")
    assert hasattr(sgd(), "partial_fit")
    assert hasattr(SoftmaxRegression(optimizer="adam"), "partial_fit")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_partial_fit_calls_are_epochs_of_one_fit(optimizer):
    """One epoch per call, the optimizer's state, step count and batch order kept."""
    params = {"optimizer": optimizer, "optimizer_params": {"lr": 0.01}, "l2": 1e-3}
    est = sgd(**params, max_iter=3)
    for _ in range(3):
        est.partial_fit(X_IRIS, Y_IRIS, classes=[0, 1, 2])
    one = sgd(**params, max_iter=3).fit(X_IRIS, Y_IRIS)
    np.testing.assert_allclose(est.coef_, one.coef_, rtol=1e-12, atol=1e-12)
    assert est.n_iter_ == 3


def test_streaming_in_pieces_reaches_the_accuracy_of_one_fit():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))  # pieces alike, as in a stream
    X, y = X[order] / 16.0, y[order]
    X_test, y_test, X, y = X[:400], y[:400], X[400:], y[400:]
    kw = {"optimizer": "adam", "optimizer_params": {"lr": 0.01}, "l2": 1e-4,
          "batch_size": 32, "random_state": 0}
    one = SoftmaxRegression(max_iter=10, **kw).fit(X, y)
    stream = SoftmaxRegression(max_iter=10, **kw)
    for _ in range(10):
        for piece in np.array_split(np.arange(len(y)), 7):  # 7 pieces of ~200 rows
            stream.partial_fit(X[piece], y[piece], classes=np.arange(10))
    acc_one, acc_stream = one.score(X_test, y_test), stream.score(X_test, y_test)
    assert acc_one > 0.95
    assert acc_stream >= acc_one - 0.01, (acc_stream, acc_one)


def test_partial_fit_continues_from_fit():
    X, y = noisy()
    est = sgd(max_iter=5).fit(X, y)
    before = est.coef_.copy()
    est.set_params(optimizer_params={"lr": 1e-12}).partial_fit(X, y)  # classes: fit's
    np.testing.assert_allclose(est.coef_, before, atol=1e-9)


def test_partial_fit_refuses_what_it_cannot_do():
    X, y = noisy()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        sgd().partial_fit(X, y)
    est = sgd().partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="is not the same as on the first call"):
        est.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="not in classes"):
        sgd().partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(X[:, :3], y)
    with pytest.raises(ValueError, match="standardize"):
        sgd(standardize=True).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="balanced"):
        sgd(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])


def test_partial_fit_takes_a_piece_holding_one_class():
    X, y = noisy()
    est = sgd().partial_fit(X[y == 0], y[y == 0], classes=[0, 1, 2])
    est.partial_fit(X, y)
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])
    assert est.score(X, y) > 0.4


def test_fit_after_partial_fit_starts_afresh():
    X, y = noisy()
    est = sgd(max_iter=2)
    est.partial_fit(X, y, classes=[0, 1, 2])
    est.fit(X, y)
    np.testing.assert_array_equal(est.coef_, sgd(max_iter=2).fit(X, y).coef_)
