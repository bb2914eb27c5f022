"""The MLflow and TensorBoard callbacks, read back with each library's own reader: MLflow's
tracking client and TensorBoard's event accumulator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smx.callbacks.mlflow_sink import MLFLOW, flatten
from smx.callbacks.tensorboard_sink import TENSORBOARD
from smx.config import load_config
from smx.plugins import Plugins
from smx.runner import resume, run
from smx.testing import parametrize_with_checks
from tests.conftest import run_smx

PLUGINS = Plugins(entry_points=False)


def iris(out, **extra):
    return load_config({"data": {"name": "iris"}, "backend": "numpy", "epochs": 4,
                        "threads": 1, "output": str(out), **extra}, plugins=PLUGINS)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_flatten_names_each_leaf_by_its_key_path():
    assert flatten({"optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 3, "output": None,
                    "callbacks": [{"name": "mlflow"}], "backend_options": {}}) == {
        "optimizer.name": "sgd", "optimizer.lr": "0.1", "epochs": "3", "output": "null",
        "callbacks": '[{"name": "mlflow"}]', "backend_options": "{}"}


def test_mlflow_run_reads_back_with_mlflows_client(in_tmp):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    outcome = run(iris(in_tmp / "run", callbacks=[{"name": "mlflow"}]), plugins=PLUGINS,
                  progress=False)
    # the embedded default: a SQLite store under ./mlruns, no server
    assert (in_tmp / "mlruns" / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smx")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    params = found.data.params
    assert params["optimizer.name"] == "sgd" and params["data.name"] == "iris"
    assert params["epochs"] == "4" and params["output"] == str(outcome.folder)
    lines = [json.loads(line) for line in (outcome.folder / "metrics.jsonl").open()]
    history = client.get_metric_history(found.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["val_accuracy"])
                                                    for r in lines]
    assert len(client.get_metric_history(found.info.run_id, "train_loss")) == 4
    summary = outcome.summary
    assert found.data.metrics["final/test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert found.data.tags["smx.stop_reason"] == "max_epochs"
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"model.npz", "loss.png", "summary.json", "config.yaml"} <= artifacts
    local = client.download_artifacts(found.info.run_id, "model.npz", str(in_tmp))
    assert Path(local).read_bytes() == (outcome.folder / "model.npz").read_bytes()


def test_mlflow_tracking_uri_and_a_resumed_run_continue_one_mlflow_run(in_tmp):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{in_tmp / 'elsewhere.db'}"
    entry = {"name": "mlflow", "tracking_uri": uri, "experiment": "tuning"}
    run(iris(in_tmp / "run", callbacks=[entry]), plugins=PLUGINS, progress=False)
    resume(in_tmp / "run", plugins=PLUGINS, progress=False)
    assert not (in_tmp / "mlruns" / "mlflow.db").exists()  # the store named is the one used
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("tuning").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_mlflow_marks_a_diverged_run_failed(in_tmp):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from smx.errors import DivergenceError

    cfg = iris(in_tmp / "run", callbacks=[{"name": "mlflow"}],
               optimizer={"name": "sgd", "lr": 1e30})
    with pytest.raises(DivergenceError):
        run(cfg, plugins=PLUGINS, progress=False)
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp / 'mlruns' / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("smx").experiment_id])
    assert found.info.status == "FAILED" and found.data.tags["smx.status"] == "diverged"


def test_tensorboard_scalars_read_back_with_tensorboards_reader(in_tmp):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome = run(iris(in_tmp / "run", callbacks=[{"name": "tensorboard"}]), plugins=PLUGINS,
                  progress=False)
    events = [p.name for p in outcome.folder.iterdir() if p.name.startswith("events.out")]
    assert len(events) == 1
    acc = EventAccumulator(str(outcome.folder))
    acc.Reload()
    lines = [json.loads(line) for line in (outcome.folder / "metrics.jsonl").open()]
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [r["epoch"] for r in lines]
        assert [v for _, v in got] == pytest.approx([r[key] for r in lines], rel=1e-6)
    (final,) = acc.Scalars("final/test_accuracy")
    assert final.value == pytest.approx(outcome.summary["test_accuracy"], rel=1e-6)


def test_tensorboard_event_files_leave_the_run_folder_replaceable(in_tmp):
    pytest.importorskip("tensorboard")
    args = ["run", "data.name=iris", "epochs=2", "output=out", "--quiet",
            "callbacks=[{name: tensorboard}]"]
    assert run_smx(*args, cwd=in_tmp).returncode == 0
    proc = run_smx(*args, "--overwrite", cwd=in_tmp)
    assert proc.returncode == 0, proc.stderr
    assert len([p for p in os.listdir(in_tmp / "out") if p.startswith("events.out")]) == 1


@parametrize_with_checks([MLFLOW, TENSORBOARD])
def test_contract(obj, check):
    pytest.importorskip(obj.name)
    check(obj)
