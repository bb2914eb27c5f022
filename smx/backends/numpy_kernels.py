"""NumPy's fused cross-entropy partial: the same sums as the portable path, faster.

Offered through :meth:`smx.types.Backend.kernel` for the one loss it computes,
``cross_entropy`` without label smoothing (sample and class weights included);
any other loss or option runs the portable core. What it does that the
standard cannot express:

- the product orientation follows the size: for a batch that fits in cache
  (``X`` up to 4 MiB) OpenBLAS runs ``X @ W`` about 1.8x faster than ``Wᵀ Xᵀ``,
  and the (n, K) logits are copied once into the (K, n) layout, where the row
  max and row sums are fast axis-0 reductions, and the gradient is ``Xᵀ G``;
  for a full batch ``Wᵀ Xᵀ`` and ``Gᵀ X`` are faster (up to 2x in float64 at
  200,000 x 256);
- the label terms are picked and subtracted through flat indices
  (``y·n + i``) instead of building a one-hot matrix;
- scalars are cast to the array dtype, so float32 stays float32.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from smx.losses import CROSS_ENTROPY_KEY
from smx.objective import Partial
from smx.types import Block, Params

#: up to this many bytes of X, ``X @ W`` then a (K, n) copy beats ``Wᵀ Xᵀ`` (OpenBLAS, 2 cores)
CACHED_BATCH_BYTES = 4 << 20
#: the fewest rows in a piece of a large block (very wide X: pieces past the cache size)
MIN_PIECE_ROWS = 64
#: OpenBLAS (SkylakeX/Zen builds) multiplies up to M·N·K = 1e6 with its small-matrix
#: kernels, which skip packing: one thread, 100,000 x 256 x 10 float32 in pieces of 384
#: rows 26.7 ms, of 512 rows 42.7 ms (float64: 42.0 vs 75.2; benchmarks/NOTES.md)
SMALL_GEMM = 1_000_000
#: the loss this kernel computes (``Loss.kernel_key``)
KEY = CROSS_ENTROPY_KEY


def piece_rows(X: np.ndarray, k: int) -> int:
    """Rows per piece: both products within the small-GEMM size and X's piece in cache."""
    d = max(X.shape[1], 1)
    by_size = SMALL_GEMM // (d * k) if k else X.shape[0]
    by_cache = CACHED_BATCH_BYTES // max(d * X.itemsize, 1)
    return max(MIN_PIECE_ROWS, min(by_size, by_cache))


def cross_entropy_partial(params: Params, block: Block, class_weight: Any = None,
                          *, grad: bool = True) -> Partial:
    """``portable_partial`` for unsmoothed cross-entropy and class indices.

    A block of more rows than :func:`piece_rows` is taken in pieces whose partials add:
    each piece is read from memory once for both products (the second finds it in
    cache; the two whole-block products read all of X twice) and each product stays in
    the BLAS's small-matrix kernels: 1.4-2x faster for a 1024-row batch or a full
    batch of 100,000 x 256 (benchmarks/NOTES.md)."""
    X = block.X
    if isinstance(X, np.ndarray) and X.ndim == 2:
        n, step = X.shape[0], piece_rows(X, params["W"].shape[1])
        if n > step:
            y, w = block.y, block.w
            total = None
            count = -(-n // step)  # pieces of even size: no short last piece, whose fixed
            edges = [n * i // count for i in range(count + 1)]  # cost is a whole piece's
            for a, b in itertools.pairwise(edges):
                piece = Block(X[a:b], y[a:b], None if w is None else w[a:b])
                part = _block_partial(params, piece, class_weight, grad)
                total = part if total is None else total + part
            return total  # type: ignore[return-value]
    return _block_partial(params, block, class_weight, grad)


def _block_partial(params: Params, block: Block, class_weight: Any, grad: bool) -> Partial:
    X, y, w = block.X, block.y, block.w
    W = params["W"]
    n = X.shape[0]
    dt = W.dtype.type
    # scipy.sparse X (CSR): ``X @ W`` and ``Xᵀ G`` are its own sparse products
    small = X.nbytes <= CACHED_BATCH_BYTES if isinstance(X, np.ndarray) else True
    Zt = np.ascontiguousarray((X @ W).T) if small else W.T @ X.T  # (K, n) logits
    if "b" in params:
        Zt += params["b"][:, None]
    Zt -= Zt.max(axis=0)
    Pt = np.exp(Zt)
    s = Pt.sum(axis=0)
    # position of (y_i, i) in the flattened (K, n) arrays; in intp, since y·n overflows
    # narrow label dtypes (int8 wraps at n = 100 already)
    flat = y.astype(np.intp, copy=False) * n + np.arange(n)
    r = None if class_weight is None else class_weight[y]
    if w is not None:
        w = w.astype(W.dtype, copy=False)
        r = w if r is None else w * r
    if r is None:
        loss = np.log(s).sum() - Zt.ravel()[flat].sum()
        weight: Any = n
    else:
        loss = np.dot(np.log(s) - Zt.ravel()[flat], r)
        weight = r.sum()
    if not grad:
        return Partial(loss, weight)
    Pt /= s
    Pt.ravel()[flat] -= dt(1)  # softmax − onehot
    if r is not None:
        Pt *= r
    # the gradient must come out C-ordered: its layout reaches optimizer state, and later
    # reductions over it must not depend on how it was made (a resumed run, whose state
    # comes back C-ordered, must match bit for bit)
    if not isinstance(X, np.ndarray):  # sparse: its product's layout is its own
        dW = np.ascontiguousarray(X.T @ Pt.T)
    else:
        dW = X.T @ Pt.T if small else np.ascontiguousarray((Pt @ X).T)  # ~12 % faster cached
    grads: Params = {"W": dW}
    if "b" in params:
        grads["b"] = Pt.sum(axis=1)
    return Partial(loss, weight, grads)
