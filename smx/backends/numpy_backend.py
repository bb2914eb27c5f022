"""NumPy on the CPU: the default backend and the parity reference."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from pydantic import Field

import smx
from smx.types import Array, Backend, Block, PluginParams


class NumpyOptions(PluginParams):
    """``backend_options`` of ``backend: numpy``."""

    # off by default: measured faster only at small batches (see benchmarks/NOTES.md)
    fused: bool = Field(False, description="one compiled call per SGD step when Numba is "
                                           "installed (smx[fast]); false: the portable step")


class NumpyBackend(Backend):
    name = "numpy"
    description = "NumPy on the CPU (default)"
    options = NumpyOptions
    settings = NumpyOptions()  # until configure()
    accepts_sparse = True  # scipy.sparse X, as CSR

    @property
    def pool_slot(self) -> Any:
        """Where the pool of the run in progress is (:meth:`cpu_threads`); made on first use,
        so subclasses need not call ``__init__``."""
        from smx.backends.numpy_pieces import PoolSlot

        slot = self.__dict__.get("_pool_slot")
        if slot is None:
            slot = self.__dict__["_pool_slot"] = PoolSlot()
        return slot

    def configure(self, options: PluginParams) -> None:
        assert isinstance(options, NumpyOptions)
        self.settings = options

    def unavailable_reason(self) -> str | None:
        return None

    def namespace(self) -> Any:
        import array_api_compat.numpy as xp

        return xp

    def devices(self) -> list[str]:
        return ["cpu"]

    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Array:
        import numpy as np

        # not ascontiguousarray: it turns 0-d arrays (optimizer scalars) into shape (1,)
        return np.asarray(array, dtype=dtype, order="C")

    def place(self, X: Any, y: Any, w: Any | None, device: str, dtype: str) -> Block:
        """scipy.sparse X stays sparse (CSR: rows gather fast), in ``dtype``; the fused
        kernel multiplies it as it is, so text-sized data is never densified."""
        if not _sparse(X):
            return super().place(X, y, w, device, dtype)
        import scipy.sparse as sp

        return Block(sp.csr_matrix(X, dtype=dtype), self.from_host(y, device, "int64"),
                     None if w is None else self.from_host(w, device, dtype))

    def batch(self, data: Block, idx: Array) -> Block:
        import numpy as np

        X, w = data.X, data.w
        if type(X) is not np.ndarray and _sparse(X):
            return Block(X[idx], data.y[idx], None if w is None else w[idx])
        # the methods, not the namespace's functions: two wrapper calls less per step
        return Block(X.take(idx, axis=0), data.y.take(idx), None if w is None else w.take(idx))

    def to_host(self, array: Array) -> Any:
        import numpy as np

        return np.asarray(array)

    @contextlib.contextmanager
    def cpu_threads(self, threads: int | None) -> Iterator[None]:
        """A pool of ``threads`` (None: every core this process may use) for the run's
        pieces (:mod:`smx.backends.numpy_pieces`), each GEMM on one BLAS thread: the pieces
        are fixed and added in a fixed order, so the thread count changes the speed and
        never the bits."""
        from smx import hardware
        from smx.backends.numpy_pieces import PiecePool, available_cores

        count = threads or available_cores()
        pools = self.__dict__.setdefault("_pools", {})  # a pool per thread count, kept for
        pool = pools.get(count)                          # the next run: starting threads is
        if pool is None:                                 # most of the cost
            pool = pools[count] = PiecePool(count)
        with hardware.thread_limit(1), self.pool_slot.holding(pool):
            yield

    def kernel(self, loss: Any) -> Any:
        """Cross-entropy's fused partial (:mod:`smx.backends.numpy_kernels`) over fixed row
        pieces, on the run's pool (:class:`~smx.backends.numpy_pieces.PiecedKernel`)."""
        from smx.backends import numpy_kernels
        from smx.backends.numpy_pieces import PiecedKernel

        if getattr(loss, "kernel_key", None) == numpy_kernels.KEY:
            return PiecedKernel(numpy_kernels.cross_entropy_partial, self.pool_slot,
                                numpy_kernels.piece_rows)
        return None

    def fused_step(self, step: Any, data: Block) -> Any:
        """The Numba step of :mod:`smx.backends.numpy_fused` for SGD chains with ``fused:
        true``; else the portable step with each piece of the batch gathered on the pool
        (:func:`~smx.backends.numpy_pieces.gathering_step`, the same bits), or None."""
        if self.settings.fused:
            from smx.backends import numpy_fused

            fused = numpy_fused.fused_step(step.objective, step.transform, data)
            if fused is not None:
                return fused
        if type(self).batch is not NumpyBackend.batch:  # a subclass that gathers its own way
            return None
        from smx.backends.numpy_pieces import gathering_step

        return gathering_step(step, data)

    def versions(self) -> dict[str, str]:
        import numpy as np

        return {"numpy": np.__version__}


def _sparse(X: Any) -> bool:
    """scipy.sparse input, without importing SciPy (~0.2 s) when nothing could be sparse."""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(X)


@smx.hookimpl
def smx_backends():
    yield NumpyBackend()
