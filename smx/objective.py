"""The objective, once: additive partial sums over blocks of rows, finished once.

A block of rows (a batch, a shard, a chunk of a stream) yields a
:class:`Partial`: the loss summed over its rows, the weight they carry, and the
gradient sums for W and b (``Xᵀ G`` and ``Σ G``, G the loss's logit gradient).
Partials add, so a lazy or sharded engine evaluates one per shard and
tree-sums them; :meth:`Objective.finish` then divides by the total weight and
adds the penalty, exactly once::

    L(W, b) = Σ_i r_i ℓ_i / Σ_i r_i + (l2/2)·‖W‖²       (the intercept is not penalised)

scikit-learn's ``LogisticRegression(C)`` minimises ``C·Σ r_i ℓ_i + ½‖W‖²``, the
same function times ``C·Σr``: the optima agree when ``l2 = 1/(C·Σ r_i)``.

Training, evaluation, the L-BFGS line search, parity and ``smx bench`` all go
through :class:`Objective`; a backend's fused kernel replaces :func:`portable_partial`
only for the loss it declares (``Loss.kernel_key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace

from smx import model
from smx.types import Array, Block, Params


@dataclass
class Partial:
    """Sums over some rows: ``loss`` (0-d), ``weight`` (the Python int n when unweighted,
    else a 0-d array) and ``grads`` (W, b; None for a loss-only evaluation)."""

    loss: Array
    weight: Any
    grads: Params | None = None

    def __add__(self, other: Partial) -> Partial:
        grads = None
        if self.grads is not None and other.grads is not None:
            grads = {k: self.grads[k] + other.grads[k] for k in self.grads}
        return Partial(self.loss + other.loss, self.weight + other.weight, grads)


def portable_partial(loss: Any, params: Params, block: Block, class_weight: Array | None = None,
                     *, grad: bool = True) -> Partial:
    """The Array API path: logits, the loss's sums, then the linear part's ``Xᵀ G``.
    Sparse X (SciPy, cupyx) has no namespace: the dense parameters' is the run's."""
    xp = array_namespace(params["W"]) if model.is_sparse(block.X) \
        else array_namespace(block.X, params["W"])
    Zt = model.logits_t(params, block.X)
    total, weight, Gt = loss.partial(xp, Zt, block.y, block.w, class_weight, grad=grad)
    if not grad:
        return Partial(total, weight)
    return Partial(total, weight, model.linear_grads(params, block.X, Gt))


class Objective:
    """One run's objective: a loss, its class weights (on the device), the l2 strength,
    and the fused kernel for that loss when the backend has one."""

    def __init__(self, loss: Any, l2: float = 0.0, *, class_weight: Array | None = None,
                 kernel: Any = None) -> None:
        self.loss, self.l2, self.class_weight, self.kernel = loss, l2, class_weight, kernel
        self._namespaces: dict[type, Any] = {}

    def partial(self, params: Params, block: Block, *, grad: bool = True) -> Partial:
        if self.kernel is not None:
            return self.kernel(params, block, self.class_weight, grad=grad)
        return portable_partial(self.loss, params, block, self.class_weight, grad=grad)

    def finish(self, part: Partial, params: Params, *, penalty: bool = True
               ) -> tuple[Array, Params | None]:
        """Mean over the weight, plus ``l2/2·‖W‖²`` (and ``l2·W``) when ``penalty``.

        Consumes ``part``: its gradient arrays are updated in place (they are fresh
        temporaries; on immutable libraries ``*=`` and ``+=`` just rebind).
        """
        weight = part.weight
        if not isinstance(weight, int):  # a weighted total: a batch whose rows all
            xp = self._xp(weight)                # weigh 0 contributes 0, not 0/0
            weight = xp.where(weight > 0, weight, xp.ones_like(weight))
        inv = 1.0 / weight
        value = part.loss * inv
        grads = part.grads
        penalised = penalty and self.l2
        if penalised:
            W = params["W"]
            flat = self._xp(W).reshape(W, (-1,))
            value = value + (0.5 * self.l2) * (flat @ flat)
        if grads is None:
            return value, None
        gW = grads["W"]
        gW *= inv
        if penalised:
            gW += self.l2 * W
        if "b" not in grads:
            return value, {"W": gW}
        return value, {"W": gW, "b": grads["b"] * inv}

    def _xp(self, array: Array) -> Any:
        """``array_namespace``, remembered per array type: it costs microseconds, and the
        step calls it on every batch."""
        kind = type(array)
        xp = self._namespaces.get(kind)
        if xp is None:
            xp = self._namespaces[kind] = array_namespace(array)
        return xp

    def value_and_grad(self, params: Params, block: Block) -> tuple[Array, Params]:
        value, grads = self.finish(self.partial(params, block), params)
        return value, grads  # type: ignore[return-value]

    def value(self, params: Params, block: Block, *, penalty: bool = True) -> Array:
        return self.finish(self.partial(params, block, grad=False), params, penalty=penalty)[0]


def loss_and_grad(params: Params, X: Array, y: Array, l2: float = 0.0,
                  sample_weight: Array | None = None, *, loss: Any = None
                  ) -> tuple[Array, Params]:
    """Convenience for one in-memory block: mean cross-entropy (or ``loss``) + penalty."""
    from smx.losses import CrossEntropy

    obj = Objective(loss or CrossEntropy(), l2)
    return obj.value_and_grad(params, Block(X, y, sample_weight))
