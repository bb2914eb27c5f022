"""Backend/device selection, the CuPy backend's reasons and `smx info`, all without a GPU."""

from __future__ import annotations

import json
import types

import pytest

import smx
from smx import hardware
from smx.backends import cupy_backend
from smx.backends.numpy_backend import NumpyBackend
from smx.cli import main
from smx.config import load_config
from smx.errors import BackendUnavailable
from smx.plugins import Plugins
from tests.conftest import assert_one_line_error, run_smx

CUPY_REASON = cupy_backend.CupyBackend().unavailable_reason()
needs_no_cupy = pytest.mark.skipif(
    CUPY_REASON is None or not CUPY_REASON.startswith("CuPy is not installed"),
    reason="these check the message given when CuPy is not installed")


class FakeGpu(NumpyBackend):
    """A GPU backend stand-in: NumPy arrays, CUDA-style device names."""

    name = "fakegpu"
    is_gpu = True

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason

    def unavailable_reason(self):
        return self.reason

    def devices(self):
        return ["cuda:0", "cuda:1"]

    def resolve_device(self, device):
        return super().resolve_device("auto" if device == "cuda" else device)

    def device_info(self):
        return [{"device": d, "name": "Fake GPU 9000", "memory_gib": 8.0,
                 "compute_capability": "9.0", "driver": "550.54.15 (CUDA 12.4)"}
                for d in self.devices()]


def plugins_with(backend=None) -> Plugins:
    plugins = Plugins(entry_points=False)
    if backend is not None:
        plugin = types.SimpleNamespace(smx_backends=smx.hookimpl(lambda: [backend]))
        plugins.register(plugin, name="fake-gpu-plugin")
    return plugins


def cfg(**kw):
    return load_config({"data": {"name": "iris"}, **kw}, plugins=Plugins(entry_points=False))


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(cupy_backend.CupyBackend, "unavailable_reason",
                        lambda self: "CuPy is not installed; pip install 'smx[cuda12]'")


def test_auto_picks_numpy_when_no_gpu_backend_is_usable(no_cupy):
    placement = hardware.select(cfg(backend="auto"), plugins_with(FakeGpu("no driver")))
    assert (placement.backend.name, placement.device, placement.note) == ("numpy", "cpu", None)


@pytest.mark.parametrize(("device", "expected"), [("auto", "cuda:0"), ("cuda", "cuda:0"),
                                                  ("cuda:1", "cuda:1")])
def test_auto_picks_a_usable_gpu_backend_first(no_cupy, device, expected):
    placement = hardware.select(cfg(backend="auto", device=device), plugins_with(FakeGpu()))
    assert (placement.backend.name, placement.device) == ("fakegpu", expected)


def test_auto_with_device_cpu_never_takes_the_gpu(no_cupy):
    placement = hardware.select(cfg(backend="auto", device="cpu"), plugins_with(FakeGpu()))
    assert (placement.backend.name, placement.device) == ("numpy", "cpu")


def test_device_cuda_with_auto_and_no_gpu_fails_with_every_reason(no_cupy):
    with pytest.raises(BackendUnavailable, match=r"device: no usable GPU for device 'cuda' "
                       r"\(cupy: CuPy is not installed.*fakegpu: no driver\)"):
        hardware.select(cfg(backend="auto", device="cuda"), plugins_with(FakeGpu("no driver")))


def test_missing_gpu_device_index_is_named(no_cupy):
    with pytest.raises(BackendUnavailable, match=r"no device 'cuda:7'; its devices: cuda:0"):
        hardware.select(cfg(backend="fakegpu", device="cuda:7"), plugins_with(FakeGpu()))


def test_fallback_cpu_warns_once_and_goes_on(no_cupy, capsys):
    placement = hardware.select(cfg(backend="fakegpu", fallback="cpu"),
                                plugins_with(FakeGpu("no CUDA driver")))
    assert (placement.backend.name, placement.device) == ("numpy", "cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smx: warning:")
    assert "no CUDA driver" in err[0] and "falling back to numpy on cpu" in err[0]


@needs_no_cupy
def test_cli_backend_cupy_without_cupy_exits_2_writing_nothing(tmp_path):
    proc = run_smx("run", "data.name=iris", "backend=cupy", "output=out", "-q", cwd=tmp_path)
    line = assert_one_line_error(proc, "backend", "CuPy is not installed",
                                 "pip install 'smx[cuda12]'")
    assert "cuda13" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@needs_no_cupy
def test_cli_device_cuda_without_gpu_exits_2(tmp_path):
    proc = run_smx("run", "data.name=iris", "backend=auto", "device=cuda", "output=out", "-q",
                   cwd=tmp_path)
    assert_one_line_error(proc, "device", "no usable GPU", "CuPy is not installed")
    assert not (tmp_path / "out").exists()


@needs_no_cupy
def test_cli_fallback_cpu_runs_on_numpy_and_says_so(tmp_path):
    proc = run_smx("run", "data.name=iris", "backend=cupy", "device=cuda", "fallback=cpu",
                   "epochs=2", "output=out", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("smx: warning:"), proc.stderr
    assert "CuPy is not installed" in warnings[0] and "falling back to numpy on cpu" in warnings[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["backend"], summary["device"]) == ("numpy", "cpu")
    assert "CuPy is not installed" in summary["fallback"]


# --- the CuPy backend's reasons, with the import and the CUDA probe simulated ---------------


class FakeCudaError(RuntimeError):
    pass


def fake_cupy(count=None, error=None):
    def get_count():
        if error:
            raise FakeCudaError(error)
        return count

    props = {"name": b"NVIDIA Fake H100", "totalGlobalMem": 80 * 2**30, "major": 9, "minor": 0}
    runtime = types.SimpleNamespace(
        getDeviceCount=get_count, getDeviceProperties=lambda i: props,
        driverGetVersion=lambda: 12040, runtimeGetVersion=lambda: 12020)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime), __version__="13.6.0")


def _raise(exc):
    def importer():
        raise exc
    return importer


@pytest.mark.parametrize(("importer", "needles"), [
    (_raise(ModuleNotFoundError("No module named 'cupy'", name="cupy")),
     ["CuPy is not installed", "pip install 'smx[cuda12]'", "'smx[cuda13]'"]),
    (_raise(ModuleNotFoundError("No module named 'fastrlock'", name="fastrlock")),
     ["CuPy failed to import", "fastrlock"]),
    (_raise(ImportError("libcudart.so.12: cannot open shared object file")),
     ["CuPy failed to import: ImportError", "libcudart.so.12"]),
    (lambda: fake_cupy(error="cudaErrorInsufficientDriver: CUDA driver version is insufficient"),
     ["no usable CUDA driver", "InsufficientDriver", "NVIDIA driver"]),
    (lambda: fake_cupy(error="cudaErrorNoDevice: no CUDA-capable device is detected"),
     ["no CUDA device is visible", "CUDA_VISIBLE_DEVICES"]),
    (lambda: fake_cupy(count=0), ["no CUDA device is visible", "nvidia-smi"]),
    (lambda: fake_cupy(error="cudaErrorUnknown: unknown error"),
     ["CUDA is not usable", "FakeCudaError", "unknown error"]),
])
def test_cupy_reasons(monkeypatch, importer, needles):
    monkeypatch.setattr(cupy_backend, "_import", importer)
    cupy_backend._probe.cache_clear()
    try:
        backend = cupy_backend.CupyBackend()
        reason = backend.unavailable_reason()
        for needle in needles:
            assert needle in reason, (needle, reason)
        with pytest.raises(BackendUnavailable, match="backend 'cupy' is unavailable"):
            backend.namespace()
    finally:
        monkeypatch.undo()
        cupy_backend._probe.cache_clear()


def test_cupy_usable_when_a_device_is_seen(monkeypatch, tmp_path):
    monkeypatch.setattr(cupy_backend, "_import", lambda: fake_cupy(count=2))
    monkeypatch.setattr(cupy_backend, "_nvidia_kernel_driver", lambda: "550.54.15")
    cupy_backend._probe.cache_clear()
    try:
        backend = cupy_backend.CupyBackend()
        assert backend.unavailable_reason() is None
        assert backend.devices() == ["cuda:0", "cuda:1"]
        assert backend.resolve_device("cuda") == "cuda:0"
        assert backend.resolve_device("cuda:1") == "cuda:1"
        info = backend.device_info()
        assert [d["device"] for d in info] == ["cuda:0", "cuda:1"]
        assert info[0] | {"device": None} == {
            "device": None, "name": "NVIDIA Fake H100", "memory_gib": 80.0,
            "compute_capability": "9.0", "driver": "550.54.15 (CUDA 12.4)"}
        assert backend.versions() == {"cupy": "13.6.0", "cuda_runtime": "12.2",
                                      "cuda_driver": "12.4"}
    finally:
        monkeypatch.undo()
        cupy_backend._probe.cache_clear()


def test_nvidia_kernel_driver_version_is_parsed(tmp_path):
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 "
                       "22:23:56 UTC 2024\nGCC version:  gcc version 12.3.0\n")
    assert cupy_backend._nvidia_kernel_driver(str(version)) == "550.54.15"
    assert cupy_backend._nvidia_kernel_driver(str(tmp_path / "missing")) is None


# --- smx info --------------------------------------------------------------------------------


def test_info_lists_cpu_blas_and_backends(no_cupy, monkeypatch, capsys):
    monkeypatch.setattr("smx.plugins.get_plugins", lambda: plugins_with(FakeGpu()))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "logical cores" in out and "BLAS: " in out
    assert "GPU cuda:1 (fakegpu): Fake GPU 9000, 8.0 GiB" in out
    assert "driver 550.54.15 (CUDA 12.4)" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "CuPy is not installed" in rows["cupy"] and " no " in rows["cupy"]
    assert "yes" in rows["numpy"] and "cpu, device1, device2" in rows["array-api-strict"]


def test_info_json(no_cupy, capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu"]["cores"] >= 1
    by_name = {b["name"]: b for b in info["backends"]}
    assert by_name["numpy"]["usable"] and by_name["numpy"]["devices"] == ["cpu"]
    assert not by_name["cupy"]["usable"] and "CuPy" in by_name["cupy"]["reason"]


def test_info_cli_without_gpu(tmp_path):
    proc = run_smx("info", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "CPU:" in proc.stdout and "numpy" in proc.stdout and "cupy" in proc.stdout
