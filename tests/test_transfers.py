"""No hidden host round-trips in the hot loop.

The loop runs on array-api-strict's simulated ``device1`` while every way an
array can leave the device implicitly (``float()``, ``int()``, ``bool()``,
``__index__``, ``__array__``, ``__dlpack__``, iteration) raises. The only
legal exit is ``backend.to_host``, which is counted: it must be called every
``log_every`` steps plus a fixed number of reads per epoch, nothing more.
"""

from __future__ import annotations

import contextlib

import array_api_strict
import pytest

from smx.backends.strict_backend import StrictBackend
from smx.config import load_config
from smx.datasets.load import load_data
from smx.plugins import Plugins
from smx.training import Trainer

PLUGINS = Plugins(entry_points=False)
IMPLICIT = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__",
            "__dlpack__", "__iter__")


class ImplicitTransfer(AssertionError):
    pass


class GuardedStrict(StrictBackend):
    """array-api-strict whose arrays refuse to reach the host except through ``to_host``."""

    def __init__(self) -> None:
        self.to_host_calls = 0
        self.from_host_calls = 0
        self._explicit = False

    @contextlib.contextmanager
    def explicit(self):
        self._explicit = True
        try:
            yield
        finally:
            self._explicit = False

    def from_host(self, array, device, dtype=None):
        self.from_host_calls += 1
        return super().from_host(array, device, dtype)

    def to_host(self, array):
        self.to_host_calls += 1
        with self.explicit():
            return super().to_host(array)


@pytest.fixture
def guarded(monkeypatch):
    backend = GuardedStrict()
    array_type = type(array_api_strict.asarray(0.0))
    for name in IMPLICIT:
        original = getattr(array_type, name)

        def guard(self, *args, _name=name, _original=original, **kwargs):
            if not backend._explicit:
                raise ImplicitTransfer(f"implicit device-to-host conversion: Array.{_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(array_type, name, guard)
    return backend


def test_guard_catches_an_implicit_conversion(guarded):
    x = guarded.from_host([1.0, 2.0], "device1", "float32")
    with pytest.raises(ImplicitTransfer, match="__float__"):
        float(array_api_strict.sum(x))
    assert float(guarded.to_host(array_api_strict.sum(x))) == 3.0


@pytest.mark.parametrize(("optimizer", "batch_size", "log_every"), [
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, 16, 5),
    ({"name": "adam", "lr": 0.01}, 32, 3),
    ({"name": "sgd", "lr": 0.5}, None, 2),  # the whole training set: one step per epoch
])
def test_training_loop_has_no_implicit_transfers(guarded, optimizer, batch_size, log_every):
    epochs = 3
    cfg = load_config({"data": {"name": "iris"}, "optimizer": optimizer, "epochs": epochs,
                       "batch_size": batch_size or 1, "log_every": log_every}, plugins=PLUGINS)
    splits = load_data(cfg, PLUGINS)
    if batch_size is None:
        cfg = cfg.model_copy(update={"batch_size": len(splits.y_train)})
    trainer = Trainer(cfg, splits, guarded, "device1", PLUGINS)
    assert trainer.full_batch == (batch_size is None)
    setup_puts = guarded.from_host_calls
    assert guarded.to_host_calls == 0
    logged: list[int] = []
    result = trainer.fit(on_log=lambda step, loss: logged.append(step))

    steps = trainer.steps_per_epoch * epochs
    assert result.steps == steps
    assert logged == list(range(log_every, steps + 1, log_every))
    # every log_every steps; per epoch the running loss (the divergence guard), val loss and
    # accuracy together, train loss and accuracy together; then W and b
    assert guarded.to_host_calls == steps // log_every + 3 * epochs + 2
    # host to device: only the per-epoch batch order (none for full batch)
    assert guarded.from_host_calls - setup_puts == (0 if trainer.full_batch else epochs)
    assert all(v.device == array_api_strict.Device("device1") for v in trainer.params.values())
