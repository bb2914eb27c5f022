from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder, so default run folders land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_smx(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    """The CLI in a subprocess, exactly as a user types it, with Python's ``-W error``: a
    warning escaping smx's handling would become a traceback, which the tests refuse."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "smx", *args], cwd=cwd, capture_output=True,
        text=True, env=full_env, timeout=timeout,
    )


def sigkill_when(args: list[str], ready, *, cwd: Path, env: dict,
                 timeout: float = 240) -> subprocess.Popen:
    """Start ``args``, wait until ``ready()`` (e.g. the test schedule pause-at's
    ``<flag>.paused`` file exists), then SIGKILL it: a process killed at a known point.
    ``timeout`` is a hang guard, not a timing assertion."""
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a full pipe would block
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                text=True)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                if proc.poll() is not None:
                    err.seek(0)
                    raise AssertionError(f"ended before it was ready: {err.read()}")
                assert time.monotonic() < deadline, f"not ready after {timeout} s: {args}"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc


def assert_one_line_error(proc, *needles: str, code: int = 2) -> str:
    """Exit code, one stderr line, no traceback, and the expected words in it."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("smx: error:")]
    assert len(lines) == 1, err
    # nothing but smx's own lines (notes, the error): no warning text before the error
    assert all(line.startswith(("smx: ", "  ")) for line in err.splitlines()), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def gpu_reason(engine: str) -> str | None:
    """Why ``engine`` cannot use a GPU here (None: it can). Decided without importing the
    library where the engine can tell (a CPU-only wheel, no driver), else by asking it."""
    from smx.plugins import Plugins

    backend = Plugins(entry_points=False).get("backend", engine)
    if engine == "cupy":
        return backend.unavailable_reason()
    hint = getattr(backend, "accelerator_hint", backend.unavailable_reason)()
    if hint is not None:
        return hint
    try:
        backend.resolve_device("cuda")
    except Exception as exc:
        return str(exc)
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` (``gpu("torch")``: on that engine; CuPy by default) skip, saying
    why, when the engine cannot use a GPU here.
"""
    reasons: dict[str, str | None] = {}
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is None:
            continue
        engine = marker.args[0] if marker.args else "cupy"
        if engine not in reasons:
            reasons[engine] = gpu_reason(engine)
        if reasons[engine]:
            item.add_marker(pytest.mark.skip(reason=f"no usable GPU for {engine}: "
                                                    f"{reasons[engine]}"))


def counting(backend_cls: type) -> type:
    """A subclass of ``backend_cls`` that counts ``to_host`` calls (the loop's host reads)."""

    class Counting(backend_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.to_host_calls = 0

        def to_host(self, array):
            self.to_host_calls += 1
            return super().to_host(array)

    Counting.__name__ = f"Counting{backend_cls.__name__}"
    return Counting
