"""From a config's ``data:`` section to the run's splits, checked against the rest of the config.

Everything that can be wrong with the data (and with how the config uses it: a batch larger
than the training set, a monitored validation split that is empty, clipping with a solver)
is found here, before any run folder exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from smx.config import RunConfig
from smx.datasets.files import column_names
from smx.datasets.split import Splits, prepare
from smx.errors import (
    ConfigError,
    DataError,
    SmxError,
    note,
)
from smx.types import SolverSpec

Status = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def load_data(cfg: RunConfig, plugins: Any, status: Status = _quiet, *,
              backend: Any = None) -> Splits:
    """The run's splits; a partitioned source is prepared by ``backend`` (default: the
    config's) where its rows live (:func:`smx.datasets.sources.prepare_partitioned`)."""
    from smx.datasets.sources import Partitioned, prepare_partitioned

    spec = plugins.get("dataset", cfg.data.name, where="data.name")
    params = cfg.data.params()
    where = str(params["path"]) if cfg.data.name == "file" and params.get("path") \
        else f"data ({cfg.data.name})"
    status(f"loading {where if cfg.data.name == 'file' else cfg.data.name + ' data'}...")
    try:
        loaded = spec.load(**params)
        if not isinstance(loaded, Partitioned):
            X, y, *weights = loaded
    except SmxError:
        raise
    except Exception as exc:  # a dataset plugin's own failure: one line naming it
        raise DataError(f"the dataset failed to load: {type(exc).__name__}: {exc}",
                        where=f"data ({cfg.data.name})") from None
    if isinstance(loaded, Partitioned):
        status(f"preparing {cfg.data.name} data where its chunks live...")
        splits = prepare_partitioned(loaded, cfg, plugins, backend)
    else:
        X, columns = np.asarray(X), column_names(X, np.shape(X)[-1] if np.ndim(X) == 2 else -1)
        status(f"splitting{' and standardising' if cfg.data.standardize else ''} "
               f"{X.shape[0]:,} rows x {X.shape[1] if X.ndim == 2 else '?'} features...")
        splits = prepare(
            X, np.asarray(y), val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction, seed=cfg.seed,
            standardize=cfg.data.standardize, where=where, dtype=cfg.dtype, columns=columns,
            sample_weight=weights[0] if weights else None, owned=getattr(spec, "owned", False),
        )
    opt = plugins.get("optimizer", cfg.optimizer.name)
    full_batch = isinstance(opt, SolverSpec)
    n = len(splits.y_train)
    if not full_batch and cfg.batch_size > n:  # as the estimator does: the whole set
        note(f"batch_size {cfg.batch_size} is larger than the training set ({n} rows): "
             f"every step uses all {n} rows")
    es = cfg.early_stopping
    if (es.patience is not None or es.restore_best) and es.monitor.startswith("val_"):
        if len(splits.y_val) == 0:
            raise ConfigError(f"{es.monitor} needs a validation split; set "
                              "data.val_fraction > 0 or monitor train_loss",
                              where="early_stopping.monitor")
        if es.monitor == "val_loss" and splits.w_val is not None and not splits.w_val.any():
            raise ConfigError("val_loss cannot be measured: every validation row has sample "
                              "weight 0; monitor val_accuracy or train_loss",
                              where="early_stopping.monitor")
    if cfg.clip_grad_norm is not None and full_batch:
        raise ConfigError(f"cannot be used with the full-batch solver {opt.name!r}: its line "
                          "search compares losses along a direction, and a clipped gradient "
                          "is not the slope of that loss (Wolfe's conditions would fail or "
                          "accept wrong steps); use an optimizer such as sgd or adam to clip",
                          where="clip_grad_norm")
    return splits
