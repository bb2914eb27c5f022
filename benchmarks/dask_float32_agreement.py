"""How closely backend: dask agrees with NumPy, in float64 and float32, and whether it
repeats itself.

L-BFGS (l2 5e-4, up to 100 iterations) on digits and on 20,000 x 50 synthetic rows, on
NumPy and on Dask (a LocalCluster started here: 2 worker processes; chunks of 100 and of
1,000 rows), each in float64 and float32, every Dask run twice. Reports the first
gradient's distance to NumPy's float64 one, the final parameters' distance to NumPy's in
the same dtype, the iterations and the final training loss. Writes
benchmarks/dask/float32-agreement.md and .json::

    python benchmarks/dask_float32_agreement.py
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "dask"
DATA = {"digits": {"name": "digits"},
        "synthetic 20,000 x 50": {"name": "synthetic", "n": 20000, "d": 50, "k": 5,
                                  "separation": 3.0, "seed": 0}}
CHUNKS = (100, 1000)


def run(cfg, backend, plugins) -> dict:
    """The first evaluation's gradient and the fit's parameters, iterations and loss."""
    from smx.datasets.load import load_data
    from smx.training import Trainer

    trainer = Trainer(cfg, load_data(cfg, plugins), backend, "cpu", plugins)
    try:
        grad = np.asarray(backend.to_host(trainer.value_and_grad(trainer.params)[1]["W"]),
                          np.float64)
        result = trainer.fit()
    finally:
        trainer.close()
        backend.release("cpu")
    return {"grad": grad, "W": result.params["W"], "iterations": len(result.history),
            "loss": result.history[-1]["train_loss"]}


def main() -> None:
    import distributed

    from smx.backends.dask_backend import DaskBackend
    from smx.config import load_config
    from smx.plugins import Plugins

    plugins = Plugins(entry_points=False)
    rows = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="2GiB", dashboard_address=":0") as cluster:
        for label, data in DATA.items():
            base = {"data": data, "optimizer": {"name": "lbfgs"}, "epochs": 100,
                    "model": {"l2": 5e-4}, "seed": 0}

            def cfg(dtype: str, base: dict = base, **extra):
                return load_config({**base, "dtype": dtype, **extra}, plugins=plugins)

            numpy = {dt: run(cfg(dt, backend="numpy"), plugins.backend("numpy"), plugins)
                     for dt in ("float64", "float32")}
            scale = float(np.abs(numpy["float64"]["W"]).max())
            for dt in ("float64", "float32"):
                ref = numpy[dt]
                rows.append({"data": label, "backend": "numpy", "dtype": dt, "chunk_rows": None,
                             "grad_vs_float64": float(np.abs(ref["grad"] - numpy["float64"][
                                 "grad"]).max()), "W_vs_numpy": 0.0, "W_vs_numpy_rel": 0.0,
                             "iterations": ref["iterations"], "loss": ref["loss"],
                             "repeat_identical": None})
                for chunk in CHUNKS:
                    c = cfg(dt, backend="dask", backend_options={
                        "cluster": cluster.scheduler_address, "chunk_rows": chunk})
                    got, again = (run(c, DaskBackend(), plugins) for _ in range(2))
                    gap = float(np.abs(got["W"].astype(np.float64) - ref["W"]).max())
                    rows.append({
                        "data": label, "backend": "dask", "dtype": dt, "chunk_rows": chunk,
                        "grad_vs_float64": float(np.abs(got["grad"] - numpy["float64"][
                            "grad"]).max()),
                        "W_vs_numpy": gap, "W_vs_numpy_rel": gap / scale,
                        "iterations": got["iterations"], "loss": got["loss"],
                        "repeat_identical": got["W"].tobytes() == again["W"].tobytes()})
    OUT.mkdir(exist_ok=True)
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    (OUT / "float32-agreement.json").write_text(json.dumps(
        {"machine": machine, "results": rows}, indent=1) + "\n")
    lines = [
        "# backend: dask against NumPy, float64 and float32",
        "",
        "Written by `python benchmarks/dask_float32_agreement.py`: L-BFGS (`l2: 5e-4`, up to "
        "100 iterations) on NumPy and on a LocalCluster of 2 worker processes (chunks of "
        "`chunk_rows` rows), every Dask run twice. `first gradient` is the largest "
        "difference of the gradient at the initial parameters from NumPy's float64 one; "
        "`W vs NumPy` that of the final W from NumPy's in the same dtype (and relative to "
        "NumPy's largest weight); `repeat` whether the second run gave the same bytes.",
        "",
        f"- machine: {machine['platform']}, {machine['cpu_count']} cores",
        "",
        "| data | backend | dtype | chunk_rows | first gradient | W vs NumPy | relative "
        "| iterations | final train loss | repeat |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        repeat = {None: "", True: "same bytes", False: "differs"}[r["repeat_identical"]]
        lines.append(f"| {r['data']} | {r['backend']} | {r['dtype']} | "
                     f"{r['chunk_rows'] or ''} | {r['grad_vs_float64']:.2g} | "
                     f"{r['W_vs_numpy']:.2g} | {r['W_vs_numpy_rel']:.2g} | {r['iterations']} "
                     f"| {r['loss']:.8f} | {repeat} |")
    (OUT / "float32-agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
