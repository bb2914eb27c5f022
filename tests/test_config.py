"""Bad configs: one line naming the key path and what is allowed, exit 2, nothing written."""

from __future__ import annotations

import pytest

from smx.config import apply_overrides, load_config
from smx.errors import ConfigError
from tests.conftest import ROOT, assert_one_line_error, run_smx, write_yaml

CASES = [
    # (yaml text, overrides, words expected in the error line)
    ("epochs: 2\nbogus: 1\n", [], ["bogus: unknown key; allowed:", "epochs"]),
    ("model:\n  l2: 0.1\n  lambda: 2\n", [], ["model.lambda: unknown key", "fit_intercept"]),
    ("epochs: many\n", [], ["epochs:", "valid integer", "'many'"]),
    ("epochs: 0\n", [], ["epochs:", "greater than or equal to 1"]),
    ("batch_size: 0\n", [], ["batch_size:", "greater than or equal to 1"]),
    ("dtype: float16\n", [], ["dtype:", "'float32' or 'float64'"]),
    ("optimizer:\n  name: sgd\n  lr: -0.1\n", [], ["optimizer.lr:", "greater than 0"]),
    ("optimizer:\n  name: sgd\n  beta: 1\n", [], ["optimizer.beta: unknown key",
                                                  "lr, momentum, nesterov, weight_decay"]),
    ("optimizer:\n  name: sgdd\n", [], ["optimizer.name:", "unknown optimizer 'sgdd'",
                                        "adagrad, adam, adamw, lbfgs"]),
    ("schedule:\n  name: cosine\n  gamma: 0.5\n", [], ["schedule.gamma: unknown key",
                                                       "min_factor"]),
    ("data:\n  name: synthetic\n  k: 1\n", [], ["data.k:", "greater than or equal to 2"]),
    ("data:\n  name: digits\n  val_fraction: 1.5\n", [], ["data.val_fraction:", "less than 1"]),
    ("model:\n  l2: -1\n", [], ["model.l2:", "greater than or equal to 0"]),
    ("- just\n- a list\n", [], ["expected a mapping"]),
    ("epochs: 2\n", ["epochs=-3"], ["epochs:", "greater than or equal to 1"]),
    ("epochs: 2\n", ["optimizer.nope=1"], ["optimizer.nope: unknown key"]),
    ("epochs: 2\n", ["noequals"], ["overrides", "key.sub=value"]),
    ("epochs: 2\n", ["epochs.sub=1"], ["epochs", "not a section"]),
]


@pytest.mark.parametrize(("text", "overrides", "needles"), CASES)
def test_bad_config_is_one_line(text, overrides, needles, tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, overrides)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_malformed_yaml_names_line_and_column(tmp_path):
    cfg = write_yaml(tmp_path / "bad.yaml", "epochs: 2\noptimizer:\n  name: [sgd\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: malformed YAML"):
        load_config(cfg)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_tags_are_not_executed(tmp_path):
    cfg = write_yaml(tmp_path / "evil.yaml", "epochs: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(cfg)


def test_overrides_parse_yaml_scalars():
    out = apply_overrides({"optimizer": {"name": "sgd"}},
                          ["optimizer.lr=0.05", "optimizer.nesterov=true", "epochs=3"])
    assert out == {"optimizer": {"name": "sgd", "lr": 0.05, "nesterov": True}, "epochs": 3}


def test_plugin_defaults_are_resolved():
    cfg = load_config({"optimizer": {"name": "adam"}})
    assert cfg.optimizer.params() == {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                      "weight_decay": 0.0}


@pytest.mark.parametrize(("text", "args", "needles"), [
    ("epochs: 2\nbogus: 1\n", [], ["bogus: unknown key"]),
    ("epochs: [1\n", [], ["c.yaml:", "malformed YAML"]),
    ("optimizer:\n  name: sgd\n  lr: -1\n", [], ["optimizer.lr"]),
    ("epochs: 2\n", ["dtype=int8"], ["dtype"]),
])
def test_cli_bad_config_exit_2_nothing_written(text, args, needles, tmp_path):
    write_yaml(tmp_path / "c.yaml", text)
    proc = run_smx("run", "c.yaml", *args, "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_cli_missing_config_file(tmp_path):
    proc = run_smx("run", "missing.yaml", cwd=tmp_path)
    assert_one_line_error(proc, "missing.yaml", "not found")
    assert list(tmp_path.iterdir()) == []


def test_switching_a_plugin_by_override_starts_its_section_afresh():
    base = {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
            "data": {"name": "digits", "val_fraction": 0.3},
            "schedule": {"name": "cosine", "warmup_epochs": 1}}
    out = apply_overrides(base, ["optimizer.lr=0.01", "optimizer.name=adam",
                                 "data.name=synthetic", "data.k=4"])
    assert out["optimizer"] == {"name": "adam", "lr": 0.01}
    assert out["data"] == {"name": "synthetic", "val_fraction": 0.3, "k": 4}
    assert out["schedule"] == base["schedule"]
    assert apply_overrides(base, ["optimizer.name=sgd"])["optimizer"] == base["optimizer"]
    cfg = load_config(base, ["optimizer.name=lbfgs"])
    assert cfg.optimizer.name == "lbfgs" and cfg.optimizer.params()["history"] == 10


def test_switching_to_a_solver_notes_the_configs_schedule():
    from smx.config import load_config

    notes: list[str] = []
    load_config({"optimizer": {"name": "sgd"}, "schedule": {"name": "cosine"}},
                ["optimizer.name=lbfgs"], notes=notes)
    assert any("schedule 'cosine'" in n and "schedule.name=constant" in n for n in notes)
    for overrides in (["optimizer.name=lbfgs", "schedule.name=constant"],
                      ["optimizer.name=adam"]):
        notes = []
        load_config({"optimizer": {"name": "sgd"}, "schedule": {"name": "cosine"}}, overrides,
                    notes=notes)
        assert not any("schedule" in n for n in notes)


def test_switching_the_backend_by_override_starts_backend_options_afresh():
    """The file's options belong to the engine it named: ``backend=numpy`` on a Dask config
    drops ``cluster``... with one note naming them; options given again are kept."""
    base = {"backend": "dask", "backend_options": {"cluster": "local", "workers": 2}}
    notes: list[str] = []
    out = apply_overrides(base, ["backend=numpy"], notes)
    assert out == {"backend": "numpy", "backend_options": {}}
    assert notes == ["backend=numpy replaces dask: dask's backend_options cluster='local', "
                     "workers=2 are dropped and numpy's defaults apply"]
    out = apply_overrides(base, ["backend_options.workers=3", "backend=torch"])
    assert out["backend_options"] == {"workers": 3}
    assert apply_overrides(base, ["backend=dask"]) == base  # no switch, nothing dropped
    # the default engine (numpy) named by no key is switched from too
    assert apply_overrides({"backend_options": {"fused": True}},
                           ["backend=jax"])["backend_options"] == {}


def test_cli_switches_a_dask_config_to_numpy_with_a_note(tmp_path):
    """`smx run configs/dask-local.yaml backend=numpy` trains instead of refusing
    ``backend_options.cluster`` (issue 21, item 5)."""
    proc = run_smx("run", str(ROOT / "configs" / "dask-local.yaml"), "backend=numpy",
                   "epochs=2", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "backend_options" in line]
    assert len(notes) == 1 and "cluster='local'" in notes[0] and "dropped" in notes[0], notes
    assert "numpy on cpu" in proc.stdout
