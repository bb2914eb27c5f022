"""``smx bench``: how fast smx trains, as ratios to baselines measured in the same run.

Every case is a zero-argument callable timed in interleaved rounds (one warm-up,
then ``repeats`` rounds of every case in turn), so a noisy neighbour slows all
cases of a round alike and the paired ratios stay meaningful. Each case reports
its median, min and max; each ratio is the median of the per-round ratios.

Parts: the SGD epoch (smx on each usable backend, the GEMM floor, a bare loop
for smx's own overhead, PyTorch on the CPU when installed); full-batch L-BFGS
against scikit-learn at the same C; peak memory in a subprocess; the GPU part
when CuPy is usable. Results go to ``RESULTS.md`` and ``results.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import smx
from smx.io import atomic_write_json, atomic_write_text


class Target(NamedTuple):
    """One of the issue's targets, and where its figures live in the results."""

    key: str
    text: str
    limit: float
    value: tuple[str, ...]  # keys leading to the paired-median value (what "met" judges)
    best: tuple[str, ...] | None = None  # keys leading to the best-case (min/min) value
    at_least: bool = False  # met when value ≥ limit, not ≤


def _sgd(key: str) -> dict[str, Any]:
    return {"value": ("sgd", "ratios", key), "best": ("sgd", "min_ratios", key)}


#: the issue's targets
TARGETS = [
    Target("smx_numpy/gemm_floor", "smx NumPy epoch / GEMM floor", 2.0,
           **_sgd("smx_numpy/gemm_floor")),
    Target("smx_numpy/torch_cpu", "smx NumPy epoch / PyTorch CPU epoch", 0.35,
           **_sgd("smx_numpy/torch_cpu")),
    Target("overhead", "smx overhead per step (Trainer vs bare loop)", 0.05, **_sgd("overhead")),
    Target("lbfgs_float32/sklearn",
           "smx lbfgs / scikit-learn time to the same objective, float32", 0.7,
           ("lbfgs", "float32", "ratio"), ("lbfgs", "float32", "min_ratio")),
    Target("lbfgs_float64/sklearn",
           "smx lbfgs / scikit-learn time to the same objective, float64", 1.0,
           ("lbfgs", "float64", "ratio"), ("lbfgs", "float64", "min_ratio")),
    Target("memory", "peak memory / (training data + its device copy unless shared)", 1.3,
           ("memory", "ratio")),
    Target("gpu_cupy/torch_cuda", "CuPy epoch / PyTorch CUDA epoch", 1.0,
           ("gpu", "epoch", "ratio"), ("gpu", "epoch", "min_ratio")),
    Target("gpu_bandwidth_fraction",
           "full-batch loss+grad: X bytes / time / card bandwidth (≥)", 0.5,
           ("gpu", "bandwidth", "fraction"), at_least=True),
]
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS")


@dataclass
class BenchConfig:
    rows: int = 200_000
    features: int = 256
    classes: int = 10
    batch: int = 1024
    repeats: int = 7
    lr: float = 0.1
    C: float = 1.0  # scikit-learn's C for the L-BFGS comparison
    lbfgs_rows: int | None = None  # default: rows
    strict_rows: int = 20_000  # array-api-strict epoch (a conformance backend, not a fast one)
    gpu_rows: int = 60_000
    gpu_features: int = 784
    gpu_bandwidth_rows: int = 2_000_000
    seed: int = 0
    parts: tuple[str, ...] = ("sgd", "lbfgs", "memory", "gpu")

    @classmethod
    def quick(cls) -> BenchConfig:
        """Seconds, for smoke tests: same structure, toy sizes."""
        return cls(rows=4_000, features=32, batch=256, repeats=5, strict_rows=2_000,
                   lbfgs_rows=2_000, gpu_rows=4_000, gpu_features=64, gpu_bandwidth_rows=20_000)


@dataclass
class Timing:
    runs: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"median_s": statistics.median(self.runs), "min_s": min(self.runs),
                "max_s": max(self.runs), "runs": len(self.runs)}


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int,
                sync: Callable[[], None] | None = None) -> dict[str, Timing]:
    """One warm-up call of each case, then ``repeats`` rounds of every case in turn."""
    timings = {name: Timing() for name in cases}
    for fn in cases.values():
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            timings[name].runs.append(time.perf_counter() - t0)
    return timings


def paired_ratio(timings: dict[str, Timing], a: str, b: str) -> float | None:
    """Median over rounds of time(a)/time(b): robust to load that changes between rounds."""
    if a not in timings or b not in timings:
        return None
    return statistics.median(x / y for x, y in zip(timings[a].runs, timings[b].runs, strict=True))


def min_ratio(timings: dict[str, Timing], a: str, b: str) -> float | None:
    """min(a)/min(b): the best-case ratio, the steadier figure on a loaded machine."""
    if a not in timings or b not in timings:
        return None
    return min(timings[a].runs) / min(timings[b].runs)


def ratio_pair(timings: dict[str, Timing], a: str, b: str
               ) -> tuple[float | None, float | None]:
    """(paired-median ratio, min/min ratio) of case ``a`` to case ``b``."""
    return paired_ratio(timings, a, b), min_ratio(timings, a, b)


def ratio_tables(timings: dict[str, Timing], pairs: dict[str, tuple[str, str, float]]
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """``{key: (a, b, minus)}`` -> ({key: paired ratio − minus}, {key: min ratio − minus}),
    leaving out pairs with a case that did not run."""
    ratios, mins = {}, {}
    for key, (a, b, minus) in pairs.items():
        r, best = ratio_pair(timings, a, b)
        if r is not None and best is not None:
            ratios[key], mins[key] = r - minus, best - minus
    return ratios, mins


def make_data(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 Gaussian blobs made in chunks, so the only large allocation is X itself.

    float32 only: a float64 run casts these draws (as the L-BFGS part does), so both
    dtypes see the same numbers.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 2.0 / np.sqrt(d), size=(k, d)).astype(np.float32)
    y = rng.integers(0, k, size=n)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 65_536):
        e = min(s + 65_536, n)
        X[s:e] = rng.standard_normal((e - s, d), dtype=np.float32)
        X[s:e] += means[y[s:e]]
    return X, y


# --------------------------------------------------------------------- SGD epoch


def _splits(X: np.ndarray, y: np.ndarray, k: int) -> Any:
    from smx.datasets.split import Splits, Standardizer

    empty = X[:0]
    return Splits(classes=np.arange(k), X_train=X, y_train=y, X_val=empty, y_val=y[:0],
                  X_test=empty, y_test=y[:0], standardizer=Standardizer.identity(X.shape[1]))


def _run_config(bc: BenchConfig, backend: str, dtype: str = "float32") -> Any:
    from smx.config import RunConfig

    return RunConfig.model_validate({
        "backend": backend, "dtype": dtype, "epochs": 1_000_000, "batch_size": bc.batch,
        "optimizer": {"name": "sgd", "lr": bc.lr}, "seed": bc.seed,
    })


def smx_epoch(bc: BenchConfig, X: np.ndarray, y: np.ndarray, backend_name: str,
              plugins: Any) -> tuple[Callable[[], Any], Any]:
    """Trainer.run_epoch on ``backend_name``: the whole smx hot path, plugins included."""
    from smx.training import Trainer

    backend = plugins.backend(backend_name)
    device = backend.resolve_device("auto")
    trainer = Trainer(_run_config(bc, backend_name), _splits(X, y, bc.classes), backend,
                      device, plugins)
    return trainer.run_epoch, trainer


def bare_epoch(bc: BenchConfig, trainer: Any) -> Callable[[], Any]:
    """The same step (objective partial, transformation, update) with nothing around it."""
    data, step, backend = trainer.train_data, trainer.train_step, trainer.backend
    n, bs, lr = data.n, bc.batch, bc.lr
    rng = np.random.default_rng(bc.seed)
    box = {"params": trainer.params, "state": trainer.opt_state}

    def run() -> None:
        params, state = box["params"], box["state"]
        order = trainer.backend.from_host(rng.permutation(n), trainer.device, "int64")
        for s in range(0, n, bs):
            b = backend.batch(data, order[s:min(s + bs, n)])
            params, state, _ = step(params, state, b.X, b.y, b.w, lr)
        box["params"], box["state"] = params, state

    return run


def gemm_floor(X: np.ndarray, k: int, bs: int, transposed: bool = False) -> Callable[[], Any]:
    """The two products per batch over contiguous slices: ``Xb @ W`` and ``Xb.T @ G``.

    ``transposed`` runs the same products in the (K, n) layout smx uses (``Wᵀ Xbᵀ``, ``Gᵀ Xb``).
    """
    n, d = X.shape
    W = np.full((d, k), 0.01, dtype=X.dtype)
    G = np.full((bs, k), 0.01, dtype=X.dtype)
    Gt = np.ascontiguousarray(G.T)

    def run() -> None:
        for s in range(0, n, bs):
            Xb = X[s:s + bs]
            if transposed:
                _ = W.T @ Xb.T
                _ = Gt[:, :Xb.shape[0]] @ Xb
            else:
                _ = Xb @ W
                _ = Xb.T @ G[:Xb.shape[0]]

    return run


def shuffle_gather(X: np.ndarray, bs: int, seed: int) -> Callable[[], Any]:
    """Only the per-batch row gather of a shuffled epoch: what shuffling costs on its own."""
    rng = np.random.default_rng(seed)
    n = X.shape[0]

    def run() -> None:
        order = rng.permutation(n)
        for s in range(0, n, bs):
            _ = np.take(X, order[s:s + bs], axis=0)

    return run


def torch_version() -> str | None:
    try:
        import torch
    except Exception:
        return None
    return str(torch.__version__)


def torch_epoch(X: Any, y: Any, k: int, bs: int, lr: float, l2: float, seed: int,
                device: str = "cpu") -> Callable[[], Any]:
    """PyTorch autograd + torch.optim.SGD on the same data, batches and objective."""
    import torch
    import torch.nn.functional as F

    Xt = torch.as_tensor(X, device=device)
    yt = torch.as_tensor(y, device=device, dtype=torch.int64)
    n, d = Xt.shape
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(d, k, generator=g, dtype=Xt.dtype) * 0.01).to(device).requires_grad_()
    b = torch.zeros(k, dtype=Xt.dtype, device=device, requires_grad=True)
    opt = torch.optim.SGD([W, b], lr=lr)
    rng = np.random.default_rng(seed)

    def run() -> None:
        order = torch.as_tensor(rng.permutation(n), device=device)
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            loss = F.cross_entropy(Xt[idx] @ W + b, yt[idx]) + (0.5 * l2) * (W * W).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


#: the SGD part's ratios: key -> (case, baseline case, subtracted from the ratio)
SGD_RATIOS = {
    "smx_numpy/gemm_floor": ("smx_numpy", "gemm_floor", 0.0),
    "smx_numpy/gemm_floor_kn": ("smx_numpy", "gemm_floor_kn", 0.0),
    "shuffle_gather/gemm_floor": ("shuffle_gather", "gemm_floor", 0.0),
    "smx_numpy/torch_cpu": ("smx_numpy", "torch_cpu", 0.0),
    "bare_loop/gemm_floor": ("bare_loop", "gemm_floor", 0.0),
    "overhead": ("smx_numpy", "bare_loop", 1.0),  # the Trainer's share on top of the bare loop
}


def bench_sgd(bc: BenchConfig, plugins: Any, log: Callable[[str], None]) -> dict[str, Any]:
    X, y = make_data(bc.rows, bc.features, bc.classes, bc.seed)
    cases: dict[str, Callable[[], Any]] = {
        "gemm_floor": gemm_floor(X, bc.classes, bc.batch),
        "gemm_floor_kn": gemm_floor(X, bc.classes, bc.batch, transposed=True),
        "shuffle_gather": shuffle_gather(X, bc.batch, bc.seed),
    }
    skipped: dict[str, str] = {}
    run_np, trainer = smx_epoch(bc, X, y, "numpy", plugins)
    cases["smx_numpy"] = run_np
    cases["bare_loop"] = bare_epoch(bc, trainer)
    if torch_version() is None:
        skipped["torch_cpu"] = "PyTorch is not installed (pip install 'smx[bench]')"
    else:
        cases["torch_cpu"] = torch_epoch(X, y, bc.classes, bc.batch, bc.lr, trainer.l2, bc.seed)
    strict = plugins.get("backend", "array-api-strict")
    if reason := strict.unavailable_reason():
        skipped["smx_array_api_strict"] = reason
    else:  # a smaller slice: strict is the conformance check, its speed is informational
        m = min(bc.strict_rows, bc.rows)
        cases["smx_array_api_strict"] = smx_epoch(bc, X[:m], y[:m], "array-api-strict",
                                                  plugins)[0]
    log(f"sgd: {len(cases)} cases x {bc.repeats} rounds on {bc.rows:,} x {bc.features}")
    timings = interleaved(cases, bc.repeats)
    ratios, mins = ratio_tables(timings, SGD_RATIOS)
    if "smx_array_api_strict" in timings:  # per row, since it ran on fewer rows
        m = min(bc.strict_rows, bc.rows)
        ratios["smx_array_api_strict/smx_numpy_per_row"] = (
            paired_ratio(timings, "smx_array_api_strict", "smx_numpy") * bc.rows / m)
    steps = -(-bc.rows // bc.batch)
    return {
        "rows": bc.rows, "features": bc.features, "classes": bc.classes, "batch": bc.batch,
        "steps_per_epoch": steps, "strict_rows": min(bc.strict_rows, bc.rows),
        "cases": {k: t.summary() for k, t in timings.items()},
        "ratios": ratios,
        "min_ratios": mins,
        "skipped": skipped,
    }


# ------------------------------------------------------------- L-BFGS vs sklearn


def objective(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float) -> float:
    """smx's objective (mean cross-entropy + l2/2‖W‖²) in float64: the common yardstick for
    both fits."""
    from smx.losses import CrossEntropy
    from smx.objective import Objective
    from smx.types import Block

    params = {"W": W.astype(np.float64), "b": b.astype(np.float64)}
    X64 = X.astype(np.float64, copy=False)
    return float(Objective(CrossEntropy(), l2).value(params, Block(X64, np.asarray(y))))


def sklearn_fit(X: np.ndarray, y: np.ndarray, C: float) -> Callable[[], Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=C, solver="lbfgs").fit(X, y)

    return run


def default_optimizer(spec: Any) -> tuple[Any, float]:
    """A fresh optimizer with its default options, and its default lr (1.0 if it has none)."""
    opt_params = spec.params().model_dump()
    return spec.factory(**opt_params), float(opt_params.get("lr", 1.0))


def lbfgs_steps_to(spec: Any, params0: dict[str, Any], closure: Any, target: float,
                   value: Callable[[dict[str, Any]], float], max_updates: int = 500,
                   patience: int = 10) -> tuple[int, float]:
    """Untimed: how many ``step`` calls bring the objective to ``target`` (and where).

    Gives up (-1) after ``max_updates``, or after ``patience`` updates without progress,
    so an optimizer that stalls just above the target cannot hold the bench for hours.
    """
    opt, lr = default_optimizer(spec)
    params, state = dict(params0), opt.init(params0)
    best, since = value(params), 0
    for i in range(1, max_updates + 1):
        params, state, _ = opt.step(params, state, closure, lr)
        f = value(params)
        if f <= target:
            return i, f
        since = 0 if f < best * (1 - 1e-12) else since + 1
        best = min(best, f)
        if since >= patience:
            break
    return -1, best


def bench_lbfgs(bc: BenchConfig, plugins: Any, log: Callable[[str], None]) -> dict[str, Any]:
    from smx.errors import PluginError
    from smx.losses import CrossEntropy
    from smx.objective import Objective
    from smx.types import Block

    try:
        spec = plugins.get("optimizer", "lbfgs")
    except PluginError:
        return {"skipped": "lbfgs not installed (no optimizer 'lbfgs' is registered)"}
    import sklearn

    n = bc.lbfgs_rows or bc.rows
    X32, y = make_data(n, bc.features, bc.classes, bc.seed + 1)
    X64 = X32.astype(np.float64)  # the yardstick's copy, made once
    l2 = 1.0 / (bc.C * n)  # scikit-learn's C·Σloss + ½‖W‖²  ==  C·n · (mean loss + l2/2‖W‖²)
    backend = plugins.backend("numpy")
    loss = CrossEntropy()
    obj = Objective(loss, l2, kernel=backend.kernel(loss))  # what a Trainer runs
    out: dict[str, Any] = {"rows": n, "C": bc.C, "l2": l2, "sklearn": sklearn.__version__}
    for dtype in ("float32", "float64"):
        X = X32 if dtype == "float32" else X64
        fit = sklearn_fit(X, y, bc.C)
        est = fit()
        target = objective(est.coef_.T, est.intercept_, X64, y, l2)
        Xd, yd = backend.from_host(X, "cpu", dtype), backend.from_host(y, "cpu", "int64")
        params0 = {"W": np.zeros((bc.features, bc.classes), dtype=dtype),
                   "b": np.zeros(bc.classes, dtype=dtype)}

        block = Block(Xd, yd)

        def closure(p: dict[str, Any], block: Any = block) -> Any:
            return obj.value_and_grad(p, block)

        def value(p: dict[str, Any]) -> float:
            return objective(np.asarray(p["W"]), np.asarray(p["b"]), X64, y, l2)

        # float32 arithmetic cannot always reach a float64-evaluated optimum to the last digit
        slack = 1e-6 * abs(target) if dtype == "float32" else 1e-9 * abs(target)
        updates, reached = lbfgs_steps_to(spec, params0, closure, target + slack, value)
        entry: dict[str, Any] = {"sklearn_objective": target, "sklearn_n_iter": int(est.n_iter_[0]),
                                 "smx_updates": updates, "smx_objective": reached}
        if updates < 0:
            entry["note"] = "smx lbfgs did not reach scikit-learn's objective"
            timings = interleaved({"sklearn": fit}, bc.repeats)
        else:
            def smx_fit(updates: int = updates, closure: Any = closure,
                        params0: Any = params0) -> None:
                opt, lr = default_optimizer(spec)
                params, state = params0, opt.init(params0)
                for _ in range(updates):
                    params, state, _ = opt.step(params, state, closure, lr)

            log(f"lbfgs {dtype}: sklearn vs smx ({updates} updates) x {bc.repeats} rounds")
            timings = interleaved({"sklearn": fit, "smx_lbfgs": smx_fit}, bc.repeats)
            entry["ratio"], entry["min_ratio"] = ratio_pair(timings, "smx_lbfgs", "sklearn")
        entry["cases"] = {k: t.summary() for k, t in timings.items()}
        out[dtype] = entry
    return out


# ------------------------------------------------------------------------ memory

_PROBE = """
import json, resource, sys, tracemalloc
import numpy as np
from smx import bench
from smx.plugins import Plugins
bc = bench.BenchConfig(**json.loads(sys.argv[1]))
X, y = bench.make_data(bc.rows, bc.features, bc.classes, bc.seed)
tracemalloc.start()
run, trainer = bench.smx_epoch(bc, X, y, "numpy", Plugins(entry_points=False))
run()
_, peak = tracemalloc.get_traced_memory()
shared = bool(np.shares_memory(trainer.train_data.X, X))
print(json.dumps({"data_bytes": X.nbytes + y.nbytes, "extra_peak_bytes": peak,
                  "device_copy_shares_host": shared,
                  "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def bench_memory(bc: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Peak memory of building a Trainer and running one epoch, in a fresh process.

    tracemalloc sees NumPy's allocations, so ``extra_peak_bytes`` is everything smx
    allocated on top of the host data (device copy, one-hot targets, per-batch
    temporaries). The budget is the host data plus a device copy of it, the copy
    counted only where it does not share the host array (:func:`memory_ratio`).
    """
    args = json.dumps({"rows": bc.rows, "features": bc.features, "classes": bc.classes,
                       "batch": bc.batch, "seed": bc.seed})
    log("memory: one epoch in a subprocess")
    proc = subprocess.run([sys.executable, "-c", _PROBE, args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"skipped": f"memory probe failed: {tail[0]}"}
    return memory_ratio(json.loads(proc.stdout.strip().splitlines()[-1]))


def memory_ratio(r: dict[str, Any]) -> dict[str, Any]:
    """Peak over the budget: the host data, plus its device copy where that is a copy.

    NumPy's "device copy" is the host array itself, so counting it twice would halve
    the ratio and flatter smx.
    """
    budget = r["data_bytes"] * (1 if r["device_copy_shares_host"] else 2)
    r["budget_bytes"] = budget
    r["peak_bytes"] = r["data_bytes"] + r["extra_peak_bytes"]
    r["ratio"] = r["peak_bytes"] / budget
    return r


# --------------------------------------------------------------------------- GPU


def card_bandwidth(cupy: Any) -> float | None:
    """Theoretical memory bandwidth (bytes/s): 2 x memory clock x bus width, if reported."""
    rt = cupy.cuda.runtime
    clock_khz = bus_bits = None
    try:
        clock_khz = rt.deviceGetAttribute(rt.cudaDevAttrMemoryClockRate, 0)
        bus_bits = rt.deviceGetAttribute(rt.cudaDevAttrGlobalMemoryBusWidth, 0)
    except Exception:  # older CuPy without the constants, or CUDA dropped the attribute
        try:
            props = rt.getDeviceProperties(0)
            clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
        except Exception:
            return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8 if clock_khz and bus_bits else None


def gpu_bandwidth(bc: BenchConfig, backend: Any, cupy: Any) -> dict[str, Any]:
    """Full-batch loss+grad over X generated on the device (6.3 GB never touches the host)."""
    from smx.objective import loss_and_grad

    n, d, k = bc.gpu_bandwidth_rows, bc.gpu_features, bc.classes
    rs = cupy.random.RandomState(bc.seed)
    Xg = rs.standard_normal((n, d), dtype=cupy.float32)
    yg = rs.randint(0, k, size=n).astype(cupy.int64)
    params = {"W": cupy.zeros((d, k), dtype=cupy.float32), "b": cupy.zeros(k, cupy.float32)}
    copy_dst = cupy.empty_like(Xg)
    t = interleaved({"loss_and_grad": lambda: loss_and_grad(params, Xg, yg, 1e-4),
                     "device_copy": lambda: cupy.copyto(copy_dst, Xg)},
                    bc.repeats, sync=lambda: backend.synchronize("cuda:0"))
    sec = t["loss_and_grad"].summary()["median_s"]
    copy_bw = 2 * Xg.nbytes / t["device_copy"].summary()["median_s"]
    peak = card_bandwidth(cupy)
    ref = peak or copy_bw
    out = {
        "rows": n, "features": d, "x_bytes": Xg.nbytes, "seconds": t["loss_and_grad"].summary(),
        "x_bytes_per_s": Xg.nbytes / sec, "card_peak_bytes_per_s": peak,
        "measured_copy_bytes_per_s": copy_bw, "fraction": Xg.nbytes / sec / ref,
        "fraction_of": "card peak" if peak else "measured device-to-device copy",
        "note": "X is read twice per call (Wᵀ Xᵀ and Gᵀ X); the figure counts it once",
    }
    return out


def bench_gpu(bc: BenchConfig, plugins: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """CuPy epoch vs a PyTorch CUDA loop, and the full-batch loss+grad bandwidth figure."""
    backend = plugins.get("backend", "cupy")
    if reason := backend.unavailable_reason():
        return {"skipped": f"no usable GPU: {reason}"}
    import cupy

    out: dict[str, Any] = {"card": backend.device_info()[0]["name"], **backend.versions()}
    sync = lambda: backend.synchronize("cuda:0")  # noqa: E731
    X, y = make_data(bc.gpu_rows, bc.gpu_features, bc.classes, bc.seed)
    cases: dict[str, Callable[[], Any]] = {}
    cases["smx_cupy"], trainer = smx_epoch(bc, X, y, "cupy", plugins)
    skipped = {}
    tv = torch_version()
    if tv is None:
        skipped["torch_cuda"] = "PyTorch is not installed"
    else:
        import torch

        if torch.cuda.is_available():
            cases["torch_cuda"] = torch_epoch(X, y, bc.classes, bc.batch, bc.lr, trainer.l2,
                                              bc.seed, device="cuda")
            sync = lambda: (backend.synchronize("cuda:0"), torch.cuda.synchronize())  # noqa: E731
        else:
            skipped["torch_cuda"] = f"torch {tv} has no CUDA (the pinned wheel is CPU-only)"
    log(f"gpu: {len(cases)} cases on {out['card']}")
    timings = interleaved(cases, bc.repeats, sync=sync)
    out["epoch"] = {"rows": bc.gpu_rows, "features": bc.gpu_features, "skipped": skipped,
                    "cases": {k: t.summary() for k, t in timings.items()}}
    ratio, best = ratio_pair(timings, "smx_cupy", "torch_cuda")
    if ratio is not None:
        out["epoch"]["ratio"], out["epoch"]["min_ratio"] = ratio, best
    del trainer, cases, timings

    out["bandwidth"] = gpu_bandwidth(bc, backend, cupy)
    backend.release("cuda:0")
    return out


# ------------------------------------------------------------------------ report


def blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer",
            "filepath")
    return [{k: i.get(k) for k in keep} for i in threadpool_info()]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    import array_api_compat
    import sklearn

    out = {"python": platform.python_version(), "smx": smx.__version__, "numpy": np.__version__,
           "array-api-compat": array_api_compat.__version__, "scikit-learn": sklearn.__version__}
    for name in ("array_api_strict", "torch", "cupy"):
        try:
            mod = __import__(name)
            out[name.replace("_", "-")] = str(mod.__version__)
        except Exception:
            continue
    return out


def meta(bc: BenchConfig) -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.system()} {platform.release()}, "
                   f"{platform.machine()})",
        "cpu": cpu_name(), "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "blas": blas_info(),
        "env": {k: os.environ[k] for k in BLAS_ENV if k in os.environ},
        "versions": versions(),
        "config": {k: v for k, v in bc.__dict__.items() if k != "parts"},
        "parts": list(bc.parts),
    }


def _dig(tree: Any, path: tuple[str, ...] | None) -> Any:
    """``tree[path[0]][path[1]]...``, or None where a part is missing (or skipped)."""
    if path is None:
        return None
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target's paired-median value (what "met" judges) and its best-case (min) value."""
    rows = []
    for t in TARGETS:
        v = _dig(results, t.value)
        met = None if v is None else (v >= t.limit if t.at_least else v <= t.limit)
        rows.append({"key": t.key, "target": t.text, "limit": t.limit, "value": v,
                     "best_case": _dig(results, t.best), "met": met})
    return rows


def _load(values: list[float] | None) -> str:
    return "unknown" if not values else ", ".join(f"{v:.2f}" for v in values)


def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f}"


def _case_table(cases: dict[str, Any]) -> list[str]:
    lines = ["| case | median ms | min ms | max ms | runs |", "|---|---:|---:|---:|---:|"]
    for name, c in cases.items():
        lines.append(f"| {name} | {_ms(c['median_s'])} | {_ms(c['min_s'])} | "
                     f"{_ms(c['max_s'])} | {c['runs']} |")
    return lines


def _section(lines: list[str], title: str, part: dict[str, Any] | None) -> bool:
    """Add a part's heading to ``lines``; True when its figures follow, False when the part
    was not run or was skipped (then the reason is added)."""
    if part is None:
        return False
    lines += ["", title, ""]
    if "skipped" in part:
        lines.append(f"Skipped: {part['skipped']}.")
        return False
    return True


def render(results: dict[str, Any]) -> str:
    m = results["meta"]
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b.get('architecture')}, "
                     f"{b['num_threads']} threads)" for b in m["blas"]) or "unknown"
    lines = [
        "# smx bench results", "",
        "Written by `smx bench`; ratios are medians of per-round ratios of cases timed "
        "interleaved in the same run. Targets from issue 6.", "",
        f"- date: {m['date']}", f"- machine: {m['machine']}",
        f"- CPU: {m['cpu']} ({m['cores']} cores); load average (1, 5, 15 min) at start: "
        f"{_load(m.get('load_average'))}, at end: {_load(m.get('load_average_end'))}",
        f"- BLAS (threadpoolctl): {blas}",
        f"- BLAS environment: {m['env'] or 'none set'}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
        "## Targets", "",
        "`value` is the median of per-round ratios (what `met` judges); `best case` is "
        "min/min, steadier when other work shares the machine.", "",
        "| target | limit | value | best case | met |", "|---|---:|---:|---:|---|",
    ]
    fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    for t in results["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['limit']} | {fmt(t['value'])} | "
                     f"{fmt(t.get('best_case'))} | {met} |")
    if (sgd := results.get("sgd")) is not None:
        lines += ["", f"## SGD epoch ({sgd['rows']:,} x {sgd['features']} float32, "
                  f"{sgd['classes']} classes, batch {sgd['batch']}, {sgd['steps_per_epoch']} "
                  f"steps, per-epoch shuffle)", "", *_case_table(sgd["cases"]), "",
                  "| ratio | median of per-round ratios | min / min |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.3f} | {fmt(sgd.get('min_ratios', {}).get(k))} |"
                  for k, v in sgd["ratios"].items()]
        lines += [f"- skipped {k}: {v}" for k, v in sgd["skipped"].items()]
        if "smx_array_api_strict" in sgd["cases"]:
            lines.append(f"- smx_array_api_strict ran on the first {sgd['strict_rows']:,} rows")
    lb = results.get("lbfgs")
    if _section(lines, "## L-BFGS vs scikit-learn LogisticRegression(lbfgs), same C", lb):
        lines.append(f"{lb['rows']:,} rows, C={lb['C']} (l2 = 1/(C·n) = {lb['l2']:.3g}); "
                     "smx's time is the updates needed to reach scikit-learn's final "
                     "objective (to 1e-6 relative in float32, 1e-9 in float64, both "
                     "evaluated in float64); one update is one iteration of the optimizer.")
        for dtype in ("float32", "float64"):
            e = lb[dtype]
            lines += ["", f"### {dtype}", "",
                      f"- scikit-learn objective {e['sklearn_objective']:.8g} after "
                      f"{e['sklearn_n_iter']} iterations; smx reached {e['smx_objective']:.8g}"
                      f" in {e['smx_updates']} updates"
                      + (f"; ratio {e['ratio']:.3f}" if "ratio" in e else ""),
                      *([f"- {e['note']}"] if "note" in e else []), "",
                      *_case_table(e["cases"])]
    mem = results.get("memory")
    if _section(lines, "## Peak memory (one epoch, NumPy, fresh process)", mem):
        shared = mem["device_copy_shares_host"]
        lines.append(
            f"- training data {mem['data_bytes'] / 2**20:,.1f} MiB; smx allocated "
            f"{mem['extra_peak_bytes'] / 2**20:,.1f} MiB more at its peak (tracemalloc); "
            f"the NumPy device copy {'shares' if shared else 'does not share'} the host "
            f"array, so peak / {'data' if shared else '(data + device copy)'} = "
            f"{mem['ratio']:.3f}; max RSS {mem['max_rss_bytes'] / 2**20:,.0f} MiB (the "
            f"whole process: interpreter, libraries, BLAS buffers, making the data)")
    gpu = results.get("gpu")
    if _section(lines, "## GPU", gpu):
        ep, bw = gpu["epoch"], gpu["bandwidth"]
        lines += [f"Card: {gpu['card']}", "",
                  f"Epoch {ep['rows']:,} x {ep['features']} float32:", "",
                  *_case_table(ep["cases"]), ""]
        lines += [f"- skipped {k}: {v}" for k, v in ep["skipped"].items()]
        lines += [f"- full-batch loss+grad over {bw['rows']:,} x {bw['features']}: "
                  f"{_ms(bw['seconds']['median_s'])} ms, {bw['x_bytes_per_s'] / 1e9:.0f} GB/s"
                  f" of X = {bw['fraction']:.2f} of the {bw['fraction_of']} ({bw['note']})"]
    if notes := results.get("notes"):
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def run_bench(bc: BenchConfig, out_dir: Path, log: Callable[[str], None] = print,
              notes_file: Path | None = None) -> dict[str, Any]:
    """Run the selected parts and write ``RESULTS.md`` and ``results.json`` into ``out_dir``."""
    from smx.plugins import get_plugins

    plugins = get_plugins()
    results: dict[str, Any] = {"meta": meta(bc)}
    if "sgd" in bc.parts:
        results["sgd"] = bench_sgd(bc, plugins, log)
    if "lbfgs" in bc.parts:
        results["lbfgs"] = bench_lbfgs(bc, plugins, log)
    if "memory" in bc.parts:
        results["memory"] = bench_memory(bc, log)
    if "gpu" in bc.parts:
        results["gpu"] = bench_gpu(bc, plugins, log)
    if hasattr(os, "getloadavg"):
        results["meta"]["load_average_end"] = list(os.getloadavg())
    results["targets"] = targets(results)
    if notes_file is not None and notes_file.is_file():
        results["notes"] = notes_file.read_text()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "RESULTS.md", render(results))
    return results
