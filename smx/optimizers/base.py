"""Helpers shared by optimizers: parameters are a flat dict of arrays."""

from __future__ import annotations

from collections.abc import Callable

from array_api_compat import array_namespace

from smx.types import Array, Params


def tree_map(fn: Callable[..., Array], *trees: Params) -> Params:
    """Apply ``fn`` leaf-wise over dicts with the same keys."""
    return {k: fn(*(t[k] for t in trees)) for k in trees[0]}


def zeros_like(params: Params) -> Params:
    return tree_map(lambda p: array_namespace(p).zeros_like(p), params)


def add_weight_decay(grads: Params, params: Params, weight_decay: float) -> Params:
    """Coupled (L2-style) decay on W only: the intercept is never penalised."""
    if not weight_decay:
        return grads
    return {k: g + weight_decay * params[k] if k == "W" else g for k, g in grads.items()}
