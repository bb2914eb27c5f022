"""Run callbacks: the plugin kind, smx's own sinks (MLflow, TensorBoard), and the runner's
dispatch to the callbacks a config lists.

A callback is called between epochs on the host, with records smx has already read
(the epoch's metrics.jsonl line, summary.json): it adds no device read to the loop.
Each sink imports its library only when a config uses it; a missing library is one
error line naming the extra to install.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from smx.errors import PluginError
from smx.hookspecs import hookimpl
from smx.types import Callback, CallbackSpec, RunInfo

HOOKS = ("on_run_start", "on_epoch_end", "on_checkpoint", "on_run_end")


def require(module: str, extra: str, what: str) -> Any:
    """``module`` imported, or one error line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PluginError(f"the {what} callback needs {module.split('.')[0]}, which is not "
                          f"installed ({exc}); pip install 'smx[{extra}]'") from None


@hookimpl
def smx_callbacks() -> Iterable[CallbackSpec]:
    from smx.callbacks.mlflow_sink import MLFLOW
    from smx.callbacks.tensorboard_sink import TENSORBOARD

    yield MLFLOW
    yield TENSORBOARD


class RunCallbacks:
    """The callbacks of one run, built from the config's ``callbacks:`` entries before the
    run folder exists. Each hook gets its own copy of the record, so no callback can
    change what another one (or metrics.jsonl) sees; a callback that raises is one error
    naming it and the hook."""

    def __init__(self, entries: list[Any], plugins: Any) -> None:
        self.items: list[tuple[str, Callback]] = []
        for i, entry in enumerate(entries):
            spec: CallbackSpec = plugins.get("callback", entry.name, where=f"callbacks.{i}.name")
            params = spec.params.model_validate(entry.params()).model_dump()
            try:
                self.items.append((f"callbacks.{i} ({entry.name})", spec.factory(**params)))
            except PluginError as exc:
                raise PluginError(str(exc), where=f"callbacks.{i}") from None
        self.ended = False

    def _call(self, hook: str, *args: Any) -> None:
        for where, callback in self.items:
            method = getattr(callback, hook, None)
            if method is None:
                continue
            try:
                method(*copy.deepcopy(args))
            except Exception as exc:
                raise PluginError(f"{hook} raised {type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:300]}", where=where) from exc

    def run_start(self, run: RunInfo) -> None:
        self._call("on_run_start", run)

    def epoch_end(self, record: dict[str, Any]) -> None:
        self._call("on_epoch_end", record)

    def checkpoint(self, path: Path, epoch: int) -> None:
        self._call("on_checkpoint", path, epoch)

    def run_end(self, summary: dict[str, Any]) -> None:
        """Once per run, whatever ended it."""
        if not self.ended:
            self.ended = True
            self._call("on_run_end", summary)


__all__ = ["HOOKS", "RunCallbacks", "require", "smx_callbacks"]
