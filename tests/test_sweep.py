"""``smx sweep``: specs, the plan, parallel runs, failures, resuming after a SIGKILL,
sweep.csv/table/plot, random and Optuna search, and a Dask cluster."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from smx.errors import ConfigError
from smx.sweep import make_plan, parse_spec, render
from tests.conftest import assert_one_line_error, run_smx, sigkill_when
from tests.plugin_fixtures import install_test_schedules

ROOT = Path(__file__).resolve().parent.parent
IRIS = ["data.name=iris", "backend=numpy", "epochs=3"]


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "iris.yaml"
    path.write_text("data: {name: iris}\nbackend: numpy\nepochs: 3\nbatch_size: 32\n")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# --- specs ------------------------------------------------------------------------------

@pytest.mark.parametrize("item, values, dist", [
    ("model.C=0.01,0.1,1", (0.01, 0.1, 1), None),
    ("optimizer.name=sgd,adam", ("sgd", "adam"), None),
    ("epochs=range(2,8,2)", (2, 4, 6), None),
    ("batch_size=range(3)", (0, 1, 2), None),
    ("data.name='a,b',iris", ("a,b", "iris"), None),
    ("backend_options={}", ({},), None),
    ("model.C=log-uniform(0.01, 10)", (0.01, 10.0), "log-uniform"),
    ("optimizer.lr=uniform(0.01,0.5)", (0.01, 0.5), "uniform"),
    ("optimizer.name=choice(sgd,adam)", ("sgd", "adam"), None),
])
def test_specs_read_as_yaml_values_and_distributions(item, values, dist):
    spec = parse_spec(item)
    assert spec.values == values and spec.dist == dist


@pytest.mark.parametrize("item, message", [
    ("model.C", "a sweep spec must look like key.sub=v1,v2"),
    ("model.C=", "a sweep spec must look like"),
    ("model..C=1", "a sweep spec must look like"),
    ("model.C=1,,2", "malformed YAML: expected the node content, but found ','"),
    ("epochs=range(1.5,3)", "range() takes one to three integers"),
    ("epochs=range(5,2)", "range() is empty"),
    ("epochs=range(1,5,0)", "range()'s step must not be 0"),
    ("model.C=log-uniform(0,1)", "log-uniform() takes two numbers, 0 < low < high"),
    ("model.C=log-uniform(1)", "log-uniform() takes two numbers"),
    ("model.C=uniform(2,1)", "uniform() takes two numbers, low < high"),
    ("model.C=choice()", "choice() needs arguments"),
    ("model.C=[1", "malformed YAML"),
])
def test_bad_specs_are_config_errors_naming_the_spec(item, message):
    with pytest.raises(ConfigError) as err:
        parse_spec(item)
    assert str(err.value).startswith(f"{item}: ") and message in str(err.value)


def test_the_grid_is_every_combination_and_random_is_seeded(tmp_path):
    config = write_config(tmp_path)
    plan = make_plan(config, ["model.C=1,10", "optimizer.lr=0.1,0.2,0.3", "epochs=2"],
                     "grid", None, 0)
    assert len(plan.runs) == 6 and plan.keys == ["model.C", "optimizer.lr"]
    assert plan.runs[1] == {"name": "run-001",
                            "values": {"model.C": 1, "optimizer.lr": 0.2, "epochs": 2}}
    items = ["model.C=log-uniform(0.01,100)", "optimizer.name=sgd,adam"]
    one, two = (make_plan(config, items, "random", 20, 7) for _ in range(2))
    assert one.runs == two.runs and len(one.runs) == 20
    assert all(0.01 <= r["values"]["model.C"] <= 100 for r in one.runs)
    assert {r["values"]["optimizer.name"] for r in one.runs} == {"sgd", "adam"}
    assert make_plan(config, items, "random", 20, 8).runs != one.runs


def test_render_writes_values_back_as_overrides():
    assert [render(v) for v in (0.01, 1, "adam", True, None, [1, 2], "a,b")] == [
        "0.01", "1", "adam", "true", "null", "[1, 2]", "a,b"]


# --- the command ----------------------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["model.C=log-uniform(1)"], ["model.C=log-uniform(1): log-uniform() takes two numbers"]),
    (["model.C=-1,1"], ["model.C: Input should be greater than 0", "(in the run with "
                        "model.C=-1)"]),
    (["model.X=1,2"], ["model.X: unknown key; allowed:"]),
    (["model.C=log-uniform(0.1,1)"], ["log-uniform() is sampled: give --random N or "
                                      "--optuna N"]),
    (["model.C=1,2", "--jobs", "0"], ["--jobs: must be at least 1, got 0"]),
    (["model.C=1,2", "model.C=3"], ["model.C=3: the key is swept twice"]),
    (["output=a,b"], ["output=a,b: each run's folder is chosen by the sweep"]),
    ([], ["smx sweep: nothing to sweep"]),
])
def test_bad_sweeps_are_one_line_and_leave_nothing(tmp_path, args, needles):
    config = write_config(tmp_path)
    proc = run_smx("sweep", str(config), *args, "-o", "sw", cwd=tmp_path)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "sw").exists()


def test_a_grid_runs_in_parallel_with_shared_cores_and_writes_csv_table_and_plot(tmp_path):
    config = write_config(tmp_path)
    proc = run_smx("sweep", str(config), "model.C=0.01,1", "optimizer.lr=0.05,0.2",
                   "--jobs", "2", "-o", "sw", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sw = tmp_path / "sw"
    rows = read_csv(sw / "sweep.csv")
    assert [r["run"] for r in rows] == ["run-000", "run-001", "run-002", "run-003"]
    assert [(r["model.C"], r["optimizer.lr"]) for r in rows] == [
        ("0.01", "0.05"), ("0.01", "0.2"), ("1", "0.05"), ("1", "0.2")]
    assert {r["status"] for r in rows} == {"completed"}
    cores = len(os.sched_getaffinity(0))
    for row in rows:  # each an ordinary run folder, its numbers those of its summary.json
        folder = sw / row["run"]
        summary = json.loads((folder / "summary.json").read_text())
        assert float(row["val_loss"]) == summary["val_loss"]
        assert float(row["test_accuracy"]) == summary["test_accuracy"]
        assert row["stop_reason"] == "max_epochs" and row["epochs_done"] == "3"
        assert float(row["train_seconds"]) == summary["train_seconds"]
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        assert cfg["model"]["C"] == float(row["model.C"])
        assert cfg["threads"] == max(1, cores // 2)
    table = proc.stdout.splitlines()
    assert table[0].split()[:5] == ["run", "model.C", "optimizer.lr", "val_loss",
                                    "val_accuracy"]
    shown = [float(line.split()[3]) for line in table[2:6]]
    assert shown == sorted(shown)  # best (lowest val_loss) first
    assert (sw / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same command again: nothing left to run, the same table
    again = run_smx("sweep", str(config), "model.C=0.01,1", "optimizer.lr=0.05,0.2",
                    "--jobs", "2", "-o", "sw", cwd=tmp_path)
    assert again.returncode == 0 and "4 run(s) already finished" in again.stderr
    assert again.stdout == proc.stdout


def test_another_sweep_in_the_same_folder_is_refused(tmp_path):
    config = write_config(tmp_path)
    assert run_smx("sweep", str(config), "epochs=1", "-o", "sw", cwd=tmp_path).returncode == 0
    proc = run_smx("sweep", str(config), "epochs=2", "-o", "sw", cwd=tmp_path)
    assert_one_line_error(proc, "sw: holds another sweep")


def test_the_default_folder_is_named_by_the_command_so_it_resumes(tmp_path):
    config = write_config(tmp_path)
    first = run_smx("sweep", str(config), "epochs=1,2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (folder,) = (tmp_path / "sweeps").iterdir()
    assert folder.name.startswith("iris-")
    second = run_smx("sweep", str(config), "epochs=1,2", cwd=tmp_path)
    assert "2 run(s) already finished" in second.stderr
    assert len(list((tmp_path / "sweeps").iterdir())) == 1


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path):
    config = write_config(tmp_path)
    proc = run_smx("sweep", str(config), "device=cuda:7,cpu", "-o", "sw", cwd=tmp_path)
    assert proc.returncode == 1
    assert "smx: 1 of 2 runs failed" in proc.stderr
    rows = {r["run"]: r for r in read_csv(tmp_path / "sw" / "sweep.csv")}
    assert rows["run-000"]["status"] == "failed"
    assert rows["run-000"]["error"].startswith("device: backend 'numpy' runs on the CPU")
    assert rows["run-001"]["status"] == "completed"
    assert proc.stdout.splitlines()[-2].split()[-1] == "failed"  # ranked last


def test_a_diverging_run_is_recorded_as_diverged(tmp_path):
    config = write_config(tmp_path)
    proc = run_smx("sweep", str(config), "optimizer.lr=1e30,0.1", "-o", "sw", cwd=tmp_path)
    rows = {r["run"]: r for r in read_csv(tmp_path / "sw" / "sweep.csv")}
    assert rows["run-000"]["status"] == "diverged" and "diverged" in rows["run-000"]["error"]
    assert rows["run-001"]["status"] == "completed" and proc.returncode == 0


def test_a_sigkilled_sweep_finishes_only_what_was_left(tmp_path):
    """run-000 blocks in epoch 3 (the test schedule pause-at, while the flag file exists),
    after the checkpoints of epochs 1 and 2; run-001 finishes. The sweep process is then
    SIGKILLed (its runs die with it); started again, it skips run-001 and resumes run-000
    from its checkpoint."""
    site = install_test_schedules(tmp_path / "site")
    flag = tmp_path / "pause"
    flag.touch()
    env = {**os.environ, "PYTHONPATH": str(site), "SMX_TEST_PAUSE_FLAG": str(flag)}
    config = write_config(tmp_path)
    args = [sys.executable, "-m", "smx", "sweep", str(config), "epochs=4", "batch_size=64",
            "schedule.name=pause-at", "schedule.at_step=5,1000", "--jobs", "2", "-o", "sw"]
    sw = tmp_path / "sw"
    sigkill_when(args, lambda: ((sw / "run-001" / "summary.json").exists()
                                and Path(f"{flag}.paused").exists()), cwd=tmp_path, env=env)
    assert not (sw / "run-000" / "summary.json").exists()
    assert len((sw / "run-000" / "metrics.jsonl").read_text().splitlines()) == 2
    finished = (sw / "run-001" / "summary.json").stat().st_mtime_ns
    flag.unlink()
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "1 run(s) already finished in sw; 1 left to run" in again.stderr
    assert "run-000: resuming from its checkpoint" in again.stderr
    assert (sw / "run-001" / "summary.json").stat().st_mtime_ns == finished
    epochs = [json.loads(line)["epoch"] for line in (sw / "run-000" / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3, 4]
    assert {r["status"] for r in read_csv(sw / "sweep.csv")} == {"completed"}


def test_random_search_samples_n_runs_within_the_bounds(tmp_path):
    config = write_config(tmp_path)
    proc = run_smx("sweep", str(config), "model.C=log-uniform(0.01,100)",
                   "optimizer.name=choice(sgd,adam)", "--random", "3", "--seed", "1",
                   "-o", "sw", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "sw" / "sweep.csv")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"completed"}
    assert all(0.01 <= float(r["model.C"]) <= 100 for r in rows)
    plan = make_plan(config, ["model.C=log-uniform(0.01,100)",
                              "optimizer.name=choice(sgd,adam)"], "random", 3, 1)
    assert [float(r["model.C"]) for r in rows] == [r["values"]["model.C"] for r in plan.runs]


def test_optuna_search_keeps_its_study_in_the_sweep_folder(tmp_path):
    optuna = pytest.importorskip("optuna")
    config = write_config(tmp_path)
    args = ["sweep", str(config), "model.C=log-uniform(0.01,100)", "optimizer.lr=0.05,0.2",
            "epochs=2", "--optuna", "3", "-o", "sw"]
    proc = run_smx(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="smx-sweep",
                              storage=f"sqlite:///{tmp_path / 'sw' / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    rows = read_csv(tmp_path / "sw" / "sweep.csv")
    for trial, row in zip(trials, rows, strict=True):
        assert row["run"] == f"run-{trial.number:03d}"
        assert float(row["model.C"]) == trial.params["model.C"]
        assert trial.value == float(row["val_loss"])
        assert row["epochs_done"] == "2"  # the fixed override holds in every trial
    assert study.direction.name == "MINIMIZE"
    again = run_smx(*args, cwd=tmp_path)  # done: no new trial
    assert "3 run(s) already finished" in again.stderr
    assert len(optuna.load_study(study_name="smx-sweep", storage=study._storage).trials) == 3


def test_optuna_refuses_choices_it_cannot_store(tmp_path):
    pytest.importorskip("optuna")
    config = write_config(tmp_path)
    proc = run_smx("sweep", str(config), "backend_options={},{a: 1}", "--optuna", "2",
                   "-o", "sw", cwd=tmp_path)
    assert_one_line_error(proc, "Optuna chooses among numbers, text and true/false")


def test_runs_on_a_dask_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    config = write_config(tmp_path)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="1GiB", dashboard_address=None) as cluster:
        proc = run_smx("sweep", str(config), "model.C=0.1,1,10", "--cluster",
                       cluster.scheduler_address, "-o", "sw", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "sw" / "sweep.csv")
    assert {r["status"] for r in rows} == {"completed"} and len(rows) == 3
    cfg = yaml.safe_load((tmp_path / "sw" / "run-000" / "config.yaml").read_text())
    assert cfg["threads"] == max(1, (os.cpu_count() or 1))  # one task slot per worker


def test_an_unreachable_cluster_is_one_line(tmp_path):
    pytest.importorskip("distributed")
    config = write_config(tmp_path)
    proc = run_smx("sweep", str(config), "model.C=0.1,1", "--cluster", "tcp://127.0.0.1:9",
                   "-o", "sw", cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "--cluster tcp://127.0.0.1:9: cannot connect to the Dask "
                          "scheduler")


def test_a_sigkilled_optuna_sweep_resumes_its_running_trial(tmp_path):
    """The trial running when the sweep was killed stays RUNNING in the study: started
    again, the sweep resumes its run from the checkpoint and tells Optuna its result."""
    optuna = pytest.importorskip("optuna")
    site = install_test_schedules(tmp_path / "site")
    flag = tmp_path / "pause"
    flag.touch()
    env = {**os.environ, "PYTHONPATH": str(site), "SMX_TEST_PAUSE_FLAG": str(flag)}
    config = write_config(tmp_path)
    args = [sys.executable, "-m", "smx", "sweep", str(config), "epochs=4", "batch_size=64",
            "schedule.name=pause-at", "schedule.at_step=5", "model.C=log-uniform(0.1,10)",
            "--optuna", "2", "-o", "sw"]
    sigkill_when(args, Path(f"{flag}.paused").exists, cwd=tmp_path, env=env)
    storage = f"sqlite:///{tmp_path / 'sw' / 'optuna.db'}"
    (trial,) = optuna.load_study(study_name="smx-sweep", storage=storage).get_trials()
    assert trial.state.name == "RUNNING"
    flag.unlink()
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "run-000: resuming from its checkpoint" in again.stderr
    trials = optuna.load_study(study_name="smx-sweep", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params == trial.params
    rows = read_csv(tmp_path / "sw" / "sweep.csv")
    assert [r["run"] for r in rows] == ["run-000", "run-001"]
    assert float(rows[0]["val_loss"]) == trials[0].value


def test_an_interrupted_sweep_says_how_to_finish_and_stops_its_runs(tmp_path):
    site = install_test_schedules(tmp_path / "site")
    flag = tmp_path / "pause"
    flag.touch()
    env = {**os.environ, "PYTHONPATH": str(site), "SMX_TEST_PAUSE_FLAG": str(flag)}
    config = write_config(tmp_path)
    args = [sys.executable, "-m", "smx", "sweep", str(config), "epochs=4", "batch_size=64",
            "schedule.name=pause-at", "schedule.at_step=5", "model.C=1,10", "-o", "sw"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not Path(f"{flag}.paused").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == ("smx: interrupted (the same command finishes what "
                                            "the sweep left)")
    flag.unlink()  # the paused run was stopped: its folder's lock is free to resume
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "run-000: resuming from its checkpoint" in again.stderr


def test_optuna_missing_is_one_line_naming_the_extra(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "optuna.py").write_text("raise ImportError('no optuna here')\n")
    config = write_config(tmp_path)
    proc = run_smx("sweep", str(config), "model.C=log-uniform(0.1,1)", "--optuna", "2",
                   "-o", "sw", cwd=tmp_path, env={"PYTHONPATH": str(fake)})
    assert_one_line_error(proc, "--optuna needs Optuna, which is not installed; pip install "
                          "'smx[optuna]'")
    assert not (tmp_path / "sw").exists()
