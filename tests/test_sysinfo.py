"""System information comes from one place: `smx info`, run summaries and `smx bench` agree."""

from __future__ import annotations

import platform

import numpy as np

from smx import hardware, sysinfo
from smx.backends.numpy_backend import NumpyBackend
from smx.bench import BenchConfig, report


def test_info_and_bench_describe_the_same_machine():
    info, meta = hardware.cpu_info(), report.meta(BenchConfig.quick())
    assert info["model"] == meta["cpu"] == sysinfo.cpu_model()
    assert info["cores"] == meta["cores"] == sysinfo.cores()
    assert [b["version"] for b in info["blas"]] == [b["version"] for b in meta["blas"]]
    assert [b["threads"] for b in info["blas"]] == [b["num_threads"] for b in meta["blas"]]


def test_library_versions_add_only_what_is_asked_for():
    base = sysinfo.library_versions()
    assert base == {"python": platform.python_version(), "smx": base["smx"],
                    "numpy": np.__version__, "array-api-compat": base["array-api-compat"]}
    with_backend = sysinfo.library_versions(backend=NumpyBackend())
    assert with_backend.items() >= base.items()
    assert "scikit-learn" in sysinfo.library_versions(optional=("scikit-learn",))
    bench = report.meta(BenchConfig.quick())["versions"]
    assert bench.items() >= base.items() and "scikit-learn" in bench


def test_blas_and_environment_are_plain_data():
    for pool in sysinfo.blas_pools():
        assert {"internal_api", "version", "num_threads", "architecture"} <= pool.keys()
    assert sysinfo.blas_threads() >= 1
    assert set(sysinfo.blas_env()) <= set(sysinfo.BLAS_ENV)
    load = sysinfo.load_average()
    assert load is None or len(load) == 3
