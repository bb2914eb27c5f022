"""Throwaway third-party plugins, laid out on disk the way an installer leaves them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def install_fake_dist(site: Path, dist: str, version: str, modules: dict[str, str],
                      entry_points: dict[str, str]) -> Path:
    """Write modules plus a ``.dist-info`` with ``entry_points.txt`` (group ``smx``) into site."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[smx]\n{eps}\n")
    (info / "RECORD").write_text("")
    return site


def pip_install_target(folder: Path, target: Path) -> Path:
    """``pip install --no-deps --target``: a real wheel build of a plugin folder, as a user
    installs it (pip may fetch the build backend)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
         "--target", str(target), str(folder)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return target


HALVING_SGD = '''
    import smx
    from smx.optimizers.sgd import SGDParams, sgd

    class HalfParams(SGDParams):
        pass

    @smx.hookimpl
    def smx_optimizers():
        yield smx.OptimizerSpec(name="half-sgd", factory=sgd, params=HalfParams,
                                description="a third-party optimizer")
'''

DUPLICATE_SGD = '''
    import smx
    from smx.optimizers.sgd import sgd

    @smx.hookimpl
    def smx_optimizers():
        yield smx.OptimizerSpec(name="sgd", factory=sgd)
'''

BROKEN = '''
    raise RuntimeError("this plugin is broken on purpose")
'''

# Test-only schedules (constant lr otherwise): ``pause-at`` blocks at one step while the
# file named by SMX_TEST_PAUSE_FLAG exists, after creating FLAG.paused, so a test can kill
# a run at a known point without timing; ``nan-at`` makes the lr NaN from a step on.
TEST_SCHEDULES = '''
    import os
    import time

    import smx

    class AtStep(smx.PluginParams):
        at_step: int = 0

    def pause_at(*, total_steps, steps_per_epoch, at_step=0):
        def fn(t):
            flag = os.environ.get("SMX_TEST_PAUSE_FLAG")
            if t == at_step and flag and os.path.exists(flag):
                open(flag + ".paused", "w").close()
                while True:
                    time.sleep(0.05)
            return 1.0
        return fn

    def nan_at(*, total_steps, steps_per_epoch, at_step=0):
        return lambda t: float("nan") if t >= at_step else 1.0

    @smx.hookimpl
    def smx_schedules():
        yield smx.ScheduleSpec("pause-at", pause_at, AtStep, "test: blocks at a step")
        yield smx.ScheduleSpec("nan-at", nan_at, AtStep, "test: NaN lr from a step on")
'''


def install_test_schedules(site: Path) -> Path:
    return install_fake_dist(site, "smx-test-schedules", "0.1",
                             {"smx_test_schedules": TEST_SCHEDULES},
                             {"test-schedules": "smx_test_schedules"})


# A third-party callback: each call appended as one JSON line to the file its ``path``
# option names, with the record it was given (what the tests compare with the run's files).
RECORDER = '''
    import json
    from pathlib import Path

    import smx

    class RecorderParams(smx.PluginParams):
        path: str

    class Recorder(smx.Callback):
        def __init__(self, path):
            self.path = Path(path)

        def _write(self, hook, payload):
            with self.path.open("a") as fh:
                fh.write(json.dumps({"hook": hook, **payload}) + "\\n")

        def on_run_start(self, run):
            self._write("on_run_start", {"folder": str(run.folder), "config": run.config,
                                         "resumed": run.resumed, "history": run.history})

        def on_epoch_end(self, record):
            self._write("on_epoch_end", {"record": record})
            record["train_loss"] = "changed by the callback"  # must reach no one else

        def on_checkpoint(self, path, epoch):
            self._write("on_checkpoint", {"path": str(path), "epoch": epoch})

        def on_run_end(self, summary):
            self._write("on_run_end", {"summary": summary})

    RECORDER = smx.CallbackSpec(name="recorder", factory=Recorder, params=RecorderParams,
                                description="test: records every call")

    @smx.hookimpl
    def smx_callbacks():
        yield RECORDER
'''


def install_recorder(site: Path) -> Path:
    return install_fake_dist(site, "smx-recorder", "0.3", {"smx_recorder": RECORDER},
                             {"recorder": "smx_recorder"})
