"""How `smx bench` times: interleaved rounds, the load seen around each case, ratios, a
time budget and BLAS thread settings. Nothing here knows what is being timed.

Cases are zero-argument callables timed in interleaved rounds (one warm-up, then up to
``repeats`` rounds of every case in turn), so a neighbour that slows the machine for a while
slows every case of a round alike and the paired ratios stay meaningful. Ratios are useless,
though, when the machine is busier than its cores (two-thread BLAS calls then wait for a
descheduled thread, and each case suffers differently), so the load is measured before and
after every timed run and a block of cases says whether it ran on a quiet machine.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smx import sysinfo

#: fewest timed rounds before a time budget may cut a block short (a median needs a few)
MIN_ROUNDS = 3
#: fewest timed rounds a judged target needs
JUDGED_ROUNDS = 5
#: how far, in threads, the load may exceed the cores before the machine counts as busy
BUSY_MARGIN = 0.5


@dataclass(frozen=True)
class LoadSample:
    """The 1-minute load average, and other processes' runnable threads (ours discounted)."""

    load_1min: float | None
    others_runnable: int | None


#: ``PF_KTHREAD`` in a task's flags (/proc/PID/stat field 9): a kernel thread
_KERNEL_THREAD = 0x00200000


def others_runnable(helpers: tuple[int, ...] = ()) -> int | None:
    """Runnable threads of user processes other than this one and its ``helpers`` (None:
    no /proc). Kernel threads are left out: right after a timed process exits, the
    kernel's own clean-up of its memory (RCU reclaim workers) shows as runnable."""
    root = Path("/proc")
    if not (root / "self" / "task").is_dir():
        return None
    mine = {os.getpid(), *helpers}
    n = 0
    for stat in root.glob("[0-9]*/task/*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.parts[2]) in mine:
                continue
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] == "R" and not int(fields[6]) & _KERNEL_THREAD:
                n += 1
    return n


def sample_load(helpers: tuple[int, ...] = ()) -> LoadSample:
    """One reading of the machine's load.

    The load average includes this process, whose own threads would count against it;
    ``others_runnable`` (Linux: runnable threads of other user processes, the bench's
    ``helpers`` processes such as the launcher of timed processes not counted) is the
    demand from everyone else at this instant. Sampled between timed runs, which start at
    times unrelated to other work, its mean estimates the other processes' load during
    the block.
    """
    load = sysinfo.load_average()
    return LoadSample(None if load is None else load[0], others_runnable(helpers))


@dataclass
class Timing:
    """One case's timed runs and the load read before its warm-up and after each run."""

    runs: list[float] = field(default_factory=list)
    before: LoadSample | None = None
    after: list[LoadSample] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        loads = [s.load_1min for s in self.after if s.load_1min is not None]
        others = [s.others_runnable for s in self.after if s.others_runnable is not None]
        return {"median_s": statistics.median(self.runs), "min_s": min(self.runs),
                "max_s": max(self.runs), "runs": len(self.runs),
                "load_before": None if self.before is None else self.before.load_1min,
                "load_during": max(loads) if loads else None,
                "others_runnable": statistics.fmean(others) if others else None}


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int,
                sync: Callable[[], None] | None = None, *, deadline: float | None = None,
                probe: Callable[[], LoadSample] = sample_load) -> dict[str, Timing]:
    """One warm-up call of each case, then up to ``repeats`` rounds of every case in turn.

    Past ``deadline`` (a ``time.monotonic()`` value) no new round starts once
    :data:`MIN_ROUNDS` are done: on a busy machine the bench answers in minutes with
    fewer rounds (and says so) instead of running for a quarter of an hour.
    """
    timings = {name: Timing() for name in cases}
    for name, fn in cases.items():
        timings[name].before = probe()
        fn()
    for done in range(repeats):
        if deadline is not None and done >= MIN_ROUNDS and time.monotonic() > deadline:
            break
        for name, fn in cases.items():
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            timings[name].runs.append(time.perf_counter() - t0)
            timings[name].after.append(probe())
    return timings


def assess_load(timings: dict[str, Timing], threads: int, cores: int | None = None
                ) -> dict[str, Any]:
    """Was the machine quiet while this block ran with ``threads`` busy threads of its own?

    Busy (by more than :data:`BUSY_MARGIN`) when either

    - before: the 1-minute load average when the block started exceeded the cores. This
      run's own earlier blocks count in it, but never beyond the cores; more means other
      work was running and, bursty as it often is, may come back mid-block;
    - during: other processes' runnable threads (mean over the samples taken after each
      run) plus this block's own threads exceeded the cores. Where other processes cannot
      be told apart from this one, the 1-minute load average during the block stands in.
    """
    cores = cores or sysinfo.cores()
    samples = [s for t in timings.values() for s in t.after]
    befores = [t.before.load_1min for t in timings.values()
               if t.before is not None and t.before.load_1min is not None]
    loads = [s.load_1min for s in samples if s.load_1min is not None]
    others = [s.others_runnable for s in samples if s.others_runnable is not None]
    out: dict[str, Any] = {
        "cores": cores, "threads": threads,
        "load_before": befores[0] if befores else None,
        "load_during": max(loads) if loads else None,
        "others_runnable": statistics.fmean(others) if others else None,
        "rounds": min((len(t.runs) for t in timings.values()), default=0),
    }
    limit = cores + BUSY_MARGIN
    reasons, known = [], False
    if out["load_before"] is not None:
        known = True
        if out["load_before"] > limit:
            reasons.append(f"1-minute load average {out['load_before']:.2f} before the block")
    if out["others_runnable"] is not None:
        known = True
        demand = out["others_runnable"] + threads
        if demand > limit:
            reasons.append(f"other processes' runnable threads {out['others_runnable']:.2f} "
                           f"+ {threads} of this run's during it")
    elif out["load_during"] is not None:
        known = True
        if out["load_during"] > limit:
            reasons.append(f"1-minute load average up to {out['load_during']:.2f} during it")
    if not known:
        out["busy"], out["why"] = None, "the load could not be read on this system"
    elif reasons:
        out["busy"], out["why"] = True, f"{'; '.join(reasons)}, on {cores} cores"
    else:
        out["busy"] = False
        out["why"] = (f"1-minute load average {_fmt(out['load_before'])} before the block, other "
                      f"processes' runnable threads {_fmt(out['others_runnable'])} + {threads} "
                      f"of this run's during it, on {cores} cores")
    return out


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.2f}"


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


class Budget:
    """Wall-clock seconds shared by the run's timed blocks, each taking a weighted share of
    what is left when it starts, so an early block that overruns shortens the later ones.

    ``seconds=None`` means no limit (``--full``, ``--quick``).
    """

    def __init__(self, seconds: float | None, total_weight: float = 1.0) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds
        self.weight_left = total_weight

    def take(self, weight: float) -> float | None:
        """The deadline of a block of this weight (None: no limit)."""
        left, self.weight_left = self.weight_left, max(self.weight_left - weight, 0.0)
        if self.end is None:
            return None
        now = time.monotonic()
        return now + max(self.end - now, 0.0) * min(weight / left, 1.0) if left > 0 else now

    def drop(self, weight: float) -> None:
        """A block that will not run: its share goes to the blocks after it."""
        self.weight_left = max(self.weight_left - weight, 0.0)

    @property
    def spent(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def skipped(self) -> dict[str, str]:
        """What a block that did not start, because the budget was spent, reports."""
        return {"skipped": f"the time budget ({self.seconds:.0f} s) was spent"}


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """NumPy's BLAS, OpenMP and (when imported) PyTorch limited to ``threads`` inside the
    block, restored after it; ``None`` changes nothing."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(old)


def thread_settings(requested: tuple[int, ...] | None = None) -> list[int]:
    """The BLAS thread counts to time: NumPy's default and 1, where they differ."""
    if requested:
        return list(dict.fromkeys(requested))
    default = sysinfo.blas_threads()
    return [default, 1] if default > 1 else [1]
