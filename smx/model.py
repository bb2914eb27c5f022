"""The linear softmax model as pure functions of Array API arrays.

Nothing here imports an array library: the namespace comes from the arrays
themselves (``array_api_compat``), so the same code runs on NumPy, CuPy,
PyTorch, JAX, Dask and ``array_api_strict``. The linear part lives here
(logits ``X W + b`` and the gradient sums ``Xᵀ G``, ``Σ G``); the loss and
the objective built from it are :mod:`smx.losses` and :mod:`smx.objective`.

The seed's gradient dℓ/dθ_ij = (softmax(z)_j − y_j)·x_i is ``Xᵀ G`` with
``G = softmax(Z) − onehot(y)``, the cross-entropy's logit gradient.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from smx.types import Array, Params


def is_sparse(X: object) -> bool:
    """A scipy.sparse or cupyx.scipy.sparse matrix (duck-typed: neither is imported).

    Sparse X has no Array API namespace, but its products with dense arrays of its own
    library (``X @ W``, ``Xᵀ @ G``, sparse on the left) are all the linear part needs, so
    the portable core runs on it without densifying it; the namespace comes from W."""
    return hasattr(X, "nnz") and hasattr(X, "tocsr")


def logits(params: Params, X: Array) -> Array:
    """``X @ W + b`` (``b`` omitted when the model has no intercept)."""
    Z = X @ params["W"]
    return Z + params["b"] if "b" in params else Z


def logits_t(params: Params, X: Array) -> Array:
    """The logits in the class-major (K, n) layout the losses work in: ``Wᵀ Xᵀ (+ b)``."""
    # sparse X: the product with the sparse matrix on the left, which both SciPy and
    # cupyx define (a dense @ sparse product is SciPy's only); the transpose is a view
    Zt = (X @ params["W"]).T if is_sparse(X) else params["W"].T @ X.T
    if "b" in params:
        Zt += params["b"][:, None]
    return Zt


def linear_grads(params: Params, X: Array, Gt: Array) -> Params:
    """The linear part's gradient sums from the logit gradient ``Gt`` (K, n):
    ``Xᵀ G`` for W and ``Σ_i G_i`` for b.

    (d, K) directly, not the transpose of a (K, d) product: a transposed view's
    layout would reach optimizer state (and the order of later reductions over it).
    """
    xp = array_namespace(Gt)
    grads: Params = {"W": X.T @ Gt.T}  # sparse X: its own product, sparse on the left
    if "b" in params:
        grads["b"] = xp.sum(Gt, axis=1)
    return grads


def log_softmax(Z: Array) -> Array:
    """Row-wise log-softmax, shifted by the row max so ``exp`` never overflows."""
    xp = array_namespace(Z)
    S = Z - xp.max(Z, axis=1, keepdims=True)
    return S - xp.log(xp.sum(xp.exp(S), axis=1, keepdims=True))


def softmax(Z: Array) -> Array:
    xp = array_namespace(Z)
    return xp.exp(log_softmax(Z))


def predict_proba(params: Params, X: Array) -> Array:
    return softmax(logits(params, X))


def predict(params: Params, X: Array) -> Array:
    """Class indices (map through the model's ``classes`` for user labels)."""
    xp = array_namespace(params["W"])  # X may be scipy.sparse, which has no namespace
    return xp.argmax(logits(params, X), axis=1)


def accuracy(params: Params, X: Array, y: Array) -> Array:
    """Fraction of rows whose argmax is the label, as a 0-d device array."""
    xp = array_namespace(params["W"])
    hits = xp.astype(predict(params, X) == y, params["W"].dtype)
    return xp.mean(hits)
