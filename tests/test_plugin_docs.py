"""docs/plugins.md stays true: its code compiles, its examples run, its engines exist."""

from __future__ import annotations

import ast
import inspect
import re

import pytest

import smx
from smx.plugins import Plugins
from tests.conftest import ROOT

DOC = ROOT / "docs" / "plugins.md"
PLUGINS = Plugins(entry_points=False)


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def block_with(marker: str) -> str:
    (block,) = [b for b in python_blocks() if marker in b]
    return block


def test_every_python_block_compiles():
    blocks = python_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        ast.parse(block)


def test_readme_points_to_the_guide():
    assert "docs/plugins.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("backend", ["numpy", "array-api-strict"])
def test_the_documented_optimizer_test_passes(backend, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "smx-lion"))
    from smx_lion import Lion

    scope: dict = {"Lion": Lion}
    exec(block_with("def test_first_step"), scope)
    scope["test_first_step"](PLUGINS.backend(backend))


def test_backend_section_points_at_real_engines():
    """The guide's backend examples are smx's own engines: the modules it names exist,
    implement the whole interface, and are registered like any plugin."""
    text = DOC.read_text()
    for module, name in (("smx.backends.torch_backend", "torch"),
                         ("smx.backends.jax_backend", "jax")):
        path = module.replace(".", "/") + ".py"
        assert path in text and (ROOT / path).is_file(), path
        backend = PLUGINS.get("backend", name)
        assert type(backend).__module__ == module
        assert isinstance(backend, smx.Backend) and not inspect.isabstract(type(backend))
        for method in ("namespace", "devices", "from_host", "to_host", "synchronize",
                       "unavailable_reason", "versions"):
            assert method in type(backend).__dict__, (name, method)
