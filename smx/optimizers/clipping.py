"""Gradient-norm clipping, applied by the Trainer to every optimizer's closure.

Computed on the device from the gradients' own namespace: the norm and the
scale stay 0-d device arrays, so clipping adds no host read to the hot loop.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from smx.types import Array, Params

#: PyTorch's clip_grad_norm_ adds this to the norm, so a zero gradient divides safely
EPS = 1e-6


def global_norm(tree: Params) -> Array:
    """‖g‖₂ over every leaf together (W and b as one vector), a 0-d device array."""
    leaves = list(tree.values())
    xp = array_namespace(*leaves)
    total = xp.sum(leaves[0] * leaves[0])
    for leaf in leaves[1:]:
        total = total + xp.sum(leaf * leaf)
    return xp.sqrt(total)


def clip_by_global_norm(grads: Params, max_norm: float) -> Params:
    """Scale every leaf by min(1, max_norm / (‖g‖ + 1e-6)): PyTorch's ``clip_grad_norm_``."""
    norm = global_norm(grads)
    xp = array_namespace(norm)
    scale = max_norm / (norm + EPS)
    scale = xp.minimum(scale, xp.ones_like(scale))
    return {k: g * scale for k, g in grads.items()}
