"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Temporary file in the same folder, flush, fsync, rename over ``path``.

    The file gets the mode a plain ``open`` would (0666 less the umask), not
    mkstemp's private 0600: run folders and predictions are meant to be shared.
    ``durable=False`` skips the two fsyncs (~3 ms each here): the rename is still
    atomic for every reader and survives the process being killed (the data is in
    the page cache); only a crash of the machine itself may lose it. For files that
    a later write replaces anyway (a run's checkpoint between epochs).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: the message names the file, not just the errno
        Path(tmp).unlink(missing_ok=True)
        raise _named(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``: a failed write() names no file, a failed mkstemp or
    rename only the temporary one, which the user never asked for."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any, *, allow_nan: bool = True) -> None:
    """``allow_nan=False`` refuses NaN/inf (which JSON does not have) instead of writing them."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=allow_nan)
                      + "\n")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz in memory; refuses object arrays so no pickle is ever written."""
    for key, value in arrays.items():
        if np.asarray(value).dtype.hasobject:
            raise TypeError(f"refusing to write object array {key!r} (would need pickle)")
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stubs: **kwds
    return buf.getvalue()
