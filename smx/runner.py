"""One training run from a validated config to a finished run folder.

Everything that can be wrong with the input (config, plugins, hardware, data)
is checked before the run folder is created, so a bad input leaves nothing
behind. Each file in the folder is written atomically. The pieces live beside
it: :mod:`smx.run_folder` (folder policy and locks), :mod:`smx.datasets.load`
(data and its checks), :mod:`smx.report` (progress, metrics, plot).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import smx
from smx import hardware, sysinfo
from smx.callbacks import RunCallbacks
from smx.checkpoint import FILENAME as CHECKPOINT
from smx.checkpoint import load_checkpoint, save_checkpoint
from smx.config import RunConfig, to_yaml
from smx.datasets.load import load_data
from smx.datasets.split import Splits
from smx.errors import (
    DivergenceError,
    ModelFileError,
    RunFolderError,
    SmxError,
)
from smx.io import atomic_write_json, atomic_write_text
from smx.modelfile import FittedModel
from smx.plotting import discard as discard_plotting
from smx.plotting import start as preload_plotting
from smx.plotting import write as plot_losses
from smx.report import (
    Progress,
    _json_line,
    _json_safe,
    _status,
    best_epoch,
    final_metrics,
)
from smx.resume_check import check_state
from smx.run_folder import (
    _TEMP,
    RUN_FILES,
    _remove_if_empty,
    _written_by_smx,
    create_default_folder,
    default_output,
    prepare_folder,
    run_name,
)
from smx.runlock import RunLock
from smx.training import READABLE_FORMATS, Trainer, TrainResult, upgrade_state
from smx.types import RunInfo


@dataclass
class RunOutcome:
    folder: Path
    summary: dict[str, Any]
    result: TrainResult


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
    status = _status(progress)
    plugins = plugins or get_plugins()
    preload_plotting()  # the config is good (`smx run` started it earlier still)
    # the Trainer writes no file: when it fails (device memory, a plugin), no folder is left
    try:
        placement = hardware.select(cfg, plugins)
        splits = load_data(cfg, plugins, status, backend=placement.backend)
        callbacks = RunCallbacks(cfg.callbacks, plugins)  # a missing library: no folder made
        trainer = Trainer(cfg, splits, placement.backend, placement.device, plugins)
    except BaseException:
        discard_plotting()
        raise
    lock: RunLock | None = None
    made: list[Path] = []  # folders this run creates, innermost last
    try:
        if cfg.output:
            folder = Path(cfg.output)
            with contextlib.suppress(OSError, ValueError):  # prepare_folder says what is wrong
                made = [] if folder.exists() or folder.is_symlink() else [folder]
            lock = prepare_folder(folder, overwrite)
        else:
            name = run_name(config_name, cfg)
            made = [] if default_output(name).parent.exists() else [default_output(name).parent]
            folder = create_default_folder(name)
            made.append(folder)
            lock = RunLock(folder).acquire()
        resolved = cfg.model_copy(update={"output": str(folder)})
        atomic_write_text(folder / "config.yaml", to_yaml(resolved))
    except BaseException:
        if lock is not None:
            lock.release()
        for path in reversed(made):  # what this run made and could not fill (a full disk)
            _remove_if_empty(path)
        _close(trainer, placement)
        discard_plotting()
        raise
    return _train_and_finish(cfg, folder, trainer, splits, placement, progress, t0, lock,
                             callbacks)


def resume(run_dir: str | Path, *, plugins: Any = None, progress: bool = True) -> RunOutcome:
    """Continue the run in ``run_dir`` from its checkpoint, exactly where it was saved.

    The folder is locked first; the config comes from its ``config.yaml``; the
    checkpoint's checksum and its whole state (:func:`smx.resume_check.check_state`)
    are verified against that config before anything in the folder changes.
    """
    from smx.config import load_config
    from smx.plugins import get_plugins

    t0 = time.perf_counter()
    status = _status(progress)
    plugins = plugins or get_plugins()
    folder = Path(run_dir)
    try:
        is_dir, exists = folder.is_dir(), folder.exists()
    except ValueError:
        raise RunFolderError("the path contains a NUL character", where=repr(str(folder))) \
            from None
    if exists and not is_dir:
        raise RunFolderError("not a folder; --resume takes a run folder", where=str(folder))
    if not is_dir:
        raise RunFolderError("no such run folder to resume", where=str(folder))
    if not (folder / "config.yaml").is_file():
        raise RunFolderError("not an smx run folder (no config.yaml)", where=str(folder))
    lock = RunLock(folder).acquire()
    trainer: Trainer | None = None
    placement = None
    try:
        cfg = load_config(folder / "config.yaml", plugins=plugins)
        cfg = cfg.model_copy(update={"output": str(folder)})
        state = load_checkpoint(folder / CHECKPOINT)
        if isinstance(state, dict) and state.get("format") not in READABLE_FORMATS:
            raise ModelFileError("this checkpoint was written by smx 0.1, whose optimizer "
                                 "state this version does not read; start the run again "
                                 "(without --resume, or with --overwrite)",
                                 where=str(folder / CHECKPOINT))
        for name in RUN_FILES:  # resuming replaces or removes these: files, nothing else
            entry = folder / name
            if entry.is_symlink() or (entry.exists() and not entry.is_file()):
                raise RunFolderError("is not a regular file; a run folder holds only files "
                                     "smx wrote", where=str(entry))
        if not isinstance(state, dict) or state.get("config") != config_fingerprint(cfg):
            raise RunFolderError("config.yaml was changed after the checkpoint was written; "
                                 "resume needs the config the run started with",
                                 where=str(folder / "config.yaml"))
        placement = hardware.select(cfg, plugins)
        splits = load_data(cfg, plugins, status, backend=placement.backend)
        preload_plotting()
        callbacks = RunCallbacks(cfg.callbacks, plugins)
        trainer = Trainer(cfg, splits, placement.backend, placement.device, plugins)
        template = trainer.state_dict()
        state = upgrade_state(state, template)
        check_state(state, template, epochs=cfg.epochs,
                    steps_per_epoch=trainer.steps_per_epoch, where=str(folder / CHECKPOINT))
        try:
            trainer.load_state_dict(state)
        except SmxError:
            raise
        except Exception as exc:
            raise ModelFileError(f"checkpoint contents do not fit this run "
                                 f"({type(exc).__name__}: {exc})",
                                 where=str(folder / CHECKPOINT)) from None
        # only now, with the whole checkpoint known to fit, does the folder change:
        # metrics.jsonl may hold epochs past the checkpoint: keep exactly its history
        atomic_write_text(folder / "metrics.jsonl",
                          "".join(_json_line(r) for r in trainer.history))
        (folder / "summary.json").unlink(missing_ok=True)
        for stale in folder.iterdir():  # a write cut short by the kill (smx's names only)
            if _TEMP.fullmatch(stale.name) and _written_by_smx(stale):
                stale.unlink()
    except BaseException:
        if trainer is not None and placement is not None:
            _close(trainer, placement)
        discard_plotting()
        lock.release()
        raise
    return _train_and_finish(cfg, folder, trainer, splits, placement, progress, t0, lock,
                             callbacks)


def config_fingerprint(cfg: RunConfig) -> str:
    """What a checkpoint must agree with to be resumed (the output folder may move)."""
    text = to_yaml(cfg.model_copy(update={"output": None}))
    return hashlib.sha256(text.encode()).hexdigest()


def _close(trainer: Trainer, placement: hardware.Placement) -> None:
    """Drop the run's device arrays, then give the device's cached memory back."""
    trainer.close()
    placement.backend.release(placement.device)


def _train_and_finish(cfg: RunConfig, folder: Path, trainer: Trainer, splits: Splits,
                      placement: hardware.Placement, progress: bool, t0: float,
                      lock: RunLock, callbacks: RunCallbacks) -> RunOutcome:
    """Train, then write model.npz, loss.png and summary.json; ``lock`` is released at
    the end, however the run ends, and the callbacks hear how it ended."""
    try:
        return _train_and_write(cfg, folder, trainer, splits, placement, progress, t0,
                                callbacks)
    except BaseException as exc:
        if not callbacks.ended:  # a failure other than divergence (which said so itself)
            error = str(exc) or type(exc).__name__
            with contextlib.suppress(Exception):  # the run's own error is the one to show
                callbacks.run_end({"status": "failed", "error": error,
                                   "epochs": trainer.epoch, "steps": trainer.step})
        raise
    finally:
        discard_plotting()  # none left after the plot; one waiting when training failed
        lock.release()


def _train_and_write(cfg: RunConfig, folder: Path, trainer: Trainer, splits: Splits,
                     placement: hardware.Placement, progress: bool, t0: float,
                     callbacks: RunCallbacks) -> RunOutcome:
    backend, device = placement.backend, placement.device
    status = _status(progress)
    fingerprint = config_fingerprint(cfg)
    saved = {"epoch": trainer.epoch if (folder / CHECKPOINT).exists() else -1}

    def checkpoint() -> None:
        # between epochs, safe against the process being killed (what --resume is for);
        # the last one also against a crash of the machine
        save_checkpoint(folder / CHECKPOINT, {**trainer.state_dict(), "config": fingerprint},
                        durable=trainer.finished)
        saved["epoch"] = trainer.epoch
        callbacks.checkpoint(folder / CHECKPOINT, trainer.epoch)

    def on_epoch(record: dict[str, Any]) -> None:
        metrics.write(_json_line(record))
        metrics.flush()
        callbacks.epoch_end(_json_safe(record))
        # the last epoch's checkpoint is taken here, before restore_best swaps the parameters
        if trainer.finished or (cfg.checkpoint_every and
                                trainer.epoch % cfg.checkpoint_every == 0):
            checkpoint()
        bar.on_epoch(record)

    try:
        callbacks.run_start(RunInfo(
            folder=folder, config=cfg.model_copy(update={"output": str(folder)}).model_dump(
                mode="json"), resumed=trainer.epoch > 0,
            history=[_json_safe(r) for r in trainer.history]))
        metrics = (folder / "metrics.jsonl").open("a")
        bar = Progress(cfg.epochs * trainer.steps_per_epoch, progress, initial=trainer.step,
                       epochs=cfg.epochs, epoch=trainer.epoch)
        try:
            # overflow is caught by the divergence check, with a clearer message than NumPy's
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                result = trainer.fit(on_epoch=on_epoch, on_log=bar.on_log)
        except DivergenceError as exc:
            # the last good checkpoint stays as it is: a NaN state is never saved
            diverged = {
                "status": "diverged", "error": str(exc), "epochs": trainer.epoch,
                "steps": trainer.step, "checkpoint_epoch": saved["epoch"]
                if saved["epoch"] >= 0 else None,
            }
            atomic_write_json(folder / "summary.json", diverged)
            with contextlib.suppress(SmxError):  # the divergence is the error to show
                callbacks.run_end(diverged)
            raise
        finally:
            bar.close()
            metrics.close()
        status("evaluating the final parameters...")
        final = final_metrics(trainer, splits)
        engine = backend.run_report()  # e.g. Dask workers' peak memory
        marked = best_epoch(result, trainer)
    except BaseException as exc:
        # the finished frames of the traceback still hold device arrays (batches, params)
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        # before release: while the trainer holds them, the arrays' memory cannot be freed
        _close(trainer, placement)

    status(f"writing model.npz, loss.png and summary.json to {folder}...")
    fitted = FittedModel(
        W=result.params["W"], b=result.params.get("b"), classes=splits.classes,
        standardizer=splits.standardizer,
        meta={"smx": smx.__version__, "dtype": cfg.dtype, "backend": backend.name,
              "l2": result.l2, "label_column": cfg.data.params().get("label_column"),
              "columns": list(splits.columns) if splits.columns else None},
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
    plot_losses(result.history, folder / "loss.png", *marked)  # after the summary
    callbacks.run_end(_json_safe(summary))
    return RunOutcome(folder, summary, result)


__all__ = ["RunOutcome", "load_data", "resume", "run"]
