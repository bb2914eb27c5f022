"""The ``mlflow`` callback: a run as an MLflow run, so runs and sweeps compare in ``mlflow ui``.

Logged: the resolved config flattened as params (``optimizer.lr``), each epoch's numbers as
metrics (step = epoch), the final summary (numbers as ``final/...`` metrics, the rest as
``smx.*`` tags), and config.yaml, metrics.jsonl, summary.json, model.npz and loss.png as
artifacts. By default the store is local and needs no server: ``mlruns/mlflow.db``
(SQLite, MLflow 3's own default kind of store: it keeps its plain-file store only
for folders that already hold one) with artifacts in ``mlruns/artifacts``,
under the working directory. A resumed run continues the MLflow run it started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from smx.callbacks import require
from smx.types import Callback, CallbackSpec, PluginParams, RunInfo

#: the run's numbers logged per epoch (epoch is the step)
METRICS = ("train_loss", "val_loss", "val_accuracy", "lr")
ARTIFACTS = ("config.yaml", "metrics.jsonl", "summary.json", "model.npz", "loss.png")
FOLDER_TAG = "smx.run_folder"


class MlflowParams(PluginParams):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (http://host:5000, sqlite:///path.db); "
        "default: sqlite:///mlruns/mlflow.db in the working directory")
    experiment: str = Field("smx", min_length=1, description="MLflow experiment name")
    run_name: str | None = Field(None, description="MLflow run name (default: the run "
                                 "folder's name)")


def default_store(cwd: Path | None = None) -> tuple[str, str]:
    """The embedded store: (tracking URI, artifact location) under ``cwd/mlruns``."""
    root = (cwd or Path.cwd()).resolve() / "mlruns"
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"optimizer": {"lr": 0.1}}`` -> ``{"optimizer.lr": "0.1"}`` (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:6000]  # MLflow's limit on a param's value
    return out


@contextlib.contextmanager
def _store_lock(root: Path) -> Iterator[None]:
    """Processes of one sweep create the embedded store's tables one at a time (two at
    once race on its migrations)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".smx-mlflow.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


class MlflowCallback(Callback):
    def __init__(self, tracking_uri: str | None = None, experiment: str = "smx",
                 run_name: str | None = None) -> None:
        require("mlflow", "mlflow", "mlflow")
        # a new store's "Creating initial MLflow database tables" INFO lines on stderr
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client: Any = None
        self.run_id: str | None = None
        self.folder: Path | None = None

    def on_run_start(self, run: RunInfo) -> None:
        with _quiet():
            self._start(run)

    def _start(self, run: RunInfo) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.folder = run.folder
        if self.tracking_uri is None:
            uri, artifacts = default_store()
            with _store_lock(Path(uri.removeprefix("sqlite:///")).parent):
                self.client = MlflowClient(tracking_uri=uri)
                experiment_id = self._experiment(artifacts)
        else:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment_id = self._experiment(None)
        folder = str(run.folder.resolve())
        if run.resumed:
            found = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{FOLDER_TAG}` = '{_quote(folder)}'",
                max_results=1, order_by=["attributes.start_time DESC"])
            if found:
                self.run_id = found[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return
        created = self.client.create_run(
            experiment_id, run_name=self.run_name or run.folder.name,
            tags={FOLDER_TAG: folder})
        self.run_id = created.info.run_id
        params = [Param(k, v) for k, v in flatten(run.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        for record in run.history:  # a resumed run whose MLflow run is gone: its epochs
            self._epoch(record)

    def _experiment(self, artifacts: str | None) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=artifacts)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        with _quiet():
            self._epoch(record)

    def _epoch(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(record[k]), now, record["epoch"]) for k in METRICS
                   if isinstance(record.get(k), int | float)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_run_end(self, summary: dict[str, Any]) -> None:
        with _quiet():
            self._end(summary)

    def _end(self, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        if self.run_id is None:
            return
        now, step = int(time.time() * 1000), int(summary.get("epochs") or 0)
        metrics = [Metric(f"final/{k}", float(v), now, step) for k, v in summary.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)]
        tags = [RunTag(f"smx.{k}", str(v)[:5000]) for k, v in summary.items()
                if isinstance(v, str)]
        self.client.log_batch(self.run_id, metrics=metrics[:1000], tags=tags)
        assert self.folder is not None
        for name in ARTIFACTS:
            if (self.folder / name).is_file():
                self.client.log_artifact(self.run_id, str(self.folder / name))
        status = "FINISHED" if summary.get("status") == "completed" else "FAILED"
        self.client.set_terminated(self.run_id, status=status)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's own deprecation warnings (SQLAlchemy's ``noload`` in its store) are not the
    user's to act on: kept from the run's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


MLFLOW = CallbackSpec(
    name="mlflow", factory=MlflowCallback, params=MlflowParams,
    description="the run as an MLflow run: params, per-epoch metrics, summary, model and "
                "plot (pip install 'smx[mlflow]'; local store mlruns/ by default)")
