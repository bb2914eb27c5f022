"""The dataset rules: what ``DatasetSpec.load`` must return for smx to split and train on it.

The loader is called with its params model's defaults (or the params a
:func:`~smx.testing.with_params` wrapper gives, e.g. a ``path``), the way a config's
``data:`` section calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from smx.testing.contract import Kind, fail, forbids_unknown_keys, skip
from smx.types import DatasetSpec

KIND = Kind("dataset", accepts=lambda obj: isinstance(obj, DatasetSpec),
            label=lambda spec: spec.name)


def options(spec: DatasetSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The validated keywords ``load`` gets; a loader with required options is skipped
    when none are given."""
    from pydantic import ValidationError

    try:
        return spec.params.model_validate(dict(params)).model_dump()
    except ValidationError as exc:
        missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
        if params or not missing:
            raise
        skip(f"the dataset needs options to load ({', '.join(missing)}); test it with "
             f"smx.testing.with_params(spec, {missing[0]}=...)")
    raise AssertionError("unreachable")


def load(spec: DatasetSpec, params: Mapping[str, Any]) -> tuple[Any, ...]:
    """One call of ``load``; in-memory results only (a partitioned source is skipped)."""
    got = spec.load(**options(spec, params))
    if not isinstance(got, tuple | list):
        from smx.datasets.sources import Partitioned

        if isinstance(got, Partitioned):
            skip("the dataset returns a partitioned source; the kit checks in-memory datasets")
        fail("load(**options)", expected="a tuple (X, y) or (X, y, sample_weight)",
             got=type(got).__name__)
    return tuple(got)


@KIND.rule("params-forbid-unknown-keys", gated=False)
def params_forbid_unknown(spec: DatasetSpec, params: Mapping[str, Any]) -> None:
    """The params model refuses a key it does not define: a misspelt option in a config's
    `data:` section must be an error, not silently ignored."""
    forbids_unknown_keys(spec.params, params)


@KIND.rule("returns-arrays")
def returns_arrays(spec: DatasetSpec, params: Mapping[str, Any]) -> None:
    """`load(**options)` returns a 2-D float X, 1-D labels of the same length and,
    optionally, 1-D per-row sample weights: what smx's split and standardisation take."""
    got = load(spec, params)
    if len(got) not in (2, 3):
        fail("load()'s result", expected="(X, y) or (X, y, sample_weight)",
             got=f"a tuple of {len(got)}")
    X, y = np.asarray(got[0]), np.asarray(got[1])
    if X.ndim != 2 or X.dtype.kind != "f":
        fail("X", expected="a 2-D float array", got=f"{X.ndim}-D {X.dtype}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        fail("y", expected=f"a 1-D array of {X.shape[0]} labels", got=f"shape {y.shape}")
    if len(got) == 3 and got[2] is not None:
        w = np.asarray(got[2])
        if w.shape != y.shape or w.dtype.kind not in "fiu":
            fail("sample_weight", expected=f"{y.shape[0]} numbers",
                 got=f"shape {w.shape} {w.dtype}")


@KIND.rule("values-are-finite")
def values_finite(spec: DatasetSpec, params: Mapping[str, Any]) -> None:
    """X holds no NaN or inf and sample weights are finite and non-negative: one NaN
    feature makes every loss and gradient NaN from the first step on."""
    got = load(spec, params)
    X = np.asarray(got[0], dtype=np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        fail("X", expected="finite values", got=f"{int(bad.sum())} NaN/inf, the first at "
             f"{list(where)}")
    if len(got) == 3 and got[2] is not None:
        w = np.asarray(got[2], dtype=np.float64)
        if not (np.isfinite(w).all() and (w >= 0).all()):
            fail("sample_weight", expected="finite weights >= 0",
                 got=f"min {np.nanmin(w)!r}, {int((~np.isfinite(w)).sum())} NaN/inf")


@KIND.rule("has-two-classes")
def two_classes(spec: DatasetSpec, params: Mapping[str, Any]) -> None:
    """The labels hold at least two classes: softmax regression on one class has nothing
    to learn, and smx refuses it."""
    y = np.asarray(load(spec, params)[1])
    found = np.unique(y)
    if found.size < 2:
        fail("the labels", expected="at least 2 classes", got=f"{found.tolist()[:3]}")


@KIND.rule("is-deterministic")
def deterministic(spec: DatasetSpec, params: Mapping[str, Any]) -> None:
    """Two loads with the same options return equal arrays: the run's seed decides the
    split, and a resumed run or a parity run on another backend must see the same data."""
    first, second = load(spec, params), load(spec, params)
    for name, a, b in zip(("X", "y", "sample_weight"), first, second, strict=False):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            fail(f"{name} of a second load", expected="equal to the first", got="different")


@KIND.rule("owned-means-fresh-arrays")
def owned(spec: DatasetSpec, params: Mapping[str, Any]) -> None:
    """A dataset declared `owned=True` returns new arrays each call: smx then standardises
    them in place, which must not change what the next load (another run in the same
    process) returns."""
    if not spec.owned:
        skip("declares owned=False: smx copies its arrays before changing them")
    first = load(spec, params)
    pristine = [np.array(a, copy=True) for a in first]
    for a in first:
        if isinstance(a, np.ndarray) and a.flags.writeable and a.dtype.kind in "fiu":
            a += 1
    second = load(spec, params)
    for name, a, b in zip(("X", "y", "sample_weight"), second, pristine, strict=False):
        if not np.array_equal(np.asarray(a), b):
            fail(f"{name} of a second load after the first was changed in place",
                 expected="the original values", got="the changed ones (shared memory)")


@KIND.rule("splits-and-trains")
def splits_and_trains(spec: DatasetSpec, params: Mapping[str, Any]) -> None:
    """smx loads it from a config's `data:` section, splits and standardises it, and
    trains one epoch on NumPy to a finite loss: the whole path a user's run takes."""
    from smx.config import load_config
    from smx.datasets.load import load_data
    from smx.plugins import Plugins
    from smx.testing.runs import dataset_name, plugins_with
    from smx.training import train

    load(spec, params)  # skips for what the other rules skip
    plugins = plugins_with(Plugins(entry_points=False), dataset=spec)
    cfg = load_config({"data": {"name": dataset_name(plugins, spec), **params}, "epochs": 1,
                       "batch_size": 16, "dtype": "float64"}, plugins=plugins)
    result = train(cfg, load_data(cfg, plugins), plugins.backend("numpy"), "cpu", plugins)
    loss = result.history[-1]["train_loss"]
    if loss is None or not np.isfinite(loss):
        fail("the training loss after one epoch", expected="a finite number", got=loss)
