"""The engine contract as a table, made from :class:`smx.types.Backend` itself.

docs/plugins.md embeds this table between ``<!-- engine-hooks -->`` markers and the test
suite checks it is current, so the documented contract is the declared one. Regenerate
with ``python -m smx.contract``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from smx.types import Backend

START, END = "<!-- engine-hooks:start -->", "<!-- engine-hooks:end -->"
#: attributes (not methods) of the contract, documented by their ``#:`` comments
_ATTRIBUTES = ("name", "description", "is_gpu", "deterministic", "options", "accepts_sparse",
               "map_reduce")


@dataclass(frozen=True)
class Hook:
    name: str
    required: bool
    signature: str
    summary: str


def _attribute_doc(name: str) -> str:
    """The ``#:`` comment lines above ``name`` in Backend's source."""
    lines = inspect.getsource(Backend).splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith((f"{name}:", f"{name} =")):
            doc: list[str] = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#:"):
                doc.insert(0, lines[j].strip()[2:].strip())
                j -= 1
            return " ".join(doc)
    return ""


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(text.split())


def engine_hooks() -> list[Hook]:
    """Every member of the contract: required first (abstract), then the optional ones in
    the order Backend declares them."""
    hooks = []
    for name in _ATTRIBUTES:
        default = getattr(Backend, name, None)
        hooks.append(Hook(name, name == "name", "attribute" if default is None or name in (
            "name", "description", "map_reduce") else f"attribute, default `{default!r}`"
            if not isinstance(default, type) else "attribute (a `PluginParams` model)",
            _attribute_doc(name)))
    for name, member in vars(Backend).items():
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        sig = str(inspect.signature(member)).replace("self, ", "").replace("(self)", "()")
        sig = sig.replace("'", "")
        hooks.append(Hook(name, bool(getattr(member, "__isabstractmethod__", False)),
                          f"`{name}{sig}`", _first_paragraph(member.__doc__)))
    return sorted(hooks, key=lambda h: not h.required)


def markdown() -> str:
    rows = ["| member | required | what smx does with it (and without it) |",
            "| --- | --- | --- |"]
    for h in engine_hooks():
        what = h.summary.replace("|", "\\|")
        shown = h.signature if h.signature.startswith("`") else f"`{h.name}` ({h.signature})"
        rows.append(f"| {shown.replace('|', chr(92) + '|')} | {'yes' if h.required else 'no'} "
                    f"| {what} |")
    return "\n".join([START, *rows, END])


if __name__ == "__main__":
    print(markdown())
