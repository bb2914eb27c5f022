"""The ``smx`` command. Every user-facing failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import re
import shutil
import signal
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from smx.errors import ConfigError, ModelFileError, PluginError, SmxError, note

DEFAULT_CONFIG = "digits"


def _config_roots() -> list[Path]:
    """Where shipped configs live: packaged in the wheel, or the checkout's ``configs/``."""
    roots = []
    with contextlib.suppress(ModuleNotFoundError, TypeError):
        roots.append(Path(str(resources.files("smx") / "configs")))
    roots.append(Path(__file__).resolve().parent.parent / "configs")
    return [r for r in roots if r.is_dir()]


def shipped_configs() -> dict[str, Path]:
    """Every config shipped with smx by name (``lbfgs`` for ``optimizers/lbfgs.yaml``);
    the first root that has a name wins."""
    found: dict[str, Path] = {}
    for root in _config_roots():
        for path in sorted(root.rglob("*.yaml")):
            found.setdefault(path.stem, path)
            found.setdefault(path.relative_to(root).with_suffix("").as_posix(), path)
    return found


def builtin_config(name: str) -> Path | None:
    """A config shipped with smx (``smx run digits``, ``smx run lbfgs``), or None."""
    return shipped_configs().get(name.removesuffix(".yaml"))


def config_description(path: Path) -> str:
    """A shipped config's opening comment (less its own ``smx run`` line), first sentence."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    words = []
    for line in lines:
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith("smx "):
            words.append(text)
    text = " ".join(words)
    end = re.search(r"\.\s+(?=[A-Z])", text)
    return text[:end.start() + 1] if end else text


def resolve_config_path(arg: str | None) -> Path:
    if arg is None:
        path = builtin_config(DEFAULT_CONFIG)
        if path is None:
            raise ConfigError("the default config is missing from this installation")
        return path
    path = Path(arg)
    if path.exists() or path.is_symlink():
        return path
    if path.suffix in ("", ".yaml") and (shipped := builtin_config(arg)):
        return shipped
    raise ConfigError(_not_found_hint(arg), where=arg)


def _not_found_hint(arg: str) -> str:
    """Why ``smx run NAME`` found nothing, and what the user probably meant."""
    names = sorted(n for n in shipped_configs() if "/" not in n)
    text = "config file not found"
    if Path(arg).suffix:
        return text
    text += f", and no config of that name ships with smx ({', '.join(names)}; smx configs " \
            "lists them)"
    with contextlib.suppress(Exception):
        from smx.plugins import get_plugins

        for kind, key in (("dataset", "data.name"), ("optimizer", "optimizer.name"),
                          ("schedule", "schedule.name")):
            if arg in {r.name for r in get_plugins().registrations(kind)}:
                text += f"; {arg!r} is a {kind}: smx run {key}={arg}"
                break
    return text


def cmd_run(args: argparse.Namespace) -> int:
    from smx import plotting

    plotting.start()  # matplotlib imports on another core while this run starts up
    try:
        return _run(args)
    finally:
        plotting.discard()  # none left after the plot; stopped when the run failed


def _run(args: argparse.Namespace) -> int:
    from smx.config import load_config
    from smx.runner import resume, run

    # `smx run optimizer.lr=0.1` : a first argument with '=' is an override, not a file
    config_arg, overrides = args.config, list(args.overrides)
    if config_arg is not None and "=" in config_arg:
        overrides.insert(0, config_arg)
        config_arg = None
    if args.resume is not None:
        if config_arg is not None or overrides or args.overwrite:
            raise ConfigError("continues the run folder with its own config.yaml; it takes no "
                              "config, overrides or --overwrite", where="--resume")
        outcome = resume(args.resume, progress=not args.quiet)
    else:
        path = resolve_config_path(config_arg)
        notes: list[str] = []
        cfg = load_config(path, overrides, notes=notes)
        for text in notes:
            note(text)
        outcome = run(cfg, config_name=path.stem, overwrite=args.overwrite,
                      progress=not args.quiet)
    s = outcome.summary
    loss = s["test_loss"]  # None on a test split whose weights sum to 0
    tested = ("no test split" if s["test_accuracy"] is None else
              f"test accuracy {s['test_accuracy']:.4f}, test loss "
              + ("n/a (its weights sum to 0)" if loss is None else f"{loss:.4f}"))
    print(f"{outcome.folder}: {tested} ({s['backend']} on {s['device']}, {s['dtype']}, "
          f"{s['train_seconds']:.2f}s training)")
    if s.get("stop_reason", "max_epochs") != "max_epochs":
        print(f"stopped after epoch {s['epochs']}: {s['stop_reason']}")
    if s.get("restored_epoch") is not None:
        print(f"parameters restored from epoch {s['restored_epoch']} (early_stopping.restore_best)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from smx import sweep

    path = resolve_config_path(args.config)
    for name in ("jobs", "random", "optuna"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"must be at least 1, got {value}", where=f"--{name}")
    if not args.overrides:
        raise ConfigError("nothing to sweep: give key.sub=v1,v2 (or range(...), "
                          "log-uniform(a,b), uniform(a,b), choice(...))", where="smx sweep")
    mode, n = (("random", args.random) if args.random else ("optuna", args.optuna)
               if args.optuna else ("grid", None))
    plan = sweep.make_plan(path, list(args.overrides), mode, n, args.seed)
    folder = Path(args.output) if args.output else sweep.default_folder(plan)
    say = (lambda _m: None) if args.quiet else (
        lambda m: print(f"smx sweep: {m}", file=sys.stderr, flush=True))
    out = sweep.sweep(plan, folder, jobs=args.jobs or 1, cluster=args.cluster, say=say)
    header, body = sweep.table(out.rows, plan.keys, out.monitor)
    print(_table(body, header, width=_terminal_width()))
    print(f"{len(out.rows)} runs in {out.folder} (sweep.csv, sweep.png), best first by "
          f"{out.monitor}")
    if out.failed:
        print(f"smx: {out.failed} of {len(out.rows)} runs failed; sweep.csv and "
              f"{out.folder / 'logs'} say why", file=sys.stderr)
        return 1
    return 0


def _table(rows: list[list[str]], header: list[str], width: int | None = None) -> str:
    """Columns padded to line up; with ``width``, the widest columns are wrapped onto
    more lines until the table fits (never below 8 characters or their header)."""
    cells = [[str(c) for c in r] for r in [header, *rows]]
    n = len(header)
    widths = [max(len(r[i]) for r in cells) for i in range(n)]
    if width is not None:
        floor = [max(len(str(h)), 8) for h in header]

        def over() -> int:
            return sum(widths) + 2 * (n - 1) - width

        while over() > 0:  # narrow the widest column that can still give, one at a time
            shrinkable = [j for j in range(n) if widths[j] > floor[j]]
            if not shrinkable:
                break  # as narrow as it goes
            widths[max(shrinkable, key=lambda j: widths[j])] -= 1
    lines = []
    for k, row in enumerate(cells):
        wrapped = [textwrap.wrap(c, w, break_on_hyphens=False) or [""]
                   for c, w in zip(row, widths, strict=True)]
        for line in range(max(len(w) for w in wrapped)):
            lines.append("  ".join((w[line] if line < len(w) else "").ljust(wd)
                                   for w, wd in zip(wrapped, widths, strict=True)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _terminal_width() -> int | None:
    """The terminal's columns ($COLUMNS first), or None when the output goes to a file or
    a pipe without $COLUMNS: lines are then kept whole, for grep and friends."""
    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        return None
    return max(shutil.get_terminal_size((80, 24)).columns, 40)


#: each kind's config key that chooses a plugin, and the section its options go in
CONFIG_KEYS = {"backend": ("backend", "backend_options"),
               "optimizer": ("optimizer.name", "optimizer"),
               "solver": ("optimizer.name", "optimizer"), "loss": ("loss.name", "loss"),
               "schedule": ("schedule.name", "schedule"), "dataset": ("data.name", "data"),
               "callback": ("callbacks", "callbacks")}


def _option_fields(kind: str, record: object) -> dict[str, Any]:
    """The pydantic fields of a plugin's options: a backend's ``options`` model (its
    ``backend_options``), every other kind's ``params``."""
    model = getattr(record, "options" if kind == "backend" else "params", None)
    return dict(getattr(model, "model_fields", {}))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return repr(field.default_factory())
    return repr(field.default)


def _type(field: Any) -> str:
    """The field's type as its annotation reads, with its bounds (``float, >= 0``)."""
    ann = field.annotation
    text = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")
    ops = {"Gt": ">", "Ge": ">=", "Lt": "<", "Le": "<="}
    bounds = [f"{ops[type(m).__name__]} {getattr(m, type(m).__name__.lower())}"
              for m in field.metadata if type(m).__name__ in ops]
    return ", ".join([text, *bounds])


def _options(kind: str, record: object) -> str:
    return ", ".join(f"{name}={_default(f)}"
                     for name, f in _option_fields(kind, record).items())


def _status(kind: str, record: Any) -> str:
    reason = record.unavailable_reason() if kind == "backend" else None
    return "ok" if reason is None else f"unavailable: {reason}"


def cmd_plugins(args: argparse.Namespace) -> int:
    from smx.plugins import KINDS, get_plugins

    plugins = get_plugins()
    if args.name is not None:
        return _show_plugin(plugins, args.name)
    rows = []
    for kind in KINDS:
        for reg in plugins.registrations(kind):
            rows.append([kind, reg.name, reg.plugin, reg.version, _status(kind, reg.record),
                         _options(kind, reg.record)])
    for name, dist, error in plugins.broken:
        rows.append(["(broken)", name, name, dist, f"failed to load: {error}", ""])
    print(_table(rows, ["kind", "name", "plugin", "version", "status", "options"],
                 width=_terminal_width()))
    return 0


def _show_plugin(plugins: Any, name: str) -> int:
    """``smx plugins NAME``: the plugin (of each kind that has one of that name) and a table
    of its options; an unknown name is one error line listing the valid ones."""
    from smx.plugins import KINDS

    found = [(kind, reg) for kind in KINDS for reg in plugins.registrations(kind)
             if reg.name == name]
    broken = [b for b in plugins.broken if b[0] == name]
    if not found and not broken:
        valid = sorted({reg.name for kind in KINDS for reg in plugins.registrations(kind)})
        raise PluginError(f"unknown plugin {name!r}; valid: {', '.join(valid)}")
    blocks = [_plugin_block(kind, reg) for kind, reg in found]
    blocks += [_about(plugin, [("kind", "(broken)"), ("plugin", plugin), ("version", dist),
                               ("status", f"failed to load: {error}")])
               for plugin, dist, error in broken]
    print("\n\n".join(blocks))
    return 0


def _plugin_block(kind: str, reg: Any) -> str:
    """One plugin: what it is, how a config picks it, and its options' table."""
    fields = _option_fields(kind, reg.record)
    chosen, section = CONFIG_KEYS.get(kind, (kind, kind))
    example = f"smx run {chosen}={reg.name}"
    if fields:
        option, field = next(iter(fields.items()))
        example += f" {section}.{option}={_override_value(field)}"
    if kind == "callback":  # a list of entries, given as one YAML flow value
        example = f"smx run 'callbacks=[{{name: {reg.name}}}]'"
    about = _about(reg.name, [
        ("kind", kind), ("plugin", reg.plugin), ("version", reg.version),
        ("status", _status(kind, reg.record)),
        ("description", getattr(reg.record, "description", "") or "(none)"),
        ("config", example)])
    if not fields:
        return f"{about}\n\nno options"
    rows = [[o, _type(f), _default(f), f.description or ""] for o, f in fields.items()]
    table = _table(rows, ["option", "type", "default", "description"], width=_terminal_width())
    return f"{about}\n\n{table}"


def _override_value(field: Any) -> str:
    """A field's default as a ``key=value`` override writes it (YAML: null, false)."""
    import json

    if field.is_required():
        return "..."
    value = field.get_default(call_default_factory=True)
    return value if isinstance(value, str) else json.dumps(value)


def _about(title: str, items: list[tuple[str, str]]) -> str:
    return "\n".join([title, *(f"  {key:<12} {value}" for key, value in items)])


def cmd_configs(args: argparse.Namespace) -> int:
    """The configs shipped with smx, each runnable as ``smx run NAME``."""
    configs = shipped_configs()
    rows = [[name, config_description(path)] for name, path in configs.items()
            if "/" not in name]
    print(_table(rows, ["name", "what (smx run NAME)"], width=_terminal_width()))
    roots = _config_roots()
    if roots:
        print(f"\nfiles in {roots[0]}; copy one to start your own")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from smx import parity
    from smx.config import load_config
    from smx.plugins import get_plugins

    path = resolve_config_path(args.config)
    overrides = list(args.overrides) + ([f"dtype={args.dtype}"] if args.dtype else [])
    cfg = load_config(path, overrides)
    out = parity.output_path(args.output, path.stem, cfg.dtype)
    parity.check_writable(out, args.overwrite)
    report = parity.run_parity(cfg, parity.parse_backends(args.backends), get_plugins(),
                               reference=args.reference, config_name=str(path))
    ref = report.reference
    print(f"parity of {path} in {cfg.dtype}, against {ref.backend} on {ref.device} in "
          f"{ref.dtype}")
    print(_table(report.rows(), ["backend", "quantity", "max abs err", "max rel err",
                                 "atol/rtol", "result"]))
    parity.write_report(report, out)
    print(f"{'all backends agree' if report.passed else 'MISMATCH'}; written to {out}")
    parity.raise_on_mismatch(report)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import json

    from smx.hardware import backend_report, cpu_info
    from smx.plugins import get_plugins

    cpu, backends = cpu_info(), backend_report(get_plugins())
    if args.json:
        print(json.dumps({"cpu": cpu, "backends": backends}, indent=2))
        return 0
    print(f"CPU: {cpu['model']}, {cpu['cores']} logical cores")
    for b in cpu["blas"] or [{"library": "(not detected)"}]:
        extra = ", ".join(f"{k} {b[k]}" for k in ("version", "threads", "architecture") if b.get(k))
        print(f"  BLAS: {b['library']}" + (f" ({extra})" if extra else ""))
    gpus = [(b["name"], d) for b in backends for d in b.get("device_info", [])]
    if not gpus:
        print("GPUs: none usable")
    for name, d in gpus:
        print(f"GPU {d['device']} ({name}): {d['name']}, {d['memory_gib']} GiB, "
              f"compute capability {d['compute_capability']}, driver {d['driver']}")
    rows = [[b["name"], "gpu" if b["gpu"] else "cpu", "yes" if b["usable"] else "no",
             ", ".join(b["devices"]) if b["usable"] else b["reason"]] for b in backends]
    print(_table(rows, ["backend", "kind", "usable", "devices (or why not)"]))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from smx.datasets.files import STDIN, load_features
    from smx.io import atomic_write_text
    from smx.modelfile import load_model

    if args.output:  # before any work: a bad path is one line, not a traceback at the end
        out = Path(args.output)
        if out.is_dir():
            raise ConfigError("is a folder; give a file name for the CSV", where=str(out))
        if out.exists() and not out.is_file():  # replacing a FIFO or /dev/... : never
            raise ConfigError("exists and is not a regular file; give a file name for the CSV",
                              where=str(out))
        if not out.parent.is_dir():
            raise ConfigError(f"folder {str(out.parent)!r} does not exist", where=str(out))
        for what, path in (("model file", args.model), ("data file", args.data)):
            if out.is_file() and path != "-" and Path(path).is_file() \
                    and out.samefile(path):  # the predictions would replace what they read
                raise ConfigError(f"is the {what}; give another file name for the CSV",
                                  where=str(out))
    fitted = load_model(args.model)
    # the training data's label column is dropped when the file still has it
    trained_label = fitted.meta.get("label_column")
    label_column = args.label_column or (trained_label if isinstance(trained_label, str)
                                         else None)
    notes: list[str] = []
    X, _ = load_features(args.data, label_column=label_column,
                         label_required=args.label_column is not None, header=args.header,
                         columns=fitted.columns, notes=notes)
    for text in notes:
        note(text)
    is_csv = args.data == STDIN or Path(args.data).suffix.lower() == ".csv"
    where = "<stdin>" if args.data == STDIN else str(args.data)
    if X.shape[1] == fitted.n_features + 1 and is_csv:
        hint = ("if one column is the label, remove it (the file has no header to name it)"
                if not getattr(X, "columns", ()) else
                "if one column is the label, pass --label-column NAME")
        raise ModelFileError(f"the model expects {fitted.n_features} features, the data has "
                             f"{X.shape[1]}; {hint}", where=where)
    proba = fitted.predict_proba(X, where=where)
    labels = fitted.classes[np.argmax(proba, axis=1)]
    header = ["prediction"] + ([f"p_{_text(c)}" for c in fitted.classes] if args.proba else [])
    rows = [header]
    for i, label in enumerate(labels):
        row = [_text(label)]
        if args.proba:
            row += [f"{p:.6g}" for p in proba[i]]
        rows.append(row)
    if args.output:
        import io

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        atomic_write_text(args.output, buf.getvalue())
        print(f"{len(labels)} predictions written to {args.output}")
    else:
        csv.writer(sys.stdout, lineterminator="\n").writerows(rows)
    return 0


def _text(label: object) -> str:
    """A class label as the CSV shows it: bytes labels (an .npz of ``S`` strings) as their
    text, not Python's ``b'...'``."""
    if isinstance(label, bytes):
        return label.decode("utf-8", errors="backslashreplace")
    return str(label)


def cmd_bench(args: argparse.Namespace) -> int:
    from smx.bench import BenchConfig, run_bench

    bc = BenchConfig.quick() if args.quick else BenchConfig.full() if args.full else BenchConfig()
    for name in ("rows", "features", "classes", "batch", "repeats"):
        if (value := getattr(args, name)) is not None:
            least = 2 if name == "classes" else 1  # one class: no softmax to time
            if value < least:
                raise ConfigError(f"must be at least {least}, got {value}", where=f"--{name}")
            setattr(bc, name, value)
    if args.threads:
        if min(args.threads) < 1:
            raise ConfigError(f"must be at least 1, got {min(args.threads)}", where="--threads")
        bc.threads = tuple(args.threads)
    if args.budget is not None:
        if not 0 <= args.budget < float("inf"):  # NaN compared false: it meant no limit
            raise ConfigError(f"must be 0 (no limit) or more, got {args.budget:g}",
                              where="--budget")
        bc.budget_s = args.budget or None
    if args.only:
        bc.parts = tuple(args.only)
    if args.backends is not None:
        bc.backends = _bench_backends(args.backends)
    out = Path(args.output)
    if out.exists() and not out.is_dir():  # refuse before minutes of timing, not after
        raise ConfigError("exists and is not a folder", where=str(out))
    out.mkdir(parents=True, exist_ok=True)  # an unwritable place fails now, not at the end
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(f"smx bench: {msg}",
                                                                  file=sys.stderr))
    results = run_bench(bc, out, log=log, notes_file=out / "NOTES.md")
    judged = 0
    for t in results["targets"]:
        if t["value"] is None:
            continue
        n = t["threads"]
        threads = "" if n is None else f" [{n} BLAS thread{'s' * (n > 1)}]"
        verdict = (f"not judged: {t['not_judged']}" if t["met"] is None
                   else "met" if t["met"] else "MISSED")
        judged += t["met"] is not None
        print(f"{t['target']}{threads}: {t['value']:.3f} (limit {t['limit']}, {verdict})")
    if not judged:
        print("no target judged (see the reasons above)")
    print(f"results written to {out / 'RESULTS.md'} and {out / 'results.json'} "
          f"in {results['meta']['wall_s']:.0f} s")
    return 0


def _bench_backends(text: str) -> tuple[str, ...]:
    """``--backends a,b``: usable registered engines (any plugin's), checked before any
    timing starts."""
    from smx.plugins import get_plugins

    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ConfigError(f"expected comma-separated backend names, got {text!r}",
                          where="--backends")
    plugins = get_plugins()
    for name in names:
        plugins.backend(name, where="--backends")  # unknown or unusable: one line, exit 2
    return tuple(dict.fromkeys(names))


class _OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (an invalid choice, a number that is none, a missing argument)
    as the one ``smx: error:`` line every other error is, naming the command; no usage
    block. Subcommand parsers are of this class too (add_subparsers uses the parent's)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("smx").strip()
        self.exit(2, f"smx: error: {where + ': ' if where else ''}{' '.join(message.split())}"
                     f" (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from smx import __version__

    parser = _OneLineParser(
        prog="smx", description="Softmax regression on any Array API backend.")
    parser.add_argument("--version", action="version", version=f"smx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train from a YAML config and write a run folder")
    p.add_argument("config", nargs="?", help=f"YAML file or shipped config name "
                   f"(default: {DEFAULT_CONFIG})")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a stopped run from its last checkpoint")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    what = "backends, optimizers, solvers, losses, schedules, datasets and callbacks"
    p = sub.add_parser("plugins", help=f"list the plugins ({what}) and their options",
                       description=f"List every plugin: {what}, with their package, version, "
                       "status and options; smx plugins NAME shows one plugin's options "
                       "with their types, defaults and descriptions.")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="show this plugin and a table of its options")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "sweep", help="run a config over a grid or search of values, one run folder each",
        description="Run CONFIG once per combination of the swept values (a grid), or N "
        "sampled ones (--random, --optuna), each an ordinary run folder under one sweep "
        "folder with sweep.csv, a table sorted by the monitored metric and sweep.png. "
        "The same command started again finishes what an interrupted sweep left.")
    p.add_argument("config", help="YAML file or shipped config name")
    p.add_argument("overrides", nargs="*", default=[], metavar="key.sub=SPEC",
                   help="v1,v2,... (YAML values), range(a,b[,step]), log-uniform(a,b), "
                   "uniform(a,b), choice(v1,...); one value is a fixed override")
    search = p.add_mutually_exclusive_group()
    search.add_argument("--random", type=int, metavar="N", help="N runs sampled at random")
    search.add_argument("--optuna", type=int, metavar="N",
                        help="N runs chosen by Optuna's TPE sampler (study in the sweep "
                        "folder's optuna.db; pip install 'smx[optuna]')")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("-j", "--jobs", type=int, help="runs at a time (default 1; each gets "
                   "cores // jobs threads); with --cluster: at most this many tasks")
    p.add_argument("--cluster", metavar="ADDRESS", help="run on this Dask scheduler "
                   "(tcp://host:8786); the sweep folder must be shared with the workers")
    p.add_argument("-o", "--output", help="sweep folder (default: sweeps/<config>-<digest of "
                   "the command>, so the same command resumes it)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("configs", help="list the configs shipped with smx (smx run NAME)")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("parity", help="train one config on several backends and compare them "
                       "with a float64 reference")
    p.add_argument("config", help="YAML file or shipped config name")
    # default=[]: argparse counts a '*' positional without a default as required, and would
    # name the optional overrides among the missing arguments
    p.add_argument("overrides", nargs="*", default=[], metavar="key.sub=value",
                   help="config overrides (optional)")
    p.add_argument("--backends", default="numpy,array-api-strict",
                   help="comma-separated backends, each optionally name@device "
                   "(default: numpy,array-api-strict)")
    p.add_argument("--reference", default="numpy", help="backend run in float64 as the "
                   "reference (default: numpy)")
    p.add_argument("--dtype", choices=["float32", "float64"], help="dtype of the compared "
                   "runs (default: the config's)")
    p.add_argument("-o", "--output", help="parity.json path, or a folder to write it in "
                   "(default: runs/parity-<config>-<dtype>-<time>/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing parity.json")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("info", help="the CPU, BLAS and GPUs seen, and which backends can run")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("predict", help="predict labels for a data file with a saved model")
    p.add_argument("model", help="model.npz from a run folder")
    p.add_argument("data", help=".npz (X), .csv or .npy of features; - reads a CSV from "
                   "standard input")
    p.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="CSV: the first row is (--header) or is not (--no-header) column "
                   "names; by default text is a header, and a row of numbers is data when "
                   "the model knows its column names (otherwise smx asks)")
    p.add_argument("--label-column", help="CSV column to ignore (the labels); by default the "
                   "training data's label column, when the file has it")
    p.add_argument("--proba", action="store_true", help="also print class probabilities")
    p.add_argument("-o", "--output", help="write the CSV here instead of stdout")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench", help="time smx against the GEMM floor, PyTorch and scikit-learn")
    p.add_argument("-o", "--output", default="bench-results",
                   help="folder for RESULTS.md and results.json (default: bench-results); "
                   "give benchmarks to update the repository's record")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="toy sizes, seconds: figures only, no target judged")
    size.add_argument("--full", action="store_true",
                      help="the recorded sizes (200,000 rows, 7 rounds; Dask: 2,000,000 rows) "
                      "and no time budget")
    for name, what in (("rows", "training rows"), ("features", "features"),
                       ("classes", "classes"), ("batch", "SGD batch size"),
                       ("repeats", "timed rounds after the warm-up (at least 5 to judge)")):
        p.add_argument(f"--{name}", type=int, help=what)
    p.add_argument("--threads", type=int, nargs="+", metavar="N",
                   help="BLAS thread settings to time (default: NumPy's default and 1)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="time for the timed parts; past it blocks stop after 3 rounds and "
                   "later ones are skipped (default: 240; 0 or --full: no limit)")
    p.add_argument("--only", nargs="+",
                   choices=["sgd", "lbfgs", "memory", "e2e", "gpu", "sparse", "dask"],
                   help="run only these parts")
    p.add_argument("--backends", metavar="NAME,...",
                   help="comma-separated registered engines (smx plugins lists them, "
                   "third-party ones too) whose SGD epoch and full-batch step the sgd part "
                   "times beside NumPy's (default: the epochs of torch, jax and "
                   "array-api-strict)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # overrides may follow options (`smx run c.yaml --quiet epochs=5`): argparse leaves them over
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    held: list[warnings.WarningMessage] = []
    try:
        with _holding_warnings(held):
            code = args.func(args)
        _show_warnings(held)  # the command succeeded: what it warned about stands
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # `smx predict ... | head -1`: the reader has all it wants; end quietly, as Unix
        # tools do (128 + SIGPIPE), and keep Python from complaining at exit
        _stdout_to_devnull()
        return 128 + signal.SIGPIPE
    except SmxError as exc:
        print(f"smx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except MemoryError as exc:  # sizes past the machine (smx bench --rows 1e11, a dataset)
        print(f"smx: error: {args.command}: out of memory ({type(exc).__name__}: "
              f"{' '.join(str(exc).split()) or 'no details'}); use smaller sizes",
              file=sys.stderr)
        return 2
    except OSError as exc:  # a write the checks could not foresee (disk full, a folder gone)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"smx: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (" (a run folder with a checkpoint continues with `smx run --resume RUN_DIR`)"
                if args.command == "run" else
                " (the same command finishes what the sweep left)"
                if args.command == "sweep" else "")
        print(f"smx: interrupted{hint}", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _holding_warnings(held: list[warnings.WarningMessage]) -> Iterator[None]:
    """Python warnings (NumPy's overflow, a library's deprecation) raised while a command
    runs are held, not printed: a command that ends in an error prints only its one error
    line (the warnings were symptoms of what it names), one that succeeds shows them after
    its output. Held even under ``-W error``, which would turn a symptom into a traceback."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            held.extend(caught)


def _show_warnings(held: list[warnings.WarningMessage]) -> None:
    """Each distinct warning once, as Python would have shown it."""
    seen: set[tuple[Any, ...]] = set()
    for w in held:
        key = (w.category, str(w.message), w.filename, w.lineno)
        if key not in seen:
            seen.add(key)
            sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename,
                                                    w.lineno, w.line))


def _stdout_to_devnull() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
