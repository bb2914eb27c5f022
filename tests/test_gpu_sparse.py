"""Sparse X on the CuPy engine: cupyx.scipy.sparse CSR/CSC (and scipy.sparse moved to the
GPU as cupyx CSR) trained and predicted without densifying, held to the NumPy engine's
scipy.sparse result. Marked ``gpu``: skipped, with CuPy's reason, where no GPU is usable.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from smx import SoftmaxRegression
from smx.config import load_config
from smx.datasets.split import Splits, Standardizer
from smx.plugins import Plugins
from smx.training import Trainer

pytestmark = pytest.mark.gpu
PLUGINS = Plugins(entry_points=False)


def text_like(n: int = 600, d: int = 400, k: int = 5, density: float = 0.02):
    rng = np.random.default_rng(0)
    X = sp.random(n, d, density=density, format="csr", random_state=1, dtype=np.float64)
    y = np.argmax(X @ rng.normal(size=(d, k)) * 3 + rng.gumbel(size=(n, k)), axis=1)
    return X, y


@pytest.fixture
def csp(monkeypatch):
    """cupyx.scipy.sparse, with densifying a cupyx matrix made to fail the test."""
    from cupyx.scipy import sparse as csp

    def boom(self, *args, **kwargs):
        raise AssertionError("sparse X was densified on the GPU")

    for cls in (csp.csr_matrix, csp.csc_matrix):
        monkeypatch.setattr(cls, "toarray", boom)
        monkeypatch.setattr(cls, "todense", boom)
    return csp


LBFGS = {"C": 10.0, "tol": 1e-10, "max_iter": 1000, "optimizer_params": {"ftol": 0.0}}


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_cupyx_input_trains_on_cupy_as_numpy_sparse(csp, fmt):
    import cupy

    X, y = text_like()
    ref = SoftmaxRegression(**LBFGS).fit(X, y)
    Xg = csp.csr_matrix(X) if fmt == "csr" else csp.csc_matrix(X)
    est = SoftmaxRegression(**LBFGS, backend="cupy").fit(Xg, y)
    assert est.model_.meta["backend"] == "cupy"
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-6 * scale)
    proba = est.predict_proba(Xg)
    assert isinstance(proba, cupy.ndarray)  # answered in the input's library
    np.testing.assert_allclose(cupy.asnumpy(proba), ref.predict_proba(X), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(cupy.asnumpy(est.predict(Xg)), ref.predict(X))
    np.testing.assert_allclose(cupy.asnumpy(est.decision_function(Xg)),
                               est.decision_function(X), rtol=0, atol=1e-10)


def test_scipy_sparse_with_backend_cupy_moves_to_the_gpu_as_csr(csp, monkeypatch):
    from smx.backends.cupy_backend import CupyBackend

    placed = []
    place = CupyBackend.place

    def recording(self, X, *args, **kwargs):
        block = place(self, X, *args, **kwargs)
        placed.append(type(block.X))
        return block

    monkeypatch.setattr(CupyBackend, "place", recording)
    X, y = text_like()
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=len(y))
    ref = SoftmaxRegression(**LBFGS, class_weight="balanced").fit(X, y, sample_weight=w)
    est = SoftmaxRegression(**LBFGS, class_weight="balanced", backend="cupy").fit(
        X, y, sample_weight=w)
    assert placed[0] is csp.csr_matrix and est.model_.meta["backend"] == "cupy"
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-6 * scale)


def test_minibatches_on_cupyx_match_numpy_sparse(csp):
    X, y = text_like()
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=len(y))
    kw = {"optimizer": "adam", "optimizer_params": {"lr": 0.05}, "epochs": 3, "batch_size": 32,
          "random_state": 0}
    ref = SoftmaxRegression(**kw).fit(X, y, sample_weight=w)
    est = SoftmaxRegression(**kw, backend="cupy").fit(csp.csr_matrix(X), y, sample_weight=w)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-7, atol=1e-9)


def test_label_smoothing_on_cupyx_runs_the_portable_core(csp):
    X, y = text_like()

    def trained(backend: str, Xin) -> dict:
        cfg = load_config({"backend": backend, "dtype": "float64", "epochs": 3,
                           "batch_size": 64, "seed": 0, "model": {"l2": 1e-3},
                           "optimizer": {"name": "sgd", "lr": 0.5},
                           "loss": {"name": "cross_entropy", "label_smoothing": 0.1}},
                          plugins=PLUGINS)
        empty, none = np.empty((0, X.shape[1])), np.empty(0, np.int64)
        splits = Splits(classes=np.arange(5), X_train=Xin, y_train=y, X_val=empty,
                        y_val=none, X_test=empty, y_test=none,
                        standardizer=Standardizer.identity(X.shape[1]))
        b = PLUGINS.backend(backend)
        return Trainer(cfg, splits, b, b.resolve_device("auto"), PLUGINS).fit().params

    ref, got = trained("numpy", X), trained("cupy", csp.csr_matrix(X))
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-7, atol=1e-9)


def test_saved_model_predicts_cupyx_input(csp, tmp_path):
    X, y = text_like()
    est = SoftmaxRegression(C=10.0).fit(X, y)
    est.save(tmp_path / "m.npz")
    loaded = SoftmaxRegression.load(tmp_path / "m.npz")
    np.testing.assert_allclose(loaded.model_.predict_proba(csp.csr_matrix(X)),
                               est.predict_proba(X), rtol=0, atol=1e-12)
