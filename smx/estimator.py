"""A scikit-learn estimator over the same trainer the CLI uses.

Drop-in where ``LogisticRegression`` is used (pipelines, ``clone``, grid
search, every ``check_estimator`` check), with smx's choice of backend, device
and optimizer. Input is validated by scikit-learn's own helpers, so bad input
raises the ``ValueError`` (or ``TypeError``) a scikit-learn user expects.

Two classes are fitted as ``LogisticRegression`` fits them: one coefficient
vector. A two-column softmax with the penalty doubled is exactly that model
(the optimum has ``w0 = −w1``, and ``l2/2·(‖w0‖² + ‖w1‖²)`` at ``w1 − w0 = u``
is ``l2/4·‖u‖²``), so the trainer fits two columns at twice the l2 and the
estimator reports ``coef_ = w1 − w0``, ``intercept_ = b1 − b0``.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from scipy.special import log_expit, log_softmax
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from smx import estimator_dask
from smx.config import load_config
from smx.datasets.split import Splits, Standardizer, check_standardized
from smx.errors import ConfigError, DataError, ModelFileError, PluginError
from smx.estimator_dask import is_dask
from smx.estimator_input import (
    InvalidData,
    InvalidParameter,
    Where,
    array_place,
    check_native_magnitudes,
    check_row,
    check_sparse_magnitudes,
    cupyx_sparse,
    follow_x,
    host_values,
    input_namespace,
    known_engine,
    native_engine,
    native_labels,
    native_weights,
    to_namespace,
    to_numpy,
)
from smx.modelfile import FittedModel, load_model
from smx.types import SolverSpec

#: what fit and predict accept: float64 stays float64, float32 is not copied to float64
FLOAT_DTYPES = (np.float64, np.float32)
#: scipy.sparse formats taken as they are (others are converted to CSR)
SPARSE = ("csr", "csc")
DENSIFY = ("standardize=True would densify sparse X (centering); scale it instead, e.g. with "
           "MaxAbsScaler")


_OVERFLOW = ("X holds values so large that the scores (X @ coef_.T + intercept_) overflow; "
             "rescale X as it was at fit time")


_SMX = str(Path(__file__).resolve().parent) + os.sep


def callers_stacklevel() -> int:
    """The ``stacklevel`` that points a warning issued by the calling function at the first
    frame outside smx: the line of the user's code that called the estimator."""
    frame: Any = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_SMX):
        frame, level = frame.f_back, level + 1
    return level


def warns_at_callers_line(method: Any) -> Any:
    """Re-issue the warnings ``method`` raises (smx's own and those of the scikit-learn
    helpers it calls) at the caller's line, where a scikit-learn user looks for them."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                return method(*args, **kwargs)
        finally:
            level = callers_stacklevel()
            for w in caught:
                warnings.warn(w.message, w.category, stacklevel=level)
    return wrapper


def _minibatch(est: SoftmaxRegression) -> bool:
    """``partial_fit`` exists for a minibatch optimizer (a gradient transformation), not
    for a full-batch solver such as L-BFGS; an unknown name keeps it, for fit's error."""
    from smx.plugins import get_plugins

    try:
        spec = get_plugins().get("optimizer", est.optimizer)
    except Exception:
        return True
    return not isinstance(spec, SolverSpec)


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression: weighted mean loss (cross-entropy unless ``loss``
    names another loss plugin) + l2/2·‖W‖².

    ``C`` (scikit-learn's convention, l2 = 1/(C·Σ sample weights)) overrides ``l2``
    when given; ``C=np.inf`` is no penalty (l2 = 0). ``max_iter`` and ``tol`` are
    scikit-learn's names for ``epochs`` (L-BFGS: iterations) and L-BFGS's gradient
    tolerance; they win when given.
    ``loss_params``, ``optimizer_params``, ``schedule_params`` and ``backend_options`` are
    the plugins' own options, validated exactly as in a YAML config. Training starts from
    zero weights, as scikit-learn does; ``random_state`` seeds the batch order of minibatch
    optimizers. ``warm_start=True`` starts each fit from the previous fit's coefficients;
    ``partial_fit`` (minibatch optimizers) runs one epoch over the data it is given, keeping
    the optimizer's state between calls, as ``SGDClassifier.partial_fit`` does.
    """

    def __init__(
        self,
        *,
        l2: float = 1e-4,
        C: float | None = None,
        fit_intercept: bool = True,
        class_weight: str | dict[Any, float] | None = None,
        loss: str = "cross_entropy",
        loss_params: dict[str, Any] | None = None,
        optimizer: str = "lbfgs",
        optimizer_params: dict[str, Any] | None = None,
        schedule: str = "constant",
        schedule_params: dict[str, Any] | None = None,
        epochs: int = 100,
        max_iter: int | None = None,
        tol: float | None = None,
        batch_size: int = 64,
        backend: str = "numpy",
        backend_options: dict[str, Any] | None = None,
        device: str = "auto",
        fallback: str = "none",
        dtype: str = "float64",
        standardize: bool = False,
        warm_start: bool = False,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.l2 = l2
        self.C = C
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.loss = loss
        self.loss_params = loss_params
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.schedule = schedule
        self.schedule_params = schedule_params
        self.epochs = epochs
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.backend = backend
        self.backend_options = backend_options
        self.device = device
        self.fallback = fallback
        self.dtype = dtype
        self.standardize = standardize
        self.warm_start = warm_start
        self.random_state = random_state

    # --- fitting ---------------------------------------------------------------------------

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return int(rs)
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    def _check_params(self) -> None:
        """What the config cannot tell apart: flags that are not booleans, plugin options
        that are not dicts, and loss options that are the estimator's own parameters."""
        # truthiness would read "no" as True
        for name in ("fit_intercept", "standardize", "warm_start"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InvalidParameter(f"{name} must be True or False, got "
                                       f"{getattr(self, name)!r}")
        for name in ("loss_params", "optimizer_params", "schedule_params", "backend_options"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise InvalidParameter(f"{name} must be a dict of the plugin's options or "
                                       f"None, got {type(getattr(self, name)).__name__}")
        for key, own in (("name", "loss"), ("class_weight", "class_weight")):
            if key in (self.loss_params or {}):
                raise InvalidParameter(f"loss_params must not hold {key!r}: it is the "
                                       f"estimator's {own}= parameter")

    def _config(self, binary: bool, backend: str | None = None):
        # two classes: the two-column softmax at twice the penalty is the binary model
        factor = 2.0 if binary else 1.0
        self._check_params()
        C, l2 = self.C, self.l2  # numbers scale; anything else goes to the config to refuse
        if isinstance(C, numbers.Real) and not isinstance(C, bool) and math.isinf(C) and C > 0:
            C, l2 = None, 0.0  # scikit-learn's C=np.inf: no penalty
        if isinstance(C, numbers.Real) and not isinstance(C, bool):
            C = C / factor
        if isinstance(l2, numbers.Real) and not isinstance(l2, bool):
            l2 = l2 * factor
        if isinstance(self.max_iter, numbers.Integral) and self.max_iter < 1:
            raise InvalidParameter(f"max_iter must be at least 1 (smx runs at least one "
                                   f"iteration), got {self.max_iter}")
        optimizer = {"name": self.optimizer, **(self.optimizer_params or {})}
        if self.tol is not None:
            optimizer["tol"] = self.tol
        class_weight = self.class_weight
        if isinstance(class_weight, dict):  # numpy labels as the plain keys the config takes
            class_weight = {(k.item() if isinstance(k, np.generic) else k): v
                            for k, v in class_weight.items()}
        try:
            return load_config({
                "model": {"l2": l2, "C": C, "fit_intercept": self.fit_intercept,
                          "init_scale": 0.0},
                "loss": {"name": self.loss, **(self.loss_params or {}),
                         "class_weight": class_weight},
                "optimizer": optimizer,
                "schedule": {"name": self.schedule, **(self.schedule_params or {})},
                "epochs": self.epochs if self.max_iter is None else self.max_iter,
                "batch_size": self.batch_size, "backend": backend or self.backend,
                "backend_options": self.backend_options or {}, "device": self.device,
                "fallback": self.fallback, "dtype": self.dtype,
                "seed": self._seed(),
            })
        except ConfigError as exc:
            raise InvalidParameter(str(exc)) from None

    @warns_at_callers_line
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> SoftmaxRegression:
        """Fit on (X, y), each row weighing ``sample_weight`` (default 1) times its
        class's weight (``class_weight``).

        A PyTorch tensor, a JAX array, a CuPy array or a cupyx.scipy.sparse matrix trains
        on that library and its device (with ``backend="auto"`` or that engine's name)
        without a trip through NumPy; an array of any other library a registered engine
        runs on (array-api-strict...) is checked where it lives and trains on that engine
        (handed over as the NumPy copy ``Backend.place`` takes). ``predict`` and
        ``predict_proba`` then answer in the input's library, as scikit-learn's array-API
        dispatch does. scipy.sparse X trains
        on the NumPy engine (or CuPy's, which copies it to the GPU as cupyx CSR), never
        densified. A dask array (``backend="dask"`` or ``"auto"``) stays on the Dask
        engine's cluster (``backend_options``: its address, ``chunk_rows``...): the checks
        are reductions there (:mod:`smx.estimator_dask`), and predictions of a dask array
        are lazy dask arrays."""

        y, sample_weight = follow_x(X, y=y, sample_weight=sample_weight)
        if is_dask(X) and self.backend in ("auto", "dask"):
            return self._fit_dask(X, y, sample_weight)
        native = native_engine(X, self.backend)
        where = input_namespace(X)  # the fitted attributes' namespace and device
        if native is not None and self.backend in ("auto", native[0]):
            return self._fit_native(X, y, sample_weight, *native)
        if native is not None and native[0] == "cupy":  # NumPy cannot read GPU memory
            raise ValueError(f"X is on the GPU (CuPy): it trains on backend='cupy' or 'auto', "
                             f"not {self.backend!r}; pass X.get() to train on the host")
        if native is not None:  # a tensor for the NumPy engine: its values, as NumPy reads
            X = host_values(X)
        y, sample_weight = host_values(y), host_values(sample_weight)
        X, y = validate_data(self, X, y, accept_sparse=SPARSE, dtype=FLOAT_DTYPES)
        if sp.issparse(X):
            if self.standardize:
                raise ValueError(DENSIFY)
            X = X.tocsr()
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        y_idx = y_idx.astype(np.int64).reshape(-1)
        w = None
        if sample_weight is not None:
            w = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                     ensure_non_negative=True)
        present = classes if w is None else np.unique(y[w > 0])
        if len(present) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but "
                f"the data contains only one class: {present[0]!r}" if len(present) else
                "every sample weight is zero: there is no class to learn")

        cfg = self._host_config(X, classes)
        self._train(cfg, self._host_splits(X, y_idx, w, classes, cfg), where=where)
        return self

    def _fit_dask(self, X: Any, y: Any, sample_weight: Any) -> SoftmaxRegression:
        """Train on the Dask engine with X left on the cluster (:mod:`smx.estimator_dask`):
        the checks are reductions there, and the engine's ``place`` rechunks the dask arrays
        to its ``chunk_rows``. The fitted attributes are NumPy, as dask-ml's are."""
        from smx.config import check_backend_options
        from smx.plugins import get_plugins

        cfg = self._config(binary=False, backend="dask")
        placement = _select(cfg, get_plugins())
        backend = placement.backend
        try:
            backend.configure(backend.options.model_validate(check_backend_options(cfg,
                                                                                   backend)))
        except ConfigError as exc:
            raise InvalidParameter(str(exc)) from None
        limit = "float32" if X.dtype == np.float32 else cfg.dtype
        try:
            Xd, y_idx, w, classes, std = estimator_dask.fit_inputs(
                self, X, y, sample_weight, backend, limit)
        except BaseException:
            backend.release(placement.device)  # the cluster smx started for the checks
            raise
        cfg = self._config(binary=len(classes) == 2, backend="dask")
        d = int(Xd.shape[1])
        empty, none = np.empty((0, d)), np.empty(0, np.int64)
        splits = Splits(classes=classes, X_train=Xd, y_train=y_idx, X_val=empty, y_val=none,
                        X_test=empty, y_test=none, standardizer=std, w_train=w)
        self.n_features_in_ = d
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._train(cfg, splits, "dask", where=None)
        return self

    def _host_config(self, X: Any, classes: np.ndarray) -> Any:
        cfg = self._config(binary=len(classes) == 2)
        if sp.issparse(X):
            cfg = cfg.model_copy(update={"backend": self._sparse_backend()})
        return cfg

    def _host_splits(self, X: Any, y_idx: np.ndarray, w: np.ndarray | None,
                     classes: np.ndarray, cfg: Any) -> Splits:
        """The training split of host data (NumPy or scipy.sparse), standardized when asked,
        after refusing values whose logits would overflow the training dtype."""
        std = _standardizer(X, w) if self.standardize else Standardizer.identity(X.shape[1])
        if not sp.issparse(X):
            try:
                check_standardized(std(X) if self.standardize else X, np.arange(len(X)),
                                   dtype=cfg.dtype, where="fit", columns=None, raw=X,
                                   standardized=self.standardize)
            except DataError as exc:
                raise InvalidData(str(exc)) from None
        else:
            check_sparse_magnitudes(X, cfg.dtype)
        empty = np.empty((0, X.shape[1]))
        none = np.empty(0, np.int64)
        return Splits(classes=classes, X_train=std(X) if self.standardize else X,
                      y_train=y_idx, X_val=empty, y_val=none, X_test=empty, y_test=none,
                      standardizer=std, w_train=w)

    @available_if(_minibatch)
    @warns_at_callers_line
    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> SoftmaxRegression:
        """One epoch of the minibatch optimizer over (X, y), continuing from the previous
        call (its coefficients, optimizer state, step count and batch order) or from
        ``fit``'s coefficients: data too large for one fit streams through in pieces, as
        through ``SGDClassifier.partial_fit``.

        ``classes`` (every label the stream holds) is required on the first call, and must
        not change. A schedule runs over ``max_iter`` (``epochs``) calls; ``C`` is read per
        call (l2 = 1/(C·Σ weights of the call's rows)), so streams usually set ``l2``.
        Arrays of other libraries train through their NumPy copy."""
        if self.standardize:
            raise ValueError("standardize=True needs the whole data's statistics, which "
                             "partial_fit never sees; scale the stream instead (e.g. "
                             "StandardScaler().partial_fit on each piece first)")
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' needs every class's count, which "
                             "partial_fit never sees; pass class_weight as a dict")
        first = not hasattr(self, "model_")
        where = input_namespace(X)
        y, sample_weight = follow_x(X, y=y, sample_weight=sample_weight)
        X, y, w = self._host_inputs(X, y, sample_weight, reset=first)
        classes = _stream_classes(classes, None if first else self.model_.classes, y)
        y_idx = np.searchsorted(classes, y).astype(np.int64).reshape(-1)
        cfg = self._host_config(X, classes)
        stream = getattr(self, "_stream", None) or {}
        self._train(cfg, self._host_splits(X, y_idx, w, classes, cfg), stream=stream,
                    where=where)
        return self

    def _host_inputs(self, X: Any, y: Any, sample_weight: Any, *, reset: bool
                     ) -> tuple[Any, np.ndarray, np.ndarray | None]:
        """(X, y, sample_weight) as NumPy (or scipy.sparse CSR) through scikit-learn's
        validation, whatever library they came in."""
        X, y, sample_weight = (to_numpy(a) for a in (X, y, sample_weight))
        X, y = validate_data(self, X, y, accept_sparse=SPARSE, dtype=FLOAT_DTYPES,
                             reset=reset)
        if sp.issparse(X):
            X = X.tocsr()
        check_classification_targets(y)
        w = None if sample_weight is None else _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        return X, y, w

    def _train(self, cfg: Any, splits: Splits, engine: str | None = None,
               stream: dict[str, Any] | None = None, where: Where = None) -> None:
        """Place, train and set the fitted attributes: from zero, from the previous fit
        (``warm_start``, and ``partial_fit``), or continuing a ``partial_fit`` stream (its
        optimizer state, step count and batch RNG), which runs one epoch."""
        from smx.plugins import get_plugins
        from smx.training import Trainer

        plugins = get_plugins()
        placement = _select(cfg, plugins)
        initial = self._initial(cfg, splits, stream is not None)
        try:
            trainer = Trainer(cfg, splits, placement.backend, placement.device, plugins,
                              initial=initial)
            if stream and stream.get("opt_state") is not None:
                _resume(trainer, stream)
        except (ConfigError, DataError, ModelFileError) as exc:  # a class_weight naming no
            placement.backend.release(placement.device)  # label; another optimizer's state
            raise InvalidParameter(str(exc)) from None
        try:
            result = trainer.fit(epochs=1 if stream is not None else None)
            state = trainer.state_dict() if stream is not None else None
        finally:
            trainer.close()  # drop the device arrays first: release can then free them
            placement.backend.release(placement.device)
        self._finish_fit(result, trainer, engine or placement.backend.name, cfg,
                         splits.classes, splits.standardizer, where)
        self._stream = None if state is None else {
            "opt_state": state["opt_state"], "step": state["step"], "rng": state["rng"],
            "epochs": (stream or {}).get("epochs", 0) + 1}
        if self._stream is not None:
            self.n_iter_ = self._stream["epochs"]

    def _initial(self, cfg: Any, splits: Splits, continuing: bool) -> dict[str, Any] | None:
        """The previous fit's parameters in this fit's (standardized) units, when
        ``warm_start`` (or ``partial_fit``) continues from them; None: start from zero."""
        if not (self.warm_start or continuing) or not hasattr(self, "model_"):
            return None
        m, std = self.model_, splits.standardizer
        if m.n_features != splits.n_features or not np.array_equal(m.classes, splits.classes):
            raise ValueError(
                f"warm_start=True continues the previous fit ({m.n_features} features, classes "
                f"{m.classes.tolist()[:10]}), which this data does not fit ({splits.n_features} "
                f"features, classes {splits.classes.tolist()[:10]}); pass warm_start=False")
        W_raw = m.W.astype(np.float64) / m.standardizer.scale[:, None]  # caller's units
        b_raw = (0.0 if m.b is None else m.b.astype(np.float64)) - m.standardizer.mean @ W_raw
        initial = {"W": W_raw * std.scale[:, None]}
        if cfg.model.fit_intercept:
            initial["b"] = b_raw + std.mean @ W_raw
        return initial

    def _sparse_backend(self) -> str:
        """The engine for sparse X: ``auto`` takes CuPy when it is usable (and the device is
        not the CPU), else NumPy; an engine without sparse products is refused."""
        from smx.plugins import get_plugins

        plugins = get_plugins()
        if self.backend == "auto":
            cupy = plugins.get("backend", "cupy")
            return "cupy" if self.device != "cpu" and cupy.unavailable_reason() is None \
                else "numpy"
        try:
            backend = plugins.get("backend", self.backend)
        except PluginError as exc:
            raise InvalidParameter(str(exc)) from None
        if not backend.accepts_sparse:
            raise ValueError(f"sparse X trains on backend 'numpy' or 'cupy' (or 'auto'), not "
                             f"{self.backend!r}, whose engine has no sparse products; pass "
                             f"X.toarray() to train on {self.backend!r}")
        return self.backend

    def _finish_fit(self, result: Any, trainer: Any, backend: str, cfg: Any,
                    classes: np.ndarray, std: Standardizer, where: Where) -> None:
        W, b = result.params["W"], result.params.get("b")
        meta = {"backend": backend, "dtype": cfg.dtype}
        self.model_ = FittedModel(W, b, classes, std, meta)  # the host copy: files, CLI
        self._set_coefficients(where)
        self.history_ = result.history
        self.stop_reason_ = result.stop_reason
        if trainer.solver is not None:  # as LogisticRegression: where coef_ is
            self.n_iter_ = to_namespace(np.array([result.steps], dtype=np.int32), where)
            if result.stop_reason == "max_epochs":
                warnings.warn(
                    f"{cfg.optimizer.name} stopped at its iteration limit ({cfg.epochs}) "
                    "before converging; raise max_iter (or epochs), or scale the data "
                    "(StandardScaler, or standardize=True)", ConvergenceWarning,
                    stacklevel=callers_stacklevel())
        else:
            self.n_iter_ = len(result.history)  # epochs, as SGDClassifier

    def _fit_native(self, X: Any, y: Any, sample_weight: Any, engine: str, device: str
                    ) -> SoftmaxRegression:
        """Train where X already lives (a PyTorch tensor, a JAX or CuPy array, an array of
        another registered engine's library): validation, class discovery and (with
        ``standardize``) the statistics run in its own namespace; only the class list and
        the fitted parameters (small) come to the host."""
        from smx.plugins import get_plugins

        where = input_namespace(X)
        sparse = cupyx_sparse(X)  # its checks run on the stored values, X.data
        if sparse and self.standardize:
            raise ValueError(DENSIFY)
        xp = array_namespace(X.data if sparse else X)
        if len(X.shape) != 2:
            raise ValueError(f"Expected 2D array, got {len(X.shape)}D array instead")
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"Found array with shape {tuple(X.shape)}: at least one sample "
                             "and one feature are required")
        if xp.isdtype(X.dtype, "complex floating"):
            raise ValueError("Complex data not supported")
        if not xp.isdtype(X.dtype, "real floating") or X.dtype not in (xp.float32,
                                                                          xp.float64):
            dt = xp.float64 if self.dtype == "float64" else xp.float32  # ints, half floats
            X = X.astype(dt) if sparse else xp.astype(X, dt)
        if sparse:
            X = X.tocsr()  # CSR: rows gather fast
        values = X.data if sparse else X
        on = values.device  # where X lives (device, the argument, is its name)
        n_y = None if y is None else _num_rows(y)
        if n_y != X.shape[0]:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{X.shape[0]}, {n_y}]")
        if not bool(xp.all(xp.isfinite(values))):
            raise ValueError("Input X contains NaN or infinity.")
        backend = get_plugins().backend(engine)
        n = int(X.shape[0])
        classes, y_idx = native_labels(y, xp, backend, on)
        w = native_weights(sample_weight, n, xp, on, X.dtype)
        present = len(classes) if w is None else int(backend.to_host(xp.sum(xp.astype(
            xp.unique_values(xp.where(w > 0, y_idx, -1)) >= 0, xp.int64))))
        if len(classes) < 2 or present < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in "
                             f"the data, but the data contains only one class: {classes[0]!r}"
                             if present else "every sample weight is zero: there is no "
                             "class to learn")
        raw = X
        if self.standardize:
            mean = np.asarray(backend.to_host(xp.mean(X, axis=0)), dtype=np.float64)
            scale = np.asarray(backend.to_host(xp.std(X, axis=0)), dtype=np.float64)
            bad = ~(np.isfinite(mean) & np.isfinite(scale))
            if bad.any():  # statistics that overflowed: refused, as fit's NumPy path does
                j = int(np.argmax(bad))
                i = int(backend.to_host(xp.argmax(xp.abs(X[:, j]))))
                row = np.asarray(backend.to_host(X[i, :]), dtype=np.float64)
                check_row(np.where(np.arange(len(row)) == j, np.inf, row), row, i,
                           "float64", True)
            std = Standardizer(mean, np.where(scale > 0, scale, 1.0))
            X = (X - xp.asarray(std.mean, dtype=X.dtype, device=X.device)) / xp.asarray(
                std.scale, dtype=X.dtype, device=X.device)
        else:
            std = Standardizer.identity(X.shape[1])
        cfg = self._config(binary=len(classes) == 2)
        cfg = cfg.model_copy(update={"backend": engine, "device": device})
        # float32 X is scored in float32 (decision_function): its limit holds whatever dtype
        limit_dtype = "float32" if (values.dtype == xp.float32) else cfg.dtype
        if sparse:
            check_sparse_magnitudes(X, limit_dtype, backend)
        else:
            check_native_magnitudes(X, raw, xp, backend, limit_dtype, self.standardize)
        if known_engine(values) is None:  # an engine found by its namespace gets NumPy,
            # as Backend.place is specified, and copies it to X's device (cfg.device)
            X, y_idx, w = (None if a is None else backend.to_host(a) for a in (X, y_idx, w))
            xp, on = array_namespace(X), "cpu"
        empty = xp.zeros((0, X.shape[1]), dtype=X.dtype, device=on)
        none = xp.zeros((0,), dtype=y_idx.dtype, device=on)
        splits = Splits(classes=classes, X_train=X, y_train=y_idx, X_val=empty, y_val=none,
                        X_test=empty, y_test=none, standardizer=std, w_train=w)
        self.n_features_in_ = int(X.shape[1])
        self._train(cfg, splits, engine, where=where)
        return self

    def _set_coefficients(self, where: Where = None) -> None:
        """``coef_``/``intercept_`` in the caller's feature units from the trained
        (standardized) model: x·W' + b' == ((x − mean)/scale)·W + b; in the training
        dtype, and (scikit-learn's array-API convention) in the namespace and on the
        device of the training input, as numeric ``classes_`` are."""
        m = self.model_
        W = m.W.astype(np.float64) / m.standardizer.scale[:, None]
        b = (np.zeros(W.shape[1]) if m.b is None else m.b.astype(np.float64)) \
            - m.standardizer.mean @ W
        if len(m.classes) == 2:
            coef, intercept = (W[:, 1] - W[:, 0])[None, :], np.array([b[1] - b[0]])
        else:
            coef, intercept = np.ascontiguousarray(W.T), b
        dtype = np.dtype(m.meta.get("dtype", "float64"))
        self.coef_ = to_namespace(coef.astype(dtype), where)
        self.intercept_ = to_namespace(intercept.astype(dtype), where)
        self.classes_ = to_namespace(m.classes, where) if m.classes.dtype.kind in "iuf" \
            else m.classes

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.array_api_support = True
        return tags

    # --- prediction ------------------------------------------------------------------------

    @warns_at_callers_line
    def decision_function(self, X: Any) -> Any:
        """``X @ coef_.T + intercept_``: (n, K), or (n,) for two classes (the score of
        ``classes_[1]``), as ``LogisticRegression``; in the input's library and on its
        device for an array of another library than NumPy (:func:`native_engine`)."""
        return self._scores(X, "decision_function")

    def _scores(self, X: Any, method: str) -> Any:
        check_is_fitted(self)
        self._check_namespace(X, method)
        if is_dask(X):  # lazy: one task per block, computed where the caller computes
            return estimator_dask.scores(X, to_numpy(self.coef_), to_numpy(self.intercept_))
        if native_engine(X, self.backend) is not None:
            return self._native_scores(X)
        X = validate_data(self, X, reset=False, accept_sparse=SPARSE, dtype=FLOAT_DTYPES)
        coef, intercept = to_numpy(self.coef_), to_numpy(self.intercept_)
        with np.errstate(over="ignore", invalid="ignore"):
            scores = safe_sparse_dot(X, coef.T, dense_output=True) + intercept
        if not np.isfinite(scores).all():
            raise ValueError(_OVERFLOW)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def _native_scores(self, X: Any) -> Any:
        """The scores where X lives, in the dtype X and ``coef_`` promote to (NumPy's)."""
        sparse = cupyx_sparse(X)  # cupyx: a cuSPARSE product, X never densified
        values = X.data if sparse else X
        xp, device = array_namespace(values), array_device(values)
        if len(X.shape) != 2:
            raise ValueError(f"Expected 2D array, got {len(X.shape)}D array instead")
        if not bool(xp.all(xp.isfinite(values))):
            raise ValueError("Input X contains NaN or infinity.")
        n_features = self.coef_.shape[1]
        if X.shape[1] != n_features:
            raise ValueError(f"X has {X.shape[-1]} features, but {type(self).__name__} "
                             f"is expecting {n_features} features as input")
        coef = to_namespace(to_numpy(self.coef_), (xp, device), like=self.coef_)
        intercept = to_namespace(to_numpy(self.intercept_), (xp, device), like=self.intercept_)
        dt = (xp.result_type(values.dtype, coef.dtype)
              if xp.isdtype(values.dtype, "real floating") else coef.dtype)
        Xd = X.astype(dt) if sparse else xp.astype(X, dt)
        scores = Xd @ xp.astype(coef, dt).T + xp.astype(intercept, dt)
        if not bool(xp.all(xp.isfinite(scores))):
            raise ValueError(_OVERFLOW)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def _check_namespace(self, X: Any, method: str) -> None:
        """Under ``array_api_dispatch``, scikit-learn's rule: X in the namespace and on the
        device of the fitted ``coef_`` (else the ValueError of ``check_same_namespace``).
        Without it, any input is taken and answered in its own library."""
        if not get_config().get("array_api_dispatch", False):
            return
        fitted, given = array_place(self.coef_), array_place(X)
        if fitted == given:
            return
        raise ValueError(
            f"Inputs passed to {type(self).__name__}.{method}() must use the same namespace "
            f"and the same device as those passed to fit(). Array namespaces and devices used "
            f"during fit ({fitted[0]}, {fitted[1]}) and {method} ({given[0]}, {given[1]}) "
            "differ. Fit on this input's library, or move X there.")

    @warns_at_callers_line
    def predict_log_proba(self, X: Any) -> Any:
        return self._log_proba(X, "predict_log_proba")

    def _log_proba(self, X: Any, method: str) -> Any:
        scores = self._scores(X, method)
        if is_dask(scores):
            return estimator_dask.log_proba(scores, len(self.classes_))
        if native_engine(scores, self.backend) is not None:
            xp = array_namespace(scores)
            if scores.ndim == 1:
                scores = xp.stack([xp.zeros_like(scores), scores], axis=1)
            shifted = scores - xp.max(scores, axis=1, keepdims=True)
            return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        if scores.ndim == 1:
            return np.column_stack([log_expit(-scores), log_expit(scores)])
        return log_softmax(scores, axis=1)

    @warns_at_callers_line
    def predict_proba(self, X: Any) -> Any:
        logp = self._log_proba(X, "predict_proba")
        return array_namespace(logp).exp(logp)

    @warns_at_callers_line
    def predict(self, X: Any) -> Any:
        scores = self._scores(X, "predict")
        if is_dask(scores):
            return estimator_dask.predict(scores, np.asarray(to_numpy(self.classes_)))
        if (native := native_engine(scores, self.backend)) is not None:
            xp = array_namespace(scores)
            idx = (xp.astype(scores > 0, xp.int64) if scores.ndim == 1
                   else xp.argmax(scores, axis=1))
            classes = to_numpy(self.classes_)
            if classes.dtype.kind in "iuf":  # numeric labels stay in the input's library
                where = (xp, array_device(scores))
                return xp.take(to_namespace(classes, where, like=self.classes_), idx, axis=0)
            from smx.plugins import get_plugins

            return classes[np.asarray(get_plugins().backend(native[0]).to_host(idx))]
        idx = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return to_numpy(self.classes_)[idx]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy, as ``ClassifierMixin.score``. Without ``array_api_dispatch``,
        scikit-learn's metric reads its inputs through NumPy, which arrays on some devices
        refuse: those are compared on the host."""
        if get_config().get("array_api_dispatch", False) or native_engine(X) is None:
            # scikit-learn's metric moves y and the weights to the predictions' library, which
            # it cannot do from a list (an AttributeError on .strides): NumPy, as fit takes them
            y, sample_weight = (np.asarray(a) if isinstance(a, (list, tuple)) else a
                                for a in (y, sample_weight))
            return super().score(X, y, sample_weight)
        pred = self.predict(X)
        return float(accuracy_score(to_numpy(y), to_numpy(pred),
                                    sample_weight=to_numpy(sample_weight)))

    # --- the model file --------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the same pickle-free model file as a run folder's ``model.npz``
        (``smx predict`` reads it; :meth:`load` reads it back)."""
        check_is_fitted(self)
        params = {k: v for k, v in self.get_params().items() if _json_ok(v)}
        meta = {**self.model_.meta, "estimator": params}
        if hasattr(self, "feature_names_in_"):
            meta["feature_names_in"] = [str(c) for c in self.feature_names_in_]
        FittedModel(self.model_.W, self.model_.b, self.model_.classes,
                    self.model_.standardizer, meta).save(path)

    @classmethod
    def load(cls, path: str | Path) -> SoftmaxRegression:
        """A fitted estimator from a model file (this class's :meth:`save`, or a CLI run's
        ``model.npz``): it predicts as the one that was saved. Parameters the file
        recorded are restored; others keep their defaults."""
        fitted = load_model(path)
        saved = fitted.meta.get("estimator", {})
        est = cls(**{k: v for k, v in saved.items() if k in cls._get_param_names()})
        est.model_ = fitted
        est._set_coefficients()
        est.n_features_in_ = fitted.n_features
        if "feature_names_in" in fitted.meta:
            est.feature_names_in_ = np.asarray(fitted.meta["feature_names_in"], dtype=object)
        return est


def _stream_classes(classes: Any, fitted: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    """The labels of a ``partial_fit`` stream: ``classes`` on the first call (then the fitted
    ones, which a later ``classes`` must repeat), every label of y among them."""
    if classes is None and fitted is None:
        raise ValueError("classes must be passed on the first call to partial_fit (every "
                         "label the stream holds)")
    given = None if classes is None else np.unique(to_numpy(classes))
    if fitted is not None and given is not None and not np.array_equal(given, fitted):
        raise ValueError(f"classes={given.tolist()} is not the same as on the first call to "
                         f"partial_fit, {fitted.tolist()}")
    known = fitted if fitted is not None else given
    assert known is not None  # one of them: refused above when both are None
    if len(known) < 2:
        raise ValueError(f"classes must name at least 2 labels, got {known.tolist()}")
    unknown = np.setdiff1d(y, known)
    if len(unknown):
        raise ValueError(f"y holds labels {unknown.tolist()[:10]} that are not in classes "
                         f"{known.tolist()[:10]}")
    return known


def _resume(trainer: Any, stream: dict[str, Any]) -> None:
    """Continue a ``partial_fit`` stream in a fresh Trainer: the optimizer's state, the step
    count (schedules) and the batch RNG of the previous call."""
    state = trainer.state_dict()
    state.update(opt_state=stream["opt_state"], step=stream["step"], rng=stream["rng"])
    trainer.load_state_dict(state)


def _select(cfg: Any, plugins: Any) -> Any:
    """hardware.select, an unknown or unusable backend or device being the ValueError
    scikit-learn raises for a bad parameter."""
    from smx import hardware

    try:
        return hardware.select(cfg, plugins)
    except PluginError as exc:
        raise InvalidParameter(str(exc)) from None


def _num_rows(a: Any) -> int:
    """Rows of an array (of any library: the Array API has no ``len``) or a sequence."""
    shape = getattr(a, "shape", None)
    return int(shape[0]) if shape else len(a)


def _standardizer(X: np.ndarray, w: np.ndarray | None) -> Standardizer:
    """The (weighted) mean and std of the rows: a zero-weight row counts as absent."""
    mean = np.average(X, axis=0, weights=w)
    scale = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=w))
    return Standardizer(mean, np.where(scale > 0, scale, 1.0))


def _json_ok(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False
