"""Choosing the backend and device a run uses (``backend: auto``, ``device: auto``, fallback)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from smx.config import RunConfig
from smx.errors import BackendUnavailable
from smx.types import Backend

GPU_DEVICES = ("cuda",)


@dataclass(frozen=True)
class Placement:
    backend: Backend
    device: str
    note: str | None = None  # set when a fallback happened


def _wants_gpu(device: str) -> bool:
    return device.split(":", 1)[0] in GPU_DEVICES


def select(cfg: RunConfig, plugins) -> Placement:
    """The backend and device for ``cfg``, or BackendUnavailable with the reason.

    ``backend: auto`` takes the first usable GPU backend (unless ``device: cpu``),
    else NumPy. An explicit GPU request that cannot be met fails, unless the
    config says ``fallback: cpu``: then one warning line says what happened.
    """
    try:
        return _select(cfg, plugins)
    except BackendUnavailable as exc:
        if cfg.fallback != "cpu":
            raise
        backend = plugins.backend("numpy")
        note = f"{exc}; falling back to numpy on cpu (fallback: cpu)"
        print(f"smx: warning: {note}", file=sys.stderr)
        return Placement(backend, "cpu", note)


def _select(cfg: RunConfig, plugins) -> Placement:
    device = cfg.device
    if cfg.backend == "auto":
        if device != "cpu":
            reasons = []
            for reg in plugins.registrations("backend"):
                backend = reg.record
                if not backend.is_gpu:
                    continue
                reason = backend.unavailable_reason()
                if reason is None:
                    return Placement(backend, backend.resolve_device(device))
                reasons.append(f"{backend.name}: {reason}")
            if _wants_gpu(device):
                why = "; ".join(reasons) or "no GPU backend is installed"
                raise BackendUnavailable(f"no usable GPU for device {device!r} ({why})",
                                         where="device")
        backend = plugins.backend("numpy")
        return Placement(backend, backend.resolve_device("cpu" if device == "auto" else device))
    backend = plugins.backend(cfg.backend)
    if _wants_gpu(device) and not backend.is_gpu:
        raise BackendUnavailable(
            f"backend {backend.name!r} runs on the CPU, not {device!r}; use backend: auto or "
            "a GPU backend", where="device",
        )
    return Placement(backend, backend.resolve_device(device))
