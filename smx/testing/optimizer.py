"""The optimizer rules: what a gradient transformation must do for every engine to run it.

An optimizer plugin's factory (``OptimizerSpec.factory``) returns an optax-shaped
:class:`~smx.types.Transform`. The rules run it on small seeded float64 problems through
the transformation alone: the shape of ``update``, purity, the learning rate as a link
(a number or a schedule), a state that checkpoints, composition under ``chain``, the
Array API only (array-api-strict), and tracing under ``jax.jit`` where JAX is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from smx.testing.contract import Kind, fail, forbids_unknown_keys, jax_float64
from smx.testing.problems import close, identical, problem
from smx.types import OptimizerSpec, Transform

KIND = Kind("optimizer", accepts=lambda obj: isinstance(obj, OptimizerSpec),
            label=lambda spec: spec.name)

#: steps each rule takes (a few, so that step counts and momenta matter)
STEPS = 5


def options(spec: OptimizerSpec, params: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {**spec.params.model_validate(dict(params)).model_dump(), **extra}


def build(spec: OptimizerSpec, params: Mapping[str, Any], **extra: Any) -> Transform:
    tx = spec.factory(**options(spec, params, **extra))
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        fail("factory(**options)", expected="a Transform (init, update)",
             got=type(tx).__name__)
    return tx


def gradients(xp: Any, seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Parameters and ``STEPS`` gradients of a small softmax problem, in ``xp``."""
    p = problem(seed)
    rng = np.random.default_rng(seed + 1)
    params = {"W": xp.asarray(p.W), "b": xp.asarray(p.b)}
    grads = [{"W": xp.asarray(rng.normal(size=p.W.shape)), "b": xp.asarray(
        rng.normal(size=p.b.shape))} for _ in range(STEPS)]
    return params, grads


def run(tx: Transform, params: dict[str, Any], grads: list[dict[str, Any]],
        update: Callable[..., Any] | None = None, state: Any = None) -> tuple[Any, Any]:
    """``params`` after one update per gradient (and the final state)."""
    from smx.optimizers import apply_updates

    update = tx.update if update is None else update
    state = tx.init(params) if state is None else state
    for g in grads:
        updates, state = update(g, state, params)
        params = apply_updates(params, updates)
    return params, state


def numpy_xp() -> Any:
    import array_api_compat.numpy as xp

    return xp


def host(tree: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in tree.items()}


@KIND.rule("params-forbid-unknown-keys")
def params_forbid_unknown(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """The params model refuses a key it does not define: a misspelt option in a config's
    `optimizer:` section must be an error, not silently ignored."""
    forbids_unknown_keys(spec.params, params)


@KIND.rule("declares-lr")
def declares_lr(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """The params model has an `lr` field: smx hands the run's learning-rate schedule to
    the factory through it, so without one a config's `schedule:` would do nothing."""
    if "lr" not in spec.params.model_fields:
        fail("the params model's fields", expected="an `lr` field",
             got=", ".join(spec.params.model_fields) or "none")


@KIND.rule("update-has-optax-shape")
def update_shape(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """`update(updates, state, params)` (params also by keyword) returns `(updates, state)`
    with the parameters' keys, shapes and dtypes: optax's `GradientTransformation`, so
    smx adds the updates to the parameters and carries the state to the next step."""
    xp = numpy_xp()
    tx = build(spec, params)
    p, grads = gradients(xp)
    state = tx.init(p)
    out = tx.update(grads[0], state, params=p)
    if not (isinstance(out, tuple) and len(out) == 2):
        fail("update(...)", expected="a pair (updates, state)", got=type(out).__name__)
    updates, _ = out
    if not isinstance(updates, dict) or set(updates) != set(p):
        fail("the updates", expected=f"a dict with keys {sorted(p)}",
             got=sorted(updates) if isinstance(updates, dict) else type(updates).__name__)
    for k in p:
        if updates[k].shape != p[k].shape or updates[k].dtype != p[k].dtype:
            fail(f"updates[{k!r}]", expected=f"{p[k].dtype}{list(p[k].shape)}",
                 got=f"{updates[k].dtype}{list(updates[k].shape)}")
    again, _ = tx.update(grads[0], state, p)
    for k in p:
        identical(f"updates[{k!r}] with params passed by position", again[k], updates[k])


@KIND.rule("pure")
def pure(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """`init` and `update` never write into their inputs (parameters, gradients, state):
    JAX arrays cannot be written to, and smx keeps references to earlier parameters and
    states (checkpoints, the best epoch)."""
    import copy

    xp = numpy_xp()
    tx = build(spec, params)
    p, grads = gradients(xp)
    state = tx.init(p)
    before = (copy.deepcopy(host(p)), copy.deepcopy(host(grads[0])), copy.deepcopy(state))
    tx.update(grads[0], state, p)
    for k in p:
        identical(f"params[{k!r}] after update", p[k], before[0][k])
        identical(f"updates[{k!r}] after update", grads[0][k], before[1][k])
    _same_tree("the state after update", state, before[2])


def _same_tree(what: str, got: Any, ref: Any) -> None:
    if isinstance(ref, dict):
        for k in ref:
            _same_tree(f"{what}[{k!r}]", got[k], ref[k])
    elif isinstance(ref, list | tuple):
        for i, (a, b) in enumerate(zip(got, ref, strict=True)):
            _same_tree(f"{what}[{i}]", a, b)
    elif hasattr(ref, "shape"):
        identical(what, got, ref)
    elif got != ref:
        fail(what, expected=repr(ref), got=repr(got))


@KIND.rule("state-holds-only-arrays")
def state_arrays(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """The state is dicts (string keys), lists and tuples of arrays of the parameters'
    library, step counts included (0-d integer arrays: `smx.optimizers.counter`): a
    checkpoint stores any such tree, and a compiled engine carries it without retracing."""
    xp = numpy_xp()
    tx = build(spec, params, lr=lambda count: 0.1 + 0 * count)
    p, grads = gradients(xp)
    _, state = run(tx, p, grads[:2])

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    fail(f"{path} key {k!r}", expected="a string", got=type(k).__name__)
                walk(v, f"{path}[{k!r}]")
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif not (isinstance(node, np.ndarray | np.generic) and node.dtype.kind in "biuf"):
            fail(path, expected="an array (a step count: a 0-d integer array)",
                 got=f"{type(node).__name__} {node!r:.40}")

    walk(state, "state")


@KIND.rule("learning-rate-is-a-link")
def learning_rate_link(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """`lr` may be a number or a schedule (a function of the step count, as smx passes it
    when the run has one); a constant schedule takes the same steps as the number, and a
    schedule that halves the rate changes them: the rate reaches the chain's
    `scale_by_learning_rate`."""
    xp = numpy_xp()
    lr = float(options(spec, params)["lr"])
    p, grads = gradients(xp)
    by_number = host(run(build(spec, params, lr=lr), p, grads)[0])
    by_schedule = host(run(build(spec, params, lr=lambda count: lr + 0 * count), p, grads)[0])
    for k in p:
        close(f"params[{k!r}] with lr as a constant schedule", by_schedule[k], by_number[k],
              1e-12)
    halved = host(run(build(spec, params, lr=lambda count: 0.5 * lr + 0 * count), p, grads)[0])
    if all(np.array_equal(halved[k], by_number[k]) for k in p):
        fail("the steps with lr halved by a schedule", expected="different steps",
             got="the same steps (the schedule never reaches the update)")


@KIND.rule("state-survives-a-checkpoint")
def checkpoint(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """The state written to a checkpoint (host arrays, smx's pickle-free format) and read
    back continues bit for bit like the state never saved: `smx run --resume`."""
    import io

    from smx.checkpoint import flatten_tree, unflatten_tree

    xp = numpy_xp()
    tx = build(spec, params, lr=lambda count: 0.1 / (1 + count))
    p, grads = gradients(xp)
    mid_p, mid_state = run(tx, p, grads[:2])
    straight, _ = run(tx, mid_p, grads[2:], state=mid_state)
    arrays: dict[str, np.ndarray] = {}
    tree = flatten_tree(mid_state, arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stubs: **kwds
    buffer.seek(0)
    with np.load(buffer) as saved:
        loaded = unflatten_tree(tree, {k: saved[k] for k in saved.files})
    resumed, _ = run(tx, mid_p, grads[2:], state=loaded)
    for k in p:
        identical(f"params[{k!r}] resumed from the saved state", resumed[k], straight[k])


@KIND.rule("composes-under-chain")
def composes(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """Chained with identity links (and with smx's gradient clipping at a bound it never
    reaches) it takes the same steps: smx prepends `clip_by_global_norm` for
    `clip_grad_norm`, and users compose optimizers from links."""
    from smx.optimizers import chain, clip_by_global_norm, identity

    xp = numpy_xp()
    tx = build(spec, params)
    p, grads = gradients(xp)
    alone = host(run(tx, p, grads)[0])
    for how, composed in (("chain(identity(), tx, identity())", chain(identity(), tx,
                                                                        identity())),
                          ("chain(clip_by_global_norm(1e9), tx)",
                           chain(clip_by_global_norm(1e9), tx))):
        got = host(run(composed, p, grads)[0])
        for k in p:
            close(f"params[{k!r}] under {how}", got[k], alone[k], 1e-12)


@KIND.rule("runs-on-array-api-strict")
def strict(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """On array-api-strict (the standard and nothing more) it takes NumPy's steps to
    1e-12, float64 and float32 keep their dtype: the code imports no array library and
    uses only the Array API, so it runs on every engine."""
    import array_api_strict as sx

    tx = build(spec, params, lr=lambda count: 0.1 / (1 + count))
    p, grads = gradients(numpy_xp())
    ref = host(run(tx, p, grads)[0])
    sp = {k: sx.asarray(v) for k, v in p.items()}
    sg = [{k: sx.asarray(v) for k, v in g.items()} for g in grads]
    got = run(tx, sp, sg)[0]
    for k in p:
        close(f"params[{k!r}] on array-api-strict", np.asarray(got[k]), ref[k], 1e-12)
    s32 = {k: sx.astype(v, sx.float32) for k, v in sp.items()}
    g32 = [{k: sx.astype(v, sx.float32) for k, v in g.items()} for g in sg]
    got32, state32 = run(tx, s32, g32)
    for k in p:
        if got32[k].dtype != sx.float32:
            fail(f"params[{k!r}] after float32 steps", expected="float32",
                 got=str(got32[k].dtype))
    floats = [leaf for leaf in _leaves(state32) if sx.isdtype(leaf.dtype, "real floating")]
    if any(leaf.dtype != sx.float32 for leaf in floats):
        fail("the state's floating arrays after float32 steps", expected="float32",
             got=sorted({str(leaf.dtype) for leaf in floats}))


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _leaves(v)]
    if isinstance(tree, list | tuple):
        return [x for v in tree for x in _leaves(v)]
    return [tree]


@KIND.rule("traces-under-jax-jit")
def traces(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """`jax.jit(update)` (what the JAX engine compiles, scanned over an epoch) gives the
    eager steps to 1e-12 in float64, with a schedule evaluated from the traced step count:
    no Python control flow on arrays, no host reads."""
    with jax_float64() as (jax, jnp):
        tx = build(spec, params, lr=lambda count: 0.1 / (1 + count))
        p, grads = gradients(numpy_xp())
        ref = host(run(tx, p, grads)[0])
        jp = {k: jnp.asarray(v) for k, v in p.items()}
        jg = [{k: jnp.asarray(v) for k, v in g.items()} for g in grads]
        got = run(tx, jp, jg, update=jax.jit(tx.update))[0]
        for k in p:
            close(f"params[{k!r}] under jax.jit", np.asarray(got[k]), ref[k], 1e-12)


@KIND.rule("lowers-the-loss")
def lowers(spec: OptimizerSpec, params: Mapping[str, Any]) -> None:
    """With its default options, full-batch steps on a small softmax problem lower the
    loss: the updates point downhill (the sign convention is optax's: added to params)."""
    from smx.objective import loss_and_grad
    from smx.optimizers import apply_updates

    xp = numpy_xp()
    pr = problem(3, n=60)
    p = {"W": np.zeros_like(pr.W), "b": np.zeros_like(pr.b)}
    tx = build(spec, params)
    state = tx.init(p)
    first = float(loss_and_grad(p, pr.X, pr.y)[0])
    for _ in range(50):
        _, g = loss_and_grad(p, xp.asarray(pr.X), xp.asarray(pr.y))
        updates, state = tx.update(g, state, p)
        p = apply_updates(p, updates)
    last = float(loss_and_grad(p, pr.X, pr.y)[0])
    if not last < first:
        fail("the loss after 50 full-batch steps", expected=f"below the initial {first:.6g}",
             got=f"{last:.6g}")
