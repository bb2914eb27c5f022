"""The plugin manager: built-ins, entry points, duplicates, broken plugins, unknown names."""

from __future__ import annotations

import pytest

from smx.cli import build_parser, main
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


# --- smx plugins [NAME] --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def whole_lines(monkeypatch):
    """Output to a pipe without $COLUMNS: tables keep their lines whole."""
    monkeypatch.delenv("COLUMNS", raising=False)


def _option_fields(kind, record):
    model = record.options if kind == "backend" else record.params
    return list(model.model_fields)


def test_the_options_column_lists_every_plugins_options(capsys):
    from smx.plugins import KINDS, get_plugins

    assert main(["plugins"]) == 0
    rows = {tuple(ln.split()[:2]): ln for ln in capsys.readouterr().out.splitlines()[2:]}
    plugins = get_plugins()
    for kind in KINDS:
        for reg in plugins.registrations(kind):
            row = rows[(kind, reg.name)]
            for option in _option_fields(kind, reg.record):
                assert f"{option}=" in row, (kind, reg.name, option, row)
    # a backend's options are its backend_options, not its description
    assert "fused=False" in rows[("backend", "numpy")]
    assert "NumPy on the CPU" not in rows[("backend", "numpy")]
    assert "workers=2" in rows[("backend", "dask")]
    assert "compile=False" in rows[("backend", "torch")]
    assert "label_smoothing=0.0" in rows[("loss", "cross_entropy")]


def test_plugins_name_shows_one_backend_and_its_options_table(capsys):
    import smx

    assert main(["plugins", "numpy"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "numpy"
    for key, value in (("kind", "backend"), ("plugin", "numpy"),
                       ("version", f"smx {smx.__version__}"), ("status", "ok"),
                       ("description", "NumPy on the CPU (default)"),
                       ("config", "smx run backend=numpy backend_options.fused=false")):
        assert any(ln.split(None, 1) == [key, value] for ln in lines), (key, out)
    header = next(i for i, ln in enumerate(lines) if ln.startswith("option"))
    assert lines[header].split() == ["option", "type", "default", "description"]
    assert lines[header + 2].split()[:3] == ["fused", "bool", "False"]
    assert "Numba" in lines[header + 2]


def test_plugins_name_gives_types_bounds_and_defaults(capsys):
    assert main(["plugins", "sgd"]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    assert "kind" in rows and "optimizer" in rows["kind"]
    assert rows["lr"].split()[:4] == ["lr", "float,", ">", "0"] and "0.1" in rows["lr"]
    assert "learning rate" in rows["lr"]
    assert main(["plugins", "file"]) == 0
    out = capsys.readouterr().out
    assert "required" in out and "str | None" in out and "data.path=..." in out
    assert main(["plugins", "iris"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no options")


def test_plugins_name_shows_a_third_party_plugin(tmp_path):
    site = install_fake_dist(tmp_path / "site", "smx-half", "1.2.3", {"smx_half": HALVING_SGD},
                             {"half": "smx_half"})
    proc = run_smx("plugins", "half-sgd", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    assert "smx-half 1.2.3" in proc.stdout and "a third-party optimizer" in proc.stdout
    assert "plugin       half" in proc.stdout and "optimizer.name=half-sgd" in proc.stdout


def test_plugins_name_shows_why_a_broken_plugin_failed(tmp_path, monkeypatch, capsys):
    from smx.plugins import get_plugins

    site = install_fake_dist(tmp_path / "site", "smx-broken", "0.1", {"smx_broken": BROKEN},
                             {"broken": "smx_broken"})
    monkeypatch.syspath_prepend(str(site))
    get_plugins.cache_clear()
    try:
        assert main(["plugins", "broken"]) == 0
    finally:
        get_plugins.cache_clear()
    out = capsys.readouterr().out
    assert "(broken)" in out and "broken on purpose" in out


def test_plugins_with_an_unknown_name_lists_the_valid_ones(tmp_path):
    proc = run_smx("plugins", "nope", cwd=tmp_path)
    assert_one_line_error(proc, "unknown plugin 'nope'", "adam", "cross_entropy", "numpy",
                          "iris", "cosine", "lbfgs")
    assert proc.stdout == ""


def test_plugins_help_names_every_kind(capsys):
    from smx.plugins import KINDS

    with pytest.raises(SystemExit):
        main(["plugins", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for kind in KINDS:
        assert (kind + ("es" if kind.endswith("s") else "s")) in text, kind
    assert "smx plugins NAME" in text
    assert "solvers" in " ".join(build_parser().format_help().split())
