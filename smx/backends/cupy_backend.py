"""CuPy on NVIDIA GPUs. Imported only when used; says exactly why when it cannot be."""

from __future__ import annotations

from functools import cache
from typing import Any

import smx
from smx.model import is_sparse
from smx.types import Array, Backend, Block

INSTALL_HINT = "pip install 'smx[cuda12]' (CUDA 12) or 'smx[cuda13]' (CUDA 13)"


def _import() -> Any:
    """Import CuPy (a seam: tests replace it to simulate every way CuPy can be missing)."""
    import cupy

    return cupy


@cache
def _probe() -> tuple[Any, str | None]:
    """(cupy module or None, reason it is unusable or None). Cached: probing CUDA is slow."""
    try:
        cupy = _import()
    except ModuleNotFoundError as exc:
        if exc.name in (None, "cupy"):
            return None, f"CuPy is not installed; {INSTALL_HINT}"
        # CuPy is there but one of its own dependencies is not
        return None, f"CuPy failed to import: {type(exc).__name__}: {exc}"
    except Exception as exc:  # CuPy present but broken (wrong CUDA wheel, missing libs)
        return None, f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        text = str(exc).strip()
        if "NoDevice" in text or "no CUDA-capable device" in text:
            return None, f"no CUDA device is visible ({text}); check nvidia-smi and " \
                         "CUDA_VISIBLE_DEVICES"
        if "driver" in text.lower():
            return None, f"no usable CUDA driver ({text}); install or update the NVIDIA driver"
        return None, f"CUDA is not usable: {type(exc).__name__}: {text}"
    if count == 0:
        return None, "no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    return cupy, None


class CupyBackend(Backend):
    name = "cupy"
    description = "CuPy on NVIDIA GPUs (cuda:0..N)"
    is_gpu = True
    deterministic = False  # cuBLAS reductions may differ run to run
    accepts_sparse = True  # cupyx.scipy.sparse CSR; scipy.sparse is moved to the GPU as one

    def unavailable_reason(self) -> str | None:
        return _probe()[1]

    def _cupy(self) -> Any:
        cupy, reason = _probe()
        if cupy is None:
            from smx.errors import BackendUnavailable

            raise BackendUnavailable(f"backend 'cupy' is unavailable: {reason}")
        return cupy

    def namespace(self) -> Any:
        self._cupy()
        import array_api_compat.cupy as xp

        return xp

    def devices(self) -> list[str]:
        cupy = self._cupy()
        return [f"cuda:{i}" for i in range(cupy.cuda.runtime.getDeviceCount())]

    def resolve_device(self, device: str) -> str:
        return super().resolve_device("auto" if device == "cuda" else device)

    @staticmethod
    def _index(device: str) -> int:
        return int(device.split(":", 1)[1]) if ":" in device else 0

    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Array:
        import numpy as np

        cupy = self._cupy()
        # make it the current device too: the run's kernels then launch where its data lives
        cupy.cuda.Device(self._index(device)).use()
        if isinstance(array, cupy.ndarray):  # already CuPy's (the estimator's input)
            return cupy.asarray(array, dtype=dtype)
        return cupy.asarray(np.asarray(array, dtype=dtype))

    def place(self, X: Any, y: Any, w: Any | None, device: str, dtype: str) -> Block:
        """Sparse X (cupyx.scipy.sparse, or scipy.sparse: copied to the device once) stays
        sparse, as CSR in ``dtype`` (rows gather fast); cuSPARSE then runs ``X @ W`` and
        ``Xᵀ G`` in the portable core, so text-sized data is never densified."""
        if not is_sparse(X):
            return super().place(X, y, w, device, dtype)
        self._cupy().cuda.Device(self._index(device)).use()
        from cupyx.scipy import sparse as csp

        return Block(csp.csr_matrix(X, dtype=dtype), self.from_host(y, device, "int64"),
                     None if w is None else self.from_host(w, device, dtype))

    def batch(self, data: Block, idx: Array) -> Block:
        if not is_sparse(data.X):
            return super().batch(data, idx)
        xp = self.namespace()
        return Block(data.X[idx], xp.take(data.y, idx, axis=0),  # CSR rows: a gather kernel
                     None if data.w is None else xp.take(data.w, idx, axis=0))

    def to_host(self, array: Array) -> Any:
        return self._cupy().asnumpy(array)

    def synchronize(self, device: str) -> None:
        cupy = self._cupy()
        with cupy.cuda.Device(self._index(device)):
            cupy.cuda.get_current_stream().synchronize()

    def release(self, device: str) -> None:
        cupy = self._cupy()
        self.synchronize(device)
        # the memory pool is per device: free the blocks of this run's device, not device 0's
        with cupy.cuda.Device(self._index(device)):
            cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()

    def versions(self) -> dict[str, str]:
        cupy = self._cupy()
        rt = cupy.cuda.runtime
        return {
            "cupy": cupy.__version__,
            "cuda_runtime": _cuda_version(rt.runtimeGetVersion()),
            "cuda_driver": _cuda_version(rt.driverGetVersion()),
        }

    def device_info(self) -> list[dict[str, Any]]:
        """Name, memory and driver of each GPU, for `smx info`."""
        cupy = self._cupy()
        rt = cupy.cuda.runtime
        driver = f"CUDA {_cuda_version(rt.driverGetVersion())}"
        if kernel := _nvidia_kernel_driver():
            driver = f"{kernel} ({driver})"
        out = []
        for i in range(rt.getDeviceCount()):
            props = rt.getDeviceProperties(i)
            name = props["name"]
            out.append(
                {
                    "device": f"cuda:{i}",
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
                    "compute_capability": f"{props['major']}.{props['minor']}",
                    "driver": driver,
                }
            )
        return out


def _cuda_version(v: int) -> str:
    """CUDA's integer versions: 12040 -> '12.4'."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def _nvidia_kernel_driver(path: str = "/proc/driver/nvidia/version") -> str | None:
    """The NVIDIA driver's own version (e.g. 550.54.15), where Linux exposes it."""
    import re
    from pathlib import Path

    try:
        text = Path(path).read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]+)", text)
    return found.group(1) if found else None


@smx.hookimpl
def smx_backends():
    yield CupyBackend()
