"""What machine and libraries smx runs on: one source for `smx info`, run summaries and
`smx bench`, so the three cannot describe the same machine differently.

Every function only inspects; none changes a setting, and none fails: a figure that cannot
be read is reported as unknown (None, or the best fallback) rather than raised.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: environment variables that change how NumPy's BLAS runs (threads, kernel choice)
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS")

#: distribution name -> module, for the libraries a report may name when they are installed
OPTIONAL_LIBRARIES = {"scikit-learn": "sklearn", "array-api-strict": "array_api_strict",
                      "torch": "torch", "cupy": "cupy"}


def cpu_model() -> str:
    """The CPU's marketing name (x86 ``model name``, ARM ``Hardware``), else the platform's."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cores() -> int:
    """Logical cores (what the load average is compared with)."""
    return os.cpu_count() or 1


def machine() -> str:
    """Host name, OS and architecture, as one line."""
    return f"{platform.node()} ({platform.system()} {platform.release()}, {platform.machine()})"


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, or None where the OS has none."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def blas_pools() -> list[dict[str, Any]]:
    """The BLAS libraries NumPy loaded, as threadpoolctl sees them (version, kernel, threads).

    NumPy is imported first so that its BLAS is loaded and visible; an empty list means
    threadpoolctl is missing or could not inspect the process.
    """
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer",
            "filepath")
    with contextlib.suppress(Exception):  # threadpoolctl only inspects; never fatal
        import numpy  # noqa: F401
        from threadpoolctl import threadpool_info

        return [{k: i.get(k) for k in keep} for i in threadpool_info()
                if i.get("user_api") == "blas"]
    return []


def blas_threads() -> int:
    """How many threads NumPy's BLAS uses by default (the largest pool; 1 when unknown)."""
    return max((p["num_threads"] or 1 for p in blas_pools()), default=1)


def blas_env() -> dict[str, str]:
    """The BLAS-related environment variables that are set (see :data:`BLAS_ENV`)."""
    return {k: os.environ[k] for k in BLAS_ENV if k in os.environ}


def library_versions(optional: Iterable[str] = (), backend: Any = None) -> dict[str, str]:
    """Python, smx, NumPy and array-api-compat, then each ``optional`` library (a key of
    :data:`OPTIONAL_LIBRARIES`) that imports, then ``backend.versions()`` when given.

    Optional libraries are imported only when asked for: a run's summary must not pay
    for importing PyTorch or scikit-learn.
    """
    import array_api_compat
    import numpy as np

    import smx

    out = {"python": platform.python_version(), "smx": smx.__version__, "numpy": np.__version__,
           "array-api-compat": array_api_compat.__version__}
    for name in optional:
        try:
            module = __import__(OPTIONAL_LIBRARIES[name])
            out[name] = str(module.__version__)
        except Exception:  # not installed, or broken (a CuPy without its CUDA libraries)
            continue
    if backend is not None:
        out.update(backend.versions())
    return out
