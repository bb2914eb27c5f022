"""Callbacks as a plugin kind: registration, the config section, what a run calls them with,
the conformance rules, and no host read added to the loop."""

from __future__ import annotations

import json

import pytest

import smx
from smx.backends.numpy_backend import NumpyBackend
from smx.config import load_config
from smx.errors import ConfigError, PluginError
from smx.plugins import Plugins
from smx.runner import resume, run
from smx.testing import ContractError, check_callback, parametrize_with_checks, with_params
from tests.conftest import assert_one_line_error, counting, run_smx
from tests.plugin_fixtures import install_recorder


class Log(smx.Callback):
    """Records every call in a list (in-process tests)."""

    def __init__(self, calls: list, fail_at: str | None = None) -> None:
        self.calls, self.fail_at = calls, fail_at

    def _hit(self, hook, *args):
        self.calls.append((hook, *args))
        if hook == self.fail_at:
            raise RuntimeError(f"broken in {hook}")

    def on_run_start(self, run):
        self._hit("on_run_start", run)

    def on_epoch_end(self, record):
        self._hit("on_epoch_end", record)

    def on_checkpoint(self, path, epoch):
        self._hit("on_checkpoint", path, epoch)

    def on_run_end(self, summary):
        self._hit("on_run_end", summary)


CALLS: list = []


class LogParams(smx.PluginParams):
    fail_at: str | None = None


LOG = smx.CallbackSpec("log", lambda fail_at=None: Log(CALLS, fail_at), LogParams,
                       "test: in-memory log")


class Holder:
    def __init__(self, *specs, backends=()):
        self.specs, self.backends = specs, backends

    @smx.hookimpl
    def smx_callbacks(self):
        return list(self.specs)

    @smx.hookimpl
    def smx_backends(self):
        return list(self.backends)


def plugins_with(*specs, backends=()) -> Plugins:
    plugins = Plugins(entry_points=False)
    plugins.register(Holder(*specs, backends=backends), name="test-callbacks")
    return plugins


def iris(tmp_path, plugins, **extra):
    return load_config({"data": {"name": "iris"}, "backend": "numpy", "epochs": 3,
                        "threads": 1, "output": str(tmp_path / "run"), **extra},
                       plugins=plugins)


@pytest.fixture(autouse=True)
def _clear():
    CALLS.clear()


def test_the_kind_is_registered_like_the_others():
    plugins = Plugins(entry_points=False)
    names = [r.name for r in plugins.registrations("callback")]
    assert names == ["mlflow", "tensorboard"]
    assert all(r.plugin == "callbacks" for r in plugins.registrations("callback"))


def test_smx_plugins_lists_the_callback_kind(tmp_path):
    proc = run_smx("plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["callback", "mlflow"] in [r[:2] for r in rows]
    assert ["callback", "tensorboard"] in [r[:2] for r in rows]
    one = run_smx("plugins", "mlflow", cwd=tmp_path)
    assert one.returncode == 0 and "smx run 'callbacks=[{name: mlflow}]'" in one.stdout
    assert "tracking_uri" in one.stdout


@pytest.mark.parametrize("entry, where", [
    ({"name": "nope"}, "callbacks.0.name: unknown callback 'nope'; valid: log"),
    ({"name": "log", "fail_on": "x"}, "callbacks.0.fail_on: unknown key; allowed: fail_at"),
    ({"fail_at": "x"}, "callbacks.0.name: required key is missing"),
    ("log", "callbacks.0: Input should be a valid dictionary"),
])
def test_a_bad_entry_is_one_line_naming_its_key_path(tmp_path, entry, where):
    plugins = plugins_with(LOG)
    with pytest.raises(ConfigError) as err:
        load_config({"callbacks": [{"name": "log"}, entry][1:]}, plugins=plugins)
    assert str(err.value).startswith(where), str(err.value)


def test_a_bad_entry_from_the_cli_is_one_error_line(tmp_path):
    proc = run_smx("run", "data.name=iris", "callbacks=[{name: mlflow, uri: x}]", cwd=tmp_path)
    assert_one_line_error(proc, "callbacks.0.uri: unknown key; allowed: experiment, run_name, "
                          "tracking_uri")
    assert not (tmp_path / "runs").exists()


def test_a_run_calls_each_hook_with_the_documented_records(tmp_path):
    plugins = plugins_with(LOG)
    outcome = run(iris(tmp_path, plugins, callbacks=[{"name": "log"}]), plugins=plugins,
                  progress=False)
    hooks = [c[0] for c in CALLS]
    assert hooks == ["on_run_start", *["on_epoch_end", "on_checkpoint"] * 3, "on_run_end"]
    start = CALLS[0][1]
    assert start.folder == outcome.folder and not start.resumed and start.history == []
    assert start.config["callbacks"] == [{"name": "log", "fail_at": None}]
    assert start.config["output"] == str(outcome.folder)
    lines = [json.loads(line) for line in (outcome.folder / "metrics.jsonl").open()]
    assert [c[1] for c in CALLS if c[0] == "on_epoch_end"] == lines
    assert [c[1:] for c in CALLS if c[0] == "on_checkpoint"] == [
        (outcome.folder / "checkpoint.npz", e) for e in (1, 2, 3)]
    assert CALLS[-1][1] == json.loads((outcome.folder / "summary.json").read_text())


def test_a_resumed_run_says_so_with_the_epochs_done(tmp_path):
    plugins = plugins_with(LOG)
    cfg = iris(tmp_path, plugins, callbacks=[{"name": "log"}], checkpoint_every=1)
    run(cfg, plugins=plugins, progress=False)
    folder = tmp_path / "run"
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    CALLS.clear()
    resume(folder, plugins=plugins, progress=False)
    start = CALLS[0][1]
    assert start.resumed and [r["epoch"] for r in start.history] == [1, 2, 3]
    assert start.history == [json.loads(line) for line in lines]
    assert CALLS[-1][0] == "on_run_end"


@pytest.mark.parametrize("hook", ["on_run_start", "on_epoch_end", "on_checkpoint"])
def test_a_callback_that_raises_is_one_error_naming_it_and_hears_the_end(tmp_path, hook):
    plugins = plugins_with(LOG)
    cfg = iris(tmp_path, plugins, callbacks=[{"name": "log", "fail_at": hook}])
    with pytest.raises(PluginError, match=rf"^callbacks.0 \(log\): {hook} raised "
                                          rf"RuntimeError: broken in {hook}"):
        run(cfg, plugins=plugins, progress=False)
    assert CALLS[-1][0] == "on_run_end" and CALLS[-1][1]["status"] == "failed"
    assert f"broken in {hook}" in CALLS[-1][1]["error"]


def test_a_diverging_run_ends_with_status_diverged(tmp_path):
    from smx.errors import DivergenceError

    plugins = plugins_with(LOG)
    cfg = iris(tmp_path, plugins, callbacks=[{"name": "log"}],
               optimizer={"name": "sgd", "lr": 1e30})
    with pytest.raises(DivergenceError):
        run(cfg, plugins=plugins, progress=False)
    assert CALLS[-1][0] == "on_run_end" and CALLS[-1][1]["status"] == "diverged"


def test_callbacks_add_no_host_reads(tmp_path):
    """Records reach callbacks from numbers the loop has already read: the same number of
    device-to-host copies with a callback as without."""
    backend = counting(NumpyBackend)()
    backend.name = "counting-numpy"
    plugins = plugins_with(LOG, backends=[backend])
    reads = {}
    for name, callbacks in (("without", []), ("with", [{"name": "log"}, {"name": "log"}])):
        backend.to_host_calls = 0
        cfg = load_config({"data": {"name": "synthetic", "n": 400}, "backend": "counting-numpy",
                           "epochs": 3, "batch_size": 10, "log_every": 7, "threads": 1,
                           "output": str(tmp_path / name), "callbacks": callbacks},
                          plugins=plugins)
        run(cfg, plugins=plugins, progress=False)
        reads[name] = backend.to_host_calls
    assert reads["with"] == reads["without"] > 0
    assert len(CALLS) == 2 * (1 + 3 * 2 + 1)


def test_a_missing_sink_library_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    for module in ("mlflow", "tensorboard"):
        monkeypatch.setitem(__import__("sys").modules, module, None)
    plugins = Plugins(entry_points=False)
    for name in ("mlflow", "tensorboard"):
        cfg = iris(tmp_path, plugins, callbacks=[{"name": name}])
        with pytest.raises(PluginError, match=rf"^callbacks.0: the {name} callback needs "
                                              rf"{name}, .*; pip install 'smx\[{name}\]'$"):
            run(cfg, plugins=plugins, progress=False)
        assert not (tmp_path / "run").exists()  # checked before the folder is made


# --- a third-party callback, installed through entry points --------------------------------

def test_a_third_party_callback_is_called_with_the_documented_records(tmp_path):
    site = install_recorder(tmp_path / "site")
    env = {"PYTHONPATH": str(site)}
    listing = run_smx("plugins", cwd=tmp_path, env=env)
    assert "recorder" in listing.stdout and "smx-recorder 0.3" in listing.stdout
    calls = tmp_path / "calls.jsonl"
    proc = run_smx("run", "data.name=iris", "epochs=3", "output=out", "--quiet",
                   f"callbacks=[{{name: recorder, path: {calls}}}]", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in calls.open()]
    out = tmp_path / "out"
    assert [g["hook"] for g in got] == ["on_run_start", *["on_epoch_end", "on_checkpoint"] * 3,
                                        "on_run_end"]
    assert got[0]["folder"] == "out" and got[0]["config"]["data"]["name"] == "iris"
    assert got[0]["resumed"] is False and got[0]["history"] == []
    lines = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [g["record"] for g in got if g["hook"] == "on_epoch_end"] == lines
    assert [g["epoch"] for g in got if g["hook"] == "on_checkpoint"] == [1, 2, 3]
    assert got[-1]["summary"] == json.loads((out / "summary.json").read_text())


def test_the_third_party_callback_passes_the_conformance_kit(tmp_path, monkeypatch):
    site = install_recorder(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    from smx_recorder import RECORDER

    report = check_callback(with_params(RECORDER, path=str(tmp_path / "calls.jsonl")))
    assert set(report.values()) == {"passed"}, report
    assert (tmp_path / "calls.jsonl").read_text().count("on_run_end") == 3


# --- the rules catch what they say ----------------------------------------------------------

class Litter(smx.Callback):
    """Writes its own file into the run folder: --overwrite could no longer replace it."""

    def on_run_start(self, run):
        (run.folder / "notes.txt").write_text("mine")


class Nothing:
    pass


def _breaks(rule: str, spec: smx.CallbackSpec) -> str:
    with pytest.raises(ContractError) as err:
        check_callback(spec)
    assert err.value.rule == rule, str(err.value)
    return str(err.value)


def test_a_callback_with_no_hook_fails_builds_a_callback():
    _breaks("callback.builds-a-callback", smx.CallbackSpec("nothing", Nothing))


def test_a_callback_that_raises_fails_follows_a_whole_run():
    message = _breaks("callback.follows-a-whole-run", smx.CallbackSpec(
        "broken", lambda: Log([], "on_checkpoint")))
    assert "on_checkpoint raised RuntimeError" in message


def test_a_callback_writing_into_the_run_folder_fails_replaceable():
    message = _breaks("callback.keeps-the-run-folder-replaceable",
                      smx.CallbackSpec("litter", Litter))
    assert "notes.txt" in message


def test_a_callback_raising_at_a_divergence_fails_survives_diverging():
    class EndFails(smx.Callback):
        def on_run_end(self, summary):
            if summary["status"] != "completed":
                raise RuntimeError("cannot end")

    message = _breaks("callback.survives-a-diverging-run", smx.CallbackSpec("end-fails", EndFails))
    assert "RuntimeError: cannot end" in message


def test_params_that_allow_unknown_keys_fail_the_first_rule():
    from pydantic import BaseModel

    class Loose(BaseModel):
        pass

    _breaks("callback.params-forbid-unknown-keys", smx.CallbackSpec("loose", Log, Loose))


@parametrize_with_checks([LOG])
def test_contract(obj, check):
    check(obj)
