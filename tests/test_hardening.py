"""Issue 13: what the bad-input battery (tests/test_bad_input.py) cannot show in one case
each: byte-flip sweeps over model and checkpoint files, crafted checkpoints with valid
checksums, run-folder locks, ``smx predict`` on headerless CSVs, standard input and
closed pipes, and the rough edges a new user meets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smx.checkpoint import load_checkpoint, save_checkpoint
from smx.cli import main
from smx.datasets.split import Standardizer
from smx.errors import ModelFileError, SmxError
from smx.modelfile import FittedModel, load_model
from smx.runlock import LOCK_NAME, RunLock
from tests.conftest import ROOT, assert_one_line_error, run_smx
from tests.test_bad_input import check_error, cli, snapshot

# --- model and checkpoint files: a flipped byte is an error line or the same contents ------


def _model(tmp_path: Path) -> tuple[FittedModel, Path, Path]:
    fitted = FittedModel(np.arange(6.0).reshape(3, 2) / 7, np.array([0.5, -0.5]),
                         np.array([3, 5]), Standardizer(np.array([1.0, 2, 3]),
                                                        np.array([1.0, 2, 0.5])),
                         {"label_column": "y", "columns": ["a", "b", "c"]})
    path = tmp_path / "m.npz"
    fitted.save(path)
    legacy = tmp_path / "legacy.npz"  # as smx 0.1 wrote it: no checksum
    with np.load(path) as f:
        np.savez(legacy, **{k: f[k] for k in f.files if k != "sha256"})
    return fitted, path, legacy


def _same_model(a: FittedModel, b: FittedModel) -> bool:
    arrays = [(a.W, b.W), (a.b, b.b), (a.classes, b.classes),
              (a.standardizer.mean, b.standardizer.mean),
              (a.standardizer.scale, b.standardizer.scale)]
    return a.meta == b.meta and all(x.dtype == y.dtype and np.array_equal(x, y)
                                    for x, y in arrays)


def _flips(data: bytes, step: int = 1):
    """``data`` with byte i inverted, for every ``step``-th i; every byte of the zip's
    directory (its last part, where a length flipped can silently drop entries) always."""
    directory = data.find(b"PK\x01\x02")
    for i in range(len(data)):
        if i % step == 0 or i >= directory:
            flipped = bytearray(data)
            flipped[i] ^= 0xFF if i % 2 else 0x01
            yield i, bytes(flipped)


@pytest.mark.parametrize("which", ["checksummed", "smx-0.1"])
def test_every_flipped_byte_of_a_model_file_is_an_error_or_the_same_model(which, tmp_path):
    fitted, path, legacy = _model(tmp_path)
    source = path if which == "checksummed" else legacy
    assert _same_model(load_model(source), fitted)  # a file of smx 0.1 still loads
    target = tmp_path / "f.npz"
    errors = 0
    for i, data in _flips(source.read_bytes(), step=1 if which == "checksummed" else 3):
        target.write_bytes(data)
        try:
            got = load_model(target)
        except ModelFileError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(target)), (i, str(exc))
            errors += 1
        else:
            assert _same_model(got, fitted), f"byte {i} flipped loads as a different model"
    assert errors > len(source.read_bytes()) // 4  # most are errors; the rest change nothing


def _state_equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _state_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(
            _state_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and (a == b or (a != a and b != b))


def test_flipped_bytes_of_a_checkpoint_are_errors_or_the_same_state(resumable, tmp_path):
    source = resumable / "checkpoint.npz"
    reference = load_checkpoint(source)
    target = tmp_path / "c.npz"
    for i, data in _flips(source.read_bytes(), step=5):
        target.write_bytes(data)
        try:
            got = load_checkpoint(target)
        except ModelFileError as exc:
            assert "\n" not in str(exc), (i, str(exc))
        else:
            assert _state_equal(got, reference), f"byte {i} flipped loads as another state"


def test_a_model_file_is_never_written_with_nan(tmp_path):
    fitted, _, _ = _model(tmp_path)
    fitted.standardizer = Standardizer(fitted.standardizer.mean, np.array([1.0, np.inf, 1]))
    with pytest.raises(ModelFileError, match="refusing to write a model whose scale holds"):
        fitted.save(tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


# --- --resume checks the whole checkpoint before touching the folder ----------------------


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    """A finished run with momentum and early-stopping state, built once; tests copy it."""
    from smx.config import load_config
    from smx.runner import run

    root = tmp_path_factory.mktemp("resumable")
    cfg = load_config({"data": {"name": "iris"}, "epochs": 3, "output": str(root / "out"),
                       "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                       "early_stopping": {"patience": 5, "restore_best": True}})
    run(cfg, progress=False)
    return root / "out"


def _crafted(change):
    def damage(folder: Path) -> None:
        state = load_checkpoint(folder / "checkpoint.npz")
        change(state)
        save_checkpoint(folder / "checkpoint.npz", state)  # a valid checksum
    return damage


def _set(path: str, value):
    def change(state):
        *parents, last = path.split(".")
        node = state
        for p in parents:
            node = node[p]
        node[last] = value(node[last]) if callable(value) else value
    return change


def _trace(change):
    """Replace the momentum link's state inside the (immutable) chain state."""
    def apply(state):
        chain = state["opt_state"]
        state["opt_state"] = (chain[0], change(chain[1]), *chain[2:])
    return apply


CRAFTED = {
    # id: (change to the saved state, words expected after "checkpoint does not fit")
    # SGD's state is the chain (decay, momentum trace, lr): the buffer is its second link's
    "momentum-buffer-wrong-shape": (
        _trace(lambda s: {"buf": {**s["buf"], "W": np.zeros((3, 3), np.float32)}}),
        "opt_state[1].buf.W: expected float32 of shape (4, 3)"),
    "momentum-buffer-wrong-dtype": (
        _trace(lambda s: {"buf": {**s["buf"], "W": s["buf"]["W"].astype(np.float64)}}),
        "opt_state[1].buf.W: expected float32"),
    "momentum-buffer-missing": (_trace(lambda s: {}), "opt_state[1]: keys differ"),
    "adam-state-for-sgd": (_trace(lambda s: {"t": 3, "m": s["buf"], "v": s["buf"]}),
                           "opt_state[1]: keys differ"),
    "negative-epoch": (_set("epoch", -5), "epoch: -5 is out of range"),
    "epoch-past-the-config": (_set("epoch", 9), "epoch: 9 is out of range (0 to 3)"),
    "epoch-not-an-int": (_set("epoch", 1.5), "epoch: expected an integer"),
    "step-does-not-fit-epoch": (_set("step", lambda s: s + 1), "step:"),
    "history-too-short": (_set("history", lambda h: h[:1]), "history: expected one record per"),
    "history-epochs-shuffled": (_set("history", lambda h: h[::-1]), "history[0]: expected"),
    "nan-parameters": (_set("params.W", lambda a: np.full_like(a, np.nan)),
                       "params.W: holds NaN/inf"),
    "parameters-wrong-shape": (_set("params.W", np.zeros((5, 3), np.float32)),
                               "params.W: expected float32 of shape (4, 3)"),
    "intercept-missing": (_set("params", lambda p: {"W": p["W"]}), "params: expected W, b"),
    "rng-garbage": (_set("rng", {"bit_generator": "PCG64", "state": 5}),
                    "rng: not a valid generator state"),
    "best-epoch-in-the-future": (_set("early_stopping.best_epoch", 7),
                                 "early_stopping.best_epoch: 7 is out of range"),
    "early-stopping-state-missing": (_set("early_stopping", None), "early_stopping: does not"),
    "elapsed-negative": (_set("elapsed", -1.0), "elapsed: -1.0 is out of range"),
    "unknown-key": (lambda s: s.update(extra=1), "(top level): unexpected: extra"),
    "stop-reason-not-text": (_set("stop_reason", 3), "stop_reason: expected text or null"),
}


@pytest.mark.parametrize(("change", "needle"), list(CRAFTED.values()), ids=list(CRAFTED))
def test_a_crafted_checkpoint_changes_nothing(change, needle, resumable, tmp_path, monkeypatch,
                                              capsys):
    import shutil

    shutil.copytree(resumable, tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    _crafted(change)(tmp_path / "out")
    before = snapshot(tmp_path)
    code, _, err = cli(["run", "--resume", "out", "--quiet"], capsys)
    check_error(code, err, ["out/checkpoint.npz: checkpoint does not fit this run:", needle])
    assert snapshot(tmp_path) == before  # summary.json kept, metrics.jsonl not cut


def test_resume_refuses_a_run_file_that_is_no_file(resumable, tmp_path, monkeypatch, capsys):
    """summary.json a folder: found before metrics.jsonl is rewritten, not after."""
    import shutil

    shutil.copytree(resumable, tmp_path / "out")
    (tmp_path / "out" / "summary.json").unlink()
    (tmp_path / "out" / "summary.json").mkdir()
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = cli(["run", "--resume", "out", "--quiet"], capsys)
    check_error(code, err, ["out/summary.json: is not a regular file"])
    assert snapshot(tmp_path) == before


def test_an_uncrafted_checkpoint_still_resumes(resumable, tmp_path, monkeypatch, capsys):
    """The check accepts what smx itself writes (a run stopped at epoch 1, resumed)."""
    import shutil

    shutil.copytree(resumable, tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", "--resume", "out", "--quiet"], capsys)
    assert code == 0, err
    assert not (tmp_path / "out" / LOCK_NAME).exists()


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "momentum": 0.9, "nesterov": True}, {"name": "adam", "lr": 0.01},
    {"name": "adamw"}, {"name": "rmsprop", "centered": True, "momentum": 0.5},
    {"name": "adagrad"}, {"name": "lbfgs"}])
def test_every_optimizers_mid_run_checkpoint_passes_the_check(optimizer, tmp_path,
                                                              monkeypatch):
    """What smx itself writes mid-run (L-BFGS history half full, Adam's moments...) is
    accepted, and the resumed run ends where an uninterrupted one does."""
    from smx.config import load_config
    from smx.report import Progress
    from smx.runner import resume, run

    def cfg(out):
        return load_config({"data": {"name": "iris"}, "epochs": 4, "output": str(out),
                            "optimizer": optimizer, "model": {"C": 1.0},
                            "early_stopping": {"restore_best": True}, "dtype": "float64"})

    real = Progress.on_epoch

    def interrupt_after_epoch_2(self, record):
        real(self, record)
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Progress, "on_epoch", interrupt_after_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            run(cfg(tmp_path / "cut"), progress=False)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.npz")["epoch"] == 2
    resumed = resume(tmp_path / "cut", progress=False)
    straight = run(cfg(tmp_path / "straight"), progress=False)
    assert resumed.summary["train_loss"] == straight.summary["train_loss"]
    assert np.array_equal(resumed.result.params["W"], straight.result.params["W"])


# --- one run at a time in a folder ----------------------------------------------------------


HOLDER = """
import sys
from smx.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held(tmp_path):
    """Another process holding the lock of ``tmp_path/out`` until the test ends."""
    (tmp_path / "out").mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "out")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.mark.parametrize("args", [["data.name=iris", "epochs=1", "output=out", "--overwrite"],
                                  ["--resume", "out"]])
def test_a_locked_run_folder_is_refused_naming_the_holder(args, resumable, held, tmp_path,
                                                          monkeypatch, capsys):
    import shutil

    for p in resumable.iterdir():
        shutil.copy(p, tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = cli(["run", *args, "--quiet"], capsys)
    check_error(code, err, ["out: in use by another smx process", f"PID {held.pid}"])
    assert snapshot(tmp_path) == before


def test_two_overwrite_runs_cannot_share_a_folder(tmp_path):
    """Two real processes: while the first --overwrite run trains (paused at step 3), a
    second one into the same folder exits 2 naming it and touches nothing. The first is
    then killed (its flock goes with it) and --resume finishes its run."""
    import signal
    import time

    from tests.plugin_fixtures import install_test_schedules

    site = install_test_schedules(tmp_path / "site")
    env = {"PYTHONPATH": str(site), "SMX_TEST_PAUSE_FLAG": str(tmp_path / "pause")}
    (tmp_path / "pause").touch()
    args = ["run", "data.name=iris", "schedule.name=pause-at", "schedule.at_step=3",
            "epochs=2", "output=out", "--overwrite", "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "smx", *args], cwd=tmp_path,
                             env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240  # a hang guard, not a timing assertion
        while not (tmp_path / "pause.paused").exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = snapshot(tmp_path / "out")
        second = run_smx(*args, cwd=tmp_path, env=env)
        assert_one_line_error(second, "out: in use by another smx process",
                              f"PID {first.pid}")
        assert snapshot(tmp_path / "out") == before
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    (tmp_path / "pause").unlink()
    resumed = run_smx("run", "--resume", "out", "--quiet", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "completed"
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_run_does_not_block(resumable, tmp_path, monkeypatch, capsys):
    import shutil

    shutil.copytree(resumable, tmp_path / "out")
    (tmp_path / "out" / LOCK_NAME).write_text("999999\n")  # its process is gone: no flock
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", "data.name=iris", "epochs=1", "output=out", "--overwrite",
                        "--quiet"], capsys)
    assert code == 0, err
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_locks_in_one_process_exclude_each_other_and_are_released(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(SmxError, match=f"in use by another smx process \\(PID {os.getpid()}\\)"):
        RunLock(tmp_path).acquire()
    first.release()
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert list(tmp_path.iterdir()) == []


def test_the_plot_is_written_through_a_temporary_file_of_its_own(resumable, tmp_path):
    """smx 0.1 wrote loss.png through the fixed name .loss.png.tmp.png, on which two runs
    collided; whatever sits at that name now is left alone."""
    from smx.plotting import write as plot_losses

    (tmp_path / ".loss.png.tmp.png").mkdir()  # writing through the fixed name fails here
    history = load_checkpoint(resumable / "checkpoint.npz")["history"]
    plot_losses(history, tmp_path / "loss.png", 2)
    assert (tmp_path / ".loss.png.tmp.png").is_dir()
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".loss.png.tmp.png", "loss.png"]


def test_a_path_too_long_is_one_short_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(f"output: {'x' * 100_000}\ndata: {{name: iris}}\n")
    code, _, err = cli(["run", "c.yaml", "--quiet"], capsys)
    line = check_error(code, err, ["cannot use the run folder: File name too long"])
    assert len(line) < 400
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


def test_boolean_labels_train_and_the_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    X = np.random.default_rng(0).normal(size=(60, 2))
    np.savez(tmp_path / "d.npz", X=X, y=X[:, 0] > 0)
    code, _, err = cli(["run", "data.name=file", "data.path=d.npz", "epochs=2", "output=o",
                        "--quiet"], capsys)
    assert code == 0, err
    assert load_model(tmp_path / "o" / "model.npz").classes.tolist() == [False, True]


def test_a_full_disk_names_the_file_and_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    import errno

    import smx.io

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write/fsync raise it

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(smx.io.os, "fsync", full)
    code, _, err = cli(["run", "data.name=iris", "epochs=1", "output=out", "--quiet"], capsys)
    check_error(code, err, ["smx: error: out/config.yaml: No space left on device"])
    assert list(tmp_path.iterdir()) == []
    code, _, err = cli(["run", "data.name=iris", "epochs=1", "--quiet"], capsys)  # runs/...
    check_error(code, err, ["smx: error: runs/digits-iris-", "No space left on device"])
    assert list(tmp_path.iterdir()) == []


# --- smx predict -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """A model trained on a CSV with a header (the model file keeps the column names)."""
    from sklearn.datasets import load_iris

    from smx.config import load_config
    from smx.runner import run

    root = tmp_path_factory.mktemp("csvrun")
    X, y = load_iris(return_X_y=True)
    lines = ["sl,sw,pl,pw,species"] + [",".join([*map(str, x), str(t)]) for x, t in zip(X, y,
                                                                                        strict=True)]
    (root / "iris.csv").write_text("\n".join(lines) + "\n")
    cfg = load_config({"data": {"name": "file", "path": str(root / "iris.csv"),
                                "label_column": "species"}, "epochs": 5,
                       "output": str(root / "out")})
    run(cfg, progress=False)
    return root


HEADERLESS_IRIS = ("5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n7.7,3.0,6.1,2.3\n5.0,3.4,1.5,0.2\n"
                   "6.0,2.2,5.0,1.5\n")


def test_a_headerless_csv_loses_no_row(csv_run, tmp_path, monkeypatch, capsys):
    """5 rows in, 5 predictions out: the first row is numbers where the model's columns have
    names, so it is data (said in a note), and --no-header / --header agree."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text(HEADERLESS_IRIS)
    model = str(csv_run / "out" / "model.npz")
    assert load_model(model).columns == ["sl", "sw", "pl", "pw"]
    code, out, err = cli(["predict", model, "d.csv"], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 1 + 5
    assert "smx: note: d.csv has no header row" in err
    code, out2, _ = cli(["predict", model, "d.csv", "--no-header"], capsys)
    assert out2 == out
    (tmp_path / "h.csv").write_text("sl,sw,pl,pw\n" + HEADERLESS_IRIS)
    code, out3, _ = cli(["predict", model, "h.csv"], capsys)
    assert out3 == out
    code, out4, _ = cli(["predict", model, "d.csv", "--header"], capsys)  # told: a header
    assert code == 0 and len(out4.splitlines()) == 1 + 4


def test_predict_reads_standard_input(csv_run, tmp_path):
    model = str(csv_run / "out" / "model.npz")
    (tmp_path / "h.csv").write_text("sl,sw,pl,pw\n" + HEADERLESS_IRIS)
    from_file = run_smx("predict", model, "h.csv", cwd=tmp_path)
    piped = subprocess.run([sys.executable, "-m", "smx", "predict", model, "-", "--proba"],
                           input="sl,sw,pl,pw\n" + HEADERLESS_IRIS, capture_output=True,
                           text=True, cwd=tmp_path, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert [ln.split(",")[0] for ln in piped.stdout.splitlines()] == \
        from_file.stdout.splitlines()
    bad = subprocess.run([sys.executable, "-m", "smx", "predict", model, "-"],
                         input="sl,sw,pl,pw\n1,2,x,4\n", capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert_one_line_error(bad, "<stdin>:2: column 'pl' is not a number: 'x'")


@pytest.mark.parametrize(("stdin", "needle"), [
    (None, "<stdin>: standard input is closed"),
    (b"\xff\xfe1,2\n", "<stdin>: cannot read as CSV text"),
    (b"", "<stdin>: empty file"),
])
def test_bad_standard_input_is_one_line(stdin, needle, csv_run, monkeypatch, capsys):
    import io

    fake = None if stdin is None else io.TextIOWrapper(io.BytesIO(stdin))
    monkeypatch.setattr(sys, "stdin", fake)
    code, out, err = cli(["predict", str(csv_run / "out" / "model.npz"), "-"], capsys)
    check_error(code, err, [needle])
    assert out == ""


def test_a_closed_pipe_ends_predict_quietly(csv_run, tmp_path):
    """`smx predict ... | head -1`: no error message, the status of a tool ended by SIGPIPE."""
    rows = np.random.default_rng(0).uniform(0, 8, size=(100_000, 4))
    np.savetxt(tmp_path / "big.csv", rows, delimiter=",", header="sl,sw,pl,pw", comments="")
    proc = subprocess.Popen([sys.executable, "-m", "smx", "predict",
                             str(csv_run / "out" / "model.npz"), "big.csv"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"prediction\n"
    proc.stdout.close()  # what head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert err == ""


# --- the rough edges a new user meets ----------------------------------------------------


def test_smx_configs_lists_the_shipped_configs_and_run_finds_them(capsys):
    from smx.cli import resolve_config_path

    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "synthetic", "lbfgs", "adam", "parity"):
        assert any(line.split()[0] == name for line in out.splitlines()[2:] if line.strip())
    assert "Full-batch L-BFGS" in out
    assert resolve_config_path("lbfgs") == ROOT / "configs" / "optimizers" / "lbfgs.yaml"


@pytest.mark.parametrize(("name", "hint"), [("iris", "'iris' is a dataset: smx run "
                                                     "data.name=iris"),
                                            ("lbfgz", "smx configs lists them")])
def test_smx_run_of_an_unknown_name_says_what_exists(name, hint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", name], capsys)
    check_error(code, err, [f"{name}: config file not found", "digits", hint])


def test_run_folders_are_named_after_config_and_data(tmp_path, monkeypatch, capsys):
    from smx.config import load_config
    from smx.run_folder import run_name

    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", "data.name=iris", "epochs=1", "--quiet"], capsys)
    assert code == 0, err
    assert [p.name.rsplit("-", 2)[0] for p in (tmp_path / "runs").iterdir()] == ["digits-iris"]
    assert run_name("digits", load_config({})) == "digits"
    assert run_name("lion-digits", load_config({})) == "lion-digits"
    assert run_name("adam", load_config({})) == "adam-digits"
    assert run_name("c", load_config({"data": {"name": "file", "path": "data/My Set.csv",
                                               "label_column": "y"}})) == "c-My_Set"


def test_switching_a_plugin_by_override_says_which_options_it_dropped(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", "optimizer.name=adam", "data.name=iris", "epochs=1",
                        "output=out", "--quiet"], capsys)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("smx: note:")]
    assert len(notes) == 1 and "optimizer.name=adam replaces sgd" in notes[0]
    assert "lr=0.1" in notes[0] and "adam's defaults apply" in notes[0]
    code, _, err = cli(["run", "optimizer.name=adam", "optimizer.lr=0.1", "data.name=iris",
                        "epochs=1", "output=out2", "--quiet"], capsys)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("smx: note:")]
    assert len(notes) == 1 and "momentum=0.9" in notes[0] and "lr=" not in notes[0]


def test_progress_moves_per_step_and_stages_are_announced(tmp_path, monkeypatch, capsys):
    from smx.report import Progress

    bar = Progress(100, True, epochs=4)
    bar.on_log(10, 0.5)
    assert bar.bar.n == 10  # moved at a log point, not only at the epoch's end
    bar.on_epoch({"epoch": 1, "step": 25, "train_loss": 0.4, "val_accuracy": None})
    assert bar.bar.n == 25
    bar.close()
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", "data.name=iris", "epochs=2", "output=out"], capsys)
    assert code == 0, err
    for stage in ("smx: loading iris data", "smx: splitting and standardising 150 rows x 4",
                  "smx: evaluating", "smx: writing model.npz, loss.png and summary.json"):
        assert stage in err, err
    assert "step" in err  # the bar counts steps


@pytest.mark.parametrize("restore", [False, True])
def test_train_loss_means_one_thing_in_metrics_and_summary(restore, tmp_path):
    from smx.config import load_config
    from smx.runner import run

    cfg = load_config({"data": {"name": "iris"}, "epochs": 6, "output": str(tmp_path / "o"),
                       "optimizer": {"name": "sgd", "lr": 2.0},
                       "early_stopping": {"restore_best": restore}})
    outcome = run(cfg, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    epoch = summary["restored_epoch"] if restore else len(lines)
    assert summary["train_loss"] == lines[epoch - 1]["train_loss"]
    assert summary["val_loss"] == lines[epoch - 1]["val_loss"]
    assert outcome.summary["train_loss"] == summary["train_loss"]


def test_the_plugins_table_fits_the_terminal(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80 and any("lbfgs" in ln for ln in lines)


def test_the_loss_plot_legend_covers_no_curve_and_the_best_epoch_is_marked():
    import matplotlib.pyplot as plt

    from smx.plotting import loss_figure

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e + (e - 3) ** 2 / 50,
                "val_accuracy": 0.5 + e / 20} for e in range(1, 9)]
    fig = loss_figure(history, 3, "restored epoch")
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "restored epoch (3)" in labels
    plt.close(fig)


def test_a_plugin_options_check_that_crashes_is_one_line():
    """A third-party params model raising something other than a ValueError."""
    import dataclasses

    from pydantic import field_validator

    from smx.config import load_config
    from smx.errors import ConfigError
    from smx.plugins import Plugins
    from smx.types import PluginParams

    class Fragile(PluginParams):
        lr: float = 0.1

        @field_validator("lr")
        @classmethod
        def _boom(cls, v: float) -> float:
            raise TypeError("fragile plugin")

    plugins = Plugins(entry_points=False)
    real_get = plugins.get

    def get(kind, name, **kw):
        spec = real_get(kind, name, **kw)
        return dataclasses.replace(spec, params=Fragile) if kind == "optimizer" else spec

    plugins.get = get  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="optimizer: the optimizer plugin 'sgd' could not "
                                          "check its options: TypeError: fragile plugin"):
        load_config({"optimizer": {"name": "sgd", "lr": 0.5}}, plugins=plugins)


def test_the_estimator_refuses_values_too_large_for_its_dtype():
    from smx import SoftmaxRegression
    from smx.errors import DataError

    X = np.c_[np.arange(20.0), np.r_[np.ones(19), 3e30]]
    y = np.arange(20) % 2
    with pytest.raises(DataError, match=r"fit: column 1 holds 3e\+30 \(row 19\), too large "
                                        "for float32 training"):
        SoftmaxRegression(dtype="float32", optimizer="sgd", epochs=1).fit(X, y)
    SoftmaxRegression(dtype="float64", optimizer="sgd", epochs=1).fit(X, y)  # fits float64


def test_a_solvers_train_loss_is_its_final_objective_less_the_penalty(tmp_path):
    """L-BFGS's epoch ends with the objective at its new parameters: train_loss is that
    less the penalty (no second pass), equal to an evaluation of the loss to rounding."""
    from smx.config import load_config
    from smx.plugins import get_plugins
    from smx.runner import load_data
    from smx.training import Trainer, evaluate

    plugins = get_plugins()
    cfg = load_config({"data": {"name": "wine", "val_fraction": 0}, "backend": "numpy",
                       "dtype": "float64",
                       "epochs": 4, "model": {"l2": 0.05}, "optimizer": {"name": "lbfgs"}},
                      plugins=plugins)
    splits = load_data(cfg, plugins)
    trainer = Trainer(cfg, splits, plugins.backend("numpy"), "cpu", plugins)
    calls = []
    real = trainer.objective.partial
    trainer.objective.partial = lambda *a, **k: (calls.append(k.get("grad", True)),
                                                 real(*a, **k))[1]
    for _ in range(3):
        trainer.end_epoch(trainer.run_epoch(), 0.0)
        assert False not in calls  # no loss-only pass over the training data
        calls.clear()
        exact = evaluate(trainer.backend, trainer.objective, trainer.params, trainer.train_data,
                         accuracy=False)["loss"]
        calls.clear()
        assert trainer.history[-1]["train_loss"] == pytest.approx(exact, rel=1e-13)
        assert trainer.params_train_loss == trainer.history[-1]["train_loss"]


# --- weights that leave a split weighing nothing ---------------------------------------------


def _weights_only_on(tmp_path: Path, part: str) -> Path:
    """50 rows whose sample weights are 1 on the rows the default split puts in ``part``
    (found by splitting with distinct weights once) and 0 on every other row."""
    from smx.datasets.split import prepare

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3)), np.arange(50) % 3
    ids = np.arange(1.0, 51.0)
    splits = prepare(X, y, val_fraction=0.15, test_fraction=0.2, seed=0, standardize=True,
                     where="t", dtype="float64", sample_weight=ids)
    held = getattr(splits, f"w_{part}").astype(int) - 1
    w = np.zeros(50)
    w[held] = 1.0
    path = tmp_path / f"only_{part}.npz"
    np.savez(path, X=X, y=y, w=w)
    return path


def _run(tmp_path: Path, data: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_smx("run", "data.name=file", f"data.path={data.name}", "data.sample_weight=w",
                   "seed=0", "output=out", "--quiet", *overrides, cwd=tmp_path)


def test_a_split_whose_weights_sum_to_0_has_no_loss(tmp_path):
    """Validation and test rows that all weigh 0: their weighted loss is a mean over
    nothing, reported as null (and 'n/a'), not as 0; accuracy still counts the rows."""
    proc = _run(tmp_path, _weights_only_on(tmp_path, "train"), "epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert "test loss n/a (its weights sum to 0)" in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["test_loss"] is None and summary["val_loss"] is None
    assert summary["test_accuracy"] is not None and summary["train_loss"] > 0
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(x)["val_loss"] is None for x in lines)


def test_monitoring_a_validation_loss_that_weighs_nothing_is_refused(tmp_path):
    proc = _run(tmp_path, _weights_only_on(tmp_path, "train"), "early_stopping.patience=2")
    assert_one_line_error(proc, "early_stopping.monitor", "sample weight 0")
    assert not (tmp_path / "out" / "model.npz").exists()


def test_a_training_part_that_weighs_nothing_is_refused(tmp_path):
    proc = _run(tmp_path, _weights_only_on(tmp_path, "test"))
    assert_one_line_error(proc, "zero for every row of the training part")


def test_class_weights_of_0_on_every_class_are_refused(tmp_path):
    proc = run_smx("run", "data.name=iris", "loss.class_weight={0: 0, 1: 0, 2: 0}",
                   "--quiet", "output=out", cwd=tmp_path)
    assert_one_line_error(proc, "loss.class_weight", "weight 0 to every class")
    assert not (tmp_path / "out" / "model.npz").exists()


def test_early_stopping_on_an_unmeasurable_metric_stops_with_one_line():
    """Class weights can zero the validation rows where sample weights did not: the rule
    says so instead of comparing None."""
    from types import SimpleNamespace

    from smx.errors import DataError
    from smx.stopping import EarlyStopping

    trainer = SimpleNamespace(history=[{"epoch": 1, "val_loss": None}])
    with pytest.raises(DataError, match="val_loss cannot be measured"):
        EarlyStopping(patience=2)(trainer)


@pytest.mark.parametrize(("file", "setting"), [
    ("d.csv", "data.labels=y.npy"),
    ("d.npz", "data.label_column=y"),
    ("d.npz", "data.labels=y.npy"),
    ("d.npy", "data.label_column=y"),
])
def test_a_file_setting_for_another_file_type_is_refused(tmp_path, file, setting):
    """A setting the file's type never reads would be silently ignored (labels from the
    CSV's own column while the user named a labels file): refused, naming it."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 2)), np.arange(30) % 2
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "d.npy", X)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    (tmp_path / "d.csv").write_text("a,b,y\n" + "".join(f"{a},{b},{c}\n"
                                                       for (a, b), c in zip(X, y, strict=True)))
    extra = ["data.labels=y.npy"] if file == "d.npy" and "labels" not in setting else []
    extra += ["data.label_column=y"] if file == "d.csv" else []
    proc = run_smx("run", "data.name=file", f"data.path={file}", setting, *extra,
                   "output=out", "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, f"data: {setting.split('=')[0]} applies to")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("path", "settings", "named"), [
    ("x.parquet", {"label_column": "y", "labels": "y.npy"}, "data.labels"),
    ("x.npy", {"labels": "y.npy", "label_column": "y"}, "data.label_column"),
    ("x.npy", {"labels": "y.npy", "features": "A"}, "data.features"),
    ("x.parquet", {"label_column": "y", "features": "A"}, "data.features"),
])
def test_a_source_setting_its_format_never_reads_is_refused(path, settings, named):
    from smx.datasets.sources import open_source
    from smx.errors import DataError

    with pytest.raises(DataError, match=f"{named} applies to"):
        open_source(path, **settings)


def test_a_relative_source_path_reaches_the_workers_absolute(tmp_path, monkeypatch):
    """Dask workers may run in another directory than the client that names the files."""
    from smx.datasets.sources import open_source

    monkeypatch.chdir(tmp_path)
    np.save("x.npy", np.ones((4, 2)))
    np.save("y.npy", np.arange(4) % 2)
    np.save("w.npy", np.ones(4))
    source = open_source("x.npy", labels="y.npy", sample_weight="w.npy").source
    assert source.path == str(tmp_path / "x.npy")
    assert source.labels == str(tmp_path / "y.npy")
    assert source.weights == str(tmp_path / "w.npy")
