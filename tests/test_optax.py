"""optax's transformations as smx optimizers on the JAX engine (smx.backends.jax_optax)."""

from __future__ import annotations

import numpy as np
import pytest

import smx
from smx.backends.jax_backend import JaxBackend
from smx.config import load_config
from smx.datasets.load import load_data
from smx.plugins import Plugins
from smx.training import Trainer

JAX_REASON = JaxBackend().unavailable_reason()
optax = pytest.importorskip("optax", reason="optax is not installed (pip install 'smx[optax]')")
pytestmark = pytest.mark.skipif(JAX_REASON is not None, reason=f"jax unusable: {JAX_REASON}")


class OptaxPlugin:
    """A third-party plugin registering optax's Adam through the adapter."""

    @smx.hookimpl
    def smx_optimizers(self):
        from smx.backends.jax_optax import from_optax
        from smx.optimizers.adam import AdamParams

        def factory(lr, beta1, beta2, eps, weight_decay):
            return from_optax(optax.adam(lr, b1=beta1, b2=beta2, eps=eps))

        yield smx.OptimizerSpec(name="optax-adam", factory=factory, params=AdamParams)


def test_the_adapter_takes_optax_s_own_steps():
    """The adapted transformation's updates are optax's own, bit for bit (same calls)."""
    import jax
    import jax.numpy as jnp

    from smx.backends.jax_optax import from_optax
    from smx.optimizers import apply_updates

    with jax.enable_x64(True):  # float64 for this test only, not the rest of the session
        rng = np.random.default_rng(0)
        grads = [{"W": jnp.asarray(rng.normal(size=(4, 3))), "b": jnp.asarray(rng.normal(size=3))}
                 for _ in range(5)]
        params = {"W": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
        schedule = optax.cosine_decay_schedule(0.1, 5)
        ours, theirs = from_optax(optax.adamw(schedule)), optax.adamw(schedule)
        p1, s1 = params, ours.init(params)
        p2, s2 = params, theirs.init(params)
        assert isinstance(s1, tuple)  # leaves only: a checkpoint stores it
        for g in grads:
            u1, s1 = jax.jit(ours.update)(g, s1, p1)
            u2, s2 = jax.jit(theirs.update)(g, s2, p2)
            p1, p2 = apply_updates(p1, u1), optax.apply_updates(p2, u2)
        for k in params:
            np.testing.assert_array_equal(np.asarray(p1[k]), np.asarray(p2[k]))


def build(optimizer: str, epochs: int = 3) -> Trainer:
    plugins = Plugins(entry_points=False)
    plugins.register(OptaxPlugin(), name="optax-plugin")
    cfg = load_config({"data": {"name": "iris"}, "backend": "jax", "dtype": "float64",
                       "epochs": epochs, "batch_size": 32, "seed": 1,
                       "optimizer": {"name": optimizer, "lr": 0.05},
                       "schedule": {"name": "cosine"}}, plugins=plugins)
    return Trainer(cfg, load_data(cfg, plugins), plugins.backend("jax"), "cpu", plugins)


def run(optimizer: str):
    trainer = build(optimizer)
    return trainer, trainer.fit()


def test_optax_adam_trains_like_smx_adam_on_the_jax_engine():
    """Through the Trainer (an epoch per lax.scan, smx's cosine schedule evaluated by optax
    from its own count): the same run as smx's Adam to rounding (optax places the bias
    corrections differently)."""
    _, theirs = run("optax-adam")
    _, ours = run("adam")
    for k in ours.params:
        np.testing.assert_allclose(theirs.params[k], ours.params[k], rtol=1e-9, atol=1e-12)
    assert theirs.history[-1]["train_loss"] < theirs.history[0]["train_loss"]


def test_an_optax_state_survives_a_checkpoint_round_trip():
    """A checkpoint after epoch 1 (optax's NamedTuple state stored as its leaves) resumes
    to the uninterrupted run's parameters."""
    straight = build("optax-adam").fit()
    first = build("optax-adam")
    first.end_epoch(first.run_epoch(), 0.0)
    state = first.state_dict()
    resumed = build("optax-adam")
    resumed.load_state_dict(state)
    result = resumed.fit()
    for k in result.params:
        np.testing.assert_allclose(result.params[k], straight.params[k], rtol=1e-12)
