"""Short training runs for the rules: a config through ``load_config``, the data through
``load_data``, and a :class:`~smx.training.Trainer`, exactly as ``smx run`` builds them.

The plugin under test is registered at run time in a plugin manager holding only smx's
built-ins (no installed entry point can interfere), so a third-party engine or dataset
is configured and validated like a built-in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from smx.hookspecs import hookimpl
from smx.plugins import Plugins
from smx.types import Backend, DatasetSpec

#: 250 rows, 200 of them for training: batches of 32 make 7 steps, the last one short
DATA = {"name": "synthetic", "n": 250, "d": 6, "k": 3, "val_fraction": 0.1,
        "test_fraction": 0.1}
TRAIN_ROWS = 200
#: the optimizer of every run (momentum: state that a checkpoint must carry)
SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
#: the dataset name a dataset under test is registered as (its own may be taken)
ALIAS = "smx-testing-dataset"


class _Registered:
    """A run-time plugin yielding the objects under test."""

    def __init__(self, backends: list[Backend], datasets: list[DatasetSpec]) -> None:
        self.backends, self.datasets = backends, datasets

    @hookimpl
    def smx_backends(self) -> list[Backend]:
        return self.backends

    @hookimpl
    def smx_datasets(self) -> list[DatasetSpec]:
        return self.datasets


def plugins_with(plugins: Plugins, *, backend: Backend | None = None,
                 dataset: DatasetSpec | None = None) -> Plugins:
    """``plugins`` with ``backend`` registered under its name (unless a backend of that name
    is there: the Trainer is handed the object itself) and ``dataset`` under its own name,
    or under :data:`ALIAS` when that is taken (a copy of a built-in under test)."""
    backends = [] if backend is None or backend.name in plugins.names("backend") else [backend]
    datasets = []
    if dataset is not None:
        taken = dataset.name in plugins.names("dataset")
        datasets.append(dataclasses.replace(dataset, name=ALIAS) if taken else dataset)
    if backends or datasets:
        plugins.register(_Registered(backends, datasets), name=f"smx-testing-{id(plugins)}")
    return plugins


def dataset_name(plugins: Plugins, spec: DatasetSpec) -> str:
    """The name ``spec`` is registered under in ``plugins`` (see :func:`plugins_with`)."""
    return spec.name if plugins.get("dataset", spec.name) is spec else ALIAS


class Runs:
    """Runs of one backend, with its options, beside the NumPy reference engine."""

    def __init__(self, backend: Backend, options: Mapping[str, Any]) -> None:
        self.backend, self.options = backend, dict(options)
        self.plugins = plugins_with(Plugins(entry_points=False), backend=backend)
        self.device = backend.resolve_device("auto")

    def config(self, **extra: Any) -> Any:
        from smx.config import load_config

        data = {"data": DATA, "backend": self.backend.name, "backend_options": self.options,
                "dtype": "float64", "epochs": 3, "batch_size": 32, "optimizer": SGD,
                "log_every": 5, **extra}
        return load_config(data, plugins=self.plugins)

    def own_batches(self) -> bool:
        """The engine draws its own batches (it overrides ``batch_order``, as Dask's does to
        keep each batch within a chunk), so its minibatch runs follow another sequence than
        NumPy's."""
        mine = getattr(type(self.backend), "batch_order", None)
        return mine is not None and mine is not getattr(Backend, "batch_order", None)

    def trainer(self, cfg: Any, *, reference: bool = False) -> Any:
        """A Trainer for ``cfg`` on this backend (``reference``: on NumPy)."""
        from smx.datasets.load import load_data
        from smx.training import Trainer

        splits = load_data(cfg, self.plugins)
        if reference:
            return Trainer(cfg, splits, self.plugins.backend("numpy"), "cpu", self.plugins)
        return Trainer(cfg, splits, self.backend, self.device, self.plugins)
