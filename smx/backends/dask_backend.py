"""Dask (``distributed``) as an engine: rows in chunks on a cluster's workers, the small
parameters and the optimizer state on the client.

The objective is a sum over rows (:mod:`smx.objective`), so one evaluation is one
task per chunk (the chunk's :class:`~smx.objective.Partial`, computed where the chunk
lives, with the d x K parameters shipped in the task) and a tree of additions on the
workers; only the summed partial (a few d x K arrays) comes back to the client. The
task count per evaluation depends only on the number of chunks, never on the epoch,
and no future outlives its evaluation, so neither the graph nor the client grows.

``cluster: local`` starts a multi-process :class:`distributed.LocalCluster` for the run
and stops it in :meth:`DaskBackend.release`; ``cluster: tcp://HOST:PORT`` connects to a
running scheduler, which smx neither starts nor stops (its workers need smx installed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

import smx
from smx.types import Array, Backend, Block, PluginParams

INSTALL_HINT = "pip install 'smx[dask]'"
#: partials summed per task in the reduction tree (small arrays: one level for most runs)
FAN_IN = 8


class DaskOptions(PluginParams):
    """``backend_options`` of ``backend: dask``."""

    cluster: str = Field("local", description="local (smx starts a LocalCluster) or the "
                         "address of a running scheduler, e.g. tcp://10.0.0.5:8786")
    workers: int = Field(2, ge=1, description="worker processes of a local cluster")
    threads_per_worker: int = Field(1, ge=1, description="threads per local worker")
    memory_limit: str | int = Field("auto", description="per local worker: bytes, '2GiB', "
                                    "or auto (the machine's memory shared among workers)")
    chunk_rows: int = Field(100_000, ge=1, description="rows per chunk")
    timeout: float = Field(30.0, gt=0, description="seconds to wait for the scheduler")

    @field_validator("cluster")
    @classmethod
    def _address(cls, value: str) -> str:
        if value != "local" and "://" not in value:
            raise ValueError("expected 'local' or a scheduler address such as tcp://HOST:8786")
        return value


def _missing() -> str | None:
    """Why dask/distributed cannot be imported (None: they can)."""
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        return f"Dask is not installed ({exc.name or exc}); {INSTALL_HINT}"
    return None


def _chunk_partial(X: Any, y: Any, w: Any, *, fn: Callable[[Block], Any]) -> Any:
    """One chunk's partial, on the worker that holds it."""
    return fn(Block(X, y, w))


def _read_rows(path: str, bounds: tuple[int, int], *, dtype: str) -> Any:
    """Rows ``[start, stop)`` of a ``.npy`` file, read on the worker through a memory map."""
    import numpy as np

    start, stop = bounds
    return np.array(np.load(path, mmap_mode="r")[start:stop], dtype=dtype, order="C")


def _add(*parts: Any) -> Any:
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


class DaskBackend(Backend):
    name = "dask"
    description = "Dask distributed: chunks of rows on a cluster's workers (local or remote)"
    deterministic = True  # the reduction tree's shape and order depend only on the chunks
    options = DaskOptions

    def __init__(self) -> None:
        self.settings = DaskOptions()
        self.client: Any = None
        self.cluster: Any = None  # set only when smx started it
        # placed arrays (by dask name) -> their chunks' futures (X, y, w)
        self._chunks: dict[str, tuple[list[Any], list[Any], list[Any] | None]] = {}

    # --- the plain backend interface --------------------------------------------------

    def unavailable_reason(self) -> str | None:
        return _missing()

    def namespace(self) -> Any:
        import array_api_compat.numpy as xp

        return xp

    def devices(self) -> list[str]:
        return ["cpu"]

    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Array:
        import numpy as np

        # parameters and optimizer state stay on the client, as NumPy
        return np.asarray(array, dtype=dtype, order="C")

    def to_host(self, array: Array) -> Any:
        import numpy as np

        if hasattr(array, "__dask_graph__"):
            return np.asarray(self._connected().compute(array).result())
        return np.asarray(array)

    def versions(self) -> dict[str, str]:
        if _missing():
            return {}
        import dask
        import distributed

        return {"dask": dask.__version__, "distributed": distributed.__version__}

    # --- the cluster ------------------------------------------------------------------

    def configure(self, options: PluginParams) -> None:
        assert isinstance(options, DaskOptions)
        if self.client is not None and options != self.settings:
            self.release("cpu")
        self.settings = options

    def _connected(self) -> Any:
        """The client, starting the local cluster or connecting on first use."""
        if self.client is not None:
            return self.client
        from smx.errors import BackendUnavailable

        if (why := _missing()) is not None:
            raise BackendUnavailable(f"backend 'dask' is unavailable: {why}")
        import logging

        from distributed import Client, LocalCluster

        opts = self.settings
        if opts.cluster == "local":
            self.cluster = LocalCluster(
                n_workers=opts.workers, threads_per_worker=opts.threads_per_worker,
                memory_limit=opts.memory_limit, processes=True, dashboard_address=None,
                silence_logs=logging.ERROR)
            self.client = Client(self.cluster, set_as_default=False)
        else:
            try:
                self.client = Client(opts.cluster, timeout=opts.timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise BackendUnavailable(
                    f"cannot reach the Dask scheduler at {opts.cluster} within {opts.timeout:g} "
                    f"s ({type(exc).__name__}); start it (dask scheduler) or fix the address",
                    where="backend_options.cluster") from None
        return self.client

    def release(self, device: str) -> None:
        """Drop the chunks; close the client, and the cluster when smx started it."""
        self._chunks.clear()
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    # --- engine hooks -----------------------------------------------------------------

    def place(self, X: Any, y: Any, w: Any | None, device: str, dtype: str) -> Block:
        """Rows in chunks of ``chunk_rows``, scattered to the workers (held there until
        release); the Block holds dask arrays over those chunks."""
        import dask.array as da
        import numpy as np

        client = self._connected()
        n = int(X.shape[0])
        step = self.settings.chunk_rows
        bounds = [(a, min(a + step, n)) for a in range(0, n, step)] or [(0, 0)]

        def scatter(a: Any, kind: str | None) -> tuple[list[Any], Any]:
            host = np.asarray(a, dtype=kind, order="C")
            futures = client.scatter([host[s:e] for s, e in bounds], hash=False)
            parts = [da.from_delayed(f, shape=(e - s, *host.shape[1:]), dtype=host.dtype)
                     for f, (s, e) in zip(futures, bounds, strict=True)]
            return futures, da.concatenate(parts, axis=0)

        xs, dX = scatter(X, dtype)
        ys, dy = scatter(y, "int64")
        ws, dw = (None, None) if w is None else scatter(w, dtype)
        self._chunks[dX.name] = (xs, ys, ws)
        return Block(dX, dy, dw)

    def place_npy(self, X_path: str, y_path: str, dtype: str, w_path: str | None = None
                  ) -> Block:
        """Like :meth:`place`, but each worker reads its chunks' rows itself from ``.npy``
        files (memory-mapped; the paths must be visible to the workers): only the files'
        headers are read on the client. Labels must already be class indices."""
        import dask.array as da
        import numpy as np

        client = self._connected()
        shapes = {p: np.load(p, mmap_mode="r").shape for p in (X_path, y_path, w_path) if p}
        n = shapes[X_path][0]
        if any(s[0] != n for s in shapes.values()):
            from smx.errors import DataError

            raise DataError(f"the files' row counts differ: {shapes}", where="data")
        step = self.settings.chunk_rows
        bounds = [(a, min(a + step, n)) for a in range(0, n, step)] or [(0, 0)]

        def read(path: str, kind: str) -> tuple[list[Any], Any]:
            shape = shapes[path]
            futures = client.map(_read_rows, [path] * len(bounds), bounds, dtype=kind,
                                 pure=False)
            parts = [da.from_delayed(f, shape=(e - s, *shape[1:]), dtype=kind)
                     for f, (s, e) in zip(futures, bounds, strict=True)]
            return futures, da.concatenate(parts, axis=0)

        xs, dX = read(X_path, dtype)
        ys, dy = read(y_path, "int64")
        ws, dw = (None, None) if w_path is None else read(w_path, dtype)
        self._chunks[dX.name] = (xs, ys, ws)
        return Block(dX, dy, dw)

    def _chunk_futures(self, data: Block) -> tuple[list[Any], list[Any], list[Any] | None]:
        """The futures of ``data``'s chunks: the placed ones, or (for another dask array,
        e.g. a slice) its blocks computed on the workers."""
        known = self._chunks.get(data.X.name)
        if known is not None:
            return known
        client = self._connected()

        def blocks(a: Any) -> list[Any]:
            return client.compute(a.to_delayed().ravel().tolist())

        return blocks(data.X), blocks(data.y), None if data.w is None else blocks(data.w)

    def partial(self, fn: Callable[[Block], Any], data: Block) -> Any:
        """One ``fn`` task per chunk on its worker, a tree of sums on the workers, and the
        total partial back on the client. NumPy blocks (gathered batches) run here."""
        if not hasattr(data.X, "__dask_graph__"):
            return fn(data)
        client = self._connected()
        xs, ys, ws = self._chunk_futures(data)
        parts = client.map(_chunk_partial, xs, ys, ws or [None] * len(xs), fn=fn, pure=False)
        while len(parts) > 1:
            parts = [client.submit(_add, *parts[i:i + FAN_IN], pure=False)
                     for i in range(0, len(parts), FAN_IN)]
        return parts[0].result()

    def batch(self, data: Block, idx: Array) -> Block:
        """A mini-batch gathered to the client (NumPy): correct, but each step costs a
        round trip; batches drawn within one chunk, run on its worker, are future work."""
        if not hasattr(data.X, "__dask_graph__"):
            return super().batch(data, idx)
        import numpy as np

        client = self._connected()
        order = np.asarray(idx)
        wanted = [data.X[order], data.y[order]] + ([] if data.w is None else [data.w[order]])
        got = client.compute(wanted, sync=True)
        return Block(got[0], got[1], got[2] if data.w is not None else None)

    def kernel(self, loss: Any) -> Any:
        """NumPy's fused cross-entropy: the chunks are NumPy arrays on the workers."""
        from smx.backends.numpy_backend import NumpyBackend

        return NumpyBackend().kernel(loss)


@smx.hookimpl
def smx_backends():
    yield DaskBackend()
