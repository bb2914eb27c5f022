"""NumPy's fused minibatch step: one compiled call per batch, no allocation, SGD in place.

The portable step gathers the batch (a fresh (n, d) copy), runs the kernel's
two products and softmax over fresh temporaries, then the transformation and
the update (fresh arrays again). At K = 1000 those temporaries are megabytes
each step, and the allocator hands them back to the OS and faults them in
again (~400,000 minor page faults per epoch); at batch 32 the dozens of NumPy
calls cost more than the arithmetic. Here one Numba-compiled function does the
whole step row by row: each row is read once from its place in ``X`` (the
gather is the read), its K logits, softmax and rank-1 gradient are computed
while it sits in L1, and the update is applied in place to buffers owned by
the step. The weights are also kept transposed (K, d) inside the step, so both
products are contiguous length-d loops that LLVM vectorises.

It covers what SGD is made of (:func:`~smx.optimizers.sgd.sgd`: coupled weight
decay, (Nesterov) momentum, ``-lr``) with unsmoothed cross-entropy, dense X,
sample and class weights, with or without intercept. Anything else (another
chain, gradient clipping, sparse X, another loss) returns None from
:func:`fused_step` and the portable step runs: it stays the reference the tests
hold this one to. Numba is optional (``pip install 'smx[fast]'``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from smx.backends import numpy_kernels
from smx.checkpoint import map_arrays
from smx.types import Array, Block, Params, Transform


def numba_missing() -> str | None:
    """None when Numba imports, else why not (the fused step is then off)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return "Numba is not installed (pip install 'smx[fast]')"
    return None


def sgd_settings(spec: tuple[tuple[Any, ...], ...] | None
                 ) -> tuple[float, float, bool, Any] | None:
    """``(weight_decay, momentum, nesterov, learning_rate)`` when ``spec`` is an SGD chain
    (decays, at most one trace, then a descending ``scale_by_learning_rate`` last), else
    None. ``learning_rate`` is a number or a schedule of the step count."""
    if not spec or spec[-1][0] != "scale_by_learning_rate" or not spec[-1][2]:
        return None
    learning_rate = spec[-1][1]
    wd, trace = 0.0, None
    for link in spec[:-1]:
        if link[0] == "add_decayed_weights" and trace is None:
            wd += float(link[1])
        elif link[0] == "trace" and trace is None:
            trace = (float(link[1]), bool(link[2]))
        else:  # clipping, a decay after the momentum, a second trace: not this kernel
            return None
    momentum, nesterov = trace or (0.0, False)
    return wd, momentum, nesterov, learning_rate


def fused_step(objective: Any, transform: Transform, data: Block) -> FusedSGD | None:
    """The fused step for this objective, transformation and training data, or None."""
    settings = sgd_settings(transform.spec)
    if (settings is None or numba_missing() is not None
            or getattr(objective.loss, "kernel_key", None) != numpy_kernels.KEY
            or not isinstance(data.X, np.ndarray) or data.X.ndim != 2
            or data.X.dtype not in (np.float32, np.float64)):
        return None
    return FusedSGD(objective, *settings)


class FusedSGD:
    """``(params, state, data, idx) -> (params, state, loss)`` as one compiled call.

    Owns its parameter and momentum buffers: it copies in the ``params``/``state`` it is
    handed unless they are the ones it returned last, and updates its own in place.
    """

    def __init__(self, objective: Any, weight_decay: float, momentum: float,
                 nesterov: bool, learning_rate: Any) -> None:
        self.objective = objective
        self.weight_decay, self.momentum, self.nesterov = weight_decay, momentum, nesterov
        self.learning_rate = learning_rate
        self.params: Params | None = None  # what the last call returned
        self.state: Any = None

    def adopt(self, params: Params, state: Any) -> None:
        """Copy ``params`` and ``state`` into buffers this step owns (and may overwrite)."""
        W = params["W"]
        dt = W.dtype
        owned = {k: np.array(v, dtype=dt, order="C") for k, v in params.items()}
        self.state = map_arrays(state, lambda a: np.array(a, order="C"))
        bufs = _find(self.state, "buf")
        # a scheduled rate: the count of its link (the chain's last), advanced in place
        self.count = _find(self.state, "count") if callable(self.learning_rate) else None
        d, k = W.shape
        self.W = owned["W"]
        self.b = owned.get("b", np.zeros(0, dt))
        self.buf_W = bufs["W"] if bufs is not None else np.zeros((0, 0), dt)
        self.buf_b = bufs.get("b", np.zeros(0, dt)) if bufs is not None else np.zeros(0, dt)
        self.Wt = np.ascontiguousarray(self.W.T)
        self.gWt = np.zeros((k, d), dt)
        self.gb = np.zeros(k, dt)
        self.z = np.zeros(k, dt)
        self.empty = np.zeros(0, dt)  # no sample or class weights
        self.params = owned

    def __call__(self, params: Params, state: Any, data: Block, idx: Array
                 ) -> tuple[Params, Any, Any]:
        if params is not self.params or state is not self.state:
            self.adopt(params, state)
        obj, W = self.objective, self.W
        if self.count is None:
            lr = self.learning_rate
        else:  # the schedule on the host (a Python number: no NumPy call per step)
            lr = self.learning_rate(float(self.count))
            self.count += 1
        dt = W.dtype
        cw = obj.class_weight
        sw = data.w
        assert self.params is not None  # adopt() set them
        value = _kernels().sgd_step(
            data.X, data.y, self.empty if sw is None else sw.astype(dt, copy=False),
            self.empty if cw is None else cw.astype(dt, copy=False), idx,
            W, self.b, self.Wt, self.gWt, self.gb, self.z, self.buf_W, self.buf_b,
            float(lr), float(obj.l2), self.weight_decay, self.momentum, self.nesterov,
            "b" in self.params, self.buf_W.size > 0)
        return self.params, self.state, dt.type(value)


def _find(state: Any, key: str) -> Any:
    """The entry ``key`` of the first dict in an SGD chain's state that has one (the
    momentum buffer ``buf``, the schedule's ``count``), or None."""
    if isinstance(state, dict):
        if key in state:
            return state[key]
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        for s in state:
            if (found := _find(s, key)) is not None:
                return found
    return None


@functools.cache
def _kernels() -> Any:
    """Compile on first use (cached on disk by Numba), so importing smx never loads Numba."""
    from smx.backends import numpy_fused_kernels

    return numpy_fused_kernels
