"""Records what tests/data/results_v2_float64.npz holds (run once, before the optax-shaped
transformations): every shipped config's float64 parameters after a few epochs on the numpy
engine, and mid-run checkpoints in state format 2 (tests/data/checkpoint_v2_*.npz) with the
parameters their runs end with. ``python tests/data/record_v2.py`` rewrites the files; never
rerun it to make a failing test pass: the point is that the numbers predate the change."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smx.checkpoint import save_checkpoint
from smx.config import load_config, read_yaml
from smx.datasets.load import load_data
from smx.plugins import Plugins

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("results_v2_float64.npz")
PLUGINS = Plugins(entry_points=False)
#: each shipped config, float64, numpy, at most this many epochs (L-BFGS: iterations)
EPOCHS = 3
CONFIGS = sorted(p.relative_to(ROOT / "configs").as_posix()
                 for p in (ROOT / "configs").rglob("*.yaml"))


def config(name: str, epochs: int = EPOCHS):
    data = read_yaml(ROOT / "configs" / name)
    data.pop("backend_options", None)
    data.update(backend="numpy", device="cpu", dtype="float64",
                epochs=min(int(data.get("epochs", 10)), epochs))
    return load_config(data, plugins=PLUGINS)


def trained(cfg, initial_state=None):
    from smx.training import Trainer

    trainer = Trainer(cfg, load_data(cfg, PLUGINS), PLUGINS.backend("numpy"), "cpu", PLUGINS)
    if initial_state is not None:
        trainer.load_state_dict(initial_state)
    return trainer


def main() -> None:
    out: dict[str, np.ndarray] = {}
    for name in CONFIGS:
        result = trained(config(name)).fit()
        for k, v in result.params.items():
            out[f"{name}/{k}"] = v
        out[f"{name}/steps"] = np.asarray(result.steps)
    # a checkpoint after epoch 1 of 3 for two chains with step counts (Adam with a cosine
    # schedule; SGD with momentum and a step schedule), and the parameters after epoch 3
    for name in ("optimizers/adam.yaml", "optimizers/sgd.yaml"):
        cfg = config(name)
        trainer = trained(cfg)
        trainer.run_epoch()
        trainer.end_epoch(0.0, 0.0)
        save_checkpoint(OUT.with_name(f"checkpoint_v2_{Path(name).stem}.npz"),
                        trainer.state_dict(), durable=False)
        result = trainer.fit()
        for k, v in result.params.items():
            out[f"resumed/{name}/{k}"] = v
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({len(out)} arrays)")


if __name__ == "__main__":
    main()
