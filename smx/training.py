"""The training loop: host data in, host parameters out, everything between on the device.

Data and initial parameters cross to the device once. Each epoch draws its
batch order from a host RNG seeded by the run (so every backend sees the same
batches) and sends only that index vector. The loss is read on the host only
every ``log_every`` steps and at the end of each epoch.

:class:`Trainer` keeps the loop's state in one place (parameters, optimizer
state, step, RNG, history) so that stopping rules, checkpoints and resumption
act on it between epochs without reaching into the hot loop.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from smx import model
from smx.checkpoint import map_arrays
from smx.config import RunConfig
from smx.datasets.split import Splits
from smx.errors import DataError, DivergenceError, ModelFileError, PluginError, SmxError
from smx.optimizers.clipping import clip_by_global_norm
from smx.stopping import EarlyStopping, StopRule, optimizer_converged
from smx.types import Array, Backend, Params


def init_params(n_features: int, n_classes: int, cfg: RunConfig) -> dict[str, np.ndarray]:
    """Host-side, seeded initial parameters: identical on every backend."""
    rng = np.random.default_rng(cfg.seed)
    W = rng.normal(0.0, cfg.model.init_scale, size=(n_features, n_classes))
    params = {"W": W}
    if cfg.model.fit_intercept:
        params["b"] = np.zeros(n_classes)
    return params


def effective_l2(cfg: RunConfig, n_train: int) -> float:
    """scikit-learn's C (C·Σloss + ½‖W‖²) is our mean loss + l2/2‖W‖² with l2 = 1/(C·n)."""
    return 1.0 / (cfg.model.C * n_train) if cfg.model.C is not None else cfg.model.l2


@dataclass
class DeviceData:
    """One split on the device: features and class indices (no resident one-hot copy;
    the model builds targets from indices where it needs them)."""

    X: Array
    y: Array

    @classmethod
    def put(cls, backend: Backend, device: str, X: np.ndarray, y: np.ndarray,
            n_classes: int | None, dtype: str) -> DeviceData:
        """``n_classes`` is no longer needed (kept so existing callers still fit)."""
        return cls(backend.from_host(X, device, dtype), backend.from_host(y, device, "int64"))

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


def evaluate(backend: Backend, params: Params, data: DeviceData) -> dict[str, float | None]:
    """Mean cross-entropy (no penalty) and accuracy, read back in one host transfer;
    None for an empty split (there is nothing to measure, and NaN is not valid JSON)."""
    if data.n == 0:
        return {"loss": None, "accuracy": None}
    xp = array_namespace(data.X)
    both = xp.stack([model.loss(params, data.X, data.y), model.accuracy(params, data.X, data.y)])
    loss, acc = (float(v) for v in np.asarray(backend.to_host(both)))
    return {"loss": loss, "accuracy": acc}


@dataclass
class TrainResult:
    params: dict[str, np.ndarray]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    l2: float = 0.0
    stop_reason: str = "max_epochs"
    #: the epoch whose parameters these are, when early_stopping.restore_best chose them
    restored_epoch: int | None = None


EpochCallback = Callable[[dict[str, Any]], None]
LogCallback = Callable[[int, float], None]


class Trainer:
    """One run's loop and its state; :meth:`fit` drives it epoch by epoch."""

    def __init__(
        self,
        cfg: RunConfig,
        splits: Splits,
        backend: Backend,
        device: str,
        plugins: Any,
        *,
        initial: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.cfg, self.backend, self.device = cfg, backend, device
        k, dtype = splits.n_classes, cfg.dtype
        host_init = initial if initial is not None else init_params(splits.n_features, k, cfg)
        try:
            self.train_data = DeviceData.put(backend, device, splits.X_train, splits.y_train, k,
                                             dtype)
            self.val_data = DeviceData.put(backend, device, splits.X_val, splits.y_val, k, dtype)
            self.params: Params = {name: backend.from_host(v, device, dtype)
                                   for name, v in host_init.items()}
        except MemoryError as exc:  # CuPy's OutOfMemoryError is one
            raise DataError(f"the data does not fit in the memory of {backend.name} on {device} "
                            f"({type(exc).__name__}: {exc}); use a smaller dataset"
                            + (" or dtype=float32" if dtype == "float64" else ""),
                            where="device") from None

        self.opt_spec = plugins.get("optimizer", cfg.optimizer.name)
        opt_params = cfg.optimizer.params()
        with _plugin_call("optimizer", cfg.optimizer.name):
            self.optimizer = self.opt_spec.factory(**opt_params)
            self.opt_state = self.optimizer.init(self.params)
        self.base_lr = float(opt_params.get("lr", 1.0))

        n = self.train_data.n
        self.full_batch = self.opt_spec.full_batch or cfg.batch_size >= n
        self.batch_size = n if self.full_batch else cfg.batch_size
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        with _plugin_call("schedule", cfg.schedule.name):
            self.schedule = plugins.get("schedule", cfg.schedule.name).factory(
                total_steps=cfg.epochs * self.steps_per_epoch,
                steps_per_epoch=self.steps_per_epoch, **cfg.schedule.params(),
            )
        self.l2 = effective_l2(cfg, n)
        self.rng = np.random.default_rng(cfg.seed)
        self.xp = backend.namespace()
        # the backend's fused kernel when it offers one, else the portable core
        self.loss_and_grad = backend.loss_and_grad_kernel() or model.loss_and_grad
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.last_finite = float("nan")
        self.elapsed = 0.0  # training seconds, summed over epochs (and over resumed runs)
        self.stop_reason: str | None = None  # set when a stop rule ends the run early
        # stopping rules, each asked after every epoch (should_stop); append more to compose
        self.early_stopping = EarlyStopping.from_config(cfg.early_stopping)
        self.stop_rules: list[StopRule] = [optimizer_converged]
        if self.early_stopping:
            self.stop_rules.append(self.early_stopping)

    def close(self) -> None:
        """Drop every device array this trainer holds (data, parameters, optimizer state,
        the best epoch's parameters), so the backend's ``release`` can free their memory.
        The trainer cannot train after this; its host-side history stays."""
        self.train_data = self.val_data = None  # type: ignore[assignment]
        self.params = {}
        self.opt_state = None
        if self.early_stopping is not None:
            self.early_stopping.best_params = None

    def closure(self, X: Array, y: Array) -> Callable[[Params], tuple[Array, Params]]:
        """Loss and gradient of a batch (class indices ``y``, or one-hot targets); with
        ``clip_grad_norm``, the gradient clipped.

        The loss and gradient come from the backend's fused kernel when it offers one.
        Clipping here, not in the optimizers, gives every optimizer (plugins too) the
        same rule; it runs on the device, so the hot loop gains no host read.
        """
        l2, max_norm, fn = self.l2, self.cfg.clip_grad_norm, self.loss_and_grad
        if max_norm is None:
            return lambda p: fn(p, X, y, l2)

        def clipped(p: Params) -> tuple[Array, Params]:
            loss, grads = fn(p, X, y, l2)
            return loss, clip_by_global_norm(grads, max_norm)

        return clipped

    def lr(self, step: int) -> float:
        return self.base_lr * self.schedule(step)

    def run_epoch(self, on_log: LogCallback | None = None) -> float:
        """One pass over the training set; returns its mean batch loss (one host read)."""
        cfg, backend, xp, data = self.cfg, self.backend, self.xp, self.train_data
        n = data.n
        params, state, step = self.params, self.opt_state, self.step
        if self.full_batch:
            params, state, loss = self.optimizer.update(
                params, state, self.closure(data.X, data.y), self.lr(step))
            running = loss  # batch_size == n
            step += 1
            if step % cfg.log_every == 0:
                self._logged(step, loss, params, on_log)
        else:
            running = None  # device scalar: Σ batch loss · batch rows / batch_size
            bs = self.batch_size
            order = backend.from_host(self.rng.permutation(n), self.device, "int64")
            for start in range(0, n, bs):
                idx = order[start:min(start + bs, n)]
                # gather class indices, not one-hot rows: n ints instead of n·K floats
                closure = self.closure(xp.take(data.X, idx, axis=0), xp.take(data.y, idx, axis=0))
                params, state, loss = self.optimizer.update(params, state, closure, self.lr(step))
                rows = idx.shape[0]  # one add per step; only a short last batch is scaled
                weighted = loss if rows == bs else loss * (rows / bs)
                running = weighted if running is None else running + weighted
                step += 1
                if step % cfg.log_every == 0:
                    self._logged(step, loss, params, on_log)
        self.params, self.opt_state, self.step = params, state, step
        guarded = float(backend.to_host(self._guarded(running, params)))
        train_loss = guarded * self.batch_size / n
        if not math.isfinite(train_loss):
            self._diverged(running, params)
        self.last_finite = train_loss
        return train_loss

    def _guarded(self, value: Array, params: Params) -> Array:
        """``value + 0·Σparams``: exactly ``value`` while the parameters are finite, NaN once
        they are not. One device reduction, read back with the loss in the same host read."""
        for p in params.values():
            value = value + 0.0 * self.xp.sum(p)
        return value

    def _logged(self, step: int, loss: Array, params: Params, on_log: LogCallback | None) -> None:
        value = float(self.backend.to_host(self._guarded(loss, params)))
        if not math.isfinite(value):
            self.step = step
            self._diverged(loss, params)
        self.last_finite = value
        if on_log:
            on_log(step, value)

    def _diverged(self, loss: Array, params: Params) -> None:
        """Raise DivergenceError; a second host read (only here) says whether loss or params."""
        what = "the loss is NaN/inf"
        if math.isfinite(float(self.backend.to_host(loss))):
            bad = [k for k, p in params.items()
                   if not math.isfinite(float(self.backend.to_host(self.xp.sum(p))))]
            what = f"the parameters ({', '.join(bad)}) contain NaN/inf"
        last = f"{self.last_finite:.6g}" if math.isfinite(self.last_finite) else "none yet"
        raise DivergenceError(
            f"training diverged at step {self.step}: {what} (last finite loss: "
            f"{last}); lower optimizer.lr or add a schedule with warmup",
            where="train",
        )

    def end_epoch(self, train_loss: float, seconds: float) -> dict[str, Any]:
        self.epoch += 1
        self.elapsed += seconds
        val = evaluate(self.backend, self.params, self.val_data)
        # train_loss means one thing everywhere (as val_loss, and summary.json's): the mean
        # cross-entropy of the epoch's final parameters on the training split, not the
        # argument (the penalised batch losses averaged while the parameters moved)
        train = evaluate(self.backend, self.params, self.train_data)
        record = {
            "epoch": self.epoch, "step": self.step, "train_loss": train["loss"],
            "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "lr": self.lr(max(self.step - 1, 0)), "elapsed": self.elapsed,
        }
        self.history.append(record)
        return record

    def should_stop(self) -> str | None:
        """A reason to stop before ``epochs`` (None: go on).

        Every rule is asked, even after one fires, so each sees every epoch (the
        best epoch is then known when another rule ends the run); the first reason wins.
        """
        reasons = [reason for rule in self.stop_rules if (reason := rule(self))]
        return reasons[0] if reasons else None

    def restore_best(self) -> int | None:
        """With ``early_stopping.restore_best``, go back to the best epoch's parameters."""
        es = self.early_stopping
        if es is None or es.best_params is None:
            return None
        self.params = es.best_params
        return es.best_epoch

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run bit for bit, on the host (for checkpoints).

        Optimizer state leaves are arrays of the backend or Python scalars; the arrays
        cross to the host through the backend, so any backend's state can be saved.
        """
        def to_host(a: Array) -> np.ndarray:
            return np.asarray(self.backend.to_host(a))

        memo: dict[int, Any] = {}  # one device array seen twice stays one array
        es = self.early_stopping
        return {
            "params": map_arrays(self.params, to_host, memo),
            "opt_state": map_arrays(self.opt_state, to_host, memo),
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "last_finite": self.last_finite,
            "rng": self.rng.bit_generator.state,
            "history": [dict(r) for r in self.history],
            "stop_reason": self.stop_reason,
            "early_stopping": None if es is None else {
                "best": es.best, "best_epoch": es.best_epoch, "wait": es.wait,
                "best_params": map_arrays(es.best_params, to_host, memo)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (each array keeps its saved dtype)."""
        params = state["params"]
        expected = {k: tuple(v.shape) for k, v in self.params.items()}
        got = {k: tuple(np.shape(v)) for k, v in params.items()}
        if got != expected:
            raise ModelFileError(f"checkpoint parameters {got} do not fit this run's "
                                 f"model {expected}", where="checkpoint")

        def put(a: np.ndarray) -> Array:
            return self.backend.from_host(a, self.device, np.asarray(a).dtype.name)

        memo: dict[int, Any] = {}
        self.params = map_arrays(params, put, memo)
        self.opt_state = map_arrays(state["opt_state"], put, memo)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.elapsed, self.last_finite = float(state["elapsed"]), float(state["last_finite"])
        self.rng.bit_generator.state = state["rng"]
        self.history = [dict(r) for r in state["history"]]
        self.stop_reason = state["stop_reason"]
        if self.early_stopping is not None and state["early_stopping"] is not None:
            es, saved = self.early_stopping, state["early_stopping"]
            es.best, es.best_epoch, es.wait = saved["best"], saved["best_epoch"], saved["wait"]
            es.best_params = map_arrays(saved["best_params"], put, memo)

    def host_params(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(self.backend.to_host(v)) for name, v in self.params.items()}

    def fit(self, *, on_epoch: EpochCallback | None = None,
            on_log: LogCallback | None = None) -> TrainResult:
        while self.stop_reason is None and self.epoch < self.cfg.epochs:
            t0 = time.perf_counter()
            train_loss = self.run_epoch(on_log)
            record = self.end_epoch(train_loss, time.perf_counter() - t0)
            # decided before on_epoch, so a checkpoint taken there holds the decision
            self.stop_reason = self.should_stop()
            if on_epoch:
                on_epoch(record)
        restored = self.restore_best()
        self.backend.synchronize(self.device)
        return TrainResult(params=self.host_params(), history=self.history, steps=self.step,
                           train_seconds=self.elapsed, l2=self.l2,
                           stop_reason=self.stop_reason or "max_epochs", restored_epoch=restored)

    @property
    def finished(self) -> bool:
        """No epoch is left to run: ``epochs`` reached or a stop rule fired."""
        return self.stop_reason is not None or self.epoch >= self.cfg.epochs


@contextlib.contextmanager
def _plugin_call(kind: str, name: str) -> Iterator[None]:
    """A plugin's own failure (not an smx error) becomes one line naming the plugin."""
    try:
        yield
    except SmxError:
        raise
    except Exception as exc:
        raise PluginError(f"the {kind} plugin {name!r} failed: {type(exc).__name__}: {exc}",
                          where=kind) from None


def train(
    cfg: RunConfig,
    splits: Splits,
    backend: Backend,
    device: str,
    plugins: Any,
    *,
    on_epoch: EpochCallback | None = None,
    on_log: LogCallback | None = None,
    initial: dict[str, np.ndarray] | None = None,
) -> TrainResult:
    """Train from scratch (or from ``initial`` parameters) for ``cfg.epochs`` epochs."""
    trainer = Trainer(cfg, splits, backend, device, plugins, initial=initial)
    return trainer.fit(on_epoch=on_epoch, on_log=on_log)
