"""``smx sweep``: many runs of one config, each an ordinary run folder under one sweep folder.

The sweep is planned and every run's config validated before anything starts, so a bad
spec is one error line and leaves nothing behind. Runs are ``smx run`` processes (a
crashing run cannot take the others down; each gets ``cores // jobs`` threads), or tasks
on a Dask cluster that start the same process on a worker. The sweep folder's
``sweep.json`` records the plan: started again with the same command, a sweep skips
the runs that finished and resumes the others from their checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from smx.checkpoint import FILENAME as CHECKPOINT
from smx.config import load_config, parse_yaml
from smx.errors import ConfigError, PluginError
from smx.io import atomic_write_bytes, atomic_write_json, atomic_write_text

_CALL = re.compile(r"(range|log-uniform|uniform|choice)\((.*)\)", re.S)
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
           "test_accuracy")
MANIFEST = "sweep.json"


@dataclass(frozen=True)
class Spec:
    """One ``key=...`` argument: a list of values, or a distribution to sample."""

    key: str
    text: str
    values: tuple[Any, ...] = ()
    dist: str | None = None  # log-uniform | uniform (values are then (low, high))

    @property
    def choices(self) -> tuple[Any, ...]:
        return self.values if self.dist is None else ()


def parse_spec(item: str) -> Spec:
    """``key=v1,v2``, ``key=range(a,b[,step])``, ``key=log-uniform(a,b)``,
    ``key=uniform(a,b)`` or ``key=choice(v1,v2)``; values are YAML, as in overrides (the
    list is read as a YAML flow sequence, so quoted text and ``[..]`` may hold commas)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")) or not raw.strip():
        raise ConfigError("a sweep spec must look like key.sub=v1,v2 or key.sub=range(...), "
                          "log-uniform(a,b), uniform(a,b), choice(...)", where=item)
    call = _CALL.fullmatch(raw.strip())
    args = _flow(call.group(2) if call else raw, item)
    if not call:
        return Spec(key, item, tuple(args))
    fn = call.group(1)
    if not args:
        raise ConfigError(f"{fn}() needs arguments", where=item)
    if fn == "choice":
        return Spec(key, item, tuple(args))
    if fn == "range":
        if not 1 <= len(args) <= 3 or not all(isinstance(a, int) and not isinstance(a, bool)
                                              for a in args):
            raise ConfigError("range() takes one to three integers, as Python's", where=item)
        if len(args) == 3 and args[2] == 0:
            raise ConfigError("range()'s step must not be 0", where=item)
        values = tuple(range(*args))
        if not values:
            raise ConfigError("range() is empty", where=item)
        return Spec(key, item, values)
    numbers = all(isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a)
                  for a in args)
    if len(args) != 2 or not numbers or not args[0] < args[1] or (
            fn == "log-uniform" and args[0] <= 0):
        bound = "0 < low < high" if fn == "log-uniform" else "low < high"
        raise ConfigError(f"{fn}() takes two numbers, {bound}", where=item)
    return Spec(key, item, (float(args[0]), float(args[1])), dist=fn)


def _flow(text: str, where: str) -> list[Any]:
    """``a, b, [c, d]`` as the YAML flow sequence ``[a, b, [c, d]]``."""
    try:
        return parse_yaml(f"[{text}]", "spec")
    except ConfigError as exc:  # its line:column count the added bracket: say the spec
        raise ConfigError(str(exc).split(": ", 1)[-1], where=where) from None


def render(value: Any) -> str:
    """A value as an override writes it (YAML flow: 0.1, adam, [1, 2], 'a,b')."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    return text.removesuffix("\n...\n").strip()


@dataclass
class Plan:
    """What a sweep runs: the config, the specs, the mode (grid, random or optuna)."""

    config: Path
    specs: list[Spec]
    mode: str = "grid"
    n: int | None = None
    seed: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)  # {"name", "values"}

    @property
    def keys(self) -> list[str]:
        """The swept keys (the table's and sweep.csv's columns); a key given one value is
        a fixed override of every run."""
        return [s.key for s in self.specs if s.dist or len(s.values) > 1]

    def manifest(self) -> dict[str, Any]:
        text = self.config.read_bytes()
        return {"smx_sweep": 1, "config": str(self.config.resolve()),
                "config_sha256": hashlib.sha256(text).hexdigest(),
                "specs": [s.text for s in self.specs], "mode": self.mode, "n": self.n,
                "seed": self.seed}

    def digest(self) -> str:
        blob = json.dumps(self.manifest(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]


def make_plan(config: Path, items: list[str], mode: str, n: int | None, seed: int) -> Plan:
    specs = [parse_spec(item) for item in items]
    seen: set[str] = set()
    for spec in specs:
        if spec.key in seen:
            raise ConfigError("the key is swept twice", where=spec.text)
        seen.add(spec.key)
        if spec.key == "output":
            raise ConfigError("each run's folder is chosen by the sweep (-o for the sweep "
                              "folder)", where=spec.text)
    if mode == "grid":
        for spec in specs:
            if spec.dist:
                raise ConfigError(f"{spec.dist}() is sampled: give --random N or --optuna N",
                                  where=spec.text)
        combos = [dict(zip([s.key for s in specs], vals, strict=True))
                  for vals in product(*(s.values for s in specs))]
    elif mode == "random":
        import numpy as np

        rng = np.random.default_rng(seed)
        combos = [{s.key: _sample(s, rng) for s in specs} for _ in range(n or 0)]
    else:
        combos = []  # optuna asks as it goes
    plan = Plan(config, specs, mode, n, seed)
    plan.runs = [{"name": f"run-{i:03d}", "values": c} for i, c in enumerate(combos)]
    return plan


def _sample(spec: Spec, rng: Any) -> Any:
    if spec.dist == "log-uniform":
        low, high = spec.values
        return float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.6g}")
    if spec.dist == "uniform":
        return float(f"{rng.uniform(*spec.values):.6g}")
    return spec.values[int(rng.integers(len(spec.values)))]


def overrides(values: dict[str, Any]) -> list[str]:
    return [f"{k}={render(v)}" for k, v in values.items()]


def validate_plan(plan: Plan, plugins: Any = None) -> str:
    """Every run's config (for Optuna: each bound and choice) is valid; returns the
    monitored metric (``early_stopping.monitor``)."""
    if plan.mode == "optuna":
        first = {s.key: s.values[0] for s in plan.specs}  # each bound and choice in turn
        checks = [{**first, s.key: v} for s in plan.specs for v in s.values]
        for spec in plan.specs:
            bad = [v for v in spec.choices if not isinstance(v, str | int | float | bool)]
            if bad:
                raise ConfigError(f"Optuna chooses among numbers, text and true/false, not "
                                  f"{render(bad[0])}", where=spec.text)
    else:
        checks = [r["values"] for r in plan.runs]
    monitor = None
    for values in checks or [{}]:
        try:
            cfg = load_config(plan.config, overrides(values), plugins=plugins)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (in the run with {' '.join(overrides(values))})") \
                from None
        monitor = monitor or cfg.early_stopping.monitor
    return monitor or "val_loss"


# --- the sweep folder ---------------------------------------------------------------------

def default_folder(plan: Plan) -> Path:
    """``sweeps/<config>-<digest of the command>``: the same command finds the same
    folder, so starting it again resumes it."""
    return Path("sweeps") / f"{plan.config.stem}-{plan.digest()}"


def open_folder(folder: Path, plan: Plan) -> dict[str, Any]:
    """Create the sweep folder with its ``sweep.json``, or check that the existing one holds
    this very sweep; returns the manifest (with the runs known so far)."""
    manifest = {**plan.manifest(), "runs": plan.runs}
    path = folder / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"unreadable ({exc})", where=str(path)) from None
        if {k: old.get(k) for k in plan.manifest()} != plan.manifest():
            raise ConfigError("holds another sweep (another config, specs or mode); give "
                              "another -o folder", where=str(folder))
        if plan.mode == "optuna":
            plan.runs = old.get("runs", [])
            manifest["runs"] = plan.runs
        return manifest
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError("exists and is not a sweep folder (no sweep.json)", where=str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, manifest)
    return manifest


def run_state(folder: Path) -> str:
    """done (summary.json says completed or diverged), resume (a checkpoint), restart
    (a folder without one) or new."""
    summary = _summary(folder)
    if summary.get("status") in ("completed", "diverged"):
        return "done"
    if (folder / CHECKPOINT).is_file():
        return "resume"
    return "restart" if folder.exists() else "new"


def _summary(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- running ------------------------------------------------------------------------------

@dataclass
class Job:
    name: str
    values: dict[str, Any]
    folder: Path
    state: str
    trial: Any = None  # the Optuna trial number
    rc: int | None = None
    error: str = ""


def command(plan: Plan, job: Job, threads: int | None) -> list[str]:
    base = [sys.executable, "-m", "smx", "run"]
    folder = job.folder.resolve()  # a Dask worker runs elsewhere
    if job.state == "resume":
        return [*base, "--resume", str(folder), "--quiet"]
    extra = [] if threads is None or "threads" in job.values else [f"threads={threads}"]
    cmd = [*base, str(plan.config.resolve()), *overrides(job.values), *extra,
           f"output={render(str(folder))}", "--quiet"]
    return cmd + (["--overwrite"] if job.state == "restart" else [])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the run is killed with the sweep (a killed sweep leaves no run holding its
    folder's lock when it is started again)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cores() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:  # pools created at import time, before the run's own thread limit
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    return env


class LocalPool:
    """``jobs`` ``smx run`` processes at a time on this machine."""

    def __init__(self, plan: Plan, jobs: int, threads: int) -> None:
        self.plan, self.jobs, self.threads = plan, jobs, threads
        self.running: dict[str, tuple[Job, subprocess.Popen[bytes], Any]] = {}

    @property
    def free(self) -> int:
        return self.jobs - len(self.running)

    def start(self, job: Job, log: Path) -> None:
        out = log.open("ab")
        proc = subprocess.Popen(command(self.plan, job, self.threads), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_env(self.threads),
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.running[job.name] = (job, proc, out)

    def finished(self) -> list[Job]:
        done = []
        for name, (job, proc, out) in list(self.running.items()):
            if proc.poll() is not None:
                out.close()
                job.rc = proc.returncode
                done.append(job)
                del self.running[name]
        if not done:
            time.sleep(0.1)
        return done

    def close(self) -> None:
        for _, proc, out in self.running.values():
            proc.kill()
            proc.wait()
            out.close()


def _run_on_worker(cmd: list[str], log: str) -> int:  # pragma: no cover - on a Dask worker
    """A run as a task: ``smx run`` in a process on the worker, with the worker's cores
    shared among its task slots."""
    from distributed import get_worker

    slots = max(get_worker().state.nthreads, 1)
    threads = max(1, (os.cpu_count() or 1) // slots)
    if "--resume" not in cmd and not any(a.startswith("threads=") for a in cmd):
        cmd = [*cmd, f"threads={threads}"]
    cmd = [sys.executable, *cmd[1:]]  # the worker's own Python
    with open(log, "ab") as out:
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=_env(threads)).returncode


class DaskPool:
    """Runs as tasks on a Dask cluster (the sweep folder must be on a file system the
    workers share); as many at a time as the cluster has task slots, or ``jobs``."""

    def __init__(self, plan: Plan, address: str, jobs: int | None) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise PluginError("--cluster needs Dask's distributed; pip install "
                              "'smx[dask]'") from None
        try:
            self.client = Client(address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler: {exc}",
                              where=f"--cluster {address}") from None
        self.plan = plan
        slots = sum(self.client.nthreads().values()) or 1
        self.jobs = jobs or slots
        self.running: dict[str, tuple[Job, Any]] = {}

    @property
    def free(self) -> int:
        return self.jobs - len(self.running)

    def start(self, job: Job, log: Path) -> None:
        cmd = command(self.plan, job, None)
        future = self.client.submit(_run_on_worker, cmd, str(log.resolve()), pure=False,
                                    key=f"smx-sweep-{self.plan.digest()}-{job.name}-{time.time()}")
        self.running[job.name] = (job, future)

    def finished(self) -> list[Job]:
        done = []
        for name, (job, future) in list(self.running.items()):
            if future.done():
                try:
                    job.rc = future.result()
                except Exception as exc:  # the worker died under it
                    job.rc, job.error = -1, f"the task failed: {type(exc).__name__}: {exc}"
                done.append(job)
                del self.running[name]
        if not done:
            time.sleep(0.1)
        return done

    def close(self) -> None:
        for _, future in self.running.values():
            future.cancel()
        self.client.close()


def _error_of(log: Path) -> str:
    """The run's own error line (``smx: error: ...``) from its log, or its last line."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("smx: error:")]
    text = errors[-1] if errors else (lines[-1] if lines else "")
    return text.removeprefix("smx: error: ")[:300]


# --- the sweep ----------------------------------------------------------------------------

@dataclass
class Outcome:
    folder: Path
    rows: list[dict[str, Any]]
    monitor: str
    failed: int


def sweep(plan: Plan, folder: Path, *, jobs: int = 1, cluster: str | None = None,
          say: Callable[[str], None] = lambda _m: None, plugins: Any = None) -> Outcome:
    """Run (or finish) the sweep in ``folder``; write sweep.csv and sweep.png."""
    from smx.runlock import RunLock

    monitor = validate_plan(plan, plugins)
    if plan.mode == "optuna":
        _require_optuna()
    pool: LocalPool | DaskPool = (DaskPool(plan, cluster, jobs if jobs > 1 else None)
                                  if cluster else
                                  LocalPool(plan, jobs, max(1, cores() // jobs)))
    lock = None
    jobs_by_name: dict[str, Job] = {}
    try:
        manifest = open_folder(folder, plan)
        lock = RunLock(folder).acquire()  # one sweep process per folder
        study = _study(plan, folder, monitor) if plan.mode == "optuna" else None
        (folder / "logs").mkdir(exist_ok=True)
        todo = _todo(plan, folder, study, jobs_by_name, say)
        started = 0
        while True:
            while pool.free > 0:
                job = todo.pop(0) if todo else _ask(plan, folder, study, manifest,
                                                    jobs_by_name, pool)
                if job is None:
                    break
                if job.state == "resume":
                    say(f"{job.name}: resuming from its checkpoint")
                pool.start(job, folder / "logs" / f"{job.name}.log")
                started += 1
            if not pool.running:
                break
            for job in pool.finished():
                row = _row(plan, job, folder)
                if study is not None:
                    _tell(study, job, row, monitor)
                value = row.get(monitor)
                shown = "" if value is None else f", {monitor} {value:.4g}"
                swept = {k: job.values[k] for k in plan.keys}
                say(f"{job.name} {row['status']} ({' '.join(overrides(swept))}){shown}")
        rows = [_row(plan, j, folder) for j in sorted(jobs_by_name.values(),
                                                      key=lambda j: j.name)]
    finally:
        pool.close()
        if lock is not None:
            lock.release()
    write_csv(folder / "sweep.csv", plan.keys, rows)
    with contextlib.suppress(Exception):  # the plot never fails a finished sweep
        plot(folder / "sweep.png", rows, plan.keys, monitor)
    return Outcome(folder, rows, monitor, sum(r["status"] == "failed" for r in rows))


def _todo(plan: Plan, folder: Path, study: Any, jobs_by_name: dict[str, Job],
          say: Callable[[str], None]) -> list[Job]:
    """Every run of the plan (Optuna: every trial so far) with its state; the finished
    ones are only recorded."""
    todo = []
    trials = {}
    if study is not None:
        trials = {f"run-{t.number:03d}": t for t in study.get_trials(deepcopy=False)}
    for run in plan.runs:
        job = Job(run["name"], run["values"], folder / run["name"],
                  run_state(folder / run["name"]))
        trial = trials.get(job.name)
        if trial is not None:
            job.trial = trial.number
            if trial.state.name != "RUNNING":  # told already: finished, failed or pruned
                job.state = "done"
        jobs_by_name[job.name] = job
        if job.state == "done":
            continue
        todo.append(job)
    skipped = len(jobs_by_name) - len(todo)
    if skipped:
        say(f"{skipped} run(s) already finished in {folder}; {len(todo)} left to run")
    return todo


def _row(plan: Plan, job: Job, folder: Path) -> dict[str, Any]:
    summary = _summary(job.folder)
    status = summary.get("status")
    if status not in ("completed", "diverged"):
        status = "failed" if job.rc not in (None, 0) else "not run"
    if status == "completed" and job.rc not in (None, 0):
        status = "failed"
    error = job.error or (summary.get("error") or "")
    if status == "failed" and not error:
        error = _error_of(folder / "logs" / f"{job.name}.log")
    row: dict[str, Any] = {"run": job.name, "status": status, "values": job.values}
    for key in METRICS:
        row[key] = summary.get(key) if status == "completed" else None
    row["epochs_done"] = summary.get("epochs")
    row["stop_reason"] = summary.get("stop_reason") or ("diverged" if status == "diverged"
                                                        else None)
    row["train_seconds"] = summary.get("train_seconds")  # a resumed run's too, in all
    row["error"] = error
    return row


COLUMNS_AFTER = [*METRICS, "epochs_done", "stop_reason", "train_seconds", "error"]


def write_csv(path: Path, keys: list[str], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    fields = ["run", "status", *keys, *COLUMNS_AFTER]
    writer = csv.DictWriter(buf, fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        swept = {k: render(row["values"].get(k)) for k in keys}
        writer.writerow({**{k: "" if v is None else v for k, v in row.items()}, **swept})
    atomic_write_text(path, buf.getvalue())


def ranked(rows: list[dict[str, Any]], monitor: str) -> list[dict[str, Any]]:
    """Best first by the monitored metric (accuracy: highest; loss: lowest); runs
    without it last."""
    sign = -1.0 if monitor.endswith("accuracy") else 1.0

    def key(row: dict[str, Any]) -> tuple[int, float, str]:
        v = row.get(monitor)
        return (v is None, sign * v if v is not None else 0.0, row["run"])

    return sorted(rows, key=key)


def table(rows: list[dict[str, Any]], keys: list[str], monitor: str) -> tuple[list[str],
                                                                             list[list[str]]]:
    shown = [monitor, *[m for m in ("val_accuracy", "test_accuracy") if m != monitor]]
    header = ["run", *keys, *shown, "epochs", "stop", "status"]

    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    def value(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else render(v)

    body = [[r["run"], *[value(r["values"].get(k)) for k in keys],
             *[cell(r.get(m)) for m in shown], cell(r.get("epochs_done")),
             cell(r.get("stop_reason")), r["status"]]
            for r in ranked(rows, monitor)]
    return header, body


def plot(path: Path, rows: list[dict[str, Any]], keys: list[str], monitor: str) -> None:
    """The monitored metric against each swept value, one panel per key (log axis for
    positive numbers spanning two decades or more)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in keys if len({render(r["values"].get(k)) for r in rows}) > 1] or keys[:1]
    good = [r for r in rows if r.get(monitor) is not None]
    fig = Figure(figsize=(4 * max(len(keys), 1), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        xs = [r["values"].get(key) for r in good]
        ys = [r[monitor] for r in good]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if numeric and xs:
            ax.scatter(xs, ys, alpha=0.7)
            best = _best_per_value(xs, ys, monitor)
            if len(best) < len(xs):  # values shared by several runs: their best, joined
                ax.plot(*zip(*best, strict=True), color="C1", label="best at each value")
                ax.legend(fontsize="small")
            if min(xs) > 0 and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
        else:
            labels = sorted({render(x) for x in xs})
            ax.scatter([labels.index(render(x)) for x in xs], ys)
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(monitor.replace("_", " "))
        ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def _best_per_value(xs: list[Any], ys: list[float], monitor: str) -> list[tuple[Any, float]]:
    pick = max if monitor.endswith("accuracy") else min
    best: dict[Any, float] = {}
    for x, y in zip(xs, ys, strict=True):
        best[x] = pick(best.get(x, y), y)
    return sorted(best.items())


# --- Optuna -------------------------------------------------------------------------------

def _require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise PluginError("--optuna needs Optuna, which is not installed; pip install "
                          "'smx[optuna]'") from None
    return optuna


def _study(plan: Plan, folder: Path, monitor: str) -> Any:
    """The Optuna study in ``folder/optuna.db`` (SQLite: no server), created or loaded."""
    optuna = _require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name="smx-sweep", storage=f"sqlite:///{(folder / 'optuna.db').resolve()}",
        load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=plan.seed),
        direction="maximize" if monitor.endswith("accuracy") else "minimize")


def _distributions(plan: Plan) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {s.key: FloatDistribution(s.values[0], s.values[1], log=s.dist == "log-uniform")
            if s.dist
            else CategoricalDistribution(list(s.values)) for s in plan.specs}


def _ask(plan: Plan, folder: Path, study: Any, manifest: dict[str, Any],
         jobs_by_name: dict[str, Job], pool: Any) -> Job | None:
    """The next Optuna trial as a run, while fewer than N were asked."""
    if study is None or len(study.get_trials(deepcopy=False)) >= (plan.n or 0):
        return None
    trial = study.ask(_distributions(plan))
    name = f"run-{trial.number:03d}"
    values = {s.key: trial.params[s.key] for s in plan.specs}  # the fixed ones too
    plan.runs.append({"name": name, "values": values})
    manifest["runs"] = plan.runs
    atomic_write_json(folder / MANIFEST, manifest)
    job = Job(name, values, folder / name, run_state(folder / name), trial=trial.number)
    jobs_by_name[name] = job
    return job


def _tell(study: Any, job: Job, row: dict[str, Any], monitor: str) -> None:
    import optuna

    value = row.get(monitor)
    if row["status"] == "completed" and value is not None:
        study.tell(job.trial, value)
    else:
        study.tell(job.trial, state=optuna.trial.TrialState.FAIL)


__all__ = ["Plan", "Spec", "default_folder", "make_plan", "parse_spec", "sweep"]
