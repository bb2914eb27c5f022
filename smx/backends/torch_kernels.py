"""PyTorch's cross-entropy partial: the portable sums in row-major (n, K) logits.

Offered through :meth:`smx.types.Backend.kernel` for unsmoothed cross-entropy (sample
and class weights included), like :mod:`smx.backends.numpy_kernels`. The portable path's
class-major ``Wᵀ Xᵀ`` and its reductions over axis 0 are the layout NumPy's reductions
like; PyTorch's CPU and CUDA kernels reduce the last axis fastest and run ``X W`` and
``Xᵀ G`` as plain GEMMs, and each step is a handful of fused-where-possible calls
(``log_softmax`` and ``softmax`` once each) instead of a dozen elementwise ones.
"""

from __future__ import annotations

from typing import Any

from smx.objective import Partial
from smx.types import Block, Params


def cross_entropy_partial(params: Params, block: Block, class_weight: Any = None,
                          *, grad: bool = True) -> Partial:
    import torch

    X, y, w = block.X, block.y, block.w
    W = params["W"]
    n = X.shape[0]
    Z = torch.addmm(params["b"], X, W) if "b" in params else X @ W  # (n, K)
    logp = torch.log_softmax(Z, dim=1)
    rows = -logp.gather(1, y.view(-1, 1)).view(-1)
    r = None if class_weight is None else class_weight[y]
    if w is not None:
        w = w.to(W.dtype)
        r = w if r is None else w * r
    if r is None:
        loss, weight = rows.sum(), n
    else:
        loss, weight = torch.dot(rows, r), r.sum()
    if not grad:
        return Partial(loss, weight)
    G = logp.exp_()  # softmax, in place of the log-probabilities it came from
    G[torch.arange(n, device=G.device), y] -= 1
    if r is not None:
        G *= r.view(-1, 1)
    grads: Params = {"W": X.T @ G}
    if "b" in params:
        grads["b"] = G.sum(dim=0)
    return Partial(loss, weight, grads)
