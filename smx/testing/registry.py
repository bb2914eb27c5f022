"""Which kinds of plugin the kit knows, and the dispatch from an object to its rules.

One module per kind (``smx/testing/<kind>.py``) defines a :class:`~smx.testing.contract.Kind`
named ``KIND`` and its rules; adding a kind is one module and one line in
:data:`KIND_MODULES`. The modules are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

from smx.testing.contract import Check, ContractError, Kind, Skipped, unwrap

#: the modules that define the kinds, in the order ``checks`` tries them
KIND_MODULES = ("smx.testing.backend", "smx.testing.loss", "smx.testing.dataset",
                "smx.testing.optimizer", "smx.testing.solver", "smx.testing.schedule",
                "smx.testing.callback")


@cache
def kinds() -> dict[str, Kind]:
    out: dict[str, Kind] = {}
    for module in KIND_MODULES:
        kind: Kind = importlib.import_module(module).KIND
        out[kind.name] = kind
    return out


def kind_of(obj: Any) -> Kind:
    """The kind ``obj`` (or the object a :class:`Configured` wraps) belongs to."""
    target, _ = unwrap(obj)
    for kind in kinds().values():
        if kind.accepts(target):
            return kind
    known = ", ".join(kinds())
    raise TypeError(f"smx.testing has no rules for {type(target).__name__} objects "
                    f"(it checks: {known})")


def checks(obj: Any) -> Iterator[tuple[str, Check]]:
    """``(rule name, check)`` for every rule about ``obj``'s kind; ``check(obj)`` runs it."""
    for check in kind_of(obj).checks():
        yield check.name, check


def rule_names(kind: str | None = None) -> list[str]:
    """Every rule's name (``"loss.gradient-matches-finite-differences"``...), or one kind's."""
    chosen = kinds().values() if kind is None else [kinds()[kind]]
    return [name for k in chosen for name in k.rules]


def run_all(obj: Any, kind: str) -> dict[str, str]:
    """Run every rule of ``kind`` on ``obj`` in order; raise the first ContractError.

    Returns ``{rule: "passed" | "skipped: <reason>"}`` when none fails."""
    found = kind_of(obj)
    if found.name != kind:
        raise TypeError(f"expected a {kind}, got a {found.name} ({type(unwrap(obj)[0]).__name__})")
    report: dict[str, str] = {}
    for check in found.checks():
        try:
            check.run(obj)
        except Skipped as why:
            report[check.name] = f"skipped: {why}"
        else:
            report[check.name] = "passed"
    return report


def parametrize_with_checks(objs: Iterable[Any]) -> Any:
    """A ``pytest.mark.parametrize("obj, check", ...)`` over every rule of every object,
    with ids ``"<label>-<rule>"`` (``"focal-loss.gradient-matches-finite-differences"``)::

        @parametrize_with_checks([FOCAL])
        def test_contract(obj, check):
            check(obj)

    Objects may be wrapped by :func:`with_params` to be tested with parameters."""
    import pytest

    params = []
    for obj in objs:
        kind = kind_of(obj)
        label = kind.describe(obj)
        for check in kind.checks():
            params.append(pytest.param(obj, check, id=f"{label}-{check.name}"))
    return pytest.mark.parametrize("obj, check", params)


def rules_markdown() -> str:
    """The rules as the markdown list docs/testing.md holds (generated, never hand-edited)."""
    lines: list[str] = []
    for kind in kinds().values():
        lines.append(f"### {kind.name}")
        lines.append("")
        for rule in kind.rules.values():
            lines.append(f"- **`{rule.name}`** — {rule.doc}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["ContractError", "checks", "kind_of", "kinds", "parametrize_with_checks",
           "rule_names", "rules_markdown", "run_all"]
