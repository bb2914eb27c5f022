"""One training run from a validated config to a finished run folder.

Everything that can be wrong with the input (config, plugins, hardware, data)
is checked before the run folder is created, so a bad input leaves nothing
behind. Each file in the folder is written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

import smx
from smx import hardware, sysinfo
from smx.checkpoint import FILENAME as CHECKPOINT
from smx.checkpoint import load_checkpoint, save_checkpoint
from smx.config import RunConfig, to_yaml
from smx.datasets.split import Splits, prepare
from smx.errors import (
    ConfigError,
    DataError,
    DivergenceError,
    ModelFileError,
    RunFolderError,
    SmxError,
)
from smx.io import atomic_write_json, atomic_write_text
from smx.modelfile import FittedModel
from smx.training import STATE_FORMAT, Trainer, TrainResult, evaluate
from smx.types import SolverSpec

#: every file smx writes in a run folder: --overwrite replaces a folder holding only these
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", CHECKPOINT, "model.npz", "loss.png")


def load_data(cfg: RunConfig, plugins: Any, backend: Any = None) -> Splits:
    """The run's splits; a partitioned source is prepared by ``backend`` (default: the
    config's) where its rows live (:func:`smx.datasets.sources.prepare_partitioned`)."""
    from smx.datasets.sources import Partitioned, prepare_partitioned

    spec = plugins.get("dataset", cfg.data.name, where="data.name")
    try:
        loaded = spec.load(**cfg.data.params())
        if not isinstance(loaded, Partitioned):
            X, y, *weights = loaded
    except SmxError:
        raise
    except Exception as exc:  # a dataset plugin's own failure: one line naming it
        raise DataError(f"the dataset failed to load: {type(exc).__name__}: {exc}",
                        where=f"data ({cfg.data.name})") from None
    if isinstance(loaded, Partitioned):
        splits = prepare_partitioned(loaded, cfg, plugins, backend)
    else:
        splits = prepare(
            np.asarray(X), np.asarray(y), val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction, seed=cfg.seed,
            standardize=cfg.data.standardize, where=f"data ({cfg.data.name})",
            sample_weight=weights[0] if weights else None,
            dtype=cfg.dtype, owned=getattr(spec, "owned", False),
        )
    opt = plugins.get("optimizer", cfg.optimizer.name)
    full_batch = isinstance(opt, SolverSpec)
    n = len(splits.y_train)
    if not full_batch and cfg.batch_size > n:
        raise ConfigError(
            f"{cfg.batch_size} is larger than the training set ({n} rows); use at most {n}",
            where="batch_size",
        )
    es = cfg.early_stopping
    if (es.patience is not None or es.restore_best) and es.monitor.startswith("val_") \
            and len(splits.y_val) == 0:
        raise ConfigError(f"{es.monitor} needs a validation split; set data.val_fraction > 0 "
                          "or monitor train_loss", where="early_stopping.monitor")
    if cfg.clip_grad_norm is not None and full_batch:
        raise ConfigError(f"cannot be used with the full-batch solver {opt.name!r}: its line "
                          "search compares losses along a direction, and a clipped gradient "
                          "is not the slope of that loss (Wolfe's conditions would fail or "
                          "accept wrong steps); use an optimizer such as sgd or adam to clip",
                          where="clip_grad_norm")
    return splits


def default_output(config_name: str) -> Path:
    return Path("runs") / f"{config_name}-{datetime.now():%Y%m%d-%H%M%S}"


def _written_by_smx(entry: Path) -> bool:
    """One of :data:`RUN_FILES`, or a temporary file of an atomic write of one."""
    if entry.is_symlink() or not entry.is_file():
        return False
    return any(entry.name == name or entry.name.startswith(f".{name}.") for name in RUN_FILES)


def prepare_folder(path: Path, overwrite: bool) -> None:
    """Create the run folder; refuse to clobber an existing one without ``overwrite``.

    ``overwrite`` replaces only a run folder: one with a config.yaml and nothing but
    files smx writes, so a project folder that happens to hold a config.yaml is safe.
    """
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise RunFolderError("exists and is not a folder", where=str(path))
        contents = list(path.iterdir())
        if contents and not overwrite:
            raise RunFolderError("run folder already exists; pass --overwrite to replace it",
                                 where=str(path))
        foreign = sorted(p.name for p in contents if not _written_by_smx(p))
        if contents and (foreign or not (path / "config.yaml").is_file()):
            what = f"holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}" \
                if foreign else "has no config.yaml"
            raise RunFolderError(f"not an smx run folder ({what}); refusing to replace it",
                                 where=str(path))
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder: {exc.strerror}", where=str(path)) \
            from None


def create_default_folder(config_name: str) -> Path:
    """``runs/<config>-<time>``, or ``-2``, ``-3``... when a run started in the same second
    holds that name: a default-named folder is never reused or replaced."""
    base = default_output(config_name)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the folder: {exc.strerror}",
                             where=str(base.parent)) from None
    for n in range(1, 10_000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot create the run folder: {exc.strerror}",
                                 where=str(path)) from None
        return path
    raise RunFolderError("no free run folder name", where=str(base))


def _import_plotting() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def preload_plotting() -> None:
    """Import matplotlib (~0.4 s) on a helper thread while the data loads and the model
    trains (NumPy and BLAS release the GIL): the loss plot at the end then finds it loaded.
    A failed import is left for :func:`plot_losses` to report. Not a daemon: an early exit
    waits for the import to finish instead of tearing it down midway."""
    import threading

    def quietly() -> None:
        with contextlib.suppress(Exception):
            _import_plotting()

    threading.Thread(target=quietly, name="smx-preload-matplotlib").start()


def plot_losses(history: list[dict[str, Any]], path: Path) -> None:
    # a Figure on the Agg canvas, not pyplot: no GUI backend to look for, ~0.2 s less import
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    has_val = all(r["val_loss"] is not None for r in history)  # None: no validation split
    ax.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    if has_val:
        ax.plot(epochs, [r["val_loss"] for r in history], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    if has_val:
        ax2.plot(epochs, [r["val_accuracy"] for r in history], "g:",
                 label="validation accuracy")
    ax2.set_ylabel("accuracy")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    fig.subplots_adjust(left=0.15, right=0.86, bottom=0.12, top=0.95)  # tight_layout: 0.1 s
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


@dataclass
class RunOutcome:
    folder: Path
    summary: dict[str, Any]
    result: TrainResult


class Progress:
    """A tqdm bar over epochs showing the latest loss and validation accuracy."""

    def __init__(self, total: int, enabled: bool, initial: int = 0) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="epoch", disable=not enabled,
                        dynamic_ncols=True, file=sys.stderr)

    def on_log(self, step: int, loss: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_epoch(self, record: dict[str, Any]) -> None:
        shown = {"loss": f"{record['train_loss']:.4f}"}
        if record["val_accuracy"] is not None:  # None: no validation split
            shown["val_acc"] = f"{record['val_accuracy']:.4f}"
        self.bar.set_postfix(shown, refresh=False)
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
    splits = load_data(cfg, plugins, placement.backend)
    preload_plotting()  # once the input is known good: a bad one exits at once
    # the Trainer writes no file: when it fails (device memory, a plugin), no folder is left
    trainer = Trainer(cfg, splits, placement.backend, placement.device, plugins)
    try:
        if cfg.output:
            folder = Path(cfg.output)
            prepare_folder(folder, overwrite)
        else:
            folder = create_default_folder(config_name)
        resolved = cfg.model_copy(update={"output": str(folder)})
        atomic_write_text(folder / "config.yaml", to_yaml(resolved))
    except BaseException:
        _close(trainer, placement)
        raise
    return _train_and_finish(cfg, folder, trainer, splits, placement, progress, t0)


def resume(run_dir: str | Path, *, plugins: Any = None, progress: bool = True) -> RunOutcome:
    """Continue the run in ``run_dir`` from its checkpoint, exactly where it was saved.

    The config comes from the folder's ``config.yaml``; the checkpoint's checksum and
    its fit to that config are verified before anything in the folder changes.
    """
    from smx.config import load_config
    from smx.plugins import get_plugins

    t0 = time.perf_counter()
    plugins = plugins or get_plugins()
    folder = Path(run_dir)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError("not a folder; --resume takes a run folder", where=str(folder))
    if not folder.is_dir():
        raise RunFolderError("no such run folder to resume", where=str(folder))
    if not (folder / "config.yaml").is_file():
        raise RunFolderError("not an smx run folder (no config.yaml)", where=str(folder))
    cfg = load_config(folder / "config.yaml", plugins=plugins)
    cfg = cfg.model_copy(update={"output": str(folder)})
    state = load_checkpoint(folder / CHECKPOINT)
    if state.get("format") != STATE_FORMAT:
        raise ModelFileError("this checkpoint was written by smx 0.1, whose optimizer state "
                             "this version does not read; start the run again (without "
                             "--resume, or with --overwrite)", where=str(folder / CHECKPOINT))
    if state.get("config") != config_fingerprint(cfg):
        raise RunFolderError("config.yaml was changed after the checkpoint was written; "
                             "resume needs the config the run started with",
                             where=str(folder / "config.yaml"))
    placement = hardware.select(cfg, plugins)
    splits = load_data(cfg, plugins, placement.backend)
    trainer = Trainer(cfg, splits, placement.backend, placement.device, plugins)
    try:
        try:
            trainer.load_state_dict(state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFileError(f"checkpoint contents do not fit this run "
                                 f"({type(exc).__name__}: {exc})",
                                 where=str(folder / CHECKPOINT)) from None
        # metrics.jsonl may hold epochs past the checkpoint: keep exactly the checkpoint's
        # history
        atomic_write_text(folder / "metrics.jsonl",
                          "".join(_json_line(r) for r in trainer.history))
        (folder / "summary.json").unlink(missing_ok=True)
        for stale in folder.glob(".*.tmp"):  # a write cut short by the kill
            stale.unlink()
    except BaseException:
        _close(trainer, placement)
        raise
    return _train_and_finish(cfg, folder, trainer, splits, placement, progress, t0)


def config_fingerprint(cfg: RunConfig) -> str:
    """What a checkpoint must agree with to be resumed (the output folder may move)."""
    text = to_yaml(cfg.model_copy(update={"output": None}))
    return hashlib.sha256(text.encode()).hexdigest()


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


def _close(trainer: Trainer, placement: hardware.Placement) -> None:
    """Drop the run's device arrays, then give the device's cached memory back."""
    trainer.close()
    placement.backend.release(placement.device)


def _train_and_finish(cfg: RunConfig, folder: Path, trainer: Trainer, splits: Splits,
                      placement: hardware.Placement, progress: bool, t0: float) -> RunOutcome:
    backend, device = placement.backend, placement.device
    fingerprint = config_fingerprint(cfg)
    saved = {"epoch": trainer.epoch if (folder / CHECKPOINT).exists() else -1}

    def checkpoint() -> None:
        save_checkpoint(folder / CHECKPOINT, {**trainer.state_dict(), "config": fingerprint})
        saved["epoch"] = trainer.epoch

    def on_epoch(record: dict[str, Any]) -> None:
        metrics.write(_json_line(record))
        metrics.flush()
        # the last epoch's checkpoint is taken here, before restore_best swaps the parameters
        if trainer.finished or (cfg.checkpoint_every and
                                trainer.epoch % cfg.checkpoint_every == 0):
            checkpoint()
        bar.on_epoch(record)

    try:
        metrics = (folder / "metrics.jsonl").open("a")
        bar = Progress(cfg.epochs, progress, initial=trainer.epoch)
        try:
            # overflow is caught by the divergence check, with a clearer message than NumPy's
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                result = trainer.fit(on_epoch=on_epoch, on_log=bar.on_log)
        except DivergenceError as exc:
            # the last good checkpoint stays as it is: a NaN state is never saved
            atomic_write_json(folder / "summary.json", {
                "status": "diverged", "error": str(exc), "epochs": trainer.epoch,
                "steps": trainer.step, "checkpoint_epoch": saved["epoch"]
                if saved["epoch"] >= 0 else None,
            })
            raise
        finally:
            bar.close()
            metrics.close()
        final = final_metrics(trainer, splits)
        engine = getattr(backend, "run_report", dict)()  # e.g. Dask workers' peak memory
    except BaseException as exc:
        # the finished frames of the traceback still hold device arrays (batches, params)
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        # before release: while the trainer holds them, the arrays' memory cannot be freed
        _close(trainer, placement)

    fitted = FittedModel(
        W=result.params["W"], b=result.params.get("b"), classes=splits.classes,
        standardizer=splits.standardizer,
        meta={"smx": smx.__version__, "dtype": cfg.dtype, "backend": backend.name,
              "l2": result.l2, "label_column": cfg.data.params().get("label_column")},
    )
    fitted.save(folder / "model.npz")
    summary = {
        "status": "completed",
        **final,
        "backend": backend.name,
        "device": device,
        "fallback": placement.note,
        "dtype": cfg.dtype,
        "threads": trainer.threads,
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
        "versions": sysinfo.library_versions(backend=backend),
        **engine,
    }
    atomic_write_json(folder / "summary.json", _json_safe(summary), allow_nan=False)
    plot_losses(result.history, folder / "loss.png")  # after the summary: never delays it
    return RunOutcome(folder, summary, result)


def final_metrics(trainer: Trainer, splits: Splits) -> dict[str, Any]:
    """Train/validation/test loss and accuracy of the final parameters (None: empty split).

    The trainer's device copies of the training and validation data are reused: only
    the test split crosses to the device.
    """
    cfg, backend, device = trainer.cfg, trainer.backend, trainer.device
    test = backend.place(splits.X_test, splits.y_test, getattr(splits, "w_test", None), device,
                         cfg.dtype)
    out = {}
    for name, data in [("train", trainer.train_data), ("val", trainer.val_data),
                       ("test", test)]:
        m = evaluate(backend, trainer.objective, trainer.params, data)
        out[f"{name}_loss"], out[f"{name}_accuracy"] = m["loss"], m["accuracy"]
    return out


__all__ = ["RunOutcome", "load_data", "resume", "run"]
