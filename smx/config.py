"""The run configuration: YAML + ``key.sub=value`` overrides, validated by pydantic.

Every failure becomes one :class:`ConfigError` line naming the key path and
what is allowed. Plugin options (dataset, optimizer, schedule) are validated
by the plugin's own pydantic model, so a third-party optimizer gets the same
checks as a built-in one.
"""

from __future__ import annotations

import math
import reprlib
from pathlib import Path
from typing import Any, ClassVar, Literal

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
    fit_intercept: bool = Field(True, description="learn a per-class intercept b (never penalised)")
    init_scale: float = Field(0.01, ge=0, description="std of the initial W (host RNG, seeded)")


class OptimizerConfig(PluginSection):
    name: str = Field("sgd", description="optimizer or full-batch solver plugin (smx plugins "
                      "lists them)")


class ScheduleConfig(PluginSection):
    name: str = Field("constant", description="learning-rate schedule plugin (smx plugins "
                      "lists them)")


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


class CallbackConfig(PluginSection):
    """One entry of ``callbacks:``: ``name`` picks the callback plugin; the other keys are
    its options."""

    name: str = Field(description="callback plugin (smx plugins lists them)")


class EarlyStoppingConfig(Section):
    """Stop on a plateau of the validation loss (or another monitored metric)."""

    patience: int | None = Field(
        None, ge=1, description="epochs without improvement before stopping; null: never stop"
    )
    min_delta: float = Field(0.0, ge=0, description="a change this small is no improvement")
    monitor: Literal["val_loss", "val_accuracy", "train_loss"] = Field(
        "val_loss", description="the metric watched after every epoch (val_accuracy: upwards)")
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
    fallback: Literal["none", "cpu"] = Field(
        "none", description="cpu: an accelerator that cannot be used is one warning and the "
        "run goes on with NumPy; none: it is an error")
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    epochs: int = Field(20, ge=1, le=1_000_000, description="the most epochs (L-BFGS: "
                        "iterations); early stopping may end the run sooner")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    clip_grad_norm: float | None = Field(
        None, gt=0, description="rescale each step's gradient to this global L2 norm at most"
    )
    batch_size: int = Field(64, ge=1, description="rows per step (full-batch optimizers ignore it)")
    shuffle: Literal["rows", "batches"] = Field(
        "rows", description="rows: a new row order each epoch; batches: rows shuffled once, "
                            "then whole batches in a new order each epoch (faster, one copy)")
    seed: int = Field(0, ge=0, lt=2**32, description="seeds the split, init and batch order")
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="floating type of the data and parameters on the device")
    threads: int | Literal["auto"] | None = Field(
        "auto", description="CPU threads while training (NumPy: its pool for row pieces, "
        "one BLAS thread each; other engines: BLAS/OpenMP via threadpoolctl, and Numba): a "
        "count; auto: the cores the load average leaves free (all on an idle machine); null: "
        "each library's own default (NumPy: every core). Changes the speed, never the bits "
        "on NumPy")

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
    callbacks: list[CallbackConfig] = Field(
        default_factory=list, description="callback plugins called at run start, each "
        "epoch's end, each checkpoint and run end: [{name: mlflow, ...options}]")


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


def _short(value: Any) -> str:
    """``value`` for an error message: at most 120 characters, and never an exception
    (an int past Python's 4300-digit limit cannot even be turned into text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:  # past the limit: the count from its bits (exact or one short)
            return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = _SHORT.repr(value)
    except Exception:  # a repr that fails must not hide the real error
        text = f"a {type(value).__name__}"
    return text if len(text) <= 120 else f"{text[:117]}..."


def _plain(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= 80 else _short(value)


def _branch(part: Any) -> bool:
    """A union member's tag in an error's location (``literal['balanced']``, ``int``)."""
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS)


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "list", "dict", "tuple"}


def _union_error(errors: list[Any]) -> dict[str, Any]:
    """The error to show of a value that fits no member of a union (``'balanced' | dict``):
    pydantic reports one per member, the first naming a type tag, not the problem. The one
    that got deepest (a bad weight inside the mapping) is the problem; when none got past
    the type, one message lists what each member expected. The tags leave the location."""
    first = errors[0]
    d = len(first["loc"]) - 1
    if d < 0 or not _branch(first["loc"][d]):
        return first
    same = [e for e in errors if tuple(e["loc"][:d]) == tuple(first["loc"][:d])
            and len(e["loc"]) > d and _branch(e["loc"][d])]
    deepest = max(same, key=lambda e: len(e["loc"]))
    if len(deepest["loc"]) > d + 1:
        err = dict(deepest)
    else:
        wants = [e["msg"].removeprefix("Input should be ") for e in same]
        err = {**first, "msg": "Input should be " + " or ".join(dict.fromkeys(wants))}
    err["loc"] = tuple(p for i, p in enumerate(err["loc"]) if not (i >= d and _branch(p)))
    return err


def _format(exc: ValidationError, prefix: str = "", allowed: list[str] | None = None) -> str:
    err = _union_error(exc.errors())
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in (*([prefix] if prefix else []), *loc)) or "(top level)"
    if err["type"] == "extra_forbidden":
        names = allowed if allowed is not None else _allowed_keys(loc)
        return f"{path}: unknown key; allowed: {', '.join(names) or '(none)'}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    got = err.get("input")
    shown = f" (got {_short(got)})" if not isinstance(got, dict) else ""
    msg = err["msg"].removeprefix("Value error, ")  # our own validators' messages, as written
    return f"{path}: {msg}{shown}"


#: a config is a few hundred bytes; these bound what a hostile or mistaken file can cost
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 10_000
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last),
    reads dates as plain text (``output: 2024-02-30`` is a folder name, not a bad date),
    turns any failure to build a value (``!!int abc``, a 5000-digit integer) into a YAML
    error at that value's line, and stops at :data:`MAX_CONFIG_NODES` nodes."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[Any]]] = {  # type: ignore[misc]
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nodes += 1
        if self._nodes > MAX_CONFIG_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_CONFIG_NODES:,} values; a config is far smaller",
                self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # ValueError from int()/float()/date(), KeyError for !!bool
            text = " ".join(str(exc).split()).split("; ")[0][:120] or type(exc).__name__
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.tag.rsplit(':', 1)[-1]} value: {text}",
                node.start_mark) from None

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


def parse_yaml(text: str, where: str) -> Any:
    """YAML text to Python values with :class:`_UniqueKeyLoader`; errors name
    ``where`` with line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise ConfigError(f"malformed YAML: {exc.problem}", where=at) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}", where=where) from None
    except RecursionError:
        raise ConfigError("malformed YAML: nested too deeply", where=where) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe-load a YAML mapping; errors name the file, line and column.

    Only a regular file of at most :data:`MAX_CONFIG_BYTES` is read: a FIFO or a
    device is refused at once instead of blocking or never ending.
    """
    from smx.safe_read import read_bytes

    path = Path(path)
    raw = read_bytes(path, ConfigError, limit=MAX_CONFIG_BYTES, what="the config",
                     missing="config file not found", expected="a YAML file")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark from an editor is no content
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read: not UTF-8 text (byte {exc.start})",
                          where=str(path)) from None
    data = parse_yaml(text, str(path))
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
        value = parse_yaml(raw, "overrides") if raw else ""
    except ConfigError:  # not YAML: the text itself (the schema says if text will do)
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str],
                    notes: list[str] | None = None) -> dict[str, Any]:
    """``optimizer.lr=0.05`` style overrides; values are parsed as YAML scalars.

    Switching a plugin (``optimizer.name=adam``) starts that section afresh, keeping
    only the keys every plugin of the kind shares: the file's options belong to
    the plugin it named. Switching ``backend`` likewise starts ``backend_options``
    afresh. Name switches apply first, so their order does not matter.
    Each option a switch drops (and no override gives again) is described in
    ``notes``, so that ``lr: 0.1`` silently becoming Adam's default cannot go unseen.
    """
    out = dict(data)
    parsed = [_parse_override(item) for item in overrides]
    _switch_backend(out, parsed, notes)
    switches = [(k, v) for k, v in parsed if len(k) == 2 and k[1] == "name"
                and k[0] in PLUGIN_SECTIONS]
    for (section, _), value in switches:
        old = out.get(section)
        if isinstance(old, dict) and old.get("name", value) != value:
            shared = set(SECTION_MODELS[section].model_fields) - {"name"}
            out[section] = {k: v for k, v in old.items() if k in shared}
            given = {k[1] for k, _ in parsed if len(k) == 2 and k[0] == section}
            dropped = [f"{k}={_short(v)}" for k, v in old.items()
                       if k not in shared and k != "name" and k not in given]
            if dropped and notes is not None:
                new, was = _plain(value), _plain(old.get("name", "?"))
                notes.append(
                    f"{section}.name={new} replaces {was}: {was}'s options {', '.join(dropped)} "
                    f"are dropped and {new}'s defaults apply; give them again (e.g. "
                    f"{section}.{dropped[0]}) to keep them")
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


def _switch_backend(out: dict[str, Any], parsed: list[tuple[list[str], Any]],
                    notes: list[str] | None) -> None:
    """``backend=numpy`` on a config written for Dask: the file's ``backend_options``
    belong to the engine it named (``cluster:`` means nothing to NumPy), so they go, with
    a note naming them, and the new engine's defaults apply."""
    names = [v for k, v in parsed if k == ["backend"]]
    options = out.get("backend_options")
    was = out.get("backend", RunConfig.model_fields["backend"].default)
    if not names or not isinstance(options, dict) or not options or names[-1] == was:
        return
    out["backend_options"] = {}
    given = {k[1] for k, _ in parsed if len(k) == 2 and k[0] == "backend_options"}
    dropped = [f"{k}={_short(v)}" for k, v in options.items() if k not in given]
    if dropped and notes is not None:
        new, was = _plain(names[-1]), _plain(was)
        notes.append(f"backend={new} replaces {was}: {was}'s backend_options "
                     f"{', '.join(dropped)} are dropped and {new}'s defaults apply")


def _refuse_nul(data: Any, path: str = "", seen: set[int] | None = None) -> None:
    """No name, path or option of a config can hold a NUL character (the OS would refuse
    it later, deep inside a run); each container is visited once (YAML aliases share)."""
    seen = set() if seen is None else seen
    if isinstance(data, str):
        if "\0" in data:
            raise ConfigError("contains a NUL character", where=path or "(top level)")
    elif isinstance(data, dict | list | tuple) and id(data) not in seen:
        seen.add(id(data))
        items = data.items() if isinstance(data, dict) else enumerate(data)
        for key, value in items:
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\0" in key:
                raise ConfigError("a key contains a NUL character", where=repr(sub))
            _refuse_nul(value, sub, seen)


def validate(data: dict[str, Any], plugins: Any = None) -> RunConfig:
    """Schema check, then each plugin section against its plugin's own options."""
    try:
        _refuse_nul(data)
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
        except RecursionError:
            raise ConfigError("nested too deeply", where=section) from None
        except ValidationError as exc:
            # the section's own keys (data.val_fraction...) are allowed beside the plugin's
            # (``name`` goes without saying: it is what picked the plugin)
            own = set(type(sec).model_fields) - {"name"}
            allowed = sorted(set(spec.params.model_fields) | own)
            raise ConfigError(_format(exc, section, allowed=allowed)) from None
        except Exception as exc:  # a plugin's own validator failing some other way
            raise ConfigError(f"the {kind} plugin {sec.name!r} could not check its options: "
                              f"{type(exc).__name__}: {exc}", where=section) from None
        base = {k: getattr(sec, k) for k in type(sec).model_fields}
        setattr(cfg, section, type(sec).model_validate({**base, **checked.model_dump()}))
    cfg.callbacks = [_check_callback(i, entry, plugins) for i, entry in enumerate(cfg.callbacks)]
    if cfg.backend in plugins.names("backend"):  # auto: checked once the backend is chosen
        check_backend_options(cfg, plugins.get("backend", cfg.backend))
    return cfg


def _check_callback(i: int, entry: CallbackConfig, plugins: Any) -> CallbackConfig:
    """``callbacks[i]`` against its plugin's own options, as a plugin section is."""
    where = f"callbacks.{i}"
    try:
        spec = plugins.get("callback", entry.name, where=f"{where}.name")
    except PluginError as exc:
        raise ConfigError(str(exc)) from None
    try:
        checked = spec.params.model_validate(entry.params())
    except RecursionError:
        raise ConfigError("nested too deeply", where=where) from None
    except ValidationError as exc:
        raise ConfigError(_format(exc, where, allowed=sorted(spec.params.model_fields))) \
            from None
    except Exception as exc:
        raise ConfigError(f"the callback plugin {entry.name!r} could not check its options: "
                          f"{type(exc).__name__}: {exc}", where=where) from None
    return CallbackConfig.model_validate({"name": entry.name, **checked.model_dump()})


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
                plugins: Any = None, notes: list[str] | None = None) -> RunConfig:
    """Read (or take) a config, apply overrides, validate. ``notes`` collects what the
    user should hear about (see :func:`apply_overrides`)."""
    data = source if isinstance(source, dict) else read_yaml(source)
    cfg = validate(apply_overrides(data, overrides or [], notes), plugins)
    if notes is not None:
        _note_solver_schedule(cfg, overrides or [], plugins, notes)
    return cfg


def _note_solver_schedule(cfg: RunConfig, overrides: list[str], plugins: Any,
                          notes: list[str]) -> None:
    """``optimizer.name=lbfgs`` on a config written for SGD keeps its schedule, which then
    scales each L-BFGS iteration's first step (cosine: towards 0): say so."""
    keys = [item.partition("=")[0].strip() for item in overrides]
    if "optimizer.name" not in keys or any(k.startswith("schedule") for k in keys) \
            or cfg.schedule.name == "constant":
        return
    from smx.types import SolverSpec

    if plugins is None:
        from smx.plugins import get_plugins

        plugins = get_plugins()
    if isinstance(plugins.get("optimizer", cfg.optimizer.name), SolverSpec):
        notes.append(f"schedule {cfg.schedule.name!r} (from the config) scales each "
                     f"{cfg.optimizer.name} iteration's first step; schedule.name=constant "
                     "for the solver's own steps")


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
