"""smx 2.0's float64 results, recorded before the transformations took optax's shape
(tests/data/record_v2.py): every shipped config, and format-2 checkpoints resumed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from smx.checkpoint import load_checkpoint
from smx.training import STATE_FORMAT, upgrade_state
from tests.data.record_v2 import CONFIGS, config, trained

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def recorded():
    with np.load(DATA / "results_v2_float64.npz") as saved:
        return {k: saved[k] for k in saved.files}


def close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.dtype == np.float64 and got.shape == ref.shape, what
    assert np.abs(got - ref).max() <= 1e-12 * max(1.0, np.abs(ref).max()), what


def test_every_shipped_config_was_recorded(recorded):
    assert {k.rsplit("/", 1)[0] for k in recorded if "/" in k and not k.startswith(
        ("checkpoint/", "resumed/"))} == set(CONFIGS)
    assert len(CONFIGS) >= 9


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_float64_parameters_are_unchanged(recorded, name):
    """Within 1e-12 of smx 2.0's, after the optimizers became optax-shaped chains with the
    schedule as their last link (evaluated on the device from a step count)."""
    result = trained(config(name)).fit()
    assert result.steps == int(recorded[f"{name}/steps"])
    for k, got in result.params.items():
        close(got, recorded[f"{name}/{k}"], f"{name}/{k}")


@pytest.mark.parametrize("name", ["optimizers/adam.yaml", "optimizers/sgd.yaml"])
def test_a_format_2_checkpoint_resumes_to_the_recorded_parameters(recorded, name, tmp_path):
    """smx 2.0's checkpoints (Python-int step counts, no schedule count) are upgraded on
    load and continue where they stopped."""
    path = tmp_path / "checkpoint.npz"
    shutil.copy(DATA / f"checkpoint_v2_{Path(name).stem}.npz", path)
    state = load_checkpoint(path)
    assert state["format"] == 2
    trainer = trained(config(name))
    upgraded = upgrade_state(state, trainer.state_dict())
    assert upgraded["format"] == STATE_FORMAT
    trainer.load_state_dict(state)
    assert trainer.epoch == 1
    result = trainer.fit()
    for k, got in result.params.items():
        close(got, recorded[f"resumed/{name}/{k}"], f"resumed/{name}/{k}")


def test_upgrading_leaves_a_current_state_alone():
    trainer = trained(config("optimizers/adam.yaml"))
    state = trainer.state_dict()
    assert upgrade_state(state, state) is state
