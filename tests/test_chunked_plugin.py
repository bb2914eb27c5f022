"""plugins/smx-chunked installed the way a user installs it, then found, listed, tested and
trained: the example engine plugin, held to smx's conformance kit by its own tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_smx, write_yaml
from tests.plugin_fixtures import pip_install_target

PLUGIN = ROOT / "plugins" / "smx-chunked"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return pip_install_target(PLUGIN, tmp_path_factory.mktemp("site"))


@pytest.fixture
def env(site) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_installed_wheel_holds_the_package_and_its_entry_point(site):
    (info,) = site.glob("smx_chunked-*.dist-info")
    assert "chunked = smx_chunked" in (info / "entry_points.txt").read_text()
    assert (site / "smx_chunked" / "__init__.py").is_file()
    assert not (site / "tests").exists()


def test_smx_plugins_lists_the_engine_with_its_dist_and_options(env, tmp_path):
    proc = run_smx("plugins", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    (row,) = [ln for ln in proc.stdout.splitlines() if ln.split()[:2] == ["backend", "chunked"]]
    assert row.split()[2:] == ["chunked", "smx-chunked", "0.1.0", "ok", "chunk_rows=4096"]


def test_backend_chunked_trains_digits_as_numpy_does(env, tmp_path):
    """The plugin's example config (L-BFGS, chunks of 100 rows), and the same run on NumPy:
    the same parameters to rounding."""
    cfg = write_yaml(tmp_path / "chunked.yaml", (PLUGIN / "chunked-digits.yaml").read_text())
    for backend, options in (("chunked", []), ("numpy", ["backend_options={}"])):
        proc = run_smx("run", str(cfg), f"backend={backend}", *options, f"output={backend}",
                       "--quiet", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "chunked" / "summary.json").read_text())
    assert summary["backend"] == "chunked" and summary["test_accuracy"] >= 0.92, summary
    ours, ref = (np.load(tmp_path / b / "model.npz") for b in ("chunked", "numpy"))
    np.testing.assert_allclose(ours["W"], ref["W"], rtol=0, atol=1e-8)


def test_a_bad_engine_option_names_the_key(env, tmp_path):
    proc = run_smx("run", "data.name=iris", "backend=chunked", "backend_options.chunk_rows=0",
                   "output=out", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "backend_options.chunk_rows: Input should be greater than or equal to 1" in \
        proc.stderr


def test_the_plugins_own_tests_pass_against_the_installed_copy(env, tmp_path):
    """The conformance kit with one chunk and with chunks of 7 rows, plus the chunking."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "27 passed" in proc.stdout
