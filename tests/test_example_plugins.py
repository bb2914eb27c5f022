"""The example plugins in plugins/ installed the way a user installs them (a real wheel build),
then found, listed, trained, refused bad options, and held to smx's conformance kit by their
own tests run against the installed copy. One table row per plugin; what differs in how each
trains stays a test of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_smx, write_yaml
from tests.plugin_fixtures import pip_install_target


@dataclass(frozen=True)
class Example:
    folder: str  # under plugins/, also the distribution's name
    kind: str
    name: str
    listed: str  # text `smx plugins` shows in the plugin's row (dist, version, options)
    bad: tuple[str, ...]  # overrides with one bad option
    refused: str  # the error line those overrides give
    own_tests: str  # pytest's summary of the plugin's own tests

    @property
    def package(self) -> str:
        return self.folder.replace("-", "_")


def _kit_rules(kind: str) -> int:
    from smx.testing import rule_names

    return len(rule_names(kind))


EXAMPLES = {
    e.folder: e for e in (
        Example("smx-focal", "loss", "focal", "smx-focal 0.1.0 ok gamma=2.0",
                ("loss.name=focal", "loss.gamma=-1"),
                "loss.gamma: Input should be greater than or equal to 0",
                "40 passed, 3 skipped"),  # 3 label-smoothing rules: focal has no such option
        Example("smx-chunked", "backend", "chunked", "smx-chunked 0.1.0 ok chunk_rows=4096",
                ("backend=chunked", "backend_options.chunk_rows=0"),
                "backend_options.chunk_rows: Input should be greater than or equal to 1",
                "27 passed"),  # the kit with one chunk and chunks of 7 rows, plus the chunking
        Example("smx-lion", "optimizer", "lion",
                "smx-lion 0.1.0 ok lr=0.0001, beta1=0.9, beta2=0.99, weight_decay=0.0",
                ("optimizer.name=lion", "optimizer.momentum=0.9"),
                "optimizer.momentum: unknown key; allowed: beta1, beta2, lr, weight_decay",
                f"{8 + 2 * _kit_rules('optimizer')} passed"),  # 8 hand-worked, the kit twice
    )
}


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def example(request, tmp_path_factory) -> tuple[Example, dict[str, str], Path]:
    ex = EXAMPLES[request.param]
    site = pip_install_target(ROOT / "plugins" / ex.folder, tmp_path_factory.mktemp("site"))
    return ex, {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}, site


def test_installed_wheel_holds_the_package_and_its_entry_point(example):
    ex, _, site = example
    (info,) = site.glob(f"{ex.package}-*.dist-info")
    assert f"{ex.name} = {ex.package}" in (info / "entry_points.txt").read_text()
    assert (site / ex.package / "__init__.py").is_file()
    assert not (site / "tests").exists()  # the plugin's tests are not shipped


def test_smx_plugins_lists_it_with_its_dist_and_options(example, tmp_path):
    ex, env, _ = example
    proc = run_smx("plugins", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    (row,) = [ln for ln in proc.stdout.splitlines() if ln.split()[:2] == [ex.kind, ex.name]]
    assert " ".join(row.split()).endswith(ex.listed), row


def test_a_bad_option_is_one_line_naming_the_key(example, tmp_path):
    ex, env, _ = example
    proc = run_smx("run", "data.name=iris", *ex.bad, "output=out", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ex.refused in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_plugins_own_tests_pass_against_the_installed_copy(example, tmp_path):
    ex, env, _ = example
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "plugins" / ex.folder / "tests")],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ex.own_tests in proc.stdout


def _train(example, tmp_path, *overrides: str, output: str = "out") -> dict:
    ex, env, _ = example
    yaml = (ROOT / "plugins" / ex.folder / f"{ex.name}-digits.yaml").read_text()
    cfg = write_yaml(tmp_path / f"{ex.name}.yaml", yaml)
    proc = run_smx("run", str(cfg), *overrides, f"output={output}", "--quiet", cwd=tmp_path,
                   env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / output / "summary.json").read_text())


def test_its_example_config_trains_digits(example, tmp_path):
    """Each plugin's example config: focal loss with balanced class weights, Lion, or L-BFGS
    on chunks of 100 rows; the chunked engine also ends where NumPy does, to rounding."""
    ex, _, _ = example
    summary = _train(example, tmp_path)
    assert summary["test_accuracy"] >= 0.92, summary
    resolved = (tmp_path / "out" / "config.yaml").read_text()
    assert (f"backend: {ex.name}" if ex.kind == "backend" else f"name: {ex.name}") in resolved
    if ex.kind != "backend":
        assert summary["epochs"] == 10
    if ex.kind == "loss":
        assert "gamma: 2.0" in resolved
    if ex.kind == "backend":
        _train(example, tmp_path, "backend=numpy", "backend_options={}", output="numpy")
        ours, ref = (np.load(tmp_path / b / "model.npz") for b in ("out", "numpy"))
        np.testing.assert_allclose(ours["W"], ref["W"], rtol=0, atol=1e-8)
