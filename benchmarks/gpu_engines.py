"""GPU epochs of every engine beside a hand-written PyTorch CUDA loop (run on a GPU machine).

    python benchmarks/gpu_engines.py [-o out.json]

60,000 x 784 float32, 10 classes, batch 1024, SGD, per-row shuffle (the same batches on
every engine): one epoch of ``Trainer.run_epoch`` on CuPy, PyTorch and JAX (and PyTorch
with ``compile: true``), and PyTorch autograd + ``torch.optim.SGD`` on the same data. Cases
run interleaved after a warm-up epoch; the figures are medians of per-round ratios to the
PyTorch loop. Engines that cannot use a GPU here are listed with their reason.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

N, D, K, BATCH, LR, L2, SEED, ROUNDS = 60_000, 784, 10, 1024, 0.05, 1e-4, 0, 7


def torch_loop(X: np.ndarray, y: np.ndarray) -> Any:
    import torch
    import torch.nn.functional as F

    Xt, yt = torch.as_tensor(X, device="cuda"), torch.as_tensor(y, device="cuda")
    g = torch.Generator().manual_seed(SEED)
    W = (torch.randn(D, K, generator=g) * 0.01).cuda().requires_grad_()
    b = torch.zeros(K, device="cuda", requires_grad=True)
    opt = torch.optim.SGD([W, b], lr=LR)
    rng = np.random.default_rng(SEED)

    def run() -> None:
        order = torch.as_tensor(rng.permutation(N), device="cuda")
        for s in range(0, N, BATCH):
            idx = order[s:s + BATCH]
            loss = F.cross_entropy(Xt[idx] @ W + b, yt[idx]) + (0.5 * L2) * (W * W).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run, torch.cuda.synchronize


def smx_engine(name: str, X: np.ndarray, y: np.ndarray, options: dict[str, Any]) -> Any:
    from smx.config import load_config
    from smx.datasets.split import Splits, Standardizer
    from smx.plugins import Plugins
    from smx.training import Trainer

    plugins = Plugins(entry_points=False)
    backend = plugins.backend(name)
    device = backend.resolve_device("cuda")
    cfg = load_config({"backend": name, "backend_options": options, "dtype": "float32",
                       "epochs": 1_000_000, "batch_size": BATCH, "seed": SEED,
                       "model": {"l2": L2}, "optimizer": {"name": "sgd", "lr": LR}},
                      plugins=plugins)
    empty = np.empty((0, D), np.float32)
    splits = Splits(classes=np.arange(K), X_train=X, y_train=y, X_val=empty,
                    y_val=np.empty(0, np.int64), X_test=empty, y_test=np.empty(0, np.int64),
                    standardizer=Standardizer.identity(D))
    trainer = Trainer(cfg, splits, backend, device, plugins)
    return trainer.run_epoch, lambda: backend.synchronize(device), device


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    y = rng.integers(0, K, size=N)
    X = (rng.standard_normal((N, D), dtype=np.float32) + y[:, None] * 0.01).astype(np.float32)
    cases, syncs, skipped, devices = {}, [], {}, {}
    try:
        cases["torch_loop"], sync = torch_loop(X, y)
        syncs.append(sync)
    except Exception as exc:
        raise SystemExit(f"no PyTorch CUDA loop: {type(exc).__name__}: {exc}") from None
    for label, name, options in [("smx_cupy", "cupy", {}), ("smx_torch", "torch", {}),
                                 ("smx_torch_compile", "torch", {"compile": True}),
                                 ("smx_jax", "jax", {})]:
        try:
            run, sync, device = smx_engine(name, X, y, options)
        except Exception as exc:  # an engine without a usable GPU here
            skipped[label] = f"{type(exc).__name__}: {exc}"
            continue
        cases[label], devices[label] = run, device
        syncs.append(sync)

    def sync_all() -> None:
        for s in syncs:
            s()

    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():  # warm-up: compilation, allocator pools
        fn()
        sync_all()
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            sync_all()
            t0 = time.perf_counter()
            fn()
            sync_all()
            times[name].append(time.perf_counter() - t0)
    ref = times["torch_loop"]
    report = {"rows": N, "features": D, "classes": K, "batch": BATCH, "rounds": ROUNDS,
              "devices": devices, "skipped": skipped,
              "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
              "ratio_to_torch_loop": {k: statistics.median(a / b for a, b in zip(v, ref,
                                                                                  strict=True))
                                      for k, v in times.items() if k != "torch_loop"}}
    try:
        import torch

        report["card"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
