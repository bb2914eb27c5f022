"""Gradient transformations (optax's shape) and the links every built-in is made of.

A :class:`~smx.types.Transform` is a pair of pure functions over trees (dicts)
of arrays: ``init(params) -> state`` and ``update(updates, state, params=None,
**extra) -> (updates, state)``, exactly optax's ``GradientTransformation``.
:func:`chain` composes them; the new parameters are ``params + updates``
(:func:`apply_updates`). Each built-in optimizer is a short chain of the links
below ending in :func:`scale_by_learning_rate`, and a third-party one is a few
lines more.

The learning rate is a link, not an argument: a number, or a *schedule* (a
function of the step count, see :mod:`smx.schedules`) that
:func:`scale_by_schedule` evaluates on the device from a step count kept in its
state. Step counts are 0-d integer arrays on the parameters' device (created by
:func:`counter`), so a compiled engine (``jax.jit``, a ``lax.scan`` over an
epoch) carries them like any array and a checkpoint stores them like any array.

States are tuples, dicts and arrays: a checkpoint stores any such tree.
Weight decay never touches the intercept: :func:`add_decayed_weights` applies to
the leaves :func:`decay_mask` selects (W, not b).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace, is_array_api_obj
from array_api_compat import device as device_of

from smx.types import Array, Params, Transform

#: PyTorch's clip_grad_norm_ adds this to the norm, so a zero gradient divides safely
CLIP_EPS = 1e-6

#: a learning rate: a number, or a schedule ``count -> rate`` (see :mod:`smx.schedules`)
ScalarOrSchedule = float | Callable[[Any], Any]

__all__ = [
    "CLIP_EPS",
    "ScalarOrSchedule",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "counter",
    "decay_mask",
    "global_norm",
    "identity",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_schedule",
    "stateless",
    "trace",
    "tree_map",
    "zeros_like",
]


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


def counter(params: Params) -> Array:
    """A step count: a 0-d array of the namespace's default integer dtype on the device of
    ``params`` (int64, or int32 where JAX runs without x64: an explicit int64 would warn)."""
    leaf = next(iter(params.values()))
    return array_namespace(leaf).asarray(0, device=device_of(leaf))


def _leaf(tree: Params) -> Array:
    return next(iter(tree.values()))


def chain(*links: Transform) -> Transform:
    """Apply ``links`` in order; the state is the tuple of their states (optax's ``chain``)."""

    def init(params: Params) -> tuple[Any, ...]:
        return tuple(link.init(params) for link in links)

    # identity links (decay 0, momentum 0) keep their place in the state tuple, so its
    # layout does not depend on the hyperparameters, but cost no call per step
    active = [(i, link.update) for i, link in enumerate(links) if link.update is not _pass]

    def update(updates: Params, state: tuple[Any, ...], params: Params | None = None,
               **extra: Any) -> tuple[Params, tuple[Any, ...]]:
        if len(state) != len(links):
            raise ValueError(f"a chain of {len(links)} links got a state of {len(state)}")
        new_state = list(state)
        for i, link_update in active:
            updates, new_state[i] = link_update(updates, state[i], params, **extra)
        return updates, tuple(new_state)

    specs = [link.spec for link in links]
    spec = (None if any(s is None for s in specs) else
            tuple(x for s in specs if s is not None for x in s))
    return Transform(init, update, spec)


def _pass(updates: Params, state: Any, params: Params | None = None, **extra: Any
          ) -> tuple[Params, Any]:
    """The update of an identity link (:func:`chain` skips it)."""
    return updates, state


def identity(spec: tuple[Any, ...] | None = None) -> Transform:
    """Leaves the updates as they are, with an empty state. ``spec``: the link this
    identity stands for (``("trace", 0.0, False)``: momentum 0), so a chain's spec keeps
    its shape whatever the hyperparameters."""
    return Transform(lambda params: (), _pass, () if spec is None else (spec,))


def stateless(fn: Callable[[Params, Params | None], Params],
              spec: tuple[Any, ...] | None = None) -> Transform:
    """A link from ``fn(updates, params) -> updates`` with an empty state (optax's
    ``stateless``); ``spec`` names it for engines that recognise chains (None: opaque)."""
    return Transform(lambda params: (),
                     lambda u, s, p=None, **extra: (fn(u, p), s),
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

    def clip(grads: Params, params: Params | None) -> Params:
        norm = global_norm(grads)
        xp = array_namespace(norm)
        factor = max_norm / (norm + CLIP_EPS)
        factor = xp.minimum(factor, xp.ones_like(factor))
        return {k: g * factor for k, g in grads.items()}

    return stateless(clip, ("clip_by_global_norm", max_norm))


def add_decayed_weights(weight_decay: float,
                        mask: Callable[[Params], dict[str, bool]] = decay_mask) -> Transform:
    """``g + weight_decay·p`` on the masked leaves (coupled decay before a scaling link,
    decoupled AdamW-style decay after one). Needs ``params``."""

    spec = ("add_decayed_weights", weight_decay) if mask is decay_mask else None
    if not weight_decay:
        return Transform(lambda params: (), _pass, None if spec is None else (spec,))

    def decay(grads: Params, params: Params | None) -> Params:
        if params is None:
            raise ValueError("add_decayed_weights needs params (update(..., params))")
        m = mask(params)
        return {k: g + weight_decay * params[k] if m[k] else g for k, g in grads.items()}

    return stateless(decay, spec)


def trace(momentum: float, nesterov: bool = False) -> Transform:
    """PyTorch's momentum buffer ``b ← μ·b + g`` (the first step starts from b = 0, which
    gives PyTorch's b₁ = g); the update is ``b``, or ``g + μ·b`` with Nesterov."""
    if not momentum:
        return identity(("trace", 0.0, False))

    def update(grads: Params, state: dict[str, Any], params: Params | None = None,
               **extra: Any) -> tuple[Params, dict[str, Any]]:
        buf = tree_map(lambda b, g: momentum * b + g, state["buf"], grads)
        out = tree_map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        return out, {"buf": buf}

    return Transform(lambda params: {"buf": zeros_like(params)}, update,
                     (("trace", momentum, nesterov),))


def _count_as(count: Array, like: Array) -> Array:
    """A step count in the floating dtype of ``like`` (powers and schedules need floats)."""
    return array_namespace(like).astype(count, like.dtype)


def scale_by_adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> Transform:
    """Bias-corrected ``m̂ / (√v̂ + eps)`` (Kingma & Ba, PyTorch's placement of eps)."""

    def update(grads: Params, state: dict[str, Any], params: Params | None = None,
               **extra: Any) -> tuple[Params, dict[str, Any]]:
        count = state["t"] + 1
        t = _count_as(count, _leaf(grads))
        m = tree_map(lambda m, g: beta1 * m + (1.0 - beta1) * g, state["m"], grads)
        v = tree_map(lambda v, g: beta2 * v + (1.0 - beta2) * (g * g), state["v"], grads)
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t

        def step(m: Array, v: Array) -> Array:
            return (1.0 / c1) * m / (array_namespace(v).sqrt(v / c2) + eps)

        return tree_map(step, m, v), {"t": count, "m": m, "v": v}

    return Transform(lambda p: {"t": counter(p), "m": zeros_like(p), "v": zeros_like(p)},
                     update)


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

    def update(grads: Params, state: dict[str, Any], params: Params | None = None,
               **extra: Any) -> tuple[Params, dict[str, Any]]:
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

    def update(grads: Params, state: dict[str, Any], params: Params | None = None,
               **extra: Any) -> tuple[Params, dict[str, Any]]:
        count = state["t"] + 1
        acc = tree_map(lambda s, g: s + g * g, state["sum"], grads)
        if lr_decay:
            decay = 1.0 / (1.0 + (_count_as(count, _leaf(grads)) - 1) * lr_decay)
            out = tree_map(lambda g, s: decay * g / (array_namespace(s).sqrt(s) + eps),
                           grads, acc)
        else:  # the factor is 1: no per-step arithmetic on the count
            out = tree_map(lambda g, s: g / (array_namespace(s).sqrt(s) + eps), grads, acc)
        return out, {"t": count, "sum": acc}

    return Transform(
        lambda p: {"t": counter(p),
                   "sum": tree_map(lambda a: array_namespace(a).full_like(a, init_value), p)},
        update)


def scale(step_size: float) -> Transform:
    """Multiply every leaf by the number ``step_size``."""
    return stateless(lambda g, p: {k: step_size * v for k, v in g.items()},
                     ("scale", step_size))


def scale_by_schedule(schedule: Callable[[Any], Any]) -> Transform:
    """Multiply by ``schedule(count)``, the count of this link's earlier updates (0 at the
    first), handed over as a 0-d array of the updates' floating dtype on their device;
    the count lives in this link's state (``{"count": ...}``), so a compiled engine
    evaluates the schedule inside the step and a checkpoint carries it."""

    def update(updates: Params, state: dict[str, Any], params: Params | None = None,
               **extra: Any) -> tuple[Params, dict[str, Any]]:
        count = state["count"]
        like = _leaf(updates)
        factor = schedule(_count_as(count, like))
        if is_array_api_obj(factor):  # a Python number multiplies as one (keeps the dtype)
            factor = array_namespace(like).astype(factor, like.dtype)
        return {k: factor * g for k, g in updates.items()}, {"count": count + 1}

    return Transform(lambda params: {"count": counter(params)}, update,
                     (("scale_by_schedule", schedule),))


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
                           ) -> Transform:
    """The last link of a descent method: ``−learning_rate · g`` (optax's). A schedule
    (any callable) is evaluated at each step's count (:func:`scale_by_schedule`)."""
    sign = -1.0 if flip_sign else 1.0
    spec = ("scale_by_learning_rate", learning_rate, flip_sign)
    if callable(learning_rate):
        link = scale_by_schedule(lambda count: sign * learning_rate(count))
    else:
        link = scale(sign * float(learning_rate))
    return link._replace(spec=(spec,))
