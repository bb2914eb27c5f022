"""Checkpoints in process: pickle-free round trips, checksums, and exact continuation."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import smx
from smx.backends.jax_backend import JaxBackend
from smx.checkpoint import load_checkpoint, save_checkpoint
from smx.config import load_config
from smx.datasets.load import load_data
from smx.errors import DivergenceError, ModelFileError
from smx.plugins import Plugins
from smx.schedules import ops
from smx.training import Trainer
from smx.types import ScheduleSpec

PLUGINS = Plugins(entry_points=False)
JAX_REASON = JaxBackend().unavailable_reason()


def test_tree_round_trip_is_exact(tmp_path):
    state = {
        "params": {"W": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "b": np.zeros(3)},
        "opt": {"t": 7, "lr": 0.1 / 3, "nan": float("nan"), "flag": True, "none": None,
                "hist": [np.ones(2, dtype=np.int64), (1.5, np.float32(2.5))], "name": "x"},
        "rng": np.random.default_rng(5).bit_generator.state,  # 128-bit integers
        "history": [{"epoch": 1, "loss": 1 / 3}],
    }
    path = tmp_path / "c.npz"
    save_checkpoint(path, state)
    back = load_checkpoint(path)
    assert back["opt"]["t"] == 7 and back["opt"]["lr"] == 0.1 / 3 and back["opt"]["flag"] is True
    assert np.isnan(back["opt"]["nan"]) and back["opt"]["none"] is None
    assert isinstance(back["opt"]["hist"], list) and isinstance(back["opt"]["hist"][1], tuple)
    assert back["opt"]["hist"][1][1].dtype == np.float32
    for k in ("W", "b"):
        assert back["params"][k].dtype == state["params"][k].dtype
        np.testing.assert_array_equal(back["params"][k], state["params"][k])
    assert back["rng"] == state["rng"] and back["history"] == state["history"]
    with zipfile.ZipFile(path) as zf:  # no entry needs pickle
        for name in zf.namelist():
            with zf.open(name) as fh:
                assert b"'descr': '|O'" not in fh.read(200), name


def _flip_last_array_byte(path):
    """Corrupt one byte inside an array's data, keeping the zip readable."""
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    name = next(n for n in entries if n.startswith("a"))
    data = bytearray(entries[name])
    data[-1] ^= 0xFF
    entries[name] = bytes(data)
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in entries.items():
            zf.writestr(n, d)


def test_corruption_is_detected(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"W": np.ones((3, 2))})
    raw = path.read_bytes()
    _flip_last_array_byte(path)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_checkpoint(path)
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="corrupted or truncated checkpoint"):
        load_checkpoint(path)
    np.savez(path, x=np.ones(2))
    with pytest.raises(ModelFileError, match="not an smx checkpoint"):
        load_checkpoint(path)
    with pytest.raises(ModelFileError, match="no checkpoint here"):
        load_checkpoint(tmp_path / "missing.npz")


def test_pickled_entries_are_refused(tmp_path):
    """Loading uses allow_pickle=False: a checkpoint smuggling an object array is refused."""
    path = tmp_path / "c.npz"
    np.savez(path, format=np.asarray("smx-checkpoint/1"), a0=np.array([{"x": 1}], dtype=object),
             tree=np.asarray("{}"), sha256=np.asarray(""))
    with pytest.raises(ModelFileError, match=r"corrupted checkpoint.*would need pickle"):
        load_checkpoint(path)


def test_unsupported_leaves_are_refused_on_save(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        save_checkpoint(tmp_path / "c.npz", {"x": np.array([object()], dtype=object)})
    assert not list(tmp_path.iterdir())


def _cfg(backend: str, optimizer: dict, epochs: int = 4, **extra):
    return load_config({"data": {"name": "iris"}, "backend": backend, "epochs": epochs,
                        "batch_size": 16, "log_every": 3, "optimizer": optimizer,
                        "schedule": {"name": "cosine", "warmup_epochs": 1}, **extra},
                       plugins=PLUGINS)


class Killed(Exception):
    pass


def _straight_and_resumed(tmp_path, cfg, backend: str, kill_after: int = 2):
    """The same config run straight through, and killed after ``kill_after`` epochs (its
    checkpoint taken where the runner takes it, in on_epoch) then resumed in a new Trainer."""
    be = PLUGINS.get("backend", backend)
    if reason := be.unavailable_reason():
        pytest.skip(f"{backend} unavailable: {reason}")
    splits = load_data(cfg, PLUGINS)
    device = be.resolve_device("auto")
    straight = Trainer(cfg, splits, be, device, PLUGINS).fit()

    first = Trainer(cfg, splits, be, device, PLUGINS)

    def on_epoch(record):
        if first.epoch == kill_after:
            save_checkpoint(tmp_path / "c.npz", first.state_dict())
            raise Killed

    with pytest.raises(Killed):
        first.fit(on_epoch=on_epoch)
    second = Trainer(cfg, splits, be, device, PLUGINS)
    second.load_state_dict(load_checkpoint(tmp_path / "c.npz"))
    assert second.epoch == kill_after and second.step == first.step
    return be, straight, second.fit()


def _assert_same(be, straight, resumed):
    assert straight.stop_reason == resumed.stop_reason
    assert straight.restored_epoch == resumed.restored_epoch
    exact = be.deterministic or be.resolve_device("auto") == "cpu"  # no atomics on a CPU
    for k in straight.params:
        assert straight.params[k].dtype == resumed.params[k].dtype
        if exact:
            assert np.array_equal(straight.params[k], resumed.params[k]), k
        else:  # atomics in GPU reductions: equal up to summation order
            np.testing.assert_allclose(straight.params[k], resumed.params[k], rtol=1e-5)
    strip = [{k: v for k, v in r.items() if k != "elapsed"} for r in straight.history]
    if exact:
        assert strip == [{k: v for k, v in r.items() if k != "elapsed"}
                         for r in resumed.history]


@pytest.mark.parametrize("backend", ["numpy", "array-api-strict", "torch", "jax",
                                     pytest.param("cupy", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("optimizer", PLUGINS.names("optimizer"))
def test_trainer_resumes_bit_for_bit(tmp_path, backend, optimizer):
    """Every optimizer's state (lbfgs's history lists and its params alias included) crosses
    the host and comes back exactly: killed after epoch 2 and resumed == straight through."""
    options = {"sgd": {"momentum": 0.9, "nesterov": True}}.get(optimizer, {})
    cfg = _cfg(backend, {"name": optimizer, **options})
    _assert_same(*_straight_and_resumed(tmp_path, cfg, backend))


def test_early_stopping_state_is_resumed(tmp_path):
    """min_delta 1 on the training loss: no improvement after epoch 1, so patience 3 stops the
    run at epoch 4, two epochs after the kill, and restore_best goes back to epoch 1."""
    cfg = _cfg("numpy", {"name": "adam", "lr": 0.01}, epochs=10,
               early_stopping={"patience": 3, "min_delta": 1.0, "monitor": "train_loss",
                               "restore_best": True})
    be, straight, resumed = _straight_and_resumed(tmp_path, cfg, "numpy")
    assert len(straight.history) == 4 and straight.restored_epoch == 1
    _assert_same(be, straight, resumed)


def test_a_run_stopped_by_a_rule_stays_stopped(tmp_path):
    """Killed right after the stopping epoch's checkpoint: resuming trains no further."""
    cfg = _cfg("numpy", {"name": "adam", "lr": 0.01}, epochs=10,
               early_stopping={"patience": 3, "min_delta": 1.0, "monitor": "train_loss"})
    be, straight, resumed = _straight_and_resumed(tmp_path, cfg, "numpy", kill_after=4)
    assert resumed.stop_reason.startswith("early_stopping") and len(resumed.history) == 4
    _assert_same(be, straight, resumed)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    cfg = _cfg("numpy", {"name": "sgd"}, epochs=1)
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), PLUGINS.backend("numpy"), "cpu", PLUGINS)
    state = trainer.state_dict()
    state["params"]["W"] = np.zeros((5, 3))
    with pytest.raises(ModelFileError, match="do not fit"):
        trainer.load_state_dict(state)


class NanFrom:
    """A schedule plugin whose rate turns NaN at step ``bad_from`` (on the device too)."""

    def __init__(self, bad_from: int) -> None:
        self.bad_from = bad_from

    @smx.hookimpl
    def smx_schedules(self):
        bad = self.bad_from

        def nan_from(t):
            if not hasattr(t, "dtype"):  # the host's records
                return float("nan") if t >= bad else 1.0
            xp = ops(t)
            return xp.where(t >= bad, xp.full_like(t, float("nan")), xp.ones_like(t))

        yield ScheduleSpec("nan-from", lambda **_: nan_from)


@pytest.mark.parametrize("log_every", [1, 4])
@pytest.mark.parametrize("engine", [
    "numpy",
    pytest.param("jax", marks=pytest.mark.skipif(
        JAX_REASON is not None, reason=f"jax engine unusable: {JAX_REASON}")),
])
def test_nan_parameters_stop_within_one_log_interval(log_every, engine):
    """A NaN lr leaves the loss of that step finite but the parameters NaN: caught by the
    parameter check at the next log point, naming the step and the last finite loss
    (JAX: from the trace of an epoch run in one call)."""
    bad_from = 10
    plugins = Plugins(entry_points=False)
    plugins.register(NanFrom(bad_from), name="nan-schedule")
    cfg = load_config({"data": {"name": "iris"}, "epochs": 5, "batch_size": 16,
                       "log_every": log_every, "schedule": {"name": "nan-from"}},
                      plugins=plugins)
    backend = plugins.backend("numpy") if engine == "numpy" else JaxBackend()
    trainer = Trainer(cfg, load_data(cfg, plugins), backend, "cpu", plugins)
    assert (trainer.fused_epoch is not None) == (engine == "jax")
    with pytest.raises(DivergenceError) as info:
        trainer.fit()
    first_log = -(-(bad_from + 1) // log_every) * log_every  # first log point after the NaN
    msg = str(info.value)
    assert f"diverged at step {first_log}:" in msg
    if log_every == 1:  # the loss of step 11 was computed before the NaN update
        assert "the parameters (W, b) contain NaN/inf" in msg
    assert "NaN/inf" in msg and "lower optimizer.lr" in msg
    assert "last finite loss: " in msg and "none yet" not in msg
    assert info.value.exit_code == 3


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import os

    from smx.errors import RunFolderError

    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, {"epoch": 1, "W": np.ones(3)})

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunFolderError, match="cannot write the checkpoint: No space left"):
        save_checkpoint(path, {"epoch": 2, "W": np.full(3, np.nan)})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]  # no temporary left


@pytest.mark.parametrize(("every", "saved_at"), [(2, [2, 4, 5]), (0, [5]), (1, [1, 2, 3, 4, 5])])
def test_checkpoint_every(every, saved_at, tmp_path, monkeypatch):
    """Every N epochs and always at the end (0: only at the end); only the last one is
    synced to disk (the others need only survive the process being killed)."""
    import smx.runner

    epochs, durable = [], []
    real = smx.runner.save_checkpoint

    def spy(path, state, **kw):
        epochs.append(state["epoch"])
        durable.append(kw.get("durable", True))
        real(path, state, **kw)

    monkeypatch.setattr(smx.runner, "save_checkpoint", spy)
    cfg = load_config({"data": {"name": "iris"}, "epochs": 5, "checkpoint_every": every,
                       "output": str(tmp_path / "out")}, plugins=PLUGINS)
    smx.runner.run(cfg, plugins=PLUGINS, progress=False)
    assert epochs == saved_at
    assert durable == [False] * (len(saved_at) - 1) + [True]
    assert load_checkpoint(tmp_path / "out" / "checkpoint.npz")["epoch"] == 5


@pytest.mark.parametrize("depth", [1_000, 200_000], ids=["past-python", "past-json"])
def test_deeply_nested_tree_is_refused_cleanly(tmp_path, depth):
    """A crafted tree (valid checksum) nested past the recursion limit is a ModelFileError."""
    from smx.checkpoint import FORMAT, checksum
    from smx.io import npz_bytes

    tree = '{"list": [' * depth + '{"value": 1}' + "]}" * depth
    arrays = {"tree": np.asarray(tree), "format": np.asarray(FORMAT)}
    arrays["sha256"] = np.asarray(checksum(arrays))
    path = tmp_path / "c.npz"
    path.write_bytes(npz_bytes(arrays))
    with pytest.raises(ModelFileError, match="nested too deeply"):
        load_checkpoint(path)
