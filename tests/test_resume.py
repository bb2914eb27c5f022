"""Through the CLI: SIGKILL then ``--resume`` is bit-exact; divergence keeps the last checkpoint."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from smx.checkpoint import load_checkpoint
from smx.modelfile import load_model
from tests.conftest import assert_one_line_error, run_smx, sigkill_when, write_yaml
from tests.plugin_fixtures import install_test_schedules

# 1400 training rows / 32 = 44 steps per epoch; the pause is in epoch 4, after the
# checkpoint of epoch 2 and the metrics line of epoch 3 (so resuming must drop that line)
CONFIG = """\
data: {name: synthetic, n: 2000, d: 20, k: 4, separation: 2.0}
optimizer: {name: adam, lr: 0.01}
schedule: {name: pause-at, at_step: 150}
epochs: 6
batch_size: 32
log_every: 5
checkpoint_every: 2
dtype: float64
"""


def _metrics(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def _without_times(records):
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in records]


@pytest.fixture
def schedules_env(tmp_path):
    site = install_test_schedules(tmp_path / "site")
    return {"PYTHONPATH": str(site), "SMX_TEST_PAUSE_FLAG": str(tmp_path / "pause")}


def test_sigkill_then_resume_is_bit_identical(tmp_path, schedules_env):
    write_yaml(tmp_path / "c.yaml", CONFIG)
    flag = tmp_path / "pause"
    flag.touch()
    sigkill_when([sys.executable, "-m", "smx", "run", "c.yaml", "output=killed", "--quiet"],
                 (tmp_path / "pause.paused").exists, cwd=tmp_path,
                 env={**os.environ, **schedules_env})
    folder = tmp_path / "killed"
    assert not (folder / "summary.json").exists() and not (folder / "model.npz").exists()
    assert [r["epoch"] for r in _metrics(folder)] == [1, 2, 3]
    assert load_checkpoint(folder / "checkpoint.npz")["epoch"] == 2

    flag.unlink()
    (folder / ".checkpoint.npz.x1y2.tmp").write_bytes(b"half")  # as if killed mid-write
    resumed = run_smx("run", "--resume", "killed", "--quiet", cwd=tmp_path, env=schedules_env)
    assert resumed.returncode == 0, resumed.stderr
    straight = run_smx("run", "c.yaml", "output=straight", "--quiet", cwd=tmp_path,
                       env=schedules_env)
    assert straight.returncode == 0, straight.stderr

    a, b = load_model(folder / "model.npz"), load_model(tmp_path / "straight" / "model.npz")
    assert np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)
    ca = load_checkpoint(folder / "checkpoint.npz")
    cb = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    assert ca["epoch"] == cb["epoch"] == 6 and ca["step"] == cb["step"]
    adam_a, adam_b = ca["opt_state"][1], cb["opt_state"][1]  # chain(decay, adam, lr)
    for k in ("m", "v"):  # Adam's state came back exactly too
        assert np.array_equal(adam_a[k]["W"], adam_b[k]["W"])
    metrics = _metrics(folder)
    assert [r["epoch"] for r in metrics] == [1, 2, 3, 4, 5, 6]  # each epoch exactly once
    assert _without_times(metrics) == _without_times(_metrics(tmp_path / "straight"))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 6
    assert not list(folder.glob(".*.tmp"))


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, schedules_env):
    """NaN lr from step 100 (epoch 3): stop by the next log point (step 105), exit 3."""
    write_yaml(tmp_path / "c.yaml", CONFIG.replace("pause-at, at_step: 150", "nan-at, at_step: 100")
               .replace("checkpoint_every: 2", "checkpoint_every: 1"))
    proc = run_smx("run", "c.yaml", "output=out", "--quiet", cwd=tmp_path, env=schedules_env)
    line = assert_one_line_error(proc, "diverged at step 105:", "NaN/inf",
                                 "last finite loss: ", "lower optimizer.lr", code=3)
    assert "none yet" not in line
    folder = tmp_path / "out"
    ckpt = load_checkpoint(folder / "checkpoint.npz")
    assert ckpt["epoch"] == 2 and all(np.isfinite(v).all() for v in ckpt["params"].values())
    assert [r["epoch"] for r in _metrics(folder)] == [1, 2]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["checkpoint_epoch"] == 2
    assert not (folder / "model.npz").exists()


def test_a_huge_learning_rate_diverges_with_exit_3(tmp_path):
    """Real divergence, no test plugin: lr 1e36 on unstandardised data overflows float32.
    (Data whose values alone would overflow the logits is refused before training, exit 2:
    see tests/test_hardening.py.)"""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", X=rng.normal(size=(200, 3)) * 1e3, y=np.arange(200) % 2)
    proc = run_smx("run", "data.name=file", "data.path=big.npz", "data.standardize=false",
                   "optimizer.lr=1e36", "output=out", "epochs=3", "log_every=2", "--quiet",
                   cwd=tmp_path)
    assert_one_line_error(proc, "train: training diverged at step", "last finite loss",
                          "lower optimizer.lr", code=3)
    assert "Warning" not in proc.stderr  # NumPy's overflow warnings are not shown


# 14,000 training rows in batches of 10,000 x 200 features (2M cells: 32 row pieces on two
# threads, MIN_CELLS_PER_THREAD), so the thread count would show in the bits if it could;
# two steps an epoch, the pause is in epoch 3 (steps 5-6)
LOADED = """\
data: {name: synthetic, n: 20000, d: 200, k: 4, separation: 2.0}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
schedule: {name: pause-at, at_step: 6}
epochs: 5
batch_size: 10000
checkpoint_every: 2
dtype: float64
threads: auto
"""


def test_a_resumed_run_equals_an_unstopped_one_whatever_the_load_at_either_start(
        tmp_path, schedules_env):
    """``threads: auto`` picks the thread count from the load average at each start (issue
    22): here the killed run starts busy (1 thread), its resumption idle (every core) and
    the unstopped run busy again; the row pieces make the bits the same all the same."""
    write_yaml(tmp_path / "c.yaml", LOADED)
    fake = tmp_path / "fakeload"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('SMX_TEST_LOAD'):\n"
        "    os.getloadavg = lambda: (float(os.environ['SMX_TEST_LOAD']),) * 3\n")
    env = {**schedules_env, "PYTHONPATH": f"{fake}{os.pathsep}{schedules_env['PYTHONPATH']}"}
    flag = tmp_path / "pause"
    flag.touch()
    sigkill_when([sys.executable, "-m", "smx", "run", "c.yaml", "output=killed", "--quiet"],
                 (tmp_path / "pause.paused").exists, cwd=tmp_path,
                 env={**os.environ, **env, "SMX_TEST_LOAD": "64"})
    flag.unlink()
    resumed = run_smx("run", "--resume", "killed", "--quiet", cwd=tmp_path,
                      env={**env, "SMX_TEST_LOAD": "0"})
    assert resumed.returncode == 0, resumed.stderr
    straight = run_smx("run", "c.yaml", "output=straight", "--quiet", cwd=tmp_path,
                       env={**env, "SMX_TEST_LOAD": "64"})
    assert straight.returncode == 0, straight.stderr
    picked = [json.loads((tmp_path / f / "summary.json").read_text())["threads"]
              for f in ("killed", "straight")]
    assert picked[0] != picked[1] or os.cpu_count() == 1, picked  # the loads did change it
    a, b = load_model(tmp_path / "killed" / "model.npz"), load_model(
        tmp_path / "straight" / "model.npz")
    assert a.W.tobytes() == b.W.tobytes() and a.b.tobytes() == b.b.tobytes()
