"""The runner around the Trainer: run folder names, failures that leave nothing behind,
valid JSON for empty splits, and device memory handed back only once it is unreferenced."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import stat
import weakref

import pytest

import smx.errors
import smx.run_folder
import smx.runner
from smx import hardware
from smx.backends.numpy_backend import NumpyBackend
from smx.cli import main
from smx.config import load_config
from smx.datasets.load import load_data
from smx.errors import PluginError, RunFolderError
from smx.io import atomic_write_text
from smx.plugins import Plugins
from smx.report import final_metrics
from smx.run_folder import create_default_folder
from smx.runner import run
from smx.training import Trainer

PLUGINS = Plugins(entry_points=False)
IRIS = {"data": {"name": "iris"}, "epochs": 2}


def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def test_runs_started_in_the_same_second_get_their_own_folders(in_tmp, monkeypatch):
    from pathlib import Path

    monkeypatch.setattr(smx.run_folder, "default_output", lambda name: Path("runs") / "c-1")
    first = create_default_folder("c")
    (first / "config.yaml").write_text("mine\n")
    assert [create_default_folder("c") for _ in range(2)] == [Path("runs/c-1-2"),
                                                              Path("runs/c-1-3")]
    assert (first / "config.yaml").read_text() == "mine\n"  # never reused nor replaced


def test_default_output_is_never_overwritten(in_tmp, monkeypatch):
    from pathlib import Path

    monkeypatch.setattr(smx.run_folder, "default_output", lambda name: Path("runs") / "c-1")
    Path("runs/c-1").mkdir(parents=True)
    (Path("runs/c-1") / "config.yaml").write_text("first run\n")
    cfg = load_config({**IRIS, "epochs": 1}, plugins=PLUGINS)
    outcome = run(cfg, config_name="c", overwrite=True, plugins=PLUGINS, progress=False)
    assert outcome.folder == Path("runs/c-1-2")
    assert (Path("runs/c-1") / "config.yaml").read_text() == "first run\n"


def _failing_optimizer_plugins() -> Plugins:
    plugins = Plugins(entry_points=False)
    real_get = plugins.get

    def boom(**params):
        raise RuntimeError("needs a GPU it cannot find")

    def get(kind, name, **kw):
        spec = real_get(kind, name, **kw)
        return dataclasses.replace(spec, factory=boom) if kind == "optimizer" else spec

    plugins.get = get  # type: ignore[method-assign]
    return plugins


def test_a_failing_plugin_factory_is_one_line_and_leaves_no_folder(in_tmp):
    plugins = _failing_optimizer_plugins()
    cfg = load_config({**IRIS, "output": "out"}, plugins=plugins)
    with pytest.raises(PluginError, match="the optimizer plugin 'sgd' failed: RuntimeError: "
                                          "needs a GPU"):
        run(cfg, plugins=plugins, progress=False)
    assert list(in_tmp.iterdir()) == []


class Tracking(NumpyBackend):
    """NumPy whose "device arrays" are fresh copies, each watched through a weak reference:
    at ``release`` every one of them must be unreferenced, or its memory could not be freed."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.alive_at_release: list[int] = []

    def from_host(self, array, device, dtype=None):
        out = super().from_host(array, device, dtype).copy()
        self.refs.append(weakref.ref(out))
        return out

    def release(self, device):
        gc.collect()
        self.alive_at_release.append(sum(r() is not None for r in self.refs))


@pytest.mark.parametrize("extra", [{}, {"early_stopping": {"patience": 5, "restore_best": True}},
                                   {"optimizer": {"name": "sgd", "lr": 1e30}}],
                         ids=["plain", "restore-best", "diverging"])
def test_device_memory_is_released_only_once_unreferenced(extra, in_tmp, monkeypatch):
    backend = Tracking()
    monkeypatch.setattr(hardware, "select", lambda cfg, plugins: hardware.Placement(backend,
                                                                                    "cpu"))
    cfg = load_config({**IRIS, **extra, "output": "out"}, plugins=PLUGINS)
    try:
        run(cfg, plugins=PLUGINS, progress=False)
    except smx.errors.DivergenceError:
        assert "lr" in str(extra)
    assert backend.refs and backend.alive_at_release == [0]


def test_final_metrics_uploads_only_the_test_split():
    cfg = load_config(IRIS, plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    backend = Tracking()
    trainer = Trainer(cfg, splits, backend, "cpu", PLUGINS)
    trainer.fit()
    before = len(backend.refs)
    out = final_metrics(trainer, splits)
    assert len(backend.refs) - before == 2  # X_test and y_test
    assert out["train_accuracy"] > 0.8 and out["test_loss"] > 0


def test_empty_splits_give_valid_json_and_say_no_test_split(in_tmp, capsys):
    code = main(["run", "data.name=iris", "epochs=2", "data.val_fraction=0",
                 "data.test_fraction=0", "output=out", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "out: no test split (numpy" in out and "nan" not in out
    summary = _strict_json((in_tmp / "out" / "summary.json").read_text())
    assert summary["test_loss"] is None and summary["val_accuracy"] is None
    assert summary["train_accuracy"] > 0.5
    for line in (in_tmp / "out" / "metrics.jsonl").read_text().splitlines():
        assert _strict_json(line)["val_loss"] is None


def test_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_a_file_where_the_run_folder_goes_is_refused(in_tmp):
    (in_tmp / "out").write_text("x")
    with pytest.raises(RunFolderError, match="exists and is not a folder"):
        smx.runner.prepare_folder(in_tmp / "out", overwrite=True)


def test_the_model_file_remembers_the_label_column(in_tmp):
    from smx.modelfile import load_model

    (in_tmp / "d.csv").write_text("a,b,target\n" + "".join(f"{i % 5},{i % 3},{i % 2}\n"
                                                           for i in range(40)))
    cfg = load_config({"data": {"name": "file", "path": "d.csv", "label_column": "target"},
                       "epochs": 1, "batch_size": 8, "output": "out"}, plugins=PLUGINS)
    run(cfg, plugins=PLUGINS, progress=False)
    assert load_model(in_tmp / "out" / "model.npz").meta["label_column"] == "target"


def test_device_out_of_memory_is_one_line_and_leaves_no_folder(in_tmp, monkeypatch):
    class Full(NumpyBackend):
        def from_host(self, array, device, dtype=None):
            raise MemoryError("Out of memory allocating 4,800 bytes")

    monkeypatch.setattr(hardware, "select", lambda cfg, plugins: hardware.Placement(Full(),
                                                                                    "cpu"))
    cfg = load_config({**IRIS, "output": "out"}, plugins=PLUGINS)
    with pytest.raises(smx.errors.DataError, match="device: the data does not fit in the "
                                                   "memory of numpy on cpu"):
        run(cfg, plugins=PLUGINS, progress=False)
    assert list(in_tmp.iterdir()) == []
