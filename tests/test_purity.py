"""The core never imports an array library: it gets its namespace from the arrays."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = [ROOT / "smx" / "model.py", *sorted((ROOT / "smx" / "optimizers").glob("*.py"))]
FORBIDDEN = {"numpy", "cupy", "torch", "jax", "dask", "array_api_strict", "tensorflow", "mlx"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_no_array_library(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            if top == "array_api_compat":
                assert name == "array_api_compat", f"{path.name} imports {name}"


def test_the_check_sees_the_core():
    assert len(CORE) >= 3 and all(p.exists() for p in CORE)
