"""The loss plot, drawn in its own process while the run trains.

matplotlib takes 0.3-0.5 s to import, about half of a small run's wall time.
:func:`start` runs ``python -m smx.plotting`` as ``smx run`` begins: it imports
matplotlib on another core while the run imports, loads its data and trains, then
waits for the history on its stdin, writes the PNG atomically and exits (at end of
input without a job, it exits quietly). A run that fails stops it (:func:`discard`).
Kept free of the rest of smx, so the child imports only this module and :mod:`smx.io`.
"""

from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

#: the plot process :func:`start` began, until :func:`write` or :func:`discard` ends it
_worker: subprocess.Popen | None = None


def start() -> None:
    """Start the plot process, unless one is already waiting for its job. ``smx run`` calls
    this first thing, so matplotlib's import overlaps the run's own imports and loading;
    without a process (it could not start, or it failed), :func:`write` draws here."""
    global _worker
    if _worker is not None and _worker.poll() is None:
        return
    try:
        _worker = subprocess.Popen([sys.executable, "-m", "smx.plotting"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
    except OSError:
        _worker = None


def discard() -> None:
    """End a plot process that will get no job (the run failed): it has written nothing,
    so it is stopped at once rather than left to finish importing matplotlib."""
    global _worker
    worker, _worker = _worker, None
    if worker is not None:
        worker.kill()
        worker.communicate()


def write(history: list[dict[str, Any]], path: Path, best_epoch: int | None = None,
          best_label: str = "best epoch") -> None:
    """Write the loss plot: through the plot process when one was started, else (or when
    it failed: this process then reports the same failure itself) here."""
    global _worker
    worker, _worker = _worker, None
    if worker is not None:
        job = json.dumps({"history": history, "path": str(path), "best_epoch": best_epoch,
                          "best_label": best_label}).encode()
        if _finish(worker, job) and path.is_file():
            return
    write_loss_plot(history, path, best_epoch, best_label)


def _finish(worker: subprocess.Popen, job: bytes, timeout: float = 120.0) -> bool:
    """Send ``job``, wait for the process; True when it exited cleanly."""
    try:
        worker.communicate(job, timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.communicate()
        return False
    except OSError:  # it died before reading its job (a broken pipe)
        worker.kill()
        worker.wait()
        return False
    return worker.returncode == 0


def import_plotting() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


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
             if not str(ln.get_label()).startswith("_")]
    fig.legend(lines, [str(ln.get_label()) for ln in lines], loc="upper center", ncol=2,
               frameon=False, fontsize="small", bbox_to_anchor=(0.5, 1.0))
    fig.subplots_adjust(left=0.13, right=0.87, bottom=0.12, top=0.82)
    return fig


def write_loss_plot(history: list[dict[str, Any]], path: Path, best_epoch: int | None = None,
                    best_label: str = "best epoch") -> None:
    """Write :func:`loss_figure` atomically (a temporary file of a unique name)."""
    from smx.io import atomic_write_bytes

    fig = loss_figure(history, best_epoch, best_label)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def main() -> int:
    """The plot process: import, read one job (JSON) from stdin, write it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes stdin
    import_plotting()
    raw = sys.stdin.buffer.read()
    if not raw:
        return 0
    job = json.loads(raw)
    write_loss_plot(job["history"], Path(job["path"]), job["best_epoch"], job["best_label"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
