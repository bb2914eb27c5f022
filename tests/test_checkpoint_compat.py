"""Checkpoints across the version-2 optimizer state: 0.1's are refused in one line, and a
crafted state that does not fit the config is refused before anything in the folder changes."""

from __future__ import annotations

import numpy as np
import pytest

from smx.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import assert_one_line_error, run_smx


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def run_folder(tmp_path):
    proc = run_smx("run", "data.name=iris", "epochs=3", "optimizer.name=adam",
                   "optimizer.lr=0.05", "output=run", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "run"


def test_a_checkpoint_of_0_1_is_refused_in_one_line(run_folder):
    state = load_checkpoint(run_folder / "checkpoint.npz")
    old = {k: v for k, v in state.items() if k != "format"}
    adam = state["opt_state"][1]  # 0.1 kept Adam's state as one dict
    old["opt_state"] = {"t": adam["t"], "m": adam["m"], "v": adam["v"]}
    save_checkpoint(run_folder / "checkpoint.npz", old)
    before = snapshot(run_folder)
    proc = run_smx("run", "--resume", str(run_folder), "--quiet", cwd=run_folder.parent)
    assert_one_line_error(proc, "written by smx 0.1", "start the run again")
    assert snapshot(run_folder) == before


@pytest.mark.parametrize("damage", ["momentum_shape", "missing_key", "negative_step"])
def test_a_state_that_does_not_fit_is_refused_before_any_file_changes(run_folder, damage):
    state = load_checkpoint(run_folder / "checkpoint.npz")
    adam = dict(state["opt_state"][1])
    if damage == "momentum_shape":
        adam["m"] = {**adam["m"], "W": np.zeros((2, 2))}
    elif damage == "missing_key":
        del adam["v"]
    else:
        adam["t"] = -5
    state["opt_state"] = (state["opt_state"][0], adam, *state["opt_state"][2:])
    save_checkpoint(run_folder / "checkpoint.npz", state)
    before = snapshot(run_folder)
    proc = run_smx("run", "--resume", str(run_folder), "--quiet", cwd=run_folder.parent)
    assert_one_line_error(proc, "does not fit", "opt_state[1]")
    assert snapshot(run_folder) == before
