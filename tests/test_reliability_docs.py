"""docs/reliability.md names a test for each promise: every test file it names exists, and
every test function it names (in backticks after a file) is defined in that file."""

from __future__ import annotations

import re

from tests.conftest import ROOT

DOC = ROOT / "docs" / "reliability.md"


def test_every_named_test_file_and_function_exists():
    text = DOC.read_text()
    files = set(re.findall(r"`(tests/[\w/]+\.py)`", text))
    assert len(files) >= 10, files
    missing = sorted(f for f in files if not (ROOT / f).is_file())
    assert missing == [], missing
    for path, names in re.findall(r"`(tests/[\w/]+\.py)`\s*\(([^)]*)\)", text):
        source = (ROOT / path).read_text()
        for name in re.findall(r"`(test_\w+)`", names):
            assert f"def {name}(" in source, (path, name)
