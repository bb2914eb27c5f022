"""What plugins register: small frozen records, plus the backend interface.

Keeping registrations as plain dataclasses (as conda does) lets the manager
sort, de-duplicate and describe them without knowing any plugin's internals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

if TYPE_CHECKING:
    from smx.step import TrainStep

Array = Any  # an Array API array of whatever library the backend provides
Params = dict[str, Array]  # {"W": (d, K), "b": (K,)}; "b" absent without an intercept
LossAndGrad = Callable[[Params], tuple[Array, Params]]


def strict_scalar(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """Refuse what pydantic's lax mode would quietly convert: ``true`` for a number
    (``epochs=true`` would run 1 epoch), ``1`` or ``"yes"`` for a flag. Ints still pass
    for floats, and strings such as ``1e-3`` (YAML reads it as text) still parse."""
    spec = cls.model_fields.get(info.field_name or "")
    if spec is None or value is None:
        return value
    ann = spec.annotation
    types = set(get_args(ann)) if get_args(ann) else {ann}
    if isinstance(value, bool) and bool not in types and types & {int, float}:
        raise ValueError(f"expected a number, got {str(value).lower()}")
    if bool in types and not isinstance(value, bool) and not types & {int, float, str}:
        raise ValueError("expected true or false")
    return value


class PluginParams(BaseModel):
    """Base for a plugin's own options: unknown keys are errors, as everywhere in the config;
    NaN/inf are refused (an ``lr`` of inf trains into NaN, a ``max_norm`` of inf does nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _strict_scalars = field_validator("*", mode="before")(classmethod(strict_scalar))


class Backend(ABC):
    """An engine: an array library, its devices, and how a training step runs on them.

    The core (model, objective, transformations) is written once against the Array
    API; what differs between libraries lives here. Eager in-memory libraries
    (NumPy, CuPy, array-api-strict) need only the abstract methods: the engine hooks
    below default to "one device array, gathered batches, no compilation". A
    compiled library overrides :meth:`compile`, a lazy one :meth:`materialize` and
    :meth:`partial` (map over shards, tree-sum), and any engine can offer a fused
    kernel for the losses it knows (:meth:`kernel`).

    Subclasses import their library lazily, inside ``namespace()``, so listing
    plugins never pays for (or fails on) a library that is not used.
    """

    #: the config's ``backend:`` value (unique among registered engines)
    name: str
    #: one line for ``smx plugins``
    description: str = ""
    #: devices are simulated or real accelerators (not host memory)
    is_gpu: bool = False
    #: reductions give bitwise identical results from run to run
    deterministic: bool = True
    #: the engine's own options (config ``backend_options``), validated like plugin options
    options: type[PluginParams] = PluginParams
    #: ``place`` keeps a sparse X (scipy.sparse; cupyx on CuPy) sparse, and its products run
    #: the portable core on it; engines without it refuse sparse X in one line (the Trainer,
    #: before placing anything)
    accepts_sparse: bool = False

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when usable, else one sentence saying why not (and how to fix it)."""

    @abstractmethod
    def namespace(self) -> Any:
        """The Array API namespace (array-api-compat wrapped where needed)."""

    @abstractmethod
    def devices(self) -> list[str]:
        """Device names this backend can place arrays on, e.g. ``["cpu"]`` or ``["cuda:0"]``."""

    @abstractmethod
    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Array:
        """Copy a NumPy array to ``device`` (once per run, never in the hot loop)."""

    @abstractmethod
    def to_host(self, array: Array) -> Any:
        """Bring an array back as NumPy; the only way results leave the device."""

    def configure(self, options: PluginParams) -> None:  # noqa: B027 - nothing to set by default
        """Take the validated ``backend_options`` before anything is placed."""

    def synchronize(self, device: str) -> None:  # noqa: B027 - a no-op is right for CPUs
        """Wait for queued work on ``device``: needed for honest timings on GPUs."""

    def release(self, device: str) -> None:  # noqa: B027
        """Free cached device memory at the end of a run."""

    def run_context(self, dtype: str) -> AbstractContextManager[Any]:
        """A context a run's device work happens in: the Trainer holds it around each of its
        entry points (construction, ``fit``, ``run_epoch``, ``value_and_grad``...), so the
        library settings a run needs cover its own arithmetic between the engine's calls,
        without changing the process's defaults. None by default; JAX: 64-bit types in a
        float64 run."""
        return nullcontext()

    def cpu_threads(self, threads: int | None) -> AbstractContextManager[Any]:
        """A context a run's training (``Trainer.fit``) happens in, given the run's CPU
        thread count (the config's ``threads``, resolved; None: not limited). Default: at
        most that many threads in the native pools (BLAS, OpenMP, Numba) for its duration.
        NumPy: a pool of that many threads for its row pieces, one BLAS thread each."""
        from smx.hardware import thread_limit

        return thread_limit(threads)

    def resolve_device(self, device: str) -> str:
        """Map a config's ``device`` (auto, cpu, cuda, cuda:N) to one of ``devices()``."""
        available = self.devices()
        if device == "auto":
            return available[0]
        if device in available:
            return device
        from smx.errors import BackendUnavailable

        raise BackendUnavailable(
            f"backend {self.name!r} has no device {device!r}; its devices: {', '.join(available)}",
            where="device",
        )

    def versions(self) -> dict[str, str]:
        """Library versions recorded in summary.json."""
        return {}

    # --- engine hooks: where data lives and how a step runs -------------------------------

    def place(self, X: Any, y: Any, w: Any | None, device: str, dtype: str) -> Block:
        """Put one split on the device: features in ``dtype``, class indices as int64, and
        the sample weights (None: every row weighs 1). Default: one device array each."""
        return Block(self.from_host(X, device, dtype), self.from_host(y, device, "int64"),
                     None if w is None else self.from_host(w, device, dtype))

    def batch(self, data: Block, idx: Array) -> Block:
        """The rows ``idx`` (a device index vector) of ``data``: a gather on its device."""
        xp = self.namespace()
        return Block(xp.take(data.X, idx, axis=0), xp.take(data.y, idx, axis=0),
                     None if data.w is None else xp.take(data.w, idx, axis=0))

    def partial(self, fn: Callable[[Block], Any], data: Block) -> Any:
        """``fn`` (a block's additive partial) over all of ``data``: one call by default;
        a sharded engine maps it over shards and tree-sums the results."""
        return fn(data)

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A compiled version of a pure step function (``jax.jit``...); identity by default."""
        return fn

    def materialize(self, tree: Any) -> Any:
        """Force a lazy result (Dask ``persist``) so graphs do not grow; identity by default."""
        return tree

    def kernel(self, loss: Any) -> Kernel | None:
        """A fused partial for ``loss`` (same sums to rounding, faster), or None when this
        engine has none for that loss and its options: the portable core then runs."""
        return None

    def fused_step(self, step: TrainStep, data: Block
                   ) -> Callable[..., tuple[Params, Any, Array]] | None:
        """A whole minibatch step in one call, or None (the default: the Trainer gathers with
        :meth:`batch` and runs the compiled core ``step``).

        Called once per run, after placement. The result is ``(params, state, data, idx)
        -> (params, state, loss)`` with ``step``'s results to rounding, ``idx`` the batch's
        rows as a host (NumPy) index vector. It may run ``step`` where the rows are (Dask
        ships it to the worker holding them) or recognise what ``step`` computes
        (``step.objective``, ``step.transform.spec``) and run its own kernel, gathering
        the rows ``idx`` of ``data`` itself and updating buffers it owns in place: it
        copies ``params`` and ``state`` when they are not the ones it returned last, so
        arrays the caller holds from before that call (a checkpoint, the initial values)
        never change; those it returned may change at its next call.
        """
        return None

    def fused_epoch(self, step: TrainStep, data: Block
                    ) -> Callable[..., tuple[Params, Any, Array, Array]] | None:
        """A whole minibatch epoch in one call, or None (the default: a step per call).

        Called once per run, after placement; takes precedence over :meth:`fused_step`.
        For engines that compile loops (JAX's ``lax.scan`` of ``step``): one dispatch per
        epoch instead of one per step. The call is ``(params, state, data, order, bounds)
        -> (params, state, running, trace)`` with ``order`` the epoch's host row order and
        ``bounds`` each step's ``(start, stop)`` in it; ``running`` is ``Σ loss · rows /
        batch_size`` over the steps (a device scalar) and ``trace`` a device ``(steps, 1 +
        len(params))`` array of each step's batch loss and the sum of each parameter after
        it, in ``params``' order: what the Trainer reads, only when a logged step falls in
        the epoch, to log and to check for divergence. The steps are ``step``'s to rounding.
        """
        return None

    def batch_order(self, data: Block, batch_size: int, rng: Any
                    ) -> tuple[Any, list[tuple[int, int]]] | None:
        """This epoch's host row order and each batch's ``(start, stop)`` in it, drawn from
        the run's NumPy ``rng``; or None (the default: the Trainer's order, the same on
        every engine). Called once per epoch; an engine whose rows live in chunks (Dask)
        keeps each batch within one chunk."""
        return None

    #: ``map_reduce(fn, *items)``: ``fn`` over the items (one task each) and the results
    #: added, where the engine's workers are; None (the default) for an engine without
    #: workers, whose data preparation then runs the same reductions in this process. Read
    #: when a partitioned source is prepared for a run on this engine (Dask defines it).
    map_reduce: Callable[..., Any] | None = None

    def source_chunk_rows(self, n_rows: int, n_features: int) -> int | None:
        """Rows per chunk of a partitioned source prepared for a run on this engine, sized
        to its workers (Dask: ``backend_options.chunk_rows``, auto from their memory), or
        None (the default: ``data.chunk_rows``). An engine that answers owns the setting:
        ``data.chunk_rows``, which would then do nothing, is refused naming its own."""
        return None

    # --- what smx reports: summaries, `smx info`, `device: auto` ---------------------------

    def run_report(self) -> dict[str, Any]:
        """Extra entries for a run's ``summary.json`` (Dask: the workers' memory), asked once
        at the end of a run; ``{}`` by default."""
        return {}

    def accelerator_hint(self) -> str | None:
        """None when an accelerator may be usable, else why not. ``device: auto`` asks it
        of every ``is_gpu`` engine before :meth:`devices`, so an engine that can answer from
        installed files (PyTorch, JAX) overrides it to avoid importing its library on a
        machine without a GPU. Default: :meth:`unavailable_reason`."""
        return self.unavailable_reason()

    def cheap_report(self) -> dict[str, Any] | None:
        """``smx info``'s entry for this engine (``devices``, ``versions``...) when it is known
        without importing the library, else None (the default: :meth:`devices` and
        :meth:`versions` are asked)."""
        return None

    def device_info(self) -> list[dict[str, Any]]:
        """Details of each accelerator device for ``smx info`` (name, memory...); ``[]`` by
        default (nothing beyond :meth:`devices`)."""
        return []


@dataclass
class Block:
    """Rows on a device: features, class indices, sample weights (None: all ones)."""

    X: Array
    y: Array
    w: Array | None = None

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


class Kernel(Protocol):
    """A backend's fused ``objective.partial`` for one loss; see :meth:`Backend.kernel`."""

    def __call__(self, params: Params, block: Block, class_weight: Array | None = None, *,
                 grad: bool = True) -> Any: ...


class Transform(NamedTuple):
    """A gradient transformation, optax's ``GradientTransformation`` shape: pure functions
    over trees of arrays.

    ``init(params) -> state``; ``update(updates, state, params=None, **extra) -> (updates,
    state)``, the new parameters being ``params + updates``. The learning rate is not an
    argument: it is a link of the chain
    (:func:`~smx.optimizers.transforms.scale_by_learning_rate`, with a schedule evaluated
    from a step count in the state). States hold arrays (step counts are 0-d integer arrays
    on the parameters' device) in dicts and tuples, so a compiled engine carries them and a
    checkpoint stores them. Compose links with :func:`smx.optimizers.transforms.chain`.

    ``spec`` optionally says what the pair computes, as a tuple of links ``(name,
    *hyperparameters)`` (``chain`` concatenates them; None: opaque). An engine with
    a fused update (:meth:`Backend.fused_step`) reads it to recognise chains it can
    apply in place; every other engine ignores it.
    """

    init: Callable[[Params], Any]
    update: Callable[..., tuple[Params, Any]]
    spec: tuple[tuple[Any, ...], ...] | None = None


class Solver(Protocol):
    """A full-batch method with its own line search (L-BFGS): handed a value-and-gradient
    function of the parameters, it takes one iteration per call. ``step`` returns the
    objective (penalty included) at the parameters it returns: the Trainer's ``train_loss``
    is that less the penalty, with no second pass over the data."""

    def init(self, params: Params) -> Any: ...

    def step(
        self, params: Params, state: Any, value_and_grad: LossAndGrad, lr: float
    ) -> tuple[Params, Any, Array]: ...


@dataclass(frozen=True)
class OptimizerSpec:
    """A first-order optimizer: ``factory(**params)`` returns a :class:`Transform`.

    ``params`` should hold ``lr``: the schedule multiplies it and hands the result
    to the transformation as each step's ``lr``.
    """

    name: str
    factory: Callable[..., Transform]  # called with the validated params as keywords
    params: type[PluginParams] = PluginParams
    description: str = ""


@dataclass(frozen=True)
class SolverSpec:
    """A full-batch solver with a line search: ``factory(**params)`` returns a :class:`Solver`.

    Chosen with ``optimizer.name`` like an optimizer; it sees the whole training set in
    every evaluation (``batch_size`` is ignored) and one iteration is one epoch.
    """

    name: str
    factory: Callable[..., Solver]
    params: type[PluginParams] = PluginParams
    description: str = ""


@dataclass(frozen=True)
class LossSpec:
    """A loss: ``factory(**params)`` returns a :class:`smx.losses.Loss`; class and sample
    weights reach its ``partial`` with every block."""

    name: str
    factory: Callable[..., Any]
    params: type[PluginParams] = PluginParams
    description: str = ""


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    #: factory(total_steps=..., steps_per_epoch=..., **params) -> (step -> lr multiplier)
    factory: Callable[..., Callable[[int], float]]
    params: type[PluginParams] = PluginParams
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    #: load(**params) -> (X as 2-D float NumPy array, y as 1-D labels[, per-row sample weights])
    load: Callable[..., tuple[Any, Any]]
    params: type[PluginParams] = PluginParams
    description: str = ""
    #: load() returns new arrays each call (nobody else holds them): smx may standardize
    #: them in place instead of copying
    owned: bool = False


@dataclass(frozen=True)
class RunInfo:
    """What a callback's ``on_run_start`` is told about the run it follows."""

    #: the run folder (config.yaml is written; model.npz and loss.png come at the end)
    folder: Path
    #: the resolved config as config.yaml holds it (plain YAML values)
    config: dict[str, Any]
    #: continued from a checkpoint (``smx run --resume``); ``history`` then holds the epochs
    #: already done, the metrics.jsonl records up to the checkpoint
    resumed: bool
    history: list[dict[str, Any]]


class Callback:
    """What a callback plugin's factory returns: any of these methods, each called on the
    host between epochs, never inside a step (so a callback adds no device reads). The
    defaults do nothing; a callback overrides the moments it needs.

    The records are smx's own, copied for each callback: ``record`` is the epoch's
    metrics.jsonl line, ``summary`` is summary.json's contents."""

    def on_run_start(self, run: RunInfo) -> None:
        """The run folder exists and holds config.yaml; no epoch has run (in this process)."""

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """An epoch ended: ``record`` (epoch, step, train_loss, val_loss, val_accuracy, lr,
        elapsed) is the line just appended to metrics.jsonl (non-finite numbers as None)."""

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        """``path`` (checkpoint.npz) now holds the state after ``epoch``."""

    def on_run_end(self, summary: dict[str, Any]) -> None:
        """The run ended. ``summary["status"]`` is ``completed`` (summary.json, model.npz and
        loss.png are written), ``diverged`` (summary.json written) or ``failed`` (with
        ``error``; nothing more is written)."""


@dataclass(frozen=True)
class CallbackSpec:
    """A run callback, listed in a config's ``callbacks:`` section:
    ``factory(**params)`` returns a :class:`Callback` (built before the run folder is made,
    so a missing library is an error that leaves nothing behind)."""

    name: str
    factory: Callable[..., Callback]
    params: type[PluginParams] = PluginParams
    description: str = ""


@dataclass(frozen=True)
class Registration:
    """One registered record and where it came from (for `smx plugins` and duplicate errors)."""

    name: str
    record: Any
    plugin: str
    version: str
