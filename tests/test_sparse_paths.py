"""Every path scipy.sparse X can take, held to the dense result (float64, ~1e-10): the
portable core where the NumPy kernel declines (label smoothing, a loss without a kernel,
evaluation, L-BFGS's value-and-gradient, the model's predictions), every optimizer, sample
and class weights, the estimator's predictions and the saved model. X is never densified."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from smx import SoftmaxRegression, model
from smx.config import load_config
from smx.datasets.split import Splits, Standardizer
from smx.errors import DataError, ModelFileError
from smx.losses import CrossEntropy
from smx.modelfile import FittedModel, load_model
from smx.objective import Objective
from smx.plugins import Plugins
from smx.training import Trainer, evaluate
from smx.types import Block

PLUGINS = Plugins(entry_points=False)
TIGHT = {"rtol": 0, "atol": 1e-10}
OPTIMIZERS = ["lbfgs", "sgd", "adam", "adamw", "rmsprop", "adagrad"]


def text_like(n: int = 240, d: int = 120, k: int = 4, density: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed + 1, dtype=np.float64)
    y = np.argmax(X @ rng.normal(size=(d, k)) * 3 + rng.gumbel(size=(n, k)), axis=1)
    return X, y


@pytest.fixture
def never_dense(monkeypatch):
    """Densifying a SciPy sparse matrix fails the test."""
    def boom(self, *args, **kwargs):
        raise AssertionError("sparse X was densified")

    for cls in (sp.csr_matrix, sp.csc_matrix, sp.csr_array, sp.csc_array, sp.coo_matrix):
        monkeypatch.setattr(cls, "toarray", boom)
        monkeypatch.setattr(cls, "todense", boom)


@pytest.fixture
def portable(monkeypatch):
    """The NumPy engine without its fused kernel: every partial runs the portable core."""
    from smx.backends.numpy_backend import NumpyBackend

    monkeypatch.setattr(NumpyBackend, "kernel", lambda self, loss: None)


def params_for(d: int, k: int, intercept: bool = True, seed: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    p = {"W": rng.normal(size=(d, k))}
    if intercept:
        p["b"] = rng.normal(size=k)
    return p


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("intercept", [True, False])
def test_portable_objective_on_sparse_matches_dense(smoothing, weighted, intercept):
    X, y = text_like()
    dense = X.toarray()
    rng = np.random.default_rng(5)
    w = rng.uniform(0.2, 2.0, size=len(y)) if weighted else None
    cw = rng.uniform(0.5, 2.0, size=4) if weighted else None
    obj = Objective(CrossEntropy(smoothing), 0.01, class_weight=cw)  # no kernel: portable
    params = params_for(X.shape[1], 4, intercept)
    for fmt in ("csr", "csc"):
        v_s, g_s = obj.value_and_grad(params, Block(X.asformat(fmt), y, w))
        v_d, g_d = obj.value_and_grad(params, Block(dense, y, w))
        np.testing.assert_allclose(v_s, v_d, **TIGHT)
        assert g_s.keys() == g_d.keys()
        for key in g_d:
            assert isinstance(g_s[key], np.ndarray)
            np.testing.assert_allclose(g_s[key], g_d[key], **TIGHT)


def test_model_and_evaluation_on_sparse_match_dense(never_dense):
    X, y = text_like()
    params = params_for(X.shape[1], 4)
    dense = _dense(X)
    for fn in (model.logits, model.predict_proba, model.predict):
        np.testing.assert_allclose(fn(params, X), fn(params, dense), **TIGHT)
    np.testing.assert_allclose(model.logits_t(params, X), model.logits_t(params, dense), **TIGHT)
    assert float(model.accuracy(params, X, y)) == float(model.accuracy(params, dense, y))
    backend = PLUGINS.backend("numpy")
    for loss in (CrossEntropy(), CrossEntropy(0.1)):  # the kernel, then the portable core
        obj = Objective(loss, 0.0, kernel=backend.kernel(loss))
        got = evaluate(backend, obj, params, backend.place(X, y, None, "cpu", "float64"))
        want = evaluate(backend, obj, params, backend.place(dense, y, None, "cpu", "float64"))
        assert got["accuracy"] == want["accuracy"]
        np.testing.assert_allclose(got["loss"], want["loss"], **TIGHT)


def trained(X, y, w, overrides: dict) -> dict:
    cfg = load_config({"model": {"l2": 1e-2, "init_scale": 0.0}, "epochs": 4, "batch_size": 50,
                       "seed": 0, "dtype": "float64", **overrides}, plugins=PLUGINS)
    empty, none = np.empty((0, X.shape[1])), np.empty(0, np.int64)
    splits = Splits(classes=np.arange(4), X_train=X, y_train=y, X_val=empty, y_val=none,
                    X_test=empty, y_test=none, standardizer=Standardizer.identity(X.shape[1]),
                    w_train=w)
    backend = PLUGINS.backend(cfg.backend)
    return Trainer(cfg, splits, backend, "cpu", PLUGINS).fit().params


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_trainer_with_label_smoothing_on_sparse_matches_dense(optimizer, never_dense):
    """Label smoothing has no NumPy kernel: training runs the portable core on sparse X,
    with sample and class weights, clipping and the once-shuffled batch order."""
    X, y = text_like()
    w = np.random.default_rng(4).uniform(0.2, 2.0, size=len(y))
    dense = _dense(X)
    lr = {"lbfgs": 1.0, "sgd": 0.5}.get(optimizer, 0.05)
    over = {"optimizer": {"name": optimizer, "lr": lr},
            "loss": {"name": "cross_entropy", "label_smoothing": 0.1,
                     "class_weight": "balanced"},
            "clip_grad_norm": None if optimizer == "lbfgs" else 5.0,
            "shuffle": "batches"}
    a, b = trained(X, y, w, over), trained(dense, y, w, over)
    for key in b:
        np.testing.assert_allclose(a[key], b[key], **TIGHT)


def _dense(X) -> np.ndarray:
    """X densified by hand (toarray may be patched to fail)."""
    coo = X.tocoo()
    out = np.zeros(X.shape)
    np.add.at(out, (coo.row, coo.col), coo.data)
    return out


@pytest.mark.parametrize("kernel", ["numpy-kernel", "portable"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("k", [2, 4])
def test_estimator_on_sparse_matches_dense(optimizer, kernel, k, request, never_dense):
    """fit (sample and class weights), predict, predict_proba, predict_log_proba,
    decision_function and score, binary and multiclass, with the NumPy kernel and without."""
    if kernel == "portable":
        request.getfixturevalue("portable")
    X, y = text_like(k=k)
    dense = _dense(X)
    w = np.random.default_rng(4).uniform(0.2, 2.0, size=len(y))
    kw = {"optimizer": optimizer, "C": 10.0, "class_weight": "balanced", "random_state": 0}
    if optimizer != "lbfgs":
        kw |= {"optimizer_params": {"lr": 0.5 if optimizer == "sgd" else 0.05},
               "epochs": 3, "batch_size": 32}
    a = SoftmaxRegression(**kw).fit(X, y, sample_weight=w)
    b = SoftmaxRegression(**kw).fit(dense, y, sample_weight=w)
    tol = TIGHT if optimizer != "lbfgs" else {"rtol": 0, "atol": 1e-8}  # line search branches
    np.testing.assert_allclose(a.coef_, b.coef_, **tol)
    np.testing.assert_allclose(a.intercept_, b.intercept_, **tol)
    for fmt in ("csr", "csc"):
        Xf = X.asformat(fmt)
        for method in ("decision_function", "predict_proba", "predict_log_proba"):
            np.testing.assert_allclose(getattr(a, method)(Xf), getattr(a, method)(dense),
                                       **TIGHT)
        np.testing.assert_array_equal(a.predict(Xf), a.predict(dense))
        assert a.score(Xf, y, sample_weight=w) == a.score(dense, y, sample_weight=w)
    assert a.decision_function(X).shape == ((len(y),) if k == 2 else (len(y), k))


def test_saved_model_predicts_sparse_as_dense(tmp_path, never_dense):
    """The CLI's model file (FittedModel), standardisation folded into the weights."""
    X, y = text_like()
    dense = _dense(X)
    est = SoftmaxRegression(C=10.0, standardize=True).fit(dense, y)
    fitted = est.model_
    assert (fitted.standardizer.mean != 0).any()
    est.save(tmp_path / "model.npz")
    loaded = load_model(tmp_path / "model.npz")
    for m in (fitted, loaded):
        for fmt in ("csr", "csc", "coo"):
            np.testing.assert_allclose(m.predict_proba(X.asformat(fmt)), m.predict_proba(dense),
                                       rtol=0, atol=1e-12)
            np.testing.assert_array_equal(m.predict(X.asformat(fmt)), m.predict(dense))
    plain = FittedModel(fitted.W, None, fitted.classes, Standardizer.identity(X.shape[1]))
    np.testing.assert_allclose(plain.predict_proba(X), plain.predict_proba(dense), **TIGHT)


def test_saved_model_refuses_bad_sparse_x():
    X, y = text_like()
    m = SoftmaxRegression().fit(X, y).model_
    with pytest.raises(ModelFileError, match="the model expects 120 features, the data has 7"):
        m.predict(sp.random(5, 7, density=0.5, format="csr", random_state=0))
    bad = X.copy()
    r, c = bad.nonzero()
    bad[r[3], c[3]] = np.nan
    with pytest.raises(DataError, match=rf"1 NaN/inf value\(s\); first at row {r[3]}, "
                                        rf"column {c[3]}"):
        m.predict(bad)


@pytest.mark.parametrize("backend", ["torch", "jax", "dask", "array-api-strict"])
def test_engines_without_sparse_products_refuse_it_in_one_line(backend):
    X, y = text_like(n=60)
    with pytest.raises(ValueError) as err:
        SoftmaxRegression(backend=backend).fit(X, y)
    text = str(err.value)
    assert "\n" not in text and f"not {backend!r}" in text and "X.toarray()" in text


def test_trainer_refuses_sparse_on_an_engine_without_it():
    X, y = text_like(n=60)
    with pytest.raises(DataError, match="backend 'array-api-strict' does not take sparse X"):
        trained(X, y, None, {"backend": "array-api-strict"})


def test_auto_trains_sparse_on_numpy_without_a_gpu(monkeypatch):
    from smx.backends.cupy_backend import CupyBackend

    monkeypatch.setattr(CupyBackend, "unavailable_reason", lambda self: "no GPU here")
    X, y = text_like(n=80)
    est = SoftmaxRegression(backend="auto").fit(X, y)
    assert est.model_.meta["backend"] == "numpy"


def test_tfidf_pipeline_as_the_readme_shows_matches_logistic_regression(never_dense):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    topics = {"sport": "goal match team score league", "code": "python array bug test merge",
              "food": "bread soup salt oven recipe"}
    common = ["the", "a", "of", "and", "to", "in", "is", "it"]
    texts, labels = [], []
    for _ in range(150):
        label = rng.choice(list(topics))
        words = rng.choice(topics[label].split(), 4).tolist() + rng.choice(common, 6).tolist()
        texts.append(" ".join(rng.permutation(words)))
        labels.append(label)
    ours = make_pipeline(TfidfVectorizer(sublinear_tf=True),
                         SoftmaxRegression(C=10.0, tol=1e-10, max_iter=1000))
    ref = make_pipeline(TfidfVectorizer(sublinear_tf=True),
                        LogisticRegression(C=10.0, tol=1e-10, max_iter=10_000))
    ours.fit(texts, labels)
    ref.fit(texts, labels)
    new = ["a goal in the match", "python test of a bug", "salt in the soup"]
    assert ours.predict(new).tolist() == ["sport", "code", "food"]
    np.testing.assert_allclose(ours.predict_proba(new), ref.predict_proba(new), atol=1e-5)
