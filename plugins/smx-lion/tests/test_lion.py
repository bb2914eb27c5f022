"""Tests a plugin should have: hand-checked steps, on NumPy and on array-api-strict.

array-api-strict implements the standard and nothing else (no mixed dtypes,
no implicit conversions, no NumPy-only behaviour), so code that passes here
runs on any backend. Run with ``pip install -e '.[test]' && pytest``.
"""

from __future__ import annotations

import numpy as np
import pytest
from smx_lion import LionParams, lion

from smx.objective import loss_and_grad
from smx.optimizers.transforms import apply_updates
from smx.plugins import Plugins


@pytest.fixture(params=["numpy", "array-api-strict"])
def backend(request):
    """smx's own backends: the namespace, and the one sanctioned way back to the host."""
    return Plugins(entry_points=False).backend(request.param)


@pytest.fixture
def xp(backend):
    return backend.namespace()


@pytest.fixture
def host(backend):
    return lambda x: np.asarray(backend.to_host(x))


def scripted(xp, host, grads: list[dict[str, list]], dtype):
    """A gradient function returning the next scripted gradient, recording the params it saw."""
    seen = []

    def closure(params):
        seen.append({k: host(v).copy() for k, v in params.items()})
        g = grads[len(seen) - 1]
        return xp.asarray(0.0, dtype=dtype), {k: xp.asarray(v, dtype=dtype) for k, v in g.items()}

    return closure, seen


def step(opt, params, state, closure):
    """What smx's Trainer does each step: gradient, transformation, update."""
    loss, grads = closure(params)
    updates, state = opt.update(grads, state, params)
    return apply_updates(params, updates), state, loss


def momentum(state):
    """Lion's own link is the first of the chain: its state holds the momentum."""
    return state[0]["m"]


def test_two_steps_match_the_hand_computed_values(xp, host):
    # lr = 0.1, β1 = 0.9, β2 = 0.99, λ = 0.5  ->  W shrinks by 1 - lr·λ = 0.95 per step
    dtype = xp.float64
    params = {"W": xp.asarray([[1.0, -1.0], [0.5, 2.0]], dtype=dtype),
              "b": xp.asarray([0.1, -0.2], dtype=dtype)}
    grads = [
        {"W": [[1.0, -2.0], [0.5, 0.0]], "b": [-3.0, 0.2]},
        {"W": [[-0.05, 1.0], [-0.1, 0.0]], "b": [0.5, 0.01]},
    ]
    closure, seen = scripted(xp, host, grads, dtype)
    # lr may be a schedule of the step count, as smx passes it when the run has one
    opt = lion(lr=lambda count: 0.1 + 0 * count, beta1=0.9, beta2=0.99, weight_decay=0.5)
    state = opt.init(params)

    # step 1: m = 0, so the direction is sign(g); sign(0) = 0 leaves W[1,1] undecided
    p1, state, _ = step(opt, params, state, closure)
    np.testing.assert_allclose(host(p1["W"]), [[0.85, -0.85], [0.375, 1.9]], rtol=1e-12)
    np.testing.assert_allclose(host(p1["b"]), [0.2, -0.3], rtol=1e-12)  # b is never decayed
    np.testing.assert_allclose(host(momentum(state)["W"]), [[0.01, -0.02], [0.005, 0.0]],
                               rtol=1e-12)

    # step 2: c = 0.9·m + 0.1·g = [[0.004, 0.082], [-0.0055, 0]]: W[0,0] moves against g
    p2, state, _ = step(opt, p1, state, closure)
    np.testing.assert_allclose(host(p2["W"]), [[0.7075, -0.9075], [0.45625, 1.805]],
                               rtol=1e-12)
    # c_b = 0.9·[-0.03, 0.002] + 0.1·[0.5, 0.01] = [0.023, 0.0028]
    np.testing.assert_allclose(host(p2["b"]), [0.1, -0.4], rtol=1e-12)
    np.testing.assert_allclose(host(momentum(state)["W"]),
                               [[0.0094, -0.0098], [0.00395, 0.0]], rtol=1e-12, atol=1e-15)

    # the closure saw the parameters before each step
    np.testing.assert_array_equal(seen[1]["W"], host(p1["W"]))


def test_update_is_pure_and_keeps_the_dtype(xp, host):
    params = {"W": xp.ones((3, 2), dtype=xp.float32), "b": xp.zeros((2,), dtype=xp.float32)}
    before = {k: host(v).copy() for k, v in params.items()}
    closure, _ = scripted(xp, host, [{"W": [[1.0, -1.0]] * 3, "b": [1.0, 1.0]}], xp.float32)
    opt = lion(lr=0.01, weight_decay=0.1)
    new, state, _ = step(opt, params, opt.init(params), closure)
    for k in params:
        np.testing.assert_array_equal(host(params[k]), before[k])  # inputs untouched
        assert new[k].dtype == xp.float32 and momentum(state)[k].dtype == xp.float32


def test_lowers_the_loss_of_a_small_softmax_problem(xp, host):
    rng = np.random.default_rng(0)
    X_host = rng.normal(size=(60, 4))
    y_host = (X_host[:, 0] + X_host[:, 1] > 0).astype(np.int64)
    X = xp.asarray(X_host, dtype=xp.float64)
    y = xp.asarray(y_host)
    params = {"W": xp.zeros((4, 2), dtype=xp.float64), "b": xp.zeros((2,), dtype=xp.float64)}
    opt = lion(**LionParams(lr=0.01, weight_decay=0.01).model_dump())
    state = opt.init(params)
    closure = lambda p: loss_and_grad(p, X, y, 1e-3)  # noqa: E731
    first = None
    for _ in range(50):
        params, state, loss = step(opt, params, state, closure)
        first = float(host(loss)) if first is None else first
    assert float(host(closure(params)[0])) < 0.5 * first


def test_params_reject_out_of_range_and_unknown_keys():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        LionParams(beta1=1.5)
    with pytest.raises(ValidationError):
        LionParams(momentum=0.9)


def test_smx_finds_the_installed_plugin():
    """Needs the plugin installed (``pip install -e .``): smx discovers it by entry point."""
    from smx.plugins import Plugins

    reg = {r.name: r for r in Plugins().registrations("optimizer")}.get("lion")
    assert reg is not None, "smx-lion is not installed: pip install -e ."
    assert reg.plugin == "lion" and reg.version.startswith("smx-lion ")
    assert reg.record.params is LionParams
