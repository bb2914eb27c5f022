"""The estimator's checks of input held by another array library (a PyTorch tensor, a JAX
or CuPy array, cupyx sparse, an array of any library a registered engine runs on), made where
it lives, with scikit-learn's messages; and the error types that are both smx's and the
``ValueError`` scikit-learn users expect.

Apart from :mod:`smx.estimator` so the estimator reads as the scikit-learn API over the
Trainer, and these checks (most of them the tensor versions of scikit-learn's own) as one
list a reader can audit.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    is_cupy_array,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)
from array_api_compat import (
    device as array_device,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _assert_all_finite, _check_sample_weight, column_or_1d

from smx.datasets.split import check_standardized, logit_limit
from smx.errors import ConfigError, DataError


class InvalidData(DataError, ValueError):
    """Data smx refuses (values too large for the run's dtype): an smx error that is also
    the ``ValueError`` scikit-learn raises for bad input."""


class InvalidParameter(ConfigError, ValueError):
    """A parameter the config refuses: an smx error that is also the ``ValueError``
    scikit-learn raises for a bad parameter."""


def native_engine(X: Any, prefer: str = "auto") -> tuple[str, str] | None:
    """``(engine, device)`` for an array of another library than NumPy, else None (NumPy,
    lists, data frames, scipy.sparse: scikit-learn's validation takes them).

    PyTorch, JAX and CuPy (cupyx sparse too) are told by array-api-compat, which never
    imports them; any other Array API array belongs to the registered engine whose
    namespace is the array's (:func:`registered_engine`)."""
    return known_engine(X) or registered_engine(X, prefer)


#: the engines :func:`known_engine` tells by array-api-compat's checks
KNOWN_ENGINES = ("torch", "jax", "cupy")


def known_engine(X: Any) -> tuple[str, str] | None:
    """``(engine, device)`` for a PyTorch tensor, a JAX array, a CuPy array or a cupyx
    sparse matrix (never importing any of them: array-api-compat only looks at modules
    already imported), else None."""
    if is_torch_array(X):
        if X.device.type == "meta":  # shapes without values: nothing to train on or score
            raise ValueError("X is a PyTorch tensor on the 'meta' device, which holds no "
                             "values; move it to a real device first")
        return "torch", str(X.device)
    if is_jax_array(X):
        (dev,) = X.devices()
        return "jax", "cpu" if dev.platform == "cpu" else f"{dev.platform}:{dev.id}"
    if is_cupy_array(X) or cupyx_sparse(X):
        return "cupy", f"cuda:{(X.data if cupyx_sparse(X) else X).device.id}"
    return None


def registered_engine(X: Any, prefer: str = "auto") -> tuple[str, str] | None:
    """``(engine, device)`` of the usable registered engine whose ``namespace()`` is X's
    Array API namespace (``prefer`` first, when it is one), and the device of its
    ``devices()`` X is on; None for NumPy and what is no Array API array.

    Engines whose name is the library's (``array-api-strict`` for ``array_api_strict``) are
    asked first, so an input seldom makes another engine import its library; the built-in
    engines :func:`known_engine` tells are not asked (X is none of theirs)."""
    if is_numpy_array(X):
        return None
    try:
        xp = array_namespace(X)
    except TypeError:  # lists, data frames, scipy.sparse
        return None
    from smx.plugins import get_plugins

    plugins = get_plugins()
    for reg in _by_likeness(plugins.registrations("backend"), type(X).__module__, prefer):
        backend = reg.record
        if reg.name in KNOWN_ENGINES:
            continue
        try:
            if backend.unavailable_reason() is not None or not _same(backend.namespace(), xp):
                continue
        except Exception:  # an engine that cannot answer is not X's
            continue
        return backend.name, _device_of(backend, X)
    return None


def _by_likeness(regs: list[Any], module: str, prefer: str) -> list[Any]:
    """``prefer`` first, then the engines named like X's library, then the others."""
    def key(name: str) -> str:
        return name.replace("-", "_").lower()

    library = key(module.split(".")[0])
    return sorted(regs, key=lambda r: (r.name != prefer, library not in key(r.name)))


def _same(a: Any, b: Any) -> bool:
    return a is b or getattr(a, "__name__", a) == getattr(b, "__name__", b)


def _device_of(backend: Any, X: Any) -> str:
    """The name, among ``backend.devices()``, of the device X is on."""
    devices = backend.devices()
    for name in devices:
        if backend.from_host(np.zeros(1), name).device == X.device:
            return name
    raise ValueError(f"X is on device {X.device!r}, which backend {backend.name!r} does not "
                     f"list (its devices: {', '.join(devices)})")


def host_values(a: Any) -> Any:
    """A PyTorch tensor as NumPy reads it (detached, on the CPU; bfloat16, which NumPy has
    not, as float32), an array of another registered engine as its ``to_host`` gives it;
    anything else unchanged (scikit-learn's validation converts it)."""
    if not is_torch_array(a):
        if known_engine(a) is None and (engine := registered_engine(a)) is not None:
            from smx.plugins import get_plugins

            return get_plugins().backend(engine[0]).to_host(a)
        return a
    native_engine(a)  # refuses the meta device
    a = a.detach().cpu()
    if a.dtype.is_floating_point and a.dtype.itemsize == 2 and str(a.dtype) != "torch.float16":
        a = a.float()
    return a.numpy()


#: the libraries' names in messages, by the top-level module of their array type
_LIBRARIES = {"jaxlib": "JAX", "jax": "JAX", "torch": "PyTorch", "numpy": "NumPy",
              "array_api_strict": "array-api-strict", "cupy": "CuPy", "cupyx": "CuPy",
              "dask": "Dask", "builtins": "Python"}


def library(a: Any) -> str:
    """The array library of ``a``, as a user names it (a list is Python's)."""
    root = type(a).__module__.split(".")[0]
    return _LIBRARIES.get(root, root)


def follow_x(X: Any, **arrays: Any) -> list[Any]:
    """scikit-learn's array-API convention for fit, "everything follows X": y and
    sample_weight of another library than X's are taken through NumPy (where X's library
    then gets them). One that cannot be read so (a deleted JAX array, a tensor that refuses
    to leave its device) is one ``ValueError`` naming both libraries, not the library's own
    error from inside smx's checks."""
    out = []
    lib_x = library(X)
    for name, a in arrays.items():
        if a is None or isinstance(a, np.ndarray) or library(a) == lib_x:
            out.append(a)
            continue
        try:  # an engine's array as NumPy; anything else (lists, frames...) as it is
            out.append(to_numpy(a))
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(
                f"{name} is a {library(a)} array and X a {lib_x} one: {name} follows X's "
                f"library (scikit-learn's array-API convention) through NumPy, which could "
                f"not read it ({type(exc).__name__}: {exc}); pass {name} as NumPy or in X's "
                "library") from None
    return out


def to_numpy(a: Any) -> Any:
    """An array of any library as NumPy (CuPy's copied from the GPU, PyTorch's as
    :func:`host_values` reads it); anything else (NumPy, lists, scipy.sparse, data frames,
    None) unchanged, for scikit-learn's validation."""
    if a is None or isinstance(a, np.ndarray):
        return a
    if is_cupy_array(a):
        return a.get()
    if cupyx_sparse(a):
        return a.get()
    if known_engine(a) is not None or registered_engine(a) is not None:
        return np.asarray(host_values(a))
    return a


#: an input's (Array API namespace, device), or None for NumPy and what scikit-learn takes
Where = tuple[Any, Any] | None


def input_namespace(X: Any) -> Where:
    """(namespace, device) of an array of a library smx answers in (PyTorch, JAX, CuPy and
    cupyx sparse, any registered engine's); None for NumPy, lists, scipy.sparse, frames."""
    if native_engine(X) is None:
        return None
    values = X.data if cupyx_sparse(X) else X
    return array_namespace(values), array_device(values)


def array_place(a: Any) -> tuple[str, Any]:
    """(namespace name, device) of an array as scikit-learn's ``check_same_namespace``
    compares them; NumPy arrays and anything that is no array (lists, scipy.sparse) are
    NumPy's on the CPU."""
    if native_engine(a) is None:
        return "numpy", "cpu"
    values = a.data if cupyx_sparse(a) else a
    return array_namespace(values).__name__, array_device(values)


def _has_float64(xp: Any, device: Any) -> bool:
    try:
        return "float64" in xp.__array_namespace_info__().dtypes(kind="real floating",
                                                                   device=device)
    except Exception:  # a library without the inspection API: assume it has
        return True


def to_namespace(a: np.ndarray, where: Where, like: Any = None) -> Any:
    """A host array in ``where``'s namespace and on its device (float64 as float32 on a
    device without float64, as scikit-learn does); unchanged when ``where`` is None or
    ``like`` (the attribute it came from) is already there."""
    if where is None:
        return a
    xp, device = where
    if like is not None and native_engine(like) is not None and _same(
            array_namespace(like), xp) and array_device(like) == device:
        return like
    if a.dtype == np.float64 and not _has_float64(xp, device):
        a = a.astype(np.float32)
    return xp.asarray(a, device=device)


def foreign(a: Any, xp: Any, on: Any) -> bool:
    """Not an array of namespace ``xp`` on device ``on`` (NumPy, a list, another library's
    array, another device): scikit-learn's "everything follows X" moves it through the
    host."""
    if native_engine(a) is None:
        return True
    return not _same(array_namespace(a), xp) or array_device(a) != on


def native_labels(y: Any, xp: Any, backend: Any, on: Any) -> tuple[np.ndarray, Any]:
    """(classes on the host, class indices on X's device), with scikit-learn's checks: y
    1-D (or one column), finite, discrete. Labels given on the host (strings too) are
    checked and encoded there (as are labels of another library or device); only the
    indices travel."""
    if foreign(y, xp, on):
        y = column_or_1d(np.asarray(to_numpy(y)), warn=True)
        if y.dtype.kind in "fc":
            _assert_all_finite(y, input_name="y")
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        return classes, xp.asarray(y_idx.astype(np.int64).reshape(-1), device=on)
    if len(y.shape) == 2 and y.shape[1] == 1:
        y = xp.reshape(y, (-1,))
    if len(y.shape) != 1:
        raise ValueError(f"y should be a 1d array, got an array of shape {tuple(y.shape)} "
                         "instead.")
    if xp.isdtype(y.dtype, "complex floating"):
        raise ValueError("Complex data not supported")
    if xp.isdtype(y.dtype, "real floating"):
        if not bool(xp.all(xp.isfinite(y))):
            raise ValueError("Input y contains NaN or infinity.")
        if not bool(xp.all(y == xp.round(y))):
            raise ValueError("Unknown label type: continuous. Maybe you are trying to fit a "
                             "classifier, which expects discrete classes on a regression "
                             "target with continuous values.")
    classes_dev, y_idx = xp.unique_inverse(y)
    return np.asarray(backend.to_host(classes_dev)), y_idx


def native_weights(sample_weight: Any, n: int, xp: Any, on: Any, dtype: Any) -> Any:
    """Sample weights on X's device: n finite numbers >= 0 (a scalar weighs every row);
    given on the host, scikit-learn's own check runs there."""
    if sample_weight is None:
        return None
    if foreign(sample_weight, xp, on):
        w = _check_sample_weight(to_numpy(sample_weight), np.empty((n, 0)),
                                 dtype=np.float64, ensure_non_negative=True)
        return xp.asarray(w, dtype=dtype, device=on)
    w = sample_weight
    if tuple(w.shape) != (n,):
        raise ValueError(f"sample_weight.shape == {tuple(w.shape)}, expected ({n},)!")
    if not xp.isdtype(w.dtype, ("real floating", "integral")):
        raise ValueError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
    w = xp.astype(w, dtype)
    if not bool(xp.all(xp.isfinite(w))):
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if bool(xp.any(w < 0)):
        raise ValueError("Negative values in data passed to `sample_weight`.")
    return w


def check_row(row_s: np.ndarray, row_r: np.ndarray, i: int, dtype: str,
               standardized: bool) -> None:
    try:
        check_standardized(row_s[None], np.array([i]), dtype=dtype, where="fit", columns=None,
                           raw=row_r[None], standardized=standardized)
    except DataError as exc:
        raise InvalidData(str(exc)) from None


def check_native_magnitudes(Xs: Any, raw: Any, xp: Any, backend: Any, dtype: str,
                             standardized: bool) -> None:
    """The dense check of fit (values whose logits would overflow ``dtype``) where X lives:
    one reduction to the host, and the offending row only when there is one."""
    limit = logit_limit(dtype)
    colmax = np.asarray(backend.to_host(xp.max(xp.abs(Xs), axis=0)), dtype=np.float64)
    bad = ~(colmax <= limit)
    if not bad.any():
        return
    j = int(np.argmax(bad))
    i = int(backend.to_host(xp.argmax(xp.abs(Xs[:, j]))))
    check_row(np.asarray(backend.to_host(Xs[i, :]), dtype=np.float64),
               np.asarray(backend.to_host(raw[i, :]), dtype=np.float64), i, dtype,
               standardized)


def check_sparse_magnitudes(X: Any, dtype: str, backend: Any = None) -> None:
    """The same check for sparse X, on its stored values (scipy.sparse or cupyx CSR)."""
    limit = logit_limit(dtype)
    data = X.data if backend is None else np.asarray(backend.to_host(X.data))
    bad = ~(np.abs(data) <= limit)
    if not bad.any():
        return
    k = int(np.argmax(bad))
    indptr = np.asarray(X.indptr if backend is None else backend.to_host(X.indptr))
    i = int(np.searchsorted(indptr, k, side="right") - 1)
    row = X[i].toarray() if backend is None else np.asarray(backend.to_host(X[i].toarray()))
    row = np.asarray(row, dtype=np.float64).reshape(-1)
    check_row(row, row, i, dtype, False)


def cupyx_sparse(X: Any) -> bool:
    """A cupyx.scipy.sparse matrix (without importing CuPy when it is not loaded)."""
    csp = sys.modules.get("cupyx.scipy.sparse")
    return csp is not None and bool(csp.issparse(X))
