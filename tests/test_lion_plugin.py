"""plugins/smx-lion installed the way a user installs it, then found, listed, tested and trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_smx, write_yaml

PLUGIN = ROOT / "plugins" / "smx-lion"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``pip install --no-deps --target``: a real wheel build (pip may fetch the build backend)."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
         "--target", str(target), str(PLUGIN)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return target


@pytest.fixture
def env(site) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_installed_wheel_holds_the_package_and_its_entry_point(site):
    (info,) = site.glob("smx_lion-*.dist-info")
    assert "lion = smx_lion" in (info / "entry_points.txt").read_text()
    assert (site / "smx_lion" / "__init__.py").is_file()
    assert not (site / "tests").exists()  # the plugin's tests are not shipped


def test_smx_plugins_lists_lion_with_its_dist_and_options(env, tmp_path):
    proc = run_smx("plugins", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    (row,) = [ln for ln in proc.stdout.splitlines() if ln.split()[:2] == ["optimizer", "lion"]]
    assert "smx-lion 0.1.0" in row
    assert "lr=0.0001, beta1=0.9, beta2=0.99, weight_decay=0.0" in row


def test_optimizer_lion_trains_digits(env, tmp_path):
    """The plugin's example config (10 epochs, well under a second of training)."""
    cfg = write_yaml(tmp_path / "lion.yaml", (PLUGIN / "lion-digits.yaml").read_text())
    proc = run_smx("run", str(cfg), "output=out", "--quiet", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["optimizer"] == "lion"
    assert summary["epochs"] == 10
    assert summary["test_accuracy"] >= 0.92, summary


def test_a_bad_lion_option_names_the_key_and_the_valid_ones(env, tmp_path):
    proc = run_smx("run", "data.name=iris", "optimizer.name=lion", "optimizer.momentum=0.9",
                   "output=out", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "optimizer.momentum: unknown key; allowed: beta1, beta2, lr, weight_decay" in \
        proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_plugins_own_tests_pass_against_the_installed_copy(env, tmp_path):
    """Hand-computed first steps on numpy and array-api-strict, and smx's conformance kit,
    as a plugin author runs them."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from smx.testing import rule_names  # its own 8 tests, then the kit's rules twice

    assert f"{8 + 2 * len(rule_names('optimizer'))} passed" in proc.stdout
