"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Temporary file in the same folder, flush, fsync, rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz in memory; refuses object arrays so no pickle is ever written."""
    for key, value in arrays.items():
        if np.asarray(value).dtype.hasobject:
            raise TypeError(f"refusing to write object array {key!r} (would need pickle)")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
