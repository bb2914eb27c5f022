"""The training loop: host data in, host parameters out, everything between on the device.

Data and initial parameters cross to the device once. Each epoch draws its
batch order from a host RNG seeded by the run (so every backend sees the same
batches) and sends only that index vector. The loss is read on the host only
every ``log_every`` steps and at the end of each epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smx import model
from smx.config import RunConfig
from smx.datasets.split import Splits
from smx.errors import DivergenceError
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
    """One split, moved to the device with its one-hot targets."""

    X: Array
    y: Array
    Y: Array

    @classmethod
    def put(cls, backend: Backend, device: str, X: np.ndarray, y: np.ndarray, n_classes: int,
            dtype: str) -> DeviceData:
        Xd = backend.from_host(X, device, dtype)
        yd = backend.from_host(y, device, "int64")
        return cls(Xd, yd, model.one_hot(yd, n_classes, Xd.dtype))

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


def evaluate(backend: Backend, params: Params, data: DeviceData) -> dict[str, float]:
    """Mean cross-entropy (no penalty) and accuracy, read back together."""
    if data.n == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    loss = model.loss(params, data.X, data.Y)
    acc = model.accuracy(params, data.X, data.y)
    return {"loss": float(backend.to_host(loss)), "accuracy": float(backend.to_host(acc))}


@dataclass
class TrainResult:
    params: dict[str, np.ndarray]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    l2: float = 0.0


EpochCallback = Callable[[dict[str, Any]], None]
LogCallback = Callable[[int, float], None]


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
    k, dtype = splits.n_classes, cfg.dtype
    train_d = DeviceData.put(backend, device, splits.X_train, splits.y_train, k, dtype)
    val_d = DeviceData.put(backend, device, splits.X_val, splits.y_val, k, dtype)
    host_init = initial if initial is not None else init_params(splits.n_features, k, cfg)
    params: Params = {name: backend.from_host(v, device, dtype) for name, v in host_init.items()}

    opt_spec = plugins.get("optimizer", cfg.optimizer.name)
    opt_params = cfg.optimizer.params()
    optimizer = opt_spec.factory(**opt_params)
    base_lr = float(opt_params.get("lr", 1.0))
    state = optimizer.init(params)

    n = train_d.n
    full_batch = opt_spec.full_batch or cfg.batch_size >= n
    bs = n if full_batch else cfg.batch_size
    steps_per_epoch = math.ceil(n / bs)
    schedule = plugins.get("schedule", cfg.schedule.name).factory(
        total_steps=cfg.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
        **cfg.schedule.params(),
    )
    l2 = effective_l2(cfg, n)
    rng = np.random.default_rng(cfg.seed)
    xp = backend.namespace()

    def batch_closure(Xb: Array, Yb: Array) -> Callable[[Params], tuple[Array, Params]]:
        return lambda p: model.loss_and_grad(p, Xb, Yb, l2)

    full_closure = batch_closure(train_d.X, train_d.Y)
    result = TrainResult(params={}, l2=l2)
    step, last_finite = 0, float("nan")
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        running = None  # device scalar: Σ batch loss · batch rows, read once per log interval
        if full_batch:
            params, state, loss = optimizer.update(params, state, full_closure,
                                                   base_lr * schedule(step))
            running = loss * n
            step += 1
            if on_log and step % cfg.log_every == 0:
                on_log(step, float(backend.to_host(loss)))
        else:
            order = backend.from_host(rng.permutation(n), device, "int64")
            for start in range(0, n, bs):
                idx = order[start:min(start + bs, n)]
                closure = batch_closure(xp.take(train_d.X, idx, axis=0),
                                        xp.take(train_d.Y, idx, axis=0))
                params, state, loss = optimizer.update(params, state, closure,
                                                       base_lr * schedule(step))
                weighted = loss * idx.shape[0]
                running = weighted if running is None else running + weighted
                step += 1
                if step % cfg.log_every == 0:
                    value = float(backend.to_host(loss))
                    if not math.isfinite(value):
                        _diverged(step, last_finite)
                    last_finite = value
                    if on_log:
                        on_log(step, value)
        train_loss = float(backend.to_host(running)) / n
        if not math.isfinite(train_loss):
            _diverged(step, last_finite)
        last_finite = train_loss
        val = evaluate(backend, params, val_d)
        record = {
            "epoch": epoch, "step": step, "train_loss": train_loss,
            "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "lr": base_lr * schedule(max(step - 1, 0)),
            "elapsed": time.perf_counter() - t_start,
        }
        result.history.append(record)
        if on_epoch:
            on_epoch(record)
    backend.synchronize(device)
    result.train_seconds = time.perf_counter() - t_start
    result.steps = step
    result.params = {name: np.asarray(backend.to_host(v)) for name, v in params.items()}
    return result


def _diverged(step: int, last_finite: float) -> None:
    last = f"{last_finite:.6g}" if math.isfinite(last_finite) else "none yet"
    raise DivergenceError(
        f"training diverged at step {step}: the loss is NaN/inf (last finite loss: {last}); "
        "lower optimizer.lr or add a schedule with warmup",
        where="train",
    )
