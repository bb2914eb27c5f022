"""The run configuration: YAML + ``key.sub=value`` overrides, validated by pydantic.

Every failure becomes one :class:`ConfigError` line naming the key path and
what is allowed. Plugin options (dataset, optimizer, schedule) are validated
by the plugin's own pydantic model, so a third-party optimizer gets the same
checks as a built-in one.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smx.errors import ConfigError, PluginError
from smx.types import strict_scalar


class Section(BaseModel):
    # NaN/inf are refused: an inf l2 or init_scale trains into NaN instead of an input error
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    _strict_scalars = field_validator("*", mode="before")(classmethod(strict_scalar))


class PluginSection(BaseModel):
    """``name`` picks the plugin; every other key is that plugin's option."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    _strict_scalars = field_validator("*", mode="before")(classmethod(strict_scalar))
    name: str

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(PluginSection):
    name: str = Field("digits", description="dataset plugin (smx plugins lists them)")
    val_fraction: float = Field(0.15, ge=0, lt=1, description="fraction held out for validation")
    test_fraction: float = Field(0.15, ge=0, lt=1, description="fraction held out for test")
    standardize: bool = Field(True, description="z-score features with training statistics")

    @model_validator(mode="after")
    def _training_rows_left(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must be below 1, got "
                f"{self.val_fraction} + {self.test_fraction}: nothing would be left to train on")
        return self


class ModelConfig(Section):
    l2: float = Field(1e-4, ge=0, description="mean loss + l2/2·‖W‖² (intercept not penalised)")
    C: float | None = Field(
        None, gt=0, description="scikit-learn's C; sets l2 = 1/(C·n_train) when given"
    )
    fit_intercept: bool = True
    init_scale: float = Field(0.01, ge=0, description="std of the initial W (host RNG, seeded)")


class OptimizerConfig(PluginSection):
    name: str = "sgd"


class ScheduleConfig(PluginSection):
    name: str = "constant"


class LossConfig(PluginSection):
    """``name`` picks the loss plugin; ``class_weight`` applies to every loss."""

    name: str = Field("cross_entropy", description="loss plugin (smx plugins lists them)")
    class_weight: Literal["balanced"] | dict[str | int | float | bool, float] | None = Field(
        None, description="balanced (n / (K·count), as scikit-learn) or a label -> weight map")

    @field_validator("class_weight")
    @classmethod
    def _positive_weights(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for label, weight in value.items():
                if not (weight >= 0 and weight < float("inf")):
                    raise ValueError(f"class weight of {label!r} must be a finite number >= 0, "
                                     f"got {weight}")
        return value


class EarlyStoppingConfig(Section):
    """Stop on a plateau of the validation loss (or another monitored metric)."""

    patience: int | None = Field(
        None, ge=1, description="epochs without improvement before stopping; null: never stop"
    )
    min_delta: float = Field(0.0, ge=0, description="a change this small is no improvement")
    monitor: Literal["val_loss", "val_accuracy", "train_loss"] = "val_loss"
    restore_best: bool = Field(
        False, description="end with the best epoch's parameters instead of the last"
    )


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    backend: str = Field("numpy", description="backend plugin, or auto")
    backend_options: dict[str, Any] = Field(
        default_factory=dict, description="the backend's own options (smx plugins lists them)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | a backend's device")
    fallback: Literal["none", "cpu"] = "none"
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    epochs: int = Field(20, ge=1, le=1_000_000)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    clip_grad_norm: float | None = Field(
        None, gt=0, description="rescale each step's gradient to this global L2 norm at most"
    )
    batch_size: int = Field(64, ge=1, description="rows per step (full-batch optimizers ignore it)")
    shuffle: Literal["rows", "batches"] = Field(
        "rows", description="rows: a new row order each epoch; batches: rows shuffled once, "
                            "then whole batches in a new order each epoch (faster, one copy)")
    seed: int = Field(0, ge=0, lt=2**32, description="seeds the split, init and batch order")
    dtype: Literal["float32", "float64"] = "float32"
    threads: int | Literal["auto"] | None = Field(
        "auto", description="CPU threads for BLAS/OpenMP (threadpoolctl) and Numba while "
        "training: a count; auto: the cores the load average leaves free (all on an idle "
        "machine); null: each library's own default")

    @field_validator("threads")
    @classmethod
    def _positive_threads(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be at least 1, auto or null, got {value}")
        return value
    log_every: int = Field(50, ge=1, description="steps between reading the loss on the host")
    checkpoint_every: int = Field(
        1, ge=0, description="epochs between checkpoints (0: only at the end); see --resume")
    output: str | None = Field(None, description="run folder (default runs/<config>-<time>)")


PLUGIN_SECTIONS = {"data": "dataset", "loss": "loss", "optimizer": "optimizer",
                   "schedule": "schedule"}
SECTION_MODELS: dict[str, type[PluginSection]] = {
    "data": DataConfig, "loss": LossConfig, "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model that owns the key at ``loc``."""
    model: Any = RunConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))


_SHORT = reprlib.Repr()  # a value shown in an error stays short (YAML aliases can nest deep)
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel = 3


def _format(exc: ValidationError, prefix: str = "", allowed: list[str] | None = None) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in (*([prefix] if prefix else []), *loc)) or "(top level)"
    if err["type"] == "extra_forbidden":
        names = allowed if allowed is not None else _allowed_keys(loc)
        return f"{path}: unknown key; allowed: {', '.join(names) or '(none)'}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    got = err.get("input")
    text = _SHORT.repr(got)
    text = text if len(text) <= 120 else f"{text[:117]}..."
    shown = f" (got {text})" if not isinstance(got, dict) else ""
    msg = err["msg"].removeprefix("Value error, ")  # our own validators' messages, as written
    return f"{path}: {msg}{shown}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe-load a YAML mapping; errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("config file not found", where=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a YAML file", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", where=str(path)) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"malformed YAML: {exc.problem}", where=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}", where=str(path)) from None
    except RecursionError:
        raise ConfigError("malformed YAML: nested too deeply", where=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of keys, got {type(data).__name__}",
                          where=str(path))
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} must look like key.sub=value", where="overrides")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``optimizer.lr=0.05`` style overrides; values are parsed as YAML scalars.

    Switching a plugin (``optimizer.name=adam``) starts that section afresh, keeping
    only the keys every plugin of the kind shares: the file's options belong to
    the plugin it named. Name switches apply first, so their order does not matter.
    """
    out = dict(data)
    parsed = [_parse_override(item) for item in overrides]
    switches = [(k, v) for k, v in parsed if len(k) == 2 and k[1] == "name"
                and k[0] in PLUGIN_SECTIONS]
    for (section, _), value in switches:
        old = out.get(section)
        if isinstance(old, dict) and old.get("name", value) != value:
            shared = set(SECTION_MODELS[section].model_fields) - {"name"}
            out[section] = {k: v for k, v in old.items() if k in shared}
    for parts, value in parsed:
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{p!r} is not a section", where=".".join(parts))
            node[p] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return out


def validate(data: dict[str, Any], plugins: Any = None) -> RunConfig:
    """Schema check, then each plugin section against its plugin's own options."""
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None
    except RecursionError:
        raise ConfigError("the config is nested too deeply") from None
    if plugins is None:
        from smx.plugins import get_plugins

        plugins = get_plugins()
    for section, kind in PLUGIN_SECTIONS.items():
        sec: PluginSection = getattr(cfg, section)
        try:
            spec = plugins.get(kind, sec.name, where=f"{section}.name")
        except PluginError as exc:
            raise ConfigError(str(exc)) from None
        try:
            checked = spec.params.model_validate(sec.params())
        except ValidationError as exc:
            # the section's own keys (data.val_fraction...) are allowed beside the plugin's
            # (``name`` goes without saying: it is what picked the plugin)
            own = set(type(sec).model_fields) - {"name"}
            allowed = sorted(set(spec.params.model_fields) | own)
            raise ConfigError(_format(exc, section, allowed=allowed)) from None
        base = {k: getattr(sec, k) for k in type(sec).model_fields}
        setattr(cfg, section, type(sec).model_validate({**base, **checked.model_dump()}))
    if cfg.backend in plugins.names("backend"):  # auto: checked once the backend is chosen
        check_backend_options(cfg, plugins.get("backend", cfg.backend))
    return cfg


def check_backend_options(cfg: RunConfig, backend: Any) -> dict[str, Any]:
    """``backend_options`` against the backend's own options model; the validated dict.

    The options belong to the backend the config names (or, with ``auto``, to the one
    chosen): another backend running the same config (``smx parity``) gets its defaults."""
    options = cfg.backend_options if cfg.backend in ("auto", backend.name) else {}
    try:
        checked = backend.options.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(_format(exc, "backend_options",
                                  allowed=sorted(backend.options.model_fields))) from None
    return checked.model_dump()


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None,
                plugins: Any = None) -> RunConfig:
    data = source if isinstance(source, dict) else read_yaml(source)
    return validate(apply_overrides(data, overrides or []), plugins)


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
