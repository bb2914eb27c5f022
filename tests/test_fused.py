"""The NumPy engine's fused SGD step against the portable step it replaces, and `shuffle`."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from smx.backends import numpy_fused
from smx.backends.numpy_backend import NumpyBackend
from smx.backends.numpy_pieces import GatheringStep
from smx.config import load_config
from smx.datasets.load import load_data
from smx.losses import CrossEntropy
from smx.objective import Objective
from smx.optimizers.adam import adam
from smx.optimizers.sgd import sgd
from smx.optimizers.transforms import apply_updates, chain, clip_by_global_norm
from smx.plugins import Plugins
from smx.step import TrainStep
from smx.training import Trainer, train
from smx.types import Block

PLUGINS = Plugins(entry_points=False)
needs_numba = pytest.mark.skipif(numpy_fused.numba_missing() is not None,
                                 reason=str(numpy_fused.numba_missing()))
SGD_SETTINGS = [{}, {"momentum": 0.9}, {"momentum": 0.8, "nesterov": True},
                {"momentum": 0.5, "weight_decay": 0.01}, {"weight_decay": 0.1}]
KERNEL = NumpyBackend().kernel(CrossEntropy())


def problem(dtype, weights, intercept, rng, n=53, d=7, k=4):
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, k, n)
    w = rng.uniform(0.0, 2.0, n).astype(dtype) if weights in ("sample", "both") else None
    cw = rng.uniform(0.5, 2.0, k).astype(dtype) if weights in ("class", "both") else None
    params = {"W": rng.normal(0, 0.1, (d, k)).astype(dtype)}
    if intercept:
        params["b"] = rng.normal(0, 0.1, k).astype(dtype)
    return Block(X, y, w), cw, params


@needs_numba
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=str)
@pytest.mark.parametrize("intercept", [True, False], ids=["b", "no-b"])
@pytest.mark.parametrize("weights", [None, "sample", "class", "both"])
def test_fused_step_equals_portable_step(dtype, settings, intercept, weights, rng):
    data, cw, params = problem(dtype, weights, intercept, rng)
    objective = Objective(CrossEntropy(), 0.01, class_weight=cw, kernel=KERNEL)
    portable = Objective(CrossEntropy(), 0.01, class_weight=cw)  # the Array API reference
    tx = sgd(lambda count: 0.1 / (1 + count), **settings)  # a schedule: the count in state
    fused = numpy_fused.fused_step(objective, tx, data)
    assert fused is not None
    initial = {k: v.copy() for k, v in params.items()}
    p1, s1 = params, tx.init(params)
    p2, s2 = params, s1
    for step in range(20):  # batches of 16 over 53 rows: every 4th is short (5 rows)
        idx = rng.permutation(data.n)[: 16 if step % 4 else 5]
        batch = Block(data.X[idx], data.y[idx], None if data.w is None else data.w[idx])
        loss1, grads = portable.finish(portable.partial(p1, batch), p1)
        updates, s1 = tx.update(grads, s1, p1)
        p1 = apply_updates(p1, updates)
        p2, s2, loss2 = fused(p2, s2, data, idx)
        tol = 1e-12 if dtype == "float64" else 2e-5
        assert float(loss2) == pytest.approx(float(loss1), rel=tol)
        assert np.asarray(loss2).dtype == np.dtype(dtype)
    for key in p1:
        np.testing.assert_allclose(p2[key], p1[key], rtol=tol, atol=tol)
        assert p2[key].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(params[key], initial[key])  # the caller's: untouched
    if settings.get("momentum"):
        buf1, buf2 = numpy_fused._find(s1, "buf"), numpy_fused._find(s2, "buf")
        for key in buf1:
            np.testing.assert_allclose(buf2[key], buf1[key], rtol=tol, atol=tol)


@needs_numba
def test_buffers_are_reused_across_steps(rng):
    """No per-step allocation of the big arrays: the step returns the same buffers each
    time (a structural check, not a timing), and copies in parameters it did not make."""
    data, _, params = problem("float64", None, True, rng)
    tx = sgd(0.1, momentum=0.9)
    fused = numpy_fused.fused_step(Objective(CrossEntropy(), kernel=KERNEL), tx, data)
    p, s, _ = fused(params, tx.init(params), data, np.arange(10))
    ids = {k: id(v) for k, v in p.items()}
    scratch = [id(a) for a in (fused.Wt, fused.gWt, fused.gb, fused.z)]
    buf = id(numpy_fused._find(s, "buf")["W"])
    for start in range(10, 50, 10):
        p, s, _ = fused(p, s, data, np.arange(start, start + 10))
    assert {k: id(v) for k, v in p.items()} == ids
    assert [id(a) for a in (fused.Wt, fused.gWt, fused.gb, fused.z)] == scratch
    assert id(numpy_fused._find(s, "buf")["W"]) == buf
    fresh = {k: v.copy() for k, v in p.items()}  # e.g. a checkpoint loaded back
    p2, _, _ = fused(fresh, s, data, np.arange(10))
    assert not np.shares_memory(p2["W"], fresh["W"])  # copied in, then its own again


@pytest.mark.parametrize("case", ["adam", "clip", "smoothing", "sparse", "custom-chain"])
def test_other_steps_fall_back_to_the_portable_step(case, rng):
    data, _, _ = problem("float64", None, True, rng)
    loss, tx = CrossEntropy(), sgd(0.1)
    if case == "adam":
        tx = adam(0.01)
    elif case == "clip":
        tx = chain(clip_by_global_norm(1.0), tx)
    elif case == "smoothing":
        loss = CrossEntropy(label_smoothing=0.1)
    elif case == "sparse":
        data = Block(sp.csr_matrix(data.X), data.y)
    else:
        tx = tx._replace(spec=None)  # a third-party chain says nothing about itself
    assert NumpyBackend().fused_step(TrainStep(Objective(loss), tx), data) is None


def test_sgd_spec_is_read_link_by_link():
    assert numpy_fused.sgd_settings(sgd(0.1).spec) == (0.0, 0.0, False, 0.1)
    assert numpy_fused.sgd_settings(sgd(0.1, 0.9, True, 0.01).spec) == (0.01, 0.9, True, 0.1)
    schedule = lambda count: 0.1 * count  # noqa: E731
    assert numpy_fused.sgd_settings(sgd(schedule).spec)[3] is schedule
    assert numpy_fused.sgd_settings(adam(0.1).spec) is None
    assert numpy_fused.sgd_settings(chain(clip_by_global_norm(1.0), sgd(0.1)).spec) is None


def run_cfg(backend, **over):
    cfg = load_config({"data": {"name": "synthetic", "n": 600, "k": 3},
                       "epochs": 3, "batch_size": 32, "dtype": "float64",
                       "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                       "backend": backend, **over}, plugins=PLUGINS)
    return train(cfg, load_data(cfg, PLUGINS), PLUGINS.backend(backend), "cpu", PLUGINS)


@needs_numba
@pytest.mark.parametrize("shuffle", ["rows", "batches"])
def test_trainer_fused_equals_portable_and_other_backends(shuffle):
    fused = run_cfg("numpy", shuffle=shuffle, backend_options={"fused": True})
    portable = run_cfg("numpy", shuffle=shuffle)
    strict = run_cfg("array-api-strict", shuffle=shuffle)
    for other in (portable, strict):
        np.testing.assert_allclose(fused.params["W"], other.params["W"], rtol=1e-10, atol=1e-12)
        assert [r["train_loss"] for r in fused.history] == pytest.approx(
            [r["train_loss"] for r in other.history], rel=1e-10)


def test_trainer_uses_the_fused_step_only_where_it_can():
    cfg = load_config({"data": {"name": "iris"}, "batch_size": 16,
                       "backend_options": {"fused": True}}, plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    trainer = Trainer(cfg, splits, NumpyBackend(), "cpu", PLUGINS)
    assert (trainer.fused_step is not None) == (numpy_fused.numba_missing() is None)
    cfg = load_config({"data": {"name": "iris"}, "batch_size": 16}, plugins=PLUGINS)
    # default: the portable step, its batch gathered piece by piece on the run's pool
    assert isinstance(Trainer(cfg, splits, NumpyBackend(), "cpu", PLUGINS).fused_step,
                      GatheringStep)


def test_shuffle_batches_keeps_batches_whole_and_shuffles_their_order():
    cfg = load_config({"data": {"name": "iris"}, "batch_size": 16, "shuffle": "batches"},
                      plugins=PLUGINS)
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), NumpyBackend(), "cpu", PLUGINS)
    n = trainer.train_data.n
    orders = []
    for _ in range(3):
        order, bounds = trainer.batch_order(n)
        assert sorted(order.tolist()) == list(range(n))
        assert [hi - lo for lo, hi in bounds].count(n % 16 or 16) >= 1
        for lo, hi in bounds:  # each batch: contiguous rows of the once-shuffled data
            chunk = order[lo:hi]
            assert chunk[0] % 16 == 0 and np.array_equal(chunk, np.arange(chunk[0], chunk[-1] + 1))
        orders.append([int(order[lo]) for lo, _ in bounds])
    assert orders[0] != orders[1] or orders[1] != orders[2]
    rows = load_config({"data": {"name": "iris"}, "batch_size": 16}, plugins=PLUGINS)
    order, bounds = Trainer(rows, load_data(rows, PLUGINS), NumpyBackend(), "cpu",
                            PLUGINS).batch_order(n)
    assert bounds == [(s, min(s + 16, n)) for s in range(0, n, 16)]
    assert not np.array_equal(order, np.arange(n))


def test_shuffle_is_validated():
    from smx.errors import ConfigError

    with pytest.raises(ConfigError, match="shuffle"):
        load_config({"shuffle": "columns"}, plugins=PLUGINS)
