"""Write the rule list into docs/testing.md: ``python -m smx.testing.docs docs/testing.md``.

The list is generated from the rules' docstrings (:func:`~smx.testing.registry.rules_markdown`)
and lives between two markers; smx's tests fail when the file and the code disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from smx.testing.registry import rules_markdown

BEGIN = "<!-- rules: generated from the rules' docstrings by python -m smx.testing.docs -->"
END = "<!-- /rules -->"


def rewrite(text: str) -> str:
    """``text`` with the part between the markers replaced by the current rule list."""
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {BEGIN} ... {END} section to rewrite")
    return pattern.sub(lambda _: f"{BEGIN}\n{rules_markdown()}{END}", text)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m smx.testing.docs docs/testing.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(rewrite(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
