"""scikit-learn's ``sklearn/linear_model/tests/test_logistic.py`` (scikit-learn 1.9.1),
ported to ``SoftmaxRegression``: every test that applies to an l2 or unpenalised
multinomial or binary L-BFGS (or minibatch) fit. Where the original compared two solvers,
smx is compared with scikit-learn's own lbfgs; each test keeps the original's name, data,
parameters and tolerances unless a comment says why not.

smx's differences the port keeps to: the training dtype is the ``dtype`` parameter (float32
X with the default ``dtype="float64"`` trains, and answers, in float64); the
ConvergenceWarning's wording is smx's; ``global_random_seed`` is scikit-learn's default, 42.

Not ported, each with the reason (every other test of the file is ported below):

- test_check_solver_option, test_elasticnet_l1_ratio_err_helpful, test_penalty_deprecated,
  test_l1_ratio_None_deprecated, test_lr_penalty_l1ratio_incompatible,
  test_l1_ratio_non_elasticnet: the solver/penalty/l1_ratio parameters smx does not have.
- test_logreg_l1, test_elastic_net_coeffs, test_elastic_net_l1_l2_equivalence,
  test_elastic_net_vs_l1_l2, test_LogisticRegression_elastic_net_objective,
  test_elastic_net_versus_sgd: l1 and elastic-net penalties.
- test_sparsify: sparsify()/densify() (SparseCoefMixin, for l1's sparse coef_).
- test_consistency_path, test_logistic_regression_path_convergence_fail,
  test_logistic_regression_path_coefs_multinomial, test_logistic_regression_path_init_coefs:
  scikit-learn's private _logistic_regression_path.
- test_liblinear_dual_random_state, test_sample_and_class_weight_equivalence_liblinear,
  test_liblinear_decision_function_zero, test_logreg_intercept_scaling_zero,
  test_logisticregression_liblinear_sample_weight, test_liblinear_with_large_values,
  test_liblinear_not_stuck, test_liblinear_multiclass_raises: the liblinear solver (OvR).
- test_saga_vs_liblinear: the saga and liblinear solvers.
- test_warm_start_newton_solver, test_single_feature_newton_cg,
  test_newton_cholesky_fallback_to_lbfgs: the Newton solvers (two warm-started Newton
  steps equal two steps; L-BFGS's history starts afresh with each fit, so it does not).
- test_logistic_cv, test_logistic_cv_refit_false_non_elasticnet,
  test_logistic_cv_mock_scorer, test_logistic_cv_multinomial_score, test_multinomial_cv_iris,
  test_logistic_cv_folds_with_classes_missing, test_logistic_cv_sparse,
  test_logistic_regressioncv_class_weights, test_logistic_regression_cv_refit,
  test_LogisticRegressionCV_GridSearchCV_elastic_net, test_LogisticRegressionCV_no_refit,
  test_LogisticRegressionCV_elasticnet_attribute_shapes, test_LogisticRegressionCV_on_folds,
  test_scores_attribute_layout_elasticnet, test_lr_cv_scores_differ_when_sample_weight_is_
  requested, test_lr_cv_scores_without_enabling_metadata_routing,
  test_passing_params_without_enabling_metadata_routing,
  test_logisticregressioncv_warns_with_use_legacy_attributes, test_lr_scoring_warns,
  test_get_default_scorer: LogisticRegressionCV (its LogisticRegression halves are ported
  where a test has one: string inputs, n_iter_, sample weights).
- test_logisticregression_warns_with_n_jobs: the n_jobs deprecation (no such parameter).
- test_logistic_regression_callback_support, test_logistic_regression_callback_fitted_
  estimator, test_logistic_regression_callback_support_warning: scikit-learn's
  experimental callback API.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose, assert_array_almost_equal, assert_array_equal
from scipy import sparse
from scipy.linalg import svd
from scipy.special import softmax
from sklearn.datasets import load_iris, make_classification, make_low_rank_matrix
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import LabelEncoder, scale
from sklearn.utils import compute_class_weight
from sklearn.utils._array_api import yield_namespace_device_dtype_combinations

from smx import SoftmaxRegression
from smx.estimator_input import to_numpy

SEED = 42  # scikit-learn's global_random_seed default
X = [[-1, 0], [0, 1], [1, 1]]
Y1 = [0, 1, 1]
Y2 = [2, 1, 0]
iris = load_iris()
CSR = [sparse.csr_matrix, sparse.csr_array]


def check_predictions(clf, X, y):
    """Check that the model is able to fit the classification data"""
    n_samples = len(y)
    classes = np.unique(y)
    n_classes = classes.shape[0]

    predicted = clf.fit(X, y).predict(X)
    assert_array_equal(clf.classes_, classes)

    assert predicted.shape == (n_samples,)
    assert_array_equal(predicted, y)

    probabilities = clf.predict_proba(X)
    assert probabilities.shape == (n_samples, n_classes)
    assert_allclose(probabilities.sum(axis=1), np.ones(n_samples))
    assert_array_equal(probabilities.argmax(axis=1), y)


@pytest.mark.parametrize("csr_container", CSR)
def test_predict_2_classes(csr_container):
    check_predictions(SoftmaxRegression(C=1.0), X, Y1)
    check_predictions(SoftmaxRegression(C=1.0), csr_container(X), Y1)
    check_predictions(SoftmaxRegression(C=100), X, Y1)
    check_predictions(SoftmaxRegression(C=100), csr_container(X), Y1)
    check_predictions(SoftmaxRegression(C=1.0, fit_intercept=False), X, Y1)
    check_predictions(SoftmaxRegression(C=1.0, fit_intercept=False), csr_container(X), Y1)


@pytest.mark.parametrize("csr_container", CSR)
def test_predict_3_classes(csr_container):
    check_predictions(SoftmaxRegression(C=10), X, Y2)
    check_predictions(SoftmaxRegression(C=10), csr_container(X), Y2)


@pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning")
def test_logistic_glmnet():
    """Compare Logistic regression with L2 regularization to glmnet (the R values are in
    scikit-learn's test)."""
    X = np.array([[-4, -3, -2, -1, 0, 1, 2, 3, 4], [0, 0, 1, 0, 1, 1, 1, 0, 0]]).T
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    glm = SoftmaxRegression(C=1 / 1 / y.shape[0], fit_intercept=True, tol=1e-8, max_iter=300)
    glm.fit(X, y)
    assert_allclose(glm.intercept_, 0.89230405539, rtol=1e-5)
    assert_allclose(glm.coef_, [[0.44464569182, 0.01457563448]], rtol=1e-5)

    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    glm.fit(X, y)
    assert_allclose(glm.intercept_, [-0.12004759652, 2.251747383e-01, -0.1051271418],
                    rtol=1e-5)
    assert_allclose(glm.coef_, [[-0.38023389305, -0.01226499932],
                                [-8.164030176e-05, 4.734548012e-02],
                                [0.3803155334, -0.0350804808]], rtol=1e-5, atol=1e-8)


def test_inconsistent_input():
    rng = np.random.RandomState(0)
    X_ = rng.random_sample((5, 10))
    y_ = np.ones(X_.shape[0])
    y_[0] = 0
    clf = SoftmaxRegression(random_state=0)
    with pytest.raises(ValueError, match="Found input variables with inconsistent number"):
        clf.fit(X, y_[:-1])
    with pytest.raises(ValueError, match="X has 12 features, but"):
        clf.fit(X_, y_).predict(rng.random_sample((3, 12)))


def test_write_parameters():
    clf = SoftmaxRegression()
    clf.fit(X, Y1)
    clf.coef_[:] = 0
    clf.intercept_[:] = 0
    assert_array_almost_equal(clf.decision_function(X), 0)


def test_nan():
    Xnan = np.array(X, dtype=np.float64)
    Xnan[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"Input X contains NaN\."):
        SoftmaxRegression().fit(Xnan, Y1)


def test_multinomial_logistic_regression_string_inputs():
    """Labels are encoded internally (the LogisticRegressionCV half is not ported)."""
    X_ref, y = make_classification(n_samples=50, n_features=5, n_classes=3, n_informative=3,
                                   random_state=0)
    y_str = LabelEncoder().fit(["bar", "baz", "foo"]).inverse_transform(y)
    y = np.array(y) - 1
    lr = SoftmaxRegression(C=1.0).fit(X_ref, y)
    lr_str = SoftmaxRegression(C=1.0).fit(X_ref, y_str)
    assert_allclose(lr.coef_, lr_str.coef_)
    assert_allclose(lr.predict_proba(X_ref), lr_str.predict_proba(X_ref))
    assert sorted(lr_str.classes_) == ["bar", "baz", "foo"]
    assert sorted(np.unique(lr_str.predict(X_ref))) == ["bar", "baz", "foo"]
    lr_cw = SoftmaxRegression(C=1.0, class_weight={"bar": 1, "baz": 2, "foo": 0}).fit(X_ref,
                                                                                    y_str)
    assert sorted(np.unique(lr_cw.predict(X_ref))) == ["bar", "baz"]


def test_logistic_regression_solvers():
    """smx converges where scikit-learn's lbfgs does (binary)."""
    X, y = make_classification(n_samples=200, n_features=10, n_informative=5,
                               random_state=SEED)
    params = {"C": 0.1, "fit_intercept": False, "random_state": SEED}
    ref = LogisticRegression(solver="lbfgs", **params).fit(X, y)
    est = SoftmaxRegression(**params).fit(X, y)
    assert_allclose(est.coef_, ref.coef_, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_logistic_regression_solvers_multiclass(fit_intercept):
    X, y = make_classification(n_samples=20, n_features=20, n_informative=10, n_classes=3,
                               random_state=0)
    params = {"fit_intercept": fit_intercept, "tol": 1e-8, "random_state": 42,
              "max_iter": 200, "C": 1.0}
    ref = LogisticRegression(**params).fit(X, y)
    est = SoftmaxRegression(**params).fit(X, y)
    assert est.coef_.shape == (3, 20)
    assert_allclose(est.coef_, ref.coef_, rtol=1e-3)
    if fit_intercept:
        assert_allclose(est.intercept_, ref.intercept_, rtol=1e-3)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_logistic_regression_solvers_multiclass_unpenalized(fit_intercept):
    n_samples, n_features, n_classes = 100, 4, 3
    rng = np.random.RandomState(SEED)
    X = make_low_rank_matrix(n_samples=n_samples, n_features=n_features + fit_intercept,
                             effective_rank=n_features + fit_intercept, tail_strength=0.1,
                             random_state=rng)
    if fit_intercept:
        X[:, -1] = 1
    _, s, _ = svd(X)
    assert np.all(s > 1e-3)
    assert np.max(s) / np.min(s) < 100
    if fit_intercept:
        X = X[:, :-1]
    coef = rng.uniform(low=1, high=3, size=n_features * n_classes)
    coef = coef.reshape(n_classes, n_features)
    intercept = rng.uniform(low=-1, high=1, size=n_classes) * fit_intercept
    proba = softmax(X @ coef.T + intercept, axis=1)  # HalfMultinomialLoss's inverse link
    y = np.zeros(n_samples)
    for i in range(n_samples):
        y[i] = np.argwhere(rng.multinomial(n=1, pvals=proba[i, :]))[0, 0]
    params = {"C": np.inf, "tol": 1e-9, "max_iter": 200, "fit_intercept": fit_intercept,
              "random_state": SEED}
    ref = LogisticRegression(**params).fit(X, y)
    est = SoftmaxRegression(**params).fit(X, y)
    assert_allclose(est.coef_.sum(axis=0), 0, atol=1e-10)
    assert_allclose(est.coef_, ref.coef_, rtol=2e-3)
    if fit_intercept:
        assert_allclose(est.intercept_, ref.intercept_, rtol=1e-3)


def test_logistic_regression_sample_weights():
    """Integer sample weights are repeated rows (the single-fit half)."""
    n = 200
    X, y = make_classification(n_samples=n * 3, n_features=5, n_informative=3, n_classes=2,
                               n_redundant=0, random_state=SEED)
    rng = np.random.RandomState(SEED)
    sw = np.ones(y.shape[0])
    sw[:n] = rng.randint(0, 5, size=n)
    X_repeated = np.repeat(X, sw.astype(int), axis=0)
    y_repeated = np.repeat(y, sw.astype(int), axis=0)
    kw = {"random_state": SEED, "fit_intercept": False, "max_iter": 1000, "tol": 1e-8,
          "C": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = SoftmaxRegression(**kw).fit(X, y, sample_weight=sw)
        repeated = SoftmaxRegression(**kw).fit(X_repeated, y_repeated)
    assert_allclose(weighted.coef_, repeated.coef_, atol=1e-5)


def test_logistic_regression_solver_class_weights():
    X, y = make_classification(n_samples=300, n_features=5, n_informative=3, n_classes=2,
                               random_state=SEED)
    kw = {"random_state": SEED, "fit_intercept": False, "max_iter": 100_000, "tol": 1e-8,
          "C": 1.0}
    cw = SoftmaxRegression(class_weight={0: 1, 1: 2}, **kw).fit(X, y)
    sw = SoftmaxRegression(**kw).fit(X, y, sample_weight=y + 1)
    assert_allclose(cw.coef_, sw.coef_, atol=1e-6)


def _compute_class_weight_dictionary(y):
    classes = np.unique(y)
    return dict(zip(classes, compute_class_weight("balanced", classes=classes, y=y),
                    strict=True))


@pytest.mark.parametrize("csr_container", [lambda x: x, *CSR])
def test_logistic_regression_class_weights(csr_container):
    X_iris = scale(iris.data)
    X = csr_container(X_iris[45:, :])
    y = iris.target[45:]
    class_weight_dict = _compute_class_weight_dictionary(y)
    params = {"max_iter": 2000, "random_state": SEED, "C": 1.0}
    clf1 = SoftmaxRegression(class_weight="balanced", **params).fit(X, y)
    clf2 = SoftmaxRegression(class_weight=class_weight_dict, **params).fit(X, y)
    assert len(clf1.classes_) == 3
    assert_allclose(clf1.coef_, clf2.coef_, rtol=1e-4)
    sw = np.ones(X.shape[0])
    for c in clf1.classes_:
        sw[y == c] *= class_weight_dict[c]
    clf3 = SoftmaxRegression(**params).fit(X, y, sample_weight=sw)
    assert_allclose(clf3.coef_, clf2.coef_, rtol=1e-4)

    X = X_iris[45:100, :]
    y = iris.target[45:100]
    class_weight_dict = _compute_class_weight_dictionary(y)
    params = {"max_iter": 1000, "random_state": SEED, "C": 1.0}
    clf1 = SoftmaxRegression(class_weight="balanced", **params).fit(X, y)
    clf2 = SoftmaxRegression(class_weight=class_weight_dict, **params).fit(X, y)
    assert_array_almost_equal(clf1.coef_, clf2.coef_, decimal=6)


def test_logreg_predict_proba_multinomial():
    """The multinomial fit's log loss beats one-vs-rest's (``_predict_proba_lr``, the
    original's second half, is LogisticRegression's private OvR normalisation)."""
    X, y = make_classification(n_samples=10, n_features=20, random_state=SEED, n_classes=3,
                               n_informative=10)
    clf_multi = SoftmaxRegression(C=1.0).fit(X, y)
    clf_ovr = OneVsRestClassifier(SoftmaxRegression(C=1.0)).fit(X, y)
    assert log_loss(y, clf_ovr.predict_proba(X)) > log_loss(y, clf_multi.predict_proba(X))


@pytest.mark.parametrize("max_iter", np.arange(1, 5))
def test_max_iter(max_iter):
    X, y_bin = iris.data, iris.target.copy()
    y_bin[y_bin == 2] = 0
    lr = SoftmaxRegression(max_iter=int(max_iter), tol=1e-15, random_state=SEED)
    with pytest.warns(ConvergenceWarning, match="lbfgs stopped at its iteration limit"):
        lr.fit(X, y_bin)
    assert lr.n_iter_[0] == max_iter


def test_n_iter():
    """The LogisticRegression half (LogisticRegressionCV's is not ported)."""
    X, y = scale(iris.data), iris.target
    y_bin = y.copy()
    y_bin[y_bin == 2] = 0
    clf = SoftmaxRegression(tol=1e-2, C=1.0, random_state=42)
    clf.fit(X, y_bin)
    assert clf.n_iter_.shape == (1,)
    clf.fit(X, y)
    assert clf.n_iter_.shape == (1,)


@pytest.mark.parametrize("warm_start", (True, False))
@pytest.mark.parametrize("fit_intercept", (True, False))
def test_warm_start(warm_start, fit_intercept):
    X, y = iris.data, iris.target
    clf = SoftmaxRegression(tol=1e-4, warm_start=warm_start, random_state=SEED,
                            fit_intercept=fit_intercept, C=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
        coef_1 = clf.coef_
        clf.max_iter = 1
        clf.fit(X, y)
    cum_diff = np.sum(np.abs(coef_1 - clf.coef_))
    if warm_start:
        assert cum_diff < 2.0
    else:
        assert cum_diff > 2.0


@pytest.mark.parametrize("fit_intercept", (True, False))
@pytest.mark.parametrize("csr_container", CSR)
def test_dtype_match(fit_intercept, csr_container):
    """float32 training (smx: ``dtype="float32"``) keeps float32 coefficients."""
    X_32 = np.array(X).astype(np.float32)
    y_32 = np.array(Y1).astype(np.float32)
    X_64 = np.array(X).astype(np.float64)
    y_64 = np.array(Y1).astype(np.float64)
    solver_tol = 5e-4
    templ = {"random_state": 42, "tol": solver_tol, "fit_intercept": fit_intercept}
    lr_32 = SoftmaxRegression(dtype="float32", **templ).fit(X_32, y_32)
    assert lr_32.coef_.dtype == np.float32
    lr_32_sparse = SoftmaxRegression(dtype="float32", **templ).fit(
        csr_container(X, dtype=np.float32), y_32)
    assert lr_32_sparse.coef_.dtype == np.float32
    lr_64 = SoftmaxRegression(**templ).fit(X_64, y_64)
    assert lr_64.coef_.dtype == np.float64
    lr_64_sparse = SoftmaxRegression(**templ).fit(csr_container(X, dtype=np.float64), y_64)
    assert lr_64_sparse.coef_.dtype == np.float64
    atol = 2 * 1.72 * solver_tol
    assert_allclose(lr_32.coef_, lr_64.coef_.astype(np.float32), atol=atol)
    assert_allclose(lr_32.coef_, lr_32_sparse.coef_, atol=atol)
    assert_allclose(lr_64.coef_, lr_64_sparse.coef_, atol=atol)


def test_warm_start_converge_LR():
    """Five warm-started fits reach one cold fit's loss (the original ran sag)."""
    rng = np.random.RandomState(SEED)
    X = np.concatenate((rng.randn(100, 2) + np.ones(2), rng.randn(100, 2)))
    y = np.array([1] * 100 + [-1] * 100)
    lr_no_ws = SoftmaxRegression(warm_start=False, tol=1e-6, random_state=SEED, C=1.0)
    lr_ws = SoftmaxRegression(warm_start=True, tol=1e-6, random_state=SEED, C=1.0)
    lr_no_ws_loss = log_loss(y, lr_no_ws.fit(X, y).predict_proba(X))
    for _ in range(5):
        lr_ws.fit(X, y)
    lr_ws_loss = log_loss(y, lr_ws.predict_proba(X))
    assert_allclose(lr_no_ws_loss, lr_ws_loss, rtol=1e-5)


def test_penalty_none():
    """No penalty: C=np.inf is l2=0 (smx has no ``penalty`` parameter)."""
    X, y = make_classification(n_samples=1000, n_redundant=0, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pred_none = SoftmaxRegression(l2=0.0, max_iter=300, random_state=SEED).fit(X, y)
        pred_inf = SoftmaxRegression(C=np.inf, max_iter=300, random_state=SEED).fit(X, y)
    assert_array_equal(pred_none.predict(X), pred_inf.predict(X))


def test_c_inf_no_warning():
    X, y = make_classification(n_samples=100, n_redundant=0, random_state=42)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        SoftmaxRegression(C=np.inf).fit(X, y)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_multinomial_identifiability_on_iris(fit_intercept):
    """The penalised maximum has Σ_k coef_k = 0 (Zhu & Hastie 2004)."""
    target = iris.target_names[iris.target]
    clf = SoftmaxRegression(C=len(iris.data), fit_intercept=fit_intercept)
    clf.fit(scale(iris.data), target)
    assert_allclose(clf.coef_.sum(axis=0), 0, atol=1e-10)
    if fit_intercept:
        assert clf.intercept_.sum(axis=0) == pytest.approx(0, abs=1e-11)


@pytest.mark.parametrize("class_weight", [{0: 1.0, 1: 10.0, 2: 1.0}, "balanced"])
def test_sample_weight_not_modified(class_weight):
    X, y = load_iris(return_X_y=True)
    W = np.ones(len(X))
    W[: len(X) // 2] = 2
    expected = W.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        SoftmaxRegression(class_weight=class_weight, max_iter=200).fit(X, y, sample_weight=W)
    assert_allclose(expected, W)


@pytest.mark.parametrize("csr_container", CSR)
def test_large_sparse_matrix(csr_container):
    """64-bit sparse indices are taken (only liblinear, sag and saga refuse them)."""
    X = csr_container(sparse.random(20, 10, density=0.01, random_state=42))
    for attr in ["indices", "indptr"]:
        setattr(X, attr, getattr(X, attr).astype("int64"))
    y = np.random.RandomState(42).randint(2, size=X.shape[0])
    SoftmaxRegression().fit(X, y)


def test_zero_max_iter():
    """smx runs at least one iteration: max_iter=0 is refused, naming the parameter
    (scikit-learn fits and leaves lbfgs's first update in place)."""
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="max_iter"):
        SoftmaxRegression(max_iter=0).fit(X, y == 2)


# --- array API ---------------------------------------------------------------------------

COMBOS = list(yield_namespace_device_dtype_combinations())


def _xp(array_namespace, device_name, dtype_name, monkeypatch):
    """scikit-learn's _array_api_for_tests, skipping what is not installed."""
    from sklearn.utils._testing import _array_api_for_tests

    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    try:
        return _array_api_for_tests(array_namespace, device_name, dtype_name)
    except Exception as exc:
        if type(exc).__name__ == "SkipTest":
            pytest.skip(str(exc))
        raise


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("use_str_y", [False, True])
@pytest.mark.parametrize("use_sample_weight", [False, True])
@pytest.mark.parametrize("class_weight", [None, "balanced", "dict"])
@pytest.mark.parametrize("array_namespace, device_name, dtype_name", COMBOS)
@pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning")
def test_logistic_regression_array_api_compliance(binary, use_str_y, use_sample_weight,
                                                  class_weight, array_namespace,
                                                  device_name, dtype_name, monkeypatch):
    xp, device = _xp(array_namespace, device_name, dtype_name, monkeypatch)
    dtype_name = dtype_name or "float64"
    X_np = iris.data.astype(dtype_name, copy=True)
    n_samples, _ = X_np.shape
    X_xp = xp.asarray(X_np, device=device)
    if use_str_y:
        if binary:
            target = np.array(["setosa", "not-setosa"])[(iris.target > 0).astype(np.int64)]
            if class_weight == "dict":
                class_weight = {"setosa": 1.0, "not-setosa": 3.0}
        else:
            target = iris.target_names[iris.target]
            if class_weight == "dict":
                class_weight = {"virginica": 1.0, "setosa": 2.0, "versicolor": 3.0}
        y_np = target.copy()
        y_xp_or_np = np.asarray(y_np, copy=True)
    else:
        if binary:
            target = (iris.target > 0).astype(np.int64)
            if class_weight == "dict":
                class_weight = {0: 1.0, 1: 3.0}
        else:
            target = iris.target
            if class_weight == "dict":
                class_weight = {0: 1.0, 1: 2.0, 2: 3.0}
        y_np = target.astype(dtype_name)  # float labels, int class_weight keys
        y_xp_or_np = xp.asarray(y_np, device=device)
    sample_weight = None
    if use_sample_weight:
        sample_weight = (np.random.default_rng(0).uniform(-1, 5, size=n_samples)
                         .clip(0, None).astype(dtype_name))
    params = {"C": 1e-2, "tol": 1e-12, "max_iter": 500, "class_weight": class_weight,
              "dtype": dtype_name}
    lr_np = SoftmaxRegression(**params).fit(X_np, y_np, sample_weight=sample_weight)
    assert lr_np.n_iter_ < lr_np.max_iter
    assert np.abs(lr_np.coef_).max() > 0.1
    atol = (1e-5 if dtype_name == "float32" else 1e-12) * 10
    rtol = 5e-3 if dtype_name == "float32" else 1e-5

    with sklearn.config_context(array_api_dispatch=True):
        lr_xp = SoftmaxRegression(**params).fit(X_xp, y_xp_or_np, sample_weight=sample_weight)
        assert lr_xp.n_iter_.shape == lr_np.n_iter_.shape
        assert int(lr_xp.n_iter_[0]) < lr_xp.max_iter
        for attr_name in ("coef_", "intercept_"):
            attr_xp = getattr(lr_xp, attr_name)
            assert_allclose(to_numpy(attr_xp), getattr(lr_np, attr_name), rtol=rtol, atol=atol)
            assert attr_xp.dtype == X_xp.dtype
            assert attr_xp.device == X_xp.device
        for method in ("predict_proba", "predict_log_proba"):
            out = getattr(lr_xp, method)(X_xp)
            assert_allclose(to_numpy(out), getattr(lr_np, method)(X_np), rtol=rtol, atol=atol)
            assert out.dtype == X_xp.dtype and out.device == X_xp.device
        prediction_xp = lr_xp.predict(X_xp)
        assert_array_equal(to_numpy(prediction_xp), lr_np.predict(X_np))


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("array_namespace, device_name, dtype_name", COMBOS)
@pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning")
def test_logistic_regression_array_api_warm_start(binary, array_namespace, device_name,
                                                  dtype_name, monkeypatch):
    xp, device_ = _xp(array_namespace, device_name, dtype_name, monkeypatch)
    dtype_name = dtype_name or "float64"
    X_np = iris.data.astype(dtype_name, copy=True)
    y_np = ((iris.target > 0) if binary else iris.target).astype(dtype_name)
    X_xp = xp.asarray(X_np, device=device_)
    y_xp = xp.asarray(y_np, device=device_)
    with sklearn.config_context(array_api_dispatch=True):
        lr = SoftmaxRegression(C=1e-2, max_iter=300, warm_start=True, dtype=dtype_name)
        lr.fit(X_xp, y_xp)
        lr.predict(X_xp)
        lr.fit(X_xp, y_xp)
        assert int(lr.n_iter_[0]) <= 2  # started at the optimum
