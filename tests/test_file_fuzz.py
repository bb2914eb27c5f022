"""Fuzzing the file readers: any data file loads (and splits) or fails as one DataError line;
any model file loads as exactly the model that was saved or fails as one ModelFileError
line. (The config loader has its own fuzz in tests/test_config_fuzz.py.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smx.datasets.files import load_features
from smx.datasets.split import Standardizer, prepare
from smx.errors import DataError, ModelFileError, SmxError
from smx.modelfile import FittedModel, load_model

FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

# NumPy's overflow warnings are no way to report bad data: each one fails the test
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

GOOD_CSV = "a,b,label\n" + "".join(f"{i % 7}.5,{i % 3},{i % 2}\n" for i in range(30))


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD_NPZ = _npz(X=np.arange(60.0).reshape(30, 2), y=np.arange(30) % 3)
MODEL = FittedModel(np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]), np.array([0.1, 0.2, 0.3]),
                    np.array(["a", "b", "c"]), Standardizer(np.array([1.0, -1.0]),
                                                            np.array([2.0, 0.5])),
                    {"label_column": "label", "columns": ["a", "b"]})


def _model_bytes() -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        MODEL.save(Path(tmp) / "m.npz")
        return (Path(tmp) / "m.npz").read_bytes()


MODEL_BYTES = _model_bytes()


def one_line(exc: SmxError) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert "Traceback" not in message


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few flipped, inserted or deleted bytes, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "set" and out:
            out[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and out:
            del out[at:at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


csv_texts = st.one_of(
    st.text(max_size=200),
    mutated(GOOD_CSV.encode()).map(lambda b: b.decode("utf-8", "replace")),
    st.tuples(st.integers(0, len(GOOD_CSV)),
              st.sampled_from(["nan", "inf", "1e308", "-1e200", "1e30", ",", "\n", '"',
                               "99999999999999999999", "9" * 5000,
                               "\x00", "\ufeff", "x", "", "1_0", "0x10", " "])).map(
        lambda t: GOOD_CSV[: t[0]] + t[1] + GOOD_CSV[t[0]:]),
)


def _load_and_split(path, dtype: str = "float32", **kwargs) -> None:
    try:
        X, y = load_features(path, **kwargs)
        if y is not None:
            splits = prepare(X, y, val_fraction=0.15, test_fraction=0.15, seed=0,
                             dtype=dtype, columns=list(getattr(X, "columns", ())) or None)
            for part in (splits.X_train, splits.X_val, splits.X_test):
                assert np.isfinite(part).all()
                assert (np.abs(part) < np.sqrt(np.finfo(dtype).max)).all()
    except DataError as exc:
        one_line(exc)


@FUZZ
@given(text=csv_texts, dtype=st.sampled_from(["float32", "float64"]))
def test_any_csv_loads_or_fails_in_one_line(text, dtype, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load_and_split(path, dtype, label_column="label")


@FUZZ
@given(data=st.one_of(mutated(GOOD_NPZ), st.binary(max_size=300)))
def test_any_npz_loads_or_fails_in_one_line(data, tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(data)
    _load_and_split(path)


@FUZZ
@given(data=st.one_of(mutated(MODEL_BYTES), st.binary(max_size=300)))
def test_any_model_file_is_the_saved_model_or_one_line(data, tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(data)
    try:
        got = load_model(path)
    except ModelFileError as exc:
        one_line(exc)
        return
    assert got.meta == MODEL.meta
    for a, b in [(got.W, MODEL.W), (got.b, MODEL.b), (got.classes, MODEL.classes),
                 (got.standardizer.mean, MODEL.standardizer.mean),
                 (got.standardizer.scale, MODEL.standardizer.scale)]:
        assert a.dtype == b.dtype and np.array_equal(a, b)


@FUZZ
@given(text=csv_texts, header=st.sampled_from([None, True, False]))
def test_any_csv_predicts_every_row_or_fails_in_one_line(text, header, tmp_path):
    """Prediction data: all rows predicted (none lost to a guessed header) or one line."""
    path = tmp_path / "p.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        X, _ = load_features(path, label_column="label", label_required=False, header=header,
                             columns=MODEL.columns)
        proba = MODEL.predict_proba(X, where=str(path))
    except (DataError, ModelFileError) as exc:
        one_line(exc)
        return
    assert np.isfinite(proba).all()
    import csv

    with path.open(newline="", encoding="utf-8-sig") as fh:
        records = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    first_is_numbers = all(_is_number(c) for c in records[0])
    if header is False or (header is None and first_is_numbers and records[0] != ["a", "b"]):
        assert len(proba) == len(records)  # no row taken for a header
    else:
        assert len(proba) == len(records) - 1


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
