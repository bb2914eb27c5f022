"""optax's transformations as smx optimizers, on the JAX engine.

smx's transformations have optax's shape, so the adapter only has to keep optax's
state checkpointable: optax states are NamedTuples (``ScaleByAdamState``...), which
smx's pickle-free checkpoints store as plain tuples. :func:`from_optax` therefore
hands smx the state's leaves as a tuple and rebuilds optax's tree around them in
each update (inside the compiled step, so at no run-time cost)::

    import optax, smx
    from smx.backends.jax_optax import from_optax

    @smx.hookimpl
    def smx_optimizers():
        yield smx.OptimizerSpec(
            name="optax-adamw", params=AdamWParams,
            factory=lambda lr, weight_decay: from_optax(optax.adamw(lr, weight_decay=weight_decay)))

``lr`` arrives as a number or as the run's schedule; optax accepts either (its
schedules are functions of a step count too, and smx's built-in schedules take
JAX arrays). Use it with ``backend: jax``: optax computes with ``jax.numpy``.
"""

from __future__ import annotations

from typing import Any

from smx.types import Params, Transform


def from_optax(transformation: Any) -> Transform:
    """An ``optax.GradientTransformation`` as an smx :class:`~smx.types.Transform` whose
    state is the tuple of optax's state leaves (optax's own update computes each step)."""
    import jax

    structure: dict[str, Any] = {}

    def init(params: Params) -> tuple[Any, ...]:
        leaves, structure["tree"] = jax.tree.flatten(transformation.init(params))
        return tuple(leaves)

    def update(updates: Params, state: tuple[Any, ...], params: Params | None = None,
               **extra: Any) -> tuple[Params, tuple[Any, ...]]:
        tree = structure.get("tree")
        if tree is None:  # a state loaded without init (a checkpoint): the shape from params
            if params is None:
                raise ValueError("from_optax: update before init needs params")
            tree = structure["tree"] = jax.tree.structure(
                jax.eval_shape(transformation.init, params))
        full = jax.tree.unflatten(tree, list(state))
        # a plain GradientTransformation takes no extra arguments (smx passes none either)
        updates, new = (transformation.update(updates, full, params, **extra) if extra
                        else transformation.update(updates, full, params))
        return updates, tuple(jax.tree.leaves(new))

    return Transform(init, update)
