"""docs/plugins.md stays true: its code compiles, its examples run, its backend sketch works."""

from __future__ import annotations

import ast
import inspect
import re
import types

import numpy as np
import pytest

import smx
import smx.errors
from smx.config import load_config
from smx.plugins import Plugins
from smx.runner import load_data
from smx.training import train
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
    assert len(blocks) >= 5
    for block in blocks:
        ast.parse(block)


def test_readme_points_to_the_guide():
    assert "docs/plugins.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("backend", ["numpy", "array-api-strict"])
def test_the_documented_optimizer_test_passes(backend, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "smx-lion"))
    from smx_lion import lion

    scope: dict = {"lion": lion}
    exec(block_with("def test_first_step"), scope)
    scope["test_first_step"](PLUGINS.backend(backend))


def chunked_module() -> types.ModuleType:
    module = types.ModuleType("smx_chunked_doc")
    exec(compile(block_with("class ChunkedNumpy"), str(DOC), "exec"), module.__dict__)
    return module


@pytest.mark.parametrize(("optimizer", "batch_size"), [
    ({"name": "lbfgs"}, 16), ({"name": "adam", "lr": 0.05}, 104),  # 104 rows: full batch
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9}, 16)])
def test_the_documented_chunked_engine_trains_like_numpy(optimizer, batch_size):
    plugins = Plugins(entry_points=False)
    plugins.register(chunked_module(), "chunked")
    base = {"data": {"name": "iris"}, "epochs": 4, "dtype": "float64", "batch_size": batch_size,
            "optimizer": optimizer}
    cfg = load_config({**base, "backend": "chunked-numpy",
                       "backend_options": {"chunk_rows": 7}}, plugins=plugins)
    splits = load_data(cfg, plugins)
    backend = plugins.backend("chunked-numpy")
    ours = train(cfg, splits, backend, "cpu", plugins)
    ref = train(load_config(base, plugins=plugins), splits, plugins.backend("numpy"), "cpu",
                plugins)
    assert backend.chunk_rows == 7 and backend.compiled <= 1
    # the options belong to the backend the config names: NumPy runs it with its defaults
    again = train(cfg, splits, plugins.backend("numpy"), "cpu", plugins)
    for k in ref.params:
        np.testing.assert_array_equal(again.params[k], ref.params[k])
    for k in ref.params:
        np.testing.assert_allclose(ours.params[k], ref.params[k], rtol=1e-10, atol=1e-12)
    with pytest.raises(smx.errors.ConfigError, match=r"backend_options.chunks: unknown key; "
                                                     r"allowed: chunk_rows"):
        load_config({**base, "backend": "chunked-numpy", "backend_options": {"chunks": 3}},
                    plugins=plugins)


def torch_module() -> types.ModuleType:
    module = types.ModuleType("smx_torch_doc")
    exec(compile(block_with("class TorchBackend"), str(DOC), "exec"), module.__dict__)
    return module


def test_backend_sketch_implements_the_whole_interface():
    backend_cls = torch_module().TorchBackend
    assert issubclass(backend_cls, smx.Backend) and not inspect.isabstract(backend_cls)
    for name in ("namespace", "devices", "from_host", "to_host", "synchronize",
                 "unavailable_reason", "release", "versions"):
        assert name in backend_cls.__dict__, name


def test_backend_sketch_says_why_without_torch(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    backend = torch_module().TorchBackend()
    assert "PyTorch is not installed" in backend.unavailable_reason()
    assert backend.is_gpu is False


def test_backend_sketch_trains_like_numpy():
    pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    backend = torch_module().TorchBackend()
    assert backend.unavailable_reason() is None
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for dtype in ("float32", "float64", "int64"):
        back = backend.to_host(backend.from_host(x, "cpu", dtype))
        assert back.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back, x.astype(dtype))
    cfg = load_config({"data": {"name": "iris"}, "epochs": 3, "batch_size": 16,
                       "dtype": "float64", "clip_grad_norm": 1.0,
                       "optimizer": {"name": "adam", "lr": 0.05}}, plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    ours = train(cfg, splits, backend, "cpu", PLUGINS)
    ref = train(cfg, splits, PLUGINS.backend("numpy"), "cpu", PLUGINS)
    for k in ref.params:
        np.testing.assert_allclose(ours.params[k], ref.params[k], rtol=1e-10, atol=1e-12)
