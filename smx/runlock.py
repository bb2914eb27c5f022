"""An exclusive lock on a run folder, so two smx processes never write one folder at once.

The lock is ``fcntl.flock`` on ``<folder>/.smx-lock``, which holds the owner's PID for
the error message of whoever comes second. The kernel drops a flock when its process
ends, however it ends (SIGKILL included), so a lock can never go stale: a lock file
left behind by a killed run is simply taken over. The file is removed on release; as
another process may have opened it just before, a lock counts only if the path still
names the very file that was locked (the usual check for lock files that get removed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from smx.errors import RunFolderError

LOCK_NAME = ".smx-lock"


class RunLock:
    """Held from :meth:`acquire` to :meth:`release` (or the end of a ``with`` block)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock now or raise RunFolderError naming the PID that holds it."""
        for _ in range(100):  # a retry only when a holder removed the file meanwhile
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                             0o644)
            except OSError as exc:
                raise RunFolderError(f"cannot lock the run folder: {exc.strerror or exc}",
                                     where=str(self.folder)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                for _ in range(20):  # the holder may be a moment from writing its PID
                    if pid is not None:
                        break
                    time.sleep(0.01)
                    pid = _read_pid(fd)
                os.close(fd)
                raise RunFolderError(
                    f"in use by another smx process (PID {pid or 'unknown'}); wait for it to "
                    "finish or stop it", where=str(self.folder)) from None
            except OSError as exc:
                os.close(fd)
                raise RunFolderError(f"cannot lock the run folder: {exc.strerror or exc}",
                                     where=str(self.folder)) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as exc:  # a full disk (ENOSPC), a file size limit (EFBIG)...
                with contextlib.suppress(OSError):  # held: no one else can be using it
                    os.unlink(self.path)
                os.close(fd)
                raise RunFolderError(f"cannot lock the run folder: {exc.strerror or exc}",
                                     where=str(self.folder)) from None
            self.fd = fd
            return self
        raise RunFolderError("cannot lock the run folder (its lock file keeps changing)",
                             where=str(self.folder))

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):  # removed first: a waiter then finds no stale file
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
