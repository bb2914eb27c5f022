"""The loss rules: what ``Loss.partial`` must return for smx's objective to be right.

A loss is checked through the protocol alone (:class:`smx.losses.Loss`), on small seeded
NumPy problems in float64 (plus one float32 and one array-api-strict run): sums that add,
weights that mean what they say, and a gradient that is the derivative of the loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from smx.objective import Objective, portable_partial
from smx.testing.contract import Kind, fail, skip
from smx.testing.guards import ImplicitReads
from smx.testing.problems import Problem, close, host, problem
from smx.types import Block, LossSpec


def _is_loss(obj: Any) -> bool:
    return isinstance(obj, LossSpec) or (
        not isinstance(obj, type) and callable(getattr(obj, "partial", None))
        and hasattr(obj, "kernel_key"))


KIND = Kind("loss", accepts=_is_loss,
            label=lambda obj: obj.name if isinstance(obj, LossSpec) else type(obj).__name__)

#: float64 sums of the same terms in another grouping agree to this (relative)
EXACT = 1e-12


def build(obj: Any, params: Mapping[str, Any], **extra: Any) -> Any:
    """The loss: ``factory(**validated params)`` for a spec, the object itself otherwise."""
    if isinstance(obj, LossSpec):
        checked = obj.params.model_validate({**params, **extra})
        return obj.factory(**checked.model_dump())
    if params or extra:
        skip("given a loss object, not a LossSpec: its options cannot be set")
    return obj


def numpy_xp() -> Any:
    import array_api_compat.numpy as xp

    return xp


def call(loss: Any, Zt: Any, y: Any, w: Any = None, cw: Any = None, *, grad: bool = True,
         xp: Any = None) -> tuple[Any, Any, Any]:
    """``loss.partial`` on a copy of ``Zt`` (it may overwrite its logits)."""
    xp = numpy_xp() if xp is None else xp
    Zt = xp.asarray(Zt, copy=True)
    return loss.partial(xp, Zt, y, w, cw, grad=grad)


def objective_value(loss: Any, params: dict[str, np.ndarray], block: Block,
                    cw: np.ndarray | None) -> float:
    obj = Objective(loss, 0.0, class_weight=cw)
    part = portable_partial(loss, params, block, cw, grad=False)
    return float(obj.finish(part, params)[0])


def check_gradient(loss: Any, p: Problem, *, weighted: bool, what: str) -> None:
    """The objective's gradient (from ``Gt``) against central differences of its value."""
    w, cw = (p.w, p.cw) if weighted else (None, None)
    block = Block(p.X, p.y, w)
    value, grads = Objective(loss, 0.0, class_weight=cw).value_and_grad(p.params(), block)
    if not np.isfinite(float(value)):
        fail(f"{what}: the objective", expected="a finite value", got=float(value))
    for name, analytic in grads.items():
        base = p.params()
        numeric = np.zeros_like(base[name])
        for idx in np.ndindex(*numeric.shape):
            h = 1e-6 * max(1.0, abs(float(base[name][idx])))
            plus, minus = p.params(), p.params()
            plus[name][idx] += h
            minus[name][idx] -= h
            numeric[idx] = (objective_value(loss, plus, block, cw)
                            - objective_value(loss, minus, block, cw)) / (2 * h)
        analytic = np.asarray(analytic, dtype=np.float64)
        scale = max(1.0, float(np.max(np.abs(numeric))))
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(analytic - numeric)),
                                                       numeric.shape))
        err = float(abs(analytic[worst] - numeric[worst]))
        if err > 1e-6 * scale:
            fail(f"{what}: d objective / d {name}{list(worst)}",
                 expected=f"{numeric[worst]:.9g} (central differences)",
                 got=f"{analytic[worst]:.9g} from Gt (error {err:.2g})")


def is_scalar_array(a: Any) -> bool:
    return hasattr(a, "shape") and tuple(a.shape) == () and hasattr(a, "dtype")


@KIND.rule("builds-with-defaults")
def builds_with_defaults(obj: Any, params: Mapping[str, Any]) -> None:
    """The params model validates an empty (or the given) options section and
    `factory(**options)` returns an object with `partial` and `kernel_key`: a config that
    names the loss without options must run."""
    if isinstance(obj, LossSpec):
        try:
            obj.params.model_validate(dict(params))
        except Exception as exc:
            fail("the params model on the options given", expected="valid options",
                 got=f"{type(exc).__name__}: {exc}")
    loss = build(obj, params)
    for attr in ("partial", "kernel_key"):
        if not hasattr(loss, attr):
            fail("the built loss", expected=f"an attribute {attr!r}",
                 got=f"a {type(loss).__name__} without it")


@KIND.rule("kernel-key-is-hashable")
def kernel_key_is_hashable(obj: Any, params: Mapping[str, Any]) -> None:
    """`kernel_key` is a hashable tuple, equal for two losses built from the same options:
    engines pick a fused kernel by comparing keys, so an unstable key silently loses the
    kernel and an unhashable one breaks lookups."""
    first, second = build(obj, params).kernel_key, build(obj, params).kernel_key
    if not isinstance(first, tuple):
        fail("kernel_key", expected="a tuple", got=type(first).__name__)
    try:
        hash(first)
    except TypeError as exc:
        fail("hash(kernel_key)", expected="a hash", got=f"TypeError: {exc}")
    if first != second:
        fail("kernel_key of two losses built from the same options", expected=first, got=second)


@KIND.rule("partial-returns-sums")
def partial_returns_sums(obj: Any, params: Mapping[str, Any]) -> None:
    """`partial` returns a 0-d Σloss, Σweight as the Python int n when nothing is weighted
    (the sum of the weights otherwise) and Gt of shape (K, n) in the logits' dtype: the
    objective adds these across batches and divides by the total weight once."""
    loss, p = build(obj, params), problem()
    total, weight, Gt = call(loss, p.logits_t(), p.y)
    if not is_scalar_array(total):
        fail("Σ loss", expected="a 0-d array", got=f"{type(total).__name__} "
             f"{getattr(total, 'shape', '')}")
    if type(weight) is not int or weight != p.n:
        fail("Σ weight without weights", expected=f"the int {p.n}",
             got=f"{type(weight).__name__} {weight!r}")
    if Gt is None or tuple(Gt.shape) != (p.k, p.n):
        fail("Gt", expected=f"shape {(p.k, p.n)}", got=getattr(Gt, "shape", Gt))
    if Gt.dtype != np.float64:
        fail("Gt's dtype for float64 logits", expected="float64", got=Gt.dtype)
    total_w, weight_w, _ = call(loss, p.logits_t(), p.y, p.w)
    if not is_scalar_array(weight_w):
        fail("Σ weight with sample weights", expected="a 0-d array",
             got=f"{type(weight_w).__name__} {weight_w!r}")
    close("Σ weight with sample weights", weight_w, p.w.sum(), EXACT)
    if not np.isfinite(host(total_w)):
        fail("Σ loss with sample weights", expected="finite", got=total_w)


@KIND.rule("grad-false-gives-the-same-loss")
def grad_false(obj: Any, params: Mapping[str, Any]) -> None:
    """With `grad=False` the sums are those of `grad=True` and Gt is None: evaluation
    (validation loss, line searches) skips the gradient and must measure the same loss."""
    loss, p = build(obj, params), problem(1)
    for w, cw, what in ((None, None, "unweighted"), (p.w, p.cw, "weighted")):
        total, weight, _ = call(loss, p.logits_t(), p.y, w, cw)
        total_n, weight_n, Gt = call(loss, p.logits_t(), p.y, w, cw, grad=False)
        if Gt is not None:
            fail(f"Gt with grad=False ({what})", expected="None", got=type(Gt).__name__)
        close(f"Σ loss with grad=False ({what})", total_n, total, EXACT)
        close(f"Σ weight with grad=False ({what})", weight_n, weight, EXACT)


@KIND.rule("gradient-matches-finite-differences")
def gradient_matches_fd(obj: Any, params: Mapping[str, Any]) -> None:
    """The objective's gradient built from Gt (through `portable_partial` and
    `Objective.finish`, float64) matches central differences of its value, with and
    without sample and class weights: Gt must be the derivative of the loss returned."""
    loss, p = build(obj, params), problem(2, n=13, d=3, k=3)
    check_gradient(loss, p, weighted=False, what="unweighted")
    check_gradient(loss, p, weighted=True, what="sample and class weights")


@KIND.rule("additive-over-row-blocks")
def additive(obj: Any, params: Mapping[str, Any]) -> None:
    """The partial of all rows equals the sum of the partials of consecutive blocks of
    them (Gt column for column): batches, chunks and workers each return a partial and
    smx adds them, so a mean or any per-block normalisation is wrong."""
    loss, p = build(obj, params), problem(3)
    cuts = [0, 1, 8, 15, p.n]
    Zt = p.logits_t()
    for weighted in (False, True):
        w, cw = (p.w, p.cw) if weighted else (None, None)
        what = "weighted" if weighted else "unweighted"
        total, weight, Gt = call(loss, Zt, p.y, w, cw)
        parts = [call(loss, Zt[:, a:b], p.y[a:b], None if w is None else w[a:b], cw)
                 for a, b in itertools.pairwise(cuts)]
        close(f"Σ loss over 4 blocks vs all rows ({what})",
              sum(host(t) for t, _, _ in parts), total, EXACT)
        close(f"Σ weight over 4 blocks vs all rows ({what})",
              sum(host(v) for _, v, _ in parts), weight, EXACT)
        close(f"Gt of 4 blocks, side by side, vs all rows ({what})",
              np.concatenate([np.asarray(g) for _, _, g in parts], axis=1), Gt, EXACT)


@KIND.rule("integer-weights-repeat-rows")
def integer_weights(obj: Any, params: Mapping[str, Any]) -> None:
    """A sample weight of m is the row repeated m times (0: the row left out), for Σloss,
    Σweight and Gt: that is what a sample weight means, in scikit-learn as here."""
    loss, p = build(obj, params), problem(4)
    counts = np.arange(p.n) % 4  # 0, 1, 2, 3, ...
    Zt = p.logits_t()
    rows = np.repeat(np.arange(p.n), counts)
    total, weight, Gt = call(loss, Zt, p.y, counts.astype(np.float64))
    total_r, weight_r, Gt_r = call(loss, Zt[:, rows], p.y[rows])
    close("Σ loss with integer weights vs repeated rows", total, total_r, EXACT)
    close("Σ weight with integer weights vs repeated rows", weight, weight_r, EXACT)
    summed = np.zeros_like(np.asarray(Gt, dtype=np.float64))
    np.add.at(summed.T, rows, np.asarray(Gt_r).T)
    close("Gt with integer weights vs repeated rows (summed per row)", Gt, summed, EXACT)


@KIND.rule("class-weights-act-as-sample-weights")
def class_weights(obj: Any, params: Mapping[str, Any]) -> None:
    """A class weight cw[c] gives the same sums as the sample weight cw[y_i] on each row of
    class c, alone or times sample weights: smx's `class_weight` (and `balanced`) mean
    scikit-learn's. Checked with label smoothing off where the loss has that option
    (smoothed cross-entropy weighs each smoothed target by its class, as PyTorch does)."""
    smoothing = isinstance(obj, LossSpec) and "label_smoothing" in obj.params.model_fields
    loss = build(obj, params, **({"label_smoothing": 0.0} if smoothing else {}))
    p = problem(5)
    Zt, r = p.logits_t(), p.cw[p.y]
    for w, what in ((None, "class weights alone"), (p.w, "times sample weights")):
        got = call(loss, Zt, p.y, w, p.cw)
        ref = call(loss, Zt, p.y, r if w is None else w * r, None)
        for name, a, b in zip(("Σ loss", "Σ weight", "Gt"), got, ref, strict=True):
            close(f"{name}, {what}, vs the matching sample weights", a, b, EXACT)


@KIND.rule("label-smoothing-changes-the-loss-and-keeps-the-gradient")
def label_smoothing(obj: Any, params: Mapping[str, Any]) -> None:
    """Where the params model has a `label_smoothing` field, smoothing 0.1 changes the
    loss and its `kernel_key` and still passes the finite-difference check: the option is
    not ignored, a kernel for the unsmoothed loss is never used for it, and its gradient
    is right."""
    if not isinstance(obj, LossSpec) or "label_smoothing" not in obj.params.model_fields:
        skip("the loss has no label_smoothing option")
    plain = build(obj, params, label_smoothing=0.0)
    smooth = build(obj, params, label_smoothing=0.1)
    p = problem(6, n=13, d=3, k=3)
    a, b = (float(host(call(x, p.logits_t(), p.y)[0])) for x in (plain, smooth))
    if abs(a - b) <= 1e-6 * max(1.0, abs(a)):
        fail("Σ loss with label_smoothing 0.1", expected=f"a value other than {a:.9g} (0.0's)",
             got=f"{b:.9g}")
    if plain.kernel_key == smooth.kernel_key:
        fail("kernel_key with label_smoothing 0.1", expected="a key other than 0.0's",
             got=smooth.kernel_key)
    check_gradient(smooth, p, weighted=False, what="label_smoothing 0.1")
    check_gradient(smooth, p, weighted=True, what="label_smoothing 0.1, weighted")


@KIND.rule("keeps-float32")
def keeps_float32(obj: Any, params: Mapping[str, Any]) -> None:
    """float32 logits and weights give float32 Σloss, Σweight and Gt: a float64 constant
    mixed in promotes the whole step, and then the parameters, to float64 on NumPy (and is
    an error on array-api-strict)."""
    loss, p = build(obj, params), problem(7)
    f32 = np.float32
    for w, cw, what in ((None, None, "unweighted"), (p.w.astype(f32), p.cw.astype(f32),
                                                      "weighted")):
        total, weight, Gt = call(loss, p.logits_t().astype(f32), p.y, w, cw)
        got = {"Σ loss": total, "Gt": Gt}
        if w is not None:
            got["Σ weight"] = weight
        for name, value in got.items():
            if getattr(value, "dtype", None) != np.float32:
                fail(f"{name} ({what}) for float32 logits", expected="float32",
                     got=getattr(value, "dtype", type(value).__name__))


@KIND.rule("runs-on-array-api-strict")
def runs_on_strict(obj: Any, params: Mapping[str, Any]) -> None:
    """Given array_api_strict arrays and namespace, `partial` returns array_api_strict
    arrays equal to NumPy's results, and converts none of them to the host on the way
    (`__array__`, `__dlpack__`, `float()`, `bool()`, iteration): the loss uses only the
    Array API standard (no NumPy function), so it runs on every engine."""
    try:
        import array_api_strict as xs
    except ImportError:
        skip("array-api-strict is not installed (pip install array-api-strict)")
    loss, p = build(obj, params), problem(8)
    kinds = (type(xs.asarray(0.0)),)
    for w, cw, grad, what in ((None, None, True, "unweighted"), (p.w, p.cw, True, "weighted"),
                              (p.w, p.cw, False, "grad=False")):
        ref = call(loss, p.logits_t(), p.y, w, cw, grad=grad)
        with ImplicitReads().watching(kinds) as conversions:
            got = call(loss, xs.asarray(p.logits_t()), xs.asarray(p.y),
                       None if w is None else xs.asarray(w),
                       None if cw is None else xs.asarray(cw), grad=grad, xp=xs)
        if conversions.found:
            fail(f"partial on array_api_strict arrays ({what})", expected="no conversion "
                 "to the host (a NumPy call, float(), bool(), iteration)",
                 got=", ".join(sorted(set(conversions.found))))
        for name, a, b in zip(("Σ loss", "Σ weight", "Gt"), got, ref, strict=True):
            if b is None or (name == "Σ weight" and type(b) is int):
                if a != b:
                    fail(f"{name} ({what})", expected=repr(b), got=repr(a))
                continue
            if not isinstance(a, kinds):
                fail(f"{name} ({what})", expected="an array_api_strict array",
                     got=type(a).__name__)
            on_cpu = xs.asarray(a, device=xs.Device("CPU_DEVICE"), copy=True)
            close(f"{name} ({what}) on array-api-strict vs NumPy", np.from_dlpack(on_cpu), b,
                  EXACT)


@KIND.rule("leaves-its-inputs-alone")
def leaves_inputs(obj: Any, params: Mapping[str, Any]) -> None:
    """`partial` may overwrite the logits it is given (a fresh temporary) but not the
    labels, sample weights or class weights: those are the run's data, reused every step."""
    loss, p = build(obj, params), problem(9)
    y, w, cw = p.y.copy(), p.w.copy(), p.cw.copy()
    call(loss, p.logits_t(), y, w, cw)
    for name, got, ref in (("y", y, p.y), ("w", w, p.w), ("cw", cw, p.cw)):
        if not np.array_equal(got, ref):
            fail(f"the {name} given to partial", expected="unchanged", got="changed")
