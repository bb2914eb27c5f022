"""Softmax regression as pure functions of Array API arrays.

The one place the math lives. Nothing here imports an array library: the
namespace comes from the arrays themselves (``array_api_compat``), so the
same code runs on NumPy, CuPy, PyTorch, JAX, Dask and ``array_api_strict``.

Objective (per batch of n rows, weights w, summing to 1 after normalising)::

    L(W, b) = Σ_i w_i · (−log softmax(x_i W + b)[y_i]) + (l2/2)·‖W‖²

scikit-learn's ``LogisticRegression(C)`` minimises ``C·Σ loss + ½‖W‖²``, the same
function times ``C·n``: the optima agree when ``l2 = 1/(C·n)`` (``model.C`` in a config).

Its gradient is the seed's dℓ/dθ_ij = (softmax(z)_j − y_j)·x_i, averaged:
``G = (softmax(Z) − onehot(y)) · w``; ``dW = Xᵀ G + l2·W``; ``db = Σ_i G_i``.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from smx.types import Array, Params


def logits(params: Params, X: Array) -> Array:
    """``X @ W + b`` (``b`` omitted when the model has no intercept)."""
    Z = X @ params["W"]
    return Z + params["b"] if "b" in params else Z


def log_softmax(Z: Array) -> Array:
    """Row-wise log-softmax, shifted by the row max so ``exp`` never overflows."""
    xp = array_namespace(Z)
    S = Z - xp.max(Z, axis=1, keepdims=True)
    return S - xp.log(xp.sum(xp.exp(S), axis=1, keepdims=True))


def softmax(Z: Array) -> Array:
    xp = array_namespace(Z)
    return xp.exp(log_softmax(Z))


def one_hot(y: Array, n_classes: int, dtype: Any) -> Array:
    """Class indices (n,) -> (n, K) indicator matrix in ``dtype``, on ``y``'s device."""
    xp = array_namespace(y)
    classes = xp.arange(n_classes, dtype=y.dtype, device=getattr(y, "device", None))
    return xp.astype(y[:, None] == classes[None, :], dtype)


def loss_and_grad(
    params: Params,
    X: Array,
    Y: Array,
    l2: float = 0.0,
    sample_weight: Array | None = None,
) -> tuple[Array, Params]:
    """Loss and gradient together, so the logits are computed once.

    ``Y`` is either the one-hot (n, K) target or the class indices (n,): indices
    are what the training loop gathers per batch (n ints instead of n·K floats).
    ``sample_weight`` (n,) is normalised to sum to 1; ``None`` means the plain mean.
    Returns a 0-d loss array on the device: the caller decides when to sync.

    Works in the transposed (K, n) layout: the row max and row sums of the
    logits become reductions over axis 0 of a C-ordered array, which NumPy
    vectorises (a reduction over a length-K last axis costs ~30x more at K=10).
    Temporaries are updated in place (a fresh array, never an input; on an
    immutable library such as JAX ``a -= b`` just rebinds).
    """
    xp = array_namespace(X, params["W"])
    W = params["W"]
    n = X.shape[0]
    Yt = _targets_t(xp, Y, W)
    Zt = W.T @ X.T  # (K, n) logits
    if "b" in params:
        Zt += params["b"][:, None]
    Zt -= xp.max(Zt, axis=0, keepdims=True)
    Pt = xp.exp(Zt)
    s = xp.sum(Pt, axis=0, keepdims=True)  # (1, n)
    Pt /= s
    Pt -= Yt  # softmax − onehot, unscaled
    # −log p[y] = log s − z_y  (z already shifted by the row max)
    if sample_weight is None:
        scale = 1.0 / n
        data_loss = (xp.sum(xp.log(s)) - _vdot(xp, Yt, Zt)) * scale
    else:
        w = xp.astype(sample_weight, W.dtype)  # keep the model's dtype (no float64 upcast)
        w = w / xp.sum(w)
        data_loss = xp.sum((xp.log(s)[0, :] - xp.sum(Yt * Zt, axis=0)) * w)
        Pt *= w[None, :]
        scale = 1.0
    # (d, K) directly, not the transpose of a (K, d) product: a transposed view's
    # layout would reach optimizer state (and the order of later reductions over it)
    dW = X.T @ Pt.T
    if scale != 1.0:
        dW *= scale
    grads: Params = {"W": dW}
    if l2:
        data_loss = data_loss + (0.5 * l2) * _vdot(xp, W, W)
        grads["W"] = grads["W"] + l2 * W
    if "b" in params:
        db = xp.sum(Pt, axis=1)
        grads["b"] = db * scale if scale != 1.0 else db
    return data_loss, grads


def _targets_t(xp: Any, Y: Array, W: Array) -> Array:
    """The one-hot targets as (K, n), built from class indices when given those."""
    if Y.ndim == 2:
        return Y.T
    classes = xp.arange(W.shape[1], dtype=Y.dtype, device=getattr(Y, "device", None))
    return xp.astype(classes[:, None] == Y[None, :], W.dtype)


def _vdot(xp: Any, a: Array, b: Array) -> Array:
    """Σ a·b as one BLAS dot over the flattened arrays (no (n, K) temporary)."""
    return xp.reshape(a, (-1,)) @ xp.reshape(b, (-1,))


def loss(
    params: Params, X: Array, Y: Array, l2: float = 0.0, sample_weight: Array | None = None
) -> Array:
    """The objective alone (no ``Xᵀ G`` product): for evaluation and line searches.

    ``Y`` is the one-hot (n, K) target or the class indices (n,), as in :func:`loss_and_grad`.
    """
    xp = array_namespace(X, params["W"])
    logp = log_softmax(logits(params, X))
    if Y.ndim == 1:
        Y = _targets_t(xp, Y, params["W"]).T
    if sample_weight is None:
        value = -xp.sum(Y * logp) / X.shape[0]
    else:
        w = sample_weight / xp.sum(sample_weight)
        value = -xp.sum(xp.sum(Y * logp, axis=1) * w)
    if l2:
        value = value + (0.5 * l2) * xp.sum(params["W"] * params["W"])
    return value


def predict_proba(params: Params, X: Array) -> Array:
    return softmax(logits(params, X))


def predict(params: Params, X: Array) -> Array:
    """Class indices (map through the model's ``classes`` for user labels)."""
    xp = array_namespace(X)
    return xp.argmax(logits(params, X), axis=1)


def accuracy(params: Params, X: Array, y: Array) -> Array:
    """Fraction of rows whose argmax is the label, as a 0-d device array."""
    xp = array_namespace(X)
    hits = xp.astype(predict(params, X) == y, params["W"].dtype)
    return xp.mean(hits)
