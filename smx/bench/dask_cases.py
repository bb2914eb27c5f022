"""`smx bench`'s Dask part: L-BFGS on rows read from ``.npy`` files by the workers of a
LocalCluster that the bench starts (and stops) itself.

Three figures, on float32 Gaussian blobs written to a temporary folder:

- multinomial: smx on a 2-worker LocalCluster against scikit-learn fitting the same rows
  in memory, each timed to scikit-learn's final objective (as the L-BFGS part does);
- the time per L-BFGS iteration on 1 and on 2 workers (the same first iterations);
- binary (the labels mod 2): smx against dask-ml's ``LogisticRegression(solver="lbfgs")``
  on the same cluster and the same persisted chunks, each timed to dask-ml's final objective
  (dask-ml fits only the binary case).

A fit here is a single run of a fixed amount of work (minutes at the full size), so a
round is one fit of each; more rounds (``BenchConfig.dask_rounds``) alternate them. The
cluster's start and the reading of the chunks are not in the fit times; the reading is
reported beside them. The few calls into smx's core are the adapters in the first section.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smx import sysinfo
from smx.bench.cases import core_init, core_lbfgs, core_optimizer, make_data, sklearn_fit
from smx.bench.harness import Timing, assess_load, sample_load

if TYPE_CHECKING:
    from smx.bench import BenchConfig

Log = Callable[[str], None]
#: workers of the cluster the comparisons run on (the per-iteration figure adds one worker)
WORKERS = 2
#: chunks per data set: a few per worker, so both stay busy, and few enough that the
#: per-task costs (a round trip each evaluation) stay small beside the arithmetic
CHUNKS = 8
#: the yardstick's rows per float64 block (X is never copied whole to float64)
YARDSTICK_ROWS = 65_536


# ---------------------------------------------------------------- adapters: the core's API


def core_dask_backend(plugins: Any, workers: int, chunk_rows: int) -> Any:
    """smx's Dask engine on a LocalCluster of ``workers`` single-threaded processes (started
    on first use, stopped by :func:`core_dask_release`)."""
    backend = plugins.backend("dask")
    backend.configure(backend.options.model_validate({
        "cluster": "local", "workers": workers, "threads_per_worker": 1,
        "chunk_rows": chunk_rows}))
    return backend


def core_dask_read(backend: Any, X_path: str, y_path: str, chunk_rows: int) -> Any:
    """The rows of two ``.npy`` files as smx reads a partitioned source: the one pass of
    reductions and the chunks, read and persisted on the workers, in float32."""
    from smx.datasets.sources import open_source, prepare_source

    source = open_source(X_path, labels=y_path, chunk_rows=chunk_rows, persist="true")
    splits = prepare_source(source, val_fraction=0.0, test_fraction=0.0, seed=0,
                            standardize=False, map_reduce=backend.map_reduce)
    return backend.place(splits.X_train, splits.y_train, None, "cpu", "float32")


def core_dask_closure(backend: Any, data: Any, l2: float) -> Callable[[Any], Any]:
    """``params -> (loss, grads)`` as a Trainer on the engine evaluates it: one partial per
    chunk on its worker (NumPy's fused kernel), tree-summed, finished on the client."""
    from smx.losses import CrossEntropy
    from smx.objective import Objective

    loss = CrossEntropy()
    objective = Objective(loss, l2, kernel=backend.kernel(loss))

    def closure(params: Any) -> Any:
        part = backend.partial(lambda block: objective.partial(params, block), data)
        return objective.finish(part, params)

    return closure


def core_step(opt: Any, params: Any, state: Any, closure: Callable[[Any], Any], lr: float
              ) -> tuple[Any, Any, float]:
    """One iteration of a full-batch solver, and the loss at the new parameters."""
    params, state, loss = opt.step(params, state, closure, lr)
    return params, state, float(loss)


def core_dask_client(dask: Any) -> Any:
    """The Dask engine's own client (this bench knows it is the Dask engine)."""
    return dask.client


def core_dask_release(backend: Any) -> None:
    backend.release("cpu")


def yardstick(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float) -> float:
    """smx's objective (mean cross-entropy + l2/2‖W‖²) in float64, block by block, so that
    a 2-million-row X is never copied whole to float64."""
    from smx.losses import CrossEntropy
    from smx.objective import Objective
    from smx.types import Block

    objective = Objective(CrossEntropy(), l2)
    params = {"W": np.asarray(W, np.float64), "b": np.asarray(b, np.float64)}
    total: Any = None
    for s in range(0, len(y), YARDSTICK_ROWS):
        block = Block(X[s:s + YARDSTICK_ROWS].astype(np.float64), y[s:s + YARDSTICK_ROWS])
        part = objective.partial(params, block, grad=False)
        total = part if total is None else total + part
    return float(objective.finish(total, params)[0])


# ------------------------------------------------------------------------------ the case


def binary_from_logistic(coef: np.ndarray, intercept: float) -> tuple[np.ndarray, np.ndarray]:
    """A logistic model (w, c) as the equivalent 2-class softmax (W = [-w/2, w/2])."""
    w = np.asarray(coef, np.float64).reshape(-1)
    return np.stack([-w / 2, w / 2], axis=1), np.array([-intercept / 2, intercept / 2])


def _fit_to(spec: Any, params0: dict[str, Any], closure: Callable[[Any], Any], target: float,
            value: Callable[[dict[str, Any]], float], max_updates: int = 500,
            patience: int = 10) -> tuple[int, float, list[float]]:
    """Updates from ``params0`` until the float64 ``value`` reaches ``target``: (updates,
    the value reached, each update's seconds). -1 updates: it stalled or ran out.

    The yardstick costs a pass over X on the client, so it is evaluated only once the
    solver's own (float32) loss is within 1e-4 of the target; the timed part is the
    updates alone."""
    opt, lr = core_optimizer(spec)
    params, state = dict(params0), core_init(opt, params0)
    seconds: list[float] = []
    best, since, reached = float("inf"), 0, float("inf")
    for i in range(1, max_updates + 1):
        t0 = time.perf_counter()
        params, state, loss = core_step(opt, params, state, closure, lr)
        seconds.append(time.perf_counter() - t0)
        if loss <= target + 1e-4 * abs(target):
            reached = value(params)
            if reached <= target:
                return i, reached, seconds
        since = 0 if loss < best * (1 - 1e-12) else since + 1
        best = min(best, loss)
        if since >= patience:
            break
    return -1, reached, seconds


def _timed_updates(spec: Any, params0: dict[str, Any], closure: Callable[[Any], Any],
                   updates: int) -> float:
    opt, lr = core_optimizer(spec)
    params, state = dict(params0), core_init(opt, params0)
    t0 = time.perf_counter()
    for _ in range(updates):
        params, state, _ = core_step(opt, params, state, closure, lr)
    return time.perf_counter() - t0


def _record(timing: Timing, seconds: float) -> None:
    timing.runs.append(seconds)
    timing.after.append(sample_load())


def _write(folder: Path, n: int, d: int, k: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """The data in memory (for scikit-learn and the yardstick) and on disk (for the
    workers): X.npy (float32), y.npy and the binary labels yb.npy (y mod 2)."""
    X, y = make_data(n, d, k, seed)
    paths = {"X": str(folder / "X.npy"), "y": str(folder / "y.npy"),
             "yb": str(folder / "yb.npy")}
    np.save(paths["X"], X)
    np.save(paths["y"], y)
    np.save(paths["yb"], y % 2)
    return X, y, paths


def dask_versions() -> dict[str, str]:
    out = {}
    for name in ("dask", "distributed", "dask_ml"):
        try:
            out[name.replace("_", "-")] = str(__import__(name).__version__)
        except Exception:
            continue
    return out


def bench_dask(bc: BenchConfig, plugins: Any, log: Log) -> dict[str, Any]:
    """The Dask part (see the module docstring)."""
    spec = core_lbfgs(plugins)
    if spec is None:
        return {"skipped": "lbfgs not installed (no optimizer 'lbfgs' is registered)"}
    if reason := plugins.get("backend", "dask").unavailable_reason():
        return {"skipped": reason}
    import sklearn

    n, d, k = bc.dask_rows, bc.features, bc.classes
    chunk_rows = max(1, -(-n // CHUNKS))
    l2 = 1.0 / (bc.C * n)
    out: dict[str, Any] = {"rows": n, "features": d, "classes": k, "chunk_rows": chunk_rows,
                           "workers": WORKERS, "C": bc.C, "l2": l2, "rounds": bc.dask_rounds,
                           "sklearn": sklearn.__version__, **dask_versions(),
                           # scikit-learn runs with NumPy's BLAS threads; each worker with one
                           "sklearn_blas_threads": sysinfo.blas_threads()}
    with tempfile.TemporaryDirectory(prefix="smx-bench-dask-") as tmp:
        log(f"dask: writing {n:,} x {d} float32 to .npy")
        X, y, paths = _write(Path(tmp), n, d, k, bc.seed + 2)
        zeros = {"W": np.zeros((d, k), np.float32), "b": np.zeros(k, np.float32)}
        backend = core_dask_backend(plugins, WORKERS, chunk_rows)
        try:
            t0 = time.perf_counter()
            data = core_dask_read(backend, paths["X"], paths["y"], chunk_rows)
            closure = core_dask_closure(backend, data, l2)
            closure(zeros)  # the chunks are read (and persisted) by the first evaluation
            out["read_s"] = time.perf_counter() - t0
            out["multinomial"] = _versus_sklearn(bc, spec, closure, zeros, X, y, l2, log)
            per_iter = _iterations(out["multinomial"])
            out["per_iteration"] = {"iterations": per_iter}
            if per_iter:
                two = out["multinomial"]["smx_update_s"][:per_iter]
                out["per_iteration"][str(WORKERS)] = sum(two) / per_iter
            out["binary"] = _versus_dask_ml(bc, spec, backend, paths, X, y % 2, chunk_rows,
                                            log)
        finally:
            core_dask_release(backend)
        if per_iter:
            log(f"dask: {per_iter} L-BFGS iterations on 1 worker")
            one = core_dask_backend(plugins, 1, chunk_rows)
            try:
                closure = core_dask_closure(
                    one, core_dask_read(one, paths["X"], paths["y"], chunk_rows), l2)
                closure(zeros)
                out["per_iteration"]["1"] = _timed_updates(spec, zeros, closure,
                                                           per_iter) / per_iter
            finally:
                core_dask_release(one)
            p = out["per_iteration"]
            p["ratio_1_to_2"] = p["1"] / p[str(WORKERS)]
    return out


def _iterations(entry: dict[str, Any]) -> int:
    """How many first iterations the per-iteration figure times: those of the fit to
    scikit-learn's objective (at most 20), or 10 when that fit did not get there."""
    done = entry.get("smx_updates", -1)
    return min(done if done > 0 else 10, 20, len(entry.get("smx_update_s", [])))


def _versus_sklearn(bc: BenchConfig, spec: Any, closure: Callable[[Any], Any],
                    zeros: dict[str, Any], X: np.ndarray, y: np.ndarray, l2: float, log: Log
                    ) -> dict[str, Any]:
    timings = {"sklearn": Timing(before=sample_load()), "smx_dask": Timing()}
    fit = sklearn_fit(X, y, bc.C)
    log(f"dask: scikit-learn in memory on {len(y):,} rows")
    t0 = time.perf_counter()
    est = fit()
    _record(timings["sklearn"], time.perf_counter() - t0)
    target = yardstick(est.coef_.T, est.intercept_, X, y, l2)
    log("dask: smx lbfgs on the cluster to scikit-learn's objective")
    entry: dict[str, Any] = {"sklearn_objective": target, "sklearn_n_iter": int(est.n_iter_[0])}
    return _race(bc, spec, zeros, closure, target, lambda p: yardstick(p["W"], p["b"], X, y, l2),
                 timings, "sklearn", fit, entry, keep_update_s=True)


def _race(bc: BenchConfig, spec: Any, zeros: dict[str, Any], closure: Callable[[Any], Any],
          target: float, value: Callable[[Any], float], timings: dict[str, Timing], rival: str,
          refit: Callable[[], Any], entry: dict[str, Any], *, keep_update_s: bool = False
          ) -> dict[str, Any]:
    """smx's L-BFGS on the cluster to ``rival``'s objective (once, counting the updates),
    then the remaining rounds of both interleaved: ``rival`` refitted, smx timed over that
    many updates. The slack is float32 arithmetic against the float64 yardstick."""
    timings["smx_dask"].before = sample_load()
    updates, reached, seconds = _fit_to(spec, zeros, closure, target + 1e-6 * abs(target),
                                        value)
    entry.update(smx_updates=updates, smx_objective=reached)
    if keep_update_s:
        entry["smx_update_s"] = seconds
    if updates < 0:
        entry["note"] = f"smx lbfgs did not reach {rival.replace('_', '-')}'s objective"
        return _finish(entry, timings)
    _record(timings["smx_dask"], sum(seconds))
    for _ in range(bc.dask_rounds - 1):
        t0 = time.perf_counter()
        refit()
        _record(timings[rival], time.perf_counter() - t0)
        _record(timings["smx_dask"], _timed_updates(spec, zeros, closure, updates))
    entry["ratio"] = _median_ratio(timings, "smx_dask", rival)
    return _finish(entry, timings)


def _versus_dask_ml(bc: BenchConfig, spec: Any, backend: Any, paths: dict[str, str],
                    X: np.ndarray, yb: np.ndarray, chunk_rows: int, log: Log
                    ) -> dict[str, Any]:
    """smx and dask-ml on the binary labels, on the same cluster and persisted chunks."""
    try:
        import dask_ml
        from dask_ml.linear_model import LogisticRegression
    except Exception as exc:  # not installed, or it no longer imports beside Dask/sklearn
        return {"skipped": f"dask-ml does not import here ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); install "
                           "dask-ml beside the current Dask and scikit-learn to compare"}
    n, d = X.shape
    l2 = 1.0 / (bc.C * n)
    data = core_dask_read(backend, paths["X"], paths["yb"], chunk_rows)
    zeros = {"W": np.zeros((d, 2), np.float32), "b": np.zeros(2, np.float32)}
    closure = core_dask_closure(backend, data, l2)
    closure(zeros)  # read and persisted before either fit
    # dask-ml minimises Σ logloss + ‖(w, c)‖²/(2C'); smx's 2-class softmax with W = [-w/2,
    # w/2] is the mean logloss + l2/4‖w‖²: the same penalty on w when C' = 2/(l2 n) = 2C
    model = LogisticRegression(solver="lbfgs", C=2.0 * bc.C)
    timings = {"dask_ml": Timing(before=sample_load()), "smx_dask": Timing()}
    log("dask: dask-ml LogisticRegression(lbfgs) on the binary labels")

    def dask_ml_fit() -> Any:
        with core_dask_client(backend).as_current():
            return model.fit(data.X, data.y)

    try:
        t0 = time.perf_counter()
        fitted = dask_ml_fit()
        _record(timings["dask_ml"], time.perf_counter() - t0)
    except Exception as exc:
        return {"skipped": f"dask-ml {dask_ml.__version__} failed to fit ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})"}
    W, b = binary_from_logistic(np.asarray(fitted.coef_), float(np.ravel(fitted.intercept_)[0]))
    target = yardstick(W, b, X, yb, l2)
    log("dask: smx lbfgs on the binary labels to dask-ml's objective")
    entry: dict[str, Any] = {"dask_ml": dask_ml.__version__, "dask_ml_C": 2.0 * bc.C,
                             "dask_ml_objective": target}
    return _race(bc, spec, zeros, closure, target,
                 lambda p: yardstick(p["W"], p["b"], X, yb, l2), timings, "dask_ml",
                 dask_ml_fit, entry)


def _median_ratio(timings: dict[str, Timing], a: str, b: str) -> float:
    import statistics

    return statistics.median(x / y for x, y in zip(timings[a].runs, timings[b].runs,
                                                   strict=True))


def _finish(entry: dict[str, Any], timings: dict[str, Timing]) -> dict[str, Any]:
    timed = {name: t for name, t in timings.items() if t.runs}
    entry["cases"] = {name: t.summary() for name, t in timed.items()}
    entry["load"] = assess_load(timed, WORKERS)
    return entry
