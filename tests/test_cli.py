"""The CLI in a subprocess, as a user runs it: the run folder, predict, errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import yaml

from smx.modelfile import load_model
from tests.conftest import ROOT, assert_one_line_error, run_smx

RUN_FILES = {"config.yaml", "metrics.jsonl", "model.npz", "summary.json", "loss.png",
             "checkpoint.npz"}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    proc = run_smx("run", str(ROOT / "configs" / "digits.yaml"), "output=out", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, proc


def test_run_writes_the_run_folder(digits_run):
    cwd, proc = digits_run
    folder = cwd / "out"
    assert {p.name for p in folder.iterdir()} == RUN_FILES
    assert "test accuracy" in proc.stdout and "epoch" in proc.stderr  # progress bar
    resolved = yaml.safe_load((folder / "config.yaml").read_text())
    assert resolved["optimizer"]["nesterov"] is True and resolved["output"] == "out"
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == resolved["epochs"]
    assert set(lines[0]) >= {"epoch", "train_loss", "val_loss", "val_accuracy", "elapsed"}
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.95
    for key in ("train_loss", "val_accuracy", "test_loss", "backend", "device", "dtype",
                "versions", "wall_seconds"):
        assert key in summary
    assert summary["versions"]["numpy"] == np.__version__
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_file_is_pickle_free_and_predicts(digits_run):
    cwd, _ = digits_run
    path = cwd / "out" / "model.npz"
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            with zf.open(name) as fh:
                header = fh.read(200)
            assert b"'descr': '|O'" not in header, name
    fitted = load_model(path)
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    assert (fitted.predict(X) == y).mean() > 0.95
    np.savez(cwd / "X.npz", X=X[:5])
    proc = run_smx("predict", "out/model.npz", "X.npz", "--proba", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.strip().splitlines()
    assert rows[0].startswith("prediction,p_0,") and len(rows) == 6
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(fitted.predict(X[:5]))


def test_existing_run_folder_needs_overwrite(digits_run):
    cwd, _ = digits_run
    before = (cwd / "out" / "summary.json").read_text()
    proc = run_smx("run", "data.name=iris", "output=out", cwd=cwd)
    assert_one_line_error(proc, "out", "already exists", "--overwrite")
    assert (cwd / "out" / "summary.json").read_text() == before


def test_predict_feature_mismatch_and_corrupt_model(digits_run):
    cwd, _ = digits_run
    np.save(cwd / "narrow.npy", np.zeros((3, 5)))
    proc = run_smx("predict", "out/model.npz", "narrow.npy", cwd=cwd)
    assert_one_line_error(proc, "expects 64 features", "has 5")
    data = (cwd / "out" / "model.npz").read_bytes()
    (cwd / "truncated.npz").write_bytes(data[: len(data) // 2])
    proc = run_smx("predict", "truncated.npz", "narrow.npy", cwd=cwd)
    assert_one_line_error(proc, "truncated.npz", "corrupted or truncated")


def test_default_config_runs_with_no_arguments(tmp_path):
    proc = run_smx("run", "epochs=2", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("digits-")


def test_file_dataset_with_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["f1,f2,animal"]
    for i in range(120):
        label = ["cat", "dog", "eel"][i % 3]
        center = {"cat": 0.0, "dog": 4.0, "eel": 8.0}[label]
        lines.append(f"{center + rng.normal()},{rng.normal()},{label}")
    (tmp_path / "pets.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "pets.yaml").write_text(
        "data:\n  name: file\n  path: pets.csv\n  label_column: animal\nepochs: 10\n"
        "batch_size: 16\noutput: pets-run\n")
    proc = run_smx("run", "pets.yaml", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(load_model(tmp_path / "pets-run" / "model.npz").classes) == ["cat", "dog", "eel"]
    proc = run_smx("predict", "pets-run/model.npz", "pets.csv", "--label-column", "animal",
                   "-o", "pred.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    preds = (tmp_path / "pred.csv").read_text().splitlines()
    assert preds[0] == "prediction" and set(preds[1:]) <= {"cat", "dog", "eel"}


@pytest.mark.parametrize(("args", "needles"), [
    (["data.name=file", "data.path=nope.npz"], ["nope.npz", "file not found"]),
    (["data.name=nosuch"], ["data.name", "unknown dataset", "digits"]),
    (["backend=numpy", "device=cuda:0"], ["device", "runs on the CPU"]),
])
def test_cli_bad_inputs(tmp_path, args, needles):
    proc = run_smx("run", *args, "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, *needles)
    assert list(tmp_path.iterdir()) == []


def test_options_may_come_before_overrides(tmp_path):
    proc = run_smx("run", "digits", "--quiet", "epochs=2", "output=o", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epochs: 2" in (tmp_path / "o" / "config.yaml").read_text()
    proc = run_smx("run", "--bogus", cwd=tmp_path)
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr
