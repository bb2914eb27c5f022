"""JAX's cross-entropy partial: the portable sums, in the layout XLA's CPU dots prefer.

Offered through :meth:`smx.types.Backend.kernel` for unsmoothed cross-entropy (sample
and class weights included), like :mod:`smx.backends.numpy_kernels`. The portable path
works on class-major (K, n) logits (``Wᵀ Xᵀ``), which suits NumPy's reductions; XLA on
the CPU runs that product and the gradient's ``(Gᵀ X)ᵀ`` 2-3x slower than the row-major
``X W`` and ``Xᵀ G`` at a 1024 x 256 batch (benchmarks/NOTES.md). Under ``jax.jit`` the
one-hot comparison and the weighting fuse into the softmax's loop.
"""

from __future__ import annotations

from typing import Any

from smx.objective import Partial
from smx.types import Block, Params


def cross_entropy_partial(params: Params, block: Block, class_weight: Any = None,
                          *, grad: bool = True) -> Partial:
    import jax.numpy as jnp

    X, y, w = block.X, block.y, block.w
    W = params["W"]
    n, k = X.shape[0], W.shape[1]
    Z = X @ W  # (n, K)
    if "b" in params:
        Z = Z + params["b"]
    Z = Z - jnp.max(Z, axis=1, keepdims=True)
    P = jnp.exp(Z)
    s = jnp.sum(P, axis=1)
    picked = jnp.take_along_axis(Z, y[:, None].astype(jnp.int32), axis=1)[:, 0]
    rows = jnp.log(s) - picked
    r = None if class_weight is None else jnp.take(class_weight, y, axis=0)
    if w is not None:
        w = w.astype(W.dtype)
        r = w if r is None else w * r
    if r is None:
        loss, weight = jnp.sum(rows), n
    else:
        loss, weight = jnp.dot(rows, r), jnp.sum(r)
    if not grad:
        return Partial(loss, weight)
    G = P / s[:, None] - (y[:, None] == jnp.arange(k, dtype=y.dtype)).astype(W.dtype)
    if r is not None:
        G = G * r[:, None]
    grads: Params = {"W": X.T @ G}
    if "b" in params:
        grads["b"] = jnp.sum(G, axis=0)
    return Partial(loss, weight, grads)
