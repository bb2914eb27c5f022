"""`smx parity`: numpy vs array-api-strict agree, a perturbed backend fails, unusable ones stop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smx.parity import compare, compare_labels, parse_backends
from tests.conftest import ROOT, assert_one_line_error, run_smx
from tests.plugin_fixtures import install_fake_dist

CONFIG = str(ROOT / "configs" / "parity.yaml")

# a third-party backend that is subtly wrong: every array it receives is off by 1e-3
PERTURBED = '''
    import numpy as np
    import smx
    from smx.backends.numpy_backend import NumpyBackend

    class Perturbed(NumpyBackend):
        name = "perturbed"

        def from_host(self, array, device, dtype=None):
            out = super().from_host(array, device, dtype)
            return out + 1e-3 if np.issubdtype(out.dtype, np.floating) else out

    @smx.hookimpl
    def smx_backends():
        yield Perturbed()
'''


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_and_strict_agree_end_to_end(tmp_path, dtype):
    proc = run_smx("parity", CONFIG, "epochs=3", "--backends", "numpy,array-api-strict@device1",
                   "--dtype", dtype, "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "max abs err" in proc.stdout and "FAIL" not in proc.stdout
    report = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert report["passed"] is True and report["dtype"] == dtype
    assert ("floor" in report) == (dtype == "float32")  # the input-rounding floor, explained
    assert report["reference"]["backend"] == "numpy"
    assert report["reference"]["dtype"] == "float64"
    assert [(b["backend"], b["device"]) for b in report["backends"]] == [
        ("numpy", "cpu"), ("array-api-strict", "device1")]
    for b in report["backends"]:
        assert b["dtype"] == dtype and b["passed"]
        assert set(b["quantities"]) == {"init_loss", "init_grad", "loss_curve", "final_params",
                                        "proba", "labels"}
        worst = max(q["max_abs"] for name, q in b["quantities"].items() if name != "labels")
        assert worst < (1e-5 if dtype == "float32" else 1e-12)
        # float32 is compared with a float64 reference, so it cannot be exact; float64 need
        # not be exact either: numpy runs its fused kernel, strict the portable core
        if dtype == "float32":
            assert worst > 0
    # an existing report is never replaced silently
    again = run_smx("parity", CONFIG, "epochs=1", "--dtype", dtype, "-o", "out", cwd=tmp_path)
    assert_one_line_error(again, "parity.json", "already exists", "--overwrite")


def test_perturbed_backend_fails_parity_with_exit_1(tmp_path):
    site = install_fake_dist(tmp_path / "site", "smx-perturbed", "0.1",
                             {"smx_perturbed": PERTURBED}, {"perturbed": "smx_perturbed"})
    proc = run_smx("parity", CONFIG, "epochs=2", "--backends", "numpy,perturbed", "-o",
                   "report.json", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert_one_line_error(proc, "parity", "perturbed@cpu init_grad", "final_params", code=1)
    assert "FAIL" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is False
    by_name = {b["backend"]: b for b in report["backends"]}
    assert by_name["numpy"]["passed"] and not by_name["perturbed"]["passed"]


@pytest.mark.parametrize(("backends", "needles"), [
    ("numpy,cupy", ["--backends", "backend 'cupy' is unavailable"]),
    ("numpy,nope", ["--backends", "unknown backend 'nope'", "array-api-strict"]),
    ("numpy,array-api-strict@cuda:0", ["no device 'cuda:0'", "device1"]),
])
def test_unusable_backend_exits_2_writing_nothing(tmp_path, backends, needles):
    from smx.backends.cupy_backend import CupyBackend

    if "cupy" in backends and CupyBackend().unavailable_reason() is None:
        pytest.skip("CuPy is usable here")
    proc = run_smx("parity", CONFIG, "--backends", backends, "-o", "out", cwd=tmp_path)
    line = assert_one_line_error(proc, *needles)
    if "cupy" in backends:
        assert "pip install 'smx[cuda12]'" in line or "CUDA" in line
    assert not (tmp_path / "out").exists()


def test_compare_rule_and_errors():
    ref = np.array([1.0, -2.0, 0.0])
    ok = compare(ref + np.array([1e-7, 0, 0]), ref, atol=1e-6, rtol=0)
    assert ok["passed"] and ok["max_abs"] == pytest.approx(1e-7)
    assert ok["max_rel"] == pytest.approx(1e-7 / 2)
    assert not compare(ref + 1e-5, ref, atol=1e-6, rtol=1e-6)["passed"]
    assert not compare(np.array([np.nan, 0, 0]), ref, 1, 1)["passed"]
    assert not compare(ref[:2], ref, 1, 1)["passed"]


def test_labels_count_only_rows_decided_beyond_tolerance():
    ref = np.array([[0.5, 0.5 - 1e-6, 1e-6],   # a near tie: either label is right
                    [0.9, 0.05, 0.05],
                    [0.2, 0.7, 0.1]])
    swapped_tie = np.array([[0.5 - 1e-6, 0.5, 1e-6], ref[1], ref[2]])
    r = compare_labels(swapped_tie, ref, atol=1e-5)
    assert r["passed"] and r["mismatches"] == 0 and r["ties"] == 1
    wrong = np.array([ref[0], [0.05, 0.9, 0.05], ref[2]])
    r = compare_labels(wrong, ref, atol=1e-5)
    assert not r["passed"] and r["mismatches"] == 1 and r["ties"] == 0


def test_parse_backends():
    assert parse_backends("numpy, cupy@cuda:1") == [("numpy", "auto"), ("cupy", "cuda:1")]
    assert parse_backends("torch@cpu,torch@cuda") == [("torch", "cpu"), ("torch", "cuda")]


@pytest.mark.parametrize("text", ["numpy,numpy", "jax, jax@auto", "torch@cpu,torch@cpu"])
def test_a_backend_listed_twice_is_refused(text):
    from smx.errors import ConfigError

    with pytest.raises(ConfigError, match="listed twice"):
        parse_backends(text)


def test_another_reference_backend_in_process():
    from smx.config import load_config
    from smx.parity import run_parity
    from smx.plugins import Plugins

    plugins = Plugins(entry_points=False)
    cfg = load_config(CONFIG, ["epochs=2", "dtype=float64"], plugins=plugins)
    report = run_parity(cfg, [("numpy", "auto")], plugins, reference="array-api-strict")
    assert report.passed
    assert (report.reference.backend, report.reference.dtype) == ("array-api-strict", "float64")
    assert len(report.reference.loss_curve) == 2 and report.reference.proba.shape[1] == 10


def test_a_wrong_fused_kernel_fails_init_grad():
    """init_loss/init_grad come from the function training calls, so a kernel bug shows."""
    import smx
    from smx.backends import numpy_kernels
    from smx.backends.numpy_backend import NumpyBackend
    from smx.config import load_config
    from smx.parity import run_parity
    from smx.plugins import Plugins

    def zero_db(params, block, class_weight=None, *, grad=True):
        part = numpy_kernels.cross_entropy_partial(params, block, class_weight, grad=grad)
        if part.grads is not None:
            part.grads["b"] = np.zeros_like(part.grads["b"])
        return part

    class BadKernel(NumpyBackend):
        name = "bad-kernel"
        deterministic = False  # recorded in parity.json

        def kernel(self, loss):
            return zero_db

    class Plugin:
        @smx.hookimpl
        def smx_backends(self):
            yield BadKernel()

    plugins = Plugins(entry_points=False)
    plugins.register(Plugin(), "bad-kernel")
    cfg = load_config(CONFIG, ["epochs=1", "dtype=float64"], plugins=plugins)
    report = run_parity(cfg, [("numpy", "auto"), ("bad-kernel", "auto")], plugins)
    numpy_res, bad = report.results
    assert all(r["passed"] for r in numpy_res.values())
    assert not bad["init_grad"]["passed"] and bad["init_loss"]["passed"]
    js = report.to_json()
    assert js["reference"]["deterministic"] is True
    assert [b["deterministic"] for b in js["backends"]] == [True, False]


def test_a_device_a_backend_lacks_is_named_as_the_option_that_asked(tmp_path):
    """``--backends numpy@cuda:-1``: the error points at --backends, not at a config key."""
    proc = run_smx("parity", str(ROOT / "configs" / "parity.yaml"), "--backends",
                   "numpy@cuda:-1", cwd=tmp_path)
    assert_one_line_error(proc, "--backends: backend 'numpy' has no device 'cuda:-1'")
