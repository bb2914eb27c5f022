"""What the kit cannot know about this loss: its values, and γ = 0 being cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from smx_focal import FocalLoss

from smx.losses import CrossEntropy
from smx.plugins import Plugins


@pytest.fixture(params=["numpy", "array-api-strict"])
def backend(request):
    return Plugins(entry_points=False).backend(request.param)


def sums(backend, loss, Zt, y, w=None, cw=None):
    xp, put = backend.namespace(), lambda a, t: backend.from_host(a, "cpu", t)
    total, weight, Gt = loss.partial(
        xp, put(Zt, "float64"), put(y, "int64"), None if w is None else put(w, "float64"),
        None if cw is None else put(cw, "float64"))
    host = lambda a: np.asarray(backend.to_host(a))  # noqa: E731
    return float(host(total)), float(weight if isinstance(weight, int) else host(weight)), \
        host(Gt)


def test_a_row_worked_out_by_hand(backend):
    # logits (0, log 3): p = (1/4, 3/4); label 1, γ = 2: −(1/4)²·log(3/4)
    total, weight, Gt = sums(backend, FocalLoss(2.0), np.array([[0.0], [math.log(3.0)]]),
                             np.array([1]))
    assert total == pytest.approx(-(0.25**2) * math.log(0.75), rel=1e-14)
    assert weight == 1
    # A = q^γ·(1 − γ·p_y·log p_y / q) with q = 1/4, p_y = 3/4; G = A·(p − onehot)
    a = 0.25**2 * (1 - 2 * 0.75 * math.log(0.75) / 0.25)
    np.testing.assert_allclose(Gt[:, 0], [a * 0.25, a * -0.25], rtol=1e-14)


def test_gamma_zero_is_cross_entropy(backend):
    rng = np.random.default_rng(0)
    Zt, y = rng.normal(size=(4, 30)), rng.integers(0, 4, size=30)
    w, cw = rng.uniform(0.1, 2.0, size=30), rng.uniform(0.5, 2.0, size=4)
    for weights in ((None, None), (w, cw)):
        got = sums(backend, FocalLoss(0.0), Zt, y, *weights)
        ref = sums(backend, CrossEntropy(), Zt, y, *weights)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_a_confident_row_costs_less_than_under_cross_entropy(backend):
    Zt, y = np.array([[4.0, 0.0], [0.0, 0.1]]), np.array([0, 0])  # one easy row, one hard
    focal, _, _ = sums(backend, FocalLoss(2.0), Zt[:, :1], y[:1])
    ce, _, _ = sums(backend, CrossEntropy(), Zt[:, :1], y[:1])
    assert focal < 1e-3 * ce


def test_smx_finds_the_installed_plugin():
    names = [reg.name for reg in Plugins().registrations("loss")]
    assert "focal" in names
