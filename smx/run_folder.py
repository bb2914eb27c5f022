"""The run folder's policy: where a run writes, what may be replaced, what counts as smx's.

A default-named folder is never reused (a run started in the same second gets ``-2``,
``-3``...); ``--overwrite`` replaces only a folder that holds nothing but smx's own files,
and takes the folder's lock first, so two runs never share one.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from pathlib import Path

from smx.checkpoint import FILENAME as CHECKPOINT
from smx.config import RunConfig
from smx.errors import (
    RunFolderError,
)
from smx.runlock import LOCK_NAME, RunLock

#: every file smx writes in a run folder: --overwrite replaces a folder holding only these
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", CHECKPOINT, "model.npz", "loss.png")


#: the temporary file of an atomic write of a run file (``.NAME.<random>.tmp``, random
#: from ``tempfile.mkstemp``), and smx 0.1's fixed-name one for the plot; nothing else
_TEMP = re.compile(r"\.(?:" + "|".join(map(re.escape, RUN_FILES)) + r")\.[a-z0-9_]+\.tmp"
                   r"|\.loss\.png\.tmp\.png")


def default_output(config_name: str) -> Path:
    return Path("runs") / f"{config_name}-{datetime.now():%Y%m%d-%H%M%S}"


def run_name(config_name: str, cfg: RunConfig) -> str:
    """The config's name, plus the data's when the config does not say it already
    (``smx run data.name=iris`` trains iris, so its folder is ``digits-iris-<time>``)."""
    data = cfg.data.name
    path = cfg.data.params().get("path")
    if data == "file" and isinstance(path, str):
        data = Path(path).stem or data
    data = re.sub(r"[^A-Za-z0-9._-]+", "_", data)[:40].strip("._") or "data"
    return config_name if data in config_name.split("-") or data == config_name \
        else f"{config_name}-{data}"


#: files a built-in callback writes in the run folder (the tensorboard callback's events)
_CALLBACK_FILES = re.compile(r"events\.out\.tfevents\.[A-Za-z0-9._-]+")


def _written_by_smx(entry: Path) -> bool:
    """One of :data:`RUN_FILES`, the lock, a temporary file of an atomic write of one, or
    an event file of the tensorboard callback."""
    if entry.is_symlink() or not entry.is_file():
        return False
    return entry.name in RUN_FILES or entry.name == LOCK_NAME \
        or _TEMP.fullmatch(entry.name) is not None \
        or _CALLBACK_FILES.fullmatch(entry.name) is not None


def _refuse_foreign(path: Path, contents: list[Path]) -> None:
    foreign = sorted(p.name for p in contents if not _written_by_smx(p))
    if foreign:
        shown = f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}"
        raise RunFolderError(f"not an smx run folder (holds {shown}); refusing to replace it",
                             where=str(path))


def prepare_folder(path: Path, overwrite: bool) -> RunLock:
    """Create and lock the run folder; refuse to clobber an existing one without ``overwrite``.

    ``overwrite`` replaces only a run folder: one with a config.yaml and nothing but
    files smx writes, so a project folder that happens to hold a config.yaml is safe.
    Only those files are removed (the folder itself stays, with its lock), and only
    once the lock is held: a run still writing there makes this one fail instead.
    """
    try:
        exists = path.exists() or path.is_symlink()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise RunFolderError(f"cannot use the run folder: {why}", where=str(path)) from None
    if not exists:
        try:
            path.mkdir(parents=True)
            return RunLock(path).acquire()
        except FileExistsError:  # another run created it a moment ago: treated as existing
            pass
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc
            raise RunFolderError(f"cannot create the run folder: {reason}", where=str(path)) \
                from None
    if not path.is_dir() or path.is_symlink():
        raise RunFolderError("exists and is not a folder", where=str(path))
    contents = list(path.iterdir())
    if contents and not overwrite:
        raise RunFolderError("run folder already exists; pass --overwrite to replace it",
                             where=str(path))
    _refuse_foreign(path, contents)
    lock = RunLock(path).acquire()
    try:
        contents = [p for p in path.iterdir() if p.name != LOCK_NAME]  # as it is now, locked
        _refuse_foreign(path, contents)
        if contents and not (path / "config.yaml").is_file():
            raise RunFolderError("not an smx run folder (has no config.yaml); refusing to "
                                 "replace it", where=str(path))
        for p in contents:
            p.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def create_default_folder(config_name: str) -> Path:
    """``runs/<config>-<time>``, or ``-2``, ``-3``... when a run started in the same second
    holds that name: a default-named folder is never reused or replaced."""
    base = default_output(config_name)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the folder: {exc.strerror}",
                             where=str(base.parent)) from None
    for n in range(1, 10_000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot create the run folder: {exc.strerror}",
                                 where=str(path)) from None
        return path
    raise RunFolderError("no free run folder name", where=str(base))


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
