"""Does a checkpoint's state fit the run about to continue from it? Checked whole, before
``--resume`` changes a byte of the run folder.

A checksum proves a checkpoint is the file smx wrote, not that it belongs to this run
(or that whoever wrote it was smx). The state is compared with the *template*: the
``state_dict()`` of a freshly built Trainer for the same config, so the check follows
whatever the Trainer and the optimizer plugin keep, without knowing their internals:

* ``params``: the same names, shapes and dtypes, finite values;
* ``opt_state``: the same structure as the optimizer's freshly initialised state (dict
  keys, tuple lengths, array shapes and dtypes); where the fresh state holds ``None`` or
  an empty list (L-BFGS history), any arrays must be shaped like the parameters;
* counters in range (``0 <= epoch <= epochs``, ``step = epoch × steps per epoch``), a
  valid RNG state, one history record per epoch, early-stopping state that fits.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

import numpy as np

from smx.errors import ModelFileError

_SCALARS = (bool, int, float, str, type(None))


class _Checker:
    def __init__(self, where: str, param_shapes: set[tuple[int, ...]]) -> None:
        self.where = where
        self.shapes = param_shapes | {()}

    def fail(self, path: str, message: str) -> NoReturn:
        raise ModelFileError(f"checkpoint does not fit this run: {path}: {message}",
                             where=self.where)

    def array(self, value: Any, path: str, like: np.ndarray | None) -> None:
        if not isinstance(value, np.ndarray):
            self.fail(path, f"expected an array, got {type(value).__name__}")
        if like is not None:
            if value.shape != like.shape or value.dtype != like.dtype:
                self.fail(path, f"expected {like.dtype} of shape {like.shape}, got "
                                f"{value.dtype} of shape {value.shape}")
        else:
            if value.dtype.kind not in "biuf":
                self.fail(path, f"unexpected dtype {value.dtype}")
            if value.shape not in self.shapes:
                self.fail(path, f"unexpected shape {value.shape} (the parameters' are "
                                f"{', '.join(map(str, sorted(self.shapes - {()})))})")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            self.fail(path, "holds NaN/inf (a checkpoint is only written while finite)")

    def like(self, value: Any, fresh: Any, path: str) -> None:
        """``value`` has the structure of ``fresh`` (see the module docstring)."""
        if fresh is None:
            self.anything(value, path)
        elif isinstance(fresh, dict):
            if not isinstance(value, dict):
                self.fail(path, f"expected a mapping, got {type(value).__name__}")
            if set(value) != set(fresh):
                extra, lost = sorted(set(value) - set(fresh)), sorted(set(fresh) - set(value))
                self.fail(path, f"keys differ from this optimizer's state (unexpected: "
                                f"{', '.join(map(str, extra)) or 'none'}; missing: "
                                f"{', '.join(map(str, lost)) or 'none'})")
            for k in fresh:
                self.like(value[k], fresh[k], f"{path}.{k}")
        elif isinstance(fresh, list | tuple):
            if type(value) is not type(fresh):
                self.fail(path, f"expected a {type(fresh).__name__}, got {type(value).__name__}")
            if not fresh:  # a history that grows: each item is checked on its own
                for i, v in enumerate(value):
                    self.anything(v, f"{path}[{i}]")
            elif len(value) != len(fresh):
                self.fail(path, f"expected {len(fresh)} items, got {len(value)}")
            else:
                for i, (v, f) in enumerate(zip(value, fresh, strict=True)):
                    self.like(v, f, f"{path}[{i}]")
        elif isinstance(fresh, np.ndarray):
            self.array(value, path, fresh)
        elif isinstance(fresh, bool):
            if not isinstance(value, bool):
                self.fail(path, f"expected true/false, got {type(value).__name__}")
        elif isinstance(fresh, int):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 <= fresh:
                self.fail(path, f"expected a count, got {value!r:.40}")
        elif isinstance(fresh, float):
            ok = (isinstance(value, float | int) and not isinstance(value, bool)) or (
                isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind == "f")
            if not ok:
                self.fail(path, f"expected a number, got {type(value).__name__}")
            if isinstance(value, np.ndarray):
                self.array(value, path, None)
        elif isinstance(fresh, str):
            if not isinstance(value, str):
                self.fail(path, f"expected text, got {type(value).__name__}")
        else:
            self.anything(value, path)

    def anything(self, value: Any, path: str) -> None:
        """Any state smx can save: containers, scalars and parameter-shaped arrays."""
        if isinstance(value, dict):
            for k, v in value.items():
                self.anything(v, f"{path}.{k}")
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                self.anything(v, f"{path}[{i}]")
        elif isinstance(value, np.ndarray):
            self.array(value, path, None)
        elif not isinstance(value, _SCALARS):
            self.fail(path, f"unexpected {type(value).__name__}")

    def count(self, value: Any, path: str, low: int, high: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(path, f"expected an integer, got {type(value).__name__}")
        if value < low or (high is not None and value > high):
            top = "..." if high is None else high
            self.fail(path, f"{value} is out of range ({low} to {top})")
        return value

    def number(self, value: Any, path: str, *, finite: bool = True, low: float | None = None,
               allow_nan: bool = False) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(path, f"expected a number, got {type(value).__name__}")
        v = float(value)
        if math.isnan(v) and allow_nan:
            return v
        if (finite and not math.isfinite(v)) or math.isnan(v) or (low is not None and v < low):
            self.fail(path, f"{value!r} is out of range")
        return v


def check_state(state: Any, template: dict[str, Any], *, epochs: int, steps_per_epoch: int,
                where: str) -> None:
    """Raise ModelFileError naming the first part of ``state`` that does not fit.

    ``template`` is a fresh Trainer's ``state_dict()`` for this run's config; ``epochs``
    the config's; ``steps_per_epoch`` the Trainer's.
    """
    params = template.get("params", {})
    c = _Checker(where, {tuple(np.shape(v)) for v in params.values()})
    if not isinstance(state, dict):
        c.fail("(top level)", f"expected a mapping, got {type(state).__name__}")
    expected = set(template) | {"config"}
    if set(state) != expected:
        extra, lost = sorted(set(state) - expected), sorted(expected - set(state))
        c.fail("(top level)", f"unexpected: {', '.join(map(str, extra)) or 'none'}; missing: "
                              f"{', '.join(lost) or 'none'}")
    if not isinstance(state["params"], dict) or set(state["params"]) != set(params):
        got = sorted(state["params"]) if isinstance(state["params"], dict) else "not a mapping"
        c.fail("params", f"expected {', '.join(sorted(params))}, got {got}")
    for name, fresh in params.items():
        c.array(state["params"][name], f"params.{name}", fresh)
    c.like(state["opt_state"], template["opt_state"], "opt_state")

    epoch = c.count(state["epoch"], "epoch", 0, epochs)
    c.count(state["step"], "step", epoch * steps_per_epoch, epoch * steps_per_epoch)
    c.number(state["elapsed"], "elapsed", low=0.0)
    c.number(state["last_finite"], "last_finite", allow_nan=True)
    try:  # the generator's own setter knows its format
        rng = np.random.Generator(type(np.random.default_rng().bit_generator)())
        rng.bit_generator.state = state["rng"]
    except Exception as exc:
        c.fail("rng", f"not a valid generator state ({type(exc).__name__})")
    history = state["history"]
    if not isinstance(history, list) or len(history) != epoch:
        n = len(history) if isinstance(history, list) else type(history).__name__
        c.fail("history", f"expected one record per epoch ({epoch}), got {n}")
    for i, record in enumerate(history):
        if not isinstance(record, dict) or record.get("epoch") != i + 1:
            c.fail(f"history[{i}]", f"expected the record of epoch {i + 1}")
        for key, value in record.items():
            if value is not None and not isinstance(value, int | float | str):
                c.fail(f"history[{i}].{key}", f"unexpected {type(value).__name__}")
    if state["stop_reason"] is not None and not isinstance(state["stop_reason"], str):
        c.fail("stop_reason", "expected text or null")

    es, fresh_es = state["early_stopping"], template["early_stopping"]
    if (es is None) != (fresh_es is None):
        c.fail("early_stopping", "does not match the config's early_stopping")
    if es is not None:
        if not isinstance(es, dict) or set(es) != set(fresh_es):
            c.fail("early_stopping", f"expected keys {', '.join(sorted(fresh_es))}")
        c.number(es["best"], "early_stopping.best", finite=False)
        c.count(es["best_epoch"], "early_stopping.best_epoch", 0, epoch)
        c.count(es["wait"], "early_stopping.wait", 0, epoch)
        if es["best_params"] is not None:
            best = es["best_params"]
            if not isinstance(best, dict) or set(best) != set(params):
                c.fail("early_stopping.best_params", "does not match the parameters")
            for name, fresh in params.items():
                c.array(best[name], f"early_stopping.best_params.{name}", fresh)
    if not isinstance(state["config"], str):
        c.fail("config", "expected the config's fingerprint")
    known = {"params", "opt_state", "epoch", "step", "elapsed", "last_finite", "rng",
             "history", "stop_reason", "early_stopping", "config"}
    for key in expected - known:  # whatever a later Trainer adds: its structure at least
        c.like(state[key], template[key], key)
