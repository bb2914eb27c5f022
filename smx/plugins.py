"""The plugin manager: built-ins and installed entry points, registered the same way.

Built-ins are listed in smx's own ``[project.entry-points.smx]``; ``BUILTINS``
repeats them so a checkout that was never installed still works.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from typing import Any

import pluggy

from smx import __version__, hookspecs
from smx.errors import BackendUnavailable, PluginError
from smx.types import Backend, Registration

GROUP = "smx"
BUILTINS: dict[str, str] = {
    "numpy": "smx.backends.numpy_backend",
    "array-api-strict": "smx.backends.strict_backend",
    "cupy": "smx.backends.cupy_backend",
    "dask": "smx.backends.dask_backend",
    "torch": "smx.backends.torch_backend",
    "jax": "smx.backends.jax_backend",
    "sgd": "smx.optimizers.sgd",
    "adam": "smx.optimizers.adam",
    "adamw": "smx.optimizers.adamw",
    "rmsprop": "smx.optimizers.rmsprop",
    "adagrad": "smx.optimizers.adagrad",
    "lbfgs": "smx.optimizers.lbfgs",
    "losses": "smx.losses",
    "schedules": "smx.schedules",
    "datasets": "smx.datasets.builtin",
    "callbacks": "smx.callbacks",
}
#: a config's ``optimizer.name`` picks a first-order optimizer or a full-batch solver
SEARCHED = {"optimizer": ("optimizer", "solver")}
#: kind -> hook name; the kinds are what `smx plugins` lists
KINDS = {
    "backend": "smx_backends",
    "optimizer": "smx_optimizers",
    "solver": "smx_solvers",
    "loss": "smx_losses",
    "schedule": "smx_schedules",
    "dataset": "smx_datasets",
    "callback": "smx_callbacks",
}


class Plugins:
    """Loads every plugin once and answers "give me the X called N"."""

    def __init__(self, *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.versions: dict[str, str] = {}  # plugin name -> "dist version"
        self.broken: list[tuple[str, str, str]] = []  # (plugin, dist, error)
        for name, module in BUILTINS.items():
            self._register(name, module, f"smx {__version__}")
        if entry_points:
            for ep in metadata.entry_points(group=GROUP):
                dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
                if ep.value in BUILTINS.values() or self.pm.has_plugin(ep.name):
                    continue  # smx's own entry points, already loaded from BUILTINS
                self._register(ep.name, ep.value, dist, entry_point=ep)
        self._records: dict[str, dict[str, Registration]] = {}
        self._collect_all()

    def _collect_all(self) -> None:
        for kind in KINDS:
            self._records[kind] = self._collect(kind)
        for kinds in SEARCHED.values():  # one name space across the kinds searched together
            owner: dict[str, Registration] = {}
            for kind in kinds:
                for name, reg in self._records[kind].items():
                    if name in owner:
                        raise PluginError(
                            f"{kinds[0]} {name!r} is registered twice, by plugin "
                            f"{owner[name].plugin!r} and by plugin {reg.plugin!r}; "
                            "uninstall one of them")
                    owner[name] = reg

    def _register(self, name: str, module: str, dist: str, entry_point: Any = None) -> None:
        try:
            obj = entry_point.load() if entry_point is not None else importlib.import_module(module)
        except Exception as exc:  # a broken plugin must not take the run down
            self.broken.append((name, dist, f"{type(exc).__name__}: {exc}"))
            print(
                f"smx: warning: plugin {name!r} ({dist}) failed to import and is skipped: "
                f"{type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            return
        self.pm.register(obj, name=name)
        self.versions[name] = dist

    def _collect(self, kind: str) -> dict[str, Registration]:
        found: dict[str, Registration] = {}
        for impl in getattr(self.pm.hook, KINDS[kind]).get_hookimpls():
            plugin = impl.plugin_name
            try:
                records: Iterable[Any] = list(impl.function() or ())
            except Exception as exc:
                self.broken.append((plugin, self.versions.get(plugin, "?"), repr(exc)))
                continue
            for record in records:
                if record.name in found:
                    other = found[record.name].plugin
                    raise PluginError(
                        f"{kind} {record.name!r} is registered twice, by plugin {other!r} "
                        f"and by plugin {plugin!r}; uninstall one of them"
                    )
                found[record.name] = Registration(
                    name=record.name,
                    record=record,
                    plugin=plugin,
                    version=self.versions.get(plugin, "?"),
                )
        return dict(sorted(found.items()))

    def register(self, obj: Any, name: str) -> None:
        """Add a plugin object at run time (tests, embedding applications), re-collecting all."""
        self.pm.register(obj, name=name)
        self.versions.setdefault(name, "(registered at run time)")
        self._collect_all()

    def names(self, kind: str) -> list[str]:
        return sorted(n for k in SEARCHED.get(kind, (kind,)) for n in self._records[k])

    def registrations(self, kind: str) -> list[Registration]:
        return list(self._records[kind].values())

    def get(self, kind: str, name: str, *, where: str | None = None) -> Any:
        for k in SEARCHED.get(kind, (kind,)):
            if name in self._records[k]:
                return self._records[k][name].record
        valid = ", ".join(self.names(kind)) or "(none installed)"
        hint = ""
        if self.broken:  # the name may live in a plugin that failed to load
            hint = "; failed to load (so not searched): " + ", ".join(
                f"plugin {plugin!r} ({dist}: {error})" for plugin, dist, error in self.broken)
        raise PluginError(f"unknown {kind} {name!r}; valid: {valid}{hint}", where=where)

    def backend(self, name: str, *, where: str | None = "backend") -> Backend:
        """A usable backend, or BackendUnavailable saying why it is not."""
        backend: Backend = self.get("backend", name, where=where)
        reason = backend.unavailable_reason()
        if reason:
            raise BackendUnavailable(f"backend {name!r} is unavailable: {reason}", where=where)
        return backend


@cache
def get_plugins() -> Plugins:
    """The process-wide manager (tests build their own with ``Plugins()``)."""
    return Plugins()
