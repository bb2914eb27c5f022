"""Checkpoints: everything a run needs to continue bit for bit, in one pickle-free file.

A checkpoint is an ``.npz`` of plain arrays plus one JSON string. Optimizer
state (any nesting of dicts, lists and tuples over arrays and Python scalars)
is flattened: each array becomes its own entry and the JSON keeps the tree
with references to them, so no pickle is ever written or read. A SHA-256 over
every entry (name, dtype, shape, bytes) is stored inside and verified on load,
and the file is replaced atomically, so the previous checkpoint stays intact
until the new one is fully on disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from smx.errors import ModelFileError, RunFolderError
from smx.io import atomic_write_bytes, npz_bytes

FORMAT = "smx-checkpoint/1"
FILENAME = "checkpoint.npz"
_SCALARS = (bool, int, float, str, type(None))


def flatten_tree(tree: Any, arrays: dict[str, np.ndarray],
                 _seen: dict[int, str] | None = None) -> Any:
    """A JSON-able description of ``tree``; its (host) arrays go into ``arrays``.

    One array object reached twice is stored once and comes back as one object, so
    identity that state relies on (L-BFGS keeps ``params`` in its state) survives.
    """
    seen = {} if _seen is None else _seen
    if isinstance(tree, dict):
        if not all(isinstance(k, str) for k in tree):
            raise TypeError(f"checkpoint trees need string keys, got {list(tree)!r}")
        return {"dict": {k: flatten_tree(v, arrays, seen) for k, v in tree.items()}}
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return {kind: [flatten_tree(v, arrays, seen) for v in tree]}
    if isinstance(tree, _SCALARS):
        return {"value": tree}  # float repr round-trips exactly, NaN/inf included
    if id(tree) not in seen:
        seen[id(tree)] = key = f"a{len(arrays)}"
        arrays[key] = tree if isinstance(tree, np.ndarray) else np.asarray(tree)
    return {"array": seen[id(tree)]}


def unflatten_tree(spec: Any, arrays: dict[str, np.ndarray]) -> Any:
    (kind, body), = spec.items()
    if kind == "dict":
        return {k: unflatten_tree(v, arrays) for k, v in body.items()}
    if kind in ("list", "tuple"):
        items = [unflatten_tree(v, arrays) for v in body]
        return items if kind == "list" else tuple(items)
    if kind == "value":
        return body
    if kind == "array":
        return arrays[body]
    raise ValueError(f"unknown tree node {kind!r}")


def map_arrays(tree: Any, fn: Any, memo: dict[int, Any] | None = None) -> Any:
    """Apply ``fn`` to every non-scalar leaf (an array), keeping the structure.

    ``memo`` (id of a leaf -> result) maps one object reached twice to one result;
    share it between calls to keep identity across several trees.
    """
    memo = {} if memo is None else memo
    if isinstance(tree, dict):
        return {k: map_arrays(v, fn, memo) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_arrays(v, fn, memo) for v in tree)
    if isinstance(tree, _SCALARS):
        return tree
    if id(tree) not in memo:
        memo[id(tree)] = fn(tree)
    return memo[id(tree)]


def checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any], *, durable: bool = True) -> None:
    """Write ``state`` (host arrays, scalars, JSON-able metadata) atomically with its checksum
    (``durable``: see :func:`smx.io.atomic_write_bytes`)."""
    arrays: dict[str, np.ndarray] = {}
    tree = flatten_tree(state, arrays)
    arrays["tree"] = np.asarray(json.dumps(tree))
    arrays["format"] = np.asarray(FORMAT)
    arrays["sha256"] = np.asarray(checksum(arrays))
    try:
        atomic_write_bytes(path, npz_bytes(arrays), durable=durable)
    except OSError as exc:  # disk full, folder gone: the previous checkpoint is still whole
        raise RunFolderError(f"cannot write the checkpoint: {exc.strerror or exc}",
                             where=str(path)) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`, or ModelFileError saying what is wrong.

    Whether the state fits a run (shapes, ranges, optimizer state) is checked by
    :func:`smx.resume_check.check_state`, before a resumed run touches its folder.
    """
    from smx.safe_read import read_npz

    where = str(path)
    arrays = read_npz(path, ModelFileError, what="checkpoint", strict_names=True,
                      missing="no checkpoint here (the run was stopped before its first "
                              "checkpoint, or checkpoint_every is 0)",
                      expected="an smx checkpoint")
    fmt = arrays.get("format")
    if fmt is None or fmt.shape != () or str(fmt) != FORMAT or "sha256" not in arrays \
            or "tree" not in arrays:
        raise ModelFileError(f"not an smx checkpoint (expected format {FORMAT})", where=where)
    stored = arrays.pop("sha256")
    if stored.shape != () or checksum(arrays) != str(stored):
        raise ModelFileError("checkpoint checksum mismatch: the file is corrupted", where=where)
    try:
        tree = arrays["tree"]
        if tree.shape != () or tree.dtype.kind != "U":
            raise ValueError("the tree entry is not a string")
        return unflatten_tree(json.loads(str(tree)), arrays)
    except RecursionError:  # a tree nested deeper than any state smx writes
        raise ModelFileError("malformed checkpoint contents (tree nested too deeply)",
                             where=where) from None
    except Exception as exc:
        raise ModelFileError(f"malformed checkpoint contents ({type(exc).__name__}: {exc})",
                             where=where) from None
