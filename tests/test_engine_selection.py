"""PyTorch and JAX in backend/device selection: never imported just to be listed, tried in
order after CuPy by `backend: auto`, and one line naming what to install when unusable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from smx import hardware
from smx.backends import cupy_backend, probe
from smx.backends.jax_backend import JaxBackend
from smx.backends.torch_backend import TorchBackend
from smx.config import load_config
from smx.errors import BackendUnavailable
from smx.plugins import Plugins
from tests.conftest import ROOT

PLUGINS = Plugins(entry_points=False)


def test_listing_and_auto_never_import_torch_or_jax():
    code = (
        "import sys, io, contextlib\n"
        "from smx.cli import main\n"
        "from smx import hardware\n"
        "from smx.config import load_config\n"
        "from smx.plugins import get_plugins\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['plugins']); main(['info'])\n"
        "hardware.select(load_config({'backend': 'auto'}), get_plugins())\n"
        "print(sorted(m for m in ('torch', 'jax', 'jaxlib') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # on a machine with an accelerator the engines are imported to find it; not here
    if TorchBackend().accelerator_hint() and JaxBackend().accelerator_hint():
        assert proc.stdout.strip().splitlines()[-1] == "[]"


#: what `smx plugins` and `smx info` must not import to list an engine
ENGINE_LIBRARIES = ("dask", "distributed", "torch", "jax", "jaxlib", "cupy")


@pytest.mark.parametrize("command", ["plugins", "info"])
def test_listing_imports_no_engine_library(command):
    """`smx plugins` and `smx info` read what is installed and import none of the engines'
    libraries: Dask's import alone made them take 2.0-2.3 s against 0.7-0.8 s (issue 21,
    item 3). The command runs as the console script does, in a fresh process."""
    if not probe.installed("distributed"):
        pytest.skip("Dask is not installed (pip install 'smx[dask]'): nothing to import")
    code = ("import contextlib, io, json, sys\n"
            "from smx.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    code = main([{command!r}])\n"
            "print(json.dumps([code, sorted({m.split('.')[0] for m in sys.modules})]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    status, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == 0
    # on a machine with an accelerator, PyTorch and JAX are imported to find it; not here
    allowed = set()
    if TorchBackend().accelerator_hint() is None:
        allowed.add("torch")
    if JaxBackend().accelerator_hint() is None:
        allowed |= {"jax", "jaxlib"}
    assert set(loaded) & set(ENGINE_LIBRARIES) - allowed == set()


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(cupy_backend.CupyBackend, "unavailable_reason",
                        lambda self: "CuPy is not installed; pip install 'smx[cuda12]'")


def pretend(monkeypatch, engine, devices):
    """``engine`` sees these devices, and nothing is imported to find them."""
    monkeypatch.setattr(engine, "unavailable_reason", lambda self: None)
    monkeypatch.setattr(engine, "accelerator_hint", lambda self: None)
    monkeypatch.setattr(engine, "devices", lambda self: devices)


def select(**kw):
    return hardware.select(load_config({"data": {"name": "iris"}, **kw}, plugins=PLUGINS),
                           PLUGINS)


def test_auto_takes_torch_cuda_before_jax_gpu(no_cupy, monkeypatch):
    pretend(monkeypatch, TorchBackend, ["cuda:0", "cpu"])
    pretend(monkeypatch, JaxBackend, ["gpu:0", "cpu"])
    placement = select(backend="auto")
    assert (placement.backend.name, placement.device) == ("torch", "cuda:0")


def test_auto_takes_jax_when_torch_has_only_the_cpu(no_cupy, monkeypatch):
    pretend(monkeypatch, TorchBackend, ["cpu"])
    pretend(monkeypatch, JaxBackend, ["gpu:0", "cpu"])
    assert (select(backend="auto").backend.name, select(backend="auto", device="cuda").device
            ) == ("jax", "gpu:0")


@pytest.mark.parametrize(("device", "engine", "expected"), [("mps", "torch", "mps"),
                                                             ("tpu", "jax", "tpu:0")])
def test_mps_and_tpu_are_accelerator_names(no_cupy, monkeypatch, device, engine, expected):
    pretend(monkeypatch, TorchBackend, ["mps", "cpu"])
    pretend(monkeypatch, JaxBackend, ["tpu:0", "cpu"])
    placement = select(backend="auto", device=device)
    assert (placement.backend.name, placement.device) == (engine, expected)


def test_auto_without_accelerators_is_numpy_and_device_cpu_never_probes(no_cupy, monkeypatch):
    def boom(self):
        raise AssertionError("probed")

    if TorchBackend().accelerator_hint() and JaxBackend().accelerator_hint():
        assert select(backend="auto").backend.name == "numpy"
    monkeypatch.setattr(TorchBackend, "accelerator_hint", boom)
    monkeypatch.setattr(JaxBackend, "accelerator_hint", boom)
    assert select(backend="auto", device="cpu").backend.name == "numpy"


@pytest.mark.skipif(TorchBackend().unavailable_reason() is not None
                    or JaxBackend().unavailable_reason() is not None,
                    reason="needs torch and jax installed (pip install 'smx[torch,jax]')")
@pytest.mark.parametrize(("backend", "device", "words"), [
    ("torch", "cuda", ("backend 'torch' has no device", "PyTorch")),
    ("torch", "mps", ("backend 'torch' has no device 'mps'",)),
    ("jax", "tpu", ("backend 'jax' has no device 'tpu:0'", "jax[tpu]")),
    ("auto", "mps", ("no usable GPU for device 'mps'", "torch:", "jax:")),
])
def test_unusable_accelerator_is_one_line_naming_the_library(backend, device, words):
    if TorchBackend().accelerator_hint() is None or JaxBackend().accelerator_hint() is None:
        pytest.skip("an accelerator may be usable here")
    with pytest.raises(BackendUnavailable) as info:
        select(backend=backend, device=device)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
