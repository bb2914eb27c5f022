"""Catching implicit host reads: ``float(x)``, ``np.asarray(x)``, ``if x:`` on a device array.

Each is a device-to-host transfer that no ``to_host`` call shows (on a GPU a stall, under
a compiler an error, on array-api-strict a NumPy function quietly run). Where an array
type is a Python class, its conversion methods are wrapped for the duration of a
``with`` block and every call outside an allowed region (the backend's own ``to_host``)
is recorded. NumPy's ``ndarray`` (a C type) cannot be wrapped and is left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

#: the conversions that read an array on the host without saying so
IMPLICIT = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__",
            "__dlpack__", "__iter__")


class ImplicitReads:
    """Records implicit conversions of arrays of the watched types (``found``), except
    inside :meth:`allowed`; ``instrumented`` lists what could be wrapped."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.instrumented: list[str] = []
        self._allowed = 0

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        self._allowed += 1
        try:
            yield
        finally:
            self._allowed -= 1

    @contextlib.contextmanager
    def watching(self, types: Iterable[type]) -> Iterator[ImplicitReads]:
        patched: list[tuple[type, str, Any]] = []
        try:
            for kind in dict.fromkeys(types):
                for name in IMPLICIT:
                    if self._wrap(kind, name, patched):
                        self.instrumented.append(f"{kind.__name__}.{name}")
            yield self
        finally:
            for kind, name, own in reversed(patched):
                if own is None:
                    delattr(kind, name)
                else:
                    setattr(kind, name, own)

    def _wrap(self, kind: type, name: str, patched: list[tuple[type, str, Any]]) -> bool:
        inherited = getattr(kind, name, None)
        if inherited is None or kind.__module__ in ("builtins", "numpy"):
            return False
        reads = self

        def guard(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if reads._allowed == 0:
                reads.found.append(f"{type(obj).__name__}.{name}")
            return inherited(obj, *args, **kwargs)

        own = kind.__dict__.get(name)
        try:
            setattr(kind, name, guard)
        except (TypeError, AttributeError):  # an extension type: cannot be wrapped
            return False
        patched.append((kind, name, own))
        return True
