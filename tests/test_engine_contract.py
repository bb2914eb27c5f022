"""The engine contract is declared: every hook smx reads off an engine is on ``Backend``.

Plugin authors learn the contract from ``Backend`` and docs/plugins.md; a hook the core
looks up by name (``getattr(backend, "x", None)``) or reads off an engine without
declaring it would be a contract nobody can see. These tests read smx's source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from smx.types import Backend

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for p in (ROOT / "smx").rglob("*.py"))
#: engines' own modules read their own (private) attributes freely
ENGINES = ROOT / "smx" / "backends"
DECLARED = {name for name in dir(Backend) if not name.startswith("__")} | set(
    Backend.__annotations__)


def engine_expr(node: ast.AST) -> bool:
    """An expression that names an engine: ``backend``, ``self.backend``, ``p.backend``..."""
    text = ast.unparse(node)
    last = text.rsplit(".", 1)[-1]
    return last in {"backend", "engine"} or last.endswith("_backend")


def lookups(source: str) -> list[tuple[int, str, str]]:
    """``(line, how, name)`` of each attribute smx reads off an engine in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "hasattr"} and len(node.args) >= 2
                and engine_expr(node.args[0])):
            name = node.args[1]
            found.append((node.lineno, node.func.id,
                          name.value if isinstance(name, ast.Constant) else "<computed>"))
        elif isinstance(node, ast.Attribute) and engine_expr(node.value):
            found.append((node.lineno, "attribute", node.attr))
    return found


def undeclared(source: str) -> list[str]:
    return [f"line {line}: {how} {name!r}" for line, how, name in lookups(source)
            if name not in DECLARED]


@pytest.mark.parametrize("path", [p for p in SOURCES if ENGINES not in p.parents],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_smx_reads_only_declared_hooks_off_an_engine(path):
    assert undeclared(path.read_text()) == [], (
        f"{path.relative_to(ROOT)} reads hooks that Backend does not declare; declare them "
        "on smx.types.Backend with a default and a docstring")


def test_the_check_catches_an_undeclared_lookup():
    """It can fail: a getattr of a new name, a hasattr, and a plain attribute read."""
    source = ("def f(self, backend):\n"
              "    hook = getattr(self.backend, 'secret_hook', None)\n"
              "    if hasattr(backend, 'other'):\n"
              "        backend.third()\n"
              "    backend.partial(None, None)\n")
    assert undeclared(source) == ["line 2: getattr 'secret_hook'", "line 3: hasattr 'other'",
                                  "line 4: attribute 'third'"]


def test_the_check_sees_the_places_that_use_engines():
    seen = {p.name for p in SOURCES if ENGINES not in p.parents and lookups(p.read_text())}
    assert {"training.py", "hardware.py", "runner.py", "sources.py"} <= seen


HOOKS = ["place", "batch", "partial", "compile", "materialize", "kernel", "fused_step",
         "fused_epoch", "batch_order", "map_reduce", "source_chunk_rows", "run_report",
         "accelerator_hint", "cheap_report", "device_info", "configure", "synchronize", "release",
         "cpu_threads", "resolve_device", "versions", "accepts_sparse", "deterministic",
         "is_gpu", "options"]


@pytest.mark.parametrize("name", HOOKS)
def test_every_optional_hook_has_a_default_and_a_docstring(name):
    value = getattr(Backend, name)
    if callable(value) and not isinstance(value, type):
        assert not getattr(value, "__isabstractmethod__", False), name
        assert (value.__doc__ or "").strip(), f"Backend.{name} has no docstring"


def test_docs_list_every_declared_hook():
    """docs/plugins.md names each hook of the contract (the list is made from Backend)."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    required = ["unavailable_reason", "namespace", "devices", "from_host", "to_host"]
    missing = [h for h in [*HOOKS, *required] if f"`{h}" not in text]
    assert missing == [], f"docs/plugins.md does not mention: {missing}"


def test_the_documented_hook_table_is_the_declared_one():
    """docs/plugins.md's table is generated from Backend (``python -m smx.contract``)."""
    from smx.contract import END, START, markdown

    text = (ROOT / "docs" / "plugins.md").read_text()
    assert START in text and END in text
    documented = text[text.index(START):text.index(END) + len(END)]
    assert documented == markdown(), "regenerate it: python -m smx.contract"
