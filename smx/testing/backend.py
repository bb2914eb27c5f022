"""The backend (engine) rules: the interface smx's Trainer relies on, held to the NumPy
engine's results.

Every rule but ``backend.unavailable-reason`` is skipped, with the backend's own reason,
where ``unavailable_reason()`` is not None. Options (``backend_options``) come from a
:func:`~smx.testing.with_params` wrapper and are validated by the backend's options model,
as a config's are. The kit never calls ``release``: a backend under test (a Dask cluster)
lives as long as its owner keeps it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from smx.losses import CrossEntropy
from smx.objective import Objective, Partial, portable_partial
from smx.testing.contract import Kind, fail, skip
from smx.testing.guards import ImplicitReads
from smx.testing.problems import TOLERANCE, close, identical, problem
from smx.testing.runs import TRAIN_ROWS, Runs
from smx.types import Backend, Block


def _gate(backend: Backend) -> str | None:
    reason = backend.unavailable_reason()
    return None if reason is None else f"backend {backend.name!r} is unavailable here: {reason}"


KIND = Kind("backend", accepts=lambda obj: isinstance(obj, Backend),
            label=lambda backend: backend.name, gate=_gate)


def configured(backend: Backend, options: Mapping[str, Any]) -> Backend:
    """``backend`` after ``configure`` with its validated options (what a Trainer does)."""
    backend.configure(backend.options.model_validate(dict(options)))
    return backend


def to_host(backend: Backend, a: Any) -> np.ndarray:
    """``a`` through ``to_host`` (a Python number, e.g. an unweighted Σweight, as it is)."""
    if isinstance(a, int | float):
        return np.asarray(a)
    return np.asarray(backend.to_host(a))


#: the calls the portable core (model, objective, losses, optimizers, Trainer) makes on a
#: namespace: name -> (call on the namespace and device arrays A (3, 4), B (3, 4), i (2,),
#: the same on NumPy's namespace and host arrays)
CORE_CALLS: dict[str, Callable[[Any, Any, Any, Any], Any]] = {
    "asarray": lambda xp, A, B, i: xp.asarray(A),
    "astype": lambda xp, A, B, i: xp.astype(A, xp.float32),
    "reshape": lambda xp, A, B, i: xp.reshape(A, (-1,)),
    "take": lambda xp, A, B, i: xp.take(A, i, axis=0),
    "max": lambda xp, A, B, i: xp.max(A, axis=0, keepdims=True),
    "sum": lambda xp, A, B, i: xp.sum(A, axis=1),
    "mean": lambda xp, A, B, i: xp.mean(A),
    "exp": lambda xp, A, B, i: xp.exp(A),
    "log": lambda xp, A, B, i: xp.log(B),
    "sqrt": lambda xp, A, B, i: xp.sqrt(B),
    "abs": lambda xp, A, B, i: xp.abs(A),
    "minimum": lambda xp, A, B, i: xp.minimum(A, B),
    "where": lambda xp, A, B, i: xp.where(A > 0, A, xp.zeros_like(A)),
    "zeros_like": lambda xp, A, B, i: xp.zeros_like(A),
    "ones_like": lambda xp, A, B, i: xp.ones_like(A),
    "full_like": lambda xp, A, B, i: xp.full_like(A, 2.5),
    "arange": lambda xp, A, B, i: xp.arange(4, dtype=i.dtype, device=_device(A)),
    "stack": lambda xp, A, B, i: xp.stack([xp.sum(A), xp.sum(B)]),
    "argmax": lambda xp, A, B, i: xp.argmax(A, axis=1),
    "matmul": lambda xp, A, B, i: xp.matmul(A, B.T),
    "@ and .T": lambda xp, A, B, i: A.T @ B,
    "[:, None] and ==": lambda xp, A, B, i: xp.astype(i[:, None] == i[None, :], A.dtype),
    "in-place -= *= /= +=": lambda xp, A, B, i: _in_place(xp, A, B),
    "finfo": lambda xp, A, B, i: xp.asarray(xp.finfo(A.dtype).eps, dtype=A.dtype),
}


def _device(a: Any) -> Any:
    from array_api_compat import device

    return device(a)


def _in_place(xp: Any, A: Any, B: Any) -> Any:
    C = A * 1.0  # a fresh temporary, as the core's are; immutable libraries rebind
    C -= B
    C *= B
    C /= B + 1.0
    C += A
    return C


@KIND.rule("unavailable-reason", gated=False)
def unavailable_reason(backend: Backend, options: Mapping[str, Any]) -> None:
    """`unavailable_reason()` returns None or a non-empty sentence, the same twice, without
    raising: `smx plugins` and `backend: auto` ask every installed backend, usable or not."""
    first, second = backend.unavailable_reason(), backend.unavailable_reason()
    if first is not None and not (isinstance(first, str) and first.strip()):
        fail("unavailable_reason()", expected="None or a sentence", got=repr(first))
    if first != second:
        fail("a second unavailable_reason()", expected=repr(first), got=repr(second))


@KIND.rule("devices")
def devices(backend: Backend, options: Mapping[str, Any]) -> None:
    """`devices()` is a non-empty list of names, `resolve_device("auto")` is one of them and
    every name resolves to itself: a config's `device:` is one of these strings."""
    names = configured(backend, options).devices()
    if not (isinstance(names, list) and names and all(isinstance(d, str) for d in names)):
        fail("devices()", expected="a non-empty list of str", got=repr(names))
    auto = backend.resolve_device("auto")
    if auto not in names:
        fail('resolve_device("auto")', expected=f"one of {names}", got=repr(auto))
    for name in names:
        if (got := backend.resolve_device(name)) != name:
            fail(f"resolve_device({name!r})", expected=repr(name), got=repr(got))


@KIND.rule("namespace-provides-core-calls")
def namespace_calls(backend: Backend, options: Mapping[str, Any]) -> None:
    """The namespace has every call smx's portable core makes (asarray, astype, reshape,
    take, max, sum, mean, exp, log, sqrt, abs, minimum, where, zeros_like, ones_like,
    full_like, arange, stack, argmax, matmul, finfo, `@`, `.T`, `[:, None]`, in-place
    operators) and each gives NumPy's result on arrays from `from_host`: the model,
    objective, losses and optimizers are written once against these."""
    import array_api_compat.numpy as npx

    xp = configured(backend, options).namespace()
    device = backend.resolve_device("auto")
    rng = np.random.default_rng(0)
    hA, hB = rng.normal(size=(3, 4)), rng.uniform(0.5, 2.0, size=(3, 4))
    hi = np.asarray([2, 0], dtype=np.int64)
    A, B = backend.from_host(hA, device, "float64"), backend.from_host(hB, device, "float64")
    i = backend.from_host(hi, device, "int64")
    for name, call in CORE_CALLS.items():
        try:
            got = call(xp, A, B, i)
        except Exception as exc:
            fail(f"the namespace's {name}", expected="a result", got=f"{type(exc).__name__}: "
                 f"{exc}")
        ref = np.asarray(call(npx, hA, hB, hi))
        out = np.asarray(backend.to_host(got))
        if out.dtype != ref.dtype and not (ref.dtype == np.int64 and out.dtype == np.int32):
            fail(f"the namespace's {name}", expected=f"dtype {ref.dtype}", got=out.dtype)
        close(f"the namespace's {name}", out, ref, 1e-12)


@KIND.rule("round-trip-keeps-values-dtypes-devices")
def round_trip(backend: Backend, options: Mapping[str, Any]) -> None:
    """`to_host(from_host(x, device, dtype))` gives back x as NumPy, with its values, shape
    (0-d included) and the dtype asked for (float32, float64, int64), on every device in
    `devices()`; arrays put on one device stay there through arithmetic, and distinct
    devices are distinct: data, parameters, optimizer state and checkpoints all cross
    this way."""
    configured(backend, options)
    x = np.arange(-3, 9).reshape(3, 4) * 1.5
    placed: dict[str, Any] = {}
    for device in backend.devices():
        for dtype in ("float32", "float64", "int64"):
            for host in (x, np.asarray(x[1, 2])):
                want = host.astype(dtype)
                a = backend.from_host(host, device, dtype)
                back = backend.to_host(a)
                what = f"to_host(from_host({want.dtype}{list(want.shape)}, {device!r}))"
                if not isinstance(back, np.ndarray | np.generic):
                    fail(what, expected="a NumPy array", got=type(back).__name__)
                back = np.asarray(back)
                if back.dtype != want.dtype or back.shape != want.shape:
                    fail(what, expected=f"{want.dtype} of shape {want.shape}",
                         got=f"{back.dtype} of shape {back.shape}")
                if not np.array_equal(back, want):
                    fail(what, expected=want.tolist(), got=back.tolist())
        a = backend.from_host(x, device, "float64")
        placed[device] = _device(a)
        for what, b in (("a second array", backend.from_host(x, device, "float64")),
                        ("a + a", a + a), ("sum(a)", backend.namespace().sum(a))):
            if _device(b) != placed[device]:
                fail(f"the device of {what} on {device!r}", expected=placed[device],
                     got=_device(b))
    names = list(placed)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if placed[first] == placed[second]:
                fail(f"the devices of arrays put on {first!r} and {second!r}",
                     expected="distinct devices", got=f"both {placed[first]}")


def place(backend: Backend, p: Any, rows: slice, dtype: str, weighted: bool) -> Block:
    device = backend.resolve_device("auto")
    return backend.place(p.X[rows], p.y[rows], p.w[rows] if weighted else None, device, dtype)


def device_params(backend: Backend, p: Any, dtype: str) -> dict[str, Any]:
    device = backend.resolve_device("auto")
    return {k: backend.from_host(v, device, dtype) for k, v in p.params().items()}


#: the losses the partial rules run: (name, loss, weighted)
LOSSES = (("cross_entropy", CrossEntropy(), False),
          ("cross_entropy with sample and class weights", CrossEntropy(), True),
          ("cross_entropy with label_smoothing 0.1, weighted", CrossEntropy(0.1), True))


def engine_partial(backend: Backend, loss: Any, params: Any, block: Block, cw: Any, *,
                   grad: bool = True) -> Partial:
    """The partial as the Trainer computes it: the engine's kernel for the loss when it
    has one, through the engine's ``partial``."""
    objective = Objective(loss, 0.0, class_weight=cw, kernel=backend.kernel(loss))
    return backend.partial(lambda b: objective.partial(params, b, grad=grad), block)


def compare_partials(backend: Backend, what: str, got: Partial, ref: Partial, dtype: str,
                     tol: float) -> None:
    close(f"Σ loss ({what})", to_host(backend, got.loss), ref.loss, tol)
    close(f"Σ weight ({what})", to_host(backend, got.weight), ref.weight, tol)
    if ref.grads is None:
        if got.grads is not None:
            fail(f"grads ({what}, grad=False)", expected="None", got="gradients")
        return
    if got.grads is None or set(got.grads) != set(ref.grads):
        fail(f"grads ({what})", expected=sorted(ref.grads), got=got.grads and sorted(got.grads))
    for name, value in got.grads.items():
        out = to_host(backend, value)
        if out.dtype != np.dtype(dtype):
            fail(f"the gradient sum of {name} ({what})", expected=dtype, got=out.dtype)
        close(f"the gradient sum of {name} ({what})", out, ref.grads[name], tol)


@KIND.rule("batch-gathers-rows")
def batch_gathers(backend: Backend, options: Mapping[str, Any]) -> None:
    """`batch(place(X, y, w), idx)` holds exactly the rows idx of X, y and w, in idx's order
    (and no weights when none were placed): every minibatch step trains on it."""
    configured(backend, options)
    p = problem(10, n=203, d=5, k=4)
    idx = np.random.default_rng(1).permutation(p.n)[:50]
    device = backend.resolve_device("auto")
    for weighted in (True, False):
        block = place(backend, p, slice(None), "float64", weighted)
        got = backend.batch(block, backend.from_host(idx, device, "int64"))
        for name, value, ref in (("X", got.X, p.X[idx]), ("y", got.y, p.y[idx])):
            out = to_host(backend, value)
            if out.shape != ref.shape or not np.array_equal(out, ref):
                fail(f"batch(...).{name}", expected=f"rows idx ({ref.shape})",
                     got=f"other values ({out.shape})")
        if weighted:
            identical("batch(...).w", to_host(backend, got.w), p.w[idx])
        elif got.w is not None:
            fail("batch(...).w without placed weights", expected="None", got=type(got.w))


@KIND.rule("partial-matches-numpy")
def partial_matches(backend: Backend, options: Mapping[str, Any]) -> None:
    """The partial sums through the engine (`place`, `partial`, and its `kernel` for the loss
    when it offers one) equal NumPy's portable path, with and without gradients, in
    float64 (to 1e-10) and float32 (to 1e-4), in the dtype asked for: what the engine
    optimises is smx's objective."""
    configured(backend, options)
    p = problem(11, n=203, d=7, k=4)
    for dtype in ("float64", "float32"):
        p_in = _rounded(p, dtype)
        params = device_params(backend, p_in, dtype)
        cw = backend.from_host(p_in.cw, backend.resolve_device("auto"), dtype)
        for name, loss, weighted in LOSSES:
            block = place(backend, p_in, slice(None), dtype, weighted)
            for grad in (True, False):
                ref = portable_partial(loss, p_in.params(), Block(p_in.X, p_in.y,
                                       p_in.w if weighted else None),
                                       p_in.cw if weighted else None, grad=grad)
                got = engine_partial(backend, loss, params, block, cw if weighted else None,
                                     grad=grad)
                compare_partials(backend, f"{name}, {dtype}, grad={grad}", got, ref, dtype,
                                 TOLERANCE[dtype])


def _rounded(p: Any, dtype: str) -> Any:
    """``p`` with its floats rounded to ``dtype`` (and held as float64): the reference's
    inputs are then exactly the engine's."""
    import dataclasses

    return dataclasses.replace(p, **{f: getattr(p, f).astype(dtype).astype(np.float64)
                                     for f in ("X", "w", "cw", "W", "b")})


@KIND.rule("partial-is-additive")
def partial_additive(backend: Backend, options: Mapping[str, Any]) -> None:
    """The partial of rows placed as one block equals the sum of the partials of the same
    rows placed as two blocks (float64, weighted): the Trainer, the solvers and sharded
    engines add partials across batches and shards."""
    configured(backend, options)
    p = problem(12, n=203, d=7, k=4)
    params = device_params(backend, p, "float64")
    cw = backend.from_host(p.cw, backend.resolve_device("auto"), "float64")
    cut = p.n // 3
    loss = CrossEntropy()
    whole = engine_partial(backend, loss, params, place(backend, p, slice(None), "float64",
                                                        True), cw)
    parts = [engine_partial(backend, loss, params, place(backend, p, rows, "float64", True), cw)
             for rows in (slice(0, cut), slice(cut, None))]
    ref = portable_partial(loss, p.params(), Block(p.X, p.y, p.w), p.cw)
    total = parts[0] + parts[1]
    compare_partials(backend, f"rows 0:{cut} plus {cut}:{p.n}", total,
                     Partial(*(to_host_tree(backend, x) for x in (whole.loss, whole.weight,
                                                                  whole.grads))), "float64",
                     TOLERANCE["float64"])
    compare_partials(backend, "all rows vs NumPy", whole, ref, "float64", TOLERANCE["float64"])


def to_host_tree(backend: Backend, x: Any) -> Any:
    if isinstance(x, dict):
        return {k: to_host(backend, v) for k, v in x.items()}
    return to_host(backend, x)


class _UnknownLoss:
    """A loss no engine can know."""

    kernel_key = ("smx.testing.unknown-loss", 0.5)

    def partial(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("not to be called")


@KIND.rule("kernel-declines-unknown-losses")
def kernel_declines(backend: Backend, options: Mapping[str, Any]) -> None:
    """`kernel(loss)` is None for a loss whose `kernel_key` the engine does not know: a fused
    kernel computes one loss, and used for another it would silently train the wrong
    objective."""
    got = configured(backend, options).kernel(_UnknownLoss())
    if got is not None:
        fail("kernel() for an unknown kernel_key", expected="None", got=repr(got))


@contextlib.contextmanager
def host_reads(backend: Backend, types: set[type]) -> Iterator[tuple[list[int], ImplicitReads]]:
    """Count ``to_host`` calls (``[count]``) and watch ``types`` for implicit conversions
    outside ``to_host`` while the block runs."""
    calls, original, implicit = [0], backend.to_host, ImplicitReads()

    def to_host(array: Any) -> Any:
        calls[0] += 1
        with implicit.allowed():
            return original(array)

    backend.to_host = to_host  # type: ignore[method-assign]
    try:
        with implicit.watching(types):
            yield calls, implicit
    finally:
        del backend.to_host


def _array_types(trainer: Any) -> set[type]:
    leaves = [*trainer.params.values(), trainer.train_data.X, trainer.train_data.y]
    return {type(a) for a in leaves if type(a) is not np.ndarray}


@KIND.rule("no-host-read-in-steps")
def no_host_read(backend: Backend, options: Mapping[str, Any]) -> None:
    """Between log points the Trainer's steps read nothing back: an epoch of 2S steps calls
    `to_host` as often as an epoch of S steps, and (where the engine's array type can be
    instrumented; NumPy's cannot) no `float()`, `int()`, `bool()`, iteration, `__array__` or
    `__dlpack__` conversion reads an array outside `to_host`: a read per step stalls an
    accelerator every step, and under a compiler it is an error."""
    runs = Runs(configured(backend, options), options)
    counts, implicit = {}, []
    for batch_size in (40, 20):  # 5 and 10 steps over the 200 training rows
        cfg = runs.config(batch_size=batch_size, log_every=1_000_000, epochs=2)
        trainer = runs.trainer(cfg)
        with host_reads(backend, _array_types(trainer)) as (calls, conversions):
            trainer.run_epoch()
        counts[trainer.steps_per_epoch] = calls[0]
        implicit += conversions.found
    if implicit:
        fail("implicit host reads during an epoch", expected="none (only to_host)",
             got=f"{len(implicit)}: {', '.join(sorted(set(implicit)))}")
    (s, few), (s2, many) = sorted(counts.items())
    if many != few:
        fail(f"to_host calls in an epoch of {s2} steps", expected=f"{few}, as in {s} steps "
             "(log points excluded)", got=many)


def _results(trainer: Any) -> dict[str, Any]:
    return {"params": trainer.host_params(),
            "train_loss": np.asarray([r["train_loss"] for r in trainer.history]),
            "val_loss": np.asarray([r["val_loss"] for r in trainer.history])}


@KIND.rule("training-matches-numpy")
def training_matches(backend: Backend, options: Mapping[str, Any]) -> None:
    """A short float64 run (synthetic data, SGD with momentum 0.9, 3 epochs of minibatches;
    full batches for an engine that draws its own batches, overriding `batch_order`) ends
    with the NumPy engine's parameters to 1e-10 and its loss curves to 1e-10 relative: the
    engine takes the same steps."""
    runs = Runs(configured(backend, options), options)
    extra = {"batch_size": TRAIN_ROWS} if runs.own_batches() else {}
    cfg = runs.config(**extra)
    ours, ref = runs.trainer(cfg), runs.trainer(cfg, reference=True)
    ours.fit()
    ref.fit()
    got, want = _results(ours), _results(ref)
    for name, value in want["params"].items():
        out = got["params"][name]
        if out.dtype != np.float64:
            fail(f"{name} after a float64 run", expected="float64", got=out.dtype)
        err = float(np.max(np.abs(out - value)))
        if err > 1e-10:
            fail(f"{name} after 3 epochs vs the NumPy engine", expected="within 1e-10",
                 got=f"off by {err:.3g}")
    for curve in ("train_loss", "val_loss"):
        close(f"{curve} per epoch vs the NumPy engine", got[curve], want[curve], 1e-10)


@KIND.rule("resume-equals-uninterrupted")
def resume(backend: Backend, options: Mapping[str, Any]) -> None:
    """A run checkpointed after epoch 1 (`Trainer.state_dict`, written and read back as
    `smx run --resume` does) and finished by a fresh Trainer (`load_state_dict`) ends
    where the uninterrupted run ends: bit for bit when the engine declares `deterministic`,
    else to 1e-12 relative; the optimizer state and the batch order survive the trip."""
    from smx.checkpoint import load_checkpoint, save_checkpoint

    runs = Runs(configured(backend, options), options)
    cfg = runs.config()
    with tempfile.TemporaryDirectory(prefix="smx-testing-") as folder:
        path = os.path.join(folder, "checkpoint.npz")
        whole = runs.trainer(cfg)

        def checkpoint(record: dict[str, Any]) -> None:
            if record["epoch"] == 1:
                save_checkpoint(path, whole.state_dict(), durable=False)

        whole.fit(on_epoch=checkpoint)
        resumed = runs.trainer(cfg)
        resumed.load_state_dict(load_checkpoint(path))
        resumed.fit()
    got, want = _results(resumed), _results(whole)
    for name, value in want["params"].items():
        what = f"{name} of the resumed run vs the uninterrupted one"
        if backend.deterministic:
            identical(what + " (deterministic: bit for bit)", got["params"][name], value)
        else:
            close(what, got["params"][name], value, 1e-12)
    for curve in ("train_loss", "val_loss"):
        close(f"{curve} per epoch of the resumed run", got[curve], want[curve],
              0.0 if backend.deterministic else 1e-12)


@KIND.rule("deterministic-claim-holds")
def deterministic(backend: Backend, options: Mapping[str, Any]) -> None:
    """An engine declaring `deterministic = True` gives bit-identical parameters and losses
    in two identical runs (float32 minibatches): `smx parity` records the claim and
    resumed runs are compared bit for bit on the strength of it."""
    if not backend.deterministic:
        skip("declares deterministic = False: nothing is claimed")
    runs = Runs(configured(backend, options), options)
    cfg = runs.config(dtype="float32")
    results = []
    for _ in range(2):
        trainer = runs.trainer(cfg)
        trainer.fit()
        results.append(_results(trainer))
    first, second = results
    for name, value in first["params"].items():
        identical(f"{name} of a second identical run", second["params"][name], value)
    identical("train_loss per epoch of a second identical run", second["train_loss"],
              first["train_loss"])
