"""The focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection",
arXiv:1708.02002) as an smx loss plugin.

Row ``i`` with label ``y``, ``p = softmax(z)`` and focusing exponent ``γ`` costs::

    ℓ = −(1 − p_y)^γ · log p_y

``γ = 0`` is cross-entropy; a larger ``γ`` down-weights rows the model already
classifies well (``p_y`` near 1), so training concentrates on the hard ones. Its
derivative with respect to the logits is ``A · (p − onehot(y))`` with
``A = (1 − p_y)^γ · (1 − γ · p_y · log p_y / (1 − p_y))``, which is 1 at ``γ = 0``
(cross-entropy's ``softmax − onehot``).

What a loss plugin follows (smx's ``Loss`` protocol, ``smx/losses.py``):

* ``partial`` returns **sums** over the block's rows, never means: the loss,
  the weight the rows carry (the Python int ``n`` when nothing is weighted) and
  ``Gt``, each row's weighted logit gradient in the (K, n) layout. smx adds
  partials across batches, chunks and workers and divides once.
* Sample weights ``w`` and class weights ``cw`` weigh a row by ``w_i · cw[y_i]``
  (smx's ``row_weights``), so both mean what they mean in scikit-learn.
* Array API only: the namespace ``xp`` comes with the call; no NumPy import,
  no ``float(x)``, Python scalars mixed in only through operators (float32 stays
  float32). ``1 − p_y`` is computed as ``−expm1(log p_y)``: exact near ``p_y = 1``
  where ``1 − exp(log p_y)`` would cancel to 0.
* ``kernel_key`` names the loss and the option that changes its arithmetic, so
  an engine's fused kernel for cross-entropy is never used for it.

``tests/test_contract.py`` holds it to smx's conformance kit (``smx.testing``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import Field

import smx
from smx.losses import row_weights, targets_t

try:
    __version__ = version("smx-focal")
except PackageNotFoundError:  # imported from a source checkout that was never installed
    __version__ = "0.0.0"


class FocalParams(smx.PluginParams):
    """The ``loss:`` keys this plugin accepts (``class_weight`` is smx's, for every loss)."""

    gamma: float = Field(2.0, ge=0, le=10, description="focusing exponent γ: 0 is "
                         "cross-entropy, larger values down-weight well-classified rows")


class FocalLoss:
    """``−(1 − p_y)^γ log p_y`` per row, weighted by ``w_i · cw[y_i]``."""

    def __init__(self, gamma: float = 2.0) -> None:
        self.gamma = float(gamma)
        self.kernel_key = ("focal", self.gamma)

    def partial(self, xp: Any, Zt: Any, y: Any, w: Any, cw: Any, *, grad: bool = True
                ) -> tuple[Any, Any, Any]:
        K, n = Zt.shape
        Yt = targets_t(xp, y, K, Zt.dtype)
        Zt -= xp.max(Zt, axis=0, keepdims=True)  # Zt is a temporary smx hands over
        lse = xp.log(xp.sum(xp.exp(Zt), axis=0))  # (n,)
        logp = xp.sum(Yt * Zt, axis=0) - lse  # log p_y, (n,)
        q = -xp.expm1(logp)  # 1 − p_y, without cancellation
        focus = q ** self.gamma  # (1 − p_y)^γ; 0^0 = 1, so γ = 0 is cross-entropy
        r = row_weights(xp, y, w, cw, Zt.dtype)
        per_row = -(focus * logp)
        loss = xp.sum(per_row if r is None else per_row * r)
        weight = n if r is None else xp.sum(r)
        if not grad:
            return loss, weight, None
        # log p_y / (1 − p_y) tends to −1 as p_y → 1: the limit where q is 0
        ones = xp.ones_like(q)
        ratio = xp.where(q > 0, logp / xp.where(q > 0, q, ones), -ones)
        scale = focus * (1.0 - self.gamma * xp.exp(logp) * ratio)
        if r is not None:
            scale = scale * r
        Pt = xp.exp(Zt - lse[None, :])
        return loss, weight, (Pt - Yt) * scale[None, :]


#: the registration, importable by tests and by code that wants the spec itself
FOCAL = smx.LossSpec(
    name="focal", factory=FocalLoss, params=FocalParams,
    description="focal loss −(1 − p_y)^γ log p_y (Lin et al. 2017); γ = 0 is cross-entropy",
)


@smx.hookimpl
def smx_losses():
    """The hook smx calls: yield one ``LossSpec`` per loss this plugin adds."""
    yield FOCAL
