"""What plugins register: small frozen records, plus the backend interface.

Keeping registrations as plain dataclasses (as conda does) lets the manager
sort, de-duplicate and describe them without knowing any plugin's internals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

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
    """An array library and its devices.

    Subclasses import their library lazily, inside ``namespace()``, so listing
    plugins never pays for (or fails on) a library that is not used.
    """

    name: str
    description: str = ""
    #: devices are simulated or real accelerators (not host memory)
    is_gpu: bool = False
    #: reductions give bitwise identical results from run to run
    deterministic: bool = True

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

    def synchronize(self, device: str) -> None:  # noqa: B027 - a no-op is right for CPUs
        """Wait for queued work on ``device``: needed for honest timings on GPUs."""

    def release(self, device: str) -> None:  # noqa: B027
        """Free cached device memory at the end of a run."""

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

    def loss_and_grad_kernel(self) -> Callable[..., tuple[Array, Params]] | None:
        """A faster fused ``model.loss_and_grad(params, X, y, l2)`` for class indices ``y``.

        Same results to rounding; None (the default) means the portable core is used.
        """
        return None


class Optimizer(Protocol):
    """An optax-like pair of pure functions; ``update`` calls ``closure`` as often as it needs."""

    def init(self, params: Params) -> Any: ...

    def update(
        self, params: Params, state: Any, closure: LossAndGrad, lr: float
    ) -> tuple[Params, Any, Array]: ...


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    factory: Callable[..., Optimizer]  # called with the validated params as keywords
    params: type[PluginParams] = PluginParams
    description: str = ""
    #: full-batch methods (L-BFGS) see the whole training set in one closure
    full_batch: bool = False


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
    #: load(**params) -> (X as 2-D float NumPy array, y as 1-D labels)
    load: Callable[..., tuple[Any, Any]]
    params: type[PluginParams] = PluginParams
    description: str = ""


@dataclass(frozen=True)
class Registration:
    """One registered record and where it came from (for `smx plugins` and duplicate errors)."""

    kind: str
    name: str
    record: Any
    plugin: str
    version: str
