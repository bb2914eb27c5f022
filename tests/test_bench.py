"""`smx bench` runs and writes its report; no timing is asserted anywhere."""

from __future__ import annotations

import json
import re
import sys
import time

import numpy as np
import pytest

import smx
from smx.backends.numpy_backend import NumpyBackend
from smx.bench import BenchConfig, cases, harness, report, run_bench
from smx.cli import build_parser, main
from smx.errors import PluginError
from smx.optimizers.transforms import tree_map
from smx.plugins import Plugins
from smx.types import PluginParams, SolverSpec

from .conftest import assert_one_line_error, run_smx
from .plugin_fixtures import install_fake_dist

PLUGINS = Plugins(entry_points=False)


def test_quick_bench_writes_markdown_and_json(tmp_path):
    proc = run_smx("bench", "--quick", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"meta", "sgd", "lbfgs", "memory", "e2e", "gpu", "targets"} <= data.keys()
    assert {"date", "cpu", "blas", "versions", "machine"} <= data["meta"].keys()
    settings = data["meta"]["thread_settings"]
    assert settings[-1] == 1 and len(settings) == len(set(settings))
    assert list(data["sgd"]["by_threads"]) == [str(t) for t in settings]
    for sgd in data["sgd"]["by_threads"].values():
        cases_ = sgd["cases"]
        assert {"gemm_floor", "smx_numpy", "bare_loop", "shuffle_gather"} <= cases_.keys()
        for c in cases_.values():
            assert c["runs"] == 5 and c["min_s"] <= c["median_s"] <= c["max_s"]
            assert {"load_before", "load_during", "others_runnable"} <= c.keys()
        assert "torch_cpu" in cases_ or "torch_cpu" in sgd["skipped_cases"]
        assert {"smx_numpy/gemm_floor", "overhead"} <= sgd["ratios"].keys()
        assert sgd["load"]["threads"] == sgd["threads"] and "busy" in sgd["load"]
    for lb in data["lbfgs"]["by_threads"].values():
        assert {"float32", "float64"} <= lb.keys() and "load" in lb["float32"]
        for dtype in ("float32", "float64"):  # full-batch loss+gradient beside its floor
            assert {"loss_grad", "full_floor"} <= lb[dtype]["cases"].keys()
            assert lb[dtype]["loss_grad_ratio"] > 0
    # the scaling table: every thread setting of each case, side by side
    epoch = data["scaling"]["smx NumPy SGD epoch"]
    assert list(epoch["median_s"]) == [str(t) for t in settings]
    assert epoch["speedup"]["1"] == 1.0
    assert "## Scaling with the thread count" in md and "speed-up" in md
    assert "skipped" in data["gpu"] or "epoch" in data["gpu"]
    assert data["memory"]["ratio"] > 0
    assert list(data["e2e"]["by_threads"]) == [str(t) for t in settings]
    keys = [t["key"] for t in data["targets"]]
    assert list(dict.fromkeys(keys)) == list(dict.fromkeys(t.key for t in report.TARGETS))
    # --quick reports, never judges: no target met or missed, and the report says so
    assert all(t["met"] is None and t["not_judged"] for t in data["targets"])
    assert "## Targets" in md and "GEMM floor" in md and "BLAS" in md
    assert "no target is judged" in md and "**no**" not in md
    assert "MISSED" not in proc.stdout and "no target judged" in proc.stdout
    assert not re.search(r"issue\s*#?\d", md, re.IGNORECASE)
    assert "load avg before" in md and "others' runnable" in md


def test_bench_writes_to_bench_results_unless_told_otherwise():
    args = build_parser().parse_args(["bench"])
    assert args.output == "bench-results" and not args.quick and not args.full


def test_quick_and_full_exclude_each_other(tmp_path):
    proc = run_smx("bench", "--quick", "--full", cwd=tmp_path)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr


@pytest.mark.parametrize("args, where", [
    (("--rows", "0"), "--rows"),
    (("--threads", "0"), "--threads"),
    (("--budget", "-1"), "--budget"),
])
def test_bench_rejects_a_bad_size(tmp_path, args, where):
    proc = run_smx("bench", "--quick", *args, "-o", "out", cwd=tmp_path)
    assert_one_line_error(proc, where)
    assert not (tmp_path / "out").exists()


def test_bench_refuses_an_output_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    proc = run_smx("bench", "--quick", "-o", "out", cwd=tmp_path)
    assert_one_line_error(proc, "out", "not a folder")


def test_presets():
    quick, default, full = BenchConfig.quick(), BenchConfig(), BenchConfig.full()
    assert (quick.mode, default.mode, full.mode) == ("quick", "default", "full")
    assert default.budget_s is not None and full.budget_s is None and quick.budget_s is None
    assert full.rows >= default.rows >= report.MIN_SGD_ROWS > quick.rows
    # end to end at its memory goal's size (200,000 x 256) by default, not only with --full
    assert default.e2e_rows == full.e2e_rows == 200_000 and quick.e2e_rows is None


class NoLbfgs:
    def get(self, kind, name, where=None):
        raise PluginError(f"unknown {kind} {name!r}")


def test_missing_lbfgs_is_reported_not_fatal():
    out = cases.bench_lbfgs(BenchConfig.quick(), NoLbfgs(), log=lambda _: None)
    assert out == {"skipped": "lbfgs not installed (no optimizer 'lbfgs' is registered)"}
    results = {"lbfgs": {"by_threads": {"1": out}}}
    md = report.render({"meta": report.meta(BenchConfig.quick()), **results,
                        "targets": report.targets(results)})
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
    bc = BenchConfig(rows=300, features=5, classes=3, repeats=5, lbfgs_rows=300)
    out = cases.bench_lbfgs(bc, WithLbfgs(), log=lambda _: None, threads=1)
    for dtype in ("float32", "float64"):
        e = out[dtype]
        assert e["smx_updates"] >= 1 and "note" not in e, e
        assert e["smx_objective"] <= e["sklearn_objective"] * (1 + 1e-6)
        assert {"sklearn", "smx_lbfgs", "loss_grad", "full_floor"} == e["cases"].keys()
        assert e["ratio"] > 0 and e["loss_grad_ratio"] > 0
        assert e["load"]["threads"] == 1 and e["load"]["rounds"] == 5
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
    bc = BenchConfig.quick()
    out = cases.bench_gpu(bc, WithGpu(), log=lambda _: None)
    assert out["card"] == "Stand-in GPU"
    assert out["epoch"]["cases"]["smx_cupy"]["runs"] == bc.repeats
    assert "torch_cuda" in out["epoch"]["cases"] or "torch_cuda" in out["epoch"]["skipped_cases"]
    assert "load" in out["epoch"] and "load" in out["bandwidth"]
    bw = out["bandwidth"]
    assert bw["card_peak_bytes_per_s"] == 2 * 1e9 * 256 / 8 and bw["fraction"] > 0
    assert bw["x_bytes"] == bc.gpu_bandwidth_rows * bc.gpu_features * 4
    md = report.render({"meta": report.meta(bc), "gpu": out,
                        "targets": report.targets({"gpu": out})})
    assert "Stand-in GPU" in md and "GB/s" in md


def test_gpu_part_says_why_it_is_skipped():
    out = cases.bench_gpu(BenchConfig.quick(), PLUGINS, log=lambda _: None)
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

    updates, best = cases.lbfgs_steps_to(spec, {"W": np.zeros((2, 2))}, lambda p: (0.0, p),
                                         target=0.5, value=value)
    assert (updates, best) == (-1, 1.0) and len(calls) == 11


def test_card_bandwidth_falls_back_to_device_properties():
    from types import SimpleNamespace

    props = {"memoryClockRate": 2_619_000, "memoryBusWidth": 5120}  # an H100's HBM3
    rt = SimpleNamespace(getDeviceProperties=lambda i: props)
    bw = cases.card_bandwidth(SimpleNamespace(cuda=SimpleNamespace(runtime=rt)))
    assert bw == 2 * 2_619_000e3 * 5120 / 8
    rt_none = SimpleNamespace(getDeviceProperties=lambda i: {})
    assert cases.card_bandwidth(SimpleNamespace(cuda=SimpleNamespace(runtime=rt_none))) is None


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

    bc = BenchConfig(rows=200, features=4, classes=3, repeats=1, lbfgs_rows=200)
    cases.bench_lbfgs(bc, WithCountingKernel(), log=lambda _: None)
    assert calls


def test_memory_budget_counts_a_device_copy_only_where_there_is_one():
    probe = {"data_bytes": 1000, "extra_peak_bytes": 300}
    shared = cases.memory_ratio({**probe, "device_copy_shares_host": True})
    assert shared["ratio"] == 1.3 and shared["budget_bytes"] == 1000
    copied = cases.memory_ratio({**probe, "device_copy_shares_host": False})
    assert copied["ratio"] == 0.65 and copied["budget_bytes"] == 2000


def test_bench_data_is_float32():
    X, y = cases.make_data(50, 3, 2, seed=0)
    assert X.dtype == np.float32 and X.shape == (50, 3) and set(np.unique(y)) <= {0, 1}


# --- harness: rounds, load, budget, threads ----------------------------------------------


def counting_cases():
    calls = {"a": 0, "b": 0}

    def case(name):
        def run():
            calls[name] += 1
        return run

    return calls, {"a": case("a"), "b": case("b")}


def test_rounds_are_interleaved_after_one_warm_up():
    calls, cs = counting_cases()
    samples = iter(harness.LoadSample(float(i), i % 2) for i in range(100))
    timings = harness.interleaved(cs, 4, probe=lambda: next(samples))
    assert calls == {"a": 5, "b": 5} and [len(t.runs) for t in timings.values()] == [4, 4]
    assert timings["a"].before.load_1min == 0.0 and len(timings["a"].after) == 4
    s = timings["b"].summary()  # samples 1 before the warm-up, then 3, 5, 7, 9 after runs
    assert s["load_before"] == 1.0 and s["load_during"] == 9.0 and s["others_runnable"] == 1
    assert timings["a"].summary()["others_runnable"] == 0


def test_a_passed_deadline_stops_after_the_minimum_rounds():
    calls, cs = counting_cases()
    timings = harness.interleaved(cs, 7, deadline=time.monotonic() - 1)
    assert [len(t.runs) for t in timings.values()] == [harness.MIN_ROUNDS] * 2
    assert calls["a"] == harness.MIN_ROUNDS + 1


def fixed_load(load, others, rounds=5):
    t = harness.Timing(runs=[1.0] * rounds, before=harness.LoadSample(load, others),
                       after=[harness.LoadSample(load, others)] * rounds)
    return {"case": t}


def test_load_assessment_counts_other_processes_against_the_cores():
    quiet = harness.assess_load(fixed_load(1.9, 0), threads=2, cores=2)
    assert quiet["busy"] is False and quiet["rounds"] == 5 and quiet["load_during"] == 1.9
    busy = harness.assess_load(fixed_load(2.4, 1), threads=2, cores=2)
    assert busy["busy"] is True and "1.00 + 2" in busy["why"]
    assert harness.assess_load(fixed_load(2.4, 1), threads=1, cores=2)["busy"] is False
    # a load average above the cores before the block: other work, even if quiet meanwhile
    before = harness.assess_load(fixed_load(4.6, 0), threads=1, cores=2)
    assert before["busy"] is True and "4.60 before" in before["why"]
    # where other processes cannot be told apart, the load average against the cores
    assert harness.assess_load(fixed_load(2.6, None), threads=1, cores=2)["busy"] is True
    assert harness.assess_load(fixed_load(1.5, None), threads=1, cores=2)["busy"] is False
    unknown = harness.assess_load(fixed_load(None, None), threads=1, cores=2)
    assert unknown["busy"] is None and "could not be read" in unknown["why"]


def test_load_sample_reads_this_machine():
    s = harness.sample_load()
    assert s.load_1min is None or s.load_1min >= 0
    assert s.others_runnable is None or s.others_runnable >= 0


def test_budget_shares_what_is_left():
    assert harness.Budget(None, 3).take(1) is None and not harness.Budget(None).spent
    b = harness.Budget(100.0, 4)
    share = b.take(1) - time.monotonic()
    assert 20 < share <= 25 and b.weight_left == 3
    b.drop(3)
    assert b.weight_left == 0
    spent = harness.Budget(0.0)
    assert spent.spent and "time budget (0 s)" in spent.skipped()["skipped"]


def test_a_spent_budget_skips_the_timed_parts_and_says_so(tmp_path):
    bc = BenchConfig.quick()
    bc.budget_s, bc.parts, bc.threads = 0.0, ("sgd", "lbfgs"), (2, 1)
    results = run_bench(bc, tmp_path, log=lambda _: None, plugins=PLUGINS)
    for part in ("sgd", "lbfgs"):
        assert list(results[part]["by_threads"]) == ["2", "1"]
        for e in results[part]["by_threads"].values():
            assert "time budget" in e["skipped"]
    assert all("time budget" in t["not_judged"] for t in results["targets"]
               if t["key"].startswith(("smx_", "overhead", "lbfgs")))
    md = (tmp_path / "RESULTS.md").read_text()
    assert "Skipped: the time budget (0 s) was spent." in md


def test_thread_settings_time_the_default_and_one():
    assert harness.thread_settings((4, 4, 1)) == [4, 1]
    default = harness.thread_settings()
    assert default[-1] == 1 and (len(default) == 1 or default[0] > 1)


def test_thread_limit_applies_inside_and_restores():
    from smx import sysinfo

    before = sysinfo.blas_threads()
    with harness.thread_limit(1):
        assert sysinfo.blas_threads() == 1
    assert sysinfo.blas_threads() == before
    with harness.thread_limit(None):
        assert sysinfo.blas_threads() == before


# --- report: when a target is judged ----------------------------------------------------


def sgd_entry(ratio, *, busy=False, rounds=5, rows=100_000, batch=1024):
    load = {"busy": busy, "why": "others 1.00 + 2 on 2 cores", "rounds": rounds,
            "load_during": 2.5 if busy else 0.5, "others_runnable": 1.0 if busy else 0.0}
    return {"threads": 2, "rows": rows, "features": 256, "classes": 10, "batch": batch,
            "ratios": {"smx_numpy/gemm_floor": ratio}, "min_ratios": {}, "load": load}


def verdict(entry, mode="default", threads="2"):
    results = {"meta": {"mode": mode}, "sgd": {"by_threads": {threads: entry}}}
    (row,) = [t for t in report.targets(results) if t["key"] == "smx_numpy/gemm_floor"]
    return row["met"], row["not_judged"]


def test_the_epoch_target_is_1_3x_the_floor_at_several_threads_and_1_1x_at_one():
    assert verdict(sgd_entry(1.25)) == (True, None)
    assert verdict(sgd_entry(1.35)) == (False, None)
    assert verdict(sgd_entry(1.05), threads="1") == (True, None)
    assert verdict(sgd_entry(1.15), threads="1") == (False, None)
    results = {"meta": {"mode": "default"},
               "sgd": {"by_threads": {"2": sgd_entry(1.2), "1": sgd_entry(1.2)}}}
    rows = [t for t in report.targets(results) if t["key"] == "smx_numpy/gemm_floor"]
    assert [(r["threads"], r["limit"], r["met"]) for r in rows] == [(2, 1.3, True),
                                                                    (1, 1.1, False)]


def test_the_full_batch_loss_and_gradient_target_is_set_for_several_threads():
    load = sgd_entry(1.0)["load"]
    entry = {"rows": 100_000, "features": 256, "classes": 10, **{
        dtype: {"loss_grad_ratio": 1.1, "loss_grad_min_ratio": 1.0, "load": load}
        for dtype in ("float32", "float64")}}
    results = {"meta": {"mode": "default"}, "lbfgs": {"by_threads": {"2": entry, "1": entry}}}
    rows = [t for t in report.targets(results) if t["key"].startswith("loss_grad_")]
    assert [(r["key"], r["threads"], r["met"]) for r in rows] == [
        ("loss_grad_float32/full_floor", 2, True), ("loss_grad_float64/full_floor", 2, True)]


def test_the_scaling_table_puts_each_thread_setting_side_by_side():
    def case(s):
        return {"median_s": s, "min_s": s, "max_s": s, "runs": 5}

    results = {"sgd": {"by_threads": {
        "2": {"cases": {"smx_numpy": case(0.02), "gemm_floor": case(0.016)}},
        "1": {"cases": {"smx_numpy": case(0.04), "gemm_floor": case(0.03)}}}}}
    table = report.scaling(results)
    assert table["smx NumPy SGD epoch"] == {"median_s": {"2": 0.02, "1": 0.04},
                                            "speedup": {"2": 2.0, "1": 1.0}}
    assert set(table) == {"smx NumPy SGD epoch", "two-GEMM floor of that epoch"}
    lines = report._scaling_lines(table)
    assert lines[0] == "| case | 1 thread ms | 2 threads ms | speed-up at 2 |"
    assert lines[2] == "| smx NumPy SGD epoch | 40.0 | 20.0 | 2.00 |"


def test_targets_are_judged_only_when_the_figure_means_something():
    assert verdict(sgd_entry(1.2)) == (True, None)
    assert verdict(sgd_entry(2.5)) == (False, None)
    assert verdict(sgd_entry(9.0), mode="quick") == (None, "--quick (toy sizes)")
    for busy in (sgd_entry(2.5, busy=True), sgd_entry(2.5, busy=True, rounds=3)):
        met, why = verdict(busy)
        assert met is None and why.startswith("machine busy")
    met, why = verdict(sgd_entry(2.5, rounds=3))
    assert met is None and "3 timed rounds" in why
    for small in (sgd_entry(2.5, rows=20_000), sgd_entry(2.5, batch=32)):
        met, why = verdict(small)
        assert met is None and "batch 1024" in why


def test_memory_is_judged_without_load_but_only_on_enough_data():
    big = {"ratio": 1.1, "data_bytes": 100 * 2**20}
    results = {"meta": {"mode": "default"}, "memory": big}
    (row,) = [t for t in report.targets(results) if t["key"] == "memory"]
    assert row["met"] is True and row["threads"] is None
    results["memory"] = {"ratio": 1.1, "data_bytes": 2**20}
    (row,) = [t for t in report.targets(results) if t["key"] == "memory"]
    assert row["met"] is None and "MiB of data" in row["not_judged"]


# --- the Dask part: L-BFGS on rows read from .npy by a LocalCluster's workers ------------


def test_dask_part_sizes():
    quick, default, full = BenchConfig.quick(), BenchConfig(), BenchConfig.full()
    assert full.dask_rows == 2_000_000 and default.dask_rows <= 200_000
    # opt-in (--only dask) at the default and quick sizes, a part of --full
    assert "dask" not in default.parts and "dask" not in quick.parts and "dask" in full.parts
    args = build_parser().parse_args(["bench", "--quick", "--only", "dask"])
    assert args.only == ["dask"]


def test_a_two_class_softmax_is_the_logistic_model_with_half_the_penalty():
    """The binary comparison's yardstick: dask-ml's (w, c) as W = [-w/2, w/2] gives the
    mean log-loss + l2/4‖w‖² in smx's objective."""
    from smx.bench import dask_cases

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)).astype(np.float32), rng.integers(0, 2, size=50)
    w, c, l2 = rng.normal(size=4), 0.3, 0.01
    W, b = dask_cases.binary_from_logistic(w, c)
    z = X.astype(np.float64) @ w + c
    logloss = np.mean(np.logaddexp(0, z) - y * z)
    assert dask_cases.yardstick(W, b, X, y, l2) == pytest.approx(
        logloss + l2 / 4 * w @ w, rel=1e-12)
    assert dask_cases.yardstick(W, b, X, y, l2) == pytest.approx(
        cases.objective(W, b, X, y, l2), rel=1e-12)


def test_dask_ml_that_does_not_import_is_one_line(monkeypatch):
    from smx.bench import dask_cases

    monkeypatch.setitem(__import__("sys").modules, "dask_ml", None)
    out = dask_cases._versus_dask_ml(BenchConfig.quick(), None, None, {}, None, None, 1,
                                     log=lambda _: None)
    assert out.keys() == {"skipped"} and "dask-ml does not import" in out["skipped"]
    assert "\n" not in out["skipped"]


def test_dask_part_times_smx_on_a_local_cluster_to_the_baselines_objectives():
    """Tiny: 2 LocalClusters (2 workers, then 1) read the .npy files; smx reaches
    scikit-learn's objective (and dask-ml's on the binary labels, where dask-ml imports)."""
    pytest.importorskip("distributed", reason="Dask is not installed (pip install 'smx[dask]')")
    from smx.bench import dask_cases

    bc = BenchConfig(mode="quick", dask_rows=600, features=5, classes=3)
    out = dask_cases.bench_dask(bc, PLUGINS, log=lambda _: None)
    m = out["multinomial"]
    assert m["smx_updates"] >= 1 and "note" not in m, m
    assert m["smx_objective"] <= m["sklearn_objective"] * (1 + 1e-6)
    assert m["cases"].keys() == {"sklearn", "smx_dask"} and m["ratio"] > 0
    assert m["load"]["threads"] == 2 and out["chunk_rows"] == -(-600 // dask_cases.CHUNKS)
    p = out["per_iteration"]
    assert p["iterations"] >= 1 and p["1"] > 0 and p["2"] > 0 and p["ratio_1_to_2"] > 0
    b = out["binary"]
    if "skipped" in b:  # dask-ml is optional (not in smx's extras)
        assert "dask-ml" in b["skipped"] and "\n" not in b["skipped"]
    else:
        assert b["smx_updates"] >= 1 and b["ratio"] > 0, b
        assert b["smx_objective"] <= b["dask_ml_objective"] * (1 + 1e-6)
    results = {"dask": out}
    md = report.render({"meta": report.meta(bc), **results, "targets": report.targets(results)})
    assert "2-worker LocalCluster: time to scikit-learn's final objective" in md
    assert "time per L-BFGS iteration" in md and "1 worker / 2 workers" in md
    assert "binary version" in md


# --- sparse, text-like ------------------------------------------------------------------


def test_text_like_data_has_the_shape_of_a_tfidf_corpus():
    X, y = cases.make_text(3000, 2000, 20, 0.01, seed=0)
    assert X.format == "csr" and X.dtype == np.float64 and X.shape == (3000, 2000)
    assert 0.5 * 0.01 < X.nnz / (3000 * 2000) <= 0.01 * 1.2  # repeated words merge
    assert (X.data > 0).all()
    np.testing.assert_allclose(np.sqrt(X.multiply(X).sum(axis=1)).A1, 1.0, rtol=1e-12)
    assert set(np.unique(y)) == set(range(20))
    df = np.sort(np.bincount(X.indices, minlength=2000))[::-1]
    assert df[0] > 10 * max(df[1000], 1)  # a Zipf vocabulary: a few words are everywhere
    X2, y2 = cases.make_text(3000, 2000, 20, 0.01, seed=0)
    assert (X2 != X).nnz == 0 and (y2 == y).all()
    assert (cases.make_text(3000, 2000, 20, 0.01, seed=1)[0] != X).nnz > 0


def test_sparse_part_times_smx_to_sklearns_objective_and_accuracy():
    bc = BenchConfig(sparse_rows=600, sparse_features=300, sparse_classes=5,
                     sparse_density=0.03, repeats=5)
    out = cases.bench_sparse(bc, PLUGINS, log=lambda _: None)
    assert (out["rows"], out["features"], out["classes"], out["threads"]) == (600, 300, 5, 1)
    assert out["smx_updates"] >= 1 and "note" not in out, out
    assert out["smx_objective"] <= out["sklearn_objective"] * (1 + 1e-9)
    assert np.isclose(out["l2"], 1 / (bc.C * 600)) and out["alpha"] == out["l2"]
    assert out["accuracy_target"] == out["sklearn_test_accuracy"] - bc.sparse_accuracy_slack
    assert out["smx_test_accuracy"] >= out["accuracy_target"]
    assert out["sgd_test_accuracy"] >= out["accuracy_target"]
    assert out["cases"].keys() == {"sklearn_lbfgs", "smx_lbfgs", "smx_lbfgs_to_accuracy",
                                   "sgdclassifier_to_accuracy"}
    assert out["ratio"] > 0 and out["accuracy_ratio"] > 0 and out["load"]["rounds"] == 5
    assert cases.bench_sparse(bc, NoLbfgs(), log=lambda _: None)["skipped"].startswith(
        "lbfgs not installed")


def sparse_entry(rows=50_000, features=20_000, ratio=0.8):
    load = {"busy": False, "why": "quiet", "rounds": 5, "load_during": 0.5,
            "others_runnable": 0.0}
    return {"threads": 1, "rows": rows, "test_rows": rows // 4, "features": features,
            "classes": 20, "density": 0.002, "nnz": 1000, "C": 1.0, "l2": 2e-5, "alpha": 2e-5,
            "sklearn_objective": 1.5, "sklearn_n_iter": 30, "smx_updates": 20,
            "smx_objective": 1.4, "sklearn_test_accuracy": 0.8, "accuracy_target": 0.795,
            "accuracy_slack": 0.005, "smx_updates_to_accuracy": 9, "smx_test_accuracy": 0.8,
            "sgd_epochs_to_accuracy": -1, "sgd_test_accuracy": 0.7, "ratio": ratio,
            "min_ratio": ratio, "accuracy_ratio": None, "accuracy_min_ratio": None,
            "note": "SGDClassifier did not reach the target accuracy in 10 epochs",
            "cases": {}, "load": load}


def test_sparse_target_is_judged_at_text_sizes_and_the_report_says_what_is_compared():
    def row(entry):
        results = {"meta": {"mode": "default"}, "sparse": entry}
        (r,) = [t for t in report.targets(results) if t["key"] == "sparse_lbfgs/sklearn"]
        return r

    assert row(sparse_entry())["met"] is True
    assert row(sparse_entry(ratio=1.2))["met"] is False
    small = row(sparse_entry(rows=2_000))
    assert small["met"] is None and "50,000 rows x 20,000 features" in small["not_judged"]
    results = {"meta": report.meta(BenchConfig()), "sparse": sparse_entry()}
    results["targets"] = report.targets(results)
    md = report.render(results)
    assert "one-vs-rest" in md and "same objective" in md.lower()
    assert "SGDClassifier: not within its epoch limit" in md and "did not reach" in md


def test_sparse_sizes_default_and_full():
    default, full = BenchConfig(), BenchConfig.full()
    assert (default.sparse_rows, default.sparse_features) == (50_000, 20_000)
    assert (full.sparse_rows, full.sparse_features, full.sparse_classes) == (200_000, 50_000, 20)
    assert default.sparse_density == full.sparse_density == 0.002
    assert "sparse" in default.parts
# --- end to end: whole processes -------------------------------------------------------


def test_e2e_part_times_whole_processes_and_compares_objectives(tmp_path):
    proc = run_smx("bench", "--quick", "--only", "e2e", "--threads", "1", "-o", "out",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    e2e = data["e2e"]
    assert {"sklearn_1t", "smx_1t", "smx_digits", "smx_help"} == e2e["cases"].keys()
    for c in e2e["cases"].values():
        assert c["runs"] == 1 and c["max_rss_bytes"] > 0 and c["cpu_median_s"] > 0
    e = e2e["by_threads"]["1"]
    # both fits evaluated with the same float64 objective, and they agree at this tiny size
    assert abs(e["objective_rel_diff"]) < 1e-4 and e["sklearn_n_iter"] >= 1
    assert e["ratio"] > 0 and e["rss_ratio"] > 0 and e["load"]["threads"] == 1
    assert e["data_bytes"] == e2e["data_bytes"] == 4_000 * 32 * 4 + 4_000 * 8
    assert "threads=1" in e2e["commands"]["smx_1t"]
    assert "optimizer.name=lbfgs" in e2e["commands"]["smx_1t"]
    assert e2e["cli"]["digits_s"] > 0 and e2e["cli"]["help_s"] > 0
    rows = {t["key"]: t for t in data["targets"] if t["key"].startswith("e2e")}
    assert set(rows) == {"e2e_smx/sklearn", "e2e_rss", "e2e_digits", "e2e_help"}
    assert all(r["value"] is not None and r["met"] is None for r in rows.values())
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "## End to end" in md and "relative difference" in md and "peak RSS" in md
    assert "smx --help, wall seconds" in md and "smx run digits" in md
    assert "<tmp>" in md and str(tmp_path) not in md.split("## End to end")[1]


def test_a_process_peak_is_its_own_not_the_bench(tmp_path):
    """A child started straight from the bench would report the bench's high-water RSS."""
    big = np.ones(40 * 2**20 // 8 * 5)  # 200 MiB, touched: this process's peak
    launcher = cases.Launcher(tmp_path)
    try:
        small = cases.ProcessCase("small", [sys.executable, "-I", "-S", "-c", "pass"],
                                  tmp_path, launcher)
        grows = cases.ProcessCase("grows", [sys.executable, "-I", "-S", "-c",
                                            "b = b'x' * (96 << 20)"], tmp_path, launcher)
        small(), grows()
    finally:
        launcher.close()
    assert big.sum() > 0
    assert small.max_rss[0] < 64 * 2**20 < 96 * 2**20 < grows.max_rss[0]
    assert small.cpu[0] >= 0 and small.calls == 1


def test_a_failing_process_is_reported_not_timed(tmp_path):
    launcher = cases.Launcher(tmp_path)
    try:
        fails = cases.ProcessCase(
            "fails", [sys.executable, "-c", "print('smx: error: no such file'); exit(3)"],
            tmp_path, launcher)
        with pytest.raises(cases.ProcessFailed, match="fails exited with 3: smx: error: no"):
            fails()
        missing = cases.ProcessCase("missing", [str(tmp_path / "nothing")], tmp_path, launcher)
        with pytest.raises(cases.ProcessFailed, match="missing exited with -1"):
            missing()
    finally:
        launcher.close()
    assert fails.max_rss == []


def e2e_results(rel=0.0, rows=200_000, rss=1.5, busy=False, mode="default"):
    load = {"busy": busy, "why": "w", "rounds": 5, "load_during": 0.5, "others_runnable": 0.0}
    entry = {"threads": 1, "rows": rows, "features": 256, "classes": 10,
             "data_bytes": rows * (256 * 4 + 8), "ratio": 0.6, "min_ratio": 0.6,
             "objective_rel_diff": rel, "rss_ratio": rss, "load": load}
    cli = {"digits_s": 0.9, "digits_min_s": 0.8, "help_s": 0.2, "help_min_s": 0.1,
           "load": load}
    results = {"meta": {"mode": mode}, "e2e": {"by_threads": {"1": entry}, "cli": cli}}
    return {t["key"]: (t["met"], t["not_judged"]) for t in report.targets(results)
            if t["key"].startswith("e2e")}


def test_e2e_targets_are_judged_only_on_the_same_objective_and_sizes():
    assert e2e_results() == {"e2e_smx/sklearn": (True, None), "e2e_rss": (True, None),
                             "e2e_digits": (True, None), "e2e_help": (False, None)}
    met, why = e2e_results(rel=3e-5)["e2e_smx/sklearn"]
    assert met is None and "3.0e-05 relative above" in why
    assert e2e_results(rel=-1e-3)["e2e_smx/sklearn"] == (True, None)  # smx got further
    small = e2e_results(rows=100_000)
    assert small["e2e_smx/sklearn"] == (True, None) and small["e2e_rss"][0] is None
    assert "MiB of data" in small["e2e_rss"][1]
    assert e2e_results(rows=50_000)["e2e_smx/sklearn"][0] is None
    busy = e2e_results(busy=True)
    assert busy["e2e_digits"][0] is None and busy["e2e_rss"] == (True, None)
    assert all(met is None for met, _ in e2e_results(mode="quick").values())


def test_a_skipped_e2e_part_says_why_in_every_row():
    results = {"meta": {"mode": "default"}, "e2e": {"skipped": "smx_1t exited with 2: bad"}}
    rows = [t for t in report.targets(results) if t["key"].startswith("e2e")]
    assert len(rows) == 4 and all("smx_1t exited with 2" in t["not_judged"] for t in rows)


def test_the_load_probe_counts_the_benchs_helper_processes_as_its_own():
    """A helper process (the launcher of timed processes) busy at the instant of a reading
    is the bench's own demand, not other work; another busy process is other work."""
    import subprocess
    from pathlib import Path

    from smx.bench import harness

    if not Path("/proc/self/task").is_dir():
        pytest.skip("reads /proc (Linux)")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        with_spin = max(harness.others_runnable() for _ in range(5))
        without = min(harness.others_runnable((spin.pid,)) for _ in range(5))
        assert with_spin >= 1 and without <= with_spin - 1
    finally:
        spin.kill()
        spin.wait()


# --- --backends: any registered engine --------------------------------------------------------

NUMPY_TWIN = '''
    import smx
    from smx.backends.numpy_backend import NumpyBackend

    class NumpyTwin(NumpyBackend):
        name = "numpy-twin"
        description = "a third-party engine: NumPy under another name"

    @smx.hookimpl
    def smx_backends():
        yield NumpyTwin()
'''


class CountingTwin(NumpyBackend):
    """NumPy under another name, counting the epochs' batches it gathers."""

    name = "counting-twin"
    batches = 0

    def batch(self, data, idx):
        CountingTwin.batches += 1
        return super().batch(data, idx)


class TwinPlugin:
    @smx.hookimpl
    def smx_backends(self):
        yield CountingTwin()


def tiny(**kw) -> BenchConfig:
    bc = BenchConfig.quick()
    bc.rows, bc.features, bc.batch, bc.repeats = 600, 8, 100, 1
    for k, v in kw.items():
        setattr(bc, k, v)
    return bc


def test_named_engines_are_timed_each_with_its_full_batch_step():
    plugins = Plugins(entry_points=False)
    plugins.register(TwinPlugin(), name="twin-plugin")
    CountingTwin.batches = 0
    out = cases.bench_sgd(tiny(backends=("counting-twin", "array-api-strict")), plugins,
                          log=lambda _: None)
    assert CountingTwin.batches >= 2 * 6  # the warm-up and the timed epoch, 6 batches each
    assert {"smx_numpy", "smx_numpy_full", "smx_counting_twin", "smx_counting_twin_full",
            "smx_array_api_strict", "smx_array_api_strict_full"} <= out["cases"].keys()
    assert not {"smx_jax", "smx_torch"} & out["cases"].keys()  # only the engines named
    assert {"smx_counting_twin/smx_numpy", "smx_counting_twin_full/smx_numpy_full",
            "smx_array_api_strict/smx_numpy_per_row"} <= out["ratios"].keys()
    assert out["ratios"].keys() == out["min_ratios"].keys()


def test_without_backends_the_default_engines_epochs_are_timed():
    out = cases.bench_sgd(tiny(), PLUGINS, log=lambda _: None)
    timed = out["cases"].keys() | out["skipped_cases"].keys()
    assert {"smx_torch", "smx_jax", "smx_array_api_strict"} <= timed
    assert not [c for c in out["cases"] if c.endswith("_full")]
    assert "smx_jax/smx_numpy" in out["ratios"] or "smx_jax" in out["skipped_cases"]


def test_bench_backends_times_a_third_party_engine(tmp_path):
    site = install_fake_dist(tmp_path / "site", "smx-twin", "0.2", {"smx_twin": NUMPY_TWIN},
                             {"twin": "smx_twin"})
    proc = run_smx("bench", "--quick", "--only", "sgd", "--backends", "numpy-twin",
                   "--threads", "1", "--repeats", "1", "--rows", "600", "--features", "8",
                   "--batch", "100", "-o", "out", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    sgd = data["sgd"]["by_threads"]["1"]
    assert {"smx_numpy_twin", "smx_numpy_twin_full", "smx_numpy_full"} <= sgd["cases"].keys()
    assert "smx_numpy_twin/smx_numpy" in sgd["ratios"]
    assert data["meta"]["config"]["backends"] == ["numpy-twin"]
    assert "| smx_numpy_twin_full |" in (tmp_path / "out" / "RESULTS.md").read_text()


@pytest.mark.parametrize("value, needles", [
    ("numpy,tpu", ("--backends", "unknown backend 'tpu'", "valid:", "array-api-strict",
                   "numpy")),
    ("numpy,,jax", ("--backends", "comma-separated backend names")),
])
def test_bench_backends_refuses_a_bad_name_before_timing(tmp_path, capsys, value, needles):
    code = main(["bench", "--quick", "--backends", value, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("smx: error: --backends: ")
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists()


class Unusable(NumpyBackend):
    name = "unusable"

    def unavailable_reason(self):
        return "its library is not installed"


class UnusablePlugin:
    @smx.hookimpl
    def smx_backends(self):
        yield Unusable()


def test_bench_backends_refuses_an_unusable_engine_before_timing(tmp_path, capsys):
    from smx.plugins import get_plugins

    get_plugins.cache_clear()
    get_plugins().register(UnusablePlugin(), name="unusable-plugin")
    try:
        code = main(["bench", "--quick", "--backends", "unusable", "-o", str(tmp_path / "o")])
    finally:
        get_plugins.cache_clear()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--backends: backend 'unusable' is unavailable: its library is not installed" in err
    assert not (tmp_path / "o").exists()
