"""The training loop: host data in, host parameters out, everything between on the device.

The Trainer is a loop over an engine (:class:`~smx.types.Backend`) and an
optimizer, either a gradient transformation (one compiled step per batch:
the objective's partial, the transformation, the update) or a full-batch
solver handed the objective's value-and-gradient. Data and initial parameters
cross to the device once. Each epoch draws its batch order from a host RNG
seeded by the run (so every backend sees the same batches) and sends only that
index vector. The loss is read on the host only every ``log_every`` steps and
at the end of each epoch.

:class:`Trainer` keeps the loop's state in one place (parameters, optimizer
state, step, RNG, history) so that stopping rules, checkpoints and resumption
act on it between epochs without reaching into the hot loop.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from smx import hardware, model
from smx.checkpoint import map_arrays
from smx.config import RunConfig, check_backend_options
from smx.datasets.split import Splits
from smx.errors import (
    ConfigError,
    DataError,
    DivergenceError,
    ModelFileError,
    PluginError,
    SmxError,
)
from smx.objective import Objective
from smx.optimizers.transforms import chain, clip_by_global_norm
from smx.step import TrainStep
from smx.stopping import EarlyStopping, StopRule, optimizer_converged
from smx.types import Array, Backend, Block, Params, SolverSpec

#: what ``state_dict`` writes; 0.1's checkpoints (no format) held another optimizer state,
#: and format 2 (smx 2.0) kept step counts as Python ints and no count for a schedule
#: (:func:`upgrade_state` reads it)
STATE_FORMAT = 3
READABLE_FORMATS = (2, 3)


def upgrade_state(state: Any, template: dict[str, Any]) -> Any:
    """A format-2 checkpoint's state in format 3, shaped by ``template`` (a fresh Trainer's
    ``state_dict()``): each step count that was a Python int becomes a 0-d array, and a
    scheduled learning rate's link, which kept no state, gets the run's step as its count
    (the schedule was evaluated at the run's step). Anything else comes back unchanged."""
    if not isinstance(state, dict) or state.get("format") != 2:
        return state
    step = state.get("step")

    def up(saved: Any, fresh: Any) -> Any:
        if isinstance(fresh, dict) and isinstance(saved, dict):
            return {k: up(v, fresh[k]) if k in fresh else v for k, v in saved.items()}
        if isinstance(fresh, dict) and set(fresh) == {"count"} and saved == ():
            return {"count": np.asarray(step, dtype=fresh["count"].dtype)}
        if isinstance(fresh, tuple) and isinstance(saved, tuple) and len(saved) == len(fresh):
            return tuple(up(v, f) for v, f in zip(saved, fresh, strict=True))
        if (isinstance(fresh, np.ndarray) and fresh.shape == () and fresh.dtype.kind in "iu"
                and isinstance(saved, int) and not isinstance(saved, bool)):
            return np.asarray(saved, dtype=fresh.dtype)
        return saved

    return {**state, "format": STATE_FORMAT,
            "opt_state": up(state.get("opt_state"), template["opt_state"])}


def init_params(n_features: int, n_classes: int, cfg: RunConfig) -> dict[str, np.ndarray]:
    """Host-side, seeded initial parameters: identical on every backend."""
    rng = np.random.default_rng(cfg.seed)
    W = rng.normal(0.0, cfg.model.init_scale, size=(n_features, n_classes))
    params = {"W": W}
    if cfg.model.fit_intercept:
        params["b"] = np.zeros(n_classes)
    return params


def check_weight_total(total: float, dtype: str) -> None:
    """Refuse weights whose sum the run's dtype cannot hold with room to spare: the loss
    is Σ wᵢ·lossᵢ / Σ wᵢ, which overflows (weights near 1e308) or loses every digit
    (subnormal weights near 1e-320) long before the optimizer sees a finite number."""
    f = np.finfo(np.dtype(dtype))
    lo, hi = float(f.tiny / f.eps), float(f.max * f.eps)
    if not lo <= total <= hi:
        raise DataError(f"sample_weight sums to {total:.3g} over the training part, outside "
                        f"what {dtype} training can sum ({lo:.2g} to {hi:.2g}); rescale the "
                        "weights (their ratios are what matter)", where="data.sample_weight")


def effective_l2(cfg: RunConfig, weight_sum: float) -> float:
    """scikit-learn's C (C·Σ r·loss + ½‖W‖²) is our weighted mean loss + l2/2‖W‖² with
    l2 = 1/(C·Σr): ``weight_sum`` is the training rows' total weight (n when unweighted)."""
    return 1.0 / (cfg.model.C * weight_sum) if cfg.model.C is not None else cfg.model.l2


def _given(y_train: np.ndarray | None) -> np.ndarray:
    """The training labels, which a caller without ``totals`` must pass."""
    if y_train is None:
        raise TypeError("class weights need y_train or totals")
    return y_train


def class_weights(spec: Any, classes: np.ndarray, y_train: np.ndarray | None,
                  w_train: np.ndarray | None = None, *, totals: np.ndarray | None = None
                  ) -> np.ndarray | None:
    """The config's ``loss.class_weight`` as one weight per class index (host, float64).

    ``balanced`` is scikit-learn's ``n / (K · count_k)`` (with sample weights, their
    sums replace the counts, as in scikit-learn); a mapping names user labels, and a
    class it does not name weighs 1. ``totals`` (each class's training weight, from a
    partitioned source's reductions) stand in for ``y_train`` and ``w_train``."""
    if spec is None:
        return None
    k = len(classes)
    if spec == "balanced":
        counts = (np.asarray(totals, np.float64) if totals is not None else
                  np.bincount(_given(y_train), weights=w_train, minlength=k).astype(np.float64))
        return counts.sum() / (k * np.where(counts > 0, counts, 1.0))
    known: dict[Any, int] = {}
    for i, c in enumerate(classes.tolist()):
        for key in _label_keys(c):
            known.setdefault(key, i)
    out = np.ones(k)
    for label, weight in spec.items():
        found = next((known[key] for key in _label_keys(label) if key in known), None)
        if found is None:
            shown = ", ".join(repr(c) for c in classes.tolist()[:10])
            raise ConfigError(f"class {label!r} is not among the labels ({shown}"
                              f"{', ...' if k > 10 else ''})", where="loss.class_weight")
        out[found] = weight
    per_class = (np.asarray(totals, np.float64) if totals is not None else
                 np.bincount(_given(y_train), weights=w_train, minlength=k).astype(np.float64))
    if not (per_class * out).any():  # a weighted mean over nothing: refuse, not 0/0
        raise ConfigError("gives weight 0 to every class in the training part; some "
                          "class must weigh more than 0", where="loss.class_weight")
    return out


def _check_init_range(params: dict[str, np.ndarray], cfg: RunConfig) -> None:
    """Initial weights the run's dtype cannot hold would overflow to inf on placement and
    diverge at the first step: refuse the setting that drew them."""
    top = np.finfo(np.dtype(cfg.dtype)).max
    big = max(float(np.max(np.abs(v), initial=0.0)) for v in params.values())
    if not big < top:
        raise ConfigError(f"{cfg.model.init_scale:g} draws initial weights up to {big:.3g}, "
                          f"beyond what {cfg.dtype} holds ({top:.3g}); use a scale near 0.01",
                          where="model.init_scale")


def _host(backend: Backend, array: Any) -> np.ndarray | None:
    """``array`` as NumPy: as it is when it already is, else through the backend."""
    if array is None or isinstance(array, np.ndarray):
        return array
    return np.asarray(backend.to_host(array))


def _label_keys(label: Any) -> list[tuple[str, Any]]:
    """What a label matches by, in order: its value, as scikit-learn matches class_weight
    keys (1 == 1.0 == np.int64(1); booleans and text have none), then its text, for a YAML
    key whose type the data does not share (1 vs "1")."""
    value = label.item() if hasattr(label, "item") else label
    keys: list[tuple[str, Any]] = [("text", str(value))]
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        keys.insert(0, ("value", float(value)))
    return keys


def evaluate(backend: Backend, objective: Objective, params: Params, data: Block, *,
             accuracy: bool = True) -> dict[str, float | None]:
    """The loss without penalty (weighted as in training) and accuracy (unless not asked
    for: a second pass over the data), read back in one host transfer; None for an empty
    split (there is nothing to measure, and NaN is not valid JSON), and a loss of None
    where the rows' weights (sample times class) sum to 0: a weighted mean of nothing."""
    if data.n == 0:
        return {"loss": None, "accuracy": None}
    xp = array_namespace(params["W"])  # data.X may be scipy.sparse (NumPy engine)
    dtype = params["W"].dtype
    part = backend.partial(lambda b: objective.partial(params, b, grad=False), data)
    values = [xp.astype(objective.finish(part, params, penalty=False)[0], dtype)]
    weighted = not isinstance(part.weight, int)  # an int: the unweighted row count, > 0
    if weighted:
        values.append(xp.astype(xp.asarray(part.weight), dtype))
    if accuracy:
        values.append(model.accuracy(params, data.X, data.y))
    read = [float(v) for v in np.asarray(backend.to_host(xp.stack(values)))]
    loss = None if weighted and not read[1] > 0 else read[0]
    return {"loss": loss, "accuracy": read[-1] if accuracy else None}


@dataclass(frozen=True)
class _WeightPlan:
    """What the training weights decide before placement: class weights (host), and the
    total weight the C ↔ l2 conversion scales by."""

    class_weight: np.ndarray | None
    weight_sum: float


@dataclass(frozen=True)
class _Constant:
    """A schedule that never changes (a factory returned a number)."""

    value: float

    def __call__(self, count: Any) -> float:
        return self.value


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


def _in_run_context(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` inside the engine's :meth:`~smx.types.Backend.run_context` (JAX: 64-bit
    types in a float64 run): the loop's own arithmetic runs between the engine's calls, so
    each of the Trainer's entry points holds it, and nothing outlives the call."""
    @functools.wraps(method)
    def scoped(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        with self.backend.run_context(self.cfg.dtype):
            return method(self, *args, **kwargs)

    return scoped


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
        self.cfg, self.backend, self.device, self.plugins = cfg, backend, device, plugins
        backend.configure(backend.options.model_validate(check_backend_options(cfg, backend)))
        with backend.run_context(cfg.dtype):
            plan = self._plan_weights(splits)
            cw = self._place(splits, initial, plan.class_weight)
            self._plan_objective(plan, cw)
            self._plan_optimizer()
            self._compile_step()
        self.step = 0
        self.threads: int | None = None  # the thread limit fit() applied (None: none)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.last_finite = float("nan")
        #: train_loss of the current parameters, as their epoch's record has it (None: none yet)
        self.params_train_loss: float | None = None
        self.elapsed = 0.0  # training seconds, summed over epochs (and over resumed runs)
        self.stop_reason: str | None = None  # set when a stop rule ends the run early
        # stopping rules, each asked after every epoch (should_stop); append more to compose
        self.early_stopping = EarlyStopping.from_config(cfg.early_stopping)
        self.stop_rules: list[StopRule] = [optimizer_converged]
        if self.early_stopping:
            self.stop_rules.append(self.early_stopping)

    # --- construction: the plan (host), the placement (device), the step -------------------

    def _plan_weights(self, splits: Splits) -> _WeightPlan:
        """Host-side checks and sums of the training weights, before anything is placed.

        Labels and weights are small (n numbers) next to X, which may already live on the
        engine's device; a partitioned source's reductions give each class's total instead
        (no labels read)."""
        cfg, backend = self.cfg, self.backend
        w_train = getattr(splits, "w_train", None)
        totals = getattr(splits.y_train, "class_totals", None)
        y_host, w_host = (None, None) if totals is not None else (
            _host(backend, splits.y_train), _host(backend, w_train))
        total = (np.asarray(totals).sum() if totals is not None else
                 None if w_host is None else w_host.sum())
        if total is not None and not total > 0:  # the loss would be a mean over nothing
            raise DataError("sample_weight is zero for every row of the training part",
                            where="data.sample_weight")
        if total is not None:
            check_weight_total(float(total), cfg.dtype)
        cw_host = class_weights(cfg.loss.class_weight, splits.classes, y_host, w_host,
                                totals=totals)
        if model.is_sparse(splits.X_train) and not backend.accepts_sparse:
            raise DataError(f"backend {backend.name!r} does not take sparse X; sparse X trains "
                            "on backend numpy or cupy (without densifying it), or pass "
                            f"X.toarray() to train on {backend.name!r}", where="backend")
        # the training rows' total weight (sample times class weights): the C ↔ l2 scale
        n = int(splits.X_train.shape[0])
        weight_sum = float(n if w_host is None else np.sum(w_host))
        if totals is not None:
            t = np.asarray(totals, np.float64)
            weight_sum = float(t.sum() if cw_host is None else cw_host @ t)
        elif cw_host is not None:
            r = cw_host[y_host]
            weight_sum = float(np.sum(r if w_host is None else r * w_host))
        return _WeightPlan(cw_host, weight_sum)

    def _place(self, splits: Splits, initial: dict[str, np.ndarray] | None,
               cw_host: np.ndarray | None) -> Array | None:
        """Data, initial parameters and class weights to the device, once; returns the
        class weights there."""
        cfg, backend, device, dtype = self.cfg, self.backend, self.device, self.cfg.dtype
        host_init = initial if initial is not None else init_params(
            splits.n_features, splits.n_classes, cfg)
        if initial is None:
            _check_init_range(host_init, cfg)
        w_train, w_val = getattr(splits, "w_train", None), getattr(splits, "w_val", None)
        try:
            self.train_data = backend.place(splits.X_train, splits.y_train, w_train, device,
                                            dtype)
            self.val_data = backend.place(splits.X_val, splits.y_val, w_val, device, dtype)
            self.params: Params = {name: backend.from_host(v, device, dtype)
                                   for name, v in host_init.items()}
            return None if cw_host is None else backend.from_host(cw_host, device, dtype)
        except MemoryError as exc:  # CuPy's OutOfMemoryError is one
            raise DataError(f"the data does not fit in the memory of {backend.name} on {device} "
                            f"({type(exc).__name__}: {exc}); use a smaller dataset"
                            + (" or dtype=float32" if dtype == "float64" else ""),
                            where="device") from None

    def _plan_objective(self, plan: _WeightPlan, cw: Array | None) -> None:
        cfg = self.cfg
        with _plugin_call("loss", cfg.loss.name):
            self.loss = self.plugins.get("loss", cfg.loss.name).factory(**cfg.loss.params())
        self.l2 = effective_l2(cfg, plan.weight_sum)
        self.objective = Objective(self.loss, self.l2, class_weight=cw,
                                   kernel=self.backend.kernel(self.loss))

    def _plan_optimizer(self) -> None:
        """The optimizer (a transformation with its learning-rate schedule as a link, or a
        full-batch solver), the batch geometry, and its initial state on the device."""
        cfg, plugins = self.cfg, self.plugins
        self.opt_spec = plugins.get("optimizer", cfg.optimizer.name)
        opt_params = cfg.optimizer.params()
        is_solver = isinstance(self.opt_spec, SolverSpec)
        n = self.train_data.n
        self.full_batch = is_solver or cfg.batch_size >= n
        self.batch_size = n if self.full_batch else cfg.batch_size
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.base_lr = float(opt_params.get("lr", 1.0))
        with _plugin_call("schedule", cfg.schedule.name):
            multiplier = plugins.get("schedule", cfg.schedule.name).factory(
                total_steps=cfg.epochs * self.steps_per_epoch,
                steps_per_epoch=self.steps_per_epoch, **cfg.schedule.params(),
            )
        self.schedule = multiplier if callable(multiplier) else _Constant(float(multiplier))
        self.solver = self.transform = None
        with _plugin_call("optimizer", cfg.optimizer.name):
            if is_solver:
                self.solver = self.opt_spec.factory(**opt_params)
                self.opt_state = self.solver.init(self.params)
            else:
                if "lr" in opt_params:  # the schedule is the rate's last link, in the step
                    opt_params["lr"] = self.learning_rate()
                tx = self.opt_spec.factory(**opt_params)
                if cfg.clip_grad_norm is not None:  # first link: every optimizer, plugins too
                    tx = chain(clip_by_global_norm(cfg.clip_grad_norm), tx)
                self.transform = tx
                self.opt_state = tx.init(self.params)

    def learning_rate(self) -> float | Callable[[Any], Any]:
        """What the transformation scales by: ``lr`` times the schedule, a number when the
        schedule is constant (no step count kept), else a function of the step count."""
        base, schedule = self.base_lr, self.schedule
        if isinstance(schedule, _Constant):
            return base * schedule.value
        return lambda count: base * schedule(count)

    def _compile_step(self) -> None:
        """The one core step (:class:`~smx.step.TrainStep`), as this engine runs it: an
        epoch per call, a fused step per call, or the compiled step per batch."""
        cfg, backend = self.cfg, self.backend
        self.rng = np.random.default_rng(cfg.seed)
        if cfg.shuffle == "batches" and not self.full_batch:
            # one row shuffle per run (drawn before any epoch's, so a resumed run, whose RNG
            # state comes back afterwards, gets the same copy), then contiguous batches
            perm = backend.from_host(self.rng.permutation(self.train_data.n), self.device,
                                     "int64")
            self.train_data = backend.batch(self.train_data, perm)
        self.xp = backend.namespace()
        self.fused_step = self.fused_epoch = None
        if self.transform is not None:
            sharded = type(backend).partial is not Backend.partial
            self.core_step = TrainStep(self.objective, self.transform,
                                       backend.partial if sharded else None)
            core = self.core_step
            self.train_step = backend.compile(
                lambda params, state, X, y, w: core(params, state, Block(X, y, w)))
            if not self.full_batch:
                self.fused_epoch = backend.fused_epoch(core, self.train_data)
                if self.fused_epoch is None:
                    self.fused_step = backend.fused_step(core, self.train_data)
        else:  # the solver's host loop calls a compiled full-batch value-and-gradient
            self.full_value_and_grad = backend.compile(
                lambda params, X, y, w: self.value_and_grad(params, Block(X, y, w)))

    @_in_run_context
    def value_and_grad(self, params: Params, data: Block | None = None
                       ) -> tuple[Array, Params]:
        """The objective and its gradient over ``data`` (default: the whole training set),
        through the engine's ``partial`` (one block, or shards tree-summed)."""
        data = self.train_data if data is None else data
        objective = self.objective  # the partial closes over it, not the trainer: an engine
        part = self.backend.partial(lambda b: objective.partial(params, b), data)  # may ship it
        return objective.finish(part, params)  # type: ignore[return-value]

    def close(self) -> None:
        """Drop every device array this trainer holds (data, parameters, optimizer state,
        the best epoch's parameters), so the backend's ``release`` can free their memory.
        The trainer cannot train after this; its host-side history stays."""
        self.train_data = self.val_data = None  # type: ignore[assignment]
        self.fused_step = self.fused_epoch = None
        self.params = {}
        self.opt_state = None
        if self.early_stopping is not None:
            self.early_stopping.best_params = None

    def lr(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based), on the host: what records show."""
        return float(self.base_lr * self.schedule(float(step)))

    @_in_run_context
    def run_epoch(self, on_log: LogCallback | None = None) -> float:
        """One pass over the training set; returns its mean batch loss (one host read)."""
        cfg, backend, data = self.cfg, self.backend, self.train_data
        n = data.n
        params, state, step = self.params, self.opt_state, self.step
        if self.solver is not None:
            compiled = self.full_value_and_grad
            params, state, loss = self.solver.step(
                params, state, lambda p: compiled(p, data.X, data.y, data.w), self.lr(step))
            running = loss
            step += 1
            if step % cfg.log_every == 0:
                self._logged(step, loss, params, on_log)
        elif self.full_batch:
            params, state, loss = self.train_step(params, state, data.X, data.y, data.w)
            running = loss  # batch_size == n
            step += 1
            if step % cfg.log_every == 0:
                self._logged(step, loss, params, on_log)
        elif self.fused_epoch is not None:  # the engine runs the epoch's steps in one call
            host_order, bounds = self.batch_order(n)
            params, state, running, trace = self.fused_epoch(params, state, data, host_order,
                                                             bounds)
            logged = [i for i in range(len(bounds))
                      if (step + i + 1) % cfg.log_every == 0]
            if logged:
                self._logged_trace(step, logged, trace, list(params), on_log)
            step += len(bounds)
        else:
            running = None  # device scalar: Σ batch loss · batch rows / batch_size
            bs, fused = self.batch_size, self.fused_step
            host_order, bounds = self.batch_order(n)
            # a fused step takes host indices (a jitted call moves them with its arguments;
            # slicing a device array costs a dispatch per step), the portable one device ones
            order = host_order if fused is not None else backend.from_host(
                host_order, self.device, "int64")
            for start, stop in bounds:
                idx = order[start:stop]
                if fused is not None:  # gathers, steps and updates in one engine call
                    params, state, loss = fused(params, state, data, idx)
                else:
                    # gather class indices, not one-hot rows: n ints instead of n·K floats
                    batch = backend.batch(data, idx)
                    params, state, loss = self.train_step(params, state, batch.X, batch.y,
                                                          batch.w)
                rows = idx.shape[0]  # one add per step; only a short last batch is scaled
                weighted = loss if rows == bs else loss * (rows / bs)
                running = weighted if running is None else running + weighted
                step += 1
                if step % cfg.log_every == 0:
                    self._logged(step, loss, params, on_log)
        params, state = backend.materialize((params, state))
        self.params, self.opt_state, self.step = params, state, step
        guarded = float(backend.to_host(self._guarded(running, params)))
        train_loss = guarded * self.batch_size / n
        if not math.isfinite(train_loss):
            self._diverged(running, params)
        self.last_finite = train_loss
        return train_loss

    def batch_order(self, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """This epoch's row order and each batch's (start, stop) in it, from the host RNG
        (so every backend sees the same batches): ``shuffle: rows`` permutes the rows;
        ``batches`` keeps each batch of the once-shuffled data whole and permutes their
        order (a short last batch goes wherever it falls)."""
        bs = self.batch_size
        # an engine's own (Dask: within chunks)
        if (got := self.backend.batch_order(self.train_data, bs, self.rng)) is not None:
            return got
        if self.cfg.shuffle == "rows":
            return self.rng.permutation(n), [(s, min(s + bs, n)) for s in range(0, n, bs)]
        starts = self.rng.permutation(np.arange(0, n, bs))
        order = np.concatenate([np.arange(s, min(s + bs, n)) for s in starts])
        bounds, pos = [], 0
        for s in starts.tolist():
            rows = min(s + bs, n) - s
            bounds.append((pos, pos + rows))
            pos += rows
        return order, bounds

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

    def _logged_trace(self, first: int, logged: list[int], trace: Array, names: list[str],
                      on_log: LogCallback | None) -> None:
        """``_logged`` for the steps ``logged`` of an epoch an engine ran in one call, from
        its trace (one host read: each step's loss and parameter sums)."""
        rows = np.asarray(self.backend.to_host(trace), dtype=np.float64)
        for i in logged:
            loss, sums = float(rows[i, 0]), rows[i, 1:]
            if not (math.isfinite(loss) and np.isfinite(sums).all()):
                self.step = first + i + 1
                bad = [k for k, v in zip(names, sums, strict=True) if not math.isfinite(v)]
                self._divergence("the loss is NaN/inf" if not math.isfinite(loss) else
                                 f"the parameters ({', '.join(bad)}) contain NaN/inf")
            self.last_finite = loss
            if on_log:
                on_log(first + i + 1, loss)

    def _diverged(self, loss: Array, params: Params) -> None:
        """Raise DivergenceError; a second host read (only here) says whether loss or params."""
        what = "the loss is NaN/inf"
        if math.isfinite(float(self.backend.to_host(loss))):
            bad = [k for k, p in params.items()
                   if not math.isfinite(float(self.backend.to_host(self.xp.sum(p))))]
            what = f"the parameters ({', '.join(bad)}) contain NaN/inf"
        self._divergence(what)

    def _divergence(self, what: str) -> None:
        last = f"{self.last_finite:.6g}" if math.isfinite(self.last_finite) else "none yet"
        raise DivergenceError(
            f"training diverged at step {self.step}: {what} (last finite loss: "
            f"{last}); lower optimizer.lr or add a schedule with warmup",
            where="train",
        )

    @_in_run_context
    def end_epoch(self, train_loss: float, seconds: float) -> dict[str, Any]:
        self.epoch += 1
        self.elapsed += seconds
        val = evaluate(self.backend, self.objective, self.params, self.val_data)
        # train_loss means one thing everywhere (as val_loss, and summary.json's): the loss
        # (without the penalty) of the epoch's final parameters on the training split, not
        # the penalised batch losses averaged while the parameters moved. A solver's epoch
        # ends with the objective at its new parameters (``Solver.step``): the penalty off
        # it is that loss (to rounding) without a second pass over the data (which doubled
        # an L-BFGS run's time)
        if self.solver is not None:
            train_loss = self._unpenalised(train_loss)
        else:
            train_loss = evaluate(self.backend, self.objective, self.params, self.train_data,
                                  accuracy=False)["loss"]  # type: ignore[assignment]  # rows
        self.params_train_loss = train_loss
        record = {
            "epoch": self.epoch, "step": self.step, "train_loss": train_loss,
            "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "lr": self.lr(max(self.step - 1, 0)), "elapsed": self.elapsed,
        }
        self.history.append(record)
        return record

    def _unpenalised(self, value: float) -> float:
        """``value`` less ``l2/2·‖W‖²`` at the current parameters (one host read)."""
        if not self.l2:
            return value
        W = self.params["W"]
        return value - 0.5 * self.l2 * float(self.backend.to_host(self.xp.sum(W * W)))

    @_in_run_context
    def should_stop(self) -> str | None:
        """A reason to stop before ``epochs`` (None: go on).

        Every rule is asked, even after one fires, so each sees every epoch (the
        best epoch is then known when another rule ends the run); the first reason wins.
        """
        reasons = [reason for rule in self.stop_rules if (reason := rule(self))]
        return reasons[0] if reasons else None

    @_in_run_context
    def restore_best(self) -> int | None:
        """With ``early_stopping.restore_best``, go back to the best epoch's parameters."""
        es = self.early_stopping
        if es is None or es.best_params is None:
            return None
        self.params = es.best_params
        self.params_train_loss = self.history[es.best_epoch - 1]["train_loss"]
        return es.best_epoch

    @_in_run_context
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
            "format": STATE_FORMAT,
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

    @_in_run_context
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (each array keeps its saved dtype), after
        checking that it fits this run: its format, the parameters' shapes, and the
        optimizer state's structure against a fresh one."""
        state = upgrade_state(state, self.state_dict())
        if state.get("format") != STATE_FORMAT:
            raise ModelFileError(
                "this checkpoint was written by smx 0.1, whose optimizer state this version "
                "does not read; start the run again", where="checkpoint")
        params = state["params"]
        expected = {k: tuple(v.shape) for k, v in self.params.items()}
        got = ({k: tuple(np.shape(v)) for k, v in params.items()}
               if isinstance(params, dict) else params)
        if got != expected:
            raise ModelFileError(f"checkpoint parameters {got} do not fit this run's "
                                 f"model {expected}", where="checkpoint")
        problem = tree_mismatch(self.opt_state, state["opt_state"], expected)
        if problem:
            raise ModelFileError(f"the optimizer state does not fit {self.cfg.optimizer.name!r} "
                                 f"with this config: {problem}", where="checkpoint")

        def put(a: np.ndarray) -> Array:
            return self.backend.from_host(a, self.device, np.asarray(a).dtype.name)

        memo: dict[int, Any] = {}
        self.params = map_arrays(params, put, memo)
        self.opt_state = map_arrays(state["opt_state"], put, memo)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.elapsed, self.last_finite = float(state["elapsed"]), float(state["last_finite"])
        self.rng.bit_generator.state = state["rng"]
        self.history = [dict(r) for r in state["history"]]
        self.params_train_loss = self.history[-1]["train_loss"] if self.history else None
        self.stop_reason = state["stop_reason"]
        if self.early_stopping is not None and state["early_stopping"] is not None:
            es, saved = self.early_stopping, state["early_stopping"]
            es.best, es.best_epoch, es.wait = saved["best"], saved["best_epoch"], saved["wait"]
            es.best_params = map_arrays(saved["best_params"], put, memo)

    @_in_run_context
    def host_params(self) -> dict[str, np.ndarray]:
        """Host copies: a fused step (``Backend.fused_step``) goes on updating its own."""
        return {name: np.array(self.backend.to_host(v)) for name, v in self.params.items()}

    @_in_run_context
    def fit(self, *, on_epoch: EpochCallback | None = None,
            on_log: LogCallback | None = None, epochs: int | None = None) -> TrainResult:
        """Train until a stop rule fires or ``epochs`` are done (default: the config's; fewer
        for a caller that runs a longer schedule a slice at a time, as the estimator's
        ``partial_fit`` does), with the run's ``threads``."""
        self.threads = hardware.resolve_threads(self.cfg.threads)
        with self.backend.cpu_threads(self.threads):
            return self._fit(on_epoch, on_log, self.cfg.epochs if epochs is None else epochs)

    def _fit(self, on_epoch: EpochCallback | None, on_log: LogCallback | None,
             epochs: int) -> TrainResult:
        while self.stop_reason is None and self.epoch < epochs:
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


def tree_mismatch(fresh: Any, loaded: Any, shapes: dict[str, tuple[int, ...]],
                  path: str = "opt_state") -> str | None:
    """Where ``loaded`` departs from the structure of ``fresh`` (None: it fits).

    Containers must match in kind, keys and length; arrays in shape. An empty list
    (L-BFGS's history) may hold parameter-shaped trees; a None (a value not computed
    yet) may hold a 0-d array or a parameter-shaped tree."""
    def is_array(x: Any) -> bool:
        return hasattr(x, "shape") and hasattr(x, "dtype")

    def params_like(x: Any) -> bool:
        return (isinstance(x, dict) and set(x) == set(shapes)
                and all(is_array(v) and tuple(v.shape) == shapes[k] for k, v in x.items()))

    if isinstance(fresh, dict):
        if not isinstance(loaded, dict) or set(loaded) != set(fresh):
            return f"{path} should have the keys {sorted(fresh)}"
        for key in fresh:
            if (why := tree_mismatch(fresh[key], loaded[key], shapes, f"{path}.{key}")):
                return why
        return None
    if isinstance(fresh, tuple):
        if not isinstance(loaded, tuple) or len(loaded) != len(fresh):
            return f"{path} should be a tuple of {len(fresh)}"
        for i, (a, b) in enumerate(zip(fresh, loaded, strict=True)):
            if (why := tree_mismatch(a, b, shapes, f"{path}[{i}]")):
                return why
        return None
    if isinstance(fresh, list):
        if not isinstance(loaded, list) or not all(
                params_like(x) or (isinstance(x, (int, float)) and not isinstance(x, bool))
                or (is_array(x) and x.ndim == 0) for x in loaded):
            return f"{path} should be a list of parameter-shaped entries"
        return None
    if fresh is None:
        if loaded is None or isinstance(loaded, (str, int, float)) or params_like(loaded) or (
                is_array(loaded) and loaded.ndim == 0):
            return None
        return f"{path} should be empty, a scalar or parameter-shaped"
    if is_array(fresh):
        if not is_array(loaded) or tuple(loaded.shape) != tuple(fresh.shape):
            return f"{path} should have shape {tuple(fresh.shape)}"
        return None
    if isinstance(fresh, bool) or not isinstance(fresh, (int, float, str)):
        return None if type(loaded) is type(fresh) else f"{path} has the wrong type"
    if isinstance(loaded, bool) or not (isinstance(loaded, (int, float, str)) or (
            is_array(loaded) and loaded.ndim == 0)):
        return f"{path} should be a number"
    if isinstance(loaded, (int, float)) and not math.isfinite(loaded):
        return f"{path} is not finite"
    if isinstance(fresh, int) and isinstance(loaded, int) and loaded < 0:
        return f"{path} is negative"
    return None


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
