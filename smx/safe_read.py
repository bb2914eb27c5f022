"""Reading files a user hands smx (configs, data, models, checkpoints) without hanging,
without unbounded memory, and with every failure as one :class:`~smx.errors.SmxError` line.

* Only regular files are read: a FIFO would block ``open()`` forever, a device such as
  ``/dev/zero`` never ends, a directory is no file. ``os.open`` with ``O_NONBLOCK`` opens
  a FIFO at once, so ``fstat`` can refuse it before any read.
* ``.npy`` arrays (bare or inside an ``.npz``) are read by header first: the shape and
  dtype it declares must match the bytes the file really holds, so a damaged header
  cannot ask for terabytes; object arrays (pickles) are refused before any byte is read.
* Whatever a damaged file makes NumPy or :mod:`zipfile` raise (``BadZipFile``,
  ``NotImplementedError: zip file version``, ``tokenize.TokenError``...) becomes the
  caller's error class naming the file and the entry.
"""

from __future__ import annotations

import fcntl
import math
import os
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from smx.errors import SmxError

#: the most header bytes an .npy may declare (NumPy's own default limit)
MAX_HEADER = 10_000
#: deflate cannot expand data by much more than 1032:1; an entry claiming more is damaged
MAX_DEFLATE_RATIO = 1100


#: bytes per read of array data (see _read_npy)
READ_CHUNK = 1 << 20

def kind_of(mode: int) -> str:
    """What a path is ("a directory", "a FIFO (named pipe)"...), from its mode, for
    messages that refuse it."""
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, error: type[SmxError], *, missing: str = "file not found",
                 expected: str = "a file") -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything but a regular file.

    ``missing`` is the message when nothing is there; ``expected`` names what should be
    there ("a YAML file", "a data file"). The open never blocks, even on a FIFO.
    """
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(missing, where=where) from None
    except ValueError:  # an embedded NUL: no file can have that name
        raise error("the path contains a NUL character", where=repr(where)) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", where=where) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"is {kind_of(mode)}, expected {expected}", where=where)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, error: type[SmxError], *, limit: int, what: str,
               missing: str = "file not found", expected: str = "a file") -> bytes:
    """The whole file, refusing one larger than ``limit`` bytes before reading it."""
    with open_regular(path, error, missing=missing, expected=expected) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise error(f"{what} is {_size(size)}; at most {_size(limit)} is read",
                        where=str(path))
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read: {exc.strerror or exc}", where=str(path)) from None
    if len(data) > limit:  # grew while being read
        raise error(f"{what} is over {_size(limit)}", where=str(path))
    return data


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _read_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_HEADER)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_HEADER)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError("holds Python objects, which would need pickle (refused)")
    return tuple(shape), bool(fortran), dtype


def _read_npy(fh: IO[bytes], available: int) -> np.ndarray:
    """One .npy from ``fh``, whose data part must be exactly ``available`` bytes past the
    header; the array owns writable memory."""
    start = fh.tell()
    shape, fortran, dtype = _read_header(fh)
    header = fh.tell() - start
    count = math.prod(shape)
    need = count * dtype.itemsize
    if need != available - header:
        raise ValueError(f"its header declares shape {shape} of {dtype} ({need:,} bytes) but "
                         f"it holds {max(available - header, 0):,} bytes")
    buf = bytearray(need)
    view, got = memoryview(buf), 0
    while got < need:
        # in pieces: a zip entry's readinto is read() + copy, a temporary as large as the
        # request (a whole-array request doubled the peak memory of loading an .npz)
        n = fh.readinto(view[got:got + READ_CHUNK])  # type: ignore[attr-defined]
        if not n:
            raise ValueError(f"truncated: {got:,} of {need:,} data bytes")
        got += n
    if fh.read(1):  # also makes zipfile check the entry's CRC-32
        raise ValueError("trailing bytes after the array data")
    if need == 0:  # no data (an empty array, or a zero-size dtype)
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    array = np.frombuffer(buf, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def read_npy(path: str | Path, error: type[SmxError], *, what: str = "array",
             missing: str = "file not found", expected: str = "an .npy file") -> np.ndarray:
    """A bare ``.npy`` array, checked as described in the module docstring."""
    with open_regular(path, error, missing=missing, expected=expected) as fh:
        try:
            return _read_npy(fh, os.fstat(fh.fileno()).st_size)
        except SmxError:
            raise
        except Exception as exc:  # whatever a damaged file makes NumPy raise
            raise error(f"corrupted or unreadable {what}: {_text(exc)}", where=str(path)) \
                from None


def read_npz(path: str | Path, error: type[SmxError], *, what: str,
             only: Iterable[str] | None = None, missing: str = "file not found",
             expected: str = "an .npz file", strict_names: bool = False,
             skipped: list[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` by name (``X`` for entry ``X.npy``).

    ``only`` reads just those entries (the names of the others, skipped unread, go into
    ``skipped``). ``strict_names``
    refuses any entry that is not an ``.npy`` array or appears twice, as smx's own
    files never hold one; a renamed entry is then an error, not a missing array.
    """
    wanted = None if only is None else set(only)
    where = str(path)
    with open_regular(path, error, missing=missing, expected=expected) as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            if size >= 6 and fh.read(6) == b"\x93NUMPY":
                raise error(f"not {expected} (a single .npy array, not an .npz archive)",
                            where=where)
            fh.seek(0)
            zf = zipfile.ZipFile(fh)
            declared = _declared_entries(fh, size)
            if declared is not None and declared != len(zf.infolist()):
                # a damaged length in the directory can end its parsing early, silently
                # dropping entries (an intercept, a checksum): zipfile does not compare
                raise ValueError(f"the zip directory lists {len(zf.infolist())} entries, its "
                                 f"end record {declared}")
        except SmxError:
            raise
        except Exception as exc:
            raise error(f"corrupted or truncated {what}: {_text(exc)}", where=where) from None
        arrays: dict[str, np.ndarray] = {}
        with zf:
            for info in zf.infolist():
                name = info.filename
                key = name.removesuffix(".npy")
                if strict_names and (key == name or key in arrays):
                    twice = key in arrays
                    raise error(f"unexpected entry {name!r} in {what}"
                                + (" (given twice)" if twice else ""), where=where)
                if wanted is not None and key not in wanted:
                    if skipped is not None:
                        skipped.append(key)
                    continue
                try:
                    arrays[key] = _read_entry(zf, info, size)
                except Exception as exc:
                    raise error(f"corrupted {what}: entry {name!r}: {_text(exc)}",
                                where=where) from None
    return arrays


def _declared_entries(fh: BinaryIO, size: int) -> int | None:
    """The entry count in the zip's end-of-central-directory record (None: ZIP64 or not
    found), located as zipfile does: at the very end, else before a trailing comment."""
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    count = int.from_bytes(tail[at + 10:at + 12], "little")
    return None if count == 0xFFFF else count


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int) -> np.ndarray:
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size or info.compress_size > archive_size:
            raise ValueError("its sizes in the zip directory do not fit the archive")
    elif info.file_size > MAX_DEFLATE_RATIO * max(info.compress_size, 1) \
            or info.compress_size > archive_size:
        raise ValueError("its sizes in the zip directory do not fit the archive")
    with zf.open(info) as member:
        return _read_npy(member, info.file_size)


def _text(exc: BaseException) -> str:
    """An exception as short single-line text (some carry whole headers in their message)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text if len(text) <= 200 else f"{text[:197]}..."
    return text if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {text}"
