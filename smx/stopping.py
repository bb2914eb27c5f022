"""Rules that end training before ``epochs`` runs out, checked by the Trainer between epochs.

A rule is a callable ``rule(trainer) -> str | None`` that reads the epoch
just finished from ``trainer.history[-1]`` (host floats already read back, so
a rule costs no device sync). :meth:`Trainer.should_stop` asks every rule
after every epoch, so each one sees every epoch even when another fires, and
stops with the first reason. A reason reads ``"<rule>: <detail>"`` and is
recorded in summary.json as ``stop_reason`` (``"max_epochs"`` otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from smx.errors import DataError

if TYPE_CHECKING:
    from smx.config import EarlyStoppingConfig
    from smx.types import Params

#: monitored metrics where larger is better; all others are minimised
MAXIMIZED = {"val_accuracy"}


class StopRule(Protocol):
    def __call__(self, trainer: Any) -> str | None: ...


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` it also remembers the best epoch's parameters: a copy, since
    an engine's fused step (:meth:`smx.types.Backend.fused_step`) updates in place.
    """

    patience: int | None = None
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best: bool = False
    best: float = math.inf  # in "smaller is better" form (accuracy negated)
    best_epoch: int = 0
    best_params: Params | None = None
    wait: int = 0  # epochs since the last improvement

    @classmethod
    def from_config(cls, cfg: EarlyStoppingConfig) -> EarlyStopping | None:
        """None when the section asks for nothing (no patience, no restore)."""
        if cfg.patience is None and not cfg.restore_best:
            return None
        return cls(patience=cfg.patience, min_delta=cfg.min_delta, monitor=cfg.monitor,
                   restore_best=cfg.restore_best)

    def __call__(self, trainer: Any) -> str | None:
        record = trainer.history[-1]
        if record[self.monitor] is None:  # zero total weight (class weights of 0 on them all)
            raise DataError(f"{self.monitor} cannot be measured: the validation rows' weights "
                            "(sample x class) sum to 0; monitor another metric",
                            where="early_stopping.monitor")
        value = float(record[self.monitor])
        score = -value if self.monitor in MAXIMIZED else value
        if score < self.best - self.min_delta:  # NaN never improves
            self.best, self.best_epoch, self.wait = score, record["epoch"], 0
            if self.restore_best:
                self.best_params = _copied(trainer.params)
        else:
            self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            best = -self.best if self.monitor in MAXIMIZED else self.best
            return (f"early_stopping: {self.monitor} did not improve by more than "
                    f"{self.min_delta:g} for {self.wait} epochs (best {best:.6g} at epoch "
                    f"{self.best_epoch})")
        return None


def optimizer_converged(trainer: Any) -> str | None:
    """A full-batch optimizer (lbfgs) records why it converged as a host string in its state."""
    state = trainer.opt_state
    converged = state.get("converged") if isinstance(state, dict) else None
    return f"converged: {converged}" if converged else None


def _copied(params: Any) -> Any:
    """Each array leaf copied on its own device (scalars as they are)."""
    from array_api_compat import array_namespace

    from smx.checkpoint import map_arrays

    return map_arrays(params, lambda a: array_namespace(a).asarray(a, copy=True))
