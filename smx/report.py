"""What a run shows and writes about itself: the progress bar and status lines, the final
metrics, JSON that stays valid, and the loss plot (written after the summary, never delaying
it)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from smx import model
from smx.datasets.load import Status, _quiet
from smx.datasets.split import Splits
from smx.training import Trainer, TrainResult, evaluate


def _status(enabled: bool) -> Status:
    """One ``smx: ...`` line on stderr per stage (loading, standardising, writing), so a
    large run is never silent before or after its progress bar."""
    if not enabled:
        return _quiet
    return lambda message: print(f"smx: {message}", file=sys.stderr, flush=True)


def best_epoch(result: TrainResult, trainer: Trainer) -> tuple[int | None, str]:
    """The epoch to mark in the plot: the restored one, early stopping's best, else the
    lowest validation (or training) loss."""
    if result.restored_epoch is not None:
        return result.restored_epoch, "restored epoch"
    es = trainer.early_stopping
    if es is not None and es.best_epoch:
        return es.best_epoch, f"best {es.monitor.replace('_', ' ')}"
    history = result.history
    key = "val_loss" if history and all(r["val_loss"] is not None for r in history) \
        else "train_loss"
    finite = [r for r in history if r[key] is not None and math.isfinite(r[key])]
    if not finite:
        return None, ""
    best = min(finite, key=lambda r: r[key])
    return best["epoch"], f"lowest {key.replace('_', ' ')}"


class Progress:
    """A tqdm bar over steps, moved at every ``log_every`` step and at each epoch's end,
    showing the epoch, the latest loss and the validation accuracy."""

    def __init__(self, total: int, enabled: bool, initial: int = 0, *, epochs: int = 0,
                 epoch: int = 0) -> None:
        from tqdm.std import tqdm  # not tqdm.auto: a terminal bar, and asyncio not imported

        self.epochs, self.epoch = epochs, epoch
        self.bar = tqdm(total=total, initial=initial, unit="step", disable=not enabled,
                        dynamic_ncols=True, file=sys.stderr)
        self.shown: dict[str, str] = {}

    def _show(self, step: int) -> None:
        self.bar.set_postfix({"epoch": f"{min(self.epoch + 1, self.epochs)}/{self.epochs}",
                              **self.shown}, refresh=False)
        self.bar.update(max(step - self.bar.n, 0))

    def on_log(self, step: int, loss: float) -> None:
        self.shown["loss"] = f"{loss:.4f}"
        self._show(step)

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.epoch = record["epoch"]
        self.shown = {"loss": f"{record['train_loss']:.4f}"}
        if record["val_accuracy"] is not None:  # None: no validation split
            self.shown["val_acc"] = f"{record['val_accuracy']:.4f}"
        self._show(record["step"])

    def close(self) -> None:
        self.bar.close()


def _json_safe(obj: Any) -> Any:
    """NaN/inf (a diverging validation loss) as null: JSON has no such numbers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(_json_safe(record), allow_nan=False) + "\n"


def final_metrics(trainer: Trainer, splits: Splits) -> dict[str, Any]:
    """Train/validation/test loss and accuracy of the final parameters (None: empty split).

    ``train_loss`` is the quantity each metrics.jsonl line records for its epoch (the
    mean cross-entropy of that epoch's final parameters over the training split), so it
    equals the last line's, or the restored epoch's with ``restore_best``.

    The trainer's device copies of the training and validation data are reused: only
    the test split crosses to the device.
    """
    with trainer.backend.run_context(trainer.cfg.dtype):  # outside the Trainer's methods
        return _final_metrics(trainer, splits)


def _final_metrics(trainer: Trainer, splits: Splits) -> dict[str, Any]:
    cfg, backend, device = trainer.cfg, trainer.backend, trainer.device
    test = backend.place(splits.X_test, splits.y_test, getattr(splits, "w_test", None), device,
                         cfg.dtype)
    out: dict[str, float | None] = {}
    for name, data in [("train", trainer.train_data), ("val", trainer.val_data),
                       ("test", test)]:
        known = trainer.params_train_loss if name == "train" else None
        if known is not None:  # the very number its epoch's line records: accuracy only
            acc = model.accuracy(trainer.params, data.X, data.y)
            out["train_loss"], out["train_accuracy"] = known, float(backend.to_host(acc))
            continue
        m = evaluate(backend, trainer.objective, trainer.params, data)
        out[f"{name}_loss"], out[f"{name}_accuracy"] = m["loss"], m["accuracy"]
    return out
