"""JAX as an engine: each minibatch epoch one ``jax.jit``-compiled ``lax.scan``.

Devices come from ``jax.devices()``: ``cpu``, ``gpu:N`` (``cuda``/``cuda:N`` are
accepted for it) and ``tpu:N``. jax is imported only inside the methods that need it;
listing plugins asks :mod:`smx.backends.probe` instead.

How the core's step becomes one XLA program, compiled once per run:

* :meth:`JaxBackend.fused_epoch` scans the core's pure step (gather, partial,
  transformation, update) over the epoch's batches: one dispatch per epoch, where a
  jitted step per batch paid 10-70 µs of dispatch each on the CPU, plus one for the
  running loss. Step counts are arrays in the optimizer state and the learning-rate
  schedule is evaluated from them inside the step, so nothing retraces as they change.
* A short batch would be a new shape, hence a new compilation. Every step has the
  full batch's shape: a short batch is padded with row 0 carrying weight 0 (the real
  rows weight 1 when the data has none), so the objective's weighted partial sums
  count exactly the real rows (``Σ w`` is their number; zero-weight rows add exactly 0
  to the loss and the gradient sums). The epoch is traced once, in the first epoch.
* The loss of each step and the sum of each parameter after it come back as a
  ``(steps, 1 + len(params))`` trace, read only when a logged step falls in the epoch:
  logging and the divergence check see what they would per step.
* JAX arrays are immutable: the core's ``Zt -= m`` style updates rebind a new array,
  which is what they are written to allow.
* L-BFGS runs as a host loop (its line search decides on a few host scalars per
  iteration) over a jitted full-batch value-and-gradient (:meth:`Trainer.value_and_grad`
  goes through :meth:`compile`).

Float64: JAX computes in 32 bits unless 64-bit types are enabled, and that setting is
read at every operation, not only when an array is made: a float64 array times a Python
float is float32 outside it, and a jitted function is traced (and cached) per setting.
So it must hold for all of a run's work, including the Trainer's and the optimizers' own
arithmetic between the engine's calls. :meth:`JaxBackend.run_context` is
``jax.enable_x64(True)`` for a float64 run (thread-local), and the Trainer holds it around
each of its entry points (construction, ``fit``, ``run_epoch``, ``value_and_grad``,
checkpoints; ``smx run``'s final metrics and ``smx parity``'s predictions too), so it
never outlives a call, even for a Trainer never closed: after a fit the process's default
is the user's again (``jnp.ones(1)`` float32 unless they enabled 64-bit types
themselves); only the Trainer's callbacks (``on_epoch``, ``on_log``), which run inside
``fit``, see 64-bit types on. Driven directly, outside any run (``from_host(x, device,
"float64")``, as smx.testing does), the engine has no run to scope, so it falls back to
JAX's process-wide switch, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import smx
from smx.backends import probe
from smx.types import Array, Backend, Block

if TYPE_CHECKING:
    from smx.step import TrainStep

INSTALL_HINT = "pip install 'smx[jax]' (jax[cpu]; for NVIDIA GPUs jax[cuda12], for TPUs jax[tpu])"
ALIASES = {"gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu", "cpu": "cpu"}


class JaxBackend(Backend):
    name = "jax"
    description = "JAX arrays, jit-compiled steps (cpu, gpu:N, tpu:N)"
    #: may run on accelerators; `backend: auto` asks accelerator_hint() before importing jax
    is_gpu = True
    deterministic = False  # XLA GPU reductions may use atomics

    def unavailable_reason(self) -> str | None:
        if not probe.installed("jax"):
            return f"JAX is not installed; {INSTALL_HINT}"
        if not probe.installed("jaxlib"):
            return f"jaxlib is missing; {INSTALL_HINT}"
        return None

    def accelerator_hint(self) -> str | None:
        """None when a GPU or TPU may be usable, else why not, without importing jax:
        JAX reaches accelerators only through a separately installed plugin or libtpu."""
        if (reason := self.unavailable_reason()) is not None:
            return reason
        plugin = probe.any_dist("jax-cuda", "jax-rocm", "libtpu")
        if plugin is None:
            return ("the installed JAX is CPU-only; for NVIDIA GPUs pip install 'jax[cuda12]', "
                    "for TPUs 'jax[tpu]'")
        if plugin.startswith("jax-cuda") and not probe.nvidia_driver():
            return "JAX has CUDA support but no NVIDIA driver is loaded (check nvidia-smi)"
        return None

    def _jax(self) -> Any:
        reason = self.unavailable_reason()
        if reason is not None:
            from smx.errors import BackendUnavailable

            raise BackendUnavailable(f"backend 'jax' is unavailable: {reason}")
        import jax

        return jax

    def namespace(self) -> Any:
        self._jax()
        import jax.numpy as xp  # Array API compliant since jax 0.4.32

        return xp

    def _device_map(self) -> dict[str, Any]:
        """Name -> jax device, accelerators first (``device: auto`` takes the GPU/TPU)."""
        jax = self._jax()
        out: dict[str, Any] = {}
        for platform in ("gpu", "tpu", "cpu"):
            try:
                found = jax.devices(platform)
            except RuntimeError:  # no such platform here
                continue
            for i, dev in enumerate(found):
                out["cpu" if platform == "cpu" and i == 0 else f"{platform}:{i}"] = dev
        return out

    def devices(self) -> list[str]:
        return list(self._device_map())

    def resolve_device(self, device: str) -> str:
        kind, _, index = device.partition(":")
        if kind in ALIASES and kind != "cpu":
            device = f"{ALIASES[kind]}:{index or 0}"
        try:
            return super().resolve_device(device)
        except Exception as exc:
            raise probe.no_accelerator(self, device, exc) from None

    def cheap_report(self) -> dict[str, Any] | None:
        return probe.cheap_report(self, "jax", "jax")

    def run_context(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        """64-bit types for a float64 run, in this thread only (module doc)."""
        if dtype != "float64":
            return contextlib.nullcontext()
        jax = self._jax()
        scoped = getattr(jax, "enable_x64", None)
        if scoped is not None:  # jax >= 0.8: the config state is its own context manager
            return scoped(True)
        from jax.experimental import enable_x64  # type: ignore[attr-defined]  # older jax

        return enable_x64()

    def _enable_x64(self, dtype: str | None) -> None:
        """Outside a run (the engine driven directly, e.g. by smx.testing): JAX's process-wide
        switch, the only way a float64 array stays float64 through the caller's own
        operations. Inside a float64 run its :meth:`run_context` already holds 64-bit
        types, so nothing changes here."""
        if dtype == "float64":
            jax = self._jax()
            if not jax.config.jax_enable_x64:
                jax.config.update("jax_enable_x64", True)

    def place(self, X: Any, y: Any, w: Any | None, device: str, dtype: str) -> Block:
        self._enable_x64(dtype)
        return super().place(X, y, w, device, dtype)

    def from_host(self, array: Any, device: str, dtype: str | None = None) -> Array:
        import numpy as np

        jax = self._jax()
        self._enable_x64(dtype)
        if dtype == "int64" and not jax.config.jax_enable_x64:
            dtype = "int32"  # what JAX would make of it anyway, without its warning
        target = self._device_map()[self.resolve_device(device)]
        if isinstance(array, jax.Array):  # already JAX's (the estimator's input): no host trip
            return jax.device_put(array if dtype is None else array.astype(dtype), target)
        return jax.device_put(np.asarray(array, dtype=dtype), target)

    def to_host(self, array: Array) -> Any:
        import numpy as np

        return np.array(self._jax().device_get(array))  # a writable copy

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self._jax().jit(fn)

    def kernel(self, loss: Any) -> Any:
        from smx.backends import jax_kernels
        from smx.losses import CROSS_ENTROPY_KEY

        if getattr(loss, "kernel_key", None) == CROSS_ENTROPY_KEY:
            return jax_kernels.cross_entropy_partial
        return None

    def fused_epoch(self, step: TrainStep, data: Block) -> Any:
        """The core ``step`` scanned over the epoch, padded to one shape (module doc)."""
        jax = self._jax()
        xp = self.namespace()

        def epoch(params: Any, state: Any, X: Array, y: Array, w: Array | None, idx: Array,
                  rows: Array, scale: Array) -> tuple[Any, Any, Array, Array]:
            def one(carry: Any, xs: Any) -> tuple[Any, Array]:
                params, state, running = carry
                idx, rows, scale = xs
                real = xp.astype(xp.arange(idx.shape[0]) < rows, X.dtype)
                wb = real if w is None else xp.astype(xp.take(w, idx, axis=0), X.dtype) * real
                block = Block(xp.take(X, idx, axis=0), xp.take(y, idx, axis=0), wb)
                params, state, loss = step(params, state, block)
                trace = xp.stack([loss, *(xp.astype(xp.sum(p), loss.dtype)
                                          for p in params.values())])
                return (params, state, running + loss * scale), trace

            # a state that was not made by JAX (a checkpoint's NumPy arrays) as JAX arrays:
            # a scan's carry keeps its types from call to call
            state = jax.tree.map(xp.asarray, state)
            (params, state, running), trace = jax.lax.scan(
                one, (params, state, xp.zeros((), dtype=X.dtype)), (idx, rows, scale))
            return params, state, running, trace

        compiled = self.compile(epoch)

        import numpy as np

        index = np.int64 if jax.config.jax_enable_x64 else np.int32
        dtype = np.dtype(str(data.X.dtype))

        def fused(params: Any, state: Any, data: Block, order: Any,
                  bounds: list[tuple[int, int]]) -> Any:
            starts, stops = np.asarray(bounds, dtype=np.int64).T
            rows = (stops - starts).astype(index)
            width = int(rows.max())
            at = starts[:, None] + np.arange(width)  # each step's positions in the order
            real = at < stops[:, None]
            # padding: row 0, weight 0 (one vectorised gather: an epoch may have 10⁶ steps)
            idx = np.where(real, np.asarray(order)[np.where(real, at, 0)], 0).astype(index)
            scale = (rows / width).astype(dtype)  # 1 exactly for full batches
            # host arrays go with the call's arguments (a device slice: ~70 µs more a step)
            return compiled(params, state, data.X, data.y, data.w, idx, rows, scale)

        return fused

    def synchronize(self, device: str) -> None:
        jax = self._jax()
        jax.effects_barrier()
        jax.device_put(0.0, self._device_map()[self.resolve_device(device)]).block_until_ready()

    def versions(self) -> dict[str, str]:
        jax = self._jax()
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


@smx.hookimpl
def smx_backends():
    yield JaxBackend()
