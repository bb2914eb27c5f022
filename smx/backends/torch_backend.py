"""PyTorch as an engine: CPU, NVIDIA/AMD GPUs (``cuda:N``) and Apple's ``mps``.

torch is imported only inside the methods that need it: listing plugins, ``smx info``
and ``backend: auto`` on a machine without an accelerator never import it (they ask
:mod:`smx.backends.probe`, which reads the installed files instead).

The step is the core's closed-form gradient, so no autograd graph is ever built;
``compile`` still wraps it in ``torch.no_grad()`` so a tensor that did require grad
(a user's, through the estimator) cannot make it record one. With
``backend_options: {compile: true}`` the step also goes through ``torch.compile``, whose
Inductor cache outlives the run: in a run folder every run would compile afresh (most of
a first run's time) and keep its own ~150 MB, so smx leaves it in Inductor's own folder
and names it in the run's ``summary.json`` (:func:`compile_cache`).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

from pydantic import Field

import smx
from smx.backends import probe
from smx.types import Array, Backend, Block, PluginParams

#: from PyPI alone, torch==2.13.0 on Linux is the CUDA build (15 nvidia-* packages,
#: cuda-toolkit, triton); the CPU build comes from PyTorch's own index, and an installed
#: torch==2.13.0+cpu satisfies the extra's pin
INSTALL_HINT = ("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu "
                "(the CPU build; from PyPI, torch on Linux is the CUDA build with its nvidia "
                "packages), then pip install 'smx[torch]'")


class TorchOptions(PluginParams):
    compile: bool = Field(
        False, description="torch.compile the training step (Inductor; needs a C compiler on "
                           "CPU; the first steps pay the compilation; its cache folder is "
                           "named in summary.json)")


def compile_cache() -> dict[str, str]:
    """Where Inductor keeps what ``torch.compile`` builds: its cache folder
    (``TORCHINDUCTOR_CACHE_DIR``, by default ``<tempdir>/torchinductor_<user>``) and the
    precompiled headers (~150 MB on the CPU), which torch 2.13 keeps under the default
    folder whatever ``TORCHINDUCTOR_CACHE_DIR`` says (only ``TMPDIR`` moves them)."""
    default = _inductor_default_dir()
    return {"cache_dir": os.path.abspath(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default),
            "precompiled_headers": os.path.join(default, "precompiled_headers")}


def _inductor_default_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another layout: the default Inductor documents
        import getpass
        import tempfile

        return os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
    return default_cache_dir()


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch tensors (cpu, cuda:0..N, mps)"
    #: may run on accelerators; `backend: auto` asks accelerator_hint() before importing torch
    is_gpu = True
    deterministic = False  # CUDA reductions (atomics) are not bitwise reproducible
    options = TorchOptions

    def __init__(self) -> None:
        self._options = TorchOptions()

    def configure(self, options: PluginParams) -> None:
        self._options = options  # type: ignore[assignment]

    def unavailable_reason(self) -> str | None:
        if not probe.installed("torch"):
            return f"PyTorch is not installed; {INSTALL_HINT}"
        if not probe.installed("array_api_compat.torch"):
            return "array-api-compat lacks its torch wrapper; pip install -U array-api-compat"
        return None

    def accelerator_hint(self) -> str | None:
        """None when an accelerator may be usable, else why not, decided without importing
        torch: a CPU-only wheel or no GPU driver means ``backend: auto`` skips it."""
        if (reason := self.unavailable_reason()) is not None:
            return reason
        if probe.apple_silicon():
            return None
        folder = probe.package_dir("torch")
        lib = folder / "lib" if folder is not None else None
        has_cuda = lib is not None and any(lib.glob("libtorch_cuda*"))
        has_hip = lib is not None and any(lib.glob("libtorch_hip*"))
        if not (has_cuda or has_hip):
            return (f"the installed PyTorch ({probe.version('torch')}) is a CPU-only build; "
                    "for GPUs install a CUDA or ROCm wheel from pytorch.org")
        if not ((has_cuda and probe.nvidia_driver()) or (has_hip and probe.rocm_driver())):
            return "PyTorch has GPU support but no GPU driver is loaded (check nvidia-smi)"
        return None

    def _torch(self) -> Any:
        reason = self.unavailable_reason()
        if reason is not None:
            from smx.errors import BackendUnavailable

            raise BackendUnavailable(f"backend 'torch' is unavailable: {reason}")
        import torch

        return torch

    def namespace(self) -> Any:
        self._torch()
        import array_api_compat.torch as xp

        return xp

    def devices(self) -> list[str]:
        """Accelerators first (``backend: torch`` with ``device: auto`` takes the GPU)."""
        torch = self._torch()
        out = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            out.append("mps")
        return [*out, "cpu"]

    def resolve_device(self, device: str) -> str:
        if device in ("cuda", "gpu"):
            cuda = [d for d in self.devices() if d.startswith("cuda")]
            device = cuda[0] if cuda else "cuda:0"
        try:
            return super().resolve_device(device)
        except Exception as exc:
            raise probe.no_accelerator(self, device, exc) from None

    def cheap_report(self) -> dict[str, Any] | None:
        return probe.cheap_report(self, "torch", "torch")

    def place(self, X: Any, y: Any, w: Any | None, device: str, dtype: str) -> Block:
        if device == "mps" and dtype == "float64":
            from smx.errors import ConfigError

            raise ConfigError("PyTorch's mps device has no float64; use dtype: float32",
                              where="dtype")
        return super().place(X, y, w, device, dtype)

    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Array:
        import numpy as np

        torch = self._torch()
        if isinstance(array, torch.Tensor):  # already PyTorch's (the estimator's input)
            return array.to(device=device, dtype=None if dtype is None else getattr(torch, dtype))
        host = np.asarray(array, dtype=dtype)
        if not host.flags.writeable:  # torch warns on (and could write to) read-only memory
            host = host.copy()
        # on the CPU this shares the host array's memory: no copy of the data
        return torch.asarray(host, device=device)

    def to_host(self, array: Array) -> Any:
        import numpy as np

        torch = self._torch()
        if not isinstance(array, torch.Tensor):
            return np.asarray(array)
        return array.detach().cpu().numpy()

    def kernel(self, loss: Any) -> Any:
        from smx.backends import torch_kernels
        from smx.losses import CROSS_ENTROPY_KEY

        if getattr(loss, "kernel_key", None) == CROSS_ENTROPY_KEY:
            return torch_kernels.cross_entropy_partial
        return None

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        torch = self._torch()
        inner = torch.compile(fn) if self._options.compile else fn

        @functools.wraps(fn)
        def step(*args: Any) -> Any:
            with torch.no_grad(), warnings.catch_warnings():
                # Dynamo notes that it traces through array-api-compat's cached namespace
                # lookups; they are pure functions of the argument types, so that is exact
                warnings.filterwarnings("ignore", message="Dynamo detected a call to a")
                return inner(*args)

        return step

    def synchronize(self, device: str) -> None:
        torch = self._torch()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        elif device == "mps":
            torch.mps.synchronize()

    def release(self, device: str) -> None:
        torch = self._torch()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        elif device == "mps":
            torch.mps.empty_cache()

    def run_report(self) -> dict[str, Any]:
        """With ``compile: true``: where its cache is (a run pays ~150 MB there once)."""
        return {"torch_compile": compile_cache()} if self._options.compile else {}

    def versions(self) -> dict[str, str]:
        torch = self._torch()
        out = {"torch": torch.__version__}
        if torch.version.cuda:
            out["cuda_runtime"] = torch.version.cuda
        return out


@smx.hookimpl
def smx_backends():
    yield TorchBackend()
