"""A run that cannot write its lock (the disk full from the start) releases and removes it:
one ``smx: error:`` line, exit 2, and no ``.smx-lock`` (nor a folder the run made) left.

Two ways to make the first write fail: a file size limit of 0 bytes in the child
(``RLIMIT_FSIZE``, SIGXFSZ ignored, so the write fails with EFBIG), which runs anywhere;
and a real full tmpfs, where the test runs as root (ENOSPC)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error

resource = pytest.importorskip("resource", reason="no file size limits on this platform")

RUN = ("run", "data.name=synthetic", "data.n=120", "epochs=1", "--quiet")


def no_file_may_grow() -> None:
    """In the child: any write that would make a file longer fails (EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def smx_run(*args: str, cwd: Path, limit: bool):
    return subprocess.run([sys.executable, "-W", "error", "-m", "smx", *RUN, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=no_file_may_grow if limit else None)


def locks(root: Path) -> list[Path]:
    return sorted(root.rglob(".smx-lock"))


def one_line(proc) -> str:
    line = assert_one_line_error(proc, "cannot lock the run folder")
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    return line


@pytest.mark.parametrize("how", ["output", "default", "overwrite"])
def test_a_lock_that_cannot_be_written_is_removed(tmp_path, how):
    if how == "overwrite":  # an earlier run's folder: it stays as it was
        smx_run("output=out", cwd=tmp_path, limit=False).check_returncode()
        before = sorted(p.name for p in (tmp_path / "out").iterdir())
    args = {"output": ["output=out"], "default": [],
            "overwrite": ["output=out", "--overwrite"]}[how]
    proc = smx_run(*args, cwd=tmp_path, limit=True)
    line = one_line(proc)
    assert "File too large" in line or "No space" in line, line
    assert locks(tmp_path) == []
    if how == "overwrite":
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    else:  # the folders this run made are gone with it
        assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 64 KiB tmpfs filled to the last block (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        fd = os.open(mount / "fill", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("how", ["output", "default"])
def test_on_a_full_disk_the_run_leaves_no_lock(full_tmpfs, how):
    proc = smx_run(*(["output=out"] if how == "output" else []), cwd=full_tmpfs, limit=False)
    assert "No space left on device" in one_line(proc)
    assert locks(full_tmpfs) == []
    assert sorted(p.name for p in full_tmpfs.iterdir()) == ["fill"]
