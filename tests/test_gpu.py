"""On a real NVIDIA GPU through CuPy, PyTorch and JAX. Marked ``gpu``: skipped, with the
engine's reason, elsewhere.

Run them with ``pytest -m gpu`` (``benchmarks/gpu_check.sh`` does, and records the card).
"""

from __future__ import annotations

import contextlib
import gc
import json

import numpy as np
import pytest

from smx.config import load_config
from smx.datasets.load import load_data
from smx.parity import run_parity
from smx.plugins import Plugins
from smx.runner import run
from smx.training import Trainer
from tests.conftest import ROOT, run_smx

pytestmark = pytest.mark.gpu  # CuPy unless a test names its engine
PLUGINS = Plugins(entry_points=False)
PARITY = ROOT / "configs" / "parity.yaml"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_trains_digits(in_tmp, dtype):
    cfg = load_config(ROOT / "configs" / "digits.yaml",
                      ["backend=cupy", "device=cuda", f"dtype={dtype}", "output=out"],
                      plugins=PLUGINS)
    outcome = run(cfg, plugins=PLUGINS, progress=False)
    s = outcome.summary
    assert (s["backend"], s["device"], s["fallback"]) == ("cupy", "cuda:0", None)
    assert s["test_accuracy"] >= 0.95
    assert {"cupy", "cuda_runtime", "cuda_driver"} <= set(s["versions"])
    assert outcome.result.params["W"].dtype == np.dtype(dtype)  # back on the host as NumPy


def test_auto_picks_the_gpu(in_tmp):
    cfg = load_config({"data": {"name": "iris"}, "backend": "auto", "epochs": 2,
                       "output": "out"}, plugins=PLUGINS)
    assert run(cfg, plugins=PLUGINS, progress=False).summary["backend"] == "cupy"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_numpy_vs_cupy(dtype):
    cfg = load_config(PARITY, [f"dtype={dtype}"], plugins=PLUGINS)
    report = run_parity(cfg, [("numpy", "auto"), ("cupy", "auto")], PLUGINS)
    assert report.passed, report.failures()


def test_parity_cli_numpy_vs_cupy(tmp_path):
    proc = run_smx("parity", str(PARITY), "--backends", "numpy,cupy", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "out" / "parity.json").read_text())["passed"]


def test_memory_pool_released_after_a_run(in_tmp):
    import cupy

    cfg = load_config({"data": {"name": "digits"}, "backend": "cupy", "epochs": 2,
                       "output": "out"}, plugins=PLUGINS)
    run(cfg, plugins=PLUGINS, progress=False)
    pool = cupy.get_default_memory_pool()
    assert pool.total_bytes() == 0, f"{pool.total_bytes()} bytes left in CuPy's pool"
    gc.collect()
    assert pool.used_bytes() == 0


def test_no_implicit_transfers_in_the_loop():
    """cupyx.allow_synchronize(False) makes any implicit device sync (float(), .get()) raise."""
    import cupyx

    from smx.backends.cupy_backend import CupyBackend

    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy has no cupyx.allow_synchronize")

    class Counting(CupyBackend):
        to_host_calls = 0

        def from_host(self, array, device, dtype=None):
            with cupyx.allow_synchronize(True):
                return super().from_host(array, device, dtype)

        def to_host(self, array):
            Counting.to_host_calls += 1
            with cupyx.allow_synchronize(True):
                return super().to_host(array)

        def synchronize(self, device):
            with cupyx.allow_synchronize(True):
                super().synchronize(device)

    epochs, log_every = 3, 7
    cfg = load_config({"data": {"name": "digits"}, "epochs": epochs, "batch_size": 32,
                       "log_every": log_every}, plugins=PLUGINS)
    backend = Counting()
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cuda:0", PLUGINS)
    with cupyx.allow_synchronize(False):
        result = trainer.fit()
    # per epoch: the running loss, validation and training metrics (one read each)
    assert Counting.to_host_calls == result.steps // log_every + 3 * epochs + 2
    with contextlib.suppress(Exception):
        backend.release("cuda:0")


ENGINES = [pytest.param("torch", marks=pytest.mark.gpu("torch")),
           pytest.param("jax", marks=pytest.mark.gpu("jax"))]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_engine_trains_digits_on_the_gpu(in_tmp, engine, dtype):
    cfg = load_config(ROOT / "configs" / "digits.yaml",
                      [f"backend={engine}", "device=cuda", f"dtype={dtype}", "output=out"],
                      plugins=PLUGINS)
    s = run(cfg, plugins=PLUGINS, progress=False).summary
    assert s["backend"] == engine and s["device"] != "cpu"
    assert s["test_accuracy"] >= 0.95


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_numpy_vs_engine_on_the_gpu(engine, dtype):
    cfg = load_config(PARITY, [f"dtype={dtype}"], plugins=PLUGINS)
    report = run_parity(cfg, [("numpy", "auto"), (engine, "cuda")], PLUGINS)
    assert report.passed, report.failures()
