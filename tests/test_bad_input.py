"""Every bad input through the CLI: one ``smx: error:`` line naming what and where, exit 2,
no traceback, and nothing half-written (the working folder is byte-for-byte unchanged).

The CLI's ``main`` runs in process here (a subprocess per case would cost a second each);
``tests/test_cli.py`` and ``tests/test_resume.py`` check the real process exit codes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from smx.cli import main
from smx.datasets.split import Standardizer
from smx.errors import DataError
from smx.modelfile import FittedModel
from smx.plugins import get_plugins
from tests.conftest import assert_one_line_error, run_smx
from tests.plugin_fixtures import install_fake_dist

GOOD_CSV = "a,b,label\n" + "".join(f"{i % 7}.5,{i % 3},{i % 2}\n" for i in range(40))
NAN_CSV = GOOD_CSV.replace("3.5,0,1\n", "nan,inf,1\n", 1)


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _model_bytes(n_features: int = 2, **bad: np.ndarray) -> bytes:
    """A valid model file's bytes (saved through FittedModel, as a run does); ``bad``
    replaces arrays with hand-made ones (written past FittedModel, as a tamperer would),
    in the format of smx 0.1 (no checksum), so that the checks of the values are reached."""
    import tempfile

    fitted = FittedModel(np.zeros((n_features, 2)), np.zeros(2), np.array([0, 1]),
                         Standardizer.identity(n_features))
    with tempfile.TemporaryDirectory() as tmp:
        fitted.save(Path(tmp) / "m.npz")
        if bad:
            with np.load(Path(tmp) / "m.npz") as f:
                arrays = {k: f[k] for k in f.files if k != "sha256"}
            np.savez(Path(tmp) / "m.npz", **{**arrays, **bad})
        return (Path(tmp) / "m.npz").read_bytes()


MODEL = _model_bytes()


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with a hash of its bytes (folders, links and special files
    such as FIFOs marked as such: reading a FIFO would block)."""
    import stat

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        mode = p.lstat().st_mode
        out[rel] = ("dir" if stat.S_ISDIR(mode) else f"link:{p.readlink()}"
                    if stat.S_ISLNK(mode) else hashlib.sha256(p.read_bytes()).hexdigest()
                    if stat.S_ISREG(mode) else f"special:{stat.S_IFMT(mode)}")
    return out


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_error(code: int, err: str, needles: list[str], exit_code: int = 2) -> str:
    assert code == exit_code, (code, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("smx: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _file(name: str, content: str | bytes) -> dict[str, str | bytes]:
    return {name: content}


FIFO = object()  # a named pipe: opening one for reading used to block forever


class Link:
    """A symbolic link to ``target`` (a device such as /dev/zero, which never ends)."""

    def __init__(self, target: str) -> None:
        self.target = target


def _npy_declaring(shape: tuple[int, ...], data: bytes = b"\x00" * 32) -> bytes:
    """An .npy whose header declares ``shape`` of float64 but holds only ``data``."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def _zip(**entries: bytes) -> bytes:
    """An .npz from raw entry bytes (``W=...`` becomes entry ``W.npy``)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in entries.items():
            zf.writestr(name if "." in name else f"{name}.npy", content)
    return buf.getvalue()


def _model_entries(**replace: bytes | None) -> bytes:
    """A valid (checksummed) model file's entries as raw bytes, some replaced or, with
    None, dropped; ``rename`` moves entry b to c (as a flipped byte in its name would)."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(MODEL)) as zf:
        entries = {n.removesuffix(".npy"): zf.read(n) for n in zf.namelist()}
    for key, value in replace.items():
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value
    return _zip(**entries)


HEADERLESS = "1.5,2\n0.5,1\n2,3\n4,1\n0,0\n"
BIG_CSV = "a,b,label\n" + "".join(f"{i % 7}.5,{i % 3},{i % 2}\n" for i in range(39)) \
    + "1e200,1,1\n"


FILE_DATA = ["data.name=file", "data.label_column=label"]

RUN_CASES = {
    # id: (files to create, `smx run` arguments, words expected in the error line)
    "malformed-yaml": (_file("c.yaml", "epochs: 2\noptimizer:\n  name: [sgd\n"), ["c.yaml"],
                       ["c.yaml:4:1: malformed YAML"]),
    "malformed-yaml-indent": (_file("c.yaml", "epochs: 2\n  bad: 1\n"), ["c.yaml"],
                              ["c.yaml:2:6: malformed YAML", "mapping values"]),
    "unknown-key": (_file("c.yaml", "epochs: 2\nepoch: 3\n"), ["c.yaml"],
                    ["epoch: unknown key; allowed:", "epochs"]),
    "unknown-optimizer-key": ({}, ["optimizer.betas=1"],
                              ["optimizer.betas: unknown key", "momentum"]),
    "wrong-type": (_file("c.yaml", "epochs: many\n"), ["c.yaml"],
                   ["epochs:", "valid integer", "'many'"]),
    "wrong-type-section": ({}, ["model=3"], ["model:", "valid dictionary"]),
    "negative-lr": ({}, ["optimizer.lr=-0.1"], ["optimizer.lr:", "greater than 0", "-0.1"]),
    "batch-size-0": ({}, ["batch_size=0"], ["batch_size:", "greater than or equal to 1"]),
    "missing-config": ({}, ["missing.yaml"], ["missing.yaml: config file not found"]),
    "missing-data-file": ({}, ["data.name=file", "data.path=nope.npz"],
                          ["nope.npz: file not found"]),
    "config-is-a-folder": ({"c.yaml/x": ""}, ["c.yaml"], ["c.yaml: is a directory"]),
    "data-is-a-folder": ({"d.csv/x": ""}, [*FILE_DATA, "data.path=d.csv"],
                         ["d.csv: is a directory"]),
    "nan-in-x": (_file("d.csv", NAN_CSV), [*FILE_DATA, "data.path=d.csv"],
                 ["2 NaN/inf value(s) in 1 row(s); first at row 3, column 0"]),
    "single-class": (_file("d.csv", "a,label\n" + "1,0\n2,0\n3,0\n" * 5),
                     [*FILE_DATA, "data.path=d.csv"], ["only one class in the labels (0);"]),
    "label-column-missing": (_file("d.csv", GOOD_CSV), [*FILE_DATA[:1], "data.path=d.csv",
                                                        "data.label_column=target"],
                             ["label column 'target' not in the header", "a, b, label"]),
    "label-column-not-given": (_file("d.csv", GOOD_CSV), [*FILE_DATA[:1], "data.path=d.csv"],
                               ["data.label_column"]),
    "ragged-csv": (_file("d.csv", GOOD_CSV + "1,2\n"), [*FILE_DATA, "data.path=d.csv"],
                   ["d.csv:42: 2 fields, expected 3 (ragged CSV)"]),
    "not-a-number": (_file("d.csv", GOOD_CSV + "x,2,1\n"), [*FILE_DATA, "data.path=d.csv"],
                     ["d.csv:42: column 'a' is not a number: 'x'"]),
    "x-y-lengths": ({"X.npy": _npy(np.ones((10, 2))), "y.npy": _npy(np.arange(9) % 2)},
                    ["data.name=file", "data.path=X.npy", "data.labels=y.npy"],
                    ["X has 10 rows but y has 9 labels"]),
    "empty-csv": (_file("d.csv", "a,label\n"), [*FILE_DATA, "data.path=d.csv"],
                  ["the dataset is empty (0 rows)"]),
    "empty-file": (_file("d.csv", ""), [*FILE_DATA, "data.path=d.csv"],
                   ["d.csv: empty file"]),
    "corrupt-npz-data": (_file("d.npz", b"PK\x03\x04garbage"), ["data.name=file",
                                                                "data.path=d.npz"],
                         ["d.npz: corrupted or truncated"]),
    "seed-out-of-range": ({}, ["seed=4294967296"], ["seed:", "less than 4294967296"]),
    "negative-dataset-seed": ({}, ["data.name=synthetic", "data.seed=-1"],
                              ["data.seed:", "greater than or equal to 0"]),
    "dataset-plugin-fails": ({}, ["data.name=synthetic", "data.n=100000000000000", "data.d=1"],
                             ["data (synthetic): the dataset failed to load: MemoryError"]),
    "unavailable-backend": ({}, ["backend=cupy"], ["backend: backend 'cupy' is unavailable"]),
    "unknown-backend": ({}, ["backend=tpu"], ["unknown backend 'tpu'", "numpy"]),
    "unusable-device": ({}, ["backend=numpy", "device=npu"],
                        ["device: backend 'numpy' has no device 'npu'"]),
    "accelerator-on-cpu-backend": ({}, ["backend=numpy", "device=tpu"],
                                   ["device: backend 'numpy' runs on the CPU, not 'tpu'"]),
    "gpu-device-on-cpu-backend": ({}, ["backend=numpy", "device=cuda:0"],
                                  ["device:", "runs on the CPU"]),
    "duplicate-header": (_file("d.csv", GOOD_CSV.replace("a,b,", "a,a,", 1)),
                         [*FILE_DATA, "data.path=d.csv"],
                         ["d.csv:1: column name(s) 'a' appear more than once"]),
    "duplicate-label-header": (_file("d.csv", GOOD_CSV.replace("a,b,", "label,b,", 1)),
                               [*FILE_DATA, "data.path=d.csv"],
                               ["d.csv:1: column name(s) 'label' appear more than once"]),
    "empty-label": (_file("d.csv", GOOD_CSV + "1,2,\n"), [*FILE_DATA, "data.path=d.csv"],
                    ["d.csv:42: empty label in column 'label'"]),
    "continuous-labels": (_file("d.csv", GOOD_CSV.replace(",1\n", ",0.5\n")),
                          [*FILE_DATA, "data.path=d.csv"], ["labels look continuous"]),
    "continuous-npz-labels": ({"d.npz": _npz(X=np.ones((20, 2)), y=np.linspace(0, 1, 20))},
                              ["data.name=file", "data.path=d.npz"],
                              ["labels look continuous", "integers or strings"]),
    "label-beyond-int64": (_file("d.csv", GOOD_CSV + "1,2,99999999999999999999\n"),
                           [*FILE_DATA, "data.path=d.csv"],
                           ["label 1e+20 is too large for a class number"]),
    "label-integral-float-beyond-int64": (_file("d.csv", GOOD_CSV + "1,2,1e30\n"),
                                          [*FILE_DATA, "data.path=d.csv"],
                                          ["label 1e+30 is too large for a class number"]),
    "complex-labels": ({"d.npz": _npz(X=np.ones((20, 2)), y=(np.arange(20) % 2) + 0j)},
                       ["data.name=file", "data.path=d.npz"],
                       ["d.npz: labels must be integers or strings, got dtype complex128"]),
    "long-double-beyond-float64": (
        {"d.npz": _npz(X=np.full((20, 2), np.longdouble(10) ** 4000), y=np.arange(20) % 2)},
        ["data.name=file", "data.path=d.npz"], ["d.npz: X has 40 NaN/inf value(s)"]),
    "one-row-class": (_file("d.csv", GOOD_CSV + "1,2,7\n"), [*FILE_DATA, "data.path=d.csv"],
                      ["class(es) 7 (1); each needs at least 3 rows"]),
    # NaN/inf are no numbers a run can use
    "inf-lr": ({}, ["optimizer.lr=.inf"], ["optimizer.lr: Input should be a finite number"]),
    "inf-l2": ({}, ["model.l2=.inf"], ["model.l2: Input should be a finite number"]),
    "nan-init-scale": ({}, ["model.init_scale=.nan"], ["model.init_scale:", "finite number"]),
    "inf-clip": ({}, ["clip_grad_norm=.inf"], ["clip_grad_norm:", "finite number"]),
    "inf-schedule-option": ({}, ["schedule.name=step", "schedule.gamma=.inf"],
                            ["schedule.gamma:", "finite number"]),
    # booleans and numbers are not each other
    "bool-epochs": ({}, ["epochs=true"], ["epochs: expected a number, got true"]),
    "bool-lr": ({}, ["optimizer.lr=false"], ["optimizer.lr: expected a number, got false"]),
    "int-flag": ({}, ["data.standardize=1"], ["data.standardize: expected true or false"]),
    "duplicate-key": (_file("c.yaml", "epochs: 2\noptimizer:\n  lr: 0.1\n  lr: 0.2\n"),
                      ["c.yaml"], ["c.yaml:4:3:", "key 'lr' is given twice"]),
    "duplicate-section": (_file("c.yaml", "model:\n  l2: 0\nepochs: 2\nmodel:\n  C: 1\n"),
                          ["c.yaml"], ["c.yaml:4:1:", "key 'model' is given twice"]),
    "nesterov-without-momentum": ({}, ["optimizer.momentum=0", "optimizer.nesterov=true"],
                                  ["optimizer: nesterov needs momentum > 0"]),
    "fractions-sum-to-1": ({}, ["data.val_fraction=0.5", "data.test_fraction=0.5"],
                           ["data: data.val_fraction + data.test_fraction must be below 1",
                            "0.5 + 0.5"]),
    "unknown-data-key": ({}, ["data.name=iris", "data.val_fractoin=0.1"],
                         ["data.val_fractoin: unknown key; allowed: standardize, "
                          "test_fraction, val_fraction"]),
    # values YAML cannot build, and YAML that is too big: one line, no traceback
    "yaml-impossible-date": (_file("c.yaml", "epochs: 2001-13-45\n"), ["c.yaml"],
                             ["epochs:", "valid integer", "'2001-13-45'"]),
    "override-impossible-date": ({}, ["epochs=2001-13-45"], ["epochs:", "'2001-13-45'"]),
    "yaml-date-as-output-of-bad-run": (_file("c.yaml", "output: 2024-02-30\nepochs: 0\n"),
                                       ["c.yaml"], ["epochs:", "greater than or equal to 1"]),
    "yaml-int-tag-on-text": (_file("c.yaml", "epochs: !!int abc\n"), ["c.yaml"],
                             ["c.yaml:1:9: malformed YAML: cannot read int value", "'abc'"]),
    "override-int-tag-on-text": ({}, ["epochs=!!int abc"], ["epochs:", "'!!int abc'"]),
    "yaml-5000-digit-int": (_file("c.yaml", "epochs: " + "9" * 5000 + "\n"), ["c.yaml"],
                            ["c.yaml:1:9: malformed YAML: cannot read int value",
                             "4300 digits"]),
    "yaml-4000-digit-int": (_file("c.yaml", "epochs: " + "9" * 4000 + "\n"), ["c.yaml"],
                            ["epochs: Input should be less than or equal to 1000000",
                             "got an integer of 4000 digits"]),
    "yaml-24000-digit-hex-int": (_file("c.yaml", "seed: 0x" + "f" * 20000 + "\n"), ["c.yaml"],
                                 ["seed:", "got an integer of about 24083 digits"]),
    "override-5000-digit-int": ({}, ["epochs=" + "9" * 5000], ["epochs:", "..."]),
    "yaml-bad-timestamp-tag": (_file("c.yaml", "output: !!timestamp 2001-13-45\n"), ["c.yaml"],
                               ["c.yaml:1:9:", "cannot read timestamp value", "month"]),
    "yaml-bad-bool-tag": (_file("c.yaml", "data:\n  standardize: !!bool maybe\n"), ["c.yaml"],
                          ["c.yaml:2:16:", "cannot read bool value"]),
    "yaml-bad-float-tag": (_file("c.yaml", "model:\n  l2: !!float x\n"), ["c.yaml"],
                           ["c.yaml:2:7:", "cannot read float value"]),
    "config-too-large": (_file("c.yaml", "foo: [" + "1," * 1_100_000 + "]\n"), ["c.yaml"],
                         ["c.yaml: the config is 2.1 MiB; at most 1.0 MiB is read"]),
    "config-too-many-values": (_file("c.yaml", "epochs: 1\nfoo:\n" + "- 1\n" * 20_000),
                               ["c.yaml"], ["c.yaml:9998:3:", "more than 10,000 values"]),
    "config-not-utf8": (_file("c.yaml", b"epochs: 1\n\xff\xfe\n"), ["c.yaml"],
                        ["c.yaml: cannot read: not UTF-8 text (byte 10)"]),
    "nul-in-a-path": (_file("c.yaml", 'data:\n  name: file\n  path: "d\\0.csv"\n'),
                      ["c.yaml"], ["data.path: contains a NUL character"]),
    "nul-in-an-override": ({}, ["device=cp\0u"], ["device: contains a NUL character"]),
    # special files: refused at once, never read (a FIFO would block, a device never ends)
    "config-is-a-fifo": ({"c.yaml": FIFO}, ["c.yaml"],
                         ["c.yaml: is a FIFO (named pipe), expected a YAML file"]),
    "config-is-a-device": ({"c.yaml": Link("/dev/zero")}, ["c.yaml"],
                           ["c.yaml: is a character device"]),
    "data-is-a-fifo": ({"d.csv": FIFO}, [*FILE_DATA, "data.path=d.csv"],
                       ["d.csv: is a FIFO (named pipe), expected a data file"]),
    "npz-data-is-a-fifo": ({"d.npz": FIFO}, ["data.name=file", "data.path=d.npz"],
                           ["d.npz: is a FIFO"]),
    "labels-are-a-fifo": ({"X.npy": _npy(np.ones((10, 2))), "y.npy": FIFO},
                          ["data.name=file", "data.path=X.npy", "data.labels=y.npy"],
                          ["y.npy: is a FIFO"]),
    "data-is-a-device": ({"d.csv": Link("/dev/zero")}, [*FILE_DATA, "data.path=d.csv"],
                         ["d.csv: is a character device"]),
    # sizes declared in a header are checked against the bytes really there
    "npy-header-declares-1e13-rows": ({"X.npy": _npy_declaring((10**13, 2)),
                                       "y.npy": _npy(np.arange(4) % 2)},
                                      ["data.name=file", "data.path=X.npy", "data.labels=y.npy"],
                                      ["X.npy: corrupted or unreadable .npy file",
                                       "declares shape (10000000000000, 2)", "holds 32 bytes"]),
    "npz-entry-declares-1e13-rows": ({"d.npz": _zip(X=_npy_declaring((10**13, 2)),
                                                    y=_npy(np.arange(4) % 2))},
                                     ["data.name=file", "data.path=d.npz"],
                                     ["d.npz: corrupted .npz file: entry 'X.npy'",
                                      "declares shape (10000000000000, 2)"]),
    "npy-header-garbage": ({"X.npy": _npy(np.ones((4, 2))).replace(b"'descr'", b"'descr("),
                            "y.npy": _npy(np.arange(4) % 2)},
                           ["data.name=file", "data.path=X.npy", "data.labels=y.npy"],
                           ["X.npy: corrupted or unreadable .npy file"]),
    # values whose standardisation or logits would overflow: refused, naming the column
    "feature-1e200": (_file("d.csv", BIG_CSV), [*FILE_DATA, "data.path=d.csv"],
                      ["d.csv: column 'a' holds 1e+200 (row 39)"]),
    "feature-1e308": (_file("d.csv", BIG_CSV.replace("1e200", "1e308")),
                      [*FILE_DATA, "data.path=d.csv"], ["d.csv: column 'a' holds 1e+308",
                                                        "overflow"]),
    "feature-1e160-standardised": (_file("d.csv", BIG_CSV.replace("1e200", "1e160")),
                                   [*FILE_DATA, "data.path=d.csv"],
                                   ["d.csv: column 'a' holds 1e+160",
                                    "standardising it overflows float64"]),
    "feature-too-large-for-float32": (
        _file("d.csv", BIG_CSV.replace("1e200", "3e30")),
        [*FILE_DATA, "data.path=d.csv", "data.standardize=false"],
        ["d.csv: column 'a' holds 3e+30 (row 39), too large for float32 training",
         "|x| must stay below 1.8e+19", "data.standardize: true"]),
    "feature-too-large-for-float64": (
        {"d.npz": _npz(X=np.c_[np.arange(40.0), np.r_[np.ones(39), 1e300]],
                       y=np.arange(40) % 2)},
        ["data.name=file", "data.path=d.npz", "data.standardize=false", "dtype=float64"],
        ["d.npz: column 1 holds 1e+300 (row 39), too large for float64 training"]),
    # --overwrite replaces run folders only: a project folder with a config.yaml is safe
    "overwrite-project-folder": ({"out/config.yaml": "x: 1\n", "out/src/main.py": "important"},
                                 ["data.name=iris", "epochs=1", "--overwrite"],
                                 ["out: not an smx run folder (holds src)", "refusing"]),
    "overwrite-folder-with-other-files": (
        {"out/config.yaml": "x: 1\n", "out/model.npz": "", "out/notes.txt": "mine"},
        ["data.name=iris", "epochs=1", "--overwrite"], ["out: not an smx run folder (holds "
                                                        "notes.txt)"]),
    "overwrite-folder-without-config": ({"out/model.npz": ""},
                                        ["data.name=iris", "epochs=1", "--overwrite"],
                                        ["out: not an smx run folder (has no config.yaml)"]),
    "overwrite-keeps-a-file-named-like-a-temporary": (
        {"out/config.yaml": "x: 1\n", "out/.model.npz.my-notes": "mine"},
        ["data.name=iris", "epochs=1", "--overwrite"],
        ["out: not an smx run folder (holds .model.npz.my-notes)"]),
    "bad-data-with-overwrite-keeps-the-old-run": (
        {"out/config.yaml": "x: 1\n", "out/model.npz": "good", "d.csv": BIG_CSV},
        [*FILE_DATA, "data.path=d.csv", "--overwrite"], ["d.csv: column 'a' holds 1e+200"]),
}


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    import os

    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is FIFO:
            os.mkfifo(path)
        elif isinstance(content, Link):
            path.symlink_to(content.target)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize(("files", "args", "needles"), list(RUN_CASES.values()),
                         ids=list(RUN_CASES))
def test_bad_run_input(files, args, needles, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, files)
    before = snapshot(tmp_path)
    code, _, err = cli(["run", *args, "output=out", "--quiet"], capsys)
    check_error(code, err, needles)
    assert snapshot(tmp_path) == before  # no run folder, nothing else


PREDICT_CASES = {
    "corrupted-model": ({"m.npz": b"PK\x03\x04" + b"\x00" * 64}, ["m.npz", "X.npy"],
                        ["m.npz: corrupted or truncated model file"]),
    "truncated-model": ({"m.npz": MODEL[: len(MODEL) // 2]}, ["m.npz", "X.npy"],
                        ["m.npz: corrupted or truncated model file"]),
    "not-a-model": ({"m.npz": _npy(np.ones(3))}, ["m.npz", "X.npy"],
                    ["m.npz: not an smx model file"]),
    "model-is-a-folder": ({"m.npz/x": ""}, ["m.npz", "X.npy"], ["m.npz: is a directory"]),
    "missing-model": ({}, ["m.npz", "X.npy"], ["m.npz: model file not found"]),
    "feature-mismatch": ({"m.npz": MODEL}, ["m.npz", "X5.npy"],
                         ["X5.npy: the model expects 2 features, the data has 5"]),
    "nan-at-predict": ({"m.npz": MODEL}, ["m.npz", "Xnan.npy"],
                       ["Xnan.npy: X has 1 NaN/inf value(s)", "first at row 1"]),
    "string-weights": ({"m.npz": _model_bytes(W=np.full((2, 2), "x"))}, ["m.npz", "X.npy"],
                       ["m.npz: W must hold floats, got dtype <U1"]),
    "nan-weights": ({"m.npz": _model_bytes(W=np.full((2, 2), np.nan))}, ["m.npz", "X.npy"],
                    ["m.npz: W contains NaN/inf"]),
    "inf-mean": ({"m.npz": _model_bytes(mean=np.array([0.0, np.inf]))}, ["m.npz", "X.npy"],
                 ["m.npz: mean contains NaN/inf"]),
    "zero-scale": ({"m.npz": _model_bytes(scale=np.array([1.0, 0.0]))}, ["m.npz", "X.npy"],
                   ["m.npz: scale must be positive"]),
    "label-column-left-in": ({"m.npz": MODEL, "d.csv": "a,b,y\n1,2,0\n"}, ["m.npz", "d.csv"],
                             ["d.csv: the model expects 2 features, the data has 3",
                              "pass --label-column"]),
    "output-in-missing-folder": ({"m.npz": MODEL}, ["m.npz", "X.npy", "-o", "nodir/p.csv"],
                                 ["nodir/p.csv: folder 'nodir' does not exist"]),
    "output-is-a-folder": ({"m.npz": MODEL, "outdir/x": ""}, ["m.npz", "X.npy", "-o", "outdir"],
                           ["outdir: is a folder"]),
    "output-is-a-fifo": ({"m.npz": MODEL, "p.csv": FIFO}, ["m.npz", "X.npy", "-o", "p.csv"],
                         ["p.csv: exists and is not a regular file"]),
    # model files: every way one can be damaged is one line; a changed byte never loads
    "model-is-a-fifo": ({"m.npz": FIFO}, ["m.npz", "X.npy"],
                        ["m.npz: is a FIFO (named pipe), expected an smx model file"]),
    "model-is-a-device": ({"m.npz": Link("/dev/zero")}, ["m.npz", "X.npy"],
                          ["m.npz: is a character device"]),
    "model-tampered-with-checksum": (
        {"m.npz": _model_entries(W=_npy(np.ones((2, 2))))}, ["m.npz", "X.npy"],
        ["m.npz: model file checksum mismatch"]),
    "model-intercept-renamed": (
        {"m.npz": _model_entries(b=None, c=_npy(np.zeros(2)))}, ["m.npz", "X.npy"],
        ["m.npz: not an smx model file (unexpected entries: c)"]),
    "model-entry-not-npy": ({"m.npz": _model_entries(**{"notes.txt": b"hi"})},
                            ["m.npz", "X.npy"], ["m.npz: unexpected entry 'notes.txt'"]),
    "model-without-meta": ({"m.npz": _model_entries(meta=None, sha256=None)},
                           ["m.npz", "X.npy"], ["m.npz: not an smx model file (missing: meta)"]),
    "model-meta-is-a-list": ({"m.npz": _model_bytes(meta=np.asarray("[1, 2]"))},
                             ["m.npz", "X.npy"], ["m.npz: meta must be a JSON object, got list"]),
    "model-meta-not-json": ({"m.npz": _model_bytes(meta=np.asarray("{oops"))},
                            ["m.npz", "X.npy"], ["m.npz: meta is not valid JSON"]),
    "model-meta-nested-deeply": ({"m.npz": _model_bytes(meta=np.asarray("[" * 100_000))},
                                 ["m.npz", "X.npy"], ["m.npz: meta is not valid JSON"]),
    "model-zero-classes": ({"m.npz": _model_bytes(W=np.zeros((2, 0)), b=np.zeros(0),
                                                  classes=np.zeros(0, dtype=np.int64))},
                           ["m.npz", "X.npy"], ["m.npz: the model has 2 feature(s) and 0 "
                                                "class(es)"]),
    "model-duplicate-classes": ({"m.npz": _model_bytes(classes=np.array([1, 1]))},
                                ["m.npz", "X.npy"], ["m.npz: classes must be 2 distinct"]),
    "model-W-declares-1e13-elements": (
        {"m.npz": _model_entries(W=_npy_declaring((10**13, 2)), sha256=None)},
        ["m.npz", "X.npy"], ["m.npz: corrupted model file: entry 'W.npy'",
                             "declares shape (10000000000000, 2)"]),
    "model-zip-version-unsupported": (
        # "version needed to extract" 25.5: zipfile raises NotImplementedError
        {"m.npz": MODEL.replace(b"PK\x01\x02-\x03-\x00", b"PK\x01\x02-\x03\xff\x00", 1)},
        ["m.npz", "X.npy"], ["m.npz: corrupted or truncated model file",
                             "NotImplementedError: zip file version"]),
    "model-directory-cut-short": ({"m.npz": MODEL[:-30]}, ["m.npz", "X.npy"],
                                  ["m.npz: corrupted or truncated model file"]),
    # data at prediction time: special files, headerless CSVs, overflowing values
    "data-is-a-fifo-at-predict": ({"m.npz": MODEL, "d.csv": FIFO}, ["m.npz", "d.csv"],
                                  ["d.csv: is a FIFO"]),
    "headerless-csv-model-without-names": ({"m.npz": MODEL, "d.csv": HEADERLESS},
                                           ["m.npz", "d.csv"],
                                           ["d.csv: the first row (1.5, 2) is all numbers",
                                            "--no-header"]),
    "headerless-csv-with-a-label": ({"m.npz": MODEL, "d.csv": "1,2,0\n3,4,1\n"},
                                    ["m.npz", "d.csv", "--no-header"],
                                    ["d.csv: the model expects 2 features, the data has 3",
                                     "the file has no header"]),
    "huge-value-at-predict": ({"m.npz": MODEL, "d.csv": "a,b\n1,1e308\n"},
                              ["m.npz", "d.csv"], ["d.csv: column 1 holds 1e+308 (row 0)"]),
    "logits-overflow-at-predict": ({"m.npz": _model_bytes(W=np.full((2, 2), 1e300)),
                                    "d.csv": "a,b\n1e100,-1e100\n"},
                                   ["m.npz", "d.csv"], ["d.csv: row 0: the logits overflow"]),
}


@pytest.mark.parametrize(("files", "args", "needles"), list(PREDICT_CASES.values()),
                         ids=list(PREDICT_CASES))
def test_bad_predict_input(files, args, needles, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    xnan = np.ones((3, 2))
    xnan[1, 1] = np.nan
    _write(tmp_path, {"X.npy": _npy(np.ones((3, 2))), "X5.npy": _npy(np.ones((3, 5))),
                      "Xnan.npy": _npy(xnan), **files})
    before = snapshot(tmp_path)
    code, out, err = cli(["predict", *args, *([] if "-o" in args else ["-o", "pred.csv"])],
                         capsys)
    check_error(code, err, needles)
    assert snapshot(tmp_path) == before and out == ""


def test_good_predict_input_works(tmp_path, monkeypatch, capsys):
    """The fixtures above are right except for the one thing each case breaks."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"m.npz": MODEL, "X.npy": _npy(np.ones((3, 2)))})
    code, _, err = cli(["predict", "m.npz", "X.npy", "-o", "pred.csv"], capsys)
    assert code == 0, err
    assert (tmp_path / "pred.csv").read_text().splitlines()[0] == "prediction"


def test_predict_drops_the_training_label_column(tmp_path, monkeypatch, capsys):
    """A CSV like the training file, label column and all, predicts without --label-column;
    one without that column too."""
    monkeypatch.chdir(tmp_path)
    fitted = FittedModel(np.array([[1.0, -1.0], [0.0, 0.0]]), np.zeros(2), np.array([3, 5]),
                         Standardizer.identity(2), {"label_column": "label"})
    fitted.save(tmp_path / "m.npz")
    _write(tmp_path, {"with.csv": "a,label,b\n1,5,0\n-1,3,0\n", "without.csv": "a,b\n1,0\n"})
    for name, expected in [("with.csv", ["3", "5"]), ("without.csv", ["3"])]:
        code, out, err = cli(["predict", "m.npz", name], capsys)
        assert code == 0, err
        assert out.splitlines() == ["prediction", *expected]


@pytest.mark.parametrize("target", ["config", "data"])
def test_unreadable_file(target, tmp_path, monkeypatch, capsys):
    """Tests run as root, so chmod 000 would not stop a read: simulate EACCES instead."""
    import os

    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"c.yaml": "epochs: 2\n", "d.csv": GOOD_CSV})
    locked = tmp_path / ("c.yaml" if target == "config" else "d.csv")
    real_open = os.open

    def guarded(path, *args, **kwargs):
        if Path(path).resolve() == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    before = snapshot(tmp_path)
    monkeypatch.setattr(os, "open", guarded)
    code, _, err = cli(["run", "c.yaml", *FILE_DATA, "data.path=d.csv", "output=out",
                        "--quiet"], capsys)
    check_error(code, err, [locked.name, "cannot read", "Permission denied"])
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


BROKEN_OPTIMIZER = '''
    import smx
    from smx.optimizers.sgd import sgd

    @smx.hookimpl
    def smx_optimizers():
        yield smx.OptimizerSpec(name="lion", factory=sgd)

    raise ImportError("lion needs a library that is not installed")
'''


@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    site = install_fake_dist(tmp_path / "site", "smx-lion", "0.3", {"smx_lion": BROKEN_OPTIMIZER},
                             {"lion": "smx_lion"})
    monkeypatch.syspath_prepend(str(site))
    get_plugins.cache_clear()
    yield
    get_plugins.cache_clear()


def test_plugin_raising_on_import_is_a_warning_and_the_run_goes_on(
        broken_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", "data.name=iris", "epochs=1", "output=out", "--quiet"], capsys)
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if ln.startswith("smx: warning:")]
    assert len(warning) == 1 and "plugin 'lion' (smx-lion 0.3) failed to import" in warning[0]
    assert "lion needs a library" in warning[0] and "Traceback" not in err
    assert (tmp_path / "out" / "model.npz").exists()


def test_unknown_name_mentions_the_broken_plugin(broken_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", "optimizer.name=lion", "output=out", "--quiet"], capsys)
    check_error(code, err, ["optimizer.name: unknown optimizer 'lion'; valid: ", "sgd",
                            "failed to load", "plugin 'lion' (smx-lion 0.3",
                            "lion needs a library"])
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


# --- resume and the run folder ---------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small finished run folder, built once; tests copy it."""
    from smx.config import load_config
    from smx.runner import run

    root = tmp_path_factory.mktemp("finished")
    cfg = load_config({"data": {"name": "iris"}, "epochs": 2, "output": str(root / "out")})
    run(cfg, progress=False)
    return root / "out"


@pytest.fixture
def run_copy(finished_run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(finished_run, tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "out"


def _corrupt_checkpoint(folder: Path) -> None:
    """One flipped bit in the parameters' bytes, the zip rewritten with fresh CRCs."""
    import zipfile

    path = folder / "checkpoint.npz"
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    data = bytearray(entries["a0.npy"])
    data[-1] ^= 0x01
    entries["a0.npy"] = bytes(data)
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in entries.items():
            zf.writestr(name, content)


def _flip_byte(folder: Path) -> None:
    data = bytearray((folder / "checkpoint.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (folder / "checkpoint.npz").write_bytes(bytes(data))


RESUME_CASES = {
    "tampered-checkpoint": (_corrupt_checkpoint, ["--resume", "out"],
                            ["out/checkpoint.npz: checkpoint checksum mismatch"]),
    "bit-flipped-checkpoint": (_flip_byte, ["--resume", "out"],
                               ["out/checkpoint.npz:", "corrupted"]),
    "checkpoint-is-an-array": (lambda f: (f / "checkpoint.npz").write_bytes(_npy(np.ones(2))),
                               ["--resume", "out"], ["out/checkpoint.npz: not an smx checkpoint"]),
    "truncated-checkpoint": (
        lambda f: (f / "checkpoint.npz").write_bytes((f / "checkpoint.npz").read_bytes()[:300]),
        ["--resume", "out"], ["out/checkpoint.npz: corrupted or truncated checkpoint"]),
    "no-checkpoint": (lambda f: (f / "checkpoint.npz").unlink(), ["--resume", "out"],
                      ["out/checkpoint.npz: no checkpoint here"]),
    "edited-config": (lambda f: (f / "config.yaml").write_text(
        (f / "config.yaml").read_text().replace("epochs: 2", "epochs: 3")),
        ["--resume", "out"], ["config.yaml was changed after the checkpoint"]),
    "no-such-folder": (lambda f: None, ["--resume", "elsewhere"],
                       ["elsewhere: no such run folder to resume"]),
    "resume-a-file": (lambda f: (f / "config.yaml").rename(f.parent / "c.yaml"),
                      ["--resume", "c.yaml"], ["c.yaml: not a folder"]),
    "not-a-run-folder": (lambda f: (f / "config.yaml").unlink(), ["--resume", "out"],
                         ["out: not an smx run folder"]),
    "resume-with-overwrite": (lambda f: None, ["--resume", "out", "--overwrite"],
                              ["--resume:", "no config, overrides or --overwrite"]),
    "resume-with-overrides": (lambda f: None, ["epochs=9", "--resume", "out"],
                              ["--resume:", "no config, overrides or --overwrite"]),
    "existing-folder": (lambda f: None, ["data.name=iris", "output=out"],
                        ["out: run folder already exists; pass --overwrite"]),
}


@pytest.mark.parametrize(("damage", "args", "needles"), list(RESUME_CASES.values()),
                         ids=list(RESUME_CASES))
def test_bad_resume_leaves_the_folder_unchanged(damage, args, needles, run_copy, capsys):
    damage(run_copy)
    before = snapshot(run_copy.parent)
    code, _, err = cli(["run", *args, "--quiet"], capsys)
    check_error(code, err, needles)
    assert snapshot(run_copy.parent) == before


def test_resume_of_a_finished_run_changes_nothing_that_matters(run_copy, capsys):
    before = snapshot(run_copy)
    code, out, err = cli(["run", "--resume", "out", "--quiet"], capsys)
    assert code == 0, err and "test accuracy" in out
    after = snapshot(run_copy)
    for name in ("config.yaml", "metrics.jsonl", "model.npz", "checkpoint.npz"):
        assert after[name] == before[name], name


def test_overwrite_replaces_a_run_folder(run_copy, capsys):
    """A finished run folder (with a leftover temporary file) is replaced by --overwrite."""
    (run_copy / ".summary.json.abc.tmp").write_text("{")
    code, _, err = cli(["run", "data.name=iris", "epochs=1", "output=out", "--overwrite",
                        "--quiet"], capsys)
    assert code == 0, err
    assert not (run_copy / ".summary.json.abc.tmp").exists()
    assert sorted(p.name for p in run_copy.iterdir()) == sorted(
        ["checkpoint.npz", "config.yaml", "loss.png", "metrics.jsonl", "model.npz",
         "summary.json"])


def test_an_os_error_while_writing_is_one_line(tmp_path, monkeypatch, capsys):
    """A disk filling up mid-run: one line naming the file, exit 2, no traceback."""
    import errno

    import smx.runner

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(smx.runner, "atomic_write_text", full)
    code, _, err = cli(["run", "data.name=iris", "epochs=1", "output=out", "--quiet"], capsys)
    check_error(code, err, ["smx: error: out/config.yaml: No space left on device"])


@pytest.mark.parametrize(("command", "hint"), [("run", True), ("predict", False)])
def test_interrupt_suggests_resume_only_for_run(command, hint, monkeypatch, capsys):
    import smx.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(smx.cli, f"cmd_{command}", interrupted)
    code = main([command] + (["m.npz", "X.npy"] if command == "predict" else []))
    err = capsys.readouterr().err
    assert code == 130 and err.startswith("smx: interrupted")
    assert ("--resume" in err) is hint


def test_a_warning_never_precedes_the_error_line(tmp_path):
    """NumPy's overflow warning (float32 cannot hold the initial weights) was printed
    before the error; now the setting is refused, and any warning a failing command
    raises is held back (the test runs with -W error, as every CLI test does)."""
    proc = run_smx("run", "data.name=iris", "model.init_scale=1e300", "dtype=float32",
                   f"output={tmp_path / 'out'}", "-q", cwd=tmp_path)
    line = assert_one_line_error(proc, "model.init_scale", "float32")
    assert proc.stderr.strip() == line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fail", [True, False])
def test_a_failing_command_holds_its_warnings_and_a_passing_one_shows_them(
        fail, capsys, monkeypatch):
    """The CLI's own handling, in process: held warnings go with an error (whose line names
    the cause), and are shown once after a command that succeeds."""
    import warnings

    from smx import cli

    def command(args):
        for _ in range(3):
            warnings.warn("a symptom", RuntimeWarning, stacklevel=1)
        if fail:
            raise DataError("the cause", where="data")
        return 0

    monkeypatch.setattr(cli, "cmd_configs", command)
    code = main(["configs"])
    err = capsys.readouterr().err
    if fail:
        assert code == 2 and err.strip() == "smx: error: data: the cause"
    else:
        assert code == 0 and err.count("RuntimeWarning: a symptom") == 1
