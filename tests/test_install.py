"""Installs that are true on the public index: the extras resolve without backtracking, and
what the docs and hints say about the PyTorch wheel is what pip gives."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

#: words in pip's output that mean the registry could not be reached (not a resolver answer)
UNREACHABLE = ("NewConnectionError", "Temporary failure in name resolution",
               "Network is unreachable", "ConnectTimeout", "ReadTimeout", "Connection refused",
               "Max retries exceeded", "ProxyError", "SSLError")


def extras() -> dict[str, list[str]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomli")
    text = (ROOT / "pyproject.toml").read_text()
    return tomllib.loads(text)["project"]["optional-dependencies"]


CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def test_torch_advice_is_true_on_the_public_index():
    """From PyPI alone, torch==2.13.0 on Linux is the CUDA build (15 nvidia-* packages,
    cuda-toolkit, triton): the install hint, the README and pyproject.toml name PyTorch's
    CPU index for the CPU build, and none calls the pin itself the CPU wheel."""
    from smx.backends.torch_backend import INSTALL_HINT

    texts = {"INSTALL_HINT": INSTALL_HINT, "README.md": (ROOT / "README.md").read_text(),
             "pyproject.toml": (ROOT / "pyproject.toml").read_text()}
    for name, text in texts.items():
        assert CPU_INDEX in text, name
        flat = " ".join(text.split())
        assert not re.search(r"2\.13\.0[^.;]{0,30}(the|is) (the )?CPU(-only)? (wheel|build)",
                             flat), name


def test_dask_extra_pins_distributed_to_dask():
    """distributed comes through dask's own extra, which pins it to dask's version: listed
    apart, pip took the newest dask and backtracked through 36 distributed versions."""
    for name, requirements in extras().items():
        named = [r for r in requirements if re.match(r"(dask|distributed)\b", r)]
        assert not any(r.startswith("distributed") for r in named), (name, named)
        for req in named:
            assert re.match(r"dask\[[^\]]*\bdistributed\b", req), (name, req)


def pip_version() -> tuple[int, ...]:
    from importlib import metadata

    return tuple(int(p) for p in re.findall(r"\d+", metadata.version("pip"))[:2])


@pytest.mark.skipif(pip_version() < (23,), reason="pip install --dry-run --report needs pip 23")
def test_dask_extra_resolves_without_backtracking(tmp_path):
    """A resolver dry run of `pip install '.[dask]'` as in a fresh environment: dask and
    distributed at one version, reached without pip trying several distributed versions."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--timeout", "15", "--retries", "1", "--report", str(report), ".[dask]"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    shown = "\n".join(line for line in output.splitlines() if "is ignored" not in line)[-3000:]
    if proc.returncode != 0 and any(word in output for word in UNREACHABLE):
        pytest.skip("the package registry is unreachable, so nothing can be resolved: "
                    + next(w for w in UNREACHABLE if w in output))
    assert proc.returncode == 0, shown
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert chosen["dask"] == chosen["distributed"], chosen
    assert "looking at multiple versions" not in output, shown
    tried = set(re.findall(r"distributed-(\d[\w.]*?)(?:-py|\.tar)", output))
    assert len(tried) <= 1, sorted(tried)
