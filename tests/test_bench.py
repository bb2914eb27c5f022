"""`smx bench` runs and writes its report; no timing is asserted anywhere."""

from __future__ import annotations

import json

import numpy as np

from smx import bench
from smx.errors import PluginError
from smx.optimizers.transforms import tree_map
from smx.plugins import Plugins
from smx.types import PluginParams, SolverSpec

from .conftest import assert_one_line_error, run_smx

PLUGINS = Plugins(entry_points=False)


def test_quick_bench_writes_markdown_and_json(tmp_path):
    proc = run_smx("bench", "--quick", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"meta", "sgd", "lbfgs", "memory", "gpu", "targets"} <= data.keys()
    assert {"date", "cpu", "blas", "versions", "machine"} <= data["meta"].keys()
    cases = data["sgd"]["cases"]
    assert {"gemm_floor", "smx_numpy", "bare_loop", "shuffle_gather"} <= cases.keys()
    for c in cases.values():
        assert c["runs"] == 5 and c["min_s"] <= c["median_s"] <= c["max_s"]
    assert "torch_cpu" in cases or "torch_cpu" in data["sgd"]["skipped"]
    assert {"smx_numpy/gemm_floor", "overhead"} <= data["sgd"]["ratios"].keys()
    assert "skipped" in data["gpu"] or "epoch" in data["gpu"]
    assert data["memory"]["ratio"] > 0
    assert [t["key"] for t in data["targets"]] == [t.key for t in bench.TARGETS]
    assert "## Targets" in md and "GEMM floor" in md and "BLAS" in md


def test_bench_rejects_a_bad_size(tmp_path):
    proc = run_smx("bench", "--quick", "--rows", "0", "-o", "out", cwd=tmp_path)
    assert_one_line_error(proc, "--rows")
    assert not (tmp_path / "out").exists()


def test_bench_refuses_an_output_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    proc = run_smx("bench", "--quick", "-o", "out", cwd=tmp_path)
    assert_one_line_error(proc, "out", "not a folder")


class NoLbfgs:
    def get(self, kind, name, where=None):
        raise PluginError(f"unknown {kind} {name!r}")


def test_missing_lbfgs_is_reported_not_fatal():
    out = bench.bench_lbfgs(bench.BenchConfig.quick(), NoLbfgs(), log=lambda _: None)
    assert out == {"skipped": "lbfgs not installed (no optimizer 'lbfgs' is registered)"}
    md = bench.render({"meta": bench.meta(bench.BenchConfig.quick()), "lbfgs": out,
                       "targets": bench.targets({"lbfgs": out})})
    assert "lbfgs not installed" in md


class ManyStepsGD:
    """A stand-in full-batch solver: 200 gradient steps per iteration."""

    def init(self, params):
        return {}

    def step(self, params, state, closure, lr):
        for _ in range(200):
            loss, grads = closure(params)
            params = tree_map(lambda p, g: p - 1.0 * g, params, grads)
        return params, state, loss


class WithLbfgs:
    def get(self, kind, name, where=None):
        if (kind, name) == ("optimizer", "lbfgs"):
            return SolverSpec("lbfgs", lambda: ManyStepsGD(), PluginParams)
        return PLUGINS.get(kind, name, where=where)

    def backend(self, name, where=None):
        return PLUGINS.backend(name)


def test_lbfgs_part_times_smx_to_sklearns_objective():
    bc = bench.BenchConfig(rows=300, features=5, classes=3, repeats=5, lbfgs_rows=300)
    out = bench.bench_lbfgs(bc, WithLbfgs(), log=lambda _: None)
    for dtype in ("float32", "float64"):
        e = out[dtype]
        assert e["smx_updates"] >= 1 and "note" not in e, e
        assert e["smx_objective"] <= e["sklearn_objective"] * (1 + 1e-6)
        assert {"sklearn", "smx_lbfgs"} == e["cases"].keys() and e["ratio"] > 0
    assert np.isclose(out["l2"], 1 / (bc.C * 300))


class FakeRandomState:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def standard_normal(self, shape, dtype):
        return self.rng.standard_normal(shape, dtype=dtype)

    def randint(self, low, high, size):
        return self.rng.integers(low, high, size=size)


def fake_cupy():
    """The few CuPy calls the GPU part makes, on NumPy: a CPU stand-in for a GPU."""
    from types import SimpleNamespace

    runtime = SimpleNamespace(cudaDevAttrMemoryClockRate=36, cudaDevAttrGlobalMemoryBusWidth=37,
                              deviceGetAttribute=lambda attr, dev: {36: 1_000_000, 37: 256}[attr])
    return SimpleNamespace(random=SimpleNamespace(RandomState=FakeRandomState),
                           float32=np.float32, int64=np.int64, zeros=np.zeros,
                           empty_like=np.empty_like, copyto=np.copyto,
                           cuda=SimpleNamespace(runtime=runtime))


def test_gpu_part_runs_on_a_cpu_stand_in(monkeypatch):
    from smx.backends.numpy_backend import NumpyBackend

    class FakeGpu(NumpyBackend):
        name, is_gpu = "cupy", True

        def devices(self):
            return ["cuda:0"]

        def device_info(self):
            return [{"device": "cuda:0", "name": "Stand-in GPU"}]

    class WithGpu:
        def get(self, kind, name, where=None):
            return FakeGpu() if (kind, name) == ("backend", "cupy") else PLUGINS.get(kind, name)

        def backend(self, name, where=None):
            return FakeGpu() if name == "cupy" else PLUGINS.backend(name)

    monkeypatch.setitem(__import__("sys").modules, "cupy", fake_cupy())
    bc = bench.BenchConfig.quick()
    out = bench.bench_gpu(bc, WithGpu(), log=lambda _: None)
    assert out["card"] == "Stand-in GPU"
    assert out["epoch"]["cases"]["smx_cupy"]["runs"] == bc.repeats
    assert "torch_cuda" in out["epoch"]["cases"] or "torch_cuda" in out["epoch"]["skipped"]
    bw = out["bandwidth"]
    assert bw["card_peak_bytes_per_s"] == 2 * 1e9 * 256 / 8 and bw["fraction"] > 0
    assert bw["x_bytes"] == bc.gpu_bandwidth_rows * bc.gpu_features * 4
    md = bench.render({"meta": bench.meta(bc), "gpu": out, "targets": bench.targets({"gpu": out})})
    assert "Stand-in GPU" in md and "GB/s" in md


def test_gpu_part_says_why_it_is_skipped():
    out = bench.bench_gpu(bench.BenchConfig.quick(), PLUGINS, log=lambda _: None)
    reason = PLUGINS.get("backend", "cupy").unavailable_reason()
    if reason is not None:
        assert out == {"skipped": f"no usable GPU: {reason}"}
    else:  # a usable GPU: the part ran, and says nothing about being skipped
        assert "skipped" not in out and {"card", "epoch", "bandwidth"} <= out.keys()


class Stuck:
    def init(self, params):
        return {}

    def step(self, params, state, closure, lr):
        return params, state, closure(params)[0]


def test_an_optimizer_that_stalls_gives_up_instead_of_running_on():
    spec = SolverSpec("lbfgs", lambda: Stuck(), PluginParams)
    calls = []

    def value(p):
        calls.append(1)
        return 1.0

    updates, best = bench.lbfgs_steps_to(spec, {"W": np.zeros((2, 2))}, lambda p: (0.0, p),
                                         target=0.5, value=value)
    assert (updates, best) == (-1, 1.0) and len(calls) == 11


def test_card_bandwidth_falls_back_to_device_properties():
    from types import SimpleNamespace

    props = {"memoryClockRate": 2_619_000, "memoryBusWidth": 5120}  # an H100's HBM3
    rt = SimpleNamespace(getDeviceProperties=lambda i: props)
    bw = bench.card_bandwidth(SimpleNamespace(cuda=SimpleNamespace(runtime=rt)))
    assert bw == 2 * 2_619_000e3 * 5120 / 8
    rt_none = SimpleNamespace(getDeviceProperties=lambda i: {})
    assert bench.card_bandwidth(SimpleNamespace(cuda=SimpleNamespace(runtime=rt_none))) is None


def test_lbfgs_part_times_the_kernel_a_run_uses():
    """The fused kernel a Trainer would call, not the portable core, is what gets timed."""
    from smx.backends import numpy_kernels
    from smx.backends.numpy_backend import NumpyBackend

    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return numpy_kernels.cross_entropy_partial(*args, **kwargs)

    class Counting(NumpyBackend):
        def kernel(self, loss):
            return counting

    class WithCountingKernel(WithLbfgs):
        def backend(self, name, where=None):
            return Counting()

    bc = bench.BenchConfig(rows=200, features=4, classes=3, repeats=1, lbfgs_rows=200)
    bench.bench_lbfgs(bc, WithCountingKernel(), log=lambda _: None)
    assert calls


def test_memory_budget_counts_a_device_copy_only_where_there_is_one():
    probe = {"data_bytes": 1000, "extra_peak_bytes": 300}
    shared = bench.memory_ratio({**probe, "device_copy_shares_host": True})
    assert shared["ratio"] == 1.3 and shared["budget_bytes"] == 1000
    copied = bench.memory_ratio({**probe, "device_copy_shares_host": False})
    assert copied["ratio"] == 0.65 and copied["budget_bytes"] == 2000


def test_bench_data_is_float32():
    X, y = bench.make_data(50, 3, 2, seed=0)
    assert X.dtype == np.float32 and X.shape == (50, 3) and set(np.unique(y)) <= {0, 1}
