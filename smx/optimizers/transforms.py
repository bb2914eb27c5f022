"""Gradient transformations (optax's shape) and the links every built-in is made of.

A :class:`~smx.types.Transform` is a pair of pure functions over trees (dicts)
of arrays: ``init(params) -> state`` and ``update(grads, state, params, lr) ->
(updates, state)``. :func:`chain` composes them; the new parameters are
``params + updates`` (:func:`apply_updates`). Each built-in optimizer is a short
chain of the links below, and a third-party one is a few lines more.

States are tuples, dicts and arrays, plus Python numbers (step counts): a
checkpoint stores any such tree, and a compiled engine (``jax.jit``) traces the
numbers as scalars, so they change without a recompilation.

Weight decay never touches the intercept: :func:`add_decayed_weights` applies to
the leaves :func:`decay_mask` selects (W, not b).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace

from smx.types import Array, Params, Transform

#: PyTorch's clip_grad_norm_ adds this to the norm, so a zero gradient divides safely
CLIP_EPS = 1e-6


def tree_map(fn: Callable[..., Array], *trees: Params) -> Params:
    """Apply ``fn`` leaf-wise over dicts with the same keys."""
    return {k: fn(*(t[k] for t in trees)) for k in trees[0]}


def zeros_like(params: Params) -> Params:
    return tree_map(lambda p: array_namespace(p).zeros_like(p), params)


def apply_updates(params: Params, updates: Params) -> Params:
    return {k: p + updates[k] for k, p in params.items()}


def decay_mask(params: Params) -> dict[str, bool]:
    """Which leaves weight decay and penalties touch: the weights, never the intercept."""
    return {k: k != "b" for k in params}


def chain(*links: Transform) -> Transform:
    """Apply ``links`` in order; the state is the tuple of their states."""

    def init(params: Params) -> tuple[Any, ...]:
        return tuple(link.init(params) for link in links)

    # identity links (decay 0, momentum 0) keep their place in the state tuple, so its
    # layout does not depend on the hyperparameters, but cost no call per step
    active = [(i, link.update) for i, link in enumerate(links) if link.update is not _pass]

    def update(grads: Params, state: tuple[Any, ...], params: Params, lr: Any
               ) -> tuple[Params, tuple[Any, ...]]:
        if len(state) != len(links):
            raise ValueError(f"a chain of {len(links)} links got a state of {len(state)}")
        new_state = list(state)
        for i, link_update in active:
            grads, new_state[i] = link_update(grads, state[i], params, lr)
        return grads, tuple(new_state)

    specs = [link.spec for link in links]
    spec = None if any(s is None for s in specs) else tuple(x for s in specs for x in s)
    return Transform(init, update, spec)


def _pass(grads: Params, state: Any, params: Params, lr: Any) -> tuple[Params, Any]:
    """The update of an identity link (:func:`chain` skips it)."""
    return grads, state


def _identity(spec: tuple[Any, ...]) -> Transform:
    return Transform(lambda params: (), _pass, (spec,))


def _stateless(fn: Callable[[Params, Params, Any], Params], spec: tuple[Any, ...] | None = None
               ) -> Transform:
    return Transform(lambda params: (), lambda g, s, p, lr: (fn(g, p, lr), s),
                     None if spec is None else (spec,))


def global_norm(tree: Params) -> Array:
    """‖g‖₂ over every leaf together (W and b as one vector), a 0-d device array."""
    leaves = list(tree.values())
    xp = array_namespace(*leaves)
    total = xp.sum(leaves[0] * leaves[0])
    for leaf in leaves[1:]:
        total = total + xp.sum(leaf * leaf)
    return xp.sqrt(total)


def clip_by_global_norm(max_norm: float) -> Transform:
    """Scale every leaf by min(1, max_norm / (‖g‖ + 1e-6)): PyTorch's ``clip_grad_norm_``.

    On the device: the norm and the scale stay 0-d arrays (no host read)."""

    def clip(grads: Params, params: Params, lr: Any) -> Params:
        norm = global_norm(grads)
        xp = array_namespace(norm)
        scale = max_norm / (norm + CLIP_EPS)
        scale = xp.minimum(scale, xp.ones_like(scale))
        return {k: g * scale for k, g in grads.items()}

    return _stateless(clip, ("clip_by_global_norm", max_norm))


def add_decayed_weights(weight_decay: float,
                        mask: Callable[[Params], dict[str, bool]] = decay_mask) -> Transform:
    """``g + weight_decay·p`` on the masked leaves (coupled decay before a scaling link,
    decoupled AdamW-style decay after one)."""

    spec = ("add_decayed_weights", weight_decay) if mask is decay_mask else None
    if not weight_decay:
        return Transform(lambda params: (), _pass, None if spec is None else (spec,))

    def decay(grads: Params, params: Params, lr: Any) -> Params:
        m = mask(params)
        return {k: g + weight_decay * params[k] if m[k] else g for k, g in grads.items()}

    return _stateless(decay, spec)


def trace(momentum: float, nesterov: bool = False) -> Transform:
    """PyTorch's momentum buffer ``b ← μ·b + g`` (the first step starts from b = 0, which
    gives PyTorch's b₁ = g); the update is ``b``, or ``g + μ·b`` with Nesterov."""
    if not momentum:
        return _identity(("trace", 0.0, False))

    def update(grads: Params, state: dict[str, Any], params: Params, lr: Any
               ) -> tuple[Params, dict[str, Any]]:
        buf = tree_map(lambda b, g: momentum * b + g, state["buf"], grads)
        out = tree_map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        return out, {"buf": buf}

    return Transform(lambda params: {"buf": zeros_like(params)}, update,
                     (("trace", momentum, nesterov),))


def scale_by_adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> Transform:
    """Bias-corrected ``m̂ / (√v̂ + eps)`` (Kingma & Ba, PyTorch's placement of eps)."""

    def update(grads: Params, state: dict[str, Any], params: Params, lr: Any
               ) -> tuple[Params, dict[str, Any]]:
        t = state["t"] + 1
        m = tree_map(lambda m, g: beta1 * m + (1.0 - beta1) * g, state["m"], grads)
        v = tree_map(lambda v, g: beta2 * v + (1.0 - beta2) * (g * g), state["v"], grads)
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t

        def step(m: Array, v: Array) -> Array:
            return (1.0 / c1) * m / (array_namespace(v).sqrt(v / c2) + eps)

        return tree_map(step, m, v), {"t": t, "m": m, "v": v}

    return Transform(lambda p: {"t": 0, "m": zeros_like(p), "v": zeros_like(p)}, update)


def _nonnegative(v: Array) -> Array:
    """``v`` with negatives set to 0: the variance estimate s − m² is ≥ 0 only in exact
    arithmetic; for a steady gradient it tends to 0 and rounding makes it slightly
    negative (float32, ~1000 steps), and its square root NaN."""
    xp = array_namespace(v)
    return xp.where(v > 0, v, xp.zeros_like(v))


def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8, centered: bool = False) -> Transform:
    """RMSprop's ``g / (√E[g²] + eps)``, centered: ``g / (√(E[g²] − E[g]²) + eps)``."""

    def init(params: Params) -> dict[str, Any]:
        state = {"sq": zeros_like(params)}
        if centered:
            state["avg"] = zeros_like(params)
        return state

    def update(grads: Params, state: dict[str, Any], params: Params, lr: Any
               ) -> tuple[Params, dict[str, Any]]:
        sq = tree_map(lambda s, g: alpha * s + (1.0 - alpha) * (g * g), state["sq"], grads)
        new: dict[str, Any] = {"sq": sq}
        if centered:
            avg = tree_map(lambda m, g: alpha * m + (1.0 - alpha) * g, state["avg"], grads)
            new["avg"] = avg
            denom = tree_map(
                lambda s, m: array_namespace(s).sqrt(_nonnegative(s - m * m)) + eps, sq, avg)
        else:
            denom = tree_map(lambda s: array_namespace(s).sqrt(s) + eps, sq)
        return tree_map(lambda g, d: g / d, grads, denom), new

    return Transform(init, update)


def scale_by_adagrad(initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                     lr_decay: float = 0.0) -> Transform:
    """Adagrad's ``g / (√Σg² + eps)``, times PyTorch's ``1 / (1 + (t − 1)·lr_decay)``."""
    init_value = initial_accumulator_value

    def update(grads: Params, state: dict[str, Any], params: Params, lr: Any
               ) -> tuple[Params, dict[str, Any]]:
        t = state["t"] + 1
        acc = tree_map(lambda s, g: s + g * g, state["sum"], grads)
        decay = 1.0 / (1.0 + (t - 1) * lr_decay)
        out = tree_map(lambda g, s: decay * g / (array_namespace(s).sqrt(s) + eps), grads, acc)
        return out, {"t": t, "sum": acc}

    return Transform(
        lambda p: {"t": 0, "sum": tree_map(lambda a: array_namespace(a).full_like(a, init_value),
                                           p)},
        update)


def scale_by_lr() -> Transform:
    """``−lr · g``: the last link of a descent method, with the step's scheduled ``lr``."""
    def scale(grads: Params, params: Params, lr: Any) -> Params:
        return {k: -lr * g for k, g in grads.items()}

    return _stateless(scale, ("scale_by_lr",))
