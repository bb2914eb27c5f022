"""The callback rules: a callback plugin follows a whole ``smx run`` and leaves it whole.

The rules build the callback from its params (the defaults, or those
:func:`~smx.testing.with_params` gives) and run real, short runs through smx's runner
with the callback listed in the config's ``callbacks:``, in a temporary folder that is
also the working directory for the run (a sink's default store, such as MLflow's
``mlruns/``, lands there; the working directory is the process's, so these rules are not
for threads running beside them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from smx.testing.contract import Kind, fail, forbids_unknown_keys
from smx.types import CallbackSpec

KIND = Kind("callback", accepts=lambda obj: isinstance(obj, CallbackSpec),
            label=lambda spec: spec.name)
#: the name the callback under test is registered as (its own may be a built-in's)
ALIAS = "smx-testing-callback"
HOOKS = ("on_run_start", "on_epoch_end", "on_checkpoint", "on_run_end")
EPOCHS = 3


@KIND.rule("params-forbid-unknown-keys", gated=False)
def params_forbid_unknown(spec: CallbackSpec, params: Mapping[str, Any]) -> None:
    """The params model refuses a key it does not define: a misspelt option in a config's
    `callbacks:` entry must be an error, not silently ignored."""
    forbids_unknown_keys(spec.params, params)


@KIND.rule("builds-a-callback")
def builds(spec: CallbackSpec, params: Mapping[str, Any]) -> None:
    """`factory(**options)` returns an object with at least one of `on_run_start`,
    `on_epoch_end`, `on_checkpoint`, `on_run_end`, each callable: smx calls those it has."""
    obj = spec.factory(**spec.params.model_validate(dict(params)).model_dump())
    found = [h for h in HOOKS if getattr(obj, h, None) is not None]
    if not found:
        fail("the factory's result", expected=f"one of {', '.join(HOOKS)}",
             got=type(obj).__name__)
    for hook in found:
        if not callable(getattr(obj, hook)):
            fail(hook, expected="a method", got=type(getattr(obj, hook)).__name__)


@contextlib.contextmanager
def _in_temp_folder() -> Iterator[Path]:
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="smx-testing-callback-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def _run(spec: CallbackSpec, params: Mapping[str, Any], folder: Path,
         errors: list[str] | None = None, **config: Any) -> Any:
    """A real run of iris on NumPy with the callback (and nothing else) listed; with
    ``errors``, what its ``on_run_end`` raises is kept there (smx shows the run's own error
    instead)."""
    from smx.config import load_config
    from smx.hookspecs import hookimpl
    from smx.plugins import Plugins
    from smx.runner import run

    def factory(**options: Any) -> Any:
        obj = spec.factory(**options)
        end = getattr(obj, "on_run_end", None)
        if errors is not None and end is not None:
            def on_run_end(summary: dict[str, Any]) -> None:
                try:
                    end(summary)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    raise

            obj.on_run_end = on_run_end  # type: ignore[method-assign]
        return obj

    under_test = dataclasses.replace(spec, name=ALIAS, factory=factory)

    class Registered:
        @hookimpl
        def smx_callbacks(self) -> list[CallbackSpec]:
            return [under_test]

    plugins = Plugins(entry_points=False)
    plugins.register(Registered(), name=ALIAS)
    cfg = load_config({"data": {"name": "iris"}, "backend": "numpy", "device": "cpu",
                       "epochs": EPOCHS, "threads": 1, "output": str(folder),
                       "callbacks": [{"name": ALIAS, **params}], **config}, plugins=plugins)
    return run(cfg, plugins=plugins, progress=False)


@KIND.rule("follows-a-whole-run")
def whole_run(spec: CallbackSpec, params: Mapping[str, Any]) -> None:
    """A 3-epoch run with the callback listed completes with every run file written: no
    hook raises at run start, at each epoch's end and checkpoint, or at run end."""
    with _in_temp_folder() as tmp:
        outcome = _run(spec, params, tmp / "run")
        if outcome.summary["status"] != "completed":
            fail("the run's status", expected="completed", got=outcome.summary["status"])
        lines = (tmp / "run" / "metrics.jsonl").read_text().splitlines()
        if len(lines) != EPOCHS:
            fail("metrics.jsonl", expected=f"{EPOCHS} lines", got=len(lines))


@KIND.rule("keeps-the-run-folder-replaceable")
def replaceable(spec: CallbackSpec, params: Mapping[str, Any]) -> None:
    """After the run, the run folder holds only files smx counts as its own, so
    `smx run --overwrite` can still replace it: a callback writes elsewhere (its own
    store, a folder beside the runs), or only the files smx knows (TensorBoard's event
    files)."""
    from smx.errors import RunFolderError
    from smx.run_folder import prepare_folder

    with _in_temp_folder() as tmp:
        _run(spec, params, tmp / "run")
        try:
            prepare_folder(tmp / "run", overwrite=True).release()
        except RunFolderError as exc:
            fail("replacing the run folder (--overwrite)", expected="allowed", got=str(exc))


@KIND.rule("survives-a-diverging-run")
def diverging(spec: CallbackSpec, params: Mapping[str, Any]) -> None:
    """A run that diverges (a learning rate of 1e30) calls `on_run_end` with a summary whose
    `status` is `diverged` and which has no final metrics; the callback takes it without
    raising (an MLflow run is then marked failed, not left running)."""
    from smx.errors import DivergenceError

    errors: list[str] = []
    with _in_temp_folder() as tmp:
        try:
            _run(spec, params, tmp / "run", errors, optimizer={"name": "sgd", "lr": 1e30})
        except DivergenceError:
            pass
        else:
            fail("a run with lr=1e30", expected="smx's DivergenceError", got="no error")
    if errors:
        fail("on_run_end of a diverged run", expected="no error", got=errors[0])
