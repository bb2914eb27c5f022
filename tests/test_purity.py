"""The core never imports an array library: it gets its namespace from the arrays.

The core is the model, the objective, the losses, the schedules, the training step and every
optimizer: what runs unchanged on every engine. Any way of reaching a library counts:
``import numpy``, ``from numpy import x``, an import inside a function,
``importlib.import_module("numpy")``, ``__import__("numpy")`` and ``sys.modules["numpy"]``.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMX = ROOT / "smx"
CORE = [SMX / "model.py", SMX / "objective.py", SMX / "losses.py", SMX / "schedules.py",
        SMX / "step.py", *sorted((SMX / "optimizers").glob("*.py"))]
#: array libraries and the libraries that hand out their arrays (top-level module names)
FORBIDDEN = {"numpy", "cupy", "cupyx", "torch", "jax", "jaxlib", "dask", "distributed",
             "array_api_strict", "tensorflow", "mlx", "scipy", "sklearn", "numba", "pandas",
             "sparse", "ndonnx"}
#: callables that import the module named by their first argument
DYNAMIC = {"import_module", "__import__"}


def _forbidden(name: str) -> bool:
    top = name.split(".")[0]
    # array_api_compat itself is the core's way in; its wrappers (array_api_compat.numpy) are not
    return top in FORBIDDEN or (top == "array_api_compat" and name != "array_api_compat")


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_sys_modules(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "modules"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def array_library_imports(source: str) -> list[str]:
    """Every way ``source`` reaches an array library, as ``line N: what`` (empty: pure)."""
    tree = ast.parse(source)
    dynamic = set(DYNAMIC)
    for node in ast.walk(tree):  # from importlib import import_module as load
        if isinstance(node, ast.ImportFrom) and node.module == "importlib":
            dynamic |= {a.asname or a.name for a in node.names if a.name in DYNAMIC}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # from array_api_compat import numpy: the wrapper module, named as a submodule
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names
                                    if a.name in FORBIDDEN)]
        elif isinstance(node, ast.Call) and _called_name(node.func) in dynamic:
            arg = node.args[0] if node.args else None
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                found.append(f"line {node.lineno}: a module named at run time")
                continue
            names = [arg.value]
        elif isinstance(node, ast.Subscript) and _is_sys_modules(node.value):
            key = node.slice
            names = [key.value] if isinstance(key, ast.Constant) else ["sys.modules[...]"]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and _is_sys_modules(node.func.value) and node.args
              and isinstance(node.args[0], ast.Constant)):
            names = [node.args[0].value]  # sys.modules.get("numpy")
        found += [f"line {node.lineno}: {name}" for name in names
                  if name == "sys.modules[...]" or _forbidden(str(name))]
    return found


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.relative_to(SMX).as_posix())
def test_core_imports_no_array_library(path):
    found = array_library_imports(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} reaches an array library: {'; '.join(found)}"


def test_the_check_sees_the_whole_core():
    names = {p.relative_to(SMX).as_posix() for p in CORE}
    assert {"model.py", "objective.py", "losses.py", "schedules.py", "step.py",
            "optimizers/sgd.py",
            "optimizers/lbfgs.py", "optimizers/transforms.py"} <= names
    assert all(p.exists() for p in CORE)


@pytest.mark.parametrize("source", [
    "import numpy",
    "import numpy.linalg",
    "import torch as t",
    "from numpy import asarray",
    "from jax.numpy import zeros",
    "from array_api_compat import numpy as np",
    "import array_api_compat.cupy",
    "def f():\n    import numpy as np\n    return np.zeros(1)",
    "class A:\n    def m(self):\n        from dask import array",
    "import importlib\nmod = importlib.import_module('numpy')",
    "from importlib import import_module\nimport_module('array_api_strict')",
    "from importlib import import_module as load\ndef f():\n    return load('cupy')",
    "np = __import__('numpy')",
    "import importlib\nimportlib.import_module(name)",
    "import sys\nnp = sys.modules['numpy']",
    "import sys\ntorch = sys.modules.get('torch')",
])
def test_the_check_catches_every_way_in(source):
    assert array_library_imports(textwrap.dedent(source)), source


@pytest.mark.parametrize("source", [
    "from array_api_compat import array_namespace",
    "import math\nfrom collections.abc import Callable",
    "from smx.types import Array\nfrom . import transforms",
    "import smx\nfrom pydantic import Field",
    "numpy_like = 'numpy'",
])
def test_the_check_lets_the_core_s_own_imports_through(source):
    assert array_library_imports(source) == []
