"""The NumPy engine's sums over fixed row pieces, on a pool of the run's threads.

Every partial sum of the objective (a minibatch step, a full-batch evaluation for
L-BFGS, a validation loss) is taken over row pieces whose bounds depend only on the
block's shape: ``PIECE_CELLS`` cells of X a piece, their count a power of two of at most
``MAX_PIECES``. Each piece's partial is computed with one BLAS thread, by whichever pool
thread is free, and the partials are added in a fixed pairwise tree in piece order
(:func:`add_in_order`). So the arithmetic, and every bit of a run, is the same for any
thread count: ``threads`` (and ``threads: auto``, which reads the load) changes the
speed only. NumPy's GEMMs and gathers release the GIL, so the pieces run on all cores.

The minibatch step also gathers its rows piece by piece inside the pool
(:func:`gathering_step`): the gather is a third of an epoch's time on one core and would
otherwise stay serial; each piece's rows are then multiplied while they sit in cache.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np

from smx.objective import Partial
from smx.optimizers.transforms import apply_updates
from smx.types import Array, Block, Params

#: cells of X in one piece: 100,000 x K = 10 classes is OpenBLAS's small-GEMM size (1e6),
#: and 400 KB of float32 rows stay in L2 between a piece's two products
PIECE_CELLS = 100_000
#: at most this many pieces (a power of two): enough to balance 64 cores, few enough that
#: handing them out costs little next to their products
MAX_PIECES = 64
#: the least work (cells of X) worth a pool thread: below it, handing pieces to another
#: thread costs more than it saves (measured: a 1024 x 256 minibatch step, 4 pieces, ran
#: 1.4x slower on two threads than on one). Which thread computes a piece never changes
#: its bits, so this changes the speed only.
MIN_CELLS_PER_THREAD = 1_000_000

T = TypeVar("T")


def piece_bounds(n: int, d: int, unit: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` of each piece of ``n`` rows of ``d`` features: the smallest power
    of two of pieces (at most ``MAX_PIECES``, at most ``n``) that keeps each within
    ``PIECE_CELLS`` cells, as even as integers allow. Depends on the shape (and ``unit``)
    only, never on the thread count.

    When the cap leaves pieces of more than ``unit`` rows (the block kernel's own piece,
    which it takes in turn), their edges fall on multiples of ``unit``: cut elsewhere, each
    piece would end in a short one of the kernel's, whose fixed cost is a whole one's (a
    full batch of 100,000 x 256 float32 took 10% longer at one thread)."""
    rows = max(1, PIECE_CELLS // max(d, 1))
    need = -(-n // rows)
    count = max(1, min(MAX_PIECES, 1 << max(0, need - 1).bit_length(), n))
    if unit > 1 and n // count > unit:
        units = -(-n // unit)
        edges = [min(n, unit * (units * i // count)) for i in range(count)] + [n]
        return list(itertools.pairwise(edges))
    return [(i * n // count, (i + 1) * n // count) for i in range(count)]


def add_in_order(parts: Sequence[T]) -> T:
    """Sum ``parts`` as a pairwise tree in their order, ``((p0+p1)+(p2+p3))+...``: the same
    additions whatever thread computed each part or when it finished."""
    level = list(parts)
    while len(level) > 1:
        paired = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]  # type: ignore[operator]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


class PiecePool:
    """``threads`` workers for a run's pieces: ``threads - 1`` pool threads and the caller,
    each taking the next piece until none is left (results kept in piece order)."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self._executor = (ThreadPoolExecutor(self.threads - 1, thread_name_prefix="smx-piece")
                          if self.threads > 1 else None)

    def map(self, fn: Callable[[int], T], count: int, workers: int | None = None
            ) -> list[T]:
        """``[fn(0), ..., fn(count - 1)]``, computed on up to ``workers`` (default: all) of
        the pool's threads."""
        results: list[Any] = [None] * count
        wanted = self.threads if workers is None else max(1, min(workers, self.threads))
        helpers = 0 if self._executor is None else min(wanted, count) - 1
        if helpers <= 0:
            for i in range(count):
                results[i] = fn(i)
            return results
        taken = itertools.count()  # next() is atomic under the GIL: each piece once

        def work() -> None:
            while (i := next(taken)) < count:
                results[i] = fn(i)

        assert self._executor is not None
        futures = [self._executor.submit(work) for _ in range(helpers)]
        try:
            work()
        finally:  # never return (or raise) while a helper still writes into the arrays
            wait(futures)
        for f in futures:
            f.result()  # a helper's exception, raised here
        return results

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class PoolSlot:
    """Where the engine keeps the pool of the run in progress, per calling thread (two
    runs in two threads of one process each see their own); pickles empty, so a kernel
    shipped to a Dask worker computes its pieces serially on the worker's thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def pool(self) -> PiecePool | None:
        return getattr(self._local, "pool", None)

    @contextlib.contextmanager
    def holding(self, pool: PiecePool) -> Iterator[PiecePool]:
        before = self.pool
        self._local.pool = pool
        try:
            yield pool
        finally:
            self._local.pool = before

    def __reduce__(self) -> tuple[Any, ...]:
        return (PoolSlot, ())


def _rows(block: Block, a: int, b: int) -> Block:
    return Block(block.X[a:b], block.y[a:b], None if block.w is None else block.w[a:b])


def _gathered(data: Block, idx: np.ndarray) -> Block:
    return Block(data.X.take(idx, axis=0), data.y.take(idx),
                 None if data.w is None else data.w.take(idx))


class PiecedKernel:
    """``kernel(params, block, class_weight, *, grad)``: ``block_kernel`` over the pieces of
    a dense block, on the slot's pool when a run holds one (else in this thread), summed
    by :func:`add_in_order`. Sparse X goes to ``block_kernel`` whole."""

    def __init__(self, block_kernel: Callable[..., Partial], slot: PoolSlot,
                 unit: Callable[[np.ndarray, int], int] | None = None) -> None:
        self.block_kernel, self.slot, self.unit = block_kernel, slot, unit

    def bounds(self, n: int, X: np.ndarray, params: Params) -> list[tuple[int, int]]:
        """The pieces of ``n`` rows like ``X``'s, aligned to the block kernel's own piece
        (``unit(X, classes)``) where it takes pieces itself."""
        unit = 1 if self.unit is None else self.unit(X, int(params["W"].shape[1]))
        return piece_bounds(n, X.shape[1], unit)

    def __call__(self, params: Params, block: Block, class_weight: Any = None, *,
                 grad: bool = True) -> Partial:
        X = block.X
        if not (isinstance(X, np.ndarray) and X.ndim == 2):
            return self.block_kernel(params, block, class_weight, grad=grad)
        bounds = self.bounds(X.shape[0], X, params)
        return self.pieces(params, bounds, lambda a, b: _rows(block, a, b), class_weight,
                           grad)

    def pieces(self, params: Params, bounds: list[tuple[int, int]],
               rows: Callable[[int, int], Block], class_weight: Any, grad: bool) -> Partial:
        """The partials of ``rows(a, b)`` for each piece ``(a, b)``, added in order."""
        kernel = self.block_kernel
        if len(bounds) == 1:
            return kernel(params, rows(*bounds[0]), class_weight, grad=grad)

        def piece(i: int) -> Partial:
            return kernel(params, rows(*bounds[i]), class_weight, grad=grad)

        pool = self.slot.pool
        cells = (bounds[-1][1] - bounds[0][0]) * int(params["W"].shape[0])
        workers = cells // MIN_CELLS_PER_THREAD
        parts = pool.map(piece, len(bounds), workers) if pool is not None and workers > 1 else [
            piece(i) for i in range(len(bounds))]
        return add_in_order(parts)


def gathering_step(step: Any, data: Block) -> GatheringStep | None:
    """``step`` (a :class:`~smx.step.TrainStep`) with each piece of the batch gathered from
    ``data`` by the pool thread that computes its partial, or None when the step's
    objective does not run a :class:`PiecedKernel` or X is not a dense array."""
    kernel = step.objective.kernel
    if (step.partial is not None or not isinstance(kernel, PiecedKernel)
            or not isinstance(data.X, np.ndarray) or data.X.ndim != 2):
        return None
    return GatheringStep(step, kernel)


class GatheringStep:
    """``(params, state, data, idx) -> (params, state, loss)``: the step over the rows
    ``idx`` of ``data``. The pieces and their sum are those of the gathered batch, so the
    result is the portable step's bit for bit (tested), with the gather on every core."""

    def __init__(self, step: Any, kernel: PiecedKernel) -> None:
        self.step, self.kernel = step, kernel

    def __call__(self, params: Params, state: Any, data: Block, idx: np.ndarray
                 ) -> tuple[Params, Any, Array]:
        objective = self.step.objective
        bounds = self.kernel.bounds(idx.shape[0], data.X, params)
        part = self.kernel.pieces(params, bounds, lambda a, b: _gathered(data, idx[a:b]),
                                  objective.class_weight, True)
        loss, grads = objective.finish(part, params)
        updates, state = self.step.transform.update(grads, state, params)
        return apply_updates(params, updates), state, loss
