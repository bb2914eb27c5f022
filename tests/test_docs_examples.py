"""Every code block of README.md and docs/**/*.md runs, so a tutorial that stops working
fails CI.

Each page is parsed by Sybil and its blocks run in order, in one namespace per page, in an
empty folder holding small data (``new.csv``, ``rows.csv``, ``iris.csv``) and links to the
repository's ``configs/`` and ``plugins/``:

* ``python`` blocks are executed (the example plugins importable, as after installing them);
* ``yaml`` blocks are validated as smx configs (built-ins and the example plugins known);
* ``toml`` blocks are parsed;
* ``bash`` blocks: each line runs in a shell, except ``pip install ...`` (the environment
  the tests run in is that install: CI runs the README's install lines themselves) and
  ``pytest`` (this very suite). A line must run an ``smx`` command; anything else (a
  cluster, a benchmark of minutes) needs a skip marker;
* ``console`` blocks: each ``$ command`` runs as a bash line does, and every line printed
  under it in the page must be among the lines it prints (stdout and stderr);
* ``text`` and unlabelled blocks are output, never run.

A block that cannot run here says why, in the line before it::

    <!-- skip: next "smx bench runs for minutes and times the machine: not a test" -->
    <!-- skip: next if(not TORCH, reason="needs PyTorch") -->

(Sybil's skip directive; ``TORCH`` and ``JAX`` say whether those libraries are installed.)
New pages are picked up by the glob, with no change here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

import numpy as np
import pytest

from tests.conftest import ROOT

sybil = pytest.importorskip("sybil", reason="the docs' examples run with Sybil: "
                            "pip install '.[docs]'")

from sybil import Example, Sybil  # noqa: E402 - after the importorskip
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser  # noqa: E402

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
LANGUAGES = {"python", "yaml", "toml", "bash", "console", "text", ""}
EXAMPLE_PLUGINS = {"smx_lion": "smx-lion", "smx_focal": "smx-focal", "smx_chunked": "smx-chunked"}
NOT_RUN = ("pip install", "pytest")


def _validate_yaml(example: Example) -> None:
    import yaml

    from smx.config import load_config

    load_config(yaml.safe_load(example.parsed), plugins=example.namespace["PLUGINS"])


def _parse_toml(example: Example) -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11's tomllib")
    tomllib.loads(example.parsed)


def _commands(line: str) -> str:
    """The part of a shell line that runs here: ``pip install`` and ``pytest`` steps
    dropped (``pip install . && smx run`` runs ``smx run``)."""
    steps = [s.strip() for s in line.split("&&")]
    return " && ".join(s for s in steps if s and not s.startswith(NOT_RUN))


def _run_shell(example: Example) -> None:
    folder: Path = example.namespace["FOLDER"]
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for line in example.parsed.splitlines():
        code = line.split(" #")[0].strip()
        if not code or code.startswith("#"):
            continue
        command = _commands(code)
        if not command:
            continue
        words = {w for w in shlex.split(command) if not w.startswith("-")}
        assert "smx" in words, (
            f"{example.path}:{example.line}: cannot run {command!r} here; give the block a "
            f"skip marker with the reason (<!-- skip: next \"...\" -->)")
        proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env, text=True,
                              capture_output=True, timeout=600)
        assert proc.returncode == 0, (f"{example.path}:{example.line}: {command}\n"
                                      f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        assert "Traceback" not in proc.stderr, proc.stderr


def _run_console(example: Example) -> None:
    """``$ command`` lines run; the lines under each must be among what it prints."""
    folder: Path = example.namespace["FOLDER"]
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    sessions: list[tuple[str, list[str]]] = []
    for line in example.parsed.splitlines():
        if line.startswith("$ "):
            sessions.append((line[2:], []))
        elif line.strip():
            assert sessions, f"{example.path}:{example.line}: output before any $ command"
            sessions[-1][1].append(line.strip())
    for command, expected in sessions:
        proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env, text=True,
                              capture_output=True, timeout=600)
        printed = {ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()}
        for line in expected:
            assert line in printed, (f"{example.path}:{example.line}: {command!r} did not "
                                     f"print {line!r}:\n{proc.stdout}{proc.stderr}")


def _parsers() -> list:
    return [PythonCodeBlockParser(), CodeBlockParser("yaml", _validate_yaml),
            CodeBlockParser("toml", _parse_toml), CodeBlockParser("bash", _run_shell),
            CodeBlockParser("console", _run_console),
            SkipParser()]


def _small_data(folder: Path) -> None:
    """What the pages' commands read: digits rows with and without a header, iris rows."""
    from sklearn.datasets import load_digits, load_iris

    digits = load_digits().data[:5]
    header = ",".join(f"pixel{i}" for i in range(digits.shape[1]))
    np.savetxt(folder / "new.csv", digits, delimiter=",", header=header, comments="", fmt="%g")
    np.savetxt(folder / "rows.csv", digits, delimiter=",", fmt="%g")
    iris = load_iris().data[:5]
    np.savetxt(folder / "iris.csv", iris, delimiter=",", fmt="%g", comments="",
               header="sepal_length,sepal_width,petal_length,petal_width")
    for name in ("configs", "plugins"):
        (folder / name).symlink_to(ROOT / name, target_is_directory=True)


def _plugins():
    """smx's built-ins and the three example plugins, as if they were installed."""
    from smx.plugins import Plugins

    plugins = Plugins(entry_points=False)
    for module, _ in EXAMPLE_PLUGINS.items():
        plugins.register(importlib.import_module(module), module)
    return plugins


@pytest.fixture
def page_folder(tmp_path, monkeypatch) -> Path:
    for module, folder in EXAMPLE_PLUGINS.items():
        monkeypatch.syspath_prepend(str(ROOT / "plugins" / folder))
        sys.modules.pop(module, None)
    _small_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.filterwarnings("error")  # an example that warns teaches the warning
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_code_block_runs(page, page_folder, monkeypatch):
    # the pages' Python runs as in a script: smx.testing's checks then raise Skipped (as
    # docs/testing.md shows) instead of pytest's skip, which would end the page's test
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    document = Sybil(parsers=_parsers(), path=str(ROOT)).parse(page)
    document.namespace.update(
        FOLDER=page_folder, PLUGINS=_plugins(),
        TORCH=importlib.util.find_spec("torch") is not None,
        JAX=importlib.util.find_spec("jax") is not None)
    skipped = []
    for example in document:
        try:
            example.evaluate()
        except SkipTest as why:
            skipped.append(f"line {example.line}: {why}")
    if skipped:
        print(f"{page.name}: skipped " + "; ".join(skipped))


SKIP = re.compile(r"<!--\s*skip:\s*(?P<args>.*?)\s*-->\n(?P<next>[^\n]*)", re.DOTALL)
RUN = ("python", "yaml", "toml", "bash", "console")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_skip_says_why(page):
    """A skipped block carries its reason (``next "..."`` or ``next if(..., reason=...)``)
    and the marker stands right above a block that would run."""
    for match in SKIP.finditer(page.read_text("utf-8")):
        args = match["args"]
        assert re.fullmatch(r"next\s+(\"[^\"]+\"|'[^']+'|if\(.*reason=.+\))", args), (
            f"{page.name}: a skip marker without its reason: {match[0]}")
        # Sybil skips the next block it runs: a marker above a text block would skip
        # whichever code block comes after it
        assert match["next"].startswith(tuple(f"```{lang}" for lang in RUN)), (
            f"{page.name}: a skip marker must stand right above the block it skips: "
            f"{match[0]}")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_block_is_of_a_known_kind(page):
    """A block in another language would be neither run nor refused: name it ``text`` if it
    is output, or teach this test to run it."""
    fences = re.findall(r"^```(\S*)", page.read_text("utf-8"), flags=re.MULTILINE)
    languages = set(fences[::2])  # opening fences; the closing ones are bare
    assert languages <= LANGUAGES, (page.name, languages - LANGUAGES)


def test_the_pages_are_all_collected():
    """README.md and every page under docs/ (new ones too), none left out."""
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"README.md", "docs/getting-started.md", "docs/plugins.md", "docs/testing.md",
            "docs/reference/config.md"} <= names


def test_shell_lines_drop_only_installs_and_the_test_run():
    assert _commands("pip install . && smx run --quiet") == "smx run --quiet"
    assert _commands("pip install '.[test]' && pytest") == ""
    assert _commands("smx run a.yaml && smx plugins") == "smx run a.yaml && smx plugins"


def test_the_readme_is_short_and_its_links_resolve():
    """A newcomer reads it in two minutes and reaches every topic in one click: at most
    ~200 lines, and every relative link names a file of the repository."""
    text = (ROOT / "README.md").read_text("utf-8")
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10, local
    for link in local:
        assert (ROOT / link).exists(), link
    for page in ("getting-started", "configs", "engines", "dask", "estimator", "runs",
                 "benchmarks", "design", "plugins", "testing", "reference/config",
                 "reference/cli", "reference/api"):
        assert f"docs/{page}.md" in local, page
