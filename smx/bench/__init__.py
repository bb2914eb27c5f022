"""``smx bench``: how fast smx trains, as ratios to baselines measured in the same run.

- :mod:`smx.bench.harness` — interleaved timing, the load around each case, ratios, the
  time budget and BLAS thread settings;
- :mod:`smx.bench.cases` — what is timed (GEMM floor, smx epoch on each engine (any
  registered one with ``--backends``, with its full-batch step), bare loop, PyTorch loops,
  L-BFGS against scikit-learn, sparse text-like data against LogisticRegression and
  SGDClassifier, memory, GPU, and ``smx run`` / ``smx --help`` end to end as whole
  processes), with every call into smx's core in one place;
- :mod:`smx.bench.dask_cases` — L-BFGS on rows read from ``.npy`` by a LocalCluster's
  workers, against scikit-learn in memory and dask-ml (a fixed amount of work, outside the
  time budget: in ``--full`` runs, or asked for with ``--only dask``);
- :mod:`smx.bench.report` — the targets, when they are judged, RESULTS.md and results.json.

Three sizes: ``BenchConfig.quick()`` (seconds; figures only, nothing judged), the default
(out-of-cache sizes within a time budget: minutes even on a busy two-core machine) and
``BenchConfig.full()`` (the sizes of the recorded results, no time limit; the Dask part
at 2,000,000 rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smx import sysinfo
from smx.bench import cases, dask_cases, harness, report
from smx.io import atomic_write_json, atomic_write_text

__all__ = ["BenchConfig", "run_bench"]

#: time-budget weights of the timed blocks (L-BFGS times two dtypes; the GPU two blocks)
WEIGHTS = {"sgd": 1.0, "lbfgs": sum(cases.LBFGS_WEIGHTS.values()), "gpu": 2.0,
           "sparse": cases.WEIGHT_SPARSE, "e2e": cases.E2E_WEIGHT}


@dataclass
class BenchConfig:
    """Sizes and settings of one run; see the module docstring for the three presets."""

    mode: str = "default"  # "quick" (never judged), "default" or "full"
    rows: int = 100_000
    features: int = 256
    classes: int = 10
    batch: int = 1024
    repeats: int = 5
    lr: float = 0.1
    C: float = 1.0  # scikit-learn's C for the L-BFGS comparison
    lbfgs_rows: int | None = None  # default: rows
    strict_rows: int = 20_000  # array-api-strict epoch (a conformance backend, not a fast one)
    gpu_rows: int = 60_000
    gpu_features: int = 784
    gpu_bandwidth_rows: int = 2_000_000
    # sparse text-like data (TF-IDF shape); --full: 200,000 x 50,000, the corpus-sized case
    sparse_rows: int = 50_000
    sparse_features: int = 20_000
    sparse_classes: int = 20
    sparse_density: float = 0.002
    sparse_accuracy_slack: float = 0.005  # the accuracy target: scikit-learn's minus this
    # end to end (whole processes): the size of its memory goal (200,000 x 256 float32,
    # 195 MiB); None: rows
    e2e_rows: int | None = 200_000
    e2e_repeats: int | None = None  # its rounds (each runs every process); default: repeats
    seed: int = 0
    threads: tuple[int, ...] | None = None  # BLAS thread settings; None: the default and 1
    dask_rows: int = 200_000  # the Dask part's rows (float32, read from .npy by the workers)
    dask_rounds: int = 1  # fits of each kind in the Dask part (one is minutes at full size)
    budget_s: float | None = 240.0  # seconds for the timed parts; None: no limit
    # engines the SGD part times beside NumPy, each with its full-batch step too (any
    # registered engine: --backends); None: the epochs of cases.DEFAULT_ENGINES
    backends: tuple[str, ...] | None = None
    # the default leaves out the Dask part (its clusters and fits take a minute more than
    # the budget allows): --only dask at 200,000 rows, --full at 2,000,000
    parts: tuple[str, ...] = ("sgd", "lbfgs", "memory", "e2e", "gpu", "sparse")

    @classmethod
    def quick(cls) -> BenchConfig:
        """Seconds, for smoke tests: same structure, toy sizes, nothing judged."""
        return cls(mode="quick", rows=4_000, features=32, batch=256, repeats=5,
                   strict_rows=2_000, lbfgs_rows=2_000, gpu_rows=4_000, gpu_features=64,
                   gpu_bandwidth_rows=20_000, sparse_rows=2_000, sparse_features=1_000,
                   sparse_density=0.02, e2e_rows=None, e2e_repeats=1, dask_rows=2_000,
                   budget_s=None)

    @classmethod
    def full(cls) -> BenchConfig:
        """The sizes of the recorded results (200,000 rows, 7 rounds; sparse: 200,000 x
        50,000; the Dask part on 2,000,000 rows, 2 rounds), however long it takes."""
        return cls(mode="full", rows=200_000, repeats=7, sparse_rows=200_000,
                   sparse_features=50_000, dask_rows=2_000_000, dask_rounds=2, budget_s=None,
                   parts=("sgd", "lbfgs", "memory", "e2e", "gpu", "sparse", "dask"))


def run_bench(bc: BenchConfig, out_dir: Path, log: Callable[[str], None] = print,
              notes_file: Path | None = None, plugins: Any = None) -> dict[str, Any]:
    """Run the selected parts and write ``RESULTS.md`` and ``results.json`` into ``out_dir``.

    The CPU parts run once per BLAS thread setting (the default and 1, where they differ),
    since which one is faster depends on how busy the machine is; the end-to-end part runs
    its processes at both settings within each round. Memory runs first (not a timing, and
    cheap), then the end-to-end, GPU, SGD, L-BFGS and sparse blocks within the time budget,
    then the Dask part when asked for (a fixed amount of work, outside the budget).
    """
    from smx.plugins import get_plugins

    t0 = time.monotonic()
    plugins = plugins or get_plugins()
    results: dict[str, Any] = {"meta": report.meta(bc)}
    settings = harness.thread_settings(bc.threads)
    results["meta"]["thread_settings"] = settings
    cpu_parts = [p for p in ("sgd", "lbfgs") if p in bc.parts]
    weight = len(settings) * sum(WEIGHTS[p] for p in cpu_parts) \
        + sum(WEIGHTS[p] for p in ("gpu", "sparse", "e2e") if p in bc.parts)
    budget = harness.Budget(bc.budget_s, weight)
    if "memory" in bc.parts:  # not a timing, and cheap: first, so a spent budget cannot skip it
        results["memory"] = cases.bench_memory(bc, log)
    if "e2e" in bc.parts:  # what a user runs: before the budget can be spent on the rest
        if budget.spent:
            results["e2e"] = budget.skipped()
            budget.drop(WEIGHTS["e2e"])
        else:  # takes its share of the budget (a failed process has used part of it)
            results["e2e"] = cases.bench_e2e(bc, log, settings=settings, budget=budget)
    if "gpu" in bc.parts:
        results["gpu"] = cases.bench_gpu(bc, plugins, log, budget=budget)
        if "skipped" in results["gpu"]:
            budget.drop(WEIGHTS["gpu"])
    for part in cpu_parts:
        results[part] = {"by_threads": {}}
    for part in cpu_parts:  # both thread settings of the cheap SGD part before L-BFGS
        for threads in settings:
            if budget.spent:
                entry = budget.skipped()
            else:
                bench = cases.bench_sgd if part == "sgd" else cases.bench_lbfgs
                with harness.thread_limit(threads):
                    entry = bench(bc, plugins, log, threads=threads, budget=budget)
            if "skipped" in entry:  # nothing timed: its share goes to the blocks after it
                budget.drop(WEIGHTS[part])
            results[part]["by_threads"][str(threads)] = entry
    if "sparse" in bc.parts:  # once, at one thread: SciPy's sparse products use one core
        if budget.spent:
            results["sparse"] = budget.skipped()
        else:
            with harness.thread_limit(1):
                results["sparse"] = cases.bench_sparse(bc, plugins, log, threads=1,
                                                       budget=budget)
    if "dask" in bc.parts:  # a fixed amount of work, after the budgeted parts
        results["dask"] = dask_cases.bench_dask(bc, plugins, log)
    results["meta"]["load_average_end"] = sysinfo.load_average()
    results["meta"]["wall_s"] = time.monotonic() - t0
    results["scaling"] = report.scaling(results)
    results["targets"] = report.targets(results)
    if notes_file is not None and notes_file.is_file():
        results["notes"] = notes_file.read_text()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "RESULTS.md", report.render(results))
    return results
