"""scipy.sparse X on the NumPy engine: trained and predicted without densifying, to the
same model as the dense array and as scikit-learn's LogisticRegression."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from smx import SoftmaxRegression
from smx.backends import numpy_kernels


def text_like(n: int = 400, d: int = 300, k: int = 4, density: float = 0.05):
    rng = np.random.default_rng(0)
    X = sp.random(n, d, density=density, format="csr", random_state=1, dtype=np.float64)
    y = np.argmax(X @ rng.normal(size=(d, k)) + rng.gumbel(size=(n, k)), axis=1)
    return X, y


@pytest.fixture
def kernel_inputs(monkeypatch):
    """The type of X each kernel call saw."""
    seen: list[type] = []
    fused = numpy_kernels.cross_entropy_partial

    def recording(params, block, *args, **kwargs):
        seen.append(type(block.X))
        return fused(params, block, *args, **kwargs)

    monkeypatch.setattr(numpy_kernels, "cross_entropy_partial", recording)
    return seen


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_lbfgs_matches_dense_and_scikit_learn(fmt, kernel_inputs):
    X, y = text_like()
    X = X.asformat(fmt)
    kw = {"C": 10.0, "tol": 1e-10, "max_iter": 1000, "optimizer_params": {"ftol": 0.0}}
    est = SoftmaxRegression(**kw).fit(X, y)
    assert kernel_inputs and all(issubclass(t, sp.sparray | sp.spmatrix) for t in kernel_inputs)
    dense = SoftmaxRegression(**kw).fit(X.toarray(), y)
    ref = LogisticRegression(C=10.0, tol=1e-10, max_iter=10_000).fit(X, y)
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(est.coef_, dense.coef_, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-4 * scale)
    # the two fits stop at tol=1e-10 on the gradient along paths that differ by rounding
    # (dense X is summed in row pieces, sparse X whole): ~3e-8 apart in probability
    np.testing.assert_allclose(est.predict_proba(X), dense.predict_proba(X.toarray()),
                               rtol=0, atol=1e-7)


def test_sparse_minibatches_match_dense(kernel_inputs):
    X, y = text_like()
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=len(y))
    kw = {"optimizer": "adam", "optimizer_params": {"lr": 0.05}, "epochs": 3, "batch_size": 32,
          "random_state": 0}
    a = SoftmaxRegression(**kw).fit(X, y, sample_weight=w)
    assert all(issubclass(t, sp.sparray | sp.spmatrix) for t in kernel_inputs)
    b = SoftmaxRegression(**kw).fit(X.toarray(), y, sample_weight=w)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-9, atol=1e-12)


def test_sparse_refuses_what_would_densify():
    X, y = text_like(n=60)
    with pytest.raises(ValueError, match="densify"):
        SoftmaxRegression(standardize=True).fit(X, y)
    with pytest.raises(ValueError, match="backend 'numpy' or 'cupy'"):
        SoftmaxRegression(backend="array-api-strict").fit(X, y)
