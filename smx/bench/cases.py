"""What `smx bench` times: the SGD epoch against its baselines, full-batch L-BFGS against
scikit-learn, peak memory, and the GPU part.

Every call into smx's core (config, splits, Trainer, optimizers, the loss-and-gradient
kernel, backends) goes through the adapters in the first section, so that when the core's
interface changes only those few functions move; the cases below them never touch the
core directly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smx.bench.harness import (
    Budget,
    Timing,
    assess_load,
    interleaved,
    ratio_pair,
    ratio_tables,
    sample_load,
)

if TYPE_CHECKING:
    from smx.bench import BenchConfig

Log = Callable[[str], None]


# ---------------------------------------------------------------- adapters: the core's API
# The only place the bench calls into smx's core. Keep them small and re-point them when the
# core's interface changes.


def core_run_config(bc: BenchConfig, backend: str, dtype: str = "float32") -> Any:
    """A plain SGD run config at the bench's batch size and learning rate."""
    from smx.config import RunConfig

    return RunConfig.model_validate({
        "backend": backend, "dtype": dtype, "epochs": 1_000_000, "batch_size": bc.batch,
        "optimizer": {"name": "sgd", "lr": bc.lr}, "seed": bc.seed,
    })


def core_splits(X: np.ndarray, y: np.ndarray, k: int) -> Any:
    """All rows for training, no validation or test split, no standardisation."""
    from smx.datasets.split import Splits, Standardizer

    empty = X[:0]
    return Splits(classes=np.arange(k), X_train=X, y_train=y, X_val=empty, y_val=y[:0],
                  X_test=empty, y_test=y[:0], standardizer=Standardizer.identity(X.shape[1]))


def core_trainer(bc: BenchConfig, X: np.ndarray, y: np.ndarray, backend_name: str,
                 plugins: Any, device: str = "auto") -> Any:
    """A Trainer on ``backend_name``'s ``device`` (default: its first), as ``smx run`` would
    build it."""
    from smx.training import Trainer

    backend = plugins.backend(backend_name)
    device = backend.resolve_device(device)
    return Trainer(core_run_config(bc, backend_name), core_splits(X, y, bc.classes), backend,
                   device, plugins)


def core_epoch(trainer: Any) -> Callable[[], Any]:
    """One epoch through the Trainer: the whole smx hot path, plugins included."""
    return trainer.run_epoch


@dataclass
class BareLoop:
    """What the bare loop needs from a Trainer: its data on the device and its pieces."""

    n: int
    batch: Callable[[Any], Any]  # device index vector -> Block of those rows
    step: Callable[..., Any]  # the Trainer's (compiled) step (params, state, X, y, w)
    params: Any
    state: Any
    to_device: Callable[[np.ndarray], Any]


def core_bare_loop(trainer: Any) -> BareLoop:
    """The Trainer's data, step, parameters and state, to run without the Trainer."""
    data = trainer.train_data
    return BareLoop(data.n, lambda idx: trainer.backend.batch(data, idx), trainer.train_step,
                    trainer.params, trainer.opt_state,
                    lambda a: trainer.backend.from_host(a, trainer.device, "int64"))


def core_trainer_l2(trainer: Any) -> float:
    return float(trainer.l2)


def core_shares_host(trainer: Any, X: np.ndarray) -> bool:
    """Whether the Trainer's device copy of X is the host array itself (NumPy)."""
    return bool(np.shares_memory(trainer.train_data.X, X))


def core_kernel(backend: Any) -> Callable[..., Any]:
    """The objective a Trainer on ``backend`` runs (its fused kernel for cross-entropy, if
    any), as ``fn(params, X, y, l2) -> (loss, grads)``."""
    from smx.losses import CrossEntropy
    from smx.objective import Objective
    from smx.types import Block

    loss = CrossEntropy()
    kernel = backend.kernel(loss)

    def fn(params: Any, X: Any, y: Any, l2: float) -> Any:
        return Objective(loss, l2, kernel=kernel).value_and_grad(params, Block(X, y))

    return fn


def core_in_threads(plugins: Any, threads: int) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Wraps a case of smx's NumPy engine so that each call runs inside the engine's
    ``cpu_threads(threads)``, as ``Trainer.fit`` does (its pool of ``threads``, one BLAS
    thread per GEMM); the baselines timed beside it keep the block's BLAS threads."""
    backend = plugins.backend("numpy")

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with backend.cpu_threads(threads):
                return fn()

        return run

    return wrap


def core_lbfgs(plugins: Any) -> Any:
    """The registered ``lbfgs`` optimizer spec, or None when there is none."""
    from smx.errors import PluginError

    try:
        return plugins.get("optimizer", "lbfgs")
    except PluginError:
        return None


def core_optimizer(spec: Any) -> tuple[Any, float]:
    """A fresh optimizer with its default options, and its default lr (1.0 if it has none)."""
    opt_params = spec.params().model_dump()
    return spec.factory(**opt_params), float(opt_params.get("lr", 1.0))


def core_init(opt: Any, params: Any) -> Any:
    return opt.init(params)


def core_update(opt: Any, params: Any, state: Any, closure: Callable[[Any], Any],
                lr: float) -> tuple[Any, Any]:
    """One iteration of a full-batch solver; ``closure(params) -> (loss, grads)``."""
    params, state, _ = opt.step(params, state, closure, lr)
    return params, state


def core_to_device(backend: Any, host: np.ndarray, device: str, dtype: str) -> Any:
    return backend.from_host(host, device, dtype)


def core_model(run_dir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """W, b and the epochs run, from the run folder ``smx run`` wrote."""
    from smx.modelfile import load_model

    m = load_model(run_dir / "model.npz")
    k = m.W.shape[1]
    b = m.b if m.b is not None else np.zeros(k)
    epochs = json.loads((run_dir / "summary.json").read_text()).get("epochs", -1)
    return m.W, b, int(epochs)


def core_sync(backend: Any, device: str) -> None:
    backend.synchronize(device)


def core_release(backend: Any, device: str) -> None:
    backend.release(device)


# ------------------------------------------------------------------------------ data


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


def summaries(timings: dict[str, Timing]) -> dict[str, Any]:
    return {k: t.summary() for k, t in timings.items()}


# ------------------------------------------------------------------------- SGD epoch


def smx_epoch(bc: BenchConfig, X: np.ndarray, y: np.ndarray, backend_name: str,
              plugins: Any, device: str = "auto") -> tuple[Callable[[], Any], Any]:
    """Trainer.run_epoch on ``backend_name``, and the Trainer."""
    trainer = core_trainer(bc, X, y, backend_name, plugins, device)
    return core_epoch(trainer), trainer


def bare_epoch(bc: BenchConfig, trainer: Any) -> Callable[[], Any]:
    """The same step (objective partial, transformation, update) with nothing around it."""
    b = core_bare_loop(trainer)
    n, bs = b.n, bc.batch
    rng = np.random.default_rng(bc.seed)
    box = {"params": b.params, "state": b.state}

    def run() -> None:
        params, state = box["params"], box["state"]
        order = b.to_device(rng.permutation(n))
        for s in range(0, n, bs):
            blk = b.batch(order[s:min(s + bs, n)])
            params, state, _ = b.step(params, state, blk.X, blk.y, blk.w)
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


def full_floor(X: np.ndarray, k: int) -> tuple[Callable[[], Any], str]:
    """The two products of a full-batch loss and gradient over all of X, in whichever
    orientation is faster here (``X @ W``, ``Xᵀ G`` or ``Wᵀ Xᵀ``, ``Gᵀ X``; picked from two
    untimed calls of each), and its name."""
    import time

    n, d = X.shape
    W = np.full((d, k), 0.01, dtype=X.dtype)
    G = np.full((n, k), 0.01, dtype=X.dtype)
    Gt = np.ascontiguousarray(G.T)

    def nk() -> None:
        _ = X @ W
        _ = X.T @ G

    def kn() -> None:
        _ = W.T @ X.T
        _ = Gt @ X

    best: dict[str, float] = {}
    for name, fn in (("X @ W, Xᵀ G", nk), ("Wᵀ Xᵀ, Gᵀ X", kn)):
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    name = min(best, key=best.__getitem__)
    return (nk if name.startswith("X @") else kn), name


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
    """PyTorch's version, or None when it is not installed (it is optional: ``smx[bench]``)."""
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
    "smx_jax/smx_numpy": ("smx_jax", "smx_numpy", 0.0),  # the JAX engine, jitted, on the CPU
    "smx_torch/torch_cpu": ("smx_torch", "torch_cpu", 0.0),  # the PyTorch engine vs autograd
}


def smx_full_batch(bc: BenchConfig, X: np.ndarray, y: np.ndarray, backend_name: str,
                   plugins: Any, device: str = "auto") -> Callable[[], Any]:
    """One full-batch step through the Trainer: the objective and its gradient over every
    row (the engine's fused kernel where it has one) and the update."""
    return smx_epoch(dataclasses.replace(bc, batch=len(X)), X, y, backend_name, plugins,
                     device)[0]


#: the engines whose epoch the SGD part times beside NumPy's unless ``--backends`` names others
DEFAULT_ENGINES = ("torch", "jax", "array-api-strict")


def engine_case(engine: str) -> str:
    """An engine's case name: ``smx_array_api_strict`` for ``array-api-strict``."""
    return "smx_" + re.sub(r"\W", "_", engine)


def engine_cases(bc: BenchConfig, X: np.ndarray, y: np.ndarray, plugins: Any
                 ) -> tuple[dict[str, Callable[[], Any]], dict[str, str], dict[str, int]]:
    """(cases, skipped cases, rows of each engine's case): each engine's epoch, on its CPU
    when it has one; with ``bc.backends`` (``--backends``) also its full-batch step, NumPy's
    included. array-api-strict, a conformance engine, runs on ``strict_rows`` rows."""
    engines = DEFAULT_ENGINES if bc.backends is None else bc.backends
    full = bc.backends is not None
    cases: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}
    rows: dict[str, int] = {}
    if full:
        cases["smx_numpy_full"] = smx_full_batch(bc, X, y, "numpy", plugins)
    for engine in dict.fromkeys(engines):
        if engine == "numpy":  # timed in any case: the baseline of the others
            continue
        case, backend = engine_case(engine), plugins.get("backend", engine)
        if reason := backend.unavailable_reason():
            skipped[case] = reason
            continue
        m = min(bc.strict_rows, bc.rows) if engine == "array-api-strict" else bc.rows
        device = "cpu" if "cpu" in backend.devices() else "auto"
        cases[case] = smx_epoch(bc, X[:m], y[:m], engine, plugins, device=device)[0]
        if full:
            cases[f"{case}_full"] = smx_full_batch(bc, X[:m], y[:m], engine, plugins, device)
        rows[case] = m
    return cases, skipped, rows


def engine_ratios(timings: dict[str, Timing], rows: dict[str, int], n: int
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """Each engine's epoch (and full-batch step) over NumPy's; per row (``_per_row``) for
    an engine timed on fewer rows than NumPy's ``n``, and always for array-api-strict's
    (timed on at most ``strict_rows``)."""
    ratios, mins = {}, {}
    for case, m in rows.items():
        per_row = m != n or case == engine_case("array-api-strict")
        for a, b in ((case, "smx_numpy"), (f"{case}_full", "smx_numpy_full")):
            r, best = ratio_pair(timings, a, b)
            if r is not None and best is not None:
                key = f"{a}/{b}_per_row" if per_row else f"{a}/{b}"
                ratios[key], mins[key] = r * n / m, best * n / m
    return ratios, mins


def bench_sgd(bc: BenchConfig, plugins: Any, log: Log, *, threads: int = 1,
              budget: Budget | None = None) -> dict[str, Any]:
    """One shuffled SGD epoch through smx beside the GEMM floor, a bare loop and PyTorch,
    and the other engines' epochs (:func:`engine_cases`)."""
    X, y = make_data(bc.rows, bc.features, bc.classes, bc.seed)
    cases: dict[str, Callable[[], Any]] = {
        "gemm_floor": gemm_floor(X, bc.classes, bc.batch),
        "gemm_floor_kn": gemm_floor(X, bc.classes, bc.batch, transposed=True),
        "shuffle_gather": shuffle_gather(X, bc.batch, bc.seed),
    }
    skipped: dict[str, str] = {}
    in_threads = core_in_threads(plugins, threads)
    run_np, trainer = smx_epoch(bc, X, y, "numpy", plugins)
    cases["smx_numpy"] = in_threads(run_np)
    cases["bare_loop"] = in_threads(bare_epoch(bc, trainer))
    if torch_version() is None:
        skipped["torch_cpu"] = "PyTorch is not installed (pip install 'smx[bench]')"
    else:
        cases["torch_cpu"] = torch_epoch(X, y, bc.classes, bc.batch, bc.lr,
                                         core_trainer_l2(trainer), bc.seed)
    engines, engines_skipped, rows = engine_cases(bc, X, y, plugins)
    if "smx_numpy_full" in engines:
        engines["smx_numpy_full"] = in_threads(engines["smx_numpy_full"])
    cases.update(engines)
    skipped.update(engines_skipped)
    log(f"sgd, {threads} BLAS thread{'s' * (threads > 1)}: {len(cases)} cases x up to "
        f"{bc.repeats} rounds on {bc.rows:,} x {bc.features}")
    timings = interleaved(cases, bc.repeats, deadline=budget.take(1.0) if budget else None)
    ratios, mins = ratio_tables(timings, SGD_RATIOS)
    more, more_mins = engine_ratios(timings, rows, bc.rows)
    for key in [k for k in more if k not in ratios]:  # smx_jax/smx_numpy: SGD_RATIOS has it
        ratios[key], mins[key] = more[key], more_mins[key]
    return {
        "threads": threads, "rows": bc.rows, "features": bc.features, "classes": bc.classes,
        "batch": bc.batch, "steps_per_epoch": -(-bc.rows // bc.batch),
        "strict_rows": rows.get("smx_array_api_strict", min(bc.strict_rows, bc.rows)),
        "cases": summaries(timings), "ratios": ratios, "min_ratios": mins, "skipped_cases": skipped,
        "load": assess_load(timings, threads),
    }


# ------------------------------------------------------------- L-BFGS vs scikit-learn


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
    """scikit-learn's ``LogisticRegression(C, lbfgs)`` with its default stopping rule."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=C, solver="lbfgs").fit(X, y)

    return run


def lbfgs_steps_to(spec: Any, params0: dict[str, Any], closure: Any, target: float,
                   value: Callable[[dict[str, Any]], float], max_updates: int = 500,
                   patience: int = 10) -> tuple[int, float]:
    """Untimed: how many updates bring the objective to ``target`` (and where).

    Gives up (-1) after ``max_updates``, or after ``patience`` updates without progress,
    so an optimizer that stalls just above the target cannot hold the bench for hours.
    """
    opt, lr = core_optimizer(spec)
    params, state = dict(params0), core_init(opt, params0)
    best, since = value(params), 0
    for i in range(1, max_updates + 1):
        params, state = core_update(opt, params, state, closure, lr)
        f = value(params)
        if f <= target:
            return i, f
        since = 0 if f < best * (1 - 1e-12) else since + 1
        best = min(best, f)
        if since >= patience:
            break
    return -1, best


#: the share of the time budget each L-BFGS dtype takes (float64 costs about twice float32)
LBFGS_WEIGHTS = {"float32": 1.5, "float64": 2.5}


def bench_lbfgs(bc: BenchConfig, plugins: Any, log: Log, *, threads: int = 1,
                budget: Budget | None = None) -> dict[str, Any]:
    """smx's lbfgs against scikit-learn's, each timed to scikit-learn's final objective."""
    spec = core_lbfgs(plugins)
    if spec is None:
        return {"skipped": "lbfgs not installed (no optimizer 'lbfgs' is registered)"}
    import sklearn

    n = bc.lbfgs_rows or bc.rows
    X32, y = make_data(n, bc.features, bc.classes, bc.seed + 1)
    X64 = X32.astype(np.float64)  # the yardstick's copy, made once
    l2 = 1.0 / (bc.C * n)  # scikit-learn's C·Σloss + ½‖W‖²  ==  C·n · (mean loss + l2/2‖W‖²)
    backend = plugins.backend("numpy")
    kernel = core_kernel(backend)  # what a Trainer runs
    in_threads = core_in_threads(plugins, threads)
    out: dict[str, Any] = {"threads": threads, "rows": n, "features": bc.features,
                           "classes": bc.classes, "C": bc.C, "l2": l2,
                           "sklearn": sklearn.__version__}
    for dtype in ("float32", "float64"):
        if budget is not None and budget.spent:
            budget.drop(LBFGS_WEIGHTS[dtype])
            out[dtype] = budget.skipped()
            continue
        deadline = budget.take(LBFGS_WEIGHTS[dtype]) if budget else None
        X = X32 if dtype == "float32" else X64
        fit = sklearn_fit(X, y, bc.C)
        est = fit()
        target = objective(est.coef_.T, est.intercept_, X64, y, l2)
        Xd = core_to_device(backend, X, "cpu", dtype)
        yd = core_to_device(backend, y, "cpu", "int64")
        params0 = {"W": np.zeros((bc.features, bc.classes), dtype=dtype),
                   "b": np.zeros(bc.classes, dtype=dtype)}

        def closure(p: dict[str, Any], Xd: Any = Xd, yd: Any = yd) -> Any:
            return kernel(p, Xd, yd, l2)

        def value(p: dict[str, Any]) -> float:
            return objective(np.asarray(p["W"]), np.asarray(p["b"]), X64, y, l2)

        # float32 arithmetic cannot always reach a float64-evaluated optimum to the last digit
        slack = 1e-6 * abs(target) if dtype == "float32" else 1e-9 * abs(target)
        with backend.cpu_threads(threads):
            updates, reached = lbfgs_steps_to(spec, params0, closure, target + slack, value)
        entry: dict[str, Any] = {"sklearn_objective": target, "sklearn_n_iter": int(est.n_iter_[0]),
                                 "smx_updates": updates, "smx_objective": reached}
        # one full-batch loss and gradient (at scikit-learn's solution) beside its GEMM floor
        at = {"W": est.coef_.T.astype(dtype), "b": est.intercept_.astype(dtype)}
        floor, entry["floor_orientation"] = full_floor(X, bc.classes)
        pair = {"loss_grad": in_threads(partial(closure, at)),
                "full_floor": floor}
        if updates < 0:
            entry["note"] = "smx lbfgs did not reach scikit-learn's objective"
            timings = interleaved({"sklearn": fit, **pair}, bc.repeats, deadline=deadline)
        else:
            def smx_fit(updates: int = updates, closure: Any = closure,
                        params0: Any = params0) -> None:
                opt, lr = core_optimizer(spec)
                params, state = params0, core_init(opt, params0)
                for _ in range(updates):
                    params, state = core_update(opt, params, state, closure, lr)

            log(f"lbfgs {dtype}, {threads} BLAS thread{'s' * (threads > 1)}: sklearn vs smx "
                f"({updates} updates) x up to {bc.repeats} rounds")
            timings = interleaved({"sklearn": fit, "smx_lbfgs": in_threads(smx_fit), **pair},
                                  bc.repeats, deadline=deadline)
            entry["ratio"], entry["min_ratio"] = ratio_pair(timings, "smx_lbfgs", "sklearn")
        entry["loss_grad_ratio"], entry["loss_grad_min_ratio"] = ratio_pair(
            timings, "loss_grad", "full_floor")
        entry["cases"] = summaries(timings)
        entry["load"] = assess_load(timings, threads)
        out[dtype] = entry
    return out


# --------------------------------------------------------------------------- memory


def memory_probe(args: str) -> dict[str, Any]:
    """Run in a fresh process (see :func:`bench_memory`): one epoch under tracemalloc."""
    import resource
    import tracemalloc

    from smx.bench import BenchConfig
    from smx.plugins import Plugins

    bc = BenchConfig(**json.loads(args))
    X, y = make_data(bc.rows, bc.features, bc.classes, bc.seed)
    tracemalloc.start()
    run, trainer = smx_epoch(bc, X, y, "numpy", Plugins(entry_points=False))
    run()
    _, peak = tracemalloc.get_traced_memory()
    return {"data_bytes": X.nbytes + y.nbytes, "extra_peak_bytes": peak,
            "device_copy_shares_host": core_shares_host(trainer, X),
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def bench_memory(bc: BenchConfig, log: Log) -> dict[str, Any]:
    """Peak memory of building a Trainer and running one epoch, in a fresh process.

    tracemalloc sees NumPy's allocations, so ``extra_peak_bytes`` is everything smx
    allocated on top of the host data (device copy, per-batch temporaries). The budget
    is the host data plus a device copy of it, the copy counted only where it does not
    share the host array (:func:`memory_ratio`).
    """
    args = json.dumps({"rows": bc.rows, "features": bc.features, "classes": bc.classes,
                       "batch": bc.batch, "seed": bc.seed})
    code = ("import json, sys; from smx.bench.cases import memory_probe; "
            "print(json.dumps(memory_probe(sys.argv[1])))")
    log("memory: one epoch in a subprocess")
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"skipped": f"memory probe failed: {tail[0]}"}
    out = memory_ratio(json.loads(proc.stdout.strip().splitlines()[-1]))
    out.update(rows=bc.rows, features=bc.features)
    return out


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


# ------------------------------------------------------------------------------ GPU


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


def gpu_bandwidth(bc: BenchConfig, backend: Any, cupy: Any,
                  deadline: float | None = None) -> dict[str, Any]:
    """Full-batch loss+grad over X generated on the device (6.3 GB never touches the host)."""
    n, d, k = bc.gpu_bandwidth_rows, bc.gpu_features, bc.classes
    rs = cupy.random.RandomState(bc.seed)
    Xg = rs.standard_normal((n, d), dtype=cupy.float32)
    yg = rs.randint(0, k, size=n).astype(cupy.int64)
    params = {"W": cupy.zeros((d, k), dtype=cupy.float32), "b": cupy.zeros(k, cupy.float32)}
    copy_dst = cupy.empty_like(Xg)
    kernel = core_kernel(backend)
    t = interleaved({"loss_and_grad": lambda: kernel(params, Xg, yg, 1e-4),
                     "device_copy": lambda: cupy.copyto(copy_dst, Xg)},
                    bc.repeats, sync=lambda: core_sync(backend, "cuda:0"), deadline=deadline)
    sec = t["loss_and_grad"].summary()["median_s"]
    copy_bw = 2 * Xg.nbytes / t["device_copy"].summary()["median_s"]
    peak = card_bandwidth(cupy)
    ref = peak or copy_bw
    return {
        "rows": n, "features": d, "x_bytes": Xg.nbytes, "seconds": t["loss_and_grad"].summary(),
        "cases": summaries(t),
        "x_bytes_per_s": Xg.nbytes / sec, "card_peak_bytes_per_s": peak,
        "measured_copy_bytes_per_s": copy_bw, "fraction": Xg.nbytes / sec / ref,
        "fraction_of": "card peak" if peak else "measured device-to-device copy",
        "note": "X is read twice per call (Wᵀ Xᵀ and Gᵀ X); the figure counts it once",
        "load": assess_load(t, 1),
    }


def bench_gpu(bc: BenchConfig, plugins: Any, log: Log, *,
              budget: Budget | None = None) -> dict[str, Any]:
    """CuPy epoch vs a PyTorch CUDA loop, and the full-batch loss+grad bandwidth figure."""
    backend = plugins.get("backend", "cupy")
    if reason := backend.unavailable_reason():
        return {"skipped": f"no usable GPU: {reason}"}
    import cupy

    out: dict[str, Any] = {"card": backend.device_info()[0]["name"], **backend.versions()}
    sync: Callable[[], None] = lambda: core_sync(backend, "cuda:0")  # noqa: E731
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
            cases["torch_cuda"] = torch_epoch(X, y, bc.classes, bc.batch, bc.lr,
                                              core_trainer_l2(trainer), bc.seed, device="cuda")
            def both() -> None:
                core_sync(backend, "cuda:0")
                torch.cuda.synchronize()

            sync = both
        else:
            skipped["torch_cuda"] = f"torch {tv} has no usable CUDA (a CPU-only build or no GPU)"
    log(f"gpu: {len(cases)} cases on {out['card']}")
    timings = interleaved(cases, bc.repeats, sync=sync,
                          deadline=budget.take(1.0) if budget else None)
    out["epoch"] = {"rows": bc.gpu_rows, "features": bc.gpu_features, "skipped_cases": skipped,
                    "cases": summaries(timings), "load": assess_load(timings, 1)}
    ratio, best = ratio_pair(timings, "smx_cupy", "torch_cuda")
    if ratio is not None:
        out["epoch"]["ratio"], out["epoch"]["min_ratio"] = ratio, best
    del trainer, cases, timings

    out["bandwidth"] = gpu_bandwidth(bc, backend, cupy,
                                     deadline=budget.take(1.0) if budget else None)
    core_release(backend, "cuda:0")
    return out


# ------------------------------------------- sparse, text-like: L-BFGS and SGDClassifier


def core_place(backend: Any, X: Any, y: np.ndarray, dtype: str) -> Any:
    """One split on ``backend`` as a Trainer places it (sparse X stays sparse)."""
    return backend.place(X, y, None, "cpu", dtype)


def make_text(n: int, d: int, k: int, density: float, seed: int) -> tuple[Any, np.ndarray]:
    """A synthetic TF-IDF matrix of the shape of a text corpus, made here (no download).

    Each row draws about ``density·d`` word occurrences from a Zipf-like vocabulary (word
    rank r has weight (r + 10)^-1.1); 15 % of them come from its class's own ordering of
    the vocabulary (its topic), the rest from the corpus-wide one. Repeated words count:
    the values are sublinear tf (1 + log count) times scikit-learn's smooth idf, and each
    row is L2-normalised, as ``TfidfVectorizer`` makes them. CSR, float64, non-negative.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    per_row = np.maximum(rng.binomial(d, density, size=n), 1)
    rows = np.repeat(np.arange(n), per_row)
    cdf = np.cumsum(1.0 / (np.arange(d) + 10.0) ** 1.1)
    ranks = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(len(rows))), d - 1)
    corpus = rng.permutation(d).astype(np.int32)
    topic = np.stack([rng.permutation(d).astype(np.int32) for _ in range(k)])
    on_topic = rng.random(len(rows)) < 0.15
    cols = np.where(on_topic, topic[y[rows], ranks], corpus[ranks])
    X = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, d))  # duplicates summed
    X.sum_duplicates()
    df = np.bincount(X.indices, minlength=d)
    X.data = (1.0 + np.log(X.data)) * (np.log((1.0 + n) / (1.0 + df)) + 1.0)[X.indices]
    norms = np.sqrt(np.add.reduceat(X.data ** 2, X.indptr[:-1])) if X.nnz else np.ones(n)
    X.data /= np.repeat(norms, np.diff(X.indptr))
    return X, y


def sgd_classifier(X: Any, y: np.ndarray, alpha: float, epochs: int, seed: int
                   ) -> Callable[[], Any]:
    """scikit-learn's ``SGDClassifier(loss="log_loss")`` for exactly ``epochs`` epochs."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return SGDClassifier(loss="log_loss", alpha=alpha, max_iter=epochs, tol=None,
                                 random_state=seed).fit(X, y)

    return run


def lbfgs_updates_to_accuracy(spec: Any, params0: dict[str, Any], closure: Any,
                              accuracy: Callable[[dict[str, Any]], float], target: float,
                              max_updates: int = 200) -> tuple[int, float]:
    """Untimed: the first update count whose parameters reach ``target`` held-out accuracy
    (-1 and the best accuracy seen when none does within ``max_updates``)."""
    opt, lr = core_optimizer(spec)
    params, state = dict(params0), core_init(opt, params0)
    best = 0.0
    for i in range(1, max_updates + 1):
        params, state = core_update(opt, params, state, closure, lr)
        acc = accuracy(params)
        if acc >= target:
            return i, acc
        best = max(best, acc)
    return -1, best


#: SGDClassifier is given at most this many epochs to reach the target accuracy
SGD_MAX_EPOCHS = 10


def bench_sparse(bc: BenchConfig, plugins: Any, log: Log, *, threads: int = 1,
                 budget: Budget | None = None) -> dict[str, Any]:
    """Sparse text-like data (:func:`make_text`): smx's lbfgs on the NumPy engine against
    ``LogisticRegression(lbfgs)`` to the same objective (the same C as the dense L-BFGS
    part), and both smx and ``SGDClassifier(log_loss)`` timed to the same held-out accuracy.

    SGDClassifier with log_loss fits one binary model per class (one-vs-rest) with its own
    penalty, so it minimises another objective; only the held-out accuracy is common.
    """
    spec = core_lbfgs(plugins)
    if spec is None:
        return {"skipped": "lbfgs not installed (no optimizer 'lbfgs' is registered)"}
    import sklearn

    n, d, k = bc.sparse_rows, bc.sparse_features, bc.sparse_classes
    n_test = max(n // 4, 1)
    X_all, y_all = make_text(n + n_test, d, k, bc.sparse_density, bc.seed + 2)
    X, y, X_test, y_test = X_all[:n], y_all[:n], X_all[n:], y_all[n:]
    l2 = 1.0 / (bc.C * n)  # as the dense L-BFGS part: C·Σloss + ½‖W‖² == C·n·(mean + l2/2‖W‖²)
    backend = plugins.backend("numpy")
    kernel = core_kernel(backend)
    block = core_place(backend, X, y, "float64")
    params0 = {"W": np.zeros((d, k)), "b": np.zeros(k)}

    def closure(p: dict[str, Any]) -> Any:
        return kernel(p, block.X, block.y, l2)

    def value(p: dict[str, Any]) -> float:
        return objective(np.asarray(p["W"]), np.asarray(p["b"]), X, y, l2)

    def accuracy(p: dict[str, Any]) -> float:
        return float(np.mean(np.argmax(X_test @ p["W"] + p["b"], axis=1) == y_test))

    def smx_fit(updates: int) -> Callable[[], Any]:
        def run() -> None:
            opt, lr = core_optimizer(spec)
            params, state = params0, core_init(opt, params0)
            for _ in range(updates):
                params, state = core_update(opt, params, state, closure, lr)
        return run

    fit = sklearn_fit(X, y, bc.C)
    est = fit()
    target = objective(est.coef_.T, est.intercept_, X, y, l2)
    updates, reached = lbfgs_steps_to(spec, params0, closure, target + 1e-9 * abs(target), value)
    ref_acc = float(est.score(X_test, y_test))
    acc_target = ref_acc - bc.sparse_accuracy_slack
    acc_updates, smx_acc = lbfgs_updates_to_accuracy(spec, params0, closure, accuracy,
                                                     acc_target)
    alpha = l2  # SGDClassifier's alpha·½‖w‖² per mean loss, the same strength per class
    epochs, sgd_acc = -1, 0.0
    for e in range(1, SGD_MAX_EPOCHS + 1):  # untimed: the fewest epochs to the target
        sgd_acc = float(sgd_classifier(X, y, alpha, e, bc.seed)().score(X_test, y_test))
        if sgd_acc >= acc_target:
            epochs = e
            break
    out: dict[str, Any] = {
        "threads": threads, "rows": n, "test_rows": n_test, "features": d, "classes": k,
        "density": bc.sparse_density, "nnz": int(X.nnz), "C": bc.C, "l2": l2, "alpha": alpha,
        "sklearn": sklearn.__version__, "sklearn_objective": target,
        "sklearn_n_iter": int(est.n_iter_[0]), "smx_updates": updates, "smx_objective": reached,
        "sklearn_test_accuracy": ref_acc, "accuracy_target": acc_target,
        "accuracy_slack": bc.sparse_accuracy_slack,
        "smx_updates_to_accuracy": acc_updates, "smx_test_accuracy": smx_acc,
        "sgd_epochs_to_accuracy": epochs, "sgd_test_accuracy": sgd_acc,
    }
    cases: dict[str, Callable[[], Any]] = {"sklearn_lbfgs": fit}
    notes = []
    if updates > 0:
        cases["smx_lbfgs"] = smx_fit(updates)
    else:
        notes.append("smx lbfgs did not reach scikit-learn's objective")
    if acc_updates > 0:
        cases["smx_lbfgs_to_accuracy"] = smx_fit(acc_updates)
    else:
        notes.append("smx lbfgs did not reach the target accuracy")
    if epochs > 0:
        cases["sgdclassifier_to_accuracy"] = sgd_classifier(X, y, alpha, epochs, bc.seed)
    else:
        notes.append(f"SGDClassifier did not reach the target accuracy in {SGD_MAX_EPOCHS} "
                     "epochs")
    if notes:
        out["note"] = "; ".join(notes)
    log(f"sparse: {len(cases)} cases x up to {bc.repeats} rounds on {n:,} x {d:,} "
        f"({X.nnz:,} non-zeros), {k} classes")
    timings = interleaved(cases, bc.repeats, deadline=budget.take(WEIGHT_SPARSE) if budget
                          else None)
    out["ratio"], out["min_ratio"] = ratio_pair(timings, "smx_lbfgs", "sklearn_lbfgs")
    out["accuracy_ratio"], out["accuracy_min_ratio"] = ratio_pair(
        timings, "smx_lbfgs_to_accuracy", "sgdclassifier_to_accuracy")
    out["cases"] = summaries(timings)
    out["load"] = assess_load(timings, threads)
    return out


#: the sparse block's share of the time budget
WEIGHT_SPARSE = 3.0


# ------------------------------------------------------------ end to end: whole processes

#: what a user types to train the L-BFGS comparison's file with smx (``threads=``, the path
#: and the output folder are added per run)
E2E_SMX_ARGS = ("run", "data.name=file", "data.val_fraction=0", "data.test_fraction=0",
                "data.standardize=false", "model.C={C}", "optimizer.name=lbfgs",
                "optimizer.tol=1e-4", "-q")

#: the plain scikit-learn script smx is compared with: load the file, fit, save the model
SKLEARN_SCRIPT = """\
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression

data = np.load(sys.argv[1])
est = LogisticRegression(C=float(sys.argv[3])).fit(data["X"], data["y"])
np.savez(sys.argv[2], coef=est.coef_, intercept=est.intercept_, n_iter=est.n_iter_)
"""

#: BLAS / OpenMP thread variables set to the thread count for both processes
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: smx's objective must be within this (relative, or below scikit-learn's) for the time ratio
#: to be judged: otherwise the two processes did not solve the same problem as far
E2E_OBJECTIVE_RTOL = 1e-6


class ProcessFailed(RuntimeError):
    """A timed process exited with an error: the part reports it instead of a time."""


#: the launcher (a bare interpreter: ``-I -S``, builtins only) that starts each timed process
#: and reports its ``os.wait4`` figures, one JSON line per request on stdin
LAUNCHER = """\
import json, os, sys
for line in sys.stdin:
    job = json.loads(line)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                0o644),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    try:
        pid = os.posix_spawn(job["argv"][0], job["argv"], job["env"], file_actions=actions)
        _, status, ru = os.wait4(pid, 0)
        out = {"code": os.waitstatus_to_exitcode(status), "maxrss_kb": ru.ru_maxrss,  # macOS: B
               "cpu_s": ru.ru_utime + ru.ru_stime}
    except OSError as exc:
        out = {"code": -1, "error": str(exc)}
    print(json.dumps(out), flush=True)
"""


class Launcher:
    """Starts the timed processes from a small process of its own and reads their figures.

    ``os.wait4`` gives a child's own peak RSS and CPU time (with those of the children it
    waited for: smx's plot process), where ``RUSAGE_CHILDREN`` deltas would mix every child
    the bench ever had. But a process started from the bench itself begins with the bench's
    high-water RSS (the kernel carries the parent's over the fork and exec), so the bench's
    own hundreds of MiB would show as each child's peak; started from this launcher, a
    child inherits only the launcher's few MiB. The launcher is started once per part, so
    a run costs a pipe round trip on top of the process itself.
    """

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise ProcessFailed(f"the process launcher exited ({self.proc.wait()})")
        return dict(json.loads(line))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


@dataclass
class ProcessCase:
    """A whole process as a timed case: one run per call (through the :class:`Launcher`),
    its exit status checked. ``{run}`` in an argument becomes the call's number (a fresh
    run folder each time)."""

    name: str
    argv: list[str]
    cwd: Path
    launcher: Launcher
    env: dict[str, str] | None = None
    max_rss: list[int] = field(default_factory=list)  # bytes, per call
    cpu: list[float] = field(default_factory=list)  # user + system seconds, per call
    calls: int = 0

    def args(self, run: int | None = None) -> list[str]:
        run = self.calls - 1 if run is None else run
        return [a.replace("{run}", str(run)) for a in self.argv]

    def __call__(self) -> None:
        argv = self.args(self.calls)
        self.calls += 1
        log = self.cwd / f"{self.name}.log"
        r = self.launcher.run(argv, dict(os.environ) if self.env is None else self.env, log)
        if r["code"] != 0:
            lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
            why = r.get("error") or (lines[-1:] or ["no output"])[0][:200]
            raise ProcessFailed(f"{self.name} exited with {r['code']}: {why}")
        self.max_rss.append(r["maxrss_kb"] * (1 if sys.platform == "darwin" else 1024))
        self.cpu.append(r["cpu_s"])

    def summary(self) -> dict[str, Any]:
        return {"max_rss_bytes": max(self.max_rss, default=None),
                "cpu_median_s": float(np.median(self.cpu)) if self.cpu else None}


def smx_command() -> list[str]:
    """``smx`` as this interpreter runs it (works from a source checkout too)."""
    return [sys.executable, "-m", "smx"]


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, **dict.fromkeys(THREAD_ENV, str(threads))}


def e2e_cases(bc: BenchConfig, tmp: Path, data: Path, settings: list[int],
              with_sklearn: bool, launcher: Launcher) -> dict[str, ProcessCase]:
    """Per thread setting the scikit-learn script and ``smx run``, then digits and --help."""
    script = tmp / "sklearn_fit.py"
    script.write_text(SKLEARN_SCRIPT)
    smx = smx_command()
    run_args = [a.replace("{C}", f"{bc.C:g}") for a in E2E_SMX_ARGS]
    out: dict[str, ProcessCase] = {}
    for t in settings:
        if with_sklearn:
            out[f"sklearn_{t}t"] = ProcessCase(
                f"sklearn_{t}t", [sys.executable, str(script), str(data),
                                  str(tmp / f"sklearn-{t}t.npz"), f"{bc.C:g}"], tmp, launcher,
                thread_env(t))
        out[f"smx_{t}t"] = ProcessCase(
            f"smx_{t}t", [*smx, *run_args, f"data.path={data}", f"threads={t}",
                          f"output={tmp / f'smx-{t}t-{{run}}'}"], tmp, launcher, thread_env(t))
    out["smx_digits"] = ProcessCase("smx_digits", [*smx, "run", "digits", "-q",
                                                   f"output={tmp / 'digits-{run}'}"], tmp,
                                    launcher)
    out["smx_help"] = ProcessCase("smx_help", [*smx, "--help"], tmp, launcher)
    return out


def e2e_threads_entry(bc: BenchConfig, t: int, procs: dict[str, ProcessCase],
                      timings: dict[str, Timing], tmp: Path, X64: np.ndarray, y: np.ndarray,
                      data_bytes: int) -> dict[str, Any]:
    """One thread setting: the objectives both reached, the time ratio and peak memory."""
    n = X64.shape[0]
    l2 = 1.0 / (bc.C * n)
    smx_case, sk_case = procs[f"smx_{t}t"], procs.get(f"sklearn_{t}t")
    folder = next(a for a in smx_case.args() if a.startswith("output="))  # its last run's
    W, b, epochs = core_model(Path(folder.removeprefix("output=")))
    rss = smx_case.summary()["max_rss_bytes"]
    entry: dict[str, Any] = {
        "threads": t, "rows": n, "features": X64.shape[1], "classes": bc.classes,
        "data_bytes": data_bytes, "smx_objective": objective(W, b, X64, y, l2),
        "smx_epochs": epochs, "smx_peak_rss_bytes": rss, "rss_ratio": rss / data_bytes,
    }
    if sk_case is None:
        entry["note"] = "scikit-learn is not installed (pip install scikit-learn)"
    else:
        fit = np.load(tmp / f"sklearn-{t}t.npz")
        target = objective(fit["coef"].T, fit["intercept"], X64, y, l2)
        sk_rss = sk_case.summary()["max_rss_bytes"]
        entry.update(sklearn_objective=target, sklearn_n_iter=int(np.max(fit["n_iter"])),
                     objective_rel_diff=(entry["smx_objective"] - target) / abs(target),
                     sklearn_peak_rss_bytes=sk_rss, sklearn_rss_ratio=sk_rss / data_bytes)
        entry["ratio"], entry["min_ratio"] = ratio_pair(timings, f"smx_{t}t", f"sklearn_{t}t")
    entry["load"] = assess_load({k: timings[k] for k in (f"smx_{t}t", f"sklearn_{t}t")
                                 if k in timings}, t)
    return entry


def bench_e2e(bc: BenchConfig, log: Log, *, settings: list[int],
              budget: Budget | None = None) -> dict[str, Any]:
    """``smx run`` as a user runs it, against a plain scikit-learn script, as whole processes.

    Per round, interleaved: at each BLAS thread setting the scikit-learn script (``np.load``
    + ``LogisticRegression(C).fit``) and ``smx run`` with L-BFGS on the same ``.npz``, then
    ``smx run digits`` and ``smx --help``. Wall time is the process's, start to exit; the
    peak RSS and CPU time come from ``os.wait4``. Both fits' objectives are evaluated in
    float64 afterwards, so the time ratio is judged only where smx got as far.
    """
    if not (hasattr(os, "posix_spawn") and hasattr(os, "wait4")):
        return {"skipped": "needs os.posix_spawn and os.wait4 (Linux, macOS)"}
    n = bc.e2e_rows or bc.rows
    repeats = bc.e2e_repeats or bc.repeats
    with_sklearn = importlib.util.find_spec("sklearn") is not None
    with tempfile.TemporaryDirectory(prefix="smx-bench-e2e-") as name:
        tmp = Path(name)
        X, y = make_data(n, bc.features, bc.classes, bc.seed + 2)
        data = tmp / "data.npz"
        np.savez(data, X=X, y=y)
        data_bytes = X.nbytes + y.nbytes
        del X
        launcher = Launcher(tmp)
        procs = e2e_cases(bc, tmp, data, settings, with_sklearn, launcher)
        log(f"e2e: {len(procs)} processes x up to {repeats} rounds ({n:,} x {bc.features} "
            f".npz, {data_bytes / 2**20:,.0f} MiB)")
        deadline = budget.take(E2E_WEIGHT) if budget else None
        try:
            # the launcher, still finishing its reply when the load is read, is the bench's
            timings = interleaved(dict(procs), repeats, deadline=deadline,
                                  probe=lambda: sample_load((launcher.proc.pid,)))
        except ProcessFailed as exc:
            return {"skipped": str(exc)}
        finally:
            launcher.close()
        with np.load(data) as f:
            X64 = f["X"].astype(np.float64)
        out: dict[str, Any] = {
            "rows": n, "features": bc.features, "classes": bc.classes, "C": bc.C,
            "l2": 1.0 / (bc.C * n), "data_bytes": data_bytes,
            "commands": {k: " ".join(p.args(0)).replace(str(tmp), "<tmp>")
                         for k, p in procs.items()},
            "cases": {k: {**t.summary(), **procs[k].summary()} for k, t in timings.items()},
            "skipped_cases": {} if with_sklearn else
            {"sklearn": "scikit-learn is not installed (pip install scikit-learn)"},
            "by_threads": {str(t): e2e_threads_entry(bc, t, procs, timings, tmp, X64, y,
                                                     data_bytes) for t in settings},
        }
    cli = {k: timings[f"smx_{k}"].summary() for k in ("digits", "help")}
    out["cli"] = {"digits_s": cli["digits"]["median_s"], "digits_min_s": cli["digits"]["min_s"],
                  "help_s": cli["help"]["median_s"], "help_min_s": cli["help"]["min_s"],
                  "load": assess_load({k: timings[k] for k in ("smx_digits", "smx_help")},
                                      E2E_CLI_THREADS)}
    return out


#: the budget weight of the end-to-end block (its processes at 200,000 rows cost about
#: sixteen SGD blocks)
E2E_WEIGHT = 16.0
#: busy threads of ``smx run digits``: training, and the plot process drawing beside it
E2E_CLI_THREADS = 2
