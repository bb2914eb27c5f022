"""plugins/smx-focal installed the way a user installs it, then found, listed, tested and
trained: the example loss plugin, held to smx's conformance kit by its own tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_smx, write_yaml
from tests.plugin_fixtures import pip_install_target

PLUGIN = ROOT / "plugins" / "smx-focal"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return pip_install_target(PLUGIN, tmp_path_factory.mktemp("site"))


@pytest.fixture
def env(site) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_installed_wheel_holds_the_package_and_its_entry_point(site):
    (info,) = site.glob("smx_focal-*.dist-info")
    assert "focal = smx_focal" in (info / "entry_points.txt").read_text()
    assert (site / "smx_focal" / "__init__.py").is_file()
    assert not (site / "tests").exists()  # the plugin's tests are not shipped


def test_smx_plugins_lists_focal_with_its_dist_and_options(env, tmp_path):
    proc = run_smx("plugins", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    (row,) = [ln for ln in proc.stdout.splitlines() if ln.split()[:2] == ["loss", "focal"]]
    assert "smx-focal 0.1.0" in row and "gamma=2.0" in row


def test_loss_focal_trains_digits(env, tmp_path):
    """The plugin's example config: focal loss, balanced class weights, 10 epochs."""
    cfg = write_yaml(tmp_path / "focal.yaml", (PLUGIN / "focal-digits.yaml").read_text())
    proc = run_smx("run", str(cfg), "output=out", "--quiet", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    resolved = (tmp_path / "out" / "config.yaml").read_text()
    assert "name: focal" in resolved and "gamma: 2.0" in resolved
    assert summary["epochs"] == 10
    assert summary["test_accuracy"] >= 0.92, summary


def test_a_bad_focal_option_names_the_key(env, tmp_path):
    proc = run_smx("run", "data.name=iris", "loss.name=focal", "loss.gamma=-1", "output=out",
                   cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "loss.gamma: Input should be greater than or equal to 0" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_plugins_own_tests_pass_against_the_installed_copy(env, tmp_path):
    """The conformance kit at three values of γ, plus hand-worked values and γ = 0 being
    cross-entropy, on NumPy and array-api-strict."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "40 passed, 3 skipped" in proc.stdout  # label smoothing: focal has no such option
