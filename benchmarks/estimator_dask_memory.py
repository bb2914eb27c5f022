"""The client's memory while ``SoftmaxRegression(backend="dask").fit`` trains on dask arrays.

X (float64, n x 128) and y are generated on a LocalCluster's workers (``da.random``), so
the client never holds them unless smx brings them there. For each size, in a fresh
process: the client's resident memory before the fit and its peak during it (sampled every
5 ms), and the growth between them. Prints one JSON line per size.

    python benchmarks/estimator_dask_memory.py            # ~122, 488, 977 MiB of X
    python benchmarks/estimator_dask_memory.py 1000000    # one size, in rows
    SMX_BENCH_CLUSTER=tcp://HOST:8786 python benchmarks/estimator_dask_memory.py
                                    # a running scheduler (dask scheduler + dask worker)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time

D = 128
SIZES = (125_000, 500_000, 1_000_000)  # rows: 122, 488, 977 MiB of float64 X


def measure(n: int) -> dict:
    import dask.array as da
    import distributed
    import numpy as np
    import psutil

    from smx import SoftmaxRegression

    proc = psutil.Process()
    address = os.environ.get("SMX_BENCH_CLUSTER")
    with (contextlib.nullcontext() if address else distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, memory_limit="4GiB",
            dashboard_address=":0")) as cluster:
        address = address or cluster.scheduler_address
        X = da.random.default_rng(0).standard_normal((n, D), chunks=(50_000, D))
        y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
        est = SoftmaxRegression(backend="dask", C=1.0, max_iter=5, backend_options={
            "cluster": address, "chunk_rows": 50_000})
        before = proc.memory_info().rss
        peak, done = [before], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.005)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - t0
        done.set()
        watcher.join()
    mib = 2**20
    return {"cluster": os.environ.get("SMX_BENCH_CLUSTER", "LocalCluster"), "rows": n,
            "features": D, "data_mib": round(n * D * 8 / mib, 1),
            "client_rss_before_mib": round(before / mib, 1),
            "client_rss_peak_mib": round(peak[0] / mib, 1),
            "client_growth_mib": round((peak[0] - before) / mib, 1),
            "fit_seconds": round(seconds, 1), "n_iter": int(est.n_iter_[0])}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]))), flush=True)
        return
    for n in [int(a) for a in sys.argv[1:]] or SIZES:  # each size in a fresh process
        subprocess.run([sys.executable, __file__, "--one", str(n)], check=True)


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=5: not measured here
    main()
