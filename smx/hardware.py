"""Choosing the backend and device a run uses (``backend: auto``, ``device: auto``, fallback)."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from smx import sysinfo
from smx.config import RunConfig
from smx.errors import BackendUnavailable
from smx.types import Backend

#: device names that ask for an accelerator: NVIDIA/AMD (cuda, gpu, rocm), Apple (mps), TPUs
GPU_DEVICES = ("cuda", "gpu", "rocm", "mps", "tpu")
#: `backend: auto` tries accelerator engines in this order, then any other plugin's: CuPy
#: first (eager, nothing to compile), PyTorch next (eager; CUDA, ROCm and MPS), JAX last
#: (each new shape pays an XLA compilation, and by default it reserves 75% of the GPU's
#: memory up front)
AUTO_ORDER = ("cupy", "torch", "jax")


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
            for backend in _accelerator_engines(plugins):
                resolved, reason = _on_accelerator(backend, device)
                if resolved is not None:
                    return Placement(backend, resolved)
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


def _accelerator_engines(plugins) -> list[Backend]:
    """The backends that may run on an accelerator, in ``AUTO_ORDER`` then by name."""
    found = [reg.record for reg in plugins.registrations("backend") if reg.record.is_gpu]
    rank = {name: i for i, name in enumerate(AUTO_ORDER)}
    return sorted(found, key=lambda b: (rank.get(b.name, len(rank)), b.name))


def _on_accelerator(backend: Backend, device: str) -> tuple[str | None, str | None]:
    """(the accelerator device ``device`` resolves to, None) or (None, why not).

    An engine with ``accelerator_hint()`` answers from the installed files first, so a
    machine without a GPU never imports PyTorch or JAX to find that out."""
    reason = backend.accelerator_hint()
    if reason is not None:
        return None, reason
    try:
        resolved = backend.resolve_device(device)
    except BackendUnavailable as exc:
        return None, str(exc)
    if not _wants_gpu(resolved):
        return None, "no accelerator is usable (only the CPU)"
    return resolved, None


def resolve_threads(threads: int | str | None) -> int | None:
    """The config's ``threads`` as a count (None: leave the libraries' defaults).

    ``auto``: the cores the 1-minute load average leaves free, at least one; None when
    the machine is idle enough for all of them. Measured (benchmarks/NOTES.md): on a
    busy machine one BLAS thread is 2-8x faster than two, since a pool whose thread is
    descheduled spin-waits; on a quiet one all cores are a little faster."""
    if threads != "auto":
        return threads  # type: ignore[return-value]
    cores = os.cpu_count() or 1
    try:
        busy = math.floor(os.getloadavg()[0] + 0.5)
    except (OSError, AttributeError):  # no load average on this platform
        return None
    free = max(1, cores - busy)
    return None if free >= cores else free


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """At most ``threads`` threads in the native pools (BLAS, OpenMP: threadpoolctl) and in
    Numba's parallel kernels while the block runs, the previous limits restored afterwards;
    None leaves every library at its own default."""
    if threads is None:
        yield
        return
    numba = sys.modules.get("numba")  # only when a fused kernel loaded it
    before = numba.get_num_threads() if numba is not None else None
    with _controller().limit(limits=threads):
        if numba is not None:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            if numba is not None:
                numba.set_num_threads(before)


_CONTROLLER: tuple[int, Any] | None = None


def _controller() -> Any:
    """threadpoolctl's view of the native pools loaded, rebuilt only when modules were
    imported since (building it scans every loaded library, ~2.5 ms; applying a limit
    through it takes ~0.01 ms, so a limit per epoch or per timed case costs nothing)."""
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController

    key = len(sys.modules)
    if _CONTROLLER is None or _CONTROLLER[0] != key:
        _CONTROLLER = (key, ThreadpoolController())
    return _CONTROLLER[1]


# --- what `smx info` reports -------------------------------------------------------------


def cpu_info() -> dict[str, Any]:
    """CPU model and core count, and the BLAS libraries NumPy uses (via threadpoolctl)."""
    blas = [{"library": p["internal_api"], "version": p["version"], "threads": p["num_threads"],
             "architecture": p["architecture"]} for p in sysinfo.blas_pools()]
    return {"model": sysinfo.cpu_model(), "cores": sysinfo.cores(), "blas": blas}


def backend_report(plugins) -> list[dict[str, Any]]:
    """Each backend: usable or why not, its devices, and (GPUs) each device's details."""
    out = []
    for reg in plugins.registrations("backend"):
        backend: Backend = reg.record
        reason = backend.unavailable_reason()
        entry: dict[str, Any] = {"name": backend.name, "gpu": backend.is_gpu,
                                 "usable": reason is None, "reason": reason, "devices": []}
        listed = backend.cheap_report() if reason is None else None
        if listed is not None:  # known without importing the library (no accelerator here)
            entry.update(listed)
        elif reason is None:
            try:
                entry["devices"] = backend.devices()
                if details := backend.device_info():
                    entry["device_info"] = details
                entry["versions"] = backend.versions()
            except Exception as exc:  # a backend that passed its probe but fails here
                entry.update(usable=False, reason=f"{type(exc).__name__}: {exc}")
        if entry["usable"] and backend.is_gpu:  # engines that run on the CPU or an accelerator
            entry["gpu"] = any(_wants_gpu(d) for d in entry["devices"])
        out.append(entry)
    return out
