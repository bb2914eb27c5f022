"""The kit's vocabulary: a rule of the plugin contract, the error a broken rule raises, and
the kind of object (backend, loss, dataset...) a set of rules is about.

A rule is a function of the object under test and its parameters that returns nothing
when the object keeps the rule and raises ``AssertionError`` (or :class:`Violation`) when
it does not. :class:`Check` wraps it so that every failure, whatever raised it (the rule's
own comparison or the plugin crashing), becomes one :class:`ContractError` whose message
starts with the rule's name.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

RuleFn = Callable[[Any, Mapping[str, Any]], None]


class ContractError(AssertionError):
    """A plugin breaks a rule of the contract: ``"<rule>: <what was expected, what came>"``."""

    def __init__(self, rule: str, detail: str) -> None:
        self.rule, self.detail = rule, detail
        super().__init__(f"{rule}: {detail}")


class Violation(AssertionError):
    """Raised inside a rule; :class:`Check` turns it into a :class:`ContractError`."""


class Skipped(Exception):
    """A rule that cannot run here (a library missing, no GPU, nothing to check).

    Under pytest, :class:`Check` turns it into ``pytest.skip(reason)``; elsewhere it
    propagates (``check_*`` functions record it in their report)."""


def fail(what: str, *, expected: Any, got: Any) -> NoReturn:
    """Raise a :class:`Violation` saying what was expected and what came."""
    raise Violation(f"{what}: expected {expected}, got {got}")


def forbids_unknown_keys(model: Any, params: Mapping[str, Any]) -> None:
    """The shared ``params-forbid-unknown-keys`` rule: ``model`` (a plugin's params model)
    given a key it does not define raises pydantic's ``extra_forbidden``."""
    from pydantic import ValidationError

    try:
        model.model_validate({**params, "smx_testing_no_such_option": 1})
    except ValidationError as exc:
        if any(e["type"] == "extra_forbidden" for e in exc.errors()):
            return
    fail("the params model given an unknown key", expected="an extra_forbidden error",
         got="no such error (derive the model from smx.PluginParams, which forbids them)")


def skip(reason: str) -> None:
    raise Skipped(reason)


@contextlib.contextmanager
def jax_float64() -> Iterator[tuple[Any, Any]]:
    """``(jax, jax.numpy)`` with 64-bit types in this thread only, as the JAX engine holds
    them around a float64 run (its ``run_context``): a rule never flips JAX's process-wide
    ``jax_enable_x64`` under the plugin author's own tests. Skips without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        skip("JAX is not installed (pip install 'smx[jax]')")
    from smx.backends.jax_backend import JaxBackend

    with JaxBackend().run_context("float64"):
        yield jax, jnp


@dataclass(frozen=True)
class Configured:
    """An object under test with the parameters it is tested with: a backend's
    ``backend_options``, a loss factory's or a dataset loader's params.

    ``label`` names it in test ids (default: the object's name with the params)."""

    obj: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None


def with_params(obj: Any, **params: Any) -> Configured:
    """``obj`` tested with ``params`` (e.g. ``with_params(DASK, workers=2)``)."""
    return Configured(obj, params)


def unwrap(obj: Any) -> tuple[Any, Mapping[str, Any]]:
    if isinstance(obj, Configured):
        return obj.obj, obj.params
    return obj, {}


@dataclass(frozen=True)
class Rule:
    name: str  # the full name, "<kind>.<rule>"
    fn: RuleFn
    gated: bool  # skipped when the kind's gate gives a reason (e.g. backend unavailable)

    @property
    def doc(self) -> str:
        """The rule's docstring as one paragraph: what it guarantees and why."""
        return " ".join((self.fn.__doc__ or "").split())


@dataclass
class Kind:
    """The rules about one kind of plugin object, in the order they run.

    ``accepts`` says whether an object is of this kind; ``label`` names one in test ids;
    ``gate`` (optional) gives a reason to skip the gated rules (a backend that is
    unavailable here)."""

    name: str
    accepts: Callable[[Any], bool]
    label: Callable[[Any], str]
    gate: Callable[[Any], str | None] | None = None
    rules: dict[str, Rule] = field(default_factory=dict)

    def rule(self, name: str, *, gated: bool = True) -> Callable[[RuleFn], RuleFn]:
        """Register the decorated function as the rule ``<kind>.<name>``."""
        def register(fn: RuleFn) -> RuleFn:
            full = f"{self.name}.{name}"
            if full in self.rules:
                raise ValueError(f"rule {full!r} is defined twice")
            if not (fn.__doc__ or "").strip():
                raise ValueError(f"rule {full!r} needs a docstring (it is its documentation)")
            self.rules[full] = Rule(full, fn, gated)
            return fn

        return register

    def checks(self) -> Iterator[Check]:
        for rule in self.rules.values():
            yield Check(rule, self)

    def describe(self, obj: Any) -> str:
        target, params = unwrap(obj)
        if isinstance(obj, Configured) and obj.label:
            return obj.label
        base = self.label(target)
        if not params:
            return base
        return f"{base}[{','.join(f'{k}={v}' for k, v in params.items())}]"


@dataclass(frozen=True)
class Check:
    """One rule, callable on an object of its kind (or a :class:`Configured` one).

    ``check(obj)`` returns None when the rule holds, raises :class:`ContractError` when
    it does not, and skips (``pytest.skip`` under pytest, :class:`Skipped` elsewhere)
    when it cannot run here."""

    rule: Rule
    kind: Kind

    @property
    def name(self) -> str:
        return self.rule.name


    def __repr__(self) -> str:
        return f"Check({self.rule.name!r})"

    def __call__(self, obj: Any) -> None:
        try:
            self.run(obj)
        except Skipped as why:
            if "pytest" in sys.modules and os.environ.get("PYTEST_CURRENT_TEST"):
                import pytest

                pytest.skip(f"{self.rule.name}: {why}")
            raise

    def run(self, obj: Any) -> None:
        """Like calling the check, but a rule that cannot run raises :class:`Skipped`
        even under pytest (what the ``check_*`` functions use)."""
        target, params = unwrap(obj)
        if not self.kind.accepts(target):
            raise TypeError(f"{self.rule.name} checks a {self.kind.name}, not "
                            f"{type(target).__name__}")
        try:
            if self.rule.gated and self.kind.gate is not None:
                reason = self.kind.gate(target)
                if reason:
                    raise Skipped(reason)
            self.rule.fn(target, params)
        except (Skipped, ContractError):
            raise
        except AssertionError as exc:
            raise ContractError(self.rule.name, str(exc).strip() or type(exc).__name__) from exc
        except Exception as exc:
            raise ContractError(self.rule.name, f"raised {type(exc).__name__}: {exc}") from exc
