"""Backend parity: train the same run on several backends and compare with a float64 reference.

Every backend gets the same host data, seed, initial parameters and batch
order (the :class:`~smx.training.Trainer` draws both on the host), so any
difference comes from the arithmetic alone. Each backend is compared with the
reference backend (NumPy by default) run in **float64**, on:

``init_loss``, ``init_grad``
    loss and gradient over the whole training split at the initial parameters,
    computed as training computes them (the backend's fused kernel when it
    offers one, the portable core otherwise), before any gradient clipping;
``loss_curve``
    the per-epoch mean training loss;
``final_params``
    ``W`` and ``b`` after training;
``proba``
    predicted class probabilities on the test split;
``labels``
    predicted labels on the test split (see below).

A quantity passes when every element satisfies ``|x − ref| ≤ atol + rtol·|ref|``
(``numpy.isclose``'s rule). The table reports the largest absolute error and
the largest error relative to the largest reference value.

Why the tolerances are what they are (``TOLERANCES``):

* float64 runs differ from the reference only by summation order: BLAS
  blocking, pairwise vs. sequential sums, and on a GPU cuBLAS/CUB reductions
  that split work across threads differently from the CPU. That is a few ulp
  (2.2e-16) per reduction, times the reduction length; ~1e-10 leaves room for
  a few thousand rows and a hundred steps of training to compound it.
* float32 runs are compared with the float64 reference, so they carry float32
  rounding itself (epsilon 1.2e-7): a reduction over n terms is off by about
  ``sqrt(n)·eps`` relative, i.e. 1e-6..1e-5 for the losses and gradients.
* Training compounds those errors: every step feeds the rounded parameters
  into the next, so the loss curve and the final parameters get a looser
  bound than the quantities at the initial point. Measured on
  ``configs/parity.yaml`` (CPU): float32 errors of 2e-7 (initial loss and
  gradient), 6e-8 (loss curve), 5e-7 (final parameters, probabilities); the
  bounds keep a margin of about 10-40x for a GPU's other summation order.
  Long runs with large learning rates drift further; parity is a check of
  the arithmetic, so keep its runs short.

Labels: where the reference's two most probable classes are closer than the
probability tolerance, either label is a correct answer within the precision
asked for, so a label differing there is reported (``ties``) but not counted.
Only rows whose reference margin exceeds ``2·atol`` of ``proba`` count as
mismatches; a single one fails the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smx import model
from smx.config import RunConfig
from smx.datasets.split import Splits
from smx.errors import ConfigError, ParityMismatch, RunFolderError, SmxError
from smx.training import Trainer
from smx.types import Backend

QUANTITIES = ("init_loss", "init_grad", "loss_curve", "final_params", "proba", "labels")

#: dtype -> quantity -> (atol, rtol); the reasons are in the module docstring
TOLERANCES: dict[str, dict[str, tuple[float, float]]] = {
    "float64": {
        "init_loss": (1e-12, 1e-10),
        "init_grad": (1e-12, 1e-10),
        "loss_curve": (1e-10, 1e-9),
        "final_params": (1e-10, 1e-8),
        "proba": (1e-10, 1e-8),
    },
    "float32": {
        "init_loss": (1e-6, 1e-5),
        "init_grad": (1e-6, 1e-5),
        "loss_curve": (1e-5, 1e-5),
        "final_params": (2e-5, 1e-4),
        "proba": (1e-5, 1e-4),
    },
}
REFERENCE_DTYPE = "float64"
FLOAT32_FLOOR = ("float32 runs start from the data and parameters rounded to float32 (relative "
                 "error up to 6e-8 each), so no float32 backend can come closer to the float64 "
                 "reference than that rounding carried through the computation")


@dataclass
class Capture:
    """What one backend produced, on the host."""

    backend: str
    device: str
    dtype: str
    init_loss: np.ndarray
    init_grad: np.ndarray
    loss_curve: np.ndarray
    final_params: np.ndarray
    proba: np.ndarray
    versions: dict[str, str] = field(default_factory=dict)
    deterministic: bool = True  # Backend.deterministic: recorded, the tolerances ignore it


def _flat(params: dict[str, Any]) -> np.ndarray:
    return np.concatenate([np.asarray(params[k], dtype=np.float64).ravel()
                           for k in sorted(params)])


def eval_split(splits: Splits) -> tuple[str, np.ndarray, np.ndarray]:
    """The split predictions are compared on: test, else validation, else training."""
    for name in ("test", "val", "train"):
        X, y = getattr(splits, f"X_{name}"), getattr(splits, f"y_{name}")
        if len(y):
            return name, X, y
    raise AssertionError("prepare() never returns an empty training split")


def capture(cfg: RunConfig, splits: Splits, backend: Backend, device: str,
            plugins: Any) -> Capture:
    """Train ``cfg`` on ``backend``/``device`` and bring back every compared quantity."""
    try:
        host = _train_and_read(cfg, splits, backend, device, plugins)
    finally:
        backend.release(device)  # the device arrays are gone by now: their memory can go too
    return Capture(backend=backend.name, device=device, dtype=cfg.dtype,
                   versions=backend.versions(), deterministic=backend.deterministic, **host)


def _train_and_read(cfg: RunConfig, splits: Splits, backend: Backend, device: str,
                    plugins: Any) -> dict[str, np.ndarray]:
    trainer = Trainer(cfg, splits, backend, device, plugins)
    with backend.run_context(cfg.dtype):  # the test split and its predictions, too
        return _read(cfg, splits, backend, device, trainer)


def _read(cfg: RunConfig, splits: Splits, backend: Backend, device: str,
          trainer: Trainer) -> dict[str, np.ndarray]:
    data = trainer.train_data
    # the objective training calls (the backend's fused kernel, if any), not the portable
    # core: a kernel bug must show here too; unclipped, as the quantity is the gradient
    loss, grads = trainer.value_and_grad(trainer.params, data)
    init_loss = np.asarray(backend.to_host(loss), dtype=np.float64).reshape(1)
    init_grad = _flat({k: backend.to_host(v) for k, v in grads.items()})
    result = trainer.fit()
    _, X, y = eval_split(splits)
    test = backend.place(X, y, None, device, cfg.dtype)
    proba = backend.to_host(model.predict_proba(trainer.params, test.X))
    return {
        "init_loss": init_loss, "init_grad": init_grad,
        "loss_curve": np.array([r["train_loss"] for r in result.history], dtype=np.float64),
        "final_params": _flat(result.params), "proba": np.asarray(proba, dtype=np.float64),
    }


def compare(value: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Max abs/rel error and whether every element is within ``atol + rtol·|ref|``."""
    if value.shape != ref.shape:
        return {"max_abs": math.inf, "max_rel": math.inf, "atol": atol, "rtol": rtol,
                "passed": False, "note": f"shape {value.shape} != reference {ref.shape}"}
    if not np.all(np.isfinite(value)):
        return {"max_abs": math.inf, "max_rel": math.inf, "atol": atol, "rtol": rtol,
                "passed": False, "note": "non-finite values"}
    diff = np.abs(value - ref)
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(ref).max(initial=0.0))
    return {"max_abs": max_abs, "max_rel": max_abs / scale if scale else max_abs,
            "atol": atol, "rtol": rtol,
            "passed": bool(np.all(diff <= atol + rtol * np.abs(ref)))}


def compare_labels(proba: np.ndarray, ref: np.ndarray, atol: float) -> dict[str, Any]:
    """Label mismatches, not counting rows where the reference is within tolerance of a tie."""
    if proba.shape != ref.shape or ref.shape[1] < 2:
        return compare(proba, ref, atol, 0.0) | {"note": "labels not comparable"}
    top2 = np.sort(ref, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 2 * atol
    differ = np.argmax(proba, axis=1) != np.argmax(ref, axis=1)
    counted, ties = int(np.sum(differ & decided)), int(np.sum(differ & ~decided))
    n = len(ref)
    return {"max_abs": counted, "max_rel": counted / n, "atol": 2 * atol, "rtol": 0.0,
            "passed": counted == 0, "mismatches": counted, "ties": ties, "rows": n,
            "note": f"{counted}/{n} labels differ" + (f" (+{ties} within tolerance of a tie)"
                                                       if ties else "")}


def compare_capture(cap: Capture, ref: Capture) -> dict[str, dict[str, Any]]:
    tol = TOLERANCES[cap.dtype]
    out = {q: compare(getattr(cap, q), getattr(ref, q), *tol[q])
           for q in QUANTITIES if q != "labels"}
    out["labels"] = compare_labels(cap.proba, ref.proba, tol["proba"][0])
    return out


def parse_backends(text: str) -> list[tuple[str, str]]:
    """``numpy,array-api-strict@device1,cupy@cuda:1`` -> [(name, device)] (device 'auto')."""
    out = []
    for item in text.split(","):
        name, _, device = item.strip().partition("@")
        if not name:
            raise ConfigError(f"empty backend name in {text!r}", where="--backends")
        if (name, device or "auto") in out:  # the same run twice proves nothing: a typo
            raise ConfigError(f"{item.strip()!r} is listed twice in {text!r}", where="--backends")
        out.append((name, device or "auto"))
    return out


def output_path(arg: str | None, config_name: str, dtype: str) -> Path:
    """``--output`` as a .json file, or a folder that gets ``parity.json``."""
    if arg is None:
        from datetime import datetime

        return Path("runs") / f"parity-{config_name}-{dtype}-{datetime.now():%Y%m%d-%H%M%S}" \
            / "parity.json"
    path = Path(arg)
    return path if path.suffix == ".json" else path / "parity.json"


@dataclass
class ParityReport:
    config: str
    dtype: str
    reference: Capture
    captures: list[Capture]
    results: list[dict[str, dict[str, Any]]]

    @property
    def passed(self) -> bool:
        return all(r["passed"] for res in self.results for r in res.values())

    def failures(self) -> list[str]:
        return [f"{c.backend}@{c.device} {q}" for c, res in zip(self.captures, self.results,
                                                                strict=True)
                for q, r in res.items() if not r["passed"]]

    def rows(self) -> list[list[str]]:
        rows = []
        for cap, res in zip(self.captures, self.results, strict=True):
            for q in QUANTITIES:
                r = res[q]
                if q == "labels":
                    errs = [r.get("note", ""), ""]
                else:
                    errs = [f"{r['max_abs']:.3g}", f"{r['max_rel']:.3g}"]
                rows.append([f"{cap.backend}@{cap.device}", q, *errs,
                             f"{r['atol']:.0e}/{r['rtol']:.0e}",
                             "pass" if r["passed"] else "FAIL"])
        return rows

    def to_json(self) -> dict[str, Any]:
        def clean(r: dict[str, Any]) -> dict[str, Any]:
            return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in r.items()}

        return {
            "config": self.config, "dtype": self.dtype, "passed": self.passed,
            "reference": {"backend": self.reference.backend, "device": self.reference.device,
                          "dtype": self.reference.dtype, "versions": self.reference.versions,
                          "deterministic": self.reference.deterministic,
                          "init_loss": float(self.reference.init_loss[0]),
                          "final_train_loss": float(self.reference.loss_curve[-1])},
            "rule": "|x - ref| <= atol + rtol*|ref| elementwise; labels count only rows whose "
                    "reference top-2 margin exceeds 2*atol(proba)",
            **({"floor": FLOAT32_FLOOR} if self.dtype == "float32" else {}),
            "backends": [
                {"backend": c.backend, "device": c.device, "dtype": c.dtype,
                 "versions": c.versions, "deterministic": c.deterministic,
                 "passed": all(r["passed"] for r in res.values()),
                 "quantities": {q: clean(r) for q, r in res.items()}}
                for c, res in zip(self.captures, self.results, strict=True)
            ],
        }


def run_parity(cfg: RunConfig, backends: list[tuple[str, str]], plugins: Any, *,
               reference: str = "numpy", config_name: str = "run") -> ParityReport:
    """Check every backend is usable (BackendUnavailable, exit 2) before training any."""
    from smx.datasets.load import load_data

    placed: list[Any] = []
    for name, device in [(reference, "auto"), *backends]:
        where = "--backends" if placed else "--reference"
        backend = plugins.backend(name, where=where)
        try:
            placed.append((backend, backend.resolve_device(device)))
        except SmxError as exc:  # say which option named it (a run's error says "device")
            raise type(exc)(str(exc).removeprefix(f"{exc.where}: ") if exc.where else str(exc),
                            where=where) from None
    # prepared in the reference's dtype: each run casts it, the reference sees it unrounded
    splits = load_data(cfg.model_copy(update={"dtype": REFERENCE_DTYPE}), plugins)
    ref_backend, ref_device = placed[0]
    ref = capture(cfg.model_copy(update={"dtype": REFERENCE_DTYPE}), splits, ref_backend,
                  ref_device, plugins)
    captures = [capture(cfg, splits, b, d, plugins) for b, d in placed[1:]]
    return ParityReport(config=config_name, dtype=cfg.dtype, reference=ref, captures=captures,
                        results=[compare_capture(c, ref) for c in captures])


def check_writable(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise RunFolderError("already exists; pass --overwrite to replace it", where=str(path))
    if path.parent.exists() and not path.parent.is_dir():
        raise RunFolderError("is not a folder", where=str(path.parent))


def write_report(report: ParityReport, path: Path) -> None:
    from smx.io import atomic_write_json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create: {exc.strerror}", where=str(path.parent)) from None
    atomic_write_json(path, report.to_json())


def raise_on_mismatch(report: ParityReport) -> None:
    if not report.passed:
        raise ParityMismatch(f"backends disagree beyond tolerance: {', '.join(report.failures())}",
                             where="parity")
