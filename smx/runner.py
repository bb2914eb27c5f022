"""One training run from a validated config to a finished run folder.

Everything that can be wrong with the input (config, plugins, hardware, data)
is checked before the run folder is created, so a bad input leaves nothing
behind. Each file in the folder is written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Callable
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
from smx.datasets.files import column_names
from smx.datasets.split import Splits, prepare
from smx.errors import (
    ConfigError,
    DataError,
    DivergenceError,
    ModelFileError,
    RunFolderError,
    SmxError,
    note,
)
from smx.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from smx.modelfile import FittedModel
from smx.resume_check import check_state
from smx.runlock import LOCK_NAME, RunLock
from smx.training import STATE_FORMAT, Trainer, TrainResult, evaluate
from smx.types import SolverSpec

#: every file smx writes in a run folder: --overwrite replaces a folder holding only these
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", CHECKPOINT, "model.npz", "loss.png")
#: the temporary file of an atomic write of a run file (``.NAME.<random>.tmp``, random
#: from ``tempfile.mkstemp``), and smx 0.1's fixed-name one for the plot; nothing else
_TEMP = re.compile(r"\.(?:" + "|".join(map(re.escape, RUN_FILES)) + r")\.[a-z0-9_]+\.tmp"
                   r"|\.loss\.png\.tmp\.png")

Status = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def _status(enabled: bool) -> Status:
    """One ``smx: ...`` line on stderr per stage (loading, standardising, writing), so a
    large run is never silent before or after its progress bar."""
    if not enabled:
        return _quiet
    return lambda message: print(f"smx: {message}", file=sys.stderr, flush=True)


def load_data(cfg: RunConfig, plugins: Any, status: Status = _quiet, *,
              backend: Any = None) -> Splits:
    """The run's splits; a partitioned source is prepared by ``backend`` (default: the
    config's) where its rows live (:func:`smx.datasets.sources.prepare_partitioned`)."""
    from smx.datasets.sources import Partitioned, prepare_partitioned

    spec = plugins.get("dataset", cfg.data.name, where="data.name")
    params = cfg.data.params()
    where = str(params["path"]) if cfg.data.name == "file" and params.get("path") \
        else f"data ({cfg.data.name})"
    status(f"loading {where if cfg.data.name == 'file' else cfg.data.name + ' data'}...")
    try:
        loaded = spec.load(**params)
        if not isinstance(loaded, Partitioned):
            X, y, *weights = loaded
    except SmxError:
        raise
    except Exception as exc:  # a dataset plugin's own failure: one line naming it
        raise DataError(f"the dataset failed to load: {type(exc).__name__}: {exc}",
                        where=f"data ({cfg.data.name})") from None
    if isinstance(loaded, Partitioned):
        status(f"preparing {cfg.data.name} data where its chunks live...")
        splits = prepare_partitioned(loaded, cfg, plugins, backend)
    else:
        X, columns = np.asarray(X), column_names(X, np.shape(X)[-1] if np.ndim(X) == 2 else -1)
        status(f"splitting{' and standardising' if cfg.data.standardize else ''} "
               f"{X.shape[0]:,} rows x {X.shape[1] if X.ndim == 2 else '?'} features...")
        splits = prepare(
            X, np.asarray(y), val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction, seed=cfg.seed,
            standardize=cfg.data.standardize, where=where, dtype=cfg.dtype, columns=columns,
            sample_weight=weights[0] if weights else None, owned=getattr(spec, "owned", False),
        )
    opt = plugins.get("optimizer", cfg.optimizer.name)
    full_batch = isinstance(opt, SolverSpec)
    n = len(splits.y_train)
    if not full_batch and cfg.batch_size > n:  # as the estimator does: the whole set
        note(f"batch_size {cfg.batch_size} is larger than the training set ({n} rows): "
             f"every step uses all {n} rows")
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


def run_name(config_name: str, cfg: RunConfig) -> str:
    """The config's name, plus the data's when the config does not say it already
    (``smx run data.name=iris`` trains iris, so its folder is ``digits-iris-<time>``)."""
    data = cfg.data.name
    path = cfg.data.params().get("path")
    if data == "file" and isinstance(path, str):
        data = Path(path).stem or data
    data = re.sub(r"[^A-Za-z0-9._-]+", "_", data)[:40].strip("._") or "data"
    return config_name if data in config_name.split("-") or data == config_name \
        else f"{config_name}-{data}"


def _written_by_smx(entry: Path) -> bool:
    """One of :data:`RUN_FILES`, the lock, or a temporary file of an atomic write of one."""
    if entry.is_symlink() or not entry.is_file():
        return False
    return entry.name in RUN_FILES or entry.name == LOCK_NAME \
        or _TEMP.fullmatch(entry.name) is not None


def _refuse_foreign(path: Path, contents: list[Path]) -> None:
    foreign = sorted(p.name for p in contents if not _written_by_smx(p))
    if foreign:
        shown = f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}"
        raise RunFolderError(f"not an smx run folder (holds {shown}); refusing to replace it",
                             where=str(path))


def prepare_folder(path: Path, overwrite: bool) -> RunLock:
    """Create and lock the run folder; refuse to clobber an existing one without ``overwrite``.

    ``overwrite`` replaces only a run folder: one with a config.yaml and nothing but
    files smx writes, so a project folder that happens to hold a config.yaml is safe.
    Only those files are removed (the folder itself stays, with its lock), and only
    once the lock is held: a run still writing there makes this one fail instead.
    """
    try:
        exists = path.exists() or path.is_symlink()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise RunFolderError(f"cannot use the run folder: {why}", where=str(path)) from None
    if not exists:
        try:
            path.mkdir(parents=True)
            return RunLock(path).acquire()
        except FileExistsError:  # another run created it a moment ago: treated as existing
            pass
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else exc
            raise RunFolderError(f"cannot create the run folder: {why}", where=str(path)) \
                from None
    if not path.is_dir() or path.is_symlink():
        raise RunFolderError("exists and is not a folder", where=str(path))
    contents = list(path.iterdir())
    if contents and not overwrite:
        raise RunFolderError("run folder already exists; pass --overwrite to replace it",
                             where=str(path))
    _refuse_foreign(path, contents)
    lock = RunLock(path).acquire()
    try:
        contents = [p for p in path.iterdir() if p.name != LOCK_NAME]  # as it is now, locked
        _refuse_foreign(path, contents)
        if contents and not (path / "config.yaml").is_file():
            raise RunFolderError("not an smx run folder (has no config.yaml); refusing to "
                                 "replace it", where=str(path))
        for p in contents:
            p.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


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


def loss_figure(history: list[dict[str, Any]], best_epoch: int | None = None,
                best_label: str = "best epoch") -> Any:
    """The loss curves (log scale), validation accuracy, and the best epoch marked.

    A Figure on the Agg canvas, not pyplot (no GUI backend to look for, ~0.2 s less
    import); the legend sits above the axes, so it never covers a curve; fixed margins
    instead of ``tight_layout`` (~0.1 s).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(6.4, 4.4), dpi=100)
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
    if best_epoch is not None and best_epoch in epochs:
        ax.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1,
                   label=f"{best_label} ({best_epoch})")
        record = history[epochs.index(best_epoch)]
        key = "val_loss" if has_val else "train_loss"
        if record[key] is not None and math.isfinite(record[key]) and record[key] > 0:
            ax.plot([best_epoch], [record[key]], "o", color="0.2", markersize=5)
    lines = [ln for ln in ax.get_lines() + ax2.get_lines()
             if not ln.get_label().startswith("_")]
    fig.legend(lines, [ln.get_label() for ln in lines], loc="upper center", ncol=2,
               frameon=False, fontsize="small", bbox_to_anchor=(0.5, 1.0))
    fig.subplots_adjust(left=0.13, right=0.87, bottom=0.12, top=0.82)
    return fig


def plot_losses(history: list[dict[str, Any]], path: Path, best_epoch: int | None = None,
                best_label: str = "best epoch") -> None:
    """Write :func:`loss_figure` atomically (a temporary file of a unique name)."""
    fig = loss_figure(history, best_epoch, best_label)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


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


@dataclass
class RunOutcome:
    folder: Path
    summary: dict[str, Any]
    result: TrainResult


class Progress:
    """A tqdm bar over steps, moved at every ``log_every`` step and at each epoch's end,
    showing the epoch, the latest loss and the validation accuracy."""

    def __init__(self, total: int, enabled: bool, initial: int = 0, *, epochs: int = 0,
                 epoch: int = 0) -> None:
        from tqdm.auto import tqdm

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
    placement = hardware.select(cfg, plugins)
    splits = load_data(cfg, plugins, status, backend=placement.backend)
    preload_plotting()  # once the input is known good: a bad one exits at once
    # the Trainer writes no file: when it fails (device memory, a plugin), no folder is left
    trainer = Trainer(cfg, splits, placement.backend, placement.device, plugins)
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
        raise
    return _train_and_finish(cfg, folder, trainer, splits, placement, progress, t0, lock)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


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
        if isinstance(state, dict) and state.get("format") != STATE_FORMAT:
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
        trainer = Trainer(cfg, splits, placement.backend, placement.device, plugins)
        check_state(state, trainer.state_dict(), epochs=cfg.epochs,
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
        lock.release()
        raise
    return _train_and_finish(cfg, folder, trainer, splits, placement, progress, t0, lock)


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
                      placement: hardware.Placement, progress: bool, t0: float,
                      lock: RunLock) -> RunOutcome:
    """Train, then write model.npz, loss.png and summary.json; ``lock`` is released at
    the end, however the run ends."""
    try:
        return _train_and_write(cfg, folder, trainer, splits, placement, progress, t0)
    finally:
        lock.release()


def _train_and_write(cfg: RunConfig, folder: Path, trainer: Trainer, splits: Splits,
                     placement: hardware.Placement, progress: bool, t0: float) -> RunOutcome:
    backend, device = placement.backend, placement.device
    status = _status(progress)
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
        bar = Progress(cfg.epochs * trainer.steps_per_epoch, progress, initial=trainer.step,
                       epochs=cfg.epochs, epoch=trainer.epoch)
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
        status("evaluating the final parameters...")
        final = final_metrics(trainer, splits)
        engine = getattr(backend, "run_report", dict)()  # e.g. Dask workers' peak memory
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
    return RunOutcome(folder, summary, result)


def final_metrics(trainer: Trainer, splits: Splits) -> dict[str, Any]:
    """Train/validation/test loss and accuracy of the final parameters (None: empty split).

    ``train_loss`` is the quantity each metrics.jsonl line records for its epoch (the
    mean cross-entropy of that epoch's final parameters over the training split), so it
    equals the last line's, or the restored epoch's with ``restore_best``.

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
