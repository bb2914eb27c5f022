"""docs/plugins.md stays true: its code compiles, its examples run, its engines exist."""

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
from smx.datasets.load import load_data
from smx.plugins import Plugins
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


def doc_module(marker: str, name: str) -> types.ModuleType:
    """The guide's python block holding ``marker``, run as a plugin module."""
    module = types.ModuleType(name)
    exec(compile(block_with(marker), str(DOC), "exec"), module.__dict__)
    return module


#: each kind's example in the guide: (marker in its block, module name, record name)
EXAMPLES = {
    "solver": ("class BarzilaiBorwein", "smx_bb_doc", "BB"),
    "loss": ("class Brier", "smx_brier_doc", "BRIER"),
    "schedule": ("def linear(", "smx_linear_doc", "LINEAR"),
    "dataset": ("def moons(", "smx_moons_doc", "MOONS"),
}


def doc_plugins() -> Plugins:
    plugins = Plugins(entry_points=False)
    for marker, name, _ in EXAMPLES.values():
        plugins.register(doc_module(marker, name), name)
    return plugins


@pytest.mark.parametrize("overrides", [
    {"optimizer": {"name": "bb", "tol": 1e-8}, "epochs": 300},
    {"loss": {"name": "brier"}, "optimizer": {"name": "sgd", "lr": 0.5}, "epochs": 20},
    {"schedule": {"name": "linear"}, "optimizer": {"name": "sgd", "lr": 0.5}, "epochs": 20},
])
def test_the_documented_examples_train(overrides):
    """The guide's solver, loss, schedule and dataset, registered as plugins, train the
    documented dataset; the solver reaches its tol and says so."""
    plugins = doc_plugins()
    cfg = load_config({"data": {"name": "moons", "n": 200}, "dtype": "float64",
                       "batch_size": 32, "model": {"l2": 1e-3}, **overrides}, plugins=plugins)
    result = train(cfg, load_data(cfg, plugins), plugins.backend("numpy"), "cpu", plugins)
    assert result.history[-1]["val_accuracy"] > 0.8
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    if overrides["optimizer"]["name"] == "bb":
        reason = result.stop_reason
        assert reason.startswith("converged: max|g|") and "≤ tol 1e-08" in reason


@pytest.mark.parametrize("kind", EXAMPLES)
def test_the_documented_examples_keep_the_contract(kind):
    """Each example of the guide passes every rule of its kind in smx.testing."""
    from smx.testing import run_all

    marker, name, record = EXAMPLES[kind]
    report = run_all(getattr(doc_module(marker, name), record), kind)
    allowed = ("skipped: JAX", "skipped: the loss has no label_smoothing")
    assert report and all(v == "passed" or v.startswith(allowed)
                          for v in report.values()), report


def test_the_documented_engine_keeps_the_contract():
    from smx.testing import run_all, with_params

    engine = chunked_module().ChunkedNumpy()
    report = run_all(with_params(engine, chunk_rows=7), "backend")
    assert all(v == "passed" or "deterministic" in v for v in report.values()), report
