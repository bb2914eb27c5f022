"""``backend: chunked``: NumPy, with the objective evaluated over fixed chunks of rows.

An example engine, and the smallest one that overrides an engine hook. smx's objective
is a sum over rows (:mod:`smx.objective`): any block of rows yields a ``Partial`` (the
loss summed over its rows, their weight, the gradient sums) and partials add. This
engine's :meth:`ChunkedBackend.partial` takes a block (a batch, or the whole training set
for a full-batch solver or an evaluation) ``chunk_rows`` rows at a time and adds the
partials, so the temporaries of one evaluation (logits, gradients: rows x classes) stay
the size of a chunk. It is the shape of an out-of-core or sharded engine (Dask's maps the
same function over its chunks on a cluster), with none of the machinery.

What an engine plugin follows (``smx.Backend``, ``smx/types.py``; docs/plugins.md):

* The abstract methods say where arrays live: ``namespace`` (the Array API namespace
  the core runs on), ``devices``, ``from_host`` and ``to_host`` (the only way results
  leave the device). The engine hooks (``place``, ``batch``, ``partial``, ``compile``,
  ``kernel``...) default to "one array, gathered batches, nothing compiled"; override
  what differs.
* Options come from the config's ``backend_options`` section, validated by the
  ``options`` model (unknown keys are errors) and handed to ``configure``.
* The library is imported inside the methods, never at module level: listing plugins
  must not pay for a library nobody uses (NumPy is smx's own dependency, but the
  rule costs nothing).

``tests/test_contract.py`` holds it to smx's conformance kit (``smx.testing``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import Field

import smx
from smx.types import Block

try:
    __version__ = version("smx-chunked")
except PackageNotFoundError:  # imported from a source checkout that was never installed
    __version__ = "0.0.0"


class ChunkedOptions(smx.PluginParams):
    """The ``backend_options:`` keys of ``backend: chunked``."""

    chunk_rows: int = Field(4096, ge=1, description="rows per chunk: each chunk's partial "
                            "sums are computed on their own, then added")


class ChunkedBackend(smx.Backend):
    name = "chunked"
    description = "NumPy, the objective summed over fixed chunks of rows (an example engine)"
    options = ChunkedOptions
    deterministic = True  # the chunks and the order of their sums depend only on the rows

    def __init__(self) -> None:
        self.settings = ChunkedOptions()

    def configure(self, options: smx.PluginParams) -> None:
        assert isinstance(options, ChunkedOptions)
        self.settings = options

    def unavailable_reason(self) -> str | None:
        return None  # NumPy is installed with smx

    def namespace(self) -> Any:
        import array_api_compat.numpy as xp

        return xp

    def devices(self) -> list[str]:
        return ["cpu"]

    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Any:
        import numpy as np

        return np.asarray(array, dtype=dtype, order="C")

    def to_host(self, array: Any) -> Any:
        import numpy as np

        return np.asarray(array)

    def partial(self, fn: Callable[[Block], Any], data: Block) -> Any:
        """``fn`` over consecutive chunks of ``chunk_rows`` rows, the partials added in
        order (the last chunk may be short)."""
        step, n = self.settings.chunk_rows, data.n
        if n <= step:
            return fn(data)
        total = None
        for start in range(0, n, step):
            rows = slice(start, start + step)
            part = fn(Block(data.X[rows], data.y[rows], None if data.w is None else data.w[rows]))
            total = part if total is None else total + part
        return total

    def versions(self) -> dict[str, str]:
        import numpy as np

        return {"numpy": np.__version__}


@smx.hookimpl
def smx_backends():
    """The hook smx calls: yield one ``Backend`` instance per engine this plugin adds."""
    yield ChunkedBackend()
