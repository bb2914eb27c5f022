"""The plugin manager: built-ins, entry points, duplicates, broken plugins, unknown names."""

from __future__ import annotations

import pytest

from smx.errors import PluginError
from smx.plugins import Plugins
from tests.conftest import assert_one_line_error, run_smx
from tests.plugin_fixtures import BROKEN, DUPLICATE_SGD, HALVING_SGD, install_fake_dist


def test_builtins_are_registered():
    plugins = Plugins(entry_points=False)
    assert {"numpy", "array-api-strict", "cupy"} <= set(plugins.names("backend"))
    assert {"sgd", "adam"} <= set(plugins.names("optimizer"))
    assert {"constant", "step", "cosine"} <= set(plugins.names("schedule"))
    assert {"digits", "iris", "wine", "synthetic", "file"} <= set(plugins.names("dataset"))


def test_unknown_name_lists_valid_choices():
    plugins = Plugins(entry_points=False)
    with pytest.raises(PluginError, match=r"unknown optimizer 'nope'; valid: .*adam.*sgd"):
        plugins.get("optimizer", "nope")
    with pytest.raises(PluginError, match=r"valid: .*array-api-strict.*numpy"):
        plugins.get("backend", "tpu")


def test_third_party_entry_point_is_discovered(tmp_path, monkeypatch):
    site = install_fake_dist(tmp_path / "site", "smx-half", "1.2.3", {"smx_half": HALVING_SGD},
                             {"half": "smx_half"})
    monkeypatch.syspath_prepend(str(site))
    plugins = Plugins()
    reg = {r.name: r for r in plugins.registrations("optimizer")}["half-sgd"]
    assert reg.plugin == "half" and reg.version == "smx-half 1.2.3"


def test_third_party_optimizer_trains_from_the_cli(tmp_path):
    site = install_fake_dist(tmp_path / "site", "smx-half", "1.2.3", {"smx_half": HALVING_SGD},
                             {"half": "smx_half"})
    env = {"PYTHONPATH": str(site)}
    listing = run_smx("plugins", cwd=tmp_path, env=env)
    assert listing.returncode == 0 and "half-sgd" in listing.stdout
    assert "smx-half 1.2.3" in listing.stdout
    proc = run_smx("run", "data.name=iris", "optimizer.name=half-sgd", "epochs=3",
                   "output=out", "--quiet", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "half-sgd" in (tmp_path / "out" / "config.yaml").read_text()


def test_duplicate_names_are_rejected_naming_both(tmp_path, monkeypatch):
    site = install_fake_dist(tmp_path / "site", "smx-dup", "0.1", {"smx_dup": DUPLICATE_SGD},
                             {"dup": "smx_dup"})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError, match=r"optimizer 'sgd' is registered twice.*'sgd'.*'dup'"):
        Plugins()


def test_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    site = install_fake_dist(tmp_path / "site", "smx-broken", "0.1", {"smx_broken": BROKEN},
                             {"broken": "smx_broken"})
    monkeypatch.syspath_prepend(str(site))
    plugins = Plugins()
    assert "sgd" in plugins.names("optimizer")
    assert plugins.broken and plugins.broken[0][0] == "broken"
    assert "broken on purpose" in capsys.readouterr().err


def test_broken_plugin_does_not_stop_a_run(tmp_path):
    site = install_fake_dist(tmp_path / "site", "smx-broken", "0.1", {"smx_broken": BROKEN},
                             {"broken": "smx_broken"})
    env = {"PYTHONPATH": str(site)}
    proc = run_smx("run", "data.name=iris", "epochs=2", "output=out", "--quiet",
                   cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "plugin 'broken'" in proc.stderr and "broken on purpose" in proc.stderr
    listing = run_smx("plugins", cwd=tmp_path, env=env)
    assert "failed to load" in listing.stdout


def test_plugins_command_lists_builtins_with_versions(tmp_path):
    proc = run_smx("plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import smx

    for name in ("numpy", "array-api-strict", "sgd", "adam"):
        line = next(ln for ln in proc.stdout.splitlines() if f" {name} " in f" {ln} ")
        assert f"smx {smx.__version__}" in line
    assert "lr=0.1" in proc.stdout  # optimizer options with defaults


def test_unknown_backend_from_cli_lists_choices(tmp_path):
    proc = run_smx("run", "backend=tpu", "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, "backend", "unknown backend 'tpu'", "numpy")
    assert not (tmp_path / "runs").exists()
