"""Cheap questions about an optional library, answered without importing it.

Importing PyTorch or JAX takes seconds; ``smx plugins``, ``smx info`` and
``backend: auto`` must not pay that just to list an engine. These helpers read
what the installer left on disk (``importlib.util.find_spec``, distribution
metadata, driver files) instead.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (or its parents' code)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: hidden on purpose (tests do this)
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, from its metadata."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def any_dist(*prefixes: str) -> str | None:
    """The first installed distribution whose normalised name starts with one of ``prefixes``."""
    wanted = tuple(p.replace("_", "-").lower() for p in prefixes)
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").replace("_", "-").lower()
        if name.startswith(wanted):
            return name
    return None


def nvidia_driver() -> bool:
    """An NVIDIA kernel driver is loaded (Linux) or Windows' NVIDIA library is present."""
    return Path("/proc/driver/nvidia/version").exists() or Path(
        "C:/Windows/System32/nvcuda.dll").exists()


def rocm_driver() -> bool:
    return Path("/dev/kfd").exists()


def apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def no_accelerator(backend: Any, device: str, exc: Exception) -> Exception:
    """The error for an accelerator ``device`` an engine lacks, with the engine's reason
    (a CPU-only wheel, no driver) when it has one."""
    from smx.errors import BackendUnavailable

    hint = backend.accelerator_hint() if device.split(":")[0] != "cpu" else None
    if hint is None:
        return exc
    return BackendUnavailable(f"backend {backend.name!r} has no device {device!r}: {hint}",
                              where="device")


def cheap_report(backend: Any, module: str, dist: str) -> dict[str, Any] | None:
    """``smx info``'s entry for an engine that has no accelerator here, found without
    importing ``module`` (None: import it and ask, as an accelerator may be there)."""
    if module in sys.modules or (hint := backend.accelerator_hint()) is None:
        return None
    return {"devices": ["cpu"], "versions": {dist: version(dist) or "?"}, "note": hint}
