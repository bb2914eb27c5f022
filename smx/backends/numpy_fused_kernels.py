"""The Numba code behind :mod:`smx.backends.numpy_fused` (imported only when it runs).

Numerics follow :func:`smx.backends.numpy_kernels.cross_entropy_partial`,
:meth:`smx.objective.Objective.finish` and the SGD chain link by link: the
loss ``Σ r·(log Σ exp(z − m) + m − z_y)``, the gradient ``Σ r·(softmax − onehot) xᵀ``
divided by the weight (n, or Σ r when weighted; 0 counts as 1), ``+ l2·W``
(never on b), coupled decay, momentum ``buf ← μ·buf + g`` (Nesterov: ``g + μ·buf``),
then ``W ← W − lr·u``. Sums run in the array dtype, reassociated (``fastmath``)
so the length-d loops vectorise; float64 accumulators hold the loss and weight.
"""

from __future__ import annotations

import numpy as np
from numba import njit


# reassociation and FMA contraction, but NaN and inf keep their meaning (divergence shows)
@njit(fastmath={"reassoc", "contract", "arcp", "nsz"}, nogil=True, cache=True,
      error_model="numpy")
def sgd_step(X, y, sw, cw, idx, W, b, Wt, gWt, gb, z, buf_W, buf_b,
             lr, l2, wd, mu, nesterov, has_b, has_buf):
    """One minibatch step in place; returns the batch's objective before the update."""
    k_classes, d = Wt.shape
    n = idx.shape[0]
    gWt[:] = 0
    gb[:] = 0
    weighted_s = sw.shape[0] > 0
    weighted_c = cw.shape[0] > 0
    loss = 0.0
    weight = 0.0
    for ii in range(n):
        i = idx[ii]
        x = X[i]
        yi = y[i]
        m = -np.inf
        for k in range(k_classes):
            s = z[0] * 0
            for j in range(d):
                s += x[j] * Wt[k, j]
            if has_b:
                s += b[k]
            z[k] = s
            if s > m:
                m = s
        zy = z[yi]
        tot = z[0] * 0
        for k in range(k_classes):
            e = np.exp(z[k] - m)
            z[k] = e
            tot += e
        r = 1.0
        if weighted_s:
            r = sw[i]
        if weighted_c:
            r = r * cw[yi]
        loss += r * (np.log(tot) + m - zy)
        weight += r
        inv = 1 / tot
        for k in range(k_classes):
            z[k] = z[k] * inv
        z[yi] -= 1
        if weighted_s or weighted_c:
            for k in range(k_classes):
                z[k] = z[k] * r
        for k in range(k_classes):
            g = z[k]
            gb[k] += g
            for j in range(d):
                gWt[k, j] += g * x[j]
    if not (weighted_s or weighted_c):
        weight = float(n)
    elif weight <= 0:  # every row weighs 0: the batch contributes 0, not 0/0
        weight = 1.0
    scale = 1.0 / weight
    sq = 0.0
    for j in range(d):
        for k in range(k_classes):
            w = W[j, k]
            sq += w * w
            g = gWt[k, j] * scale + l2 * w
            if wd != 0:
                g += wd * w
            if has_buf:
                bf = mu * buf_W[j, k] + g
                buf_W[j, k] = bf
                g = g + mu * bf if nesterov else bf
            w = w - lr * g
            W[j, k] = w
            Wt[k, j] = w
    if has_b:
        for k in range(k_classes):
            g = gb[k] * scale
            if has_buf:
                bf = mu * buf_b[k] + g
                buf_b[k] = bf
                g = g + mu * bf if nesterov else bf
            b[k] = b[k] - lr * g
    return loss * scale + 0.5 * l2 * sq
