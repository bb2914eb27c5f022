"""What `smx bench` concludes and writes: the targets, when they may be judged, and
RESULTS.md / results.json.

A target is judged only when its figure means something: not in a ``--quick`` run (toy
sizes), not at sizes other than those it was set for, not from fewer than
:data:`~smx.bench.harness.JUDGED_ROUNDS` rounds, and not when the machine was busier than
its cores while the figure was timed. Otherwise the report gives the figure and says why it
was not judged, instead of calling it met or missed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from smx import sysinfo
from smx.bench.harness import BUSY_MARGIN, JUDGED_ROUNDS

if TYPE_CHECKING:
    from smx.bench import BenchConfig

#: the reference shape of the CPU targets: d features, k classes, SGD batch
REF_FEATURES, REF_CLASSES, REF_BATCH = 256, 10, 1024
#: X must not fit in the last-level cache for the SGD figures to be the out-of-cache ones
MIN_SGD_ROWS = 100_000
#: below this, scikit-learn's fixed per-fit costs weigh on the L-BFGS ratio
MIN_LBFGS_ROWS = 50_000
#: below this, smx's fixed per-batch buffers weigh on the memory ratio
MIN_MEMORY_BYTES = 64 * 2**20
#: below this, fixed costs (interpreter, imports) weigh more on the end-to-end time ratio
MIN_E2E_ROWS = 100_000
#: the data size the end-to-end memory goal is set for (200,000 x 256 float32): below it the
#: interpreter's and libraries' own ~100 MiB weigh more on peak RSS / data
MIN_E2E_DATA_BYTES = 190 * 2**20
MIN_GPU_ROWS, MIN_GPU_FEATURES = 60_000, 784
#: the sparse target is set for text-sized data: at least this many rows and features, 20 classes
MIN_SPARSE_ROWS, MIN_SPARSE_FEATURES, SPARSE_CLASSES = 50_000, 20_000, 20
#: X this large streams long enough for its time to be the card's bandwidth, not launches
MIN_GPU_BANDWIDTH_BYTES = 2**30


def _sgd_sizes(e: dict[str, Any]) -> str | None:
    if (e["features"], e["classes"], e["batch"]) == (REF_FEATURES, REF_CLASSES, REF_BATCH) \
            and e["rows"] >= MIN_SGD_ROWS:
        return None
    return (f"set for {REF_FEATURES} features, {REF_CLASSES} classes, batch {REF_BATCH} and at "
            f"least {MIN_SGD_ROWS:,} rows")


def _lbfgs_sizes(e: dict[str, Any]) -> str | None:
    if (e["features"], e["classes"]) == (REF_FEATURES, REF_CLASSES) \
            and e["rows"] >= MIN_LBFGS_ROWS:
        return None
    return (f"set for {REF_FEATURES} features, {REF_CLASSES} classes and at least "
            f"{MIN_LBFGS_ROWS:,} rows")


def _memory_sizes(e: dict[str, Any]) -> str | None:
    if e["data_bytes"] >= MIN_MEMORY_BYTES:
        return None
    return f"set for at least {MIN_MEMORY_BYTES // 2**20} MiB of data"


def _sparse_sizes(e: dict[str, Any]) -> str | None:
    if e["rows"] >= MIN_SPARSE_ROWS and e["features"] >= MIN_SPARSE_FEATURES \
            and e["classes"] == SPARSE_CLASSES:
        return None
    return (f"set for at least {MIN_SPARSE_ROWS:,} rows x {MIN_SPARSE_FEATURES:,} features, "
            f"{SPARSE_CLASSES} classes")


def _e2e_sizes(e: dict[str, Any]) -> str | None:
    if (e["features"], e["classes"]) == (REF_FEATURES, REF_CLASSES) \
            and e["rows"] >= MIN_E2E_ROWS:
        return None
    return (f"set for {REF_FEATURES} features, {REF_CLASSES} classes and at least "
            f"{MIN_E2E_ROWS:,} rows")


def _e2e_memory_sizes(e: dict[str, Any]) -> str | None:
    if e["data_bytes"] >= MIN_E2E_DATA_BYTES:
        return None
    return f"set for at least {MIN_E2E_DATA_BYTES // 2**20} MiB of data (--full)"


def _same_objective(e: dict[str, Any]) -> str | None:
    """The time ratio means something only when smx got (at least) as far as scikit-learn."""
    from smx.bench.cases import E2E_OBJECTIVE_RTOL

    rel = e.get("objective_rel_diff")
    if rel is None or rel <= E2E_OBJECTIVE_RTOL:
        return None
    return (f"smx stopped at an objective {rel:.1e} relative above scikit-learn's (judged "
            f"within {E2E_OBJECTIVE_RTOL:g})")


def _any_size(e: dict[str, Any]) -> str | None:
    return None


def _gpu_epoch_sizes(e: dict[str, Any]) -> str | None:
    if e["rows"] >= MIN_GPU_ROWS and e["features"] >= MIN_GPU_FEATURES:
        return None
    return f"set for at least {MIN_GPU_ROWS:,} x {MIN_GPU_FEATURES}"


def _gpu_bandwidth_sizes(e: dict[str, Any]) -> str | None:
    if e["x_bytes"] >= MIN_GPU_BANDWIDTH_BYTES:
        return None
    return f"set for at least {MIN_GPU_BANDWIDTH_BYTES // 2**30} GiB of X"


class Target(NamedTuple):
    """A target, where its figures live in a part's results, and the sizes it is set for."""

    key: str
    text: str
    limit: float
    part: str  # "sgd", "lbfgs", "e2e" (per thread setting), "memory", "gpu", "e2e/cli"
    value: tuple[str, ...]  # keys, within the part's entry, to the paired-median value
    best: tuple[str, ...] | None  # keys to the best-case (min/min) value
    load: tuple[str, ...] | None  # keys to the timed block's load (None: not a timing)
    sizes: Callable[[dict[str, Any]], str | None]  # why these sizes are not judged, or None
    sizes_at: tuple[str, ...] = ()  # keys to the entry the sizes are read from
    at_least: bool = False  # met when value ≥ limit, not ≤
    check: Callable[[dict[str, Any]], str | None] | None = None  # another reason not to judge
    threads: str | None = None  # "1": set for one thread only; "many": for several; None: any


def _sgd(key: str, text: str, limit: float, threads: str | None = None) -> Target:
    return Target(key, text, limit, "sgd", ("ratios", key), ("min_ratios", key), ("load",),
                  _sgd_sizes, threads=threads)


def _loss_grad(dtype: str, limit: float) -> Target:
    return Target(f"loss_grad_{dtype}/full_floor", f"full-batch loss+gradient / two-GEMM "
                  f"floor at the same threads, {dtype}", limit, "lbfgs",
                  (dtype, "loss_grad_ratio"), (dtype, "loss_grad_min_ratio"), (dtype, "load"),
                  _lbfgs_sizes, threads="many")


def _applies(t: Target, threads: int | None) -> bool:
    """Whether ``t`` is set for the thread setting ``threads`` (None: a part without one)."""
    if t.threads is None or threads is None:
        return True
    return (threads == 1) == (t.threads == "1")


def _lbfgs(dtype: str, limit: float) -> Target:
    return Target(f"lbfgs_{dtype}/sklearn",
                  f"smx lbfgs / scikit-learn time to the same objective, {dtype}", limit,
                  "lbfgs", (dtype, "ratio"), (dtype, "min_ratio"), (dtype, "load"), _lbfgs_sizes)


TARGETS = [
    _sgd("smx_numpy/gemm_floor", "smx NumPy epoch / GEMM floor at the same threads", 1.3,
         threads="many"),
    _sgd("smx_numpy/gemm_floor", "smx NumPy epoch / GEMM floor at the same threads", 1.1,
         threads="1"),
    _sgd("smx_numpy/torch_cpu", "smx NumPy epoch / PyTorch CPU epoch", 0.35),
    _sgd("overhead", "smx overhead per step (Trainer vs bare loop)", 0.05),
    _sgd("smx_jax/smx_numpy", "smx JAX engine epoch (jit, CPU) / smx NumPy epoch", 1.0),
    _sgd("smx_torch/torch_cpu", "smx PyTorch engine epoch / PyTorch autograd + optim.SGD", 0.9),
    _lbfgs("float32", 0.7),
    _lbfgs("float64", 1.0),
    _loss_grad("float32", 1.2),
    _loss_grad("float64", 1.2),
    Target("sparse_lbfgs/sklearn", "smx lbfgs / scikit-learn time to the same objective, "
           "sparse text-like float64", 1.0, "sparse", ("ratio",), ("min_ratio",), ("load",),
           _sparse_sizes),
    Target("e2e_smx/sklearn", "smx run lbfgs / scikit-learn script, wall time of whole "
           "processes to the same objective", 0.7, "e2e", ("ratio",), ("min_ratio",), ("load",),
           _e2e_sizes, check=_same_objective),
    Target("e2e_rss", "smx run lbfgs peak RSS / data", 2.0, "e2e", ("rss_ratio",), None, None,
           _e2e_memory_sizes),
    Target("e2e_digits", "smx run digits, wall seconds", 1.0, "e2e/cli", ("digits_s",),
           ("digits_min_s",), ("load",), _any_size),
    Target("e2e_help", "smx --help, wall seconds", 0.15, "e2e/cli", ("help_s",),
           ("help_min_s",), ("load",), _any_size),
    Target("memory", "peak memory / (training data + its device copy unless shared)", 1.3,
           "memory", ("ratio",), None, None, _memory_sizes),
    Target("gpu_cupy/torch_cuda", "CuPy epoch / PyTorch CUDA epoch", 1.0, "gpu",
           ("epoch", "ratio"), ("epoch", "min_ratio"), ("epoch", "load"), _gpu_epoch_sizes,
           ("epoch",)),
    Target("gpu_bandwidth_fraction", "full-batch loss+grad: X bytes / time / card bandwidth (≥)",
           0.5, "gpu", ("bandwidth", "fraction"), None, ("bandwidth", "load"),
           _gpu_bandwidth_sizes, ("bandwidth",), at_least=True),
]


def dig(tree: Any, path: tuple[str, ...] | None) -> Any:
    """``tree[path[0]][path[1]]...``, or None where a part is missing (or skipped)."""
    if path is None:
        return None
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _part(results: dict[str, Any], path: str) -> dict[str, Any] | None:
    """``results["e2e"]["cli"]`` for ``"e2e/cli"``; a skipped part stands for all within it."""
    tree: Any = results
    for key in path.split("/"):
        if isinstance(tree, dict) and "skipped" in tree:
            return tree
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _entries(part: dict[str, Any] | None) -> list[tuple[int | None, dict[str, Any] | None]]:
    """A part's entries: one per BLAS thread setting (``{"by_threads": {"2": ...}}``) or one."""
    if part is None:
        return [(None, None)]
    if "by_threads" in part:
        return [(int(t), e) for t, e in part["by_threads"].items()]
    return [(None, part)]


def judge(t: Target, entry: dict[str, Any] | None, mode: str) -> tuple[bool | None, str | None]:
    """(met, why not judged): met is None with the reason whenever the figure is not judged."""
    if entry is None:
        return None, "not run"
    if "skipped" in entry:
        return None, f"skipped: {entry['skipped']}"
    value = dig(entry, t.value)
    if value is None:
        parent = dig(entry, t.value[:-1]) or {}
        if "skipped" in parent:
            return None, f"skipped: {parent['skipped']}"
        return None, parent.get("note") or "not measured"
    if mode == "quick":
        return None, "--quick (toy sizes)"
    if reason := t.sizes(dig(entry, t.sizes_at) if t.sizes_at else entry):
        return None, reason
    if t.check is not None and (reason := t.check(entry)):
        return None, reason
    load = dig(entry, t.load)
    if load is not None:
        if load["busy"]:
            return None, f"machine busy: {load['why']}"
        if load["busy"] is None:
            return None, load["why"]
        if load["rounds"] < JUDGED_ROUNDS:
            return None, f"only {load['rounds']} timed rounds (time budget)"
    return (value >= t.limit if t.at_least else value <= t.limit), None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target at each thread setting: the paired-median value (what "met" judges), the
    best-case (min/min) value, and met (True, False, or None with why it was not judged)."""
    mode: Any = results.get("meta", {}).get("mode", "default")
    rows = []
    for t in TARGETS:
        for threads, entry in _entries(_part(results, t.part)):
            if not _applies(t, threads):
                continue
            met, why = judge(t, entry, mode)
            load = dig(entry, t.load) if entry else None
            rows.append({"key": t.key, "target": t.text, "threads": threads, "limit": t.limit,
                         "value": dig(entry, t.value), "best_case": dig(entry, t.best),
                         "met": met, "not_judged": why,
                         "load_during": load.get("load_during") if load else None,
                         "others_runnable": load.get("others_runnable") if load else None})
    return rows


def meta(bc: BenchConfig) -> dict[str, Any]:
    """The machine, libraries and settings the figures were measured with."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": sysinfo.machine(), "cpu": sysinfo.cpu_model(), "cores": sysinfo.cores(),
        "load_average": sysinfo.load_average(),
        "blas": sysinfo.blas_pools(), "env": sysinfo.blas_env(),
        "versions": sysinfo.library_versions(
            optional=("scikit-learn", "array-api-strict", "torch", "cupy")),
        "mode": bc.mode,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in bc.__dict__.items()
                   if k not in ("parts", "mode")},
        "parts": list(bc.parts),
    }


# ------------------------------------------------------------------------- rendering


def _load(values: list[float] | None) -> str:
    return "unknown" if not values else ", ".join(f"{v:.2f}" for v in values)


def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f}"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _threads(n: int | None) -> str:
    return "–" if n is None else str(n)


def _case_table(cases: dict[str, Any]) -> list[str]:
    lines = ["| case | median ms | min ms | max ms | runs | load avg before / max during | "
             "others' runnable threads |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, c in cases.items():
        lines.append(f"| {name} | {_ms(c['median_s'])} | {_ms(c['min_s'])} | "
                     f"{_ms(c['max_s'])} | {c['runs']} | {_num(c.get('load_before'), '.2f')} / "
                     f"{_num(c.get('load_during'), '.2f')} | "
                     f"{_num(c.get('others_runnable'), '.2f')} |")
    return lines


def _load_line(load: dict[str, Any] | None) -> list[str]:
    if not load:
        return []
    state = {True: "**busy** (figures not judged)", False: "quiet",
             None: "load unknown"}[load["busy"]]
    return [f"- machine {state}: {load['why']}. 1-minute load average up to "
            f"{_num(load['load_during'], '.2f')} during the block (this run included); "
            f"{load['rounds']} timed rounds"]


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


def _sgd_lines(sgd: dict[str, Any]) -> list[str]:
    lines = [f"### {sgd['threads']} BLAS thread{'s' * (sgd['threads'] > 1)}", "",
             *_load_line(sgd["load"]), "", *_case_table(sgd["cases"]), "",
             "| ratio | median of per-round ratios | min / min |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.3f} | {_num(sgd['min_ratios'].get(k))} |"
              for k, v in sgd["ratios"].items()]
    lines += [f"- skipped {k}: {v}" for k, v in sgd["skipped_cases"].items()]
    if "smx_array_api_strict" in sgd["cases"]:
        lines.append(f"- smx_array_api_strict ran on the first {sgd['strict_rows']:,} rows")
    if "smx_numpy_full" in sgd["cases"]:
        lines.append("- a *_full case is one full-batch step through the Trainer: the objective "
                     "and its gradient over every row, and the update")
    return lines


def _lbfgs_lines(lb: dict[str, Any]) -> list[str]:
    lines = []
    for dtype in ("float32", "float64"):
        e = lb[dtype]
        lines += ["", f"### {dtype}, {lb['threads']} BLAS thread{'s' * (lb['threads'] > 1)}", ""]
        if "skipped" in e:
            lines.append(f"Skipped: {e['skipped']}.")
            continue
        lines += [f"- scikit-learn objective {e['sklearn_objective']:.8g} after "
                  f"{e['sklearn_n_iter']} iterations; smx reached {e['smx_objective']:.8g}"
                  f" in {e['smx_updates']} updates"
                  + (f"; ratio {e['ratio']:.3f}" if "ratio" in e else ""),
                  *([f"- {e['note']}"] if "note" in e else []), *_load_line(e.get("load")), "",
                  *_case_table(e["cases"])]
    return lines


def _dask_lines(dk: dict[str, Any]) -> list[str]:
    """The Dask part's three figures, in the words of what they compare."""
    lines = [f"{dk['rows']:,} x {dk['features']} float32, {dk['classes']} classes, written to "
             f".npy and read by the workers in chunks of {dk['chunk_rows']:,} rows "
             f"({dk['read_s']:.1f} s to read and persist them on {dk['workers']} workers, not "
             f"in the fit times); each worker one thread, scikit-learn "
             f"{dk.get('sklearn_blas_threads', '?')} BLAS thread(s); C={dk['C']}; "
             f"{dk['rounds']} round(s); "
             + ", ".join(f"{k} {dk[k]}" for k in ("dask", "distributed", "dask-ml") if k in dk)
             + ".", ""]
    m = dk["multinomial"]
    lines.append(f"- L-BFGS on {dk['rows']:,} x {dk['features']} float32, {dk['classes']} "
                 f"classes, read from .npy on a {dk['workers']}-worker LocalCluster: time to "
                 f"scikit-learn's final objective ({m['sklearn_objective']:.8g}, "
                 f"{m['sklearn_n_iter']} iterations) vs scikit-learn fitting the same rows in "
                 "memory: " + (f"**{m['ratio']:.3f}** (smx {m['smx_updates']} updates)"
                               if "ratio" in m else m.get("note", "not measured")))
    p = dk.get("per_iteration", {})
    if "ratio_1_to_2" in p:
        lines.append(f"- time per L-BFGS iteration (the first {p['iterations']}): 1 worker "
                     f"{p['1'] * 1e3:,.1f} ms, 2 workers {p['2'] * 1e3:,.1f} ms; 1 worker / "
                     f"2 workers = **{p['ratio_1_to_2']:.2f}**")
    b = dk["binary"]
    if "skipped" in b:
        lines.append(f"- binary version (labels mod 2) vs dask-ml's LogisticRegression: "
                     f"{b['skipped']}")
    else:
        lines.append(f"- binary version (labels mod 2), time to the same objective (dask-ml's "
                     f"final one, {b['dask_ml_objective']:.8g}) vs dask-ml {b['dask_ml']}'s "
                     f"LogisticRegression(solver='lbfgs', C={b['dask_ml_C']:g}) on the same "
                     "cluster and chunks: "
                     + (f"**{b['ratio']:.3f}** (smx {b['smx_updates']} updates)"
                        if "ratio" in b else b.get("note", "not measured")))
    for name, e in (("multinomial", m), ("binary", b)):
        if "cases" in e:
            lines += ["", f"{name}:", "", *_load_line(e.get("load")), "",
                      *_case_table(e["cases"])]
    return lines


def _sparse_lines(e: dict[str, Any]) -> list[str]:
    sgd = (f"{e['sgd_epochs_to_accuracy']} epoch(s)" if e["sgd_epochs_to_accuracy"] > 0
           else "not within its epoch limit")
    ratio = "–" if e.get("accuracy_ratio") is None else f"{e['accuracy_ratio']:.3f}"
    return [
        f"{e['rows']:,} training rows (+ {e['test_rows']:,} held out) x {e['features']:,} "
        f"features, {e['nnz']:,} non-zeros ({e['density']:.2%}), {e['classes']} classes: "
        "synthetic TF-IDF (Zipf vocabulary, class topics, sublinear tf x smooth idf, rows "
        "L2-normalised), made by the bench, CSR float64, 1 BLAS thread (SciPy's sparse "
        "products use one core).", "",
        f"- Same objective: C={e['C']} (l2 = 1/(C·n) = {e['l2']:.3g}), as in the dense L-BFGS "
        f"part. scikit-learn's objective {e['sklearn_objective']:.8g} after "
        f"{e['sklearn_n_iter']} iterations; smx lbfgs reached {e['smx_objective']:.8g} in "
        f"{e['smx_updates']} updates (to 1e-9 relative, evaluated in float64); ratio "
        f"{_num(e.get('ratio'))} (the judged target).",
        f"- Same held-out accuracy: SGDClassifier(loss='log_loss') is one-vs-rest (one "
        f"binary logistic model per class, alpha = {e['alpha']:.3g}, the same l2 strength per "
        "class): another objective, so it is compared by the time to reach scikit-learn "
        f"LogisticRegression's held-out accuracy ({e['sklearn_test_accuracy']:.4f}) minus "
        f"{e['accuracy_slack']:.3f}, i.e. {e['accuracy_target']:.4f}. smx lbfgs: "
        f"{e['smx_updates_to_accuracy']} updates ({e['smx_test_accuracy']:.4f}); "
        f"SGDClassifier: {sgd} ({e['sgd_test_accuracy']:.4f}); smx / SGDClassifier time "
        f"{ratio} (a figure, not a target). Both are timed as fresh fits of exactly that "
        "many updates or epochs.",
        *([f"- {e['note']}"] if "note" in e else []), *_load_line(e.get("load")), "",
        *_case_table(e["cases"])]


def _mib(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**20:,.0f}"


def _e2e_lines(e2e: dict[str, Any]) -> list[str]:
    lines = [f"{e2e['rows']:,} x {e2e['features']} float32, {e2e['classes']} classes in an "
             f"`.npz` ({e2e['data_bytes'] / 2**20:,.1f} MiB of arrays), C={e2e['C']} (l2 = "
             f"1/(C·n) = {e2e['l2']:.3g}). Each round runs every process below in turn, start "
             "to exit; peak RSS and CPU (user + system) are the process's own, from "
             "`os.wait4` (smx's includes its plot process, as the largest of the two). BLAS "
             "and OpenMP threads are set through the environment for both fits, and with "
             "`threads=` for smx. Commands (`<tmp>`: the bench's temporary folder, `0`: the "
             "run's number):", ""]
    lines += [f"- {k}: `{c}`" for k, c in e2e["commands"].items()]
    lines += [f"- skipped {k}: {v}" for k, v in e2e.get("skipped_cases", {}).items()]
    lines += ["", "| process | median s | min s | max s | CPU s (median) | peak RSS MiB | runs | "
              "load avg before / max during |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in e2e["cases"].items():
        lines.append(f"| {name} | {c['median_s']:.3f} | {c['min_s']:.3f} | {c['max_s']:.3f} | "
                     f"{_num(c.get('cpu_median_s'), '.2f')} | {_mib(c.get('max_rss_bytes'))} | "
                     f"{c['runs']} | {_num(c.get('load_before'), '.2f')} / "
                     f"{_num(c.get('load_during'), '.2f')} |")
    for threads, e in e2e["by_threads"].items():
        lines += ["", f"### {threads} BLAS thread{'s' * (int(threads) > 1)}", ""]
        if "sklearn_objective" in e:
            lines.append(f"- objective (float64): scikit-learn {e['sklearn_objective']:.9g} after "
                         f"{e['sklearn_n_iter']} iterations, smx {e['smx_objective']:.9g} after "
                         f"{e['smx_epochs']} epochs: relative difference "
                         f"{e['objective_rel_diff']:+.2e} (smx - scikit-learn)")
            lines.append(f"- wall smx / scikit-learn: {e['ratio']:.3f} (median of per-round "
                         f"ratios), {e['min_ratio']:.3f} (min / min)")
            lines.append(f"- peak RSS / data: smx {e['rss_ratio']:.2f} "
                         f"({_mib(e['smx_peak_rss_bytes'])} MiB), scikit-learn "
                         f"{e['sklearn_rss_ratio']:.2f} ({_mib(e['sklearn_peak_rss_bytes'])} MiB)")
        else:
            lines += [f"- smx objective (float64) {e['smx_objective']:.9g} after "
                      f"{e['smx_epochs']} epochs; peak RSS / data {e['rss_ratio']:.2f}",
                      *([f"- {e['note']}"] if "note" in e else [])]
        lines += _load_line(e.get("load"))
    cli = e2e["cli"]
    lines += ["", "### `smx run digits` and `smx --help`", "",
              f"- `smx run digits` (the shipped config, its run folder in `<tmp>`): "
              f"{cli['digits_s']:.3f} s median, {cli['digits_min_s']:.3f} s best; "
              f"`smx --help`: {cli['help_s']:.3f} s median, {cli['help_min_s']:.3f} s best",
              *_load_line(cli.get("load"))]
    return lines


#: the scaling table's rows: (label, part, keys to the case's summary within a thread entry)
SCALING = [
    ("smx NumPy SGD epoch", "sgd", ("cases", "smx_numpy")),
    ("two-GEMM floor of that epoch", "sgd", ("cases", "gemm_floor")),
    ("smx full-batch loss+gradient, float32", "lbfgs", ("float32", "cases", "loss_grad")),
    ("its two-GEMM floor, float32", "lbfgs", ("float32", "cases", "full_floor")),
    ("smx full-batch loss+gradient, float64", "lbfgs", ("float64", "cases", "loss_grad")),
    ("its two-GEMM floor, float64", "lbfgs", ("float64", "cases", "full_floor")),
    ("smx lbfgs to scikit-learn's objective, float32", "lbfgs",
     ("float32", "cases", "smx_lbfgs")),
    ("scikit-learn lbfgs, float32", "lbfgs", ("float32", "cases", "sklearn")),
    ("smx lbfgs to scikit-learn's objective, float64", "lbfgs",
     ("float64", "cases", "smx_lbfgs")),
    ("scikit-learn lbfgs, float64", "lbfgs", ("float64", "cases", "sklearn")),
]


def scaling(results: dict[str, Any]) -> dict[str, Any]:
    """Each scaling row's median seconds at each thread setting, and its speed-up over one
    thread (time at 1 / time at T), from the SGD and L-BFGS parts' own cases."""
    rows = {}
    for label, part, path in SCALING:
        by = (results.get(part) or {}).get("by_threads") or {}
        seconds = {t: dig(e, (*path, "median_s")) for t, e in by.items()}
        seconds = {t: v for t, v in seconds.items() if v is not None}
        if seconds:
            one = seconds.get("1")
            rows[label] = {"median_s": seconds, "speedup": {
                t: one / v for t, v in seconds.items() if one is not None and v > 0}}
    return rows


def _scaling_lines(table: dict[str, Any]) -> list[str]:
    settings = sorted({t for r in table.values() for t in r["median_s"]}, key=int)
    lines = ["| case | " + " | ".join(f"{t} thread{'s' * (int(t) > 1)} ms" for t in settings)
             + " | " + " | ".join(f"speed-up at {t}" for t in settings if t != "1") + " |",
             "|---|" + "---:|" * (2 * len(settings) - ("1" in settings))]
    for label, r in table.items():
        cells = [_ms(r["median_s"][t]) if t in r["median_s"] else "–" for t in settings]
        ups = [_num(r["speedup"].get(t), ".2f") for t in settings if t != "1"]
        lines.append(f"| {label} | " + " | ".join(cells + ups) + " |")
    return lines


def _verdict(t: dict[str, Any]) -> str:
    if t["met"] is None:
        return f"not judged: {t['not_judged']}"
    return "yes" if t["met"] else "**no**"


def render(results: dict[str, Any]) -> str:
    """RESULTS.md: the machine, the targets, then each part's cases, ratios and load."""
    m = results["meta"]
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b.get('architecture')}, "
                     f"{b['num_threads']} threads)" for b in m["blas"]) or "unknown"
    wall = f", {m['wall_s']:.0f} s" if m.get("wall_s") is not None else ""
    lines = [
        "# smx bench results", "",
        "Written by `smx bench`; ratios are medians of per-round ratios of cases timed "
        "interleaved in the same run.", "",
        f"- date: {m['date']} ({m.get('mode', 'default')} run{wall})",
        f"- machine: {m['machine']}",
        f"- CPU: {m['cpu']} ({m['cores']} cores); load average (1, 5, 15 min) at start: "
        f"{_load(m.get('load_average'))}, at end: {_load(m.get('load_average_end'))}",
        f"- BLAS (threadpoolctl): {blas}; timed with "
        f"{' and '.join(str(t) for t in m.get('thread_settings', [])) or 'default'} "
        "BLAS thread(s)",
        f"- BLAS environment: {m['env'] or 'none set'}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
        "## Targets", "",
        "`value` is the median of per-round ratios (what `met` judges); `best case` is "
        "min/min, steadier when other work shares the machine. A target is judged only at "
        "the sizes it is set for, from at least "
        f"{JUDGED_ROUNDS} rounds, and when the machine was not busier than its cores "
        f"(by more than {BUSY_MARGIN}): neither the 1-minute load average before the timed "
        "block, nor other processes' runnable threads plus the bench's own during it, above "
        "them. Otherwise the row says why it is not judged.", "",
    ]
    if m.get("mode") == "quick":
        lines += ["**--quick run: toy sizes; the figures are reported, no target is judged.**",
                  ""]
    lines += ["| target | BLAS threads | limit | value | best case | met |",
              "|---|---:|---:|---:|---:|---|"]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {_threads(t['threads'])} | {t['limit']} | "
                     f"{_num(t['value'])} | {_num(t.get('best_case'))} | {_verdict(t)} |")
    if table := results.get("scaling"):
        lines += ["", "## Scaling with the thread count", "",
                  "Median ms of the cases below, each timed in its own part at each thread "
                  "setting (smx: the NumPy engine's pool of that many threads, one BLAS thread "
                  "per GEMM; baselines: that many BLAS threads); speed-up = time at 1 thread / "
                  "time at N. The parts run one after the other, so a busy spell can fall in "
                  "one column only: check each part's load line.", "", *_scaling_lines(table)]
    sgd: Any = results.get("sgd")
    if _section(lines, "## SGD epoch", sgd):
        first = next((e for e in sgd["by_threads"].values() if "skipped" not in e), None)
        if first is not None:
            lines += [f"{first['rows']:,} x {first['features']} float32, {first['classes']} "
                      f"classes, batch {first['batch']}, {first['steps_per_epoch']} steps, "
                      "per-epoch shuffle."]
        for threads, e in sgd["by_threads"].items():
            if "skipped" in e:
                lines += ["", f"### {threads} BLAS threads", "", f"Skipped: {e['skipped']}."]
            else:
                lines += ["", *_sgd_lines(e)]
    lb: Any = results.get("lbfgs")
    if _section(lines, "## L-BFGS vs scikit-learn LogisticRegression(lbfgs), same C", lb):
        first = next((e for e in lb["by_threads"].values() if "skipped" not in e), None)
        if first is not None:
            lines.append(f"{first['rows']:,} rows x {first['features']} features, C={first['C']} "
                         f"(l2 = 1/(C·n) = {first['l2']:.3g}); smx's time is the updates "
                         "needed to reach scikit-learn's final objective (to 1e-6 relative "
                         "in float32, 1e-9 in float64, both evaluated in float64); one update "
                         "is one iteration of the optimizer.")
        for threads, e in lb["by_threads"].items():
            if "skipped" in e:
                lines += ["", f"### {threads} BLAS threads", "", f"Skipped: {e['skipped']}."]
            else:
                lines += _lbfgs_lines(e)
    sp: Any = results.get("sparse")
    if _section(lines, "## Sparse text-like data: L-BFGS vs LogisticRegression(lbfgs) and "
                "SGDClassifier(log_loss)", sp):
        lines += _sparse_lines(sp)
    e2e: Any = results.get("e2e")
    if _section(lines, "## End to end: `smx run` against a plain scikit-learn script (whole "
                "processes)", e2e):
        lines += _e2e_lines(e2e)
    mem: Any = results.get("memory")
    if _section(lines, "## Peak memory (one epoch, NumPy, fresh process)", mem):
        shared = mem["device_copy_shares_host"]
        lines.append(
            f"- training data {mem['data_bytes'] / 2**20:,.1f} MiB; smx allocated "
            f"{mem['extra_peak_bytes'] / 2**20:,.1f} MiB more at its peak (tracemalloc); "
            f"the NumPy device copy {'shares' if shared else 'does not share'} the host "
            f"array, so peak / {'data' if shared else '(data + device copy)'} = "
            f"{mem['ratio']:.3f}; max RSS {mem['max_rss_bytes'] / 2**20:,.0f} MiB (the "
            f"whole process: interpreter, libraries, BLAS buffers, making the data)")
    gpu: Any = results.get("gpu")
    if _section(lines, "## GPU", gpu):
        ep, bw = gpu["epoch"], gpu["bandwidth"]
        lines += [f"Card: {gpu['card']}", "",
                  f"Epoch {ep['rows']:,} x {ep['features']} float32:", "",
                  *_load_line(ep.get("load")), "", *_case_table(ep["cases"]), ""]
        lines += [f"- skipped {k}: {v}" for k, v in ep["skipped_cases"].items()]
        lines += [f"- full-batch loss+grad over {bw['rows']:,} x {bw['features']}: "
                  f"{_ms(bw['seconds']['median_s'])} ms, {bw['x_bytes_per_s'] / 1e9:.0f} GB/s"
                  f" of X = {bw['fraction']:.2f} of the {bw['fraction_of']} ({bw['note']})",
                  *_load_line(bw.get("load"))]
    dk: Any = results.get("dask")
    if _section(lines, "## Dask: L-BFGS on rows read from .npy on a LocalCluster", dk):
        lines += _dask_lines(dk)
    if notes := results.get("notes"):
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"
