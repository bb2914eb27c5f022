"""X, y and sample_weight from different array libraries, over every installed library:
scikit-learn's array-API convention for fit is "everything follows X", so y and the
weights of another library are moved to X's (through NumPy) and the fit is the all-NumPy
fit, in X's library; one that cannot be read so is one ValueError naming both libraries,
never an AttributeError or TypeError from smx's checks. With ``array_api_dispatch``,
``score`` takes y and weights of any library or a list as well."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
import sklearn

from smx import SoftmaxRegression
from smx.estimator_input import to_numpy

RNG = np.random.default_rng(0)
# float32-exact values: a float32 library (JAX without x64) holds the same numbers
X_NP = RNG.normal(size=(60, 3)).astype(np.float32).astype(np.float64)
Y_NP = np.argmax(X_NP + RNG.normal(size=(60, 3)), axis=1)
W_NP = RNG.integers(1, 4, 60).astype(np.float64)


def _torch(a):
    import torch

    return torch.asarray(a)


def _jax(a):
    import jax.numpy as jnp

    return jnp.asarray(a)


def _strict(a):
    import array_api_strict

    return array_api_strict.asarray(a)


MAKERS = {"numpy": np.asarray, "list": lambda a: a.tolist(), "torch": _torch, "jax": _jax,
          "array_api_strict": _strict}
MODULES = {"torch": "torch", "jax": "jax", "array_api_strict": "array_api_strict"}
INSTALLED = [name for name in MAKERS
             if name not in MODULES or importlib.util.find_spec(MODULES[name]) is not None]
ARRAYS = [name for name in INSTALLED if name != "list"]  # X: an array of each library
#: the library each X's fitted attributes are in (a type's top-level module)
HOME = {"numpy": "numpy", "torch": "torch", "jax": "jaxlib", "array_api_strict":
        "array_api_strict"}

MIXES = [(x, y, w) for x, y, w in itertools.product(ARRAYS, INSTALLED, [None, *INSTALLED])
         if not (y == x and w in (None, x))]  # at least one input of another library


@pytest.fixture(scope="module")
def reference():
    return {w: SoftmaxRegression(C=1.0, max_iter=8).fit(
        X_NP, Y_NP, sample_weight=None if w is None else W_NP) for w in (None, True)}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("x_lib, y_lib, w_lib", MIXES)
def test_y_and_weights_of_another_library_follow_x(reference, x_lib, y_lib, w_lib):
    X, y = MAKERS[x_lib](X_NP), MAKERS[y_lib](Y_NP)
    w = None if w_lib is None else MAKERS[w_lib](W_NP)
    est = SoftmaxRegression(C=1.0, max_iter=8).fit(X, y, sample_weight=w)
    assert type(est.coef_).__module__.split(".")[0] == HOME[x_lib]
    ref = reference[None if w_lib is None else True]
    np.testing.assert_allclose(to_numpy(est.coef_), ref.coef_, rtol=1e-4, atol=1e-5)
    pred = est.predict(X)
    assert type(pred).__module__.split(".")[0] == HOME[x_lib]
    np.testing.assert_array_equal(to_numpy(pred), ref.predict(X_NP))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("x_lib, y_lib, w_lib", [
    (x, y, w) for x, y, w in itertools.product(ARRAYS, INSTALLED, [None, "list", "numpy"])
    if y != x or w is not None])
def test_under_dispatch_fit_and_score_take_y_and_weights_of_any_library(monkeypatch, x_lib,
                                                                        y_lib, w_lib):
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")  # scikit-learn's dispatch needs SciPy's
    X, y = MAKERS[x_lib](X_NP), MAKERS[y_lib](Y_NP)
    w = None if w_lib is None else MAKERS[w_lib](W_NP)
    ref = SoftmaxRegression(C=1.0, max_iter=8).fit(
        X_NP, Y_NP, sample_weight=None if w is None else W_NP)
    with sklearn.config_context(array_api_dispatch=True):
        est = SoftmaxRegression(C=1.0, max_iter=8).fit(X, y, sample_weight=w)
        score = est.score(X, y, sample_weight=w)
    assert score == pytest.approx(ref.score(X_NP, Y_NP, sample_weight=None if w is None
                                            else W_NP))


@pytest.mark.parametrize("name", ["y", "sample_weight"])
@pytest.mark.parametrize("x_lib", ARRAYS)
def test_an_input_that_cannot_follow_x_is_one_value_error_naming_both(x_lib, name):
    jnp = pytest.importorskip("jax.numpy")
    if x_lib == "jax":
        pytest.skip("a JAX input of a JAX X does not need to follow it")
    gone = jnp.asarray(Y_NP if name == "y" else W_NP)
    gone.delete()  # JAX refuses to read a deleted array (RuntimeError)
    args = {"y": Y_NP, "sample_weight": None, name: gone}
    with pytest.raises(ValueError) as info:
        SoftmaxRegression(max_iter=2).fit(MAKERS[x_lib](X_NP), args["y"],
                                          sample_weight=args["sample_weight"])
    text = str(info.value)
    names = {"numpy": "NumPy", "torch": "PyTorch", "array_api_strict": "array-api-strict"}
    assert f"{name} is a JAX array and X a {names[x_lib]} one" in text, text
    assert "\n" not in text
