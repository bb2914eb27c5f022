"""A scikit-learn estimator over the same trainer the CLI uses.

Drop-in where ``LogisticRegression`` is used (pipelines, ``clone``, grid
search), with smx's choice of backend, device and optimizer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from smx.config import load_config
from smx.datasets.split import prepare
from smx.modelfile import FittedModel


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression: mean cross-entropy + l2/2·‖W‖².

    ``C`` (scikit-learn's convention, l2 = 1/(C·n)) overrides ``l2`` when given.
    ``optimizer_params`` and ``schedule_params`` are the plugins' own options,
    validated exactly as in a YAML config.
    """

    def __init__(
        self,
        *,
        l2: float = 1e-4,
        C: float | None = None,
        fit_intercept: bool = True,
        optimizer: str = "lbfgs",
        optimizer_params: dict[str, Any] | None = None,
        schedule: str = "constant",
        schedule_params: dict[str, Any] | None = None,
        epochs: int = 100,
        batch_size: int = 64,
        backend: str = "numpy",
        device: str = "auto",
        fallback: str = "none",
        dtype: str = "float64",
        standardize: bool = False,
        seed: int = 0,
    ) -> None:
        self.l2 = l2
        self.C = C
        self.fit_intercept = fit_intercept
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.schedule = schedule
        self.schedule_params = schedule_params
        self.epochs = epochs
        self.batch_size = batch_size
        self.backend = backend
        self.device = device
        self.fallback = fallback
        self.dtype = dtype
        self.standardize = standardize
        self.seed = seed

    def _config(self):
        return load_config({
            "model": {"l2": self.l2, "C": self.C, "fit_intercept": self.fit_intercept},
            "optimizer": {"name": self.optimizer, **(self.optimizer_params or {})},
            "schedule": {"name": self.schedule, **(self.schedule_params or {})},
            "epochs": self.epochs, "batch_size": self.batch_size, "backend": self.backend,
            "device": self.device, "fallback": self.fallback, "dtype": self.dtype,
            "seed": self.seed,
        })

    def fit(self, X: Any, y: Any) -> SoftmaxRegression:
        from smx import hardware
        from smx.plugins import get_plugins
        from smx.training import Trainer

        cfg = self._config()
        plugins = get_plugins()
        placement = hardware.select(cfg, plugins)
        splits = prepare(np.asarray(X), np.asarray(y), val_fraction=0.0, test_fraction=0.0,
                         seed=self.seed, standardize=self.standardize, where="fit",
                         dtype=cfg.dtype)
        trainer = Trainer(cfg, splits, placement.backend, placement.device, plugins)
        try:
            result = trainer.fit()
        finally:
            trainer.close()  # drop the device arrays first: release can then free them
            placement.backend.release(placement.device)
        W, b = result.params["W"], result.params.get("b")
        self.model_ = FittedModel(W, b, splits.classes, splits.standardizer,
                                  {"backend": placement.backend.name, "dtype": cfg.dtype})
        std = splits.standardizer
        # coefficients in the caller's feature units: x·W' + b' == ((x - mean)/scale)·W + b
        self.coef_ = (W / std.scale[:, None]).T
        self.intercept_ = (b if b is not None else np.zeros(W.shape[1])) - std.mean @ (
            W / std.scale[:, None])
        self.classes_ = splits.classes
        self.n_features_in_ = splits.n_features
        self.n_iter_ = result.steps
        self.history_ = result.history
        self.stop_reason_ = result.stop_reason
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(np.asarray(X), where="X")

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict(np.asarray(X), where="X")

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def save(self, path: str) -> None:
        """Write the same pickle-free model file as a run folder's ``model.npz``."""
        check_is_fitted(self, "model_")
        self.model_.save(path)
