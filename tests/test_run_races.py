"""Simultaneous starts into one run folder: real processes started together, one winner.
The others exit 2 with one line (the folder exists, or another smx process holds it), and
the folder holds the winner's complete run and no lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import assert_one_line_error

STARTS = 6


def test_simultaneous_starts_into_one_folder_have_one_winner(tmp_path):
    args = [sys.executable, "-W", "error", "-m", "smx", "run", "data.name=synthetic",
            "data.n=200", "epochs=2", "output=out", "--quiet"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(STARTS)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(type("Proc", (), {"returncode": p.returncode, "stdout": out,
                                      "stderr": err}))
    winners = [p for p in done if p.returncode == 0]
    assert len(winners) == 1, [(p.returncode, p.stderr) for p in done]
    for p in done:
        if p.returncode != 0:
            line = assert_one_line_error(p)
            assert "already exists" in line or "in use by another smx process" in line, line
    folder = tmp_path / "out"
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
    assert not (folder / ".smx-lock").exists()
