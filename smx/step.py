"""The training step, written once: the objective's partial, finished, transformed, applied.

Every engine runs this one function: the Trainer compiles it per batch
(:meth:`~smx.types.Backend.compile`), JAX scans it over an epoch
(:meth:`~smx.types.Backend.fused_epoch`), Dask ships it to the worker that holds
the batch's rows (:meth:`~smx.types.Backend.fused_step`). An engine with its own
fused kernel (NumPy's Numba step) reads :attr:`TrainStep.objective` and
``transform.spec`` to recognise what it computes, and the tests hold it to this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smx.objective import Objective
from smx.optimizers.transforms import apply_updates
from smx.types import Array, Block, Params, Transform

#: ``partial(fn, block)``: ``fn`` (a block's additive partial) over ``block`` (an engine's
#: :meth:`~smx.types.Backend.partial`: one call, or mapped over shards and tree-summed)
PartialMap = Callable[[Callable[[Block], Any], Block], Any]


@dataclass(frozen=True)
class TrainStep:
    """``step(params, state, block) -> (params, state, loss)``, pure and over arrays only.

    ``loss`` is the penalised objective on ``block`` at the parameters before the step;
    ``partial`` is the engine's map over shards (None: the block is one piece)."""

    objective: Objective
    transform: Transform
    partial: PartialMap | None = None

    def __call__(self, params: Params, state: Any, block: Block
                 ) -> tuple[Params, Any, Array]:
        objective = self.objective
        if self.partial is None:
            part = objective.partial(params, block)
        else:
            part = self.partial(lambda b: objective.partial(params, b), block)
        loss, grads = objective.finish(part, params)
        updates, state = self.transform.update(grads, state, params)
        return apply_updates(params, updates), state, loss
