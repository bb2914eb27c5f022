"""The generated references (docs/reference/config.md, cli.md) are what the code makes now,
cover every key and option, and a change in the code shows as a stale file; the version is
one number everywhere."""

from __future__ import annotations

import argparse
import re
from importlib import metadata

import pytest

from smx import reference
from smx.config import RunConfig
from tests.conftest import ROOT, run_smx

DOCS = ROOT / "docs"


def test_the_committed_references_are_current():
    assert reference.stale(DOCS) == [], (
        "docs/reference is stale: run python -m smx.reference docs and commit the result")


def test_a_changed_default_makes_the_reference_stale(tmp_path, monkeypatch):
    """The staleness check can fail: the committed files against a code change."""
    (tmp_path / "reference").mkdir()
    for name, text in reference.generate().items():
        (tmp_path / "reference" / name).write_text(text, "utf-8")
    assert reference.stale(tmp_path) == []
    field = RunConfig.model_fields["batch_size"]
    monkeypatch.setattr(field, "default", 65)
    assert reference.stale(tmp_path) == ["config.md"]
    assert reference.main([str(tmp_path), "--check"]) == 1
    assert reference.main([str(tmp_path)]) == 0
    assert "`batch_size` | int | `65`" in (tmp_path / "reference" / "config.md").read_text()


def _paths(model, prefix=""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            yield from _paths(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_the_config_reference_has_every_key_with_a_description():
    text = reference.config_markdown()
    rows = {m[1]: m[0] for m in re.finditer(r"^\| `([^`]+)` \|.*$", text, flags=re.MULTILINE)}
    for path in _paths(RunConfig):
        assert path in rows, path
        assert not rows[path].rstrip().endswith("|  |"), f"{path} has no description"
    # the built-in plugins' options, e.g. adam's beta2 and Dask's chunk_rows
    assert "### `adam`" in text and "`optimizer.beta2`" in text
    assert "### `dask`" in text and "`backend_options.chunk_rows`" in text
    assert "≥ 0, < 1" in text  # ranges from the models' bounds


def test_the_cli_reference_has_every_command_and_option():
    from smx.cli import build_parser

    text = reference.cli_markdown()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert f"## `smx {name}`" in text, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"`{option}`" in text, (name, option)
    assert "`--version`" in text


def test_one_version_everywhere(tmp_path):
    """smx --version, the installed metadata (pyproject reads smx.__version__) and the
    CHANGELOG's newest entry agree."""
    import smx

    proc = run_smx("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"smx {smx.__version__}"
    try:
        installed = metadata.version("smx")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        pytest.skip("smx is not installed")
    assert installed == smx.__version__
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert newest and newest[1] == smx.__version__


def test_the_wheel_ships_py_typed_and_the_version(tmp_path):
    """PEP 561: the marker is in the wheel, so type checkers read smx's hints; the wheel's
    version is smx.__version__. Built offline with the build backend itself."""
    import zipfile

    import smx

    wheel = pytest.importorskip("hatchling.builders.wheel", reason="the build backend")
    built = next(iter(wheel.WheelBuilder(str(ROOT)).build(directory=str(tmp_path),
                                                            versions=["standard"])))
    names = zipfile.ZipFile(built).namelist()
    assert "smx/py.typed" in names
    assert f"smx-{smx.__version__}.dist-info/METADATA" in names
