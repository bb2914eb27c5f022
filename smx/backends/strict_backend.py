"""``array_api_strict``: the conformance backend.

It implements the standard and nothing more, so core code that runs here
uses no library-specific behaviour. Its simulated devices (``device1``,
``device2``) let tests prove data stays where it was put.
"""

from __future__ import annotations

from typing import Any

import smx
from smx.types import Array, Backend


class StrictBackend(Backend):
    name = "array-api-strict"
    description = "array_api_strict, the Array API conformance library (CPU, simulated devices)"

    def unavailable_reason(self) -> str | None:
        try:
            import array_api_strict  # noqa: F401
        except ImportError as exc:
            return f"array-api-strict is not installed ({exc}); pip install array-api-strict"
        return None

    def namespace(self) -> Any:
        import array_api_strict as xp

        return xp

    def devices(self) -> list[str]:
        return ["cpu", "device1", "device2"]

    def _device(self, device: str) -> Any:
        xp = self.namespace()
        return xp.Device("CPU_DEVICE" if device == "cpu" else device)

    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Array:
        import numpy as np

        xp = self.namespace()
        host = np.asarray(array, dtype=dtype)
        return xp.asarray(host, device=self._device(device))

    def to_host(self, array: Array) -> Any:
        import numpy as np

        xp = self.namespace()
        # np.from_dlpack refuses non-CPU devices: go through the CPU device explicitly
        return np.from_dlpack(xp.asarray(array, device=xp.Device("CPU_DEVICE"), copy=True))

    def versions(self) -> dict[str, str]:
        import array_api_strict

        return {"array-api-strict": array_api_strict.__version__}


@smx.hookimpl
def smx_backends():
    yield StrictBackend()
