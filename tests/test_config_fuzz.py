"""Fuzzing the config loader: any input is a valid RunConfig or one ConfigError/PluginError line."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smx.config import RunConfig, load_config, validate
from smx.errors import ConfigError, PluginError
from smx.plugins import Plugins

PLUGINS = Plugins(entry_points=False)
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

KEYS = sorted({*RunConfig.model_fields, "name", "lr", "momentum", "nesterov", "beta1", "eps",
               "warmup_epochs", "min_factor", "gamma", "step_epochs", "path", "label_column",
               "labels", "n", "d", "k", "l2", "C", "fit_intercept", "init_scale",
               "val_fraction", "test_fraction", "standardize", "weight_decay", "seed"})
NAMES = ["sgd", "adam", "cosine", "constant", "step", "digits", "iris", "synthetic", "file",
         "numpy", "array-api-strict", "cupy", "auto", "cpu", "cuda:0", "float32", "float64"]

#: values YAML reads but cannot always build: dates, explicit tags on the wrong text, and
#: integers past Python's 4300-digit limit (issue 13: each used to be a traceback)
HOSTILE = ["2001-13-45", "2024-02-30", "2024-02-03", "!!int abc", "!!float x", "!!bool maybe",
           "!!timestamp 2001-13-45", "!!binary x", "!!set {a}", "!!str", "!!null x",
           "!!python/object:os.system x", "9" * 5000, "0x" + "f" * 5000, "-" + "9" * 4000,
           "0o" + "7" * 6000, "\x00", ".inf", "1e400", "~", "&a [*a]"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(NAMES),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)
sections = st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(NAMES) | scalars, "lr": values,
                  "momentum": values, "warmup_epochs": values, "n": values})
configs = st.fixed_dictionaries({}, optional={
    "data": sections | values, "optimizer": sections | values, "schedule": sections | values,
    "model": st.dictionaries(keys, values, max_size=3) | values,
    "epochs": values, "batch_size": values, "dtype": values, "backend": values,
    "device": values, "seed": values, "log_every": values, "checkpoint_every": values,
    "output": values,
}) | st.dictionaries(keys, values, max_size=5)


def outcome(load) -> RunConfig | None:
    """Run ``load``; only a RunConfig or a one-line ConfigError/PluginError may come out."""
    try:
        cfg = load()
    except (ConfigError, PluginError) as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None
    assert isinstance(cfg, RunConfig)
    return cfg


@FUZZ
@given(configs)
def test_any_dict_loads_or_fails_in_one_line(data):
    cfg = outcome(lambda: validate(data, PLUGINS))
    if cfg is not None:  # what loads also round-trips through its own YAML
        again = validate(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))), PLUGINS)
        assert again == cfg


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([*KEYS, "optimizer.lr", "data.name", "model.l2",
                                           "epochs.x", ""]) | st.text(max_size=10),
                          st.sampled_from(["=", "", "=="]),
                          st.text(max_size=10) | st.sampled_from(NAMES + HOSTILE)),
                max_size=4))
def test_any_overrides_load_or_fail_in_one_line(parts):
    overrides = [f"{k}{sep}{v}" for k, sep, v in parts]
    outcome(lambda: load_config({"epochs": 2}, overrides, plugins=PLUGINS))


yaml_texts = st.one_of(
    st.text(max_size=80),
    configs.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.tuples(configs.map(yaml.safe_dump), st.integers(0, 200),
              st.sampled_from(list(":-[]{}&*!|>'\"%@`#,\t\n "))).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:]),
    st.tuples(st.sampled_from(sorted(RunConfig.model_fields)), st.sampled_from(HOSTILE)).map(
        lambda t: f"{t[0]}: {t[1]}\n"),
    st.tuples(st.sampled_from(["optimizer", "data", "model", "schedule"]),
              st.sampled_from(["lr", "name", "n", "l2", "path", "gamma"]),
              st.sampled_from(HOSTILE)).map(lambda t: f"{t[0]}:\n  {t[1]}: {t[2]}\n"),
)


@FUZZ
@given(text=yaml_texts)
def test_any_yaml_text_loads_or_fails_in_one_line(text, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    outcome(lambda: load_config(path, plugins=PLUGINS))


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"epochs: *a{levels - 1}"]) + "\n"


def test_hostile_yaml_is_one_short_line(tmp_path):
    """Deep nesting (RecursionError inside PyYAML) and an alias bomb (9**9 leaves if shown)."""
    cases = {"deep.yaml": "epochs: " + "[" * 5000 + "]" * 5000 + "\n",
             "deep2.yaml": "optimizer: {name: sgd, lr: " + "[" * 900 + "]" * 900 + "}\n",
             "bomb.yaml": _alias_bomb()}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        try:
            load_config(tmp_path / name, plugins=PLUGINS)
        except ConfigError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 300, str(exc)[:500]
        else:
            raise AssertionError(f"{name} loaded")
