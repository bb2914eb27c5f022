"""The ``tensorboard`` callback: each epoch's numbers as TensorBoard scalars, in event files
in the run folder (``tensorboard --logdir runs/`` compares runs, ``--logdir sweeps/X`` a
sweep's).

Written with TensorBoard's own event writer and protocol buffers, which need neither
TensorFlow nor PyTorch (PyTorch's ``SummaryWriter`` is a layer over the same writer).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from smx.callbacks import require
from smx.types import Callback, CallbackSpec, PluginParams, RunInfo

#: the record's numbers that become scalars (epoch is the step, not a scalar)
SCALARS = ("train_loss", "val_loss", "val_accuracy", "lr")


class TensorBoardParams(PluginParams):
    flush_every: int = Field(1, ge=1, description="epochs between flushes to disk (1: each "
                             "epoch is on disk when it ends)")


class TensorBoardCallback(Callback):
    def __init__(self, flush_every: int = 1) -> None:
        require("tensorboard", "tensorboard", "tensorboard")
        self.flush_every = max(flush_every, 1)
        self.writer: Any = None

    def on_run_start(self, run: RunInfo) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.writer = EventFileWriter(str(run.folder))

    def _scalars(self, step: int, values: dict[str, Any]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        shown = [Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()
                 if isinstance(v, int | float) and not isinstance(v, bool)]
        if shown:
            self.writer.add_event(Event(wall_time=time.time(), step=step,
                                        summary=Summary(value=shown)))

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self._scalars(record["epoch"], {k: record.get(k) for k in SCALARS})
        if record["epoch"] % self.flush_every == 0:
            self.writer.flush()

    def on_run_end(self, summary: dict[str, Any]) -> None:
        if self.writer is None:
            return
        final = {f"final/{k}": summary.get(k) for k in
                 ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                  "test_accuracy")}
        self._scalars(int(summary.get("epochs") or 0), final)
        self.writer.close()


TENSORBOARD = CallbackSpec(
    name="tensorboard", factory=TensorBoardCallback, params=TensorBoardParams,
    description="each epoch's losses, accuracy and lr as TensorBoard scalars in the run "
                "folder (pip install 'smx[tensorboard]')")
