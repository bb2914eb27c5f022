"""Dask (``distributed``) as an engine: rows in chunks on a cluster's workers, the small
parameters and the optimizer state on the client.

The objective is a sum over rows (:mod:`smx.objective`), so one evaluation is one
task per chunk (the chunk's :class:`~smx.objective.Partial`, computed where the chunk
lives, with the d x K parameters shipped in the task) and a tree of additions on the
workers; only the summed partial (a few d x K arrays) comes back to the client. The
task count per evaluation depends only on the number of chunks, never on the epoch,
and no future outlives its evaluation, so neither the graph nor the client grows.

``cluster: local`` starts a multi-process :class:`distributed.LocalCluster` for the run
and stops it in :meth:`DaskBackend.release`; ``cluster: local-cuda`` starts dask-cuda's
``LocalCUDACluster`` instead (one worker per GPU); ``cluster: tcp://HOST:PORT`` connects
to a running scheduler, which smx neither starts nor stops (its workers need smx installed).

Chunks are NumPy arrays, or CuPy arrays on each worker's GPU (``chunks: cupy``, the
default with ``local-cuda``): each chunk is moved to its worker's GPU where it is read,
and the parameters and optimizer state then live on the client's first GPU (CuPy), so
every partial runs on a GPU and comes back as CuPy.

Data from a partitioned source (:mod:`smx.datasets.sources`) is read on the workers,
never through the client: each chunk is a task that reads its rows from the source, so
a chunk lost with a worker is recomputed from the source on another, and data that does
not fit the workers' memory is streamed (read inside each evaluation's partial tasks)
instead of persisted. Mini-batches are drawn within one chunk and stepped on the worker
that holds it (:meth:`DaskBackend.batch_order`, :meth:`DaskBackend.fused_step`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

import smx
from smx.backends.numpy_backend import NumpyBackend
from smx.objective import Partial
from smx.types import Array, Backend, Block, PluginParams

INSTALL_HINT = "pip install 'smx[dask]'"
#: partials summed per task in the reduction tree (small arrays: one level for most runs)
FAN_IN = 8
#: seconds between looks, while smx waits on a result, at whether the workers can run it
WATCH_S = 5.0
#: bytes a task holds at its peak per byte of its chunk: a partitioned source's chunk is
#: read as float64, split, standardised and cast (measured 3.4x the float64 rows for .npy,
#: 3.8x for Parquet); a chunk in memory is its rows and, at most, one aligned copy
SOURCE_COPIES, MEMORY_COPIES = 4, 2
#: the address schemes a scheduler may be reached at (distributed's comm backends)
SCHEMES = ("tcp", "tls", "inproc", "ucx")
#: chunk_rows: auto keeps a task within this share of what a worker thread may hold, and a
#: chunk within dask's own default chunk size (array.chunk-size)
AUTO_SHARE, AUTO_CHUNK_BYTES = 0.25, 128 * 2**20


class DaskOptions(PluginParams):
    """``backend_options`` of ``backend: dask``."""

    cluster: str = Field("local", description="local (smx starts a LocalCluster), "
                         "local-cuda (smx starts dask-cuda's LocalCUDACluster: one worker per "
                         "GPU) or the address of a running scheduler, e.g. tcp://10.0.0.5:8786")
    workers: int = Field(2, ge=1, description="worker processes of a local cluster")
    threads_per_worker: int = Field(1, ge=1, description="threads per local worker")
    memory_limit: str | int = Field("auto", description="per local worker: bytes, '2GiB', "
                                    "or auto (the machine's memory shared among workers)")
    chunk_rows: int | Literal["auto"] = Field(
        "auto", description="rows per chunk, for every kind of data (in memory, a partitioned "
        "source): auto sizes them to the workers' memory_limit; a number that cannot fit a "
        "worker is refused before any task runs")
    timeout: float = Field(30.0, gt=0, description="seconds to wait for the scheduler")
    chunks: Literal["auto", "numpy", "cupy"] = Field(
        "auto", description="the chunks' arrays on the workers: numpy, cupy (on each worker's "
        "GPU; the parameters on the client's first GPU) or auto (cupy with local-cuda)")
    gpus: str | None = Field(None, description="local-cuda: the GPUs to use, as "
                             "CUDA_VISIBLE_DEVICES (e.g. 0,1); default: all, one worker each")

    @field_validator("chunk_rows", mode="before")
    @classmethod
    def _rows(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
            return value
        raise ValueError("expected auto or a number of rows >= 1")

    @field_validator("cluster")
    @classmethod
    def _address(cls, value: str) -> str:
        """Checked before any cluster starts: a scheme distributed cannot speak would reach
        the user as a traceback from its comm layer."""
        scheme, sep, rest = value.partition("://")
        if value in ("local", "local-cuda") or (sep and scheme in SCHEMES and rest.strip()):
            return value
        raise ValueError(f"expected local, local-cuda or a scheduler address "
                         f"{' or '.join(s + '://...' for s in SCHEMES)} (e.g. "
                         "tcp://10.0.0.5:8786)")

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        """Read by Dask's own parser (``dask.utils.parse_bytes``) before any worker starts:
        a value the nanny cannot read ends a LocalCluster's start in a long log."""
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError("expected auto, a number of bytes or a size such as 2GiB")
        if isinstance(value, str):
            try:
                from dask.utils import parse_bytes
            except ImportError:  # no Dask: the engine's install line says so, not this key
                return value
            try:
                parsed = parse_bytes(value)
            except (ValueError, TypeError):
                raise ValueError("expected auto, a number of bytes or a size such as 2GiB "
                                 "(Dask's units: kB, MB, GB, KiB, MiB, GiB...)") from None
        else:
            parsed = value
        if parsed <= 0:
            raise ValueError("must be positive: auto, a number of bytes or a size such as 2GiB")
        return value

    @property
    def on_gpu(self) -> bool:
        """Whether the chunks (and so the parameters) are CuPy arrays."""
        return self.chunks == "cupy" or (self.chunks == "auto" and self.cluster == "local-cuda")


def _missing() -> str | None:
    """Why dask.array or distributed cannot be imported (None: they can), read from the
    installed files: importing them takes seconds that `smx plugins` and `smx info` must
    not pay (find_spec of dask.array would import dask itself)."""
    from smx.backends import probe

    folder = probe.package_dir("dask") if probe.installed("dask") else None
    for name, there in (("dask", folder is not None),
                        ("dask.array", folder is not None and (folder / "array").is_dir()),
                        ("distributed", probe.installed("distributed"))):
        if not there:
            return f"Dask is not installed ({name}); {INSTALL_HINT}"
    return None


def _aligned(a: Any) -> Any:
    """``a``, or a copy of it when its address is not a multiple of its item size.

    A chunk that arrived over the network (scattered, moved to the worker that steals its
    task, read back after spilling to disk) may start at any byte; NumPy then takes its
    unaligned loops, which sum in another order than the aligned ones: the same rows gave
    other bits from run to run. Device (CuPy) arrays are left as they are."""
    flags = getattr(a, "flags", None)
    if flags is None or flags.aligned or type(a).__module__ != "numpy":
        return a
    return a.copy()


def _widen(part: Any) -> Any:
    """A float32 :class:`~smx.objective.Partial` in float64: partials are added in float64
    and cast back once, so the sum of many float32 chunks loses no more than one rounding."""
    if not isinstance(part, Partial):
        return part

    def up(a: Any) -> Any:
        return a.astype("float64") if str(getattr(a, "dtype", "")) == "float32" else a

    grads = None if part.grads is None else {k: up(v) for k, v in part.grads.items()}
    return Partial(up(part.loss), up(part.weight), grads)


def _narrow(part: Any, dtype: Any) -> Any:
    """:func:`_widen` undone on the client: the total back in the chunks' ``dtype``."""
    if not isinstance(part, Partial) or str(dtype) != "float32":
        return part

    def down(a: Any) -> Any:
        return a.astype(dtype) if str(getattr(a, "dtype", "")) == "float64" else a

    grads = None if part.grads is None else {k: down(v) for k, v in part.grads.items()}
    return Partial(down(part.loss), down(part.weight), grads)


def _chunk_partial(X: Any, y: Any, w: Any, *, fn: Callable[[Block], Any]) -> Any:
    """One chunk's partial, on the worker that holds it (widened for the tree of sums)."""
    return _widen(fn(Block(_aligned(X), _aligned(y), _aligned(w))))


def _to_gpu(a: Any, gpu: bool = True) -> Any:
    """``a`` on this worker's GPU (CuPy) when ``gpu``; as it is otherwise."""
    if not gpu or a is None:
        return a
    import cupy

    return cupy.asarray(a)


def _read_rows(path: str, bounds: tuple[int, int], *, dtype: str, gpu: bool = False) -> Any:
    """Rows ``[start, stop)`` of a ``.npy`` file, read on the worker through a memory map."""
    from smx.datasets.sources import read_npy_rows

    return _to_gpu(read_npy_rows(path, *bounds, dtype), gpu)


def _read_part(part: Any, i: int, dtype: str, gpu: bool = False) -> Any:
    """Chunk ``i`` of a source's part (:class:`~smx.datasets.sources.PartRows`,
    ``PartLabels`` or ``PartWeights``), read on the worker (and moved to its GPU)."""
    return _to_gpu(part.read_chunk(i, dtype), gpu)


def _read_block(i: int, rows: Any, labels: Any, weights: Any, dtype: str, gpu: bool = False
                ) -> Block:
    """Chunk ``i`` of a streamed part (rows, labels, weights when any), read from its source."""
    return Block(_to_gpu(rows.read_chunk(i, dtype), gpu), _to_gpu(labels.read_chunk(i), gpu),
                 None if weights is None else _to_gpu(weights.read_chunk(i, dtype), gpu))


def _stream_partial(i: int, *, rows: Any, labels: Any, weights: Any = None, dtype: str,
                    fn: Callable[[Block], Any], gpu: bool = False) -> Any:
    """Read chunk ``i`` from its source and return its partial: nothing stays behind."""
    return _widen(fn(_read_block(i, rows, labels, weights, dtype, gpu)))


def _chunk_step(X: Any, y: Any, w: Any, idx: Any, params: Any, state: Any, *,
                step: Callable[..., Any]) -> Any:
    """One mini-batch step on the worker that holds the chunk; rows ``idx`` of it."""
    return step(params, state, Block(X[idx], y[idx], None if w is None else w[idx]))


def _stream_step(i: int, idx: Any, params: Any, state: Any, *, rows: Any,
                 labels: Any, weights: Any = None, dtype: str, step: Callable[..., Any],
                 gpu: bool = False) -> Any:
    block = _read_block(i, rows, labels, weights, dtype, gpu)
    return _chunk_step(block.X, block.y, block.w, idx, params, state, step=step)


def _status_kib(field: str) -> int | None:
    """A ``VmXXX`` line of Linux's /proc/self/status, in bytes (None elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (run on each worker): Linux's VmHWM,
    which starts afresh at exec and at :func:`_run_start` (``ru_maxrss`` keeps the
    forking parent's level, and never starts afresh)."""
    import resource
    import sys

    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _run_start() -> tuple[int, bool]:
    """On each worker as a run starts: its resident memory now, and whether its peak was
    reset to it (Linux >= 4.0: writing 5 to /proc/self/clear_refs), so that the run's
    summary reports this run's peak, not that of the runs the worker served before."""
    import psutil

    rss = int(psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return rss, False
    return rss, _status_kib("VmHWM") is not None


def _concatenate(futures: list[Any], sizes: list[int], tail: tuple[int, ...], dtype: Any
                 ) -> Any:
    """One dask array over chunks that are futures (or delayed reads) of known shapes."""
    import dask.array as da

    return da.concatenate([da.from_delayed(f, shape=(s, *tail), dtype=dtype)
                           for f, s in zip(futures, sizes, strict=True)], axis=0)


def _paused(workers: dict[str, Any], seconds: float) -> Exception:
    """The one-line error for a cluster whose every worker is paused (out of memory)."""
    import dask

    from smx.errors import BackendUnavailable

    limits = sorted({int(w.get("memory_limit") or 0) for w in workers.values()})
    shown = ", ".join(f"{v / 2**20:,.0f} MiB" for v in limits if v) or "none"
    pause = dask.config.get("distributed.worker.memory.pause", 0.8)
    share = f"{pause:.0%} " if isinstance(pause, float) else ""
    return BackendUnavailable(
        f"every Dask worker ({len(workers)}) has been paused for {seconds:.0f} s: its memory "
        f"is over the pause threshold ({share}of its memory_limit: {shown}), so no "
        "task runs; raise backend_options.memory_limit (a hand-started worker: dask worker "
        "--memory-limit)", where="backend_options.memory_limit")


#: what a task was doing, by its function's name (the key's prefix), for the error line
PASSES = {"chunk_stats": "preparing the data", "_read_part": "reading the chunks",
          "_read_rows": "reading the chunks", "_chunk_partial": "evaluating the objective",
          "_stream_partial": "evaluating the objective", "_add": "summing the partials",
          "_chunk_step": "a mini-batch step", "_stream_step": "a mini-batch step"}


def _killed(exc: Any, limits: list[int]) -> Exception:
    """The one-line error for distributed's ``KilledWorker``: every worker that ran the task
    died (most often its nanny restarted it for going over its memory_limit, whose values
    as the run started are ``limits``)."""
    from dask.utils import key_split

    from smx.errors import BackendUnavailable

    name = key_split(exc.task)
    shown = ", ".join(f"{v / 2**20:,.0f} MiB" for v in sorted(set(limits)) if v) or "none"
    times = exc.allowed_failures + 1
    return BackendUnavailable(
        f"every Dask worker that ran {name} ({PASSES.get(name, 'a task')}) died ({times} in "
        f"all), most likely out of memory (memory_limit per worker: {shown}); lower "
        "backend_options.chunk_rows (or set it to auto) or raise the workers' memory_limit",
        where="backend_options.chunk_rows")


def _add(*parts: Any) -> Any:
    """The sum of ``parts`` in the order given: the order of the chunks, whatever order
    their tasks finished in."""
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


class DaskBackend(Backend):
    name = "dask"
    description = "Dask distributed: chunks of rows on a cluster's workers (local or remote)"
    # the reduction tree's shape and order depend only on the chunks, each chunk is summed
    # from an aligned copy, and float32 partials are added in float64 (_aligned, _widen)
    deterministic = True
    options = DaskOptions

    def __init__(self) -> None:
        self.settings = DaskOptions()
        self.client: Any = None
        self.cluster: Any = None  # set only when smx started it
        # placed arrays (by dask name) -> their chunks' futures (X, y, w)
        self._chunks: dict[str, tuple[list[Any], list[Any], list[Any] | None]] = {}
        # streamed parts of a source (by dask name) -> (rows, labels, weights, dtype)
        self._streams: dict[str, tuple[Any, Any, Any, str]] = {}
        self._persisted: dict[str, bool] = {}
        # each worker as the run started: its resident memory, whether its peak was reset,
        # and its memory_limit
        self._start: dict[str, tuple[int, bool, int]] = {}
        self._chunk_rows: int | None = None  # the rows per chunk this run placed
        self._running_seen: set[str] = set()  # the workers running at the last look

    # --- the plain backend interface --------------------------------------------------
    # parameters and optimizer state stay on the client: NumPy arrays, or CuPy arrays on
    # the client's first GPU when the chunks are CuPy (the engine that holds them answers)
    devices = NumpyBackend.devices

    def _client_engine(self) -> Backend:
        if self.settings.on_gpu:
            from smx.backends.cupy_backend import CupyBackend

            return CupyBackend()
        return NumpyBackend()

    def unavailable_reason(self) -> str | None:
        return _missing()

    def namespace(self) -> Any:
        return self._client_engine().namespace()

    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Array:
        return self._client_engine().from_host(
            array, "cuda:0" if self.settings.on_gpu else device, dtype)

    def to_host(self, array: Array) -> Any:
        import numpy as np

        if hasattr(array, "__dask_graph__"):
            array = self._result(self._connected().compute(array))
        return np.asarray(self._client_engine().to_host(array))

    def versions(self) -> dict[str, str]:
        from smx.backends import probe

        if _missing():
            return {}
        return {name: probe.version(name) or "?" for name in ("dask", "distributed")}

    # --- the cluster ------------------------------------------------------------------

    def configure(self, options: PluginParams) -> None:
        assert isinstance(options, DaskOptions)
        if self.client is not None and options != self.settings:
            self.release("cpu")
        self.settings = options

    def _connected(self) -> Any:
        """The client, starting the local cluster or connecting on first use; the run
        starts there (each worker's memory now, its peak reset: :func:`_run_start`)."""
        if self.client is None:
            self.client = self._connect()
            try:
                self._wait_for_workers()
                limits = {a: int(w.get("memory_limit") or 0)
                          for a, w in self._workers().items()}
                started = self.client.run(_run_start)
            except OSError:  # a worker that died while answering (distributed's CommClosedError)
                self.release("cpu")
                raise self._no_workers(self.settings.timeout) from None
            except BaseException:
                self.release("cpu")
                raise
            self._start = {a: (rss, reset, limits.get(a, 0))
                           for a, (rss, reset) in started.items()}
        return self.client

    def _wait_for_workers(self) -> None:
        """Until a worker is running, for at most ``timeout`` seconds, counted from the
        connection whether or not any worker exists meanwhile: workers that die at start-up
        (a memory_limit below what a worker process needs) or never join end the run with
        one line instead of a wait without end."""
        import time

        start = time.monotonic()
        while True:
            workers = self._workers()
            self._running_seen = {a for a, w in workers.items() if w.get("status") == "running"}
            if self._running_seen:
                return
            waited = time.monotonic() - start
            if waited >= self.settings.timeout:
                raise _paused(workers, waited) if workers else self._no_workers(waited)
            time.sleep(0.1)

    def _no_workers(self, seconds: float) -> Exception:
        """The one line for a cluster with no running worker for ``seconds``."""
        from smx.errors import BackendUnavailable

        opts = self.settings
        if opts.cluster in ("local", "local-cuda"):
            return BackendUnavailable(
                f"no Dask worker of the local cluster was running for {seconds:.0f} s "
                f"(backend_options.timeout): they die as they start, most likely because "
                f"memory_limit ({opts.memory_limit}) is below the memory a worker process "
                "takes as it starts; raise backend_options.memory_limit",
                where="backend_options.memory_limit")
        return BackendUnavailable(
            f"no Dask worker was running at {opts.cluster} for {seconds:.0f} s "
            "(backend_options.timeout): start workers (dask worker ADDRESS) or check their "
            "logs (a worker whose memory_limit is too small dies as it starts)",
            where="backend_options.cluster")

    def _connect(self) -> Any:
        from smx.errors import BackendUnavailable

        if (why := _missing()) is not None:
            raise BackendUnavailable(f"backend 'dask' is unavailable: {why}")
        import logging

        from distributed import Client, LocalCluster

        opts = self.settings
        if opts.on_gpu and (why := self._client_engine().unavailable_reason()) is not None:
            raise BackendUnavailable(f"chunks on GPUs need CuPy: {why}",
                                     where="backend_options.chunks")
        # the scheduler of a cluster smx starts runs in this process: its failures reach the
        # user as smx's one line, not as log records after it (a task "marked as failed")
        quiet = logging.CRITICAL
        if opts.cluster == "local":
            self.cluster = LocalCluster(
                n_workers=opts.workers, threads_per_worker=opts.threads_per_worker,
                memory_limit=opts.memory_limit, processes=True,
                # a free port: None does not turn the dashboard off (dask/distributed#8136), and
                # a second run beside another cluster would warn that 8787 is taken
                dashboard_address=":0", silence_logs=quiet)
            return Client(self.cluster, set_as_default=False)
        if opts.cluster == "local-cuda":
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError as exc:
                raise BackendUnavailable(
                    f"cluster: local-cuda needs dask-cuda ({exc.name or exc} is not "
                    "installed); pip install dask-cuda", where="backend_options.cluster") from None
            self.cluster = LocalCUDACluster(
                CUDA_VISIBLE_DEVICES=opts.gpus, threads_per_worker=opts.threads_per_worker,
                memory_limit=opts.memory_limit, dashboard_address=":0",
                silence_logs=quiet)
            return Client(self.cluster, set_as_default=False)
        try:
            return Client(opts.cluster, timeout=opts.timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise BackendUnavailable(
                f"cannot reach the Dask scheduler at {opts.cluster} within {opts.timeout:g} "
                f"s ({type(exc).__name__}); start it (dask scheduler) or fix the address",
                where="backend_options.cluster") from None

    def _workers(self) -> dict[str, Any]:
        """The scheduler's view of every worker (memory_limit, nthreads...)."""
        return self._connected().scheduler_info(n_workers=-1)["workers"]

    def release(self, device: str) -> None:
        """Drop the chunks; close the client, and the cluster when smx started it."""
        self._chunks.clear()
        self._streams.clear()
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    # --- chunks sized to the workers ----------------------------------------------------

    def chunk_rows_for(self, n_rows: int, n_features: int, *, source: bool = False,
                       itemsize: int = 8) -> int:
        """Rows per chunk for ``n_rows`` x ``n_features`` data: a partitioned ``source`` (read
        as float64 and prepared on the workers) or rows of ``itemsize`` bytes in memory.

        ``backend_options.chunk_rows``, checked against the workers before any task runs: a
        task holds a few copies of its chunk (``SOURCE_COPIES``, ``MEMORY_COPIES``) and a
        worker over its memory_limit is restarted by its nanny, so a chunk that cannot fit
        is refused in one line naming the limit and a size that fits. ``auto``: the most
        rows whose task takes a quarter of what a worker thread may hold, at most 128 MiB
        of float64 rows, and no more than a chunk per worker thread needs."""
        per_row = self._per_row(n_features, source, itemsize)
        auto, fits, tightest = self._plan(n_rows, n_features, per_row)
        rows = self.settings.chunk_rows
        if rows == "auto":
            rows = auto
        elif fits is not None and min(rows, n_rows) > fits:
            raise self._too_big(rows, n_features, per_row, fits, tightest, auto)
        self._chunk_rows = rows
        return rows

    def source_chunk_rows(self, n_rows: int, n_features: int) -> int:
        """A partitioned source's chunks: :meth:`chunk_rows_for` its rows, read as float64
        and prepared on the workers."""
        return self.chunk_rows_for(n_rows, n_features, source=True)

    @staticmethod
    def _per_row(n_features: int, source: bool, itemsize: int) -> int:
        """A task's peak bytes per row of its chunk."""
        return max(n_features, 1) * (SOURCE_COPIES * 8 if source else MEMORY_COPIES * itemsize)

    def _plan(self, n_rows: int, n_features: int, per_row: int
              ) -> tuple[int, int | None, tuple[int, int, int]]:
        """(auto's rows, the most rows a task can hold (None: no memory_limit), the tightest
        worker); one line when not even a row fits."""
        room, threads, tightest = self._task_room()
        fits = None if room is None else int(room // per_row)
        if fits is not None and fits < 1:
            raise self._too_big(1, n_features, per_row, fits, tightest)
        auto = min(AUTO_CHUNK_BYTES // (8 * max(n_features, 1)), -(-max(n_rows, 1) // threads))
        if fits is not None:
            auto = min(auto, int(AUTO_SHARE * fits))
        return max(auto, 1), fits, tightest

    def _task_room(self) -> tuple[float | None, int, tuple[int, int, int]]:
        """The bytes one task may take on the tightest worker: its memory_limit up to the
        nanny's terminate threshold, less what it held as the run started, shared among its
        threads (None: no worker has a limit); the worker threads in all; and that worker's
        (limit, memory in use, threads)."""
        import dask

        workers = self._workers()
        share = dask.config.get("distributed.worker.memory.terminate", 0.95) or 1.0
        threads = sum(int(w.get("nthreads") or 1) for w in workers.values()) or 1
        room: float | None = None
        tightest = (0, 0, 1)
        for addr, w in workers.items():
            limit = int(w.get("memory_limit") or 0)
            if not limit:
                continue
            used = self._start.get(addr, (int(w.get("metrics", {}).get("memory") or 0),))[0]
            n = int(w.get("nthreads") or 1)
            each = (share * limit - used) / n
            if room is None or each < room:
                room, tightest = each, (limit, used, n)
        return room, threads, tightest

    @staticmethod
    def _too_big(rows: int, d: int, per_row: int, fits: int, tightest: tuple[int, int, int],
                 auto: int = 1) -> Exception:
        from smx.errors import BackendUnavailable

        limit, used, threads = tightest
        mib = 2**20
        worker = (f"a worker's memory_limit is {limit / mib:,.0f} MiB, {used / mib:,.0f} MiB of "
                  f"it in use before any data, with {threads} thread(s)")
        if fits < 1:
            return BackendUnavailable(
                f"no chunk fits the Dask workers ({worker}); raise their memory_limit",
                where="backend_options.memory_limit")
        return BackendUnavailable(
            f"a chunk of {rows:,} rows x {d} features needs about {rows * per_row / mib:,.0f} "
            f"MiB on a worker at its peak, more than one task can have there ({worker}): at "
            f"most {fits:,} rows fit, and chunk_rows: auto picks {auto:,}",
            where="backend_options.chunk_rows")

    # --- engine hooks -----------------------------------------------------------------

    def map_reduce(self, fn: Callable[..., Any], *items: Any) -> Any:
        """``fn`` over the items, one task each, summed by a tree of tasks on the workers;
        only the total comes back (the data preparation's one pass over a source)."""
        client = self._connected()
        parts = client.map(fn, *items, pure=False)
        return self._result(self._tree_sum(parts))

    def compute(self, *arrays: Any) -> list[Any]:
        """Dask collections computed on the cluster, with the one-line errors of
        :meth:`_result` (the estimator's input checks on dask arrays use it too)."""
        return [self._result(f) for f in self._connected().compute(list(arrays))]

    def _result(self, future: Any) -> Any:
        """``future.result()``, as one line when the task's workers kept dying
        (``KilledWorker``) or when every worker stays paused for ``timeout`` seconds: a
        worker whose memory is over Dask's pause threshold (80% of its memory_limit) runs
        no task, and one that holds only imported libraries never resumes, so smx would
        wait forever; it says so in one line instead."""
        import time

        from distributed.scheduler import KilledWorker

        # the time since no worker could run a task: every worker paused, or none at all
        # (dead, restarting). Only a worker that the previous look (of this wait or an
        # earlier one) also saw running stops the clock, so workers that die as they start
        # never do, and a worker replaced once does not end the run
        stalled_since: float | None = None
        while True:
            try:
                try:
                    return future.result(timeout=min(WATCH_S, self.settings.timeout))
                except TimeoutError:
                    if future.done():  # the task itself raised TimeoutError
                        return future.result()
            except KilledWorker as exc:
                raise _killed(exc, [limit for _, _, limit in self._start.values()]) from None
            workers = self._workers()
            running = {a for a, w in workers.items() if w.get("status") == "running"}
            now = time.monotonic()
            if running & self._running_seen:
                stalled_since = None
            elif stalled_since is None:
                stalled_since = now
            self._running_seen = running
            if stalled_since is not None and now - stalled_since >= self.settings.timeout:
                if workers and not running:
                    raise _paused(workers, now - stalled_since)
                raise self._no_workers(now - stalled_since)

    def _tree_sum(self, parts: list[Any]) -> Any:
        """The parts summed by tasks of ``FAN_IN`` neighbours, level by level: the same
        additions in the same order (the chunks') however the tasks are scheduled."""
        client = self._connected()
        while len(parts) > 1:
            parts = [client.submit(_add, *parts[i:i + FAN_IN], pure=False)
                     for i in range(0, len(parts), FAN_IN)]
        return parts[0]

    def worker_memory(self) -> dict[str, Any]:
        """The workers' ``memory_limit`` (total) and each one's peak resident memory since
        the run started (``peak_rss_since: run start``; ``worker start`` where its peak
        could not be reset, so an earlier run's peak may show)."""
        client = self._connected()
        workers = self._workers()
        peaks = client.run(_peak_rss)
        # a worker that joined (or was restarted) during the run started within it
        reset = all(self._start.get(addr, (0, True, 0))[1] for addr in peaks)
        return {"workers": len(workers),
                "memory_limit_total": int(sum(w["memory_limit"] or 0 for w in workers.values())),
                "peak_rss": {addr: int(v) for addr, v in sorted(peaks.items())},
                "peak_rss_since": "run start" if reset else "worker start"}

    def run_report(self) -> dict[str, Any]:
        """What a run's summary records about the cluster: the rows per chunk, whether the
        training data was persisted or streamed, and the workers' memory during the run."""
        if self.client is None:
            return {}
        memory = self.worker_memory()
        return {"dask": {**memory, "peak_rss_max": max(memory["peak_rss"].values(), default=0),
                         "chunk_rows": self._chunk_rows, "persisted": dict(self._persisted)}}

    def _place_part(self, X: Any, y: Any, w: Any, dtype: str) -> Block:
        """A part of a partitioned source: each chunk read by a task on a worker (its rows,
        labels and, when the source has them, weights)."""
        import dask
        import numpy as np

        client = self._connected()
        n_chunks, d = len(X.bounds), X.shape[1]
        itemsize = np.dtype(dtype).itemsize
        if X.persist == "auto":
            info = client.scheduler_info(n_workers=-1)["workers"].values()
            budget = sum(w["memory_limit"] or 0 for w in info) / 2
            row_bytes = d * itemsize + 8 + (0 if w is None else itemsize)
            persist = budget == 0 or len(X) * row_bytes <= budget
        else:
            persist = X.persist == "true"
        chunks, sizes, gpu = range(n_chunks), list(X.sizes), self.settings.on_gpu

        def read(part: Any, kind: str) -> list[Any]:
            if persist:
                return client.map(_read_part, [part] * n_chunks, chunks, dtype=kind, gpu=gpu,
                                  pure=False)
            return [dask.delayed(_read_part, pure=True)(part, i, kind, gpu) for i in chunks]

        xs, ys = read(X, dtype), read(y, "int64")
        ws = None if w is None else read(w, dtype)
        dX = _concatenate(xs, sizes, (d,), dtype)
        dy = _concatenate(ys, sizes, (), "int64")
        dw = None if ws is None else _concatenate(ws, sizes, (), dtype)
        if persist:
            self._chunks[dX.name] = (xs, ys, ws)
        else:
            self._streams[dX.name] = (X, y, w, dtype)  # read (to the GPU) in each task
        self._persisted[("train", "val", "test")[X.part]] = persist
        return Block(dX, dy, dw)

    def place(self, X: Any, y: Any, w: Any | None, device: str, dtype: str) -> Block:
        """Rows in chunks of ``chunk_rows``, scattered to the workers (held there until
        release); the Block holds dask arrays over those chunks. A part of a partitioned
        source is read on the workers instead (never through the client), and dask arrays
        are rechunked and computed there (:meth:`_place_dask`)."""
        import numpy as np

        from smx.datasets.sources import PartRows

        if isinstance(X, PartRows):
            return self._place_part(X, y, w, dtype)
        if hasattr(X, "__dask_graph__"):
            return self._place_dask(X, y, w, dtype)
        client = self._connected()
        n = int(X.shape[0])
        bounds = self._bounds(n, np.shape(X)[1] if np.ndim(X) == 2 else 1,
                              itemsize=np.dtype(dtype).itemsize)

        def scatter(a: Any, kind: str | None) -> tuple[list[Any], Any]:
            host = np.asarray(a, dtype=kind, order="C")
            # a chunk lands at any byte of the message that brought it: each task that sums
            # it copies it when it is unaligned (_aligned)
            futures = self._scatter(client, [host[s:e] for s, e in bounds])
            if self.settings.on_gpu:  # each chunk to the GPU of the worker it went to
                futures = client.map(_to_gpu, futures, pure=False)
            return futures, _concatenate(futures, [e - s for s, e in bounds], host.shape[1:],
                                         host.dtype)

        xs, dX = scatter(X, dtype)
        ys, dy = scatter(y, "int64")
        ws, dw = (None, None) if w is None else scatter(w, dtype)
        self._chunks[dX.name] = (xs, ys, ws)
        return Block(dX, dy, dw)

    def _place_dask(self, X: Any, y: Any, w: Any | None, dtype: str) -> Block:
        """Dask arrays (the estimator's ``fit`` of a dask array): rechunked to
        :meth:`chunk_rows_for`'s rows and computed on the workers, one future per chunk,
        held there until release. Nothing of their size passes through the client (labels
        or weights given as NumPy travel in the graph)."""
        import dask.array as da
        import numpy as np

        client = self._connected()
        n, d = int(X.shape[0]), int(X.shape[1])
        bounds = self._bounds(n, d, itemsize=np.dtype(dtype).itemsize)
        rows = tuple(e - s for s, e in bounds)

        def persist(a: Any, kind: str) -> tuple[list[Any], Any]:
            a = a if hasattr(a, "__dask_graph__") else da.from_array(np.asarray(a))
            a = a.astype(kind).rechunk((rows, *((s,) for s in a.shape[1:])))
            futures = client.compute(a.to_delayed().ravel().tolist())
            if self.settings.on_gpu:  # each chunk to the GPU of the worker it is on
                futures = client.map(_to_gpu, futures, pure=False)
            return futures, _concatenate(futures, list(rows), a.shape[1:], a.dtype)

        xs, dX = persist(X, dtype)
        ys, dy = persist(y, "int64")
        ws, dw = (None, None) if w is None else persist(w, dtype)
        self._chunks[dX.name] = (xs, ys, ws)
        return Block(dX, dy, dw)

    def _scatter(self, client: Any, parts: list[Any]) -> list[Any]:
        """``client.scatter``, whose "No valid workers found" (every worker paused for
        memory, or none left) becomes smx's one line about the workers' memory."""
        try:
            return client.scatter(parts, hash=False)
        except TimeoutError:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            if workers and all(w.get("status") == "paused" for w in workers.values()):
                raise _paused(workers, self.settings.timeout) from None
            from smx.errors import BackendUnavailable

            raise BackendUnavailable(
                f"no Dask worker took the data ({len(workers)} connected, none running); "
                "check the workers' logs and backend_options.memory_limit",
                where="backend_options.cluster") from None

    def place_npy(self, X_path: str, y_path: str, dtype: str, w_path: str | None = None
                  ) -> Block:
        """Like :meth:`place`, but each worker reads its chunks' rows itself from ``.npy``
        files (memory-mapped; the paths must be visible to the workers): only the files'
        headers are read on the client. Labels must already be class indices."""
        import numpy as np

        client = self._connected()
        shapes = {p: np.load(p, mmap_mode="r").shape for p in (X_path, y_path, w_path) if p}
        n = shapes[X_path][0]
        if any(s[0] != n for s in shapes.values()):
            from smx.errors import DataError

            raise DataError(f"the files' row counts differ: {shapes}", where="data")
        bounds = self._bounds(n, int(np.prod(shapes[X_path][1:])))

        def read(path: str, kind: str) -> tuple[list[Any], Any]:
            futures = client.map(_read_rows, [path] * len(bounds), bounds, dtype=kind,
                                 gpu=self.settings.on_gpu, pure=False)
            return futures, _concatenate(futures, [e - s for s, e in bounds],
                                         shapes[path][1:], kind)

        xs, dX = read(X_path, dtype)
        ys, dy = read(y_path, "int64")
        ws, dw = (None, None) if w_path is None else read(w_path, dtype)
        self._chunks[dX.name] = (xs, ys, ws)
        return Block(dX, dy, dw)

    def _bounds(self, n: int, d: int, itemsize: int = 8) -> list[tuple[int, int]]:
        """Row ranges of :meth:`chunk_rows_for` rows (one empty range for no rows)."""
        if n == 0:
            return [(0, 0)]
        step = self.chunk_rows_for(n, d, itemsize=itemsize)
        return [(a, min(a + step, n)) for a in range(0, n, step)]

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
        stream = self._streams.get(data.X.name)
        if stream is not None:  # read each chunk from the source inside its partial's task
            rows, labels, weights, dtype = stream
            keep = [i for i, s in enumerate(rows.sizes) if s > 0]
            parts = client.map(_stream_partial, keep, rows=rows, labels=labels,
                               weights=weights, dtype=dtype, fn=fn, gpu=self.settings.on_gpu,
                               pure=False)
        else:
            xs, ys, ws = self._chunk_futures(data)
            parts = client.map(_chunk_partial, xs, ys, ws or [None] * len(xs), fn=fn,
                               pure=False)
        total = _narrow(self._result(self._tree_sum(parts)), data.X.dtype)
        import numpy as np

        if isinstance(total, Partial) and isinstance(total.loss, np.generic):
            # NumPy's 0-d + 0-d is a scalar: a 0-d array again (CuPy's stays an array)
            total = Partial(np.asarray(total.loss), total.weight, total.grads)
        return total

    # --- mini-batches within one chunk, stepped where the chunk lives ---------------------

    def batch_order(self, data: Block, batch_size: int, rng: Any
                    ) -> tuple[Any, list[tuple[int, int]]] | None:
        """This epoch's rows and batches: the chunks in a new order and the rows within each
        chunk shuffled (from the run's RNG), each batch cut within one chunk (a chunk's last
        batch may be short). None for data that is not chunked here."""
        if not hasattr(data.X, "__dask_graph__"):
            return None
        import numpy as np

        sizes = list(data.X.chunks[0])
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        order, bounds, pos = [], [], 0
        for c in rng.permutation(len(sizes)).tolist():
            rows = offsets[c] + rng.permutation(sizes[c])
            order.append(rows)
            for s in range(0, sizes[c], batch_size):
                stop = min(s + batch_size, sizes[c])
                bounds.append((pos + s, pos + stop))
            pos += sizes[c]
        return np.concatenate(order) if order else np.empty(0, np.int64), bounds

    def fused_step(self, step: Any, data: Block) -> Any:
        """The core ``step`` as one task on the worker holding the batch's chunk: the
        parameters and optimizer state go there and come back (the rows never move)."""
        if not hasattr(data.X, "__dask_graph__"):
            return None
        import dataclasses

        import numpy as np

        step = dataclasses.replace(step, partial=None)  # on the worker: its rows are one block
        client = self._connected()
        offsets = np.concatenate([[0], np.cumsum(data.X.chunks[0])]).astype(np.int64)
        stream = self._streams.get(data.X.name)
        chunks = None if stream is not None else self._chunk_futures(data)

        def fused(params: Any, state: Any, data: Block, idx: Any) -> Any:
            idx = np.asarray(idx)
            c = int(np.searchsorted(offsets, idx[0], side="right")) - 1
            local = idx - offsets[c]
            if chunks is None:
                assert stream is not None  # a streamed part has no chunk futures
                rows, labels, weights, dtype = stream
                future = client.submit(_stream_step, c, local, params, state, rows=rows,
                                       labels=labels, weights=weights, dtype=dtype, step=step,
                                       gpu=self.settings.on_gpu, pure=False)
            else:
                xs, ys, ws = chunks
                future = client.submit(_chunk_step, xs[c], ys[c], None if ws is None else ws[c],
                                       local, params, state, step=step, pure=False)
            return self._result(future)

        return fused

    def batch(self, data: Block, idx: Array) -> Block:
        """A mini-batch gathered to the client (NumPy). The Trainer's one whole-set
        permutation (``shuffle: batches``) leaves chunked data as it is: its batches are
        drawn within chunks, reshuffled every epoch (:meth:`batch_order`)."""
        if not hasattr(data.X, "__dask_graph__"):
            return super().batch(data, idx)
        import numpy as np

        if len(idx) == data.n:
            return data
        order = np.asarray(idx)
        wanted = [data.X[order], data.y[order]] + ([] if data.w is None else [data.w[order]])
        got = self.compute(*wanted)
        return Block(got[0], got[1], got[2] if data.w is not None else None)

    def kernel(self, loss: Any) -> Any:
        """NumPy's fused cross-entropy for NumPy chunks; the portable partial for CuPy's.
        On a worker, each worker thread computes its chunk's row pieces in turn with one BLAS
        thread (distributed starts workers with ``OPENBLAS_NUM_THREADS=1``; the kernel ships
        without a pool): the workers' threads are the parallelism."""
        return None if self.settings.on_gpu else NumpyBackend().kernel(loss)


@smx.hookimpl
def smx_backends():
    yield DaskBackend()
