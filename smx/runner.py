"""One training run from a validated config to a finished run folder.

Everything that can be wrong with the input (config, plugins, hardware, data)
is checked before the run folder is created, so a bad input leaves nothing
behind. Each file in the folder is written atomically.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

import smx
from smx import hardware
from smx.config import RunConfig, to_yaml
from smx.datasets.split import Splits, prepare
from smx.errors import ConfigError, DataError, RunFolderError
from smx.io import atomic_write_json, atomic_write_text
from smx.modelfile import FittedModel
from smx.training import DeviceData, TrainResult, evaluate, train

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "summary.json")


def load_data(cfg: RunConfig, plugins: Any) -> Splits:
    spec = plugins.get("dataset", cfg.data.name, where="data.name")
    X, y = spec.load(**cfg.data.params())
    splits = prepare(
        np.asarray(X), np.asarray(y), val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction, seed=cfg.seed, standardize=cfg.data.standardize,
        where=f"data ({cfg.data.name})",
    )
    opt = plugins.get("optimizer", cfg.optimizer.name)
    n = len(splits.y_train)
    if not opt.full_batch and cfg.batch_size > n:
        raise ConfigError(
            f"{cfg.batch_size} is larger than the training set ({n} rows); use at most {n}",
            where="batch_size",
        )
    es = cfg.early_stopping
    if (es.patience is not None or es.restore_best) and es.monitor.startswith("val_") \
            and len(splits.y_val) == 0:
        raise ConfigError(f"{es.monitor} needs a validation split; set data.val_fraction > 0 "
                          "or monitor train_loss", where="early_stopping.monitor")
    if cfg.clip_grad_norm is not None and opt.full_batch:
        raise ConfigError(f"cannot be used with the full-batch optimizer {opt.name!r}: its "
                          "line search needs the true gradient", where="clip_grad_norm")
    return splits


def default_output(config_name: str) -> Path:
    return Path("runs") / f"{config_name}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_folder(path: Path, overwrite: bool) -> None:
    """Create the run folder; refuse to clobber an existing one without ``overwrite``."""
    if path.exists():
        if not path.is_dir():
            raise RunFolderError("exists and is not a folder", where=str(path))
        contents = list(path.iterdir())
        if contents and not overwrite:
            raise RunFolderError("run folder already exists; pass --overwrite to replace it",
                                 where=str(path))
        if contents and not any((path / m).exists() for m in RUN_MARKERS):
            raise RunFolderError("exists and is not an smx run folder; refusing to replace it",
                                 where=str(path))
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder: {exc.strerror}", where=str(path)) \
            from None


def library_versions(backend: Any) -> dict[str, str]:
    import array_api_compat

    versions = {
        "python": platform.python_version(), "smx": smx.__version__,
        "numpy": np.__version__, "array-api-compat": array_api_compat.__version__,
    }
    versions.update(backend.versions())
    return versions


def plot_losses(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in history], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["val_accuracy"] for r in history], "g:", label="validation accuracy")
    ax2.set_ylabel("accuracy")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


@dataclass
class RunOutcome:
    folder: Path
    summary: dict[str, Any]
    result: TrainResult


class Progress:
    """A tqdm bar over epochs showing the latest loss and validation accuracy."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="epoch", disable=not enabled, dynamic_ncols=True,
                        file=sys.stderr)
        self.loss = float("nan")

    def on_log(self, step: int, loss: float) -> None:
        self.loss = loss
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.bar.set_postfix(loss=f"{record['train_loss']:.4f}",
                             val_acc=f"{record['val_accuracy']:.4f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run(
    cfg: RunConfig,
    *,
    config_name: str = "run",
    overwrite: bool = False,
    plugins: Any = None,
    progress: bool = True,
) -> RunOutcome:
    from smx.plugins import get_plugins

    t0 = time.perf_counter()
    plugins = plugins or get_plugins()
    placement = hardware.select(cfg, plugins)
    backend, device = placement.backend, placement.device
    splits = load_data(cfg, plugins)
    folder = Path(cfg.output) if cfg.output else default_output(config_name)
    prepare_folder(folder, overwrite)
    resolved = cfg.model_copy(update={"output": str(folder)})
    atomic_write_text(folder / "config.yaml", to_yaml(resolved))

    metrics_path = folder / "metrics.jsonl"
    metrics = metrics_path.open("a")
    bar = Progress(cfg.epochs, progress)

    def on_epoch(record: dict[str, Any]) -> None:
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        bar.on_epoch(record)

    try:
        result = train(cfg, splits, backend, device, plugins, on_epoch=on_epoch,
                       on_log=bar.on_log)
    finally:
        bar.close()
        metrics.close()

    final = final_metrics(cfg, splits, backend, device, result)
    fitted = FittedModel(
        W=result.params["W"], b=result.params.get("b"), classes=splits.classes,
        standardizer=splits.standardizer,
        meta={"smx": smx.__version__, "dtype": cfg.dtype, "backend": backend.name,
              "l2": result.l2},
    )
    fitted.save(folder / "model.npz")
    plot_losses(result.history, folder / "loss.png")
    backend.release(device)
    summary = {
        "status": "completed",
        **final,
        "backend": backend.name,
        "device": device,
        "fallback": placement.note,
        "dtype": cfg.dtype,
        "optimizer": cfg.optimizer.name,
        "epochs": len(result.history),
        "stop_reason": result.stop_reason,
        "restored_epoch": result.restored_epoch,
        "steps": result.steps,
        "l2": result.l2,
        "n_train": len(splits.y_train), "n_val": len(splits.y_val),
        "n_test": len(splits.y_test),
        "n_features": splits.n_features, "n_classes": splits.n_classes,
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - t0,
        "versions": library_versions(backend),
    }
    atomic_write_json(folder / "summary.json", summary)
    return RunOutcome(folder, summary, result)


def final_metrics(cfg: RunConfig, splits: Splits, backend: Any, device: str,
                  result: TrainResult) -> dict[str, Any]:
    """Train/validation/test loss and accuracy of the final parameters."""
    params = {k: backend.from_host(v, device, cfg.dtype) for k, v in result.params.items()}
    out = {}
    for name, X, y in [("train", splits.X_train, splits.y_train),
                       ("val", splits.X_val, splits.y_val),
                       ("test", splits.X_test, splits.y_test)]:
        data = DeviceData.put(backend, device, X, y, splits.n_classes, cfg.dtype)
        m = evaluate(backend, params, data)
        out[f"{name}_loss"], out[f"{name}_accuracy"] = m["loss"], m["accuracy"]
    return out


__all__ = ["DataError", "RunOutcome", "load_data", "run"]
