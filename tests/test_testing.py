"""smx.testing itself: deliberately broken plugins fail with the rule they break, and the
kit's machinery (dispatch, ids, skips, reports, errors) does what its docs say."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import smx
from smx.backends.numpy_backend import NumpyBackend
from smx.backends.strict_backend import StrictBackend
from smx.losses import CrossEntropy, CrossEntropyParams
from smx.plugins import Plugins
from smx.testing import (
    ContractError,
    Skipped,
    check_backend,
    check_dataset,
    check_loss,
    checks,
    parametrize_with_checks,
    rule_names,
    with_params,
)
from smx.testing.registry import rules_markdown
from tests.conftest import ROOT

PLUGINS = Plugins(entry_points=False)
CROSS_ENTROPY = PLUGINS.get("loss", "cross_entropy")


def run(rule: str, obj) -> None:
    """The check for ``rule`` on ``obj``; a skip raises Skipped (never pytest's)."""
    dict(checks(obj))[rule].run(obj)


def breaks(rule: str, obj) -> str:
    """``obj`` fails ``rule`` with a ContractError naming it; its message."""
    with pytest.raises(ContractError) as info:
        run(rule, obj)
    assert info.value.rule == rule
    assert str(info.value).startswith(f"{rule}: ")
    return str(info.value)


# --- losses that break the contract ------------------------------------------------------

class WrongGradient(CrossEntropy):
    """Cross-entropy whose gradient is scaled: sums and weights are all right."""

    def partial(self, xp, Zt, y, w, cw, *, grad=True):
        total, weight, Gt = super().partial(xp, Zt, y, w, cw, grad=grad)
        return total, weight, None if Gt is None else Gt * 1.01


class MeanLoss(CrossEntropy):
    """The block's mean loss (and mean gradient) instead of sums: FD-consistent, not additive."""

    def partial(self, xp, Zt, y, w, cw, *, grad=True):
        total, weight, Gt = super().partial(xp, Zt, y, w, cw, grad=grad)
        n = Zt.shape[1]
        return total / n, weight, None if Gt is None else Gt / n


class NumpyInside(CrossEntropy):
    """Calls NumPy on its inputs: right on NumPy, and nowhere else."""

    def partial(self, xp, Zt, y, w, cw, *, grad=True):
        Zt = xp.asarray(np.clip(Zt, -50, 50))
        return super().partial(xp, Zt, y, w, cw, grad=grad)


class Float64Constant(CrossEntropy):
    """Mixes a float64 array into the loss: float32 in, float64 out."""

    def partial(self, xp, Zt, y, w, cw, *, grad=True):
        total, weight, Gt = super().partial(xp, Zt, y, w, cw, grad=grad)
        return total * xp.asarray(1.0, dtype=xp.float64), weight, Gt


def spec(factory, name="broken") -> smx.LossSpec:
    return smx.LossSpec(name=name, factory=factory, params=CrossEntropyParams)


def test_a_wrong_gradient_fails_finite_differences():
    message = breaks("loss.gradient-matches-finite-differences", spec(WrongGradient))
    assert "central differences" in message and "from Gt" in message
    for ok in ("loss.partial-returns-sums", "loss.additive-over-row-blocks"):
        run(ok, spec(WrongGradient))  # the other rules hold: the failure names the one broken


def test_check_loss_stops_at_the_first_broken_rule():
    with pytest.raises(ContractError, match=r"^loss\.gradient-matches-finite-differences: "):
        check_loss(spec(WrongGradient))


def test_a_mean_instead_of_a_sum_fails_additivity():
    breaks("loss.additive-over-row-blocks", spec(MeanLoss))
    with pytest.raises(ContractError, match=r"^loss\.additive-over-row-blocks: "):
        check_loss(spec(MeanLoss))  # its gradient is consistent with its value: FD passes


def test_a_loss_calling_numpy_fails_on_array_api_strict():
    run("loss.gradient-matches-finite-differences", spec(NumpyInside))
    assert "Array.__array__" in breaks("loss.runs-on-array-api-strict", spec(NumpyInside))


def test_a_float64_constant_fails_keeps_float32():
    message = breaks("loss.keeps-float32", spec(Float64Constant))
    assert "expected float32, got float64" in message


def test_a_plugin_that_raises_is_reported_under_the_rule():
    def factory(label_smoothing=0.0):
        raise TypeError("cannot build")

    message = breaks("loss.builds-with-defaults", spec(factory))
    assert "raised TypeError: cannot build" in message


def test_a_loss_object_is_checked_and_option_rules_skip():
    report = check_loss(CrossEntropy())
    assert report["loss.gradient-matches-finite-differences"] == "passed"
    assert report["loss.label-smoothing-changes-the-loss-and-keeps-the-gradient"].startswith(
        "skipped: the loss has no label_smoothing option")


# --- engines that break the contract -----------------------------------------------------

class DropsDtype(NumpyBackend):
    """Hands everything back as float64."""

    name = "drops-dtype"

    def to_host(self, array):
        return np.asarray(array, dtype=np.float64)


class ReadsInStep(NumpyBackend):
    """Checks each batch's indices on the host: one read per step."""

    name = "reads-in-step"

    def batch(self, data, idx):
        assert self.to_host(idx).max() < data.n
        return super().batch(data, idx)


class ConvertsInStep(StrictBackend):
    """Reads a scalar with ``int()`` each step: a sync that ``to_host`` never sees."""

    name = "converts-in-step"

    def batch(self, data, idx):
        if int(self.namespace().max(idx)) >= data.n:
            raise IndexError("batch index out of range")
        return super().batch(data, idx)


class RandomOrder(NumpyBackend):
    """Adds each evaluation's rows in two blocks split at a random row, as atomics would
    order a GPU reduction: the same sums to rounding, not bit for bit."""

    name = "random-order"
    deterministic = True  # the claim it breaks

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def partial(self, fn, data):
        from smx.types import Block

        cut = int(self.rng.integers(1, data.n)) if data.n > 1 else data.n
        head, tail = slice(0, cut), slice(cut, None)
        parts = [fn(Block(data.X[s], data.y[s], None if data.w is None else data.w[s]))
                 for s in (head, tail) if data.X[s].shape[0]]
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]


class DropsARow(NumpyBackend):
    """Gathers each batch without its last row: finite losses, another trajectory."""

    name = "drops-a-row"

    def batch(self, data, idx):
        return super().batch(data, idx[:-1])


class Unavailable(NumpyBackend):
    name = "unavailable"

    def unavailable_reason(self):
        return "its library is not installed; pip install it"


def test_to_host_dropping_the_dtype_fails_the_round_trip():
    message = breaks("backend.round-trip-keeps-values-dtypes-devices", DropsDtype())
    assert "float32" in message and "got float64" in message


def test_a_host_read_in_every_step_fails_no_host_read():
    message = breaks("backend.no-host-read-in-steps", ReadsInStep())
    assert "to_host calls in an epoch of 10 steps" in message
    run("backend.training-matches-numpy", ReadsInStep())  # right results, read per step


def test_an_implicit_conversion_in_a_step_fails_no_host_read():
    message = breaks("backend.no-host-read-in-steps", ConvertsInStep())
    assert "Array.__int__" in message


def test_a_nondeterministic_engine_claiming_determinism_fails():
    breaks("backend.deterministic-claim-holds", RandomOrder())
    run("backend.training-matches-numpy", RandomOrder())  # right to rounding in float64


def test_an_engine_taking_other_steps_fails_training_parity():
    """Minibatches, not full batches: an engine is compared step by step (only one that
    draws its own batches, overriding batch_order, is compared on full batches)."""
    message = breaks("backend.training-matches-numpy", DropsARow())
    assert "after 3 epochs vs the NumPy engine" in message
    breaks("backend.batch-gathers-rows", DropsARow())


def test_an_unavailable_engine_is_skipped_with_its_reason():
    report = check_backend(Unavailable())
    assert report.pop("backend.unavailable-reason") == "passed"
    assert set(report.values()) == {"skipped: backend 'unavailable' is unavailable here: its "
                                    "library is not installed; pip install it"}
    check = dict(checks(Unavailable()))["backend.partial-matches-numpy"]
    with pytest.raises(pytest.skip.Exception, match="pip install it"):
        check(Unavailable())  # under pytest: a skip, with the reason
    with pytest.raises(Skipped):
        check.run(Unavailable())


def test_bad_backend_options_are_a_contract_error():
    with pytest.raises(ContractError, match=r"^backend\.devices: raised ValidationError"):
        run("backend.devices", with_params(NumpyBackend(), fused="yes"))


# --- datasets that break the contract ----------------------------------------------------

def blobs(nan=False):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), np.arange(60) % 3
    if nan:
        X[7, 1] = np.nan
    return X, y


class NoParams(smx.PluginParams):
    pass


def test_a_dataset_with_nan_fails_finiteness():
    nan = smx.DatasetSpec("nan-blobs", lambda: blobs(nan=True), NoParams, owned=True)
    message = breaks("dataset.values-are-finite", nan)
    assert "1 NaN/inf, the first at [7, 1]" in message
    with pytest.raises(ContractError, match=r"^dataset\.values-are-finite: "):
        check_dataset(nan)


def test_a_dataset_claiming_ownership_of_shared_arrays_fails():
    cached = blobs()
    shared = smx.DatasetSpec("cached", lambda: cached, NoParams, owned=True)
    breaks("dataset.owned-means-fresh-arrays", shared)
    honest = smx.DatasetSpec("cached", lambda: cached, NoParams, owned=False)
    with pytest.raises(Skipped, match="owned=False"):
        run("dataset.owned-means-fresh-arrays", honest)


def test_a_params_model_accepting_unknown_keys_fails():
    from pydantic import BaseModel

    class Lax(BaseModel):
        n: int = 10

    breaks("dataset.params-forbid-unknown-keys", smx.DatasetSpec("lax", blobs, Lax))


def test_a_dataset_under_a_builtins_name_is_the_one_trained():
    """The spec under test, not the registered one of the same name, reaches the Trainer."""
    broken = smx.DatasetSpec("iris", lambda: (np.zeros((30, 2)), np.zeros(30)), NoParams)
    breaks("dataset.has-two-classes", broken)
    with pytest.raises(ContractError, match=r"^dataset\.splits-and-trains: .*class"):
        run("dataset.splits-and-trains", broken)


# --- the machinery -----------------------------------------------------------------------

def test_contract_errors_are_assertion_errors_naming_the_rule():
    assert issubclass(ContractError, AssertionError)
    error = ContractError("loss.x", "Σ loss: expected 1, got 2")
    assert str(error) == "loss.x: Σ loss: expected 1, got 2" and error.rule == "loss.x"


def test_checks_dispatches_on_the_kind_of_object():
    backend = [name for name, _ in checks(NumpyBackend())]
    loss = [name for name, _ in checks(CROSS_ENTROPY)]
    dataset = [name for name, _ in checks(PLUGINS.get("dataset", "iris"))]
    assert backend == rule_names("backend") and loss == rule_names("loss")
    assert dataset == rule_names("dataset")
    assert set(backend + loss + dataset) <= set(rule_names())
    assert len(set(rule_names())) == len(rule_names())
    assert all(n.startswith(k + ".") for k, names in (("backend", backend), ("loss", loss),
                                                       ("dataset", dataset)) for n in names)
    with pytest.raises(TypeError, match="no rules for str objects"):
        list(checks("cross_entropy"))


def test_a_check_refuses_an_object_of_another_kind():
    check = dict(checks(CROSS_ENTROPY))["loss.partial-returns-sums"]
    with pytest.raises(TypeError, match="checks a loss, not NumpyBackend"):
        check(NumpyBackend())


def test_parametrize_with_checks_names_each_case_object_then_rule():
    mark = parametrize_with_checks([CROSS_ENTROPY, with_params(CROSS_ENTROPY,
                                                               label_smoothing=0.1)])
    argnames, cases = mark.args
    assert argnames == "obj, check"
    ids = [case.id for case in cases]
    assert len(ids) == 2 * len(rule_names("loss"))
    assert "cross_entropy-loss.gradient-matches-finite-differences" in ids
    assert "cross_entropy[label_smoothing=0.1]-loss.additive-over-row-blocks" in ids
    obj, check = cases[0].values
    assert obj is CROSS_ENTROPY and check.name == rule_names("loss")[0]


def test_smx_testing_imports_and_runs_without_pytest():
    code = ("import sys; sys.modules['pytest'] = None\n"
            "import smx.testing as t\n"
            "from smx.plugins import Plugins\n"
            "report = t.check_loss(Plugins(entry_points=False).get('loss', 'cross_entropy'))\n"
            "assert set(report.values()) == {'passed'}, report\n"
            "print(len(report))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(rule_names("loss")))


def test_docs_list_every_rule_as_the_code_describes_it():
    """docs/testing.md holds rules_markdown() between its markers, so it cannot drift;
    ``python -m smx.testing.docs docs/testing.md`` rewrites that part."""
    text = (ROOT / "docs" / "testing.md").read_text()
    found = re.search(r"<!-- rules: .*? -->\n(.*?)<!-- /rules -->", text, re.S)
    assert found is not None
    assert found.group(1) == rules_markdown()
    for name in rule_names():
        assert f"`{name}`" in text
