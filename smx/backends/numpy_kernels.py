"""NumPy's fused loss-and-gradient: the same math as :func:`smx.model.loss_and_grad`, faster.

Offered through :meth:`smx.types.Backend.loss_and_grad_kernel`, so the portable
core stays Array-API-only. What it does that the standard cannot express:

- the logits come from ``X @ W`` (OpenBLAS runs this skinny (n, d)·(d, K) product
  about 1.8x faster than ``Wᵀ Xᵀ``) and are then copied once into the (K, n)
  layout, where the row max and row sums are fast axis-0 reductions;
- the label terms are picked and subtracted through flat indices
  (``y·n + i``) instead of building a one-hot matrix;
- scalars are cast to the array dtype, so float32 stays float32.
"""

from __future__ import annotations

import numpy as np

from smx.types import Params


def loss_and_grad(params: Params, X: np.ndarray, y: np.ndarray,
                  l2: float = 0.0) -> tuple[np.ndarray, Params]:
    """``model.loss_and_grad`` for class indices ``y`` (n,) and no sample weights."""
    if y.ndim != 1:  # one-hot targets: the portable path handles them
        from smx import model

        return model.loss_and_grad(params, X, y, l2)
    W = params["W"]
    n = X.shape[0]
    dt = W.dtype.type
    inv_n = dt(1.0 / n)
    Zt = np.ascontiguousarray((X @ W).T)  # (K, n)
    if "b" in params:
        Zt += params["b"][:, None]
    Zt -= Zt.max(axis=0)
    Pt = np.exp(Zt)
    s = Pt.sum(axis=0)
    flat = y * n + np.arange(n)  # position of (y_i, i) in the flattened (K, n) arrays
    loss = (np.log(s).sum() - Zt.ravel()[flat].sum()) * inv_n
    Pt /= s
    Pt.ravel()[flat] -= dt(1)  # softmax − onehot
    dW = X.T @ Pt.T
    dW *= inv_n
    grads: Params = {"W": dW}
    if l2:
        loss = loss + dt(0.5 * l2) * np.vdot(W, W)
        dW += dt(l2) * W
    if "b" in params:
        grads["b"] = Pt.sum(axis=1) * inv_n
    return loss, grads
