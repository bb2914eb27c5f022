"""Losses, as plugins: what a block of logits costs and how that cost moves them.

A loss sees the logits of a block of rows in the class-major ``(K, n)`` layout
(row max and row sums are then reductions over axis 0 of a C-ordered array,
which NumPy vectorises; GPUs do not mind), the rows' class indices, and the
optional sample and class weights. It returns *sums*, never means: the loss
summed over the block, the weight those rows carry, and ``Gt``, the weighted
derivative of each row's loss with respect to its logits. Sums add across
batches, chunks and workers; :mod:`smx.objective` divides by the total weight
and adds the penalty once, after the sum.

A loss also tells fused kernels what it is (``kernel_key``): a kernel that
knows ``("cross_entropy", label_smoothing=0)`` is used for exactly that loss
and never silently for another.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field

import smx
from smx.types import Array, LossSpec, PluginParams

#: the ``kernel_key`` of unsmoothed cross-entropy, the loss every built-in fused kernel computes
CROSS_ENTROPY_KEY = ("cross_entropy", 0.0)


class Loss(Protocol):
    """What a loss plugin's factory returns."""

    #: identifies the loss and the options a fused kernel must match (hashable)
    kernel_key: tuple[Any, ...]

    def partial(self, xp: Any, Zt: Array, y: Array, w: Array | None, cw: Array | None,
                *, grad: bool = True) -> tuple[Array, Any, Array | None]:
        """``(Σ loss, Σ weight, Gt)`` of a block; ``Zt`` is a fresh (K, n) temporary that
        may be overwritten. ``w`` (n,) are sample weights, ``cw`` (K,) class weights;
        None means 1. ``Σ weight`` is the Python int ``n`` when nothing is weighted.
        ``Gt`` is None when ``grad`` is false."""


def targets_t(xp: Any, y: Array, n_classes: int, dtype: Any) -> Array:
    """One-hot targets in the (K, n) layout, built on ``y``'s device from class indices."""
    classes = xp.arange(n_classes, dtype=y.dtype, device=getattr(y, "device", None))
    return xp.astype(classes[:, None] == y[None, :], dtype)


def vdot(xp: Any, a: Array, b: Array) -> Array:
    """Σ a·b as one dot over the flattened arrays (no (K, n) temporary)."""
    return xp.reshape(a, (-1,)) @ xp.reshape(b, (-1,))


def row_weights(xp: Any, y: Array, w: Array | None, cw: Array | None, dtype: Any
                ) -> Array | None:
    """``w_i · cw[y_i]`` (n,), or None when neither is given; in the model's dtype."""
    r = None if cw is None else xp.take(cw, y, axis=0)
    if w is not None:
        w = xp.astype(w, dtype)
        r = w if r is None else w * r
    return r


class CrossEntropyParams(PluginParams):
    label_smoothing: float = Field(
        0.0, ge=0, le=1, description="PyTorch's: targets (1 − ε)·onehot + ε/K")


class CrossEntropy:
    """Softmax cross-entropy, with PyTorch's ``cross_entropy(weight=, label_smoothing=)``.

    Row ``i`` with label ``y``, sample weight ``s`` and class weights ``c`` costs
    ``s · Σ_j q_j (lse(z) − z_j)`` with ``q_j = (1 − ε)·c_y·[j = y] + (ε/K)·c_j``
    and weighs ``s · c_y`` (PyTorch divides by ``Σ c_y`` whatever ε is). Its
    logit gradient is ``s · (Σ_j q_j · softmax(z) − q)``: the seed's
    ``softmax − onehot`` when nothing is weighted or smoothed.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = float(label_smoothing)
        self.kernel_key = ("cross_entropy", self.label_smoothing)

    def partial(self, xp: Any, Zt: Array, y: Array, w: Array | None, cw: Array | None,
                *, grad: bool = True) -> tuple[Array, Any, Array | None]:
        K, n = Zt.shape
        Yt = targets_t(xp, y, K, Zt.dtype)
        Zt -= xp.max(Zt, axis=0, keepdims=True)
        Pt = xp.exp(Zt)
        s = xp.sum(Pt, axis=0, keepdims=True)  # (1, n); log s is the log-sum-exp of shifted z
        lse = xp.log(s)
        r = row_weights(xp, y, w, cw, Zt.dtype)
        eps = self.label_smoothing
        if eps == 0.0:
            # ℓ_i = lse_i − z_{y_i}; G = softmax − onehot, each row times r_i
            if r is None:
                loss = xp.sum(lse) - vdot(xp, Yt, Zt)
                weight: Any = n
            else:
                loss = xp.sum((lse[0, :] - xp.sum(Yt * Zt, axis=0)) * r)
                weight = xp.sum(r)
            if not grad:
                return loss, weight, None
            Pt /= s
            Pt -= Yt
            if r is not None:
                Pt *= r[None, :]
            return loss, weight, Pt
        # smoothed: q (K, n) unnormalised targets; Σ_j q_j per row
        cy = None if cw is None else xp.take(cw, y, axis=0)
        on = (1.0 - eps) * (Yt if cy is None else Yt * cy[None, :])
        off = (eps / K) * (xp.ones_like(Zt) if cw is None else cw[:, None] * xp.ones_like(Zt))
        Q = on + off
        qsum = xp.sum(Q, axis=0)  # (n,)
        per_row = qsum * lse[0, :] - xp.sum(Q * Zt, axis=0)
        sw = None if w is None else xp.astype(w, Zt.dtype)
        loss = xp.sum(per_row if sw is None else per_row * sw)
        weight = n if r is None else xp.sum(r)
        if not grad:
            return loss, weight, None
        Pt /= s
        G = Pt * qsum[None, :] - Q
        if sw is not None:
            G *= sw[None, :]
        return loss, weight, G


@smx.hookimpl
def smx_losses():
    yield LossSpec(
        name="cross_entropy", factory=CrossEntropy, params=CrossEntropyParams,
        description="softmax cross-entropy; sample and class weights, label smoothing",
    )
