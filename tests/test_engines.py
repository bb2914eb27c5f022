"""The PyTorch and JAX engines against NumPy: round trips, parity, every optimizer, loss
option and schedule, no host reads in the loop, and (JAX) one compilation reused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from smx import model
from smx.backends.jax_backend import JaxBackend
from smx.backends.torch_backend import TorchBackend
from smx.config import load_config
from smx.datasets.load import load_data
from smx.plugins import Plugins
from smx.training import Trainer, train
from tests.conftest import ROOT, counting, run_smx

PLUGINS = Plugins(entry_points=False)
TORCH_REASON = TorchBackend().unavailable_reason()
JAX_REASON = JaxBackend().unavailable_reason()
ENGINES = [
    pytest.param(TorchBackend, marks=pytest.mark.skipif(
        TORCH_REASON is not None, reason=f"torch engine unusable: {TORCH_REASON}"), id="torch"),
    pytest.param(JaxBackend, marks=pytest.mark.skipif(
        JAX_REASON is not None, reason=f"jax engine unusable: {JAX_REASON}"), id="jax"),
]


def config(**kw):
    data = {"data": {"name": "iris"}, "epochs": 3, "batch_size": 32, **kw}
    return load_config(data, plugins=PLUGINS)


def fit(cfg, backend):
    return train(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)


@pytest.mark.parametrize("engine", ENGINES)
def test_round_trips_keep_values_and_dtypes(engine):
    backend = engine()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for device in backend.devices():
        for dtype in ("float32", "float64", "int64"):
            back = backend.to_host(backend.from_host(x, device, dtype))
            # JAX keeps int64 only once a float64 run has enabled 64-bit types
            ok = {np.dtype(dtype)} | ({np.dtype("int32")} if engine is JaxBackend else set())
            assert back.dtype in ok, (device, dtype, back.dtype)
            np.testing.assert_array_equal(back, x.astype(dtype))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lbfgs"])
def test_float64_matches_numpy_to_1e10(engine, optimizer):
    cfg = config(dtype="float64", optimizer={"name": optimizer})
    ours, ref = fit(cfg, engine()), fit(cfg, PLUGINS.backend("numpy"))
    for k in ref.params:
        np.testing.assert_allclose(ours.params[k], ref.params[k], rtol=0, atol=1e-10)
    np.testing.assert_allclose([r["train_loss"] for r in ours.history],
                               [r["train_loss"] for r in ref.history], rtol=1e-10)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("optimizer", sorted(PLUGINS.names("optimizer")))
def test_every_optimizer_runs(engine, optimizer):
    cfg = config(dtype="float32", epochs=2, optimizer={"name": optimizer})
    ours, ref = fit(cfg, engine()), fit(cfg, PLUGINS.backend("numpy"))
    for k in ref.params:
        np.testing.assert_allclose(ours.params[k], ref.params[k], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("loss", [{"label_smoothing": 0.1}, {"class_weight": "balanced"},
                                  {"label_smoothing": 0.2, "class_weight": {"0": 2.0}}])
def test_loss_options_match_numpy(engine, loss):
    cfg = config(dtype="float64", loss={"name": "cross_entropy", **loss},
                 clip_grad_norm=1.0, optimizer={"name": "adamw"})
    ours, ref = fit(cfg, engine()), fit(cfg, PLUGINS.backend("numpy"))
    for k in ref.params:
        np.testing.assert_allclose(ours.params[k], ref.params[k], rtol=0, atol=1e-10)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("schedule", sorted(PLUGINS.names("schedule")))
def test_every_schedule_runs(engine, schedule):
    cfg = config(dtype="float64", epochs=2, schedule={"name": schedule})
    ours, ref = fit(cfg, engine()), fit(cfg, PLUGINS.backend("numpy"))
    np.testing.assert_allclose(ours.params["W"], ref.params["W"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_no_host_reads_beyond_log_every(engine, optimizer):
    cfg = load_config({"data": {"name": "synthetic", "n": 500, "val_fraction": 0.1,
                                "test_fraction": 0.1},
                       "epochs": 3, "batch_size": 30, "log_every": 1000,
                       "optimizer": {"name": optimizer}}, plugins=PLUGINS)
    backend = counting(engine)()
    result = train(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
    assert result.steps == (3 if optimizer == 'lbfgs' else 3 * 14)
    # per epoch: the running train loss, validation loss and accuracy in one read, and the
    # end-of-epoch training loss; then W and b
    assert backend.to_host_calls == 3 * 3 + 2


@pytest.mark.skipif(JAX_REASON is not None, reason=f"jax engine unusable: {JAX_REASON}")
def test_jax_step_is_traced_once_and_reused():
    """A trace runs the epoch's Python body; after the first epoch (full batches and the
    padded last one) nothing is traced again: step counts and rates are scanned over."""
    traces = []

    class Counting(JaxBackend):
        def compile(self, fn):
            def traced(*args):
                traces.append(1)
                return fn(*args)
            return super().compile(traced)

    cfg = config(epochs=4, batch_size=32, optimizer={"name": "adam"},
                 schedule={"name": "cosine", "warmup_epochs": 1})
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), Counting(), "cpu", PLUGINS)
    assert trainer.train_data.n % 32 != 0  # there is a short last batch
    trainer.end_epoch(trainer.run_epoch(), 0.0)
    after_first = len(traces)
    assert after_first == 1  # the epoch's scan: full batches and the padded one alike
    for _ in range(3):
        trainer.end_epoch(trainer.run_epoch(), 0.0)
    assert len(traces) == after_first


@pytest.fixture
def jax_32_bit_default():
    """JAX as a user's process starts: 32-bit defaults, whatever earlier tests set."""
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.mark.skipif(JAX_REASON is not None, reason=f"jax engine unusable: {JAX_REASON}")
def test_a_float64_jax_fit_leaves_jaxs_defaults_as_they_were(jax_32_bit_default):
    """A float64 run enables 64-bit types for its own work only: after it, the user's
    ``jnp.ones`` and ``jnp.arange`` are 32-bit again (issue 21, item 8), and the run is
    still float64 and NumPy's to 1e-10, through train() and the estimator alike."""
    import jax.numpy as jnp

    from smx import SoftmaxRegression

    def defaults():
        return jnp.ones(1).dtype, jnp.arange(3).dtype

    assert defaults() == (jnp.float32, jnp.int32)
    cfg = config(dtype="float64", optimizer={"name": "lbfgs"})
    ours, ref = fit(cfg, JaxBackend()), fit(cfg, PLUGINS.backend("numpy"))
    assert defaults() == (jnp.float32, jnp.int32)
    assert ours.params["W"].dtype == np.float64
    np.testing.assert_allclose(ours.params["W"], ref.params["W"], rtol=0, atol=1e-10)
    # a Trainer that is never closed leaves nothing on either
    again = Trainer(cfg, load_data(cfg, PLUGINS), JaxBackend(), "cpu", PLUGINS).fit()
    assert defaults() == (jnp.float32, jnp.int32)
    np.testing.assert_array_equal(again.params["W"], ours.params["W"])
    X, y = load_data(cfg, PLUGINS).X_train, load_data(cfg, PLUGINS).y_train
    fitted = {engine: SoftmaxRegression(backend=engine, standardize=True, epochs=10).fit(X, y)
              for engine in ("jax", "numpy")}
    assert fitted["jax"].dtype == "float64"  # the estimator's default
    assert defaults() == (jnp.float32, jnp.int32)
    np.testing.assert_allclose(fitted["jax"].coef_, fitted["numpy"].coef_, rtol=0, atol=1e-10)


@pytest.mark.skipif(TORCH_REASON is not None, reason=f"torch engine unusable: {TORCH_REASON}")
def test_torch_compile_option_gives_the_same_run():
    cfg = config(backend="torch", backend_options={"compile": True}, dtype="float64",
                 epochs=2, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    backend = TorchBackend()
    ours = fit(cfg, backend)
    ref = fit(cfg.model_copy(update={"backend": "numpy", "backend_options": {}}),
              PLUGINS.backend("numpy"))
    np.testing.assert_allclose(ours.params["W"], ref.params["W"], rtol=0, atol=1e-10)
    # the compiled code is cached in Inductor's folder, which summary.json names (issue 21,
    # item 11): not in the run folder, where each run would compile afresh
    cache = Path(backend.run_report()["torch_compile"]["cache_dir"])
    assert cache.is_dir() and any(cache.iterdir())


@pytest.mark.parametrize(("engine", "module", "words"), [
    (TorchBackend, "torch", ("PyTorch is not installed", "smx[torch]", "torch==2.13.0")),
    (JaxBackend, "jax", ("JAX is not installed", "smx[jax]")),
])
def test_missing_library_is_one_sentence_saying_what_to_install(engine, module, words,
                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    reason = engine().unavailable_reason()
    for word in words:
        assert word in reason
    assert engine().accelerator_hint() == reason


BOTH = pytest.mark.skipif(TORCH_REASON is not None or JAX_REASON is not None,
                          reason="needs torch and jax (pip install 'smx[torch,jax]'): "
                                 f"{TORCH_REASON or JAX_REASON}")


@BOTH
@pytest.mark.parametrize(("dtype", "optimizer"), [("float32", "sgd"), ("float64", "sgd"),
                                                  ("float64", "adam"), ("float64", "lbfgs")])
def test_four_library_parity(tmp_path, dtype, optimizer):
    """`smx parity --backends numpy,array-api-strict,torch,jax` passes; in float64 the final
    parameters are within 1e-10 of NumPy's."""
    proc = run_smx("parity", str(ROOT / "configs" / "parity.yaml"), "epochs=3",
                   f"optimizer.name={optimizer}", "--backends",
                   "numpy,array-api-strict,torch,jax", "--dtype", dtype, "-o", "out",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert report["passed"] and [b["backend"] for b in report["backends"]] == [
        "numpy", "array-api-strict", "torch", "jax"]
    if dtype == "float64":
        for b in report["backends"]:
            assert b["quantities"]["final_params"]["max_abs"] < 1e-10, b["backend"]


@BOTH
def test_digits_reaches_numpys_accuracy_on_torch_and_jax():
    """`smx run configs/digits.yaml backend=torch|jax`, fewer epochs: the same test accuracy."""
    from smx.datasets.load import load_data as load

    cfg = load_config(ROOT / "configs" / "digits.yaml", ["epochs=4"])
    splits = load(cfg, PLUGINS)
    accuracy = {}
    for name in ("numpy", "torch", "jax"):
        trainer = Trainer(cfg, splits, PLUGINS.backend(name), "cpu", PLUGINS)
        trainer.fit()
        test = trainer.backend.place(splits.X_test, splits.y_test, None, "cpu", cfg.dtype)
        accuracy[name] = float(trainer.backend.to_host(
            model.accuracy(trainer.params, test.X, test.y)))
    assert accuracy["numpy"] > 0.9
    assert accuracy["torch"] == pytest.approx(accuracy["numpy"], abs=1e-6)  # same rows right
    assert accuracy["jax"] == pytest.approx(accuracy["numpy"], abs=1e-6)  # same rows right


@pytest.mark.parametrize("engine", ENGINES)
def test_logged_losses_match_numpy(engine):
    """The log points (every ``log_every`` steps, across epoch ends) and their values are
    NumPy's; JAX reads them from its epoch's trace after the one call."""
    cfg = config(dtype="float64", epochs=3, log_every=3, optimizer={"name": "sgd", "momentum": 0.9})
    logs = {}
    for name, backend in (("ours", engine()), ("ref", PLUGINS.backend("numpy"))):
        seen = logs[name] = []
        trainer = Trainer(cfg, load_data(cfg, PLUGINS), backend, "cpu", PLUGINS)
        trainer.fit(on_log=lambda step, value, seen=seen: seen.append((step, value)))
    assert [s for s, _ in logs["ours"]] == [s for s, _ in logs["ref"]]
    assert len(logs["ref"]) == 3 * -(-120 // 32) // 3
    np.testing.assert_allclose([v for _, v in logs["ours"]], [v for _, v in logs["ref"]],
                               rtol=1e-10)


@pytest.mark.skipif(JAX_REASON is not None, reason=f"jax engine unusable: {JAX_REASON}")
@pytest.mark.parametrize("shuffle", ["rows", "batches"])
@pytest.mark.parametrize("weighted", [False, True])
def test_jax_runs_an_epoch_in_one_call(shuffle, weighted, tmp_path):
    """One engine call per epoch; its padded short batch (wherever the shuffle puts it)
    counts only its real rows, with or without sample weights: NumPy's run to 1e-10."""
    calls = []

    class Counting(JaxBackend):
        def fused_epoch(self, step, data):
            fn = super().fused_epoch(step, data)

            def counted(*args):
                calls.append(len(args[4]))  # the epoch's steps
                return fn(*args)
            return counted

    data = {"name": "iris"}
    if weighted:
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "w.npz", X=rng.normal(size=(150, 4)), y=np.arange(150) % 3,
                 w=rng.uniform(0.1, 3.0, 150))
        data = {"name": "file", "path": str(tmp_path / "w.npz"), "sample_weight": "w"}
    cfg = config(data=data, epochs=3, dtype="float64", shuffle=shuffle,
                 optimizer={"name": "adam"})
    ours = fit(cfg, Counting())
    ref = fit(cfg, PLUGINS.backend("numpy"))
    assert calls == [4, 4, 4]  # 120 training rows in batches of 32
    for k in ref.params:
        np.testing.assert_allclose(ours.params[k], ref.params[k], rtol=0, atol=1e-10)
