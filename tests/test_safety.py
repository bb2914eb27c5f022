"""Safety: a run writes only inside its own folder; model files are read with pickling off."""

from __future__ import annotations

import numpy as np
import pytest

from smx.errors import ModelFileError
from smx.modelfile import load_model
from tests.conftest import run_smx


def _tree(root):
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_run_and_resume_write_only_inside_the_run_folder(tmp_path):
    home, cwd, other = tmp_path / "home", tmp_path / "cwd", tmp_path / "other"
    for d in (home, cwd, other):
        d.mkdir()
    (cwd / "keep.txt").write_text("mine")
    env = {"HOME": str(home), "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": "", "MPLCONFIGDIR": ""}
    proc = run_smx("run", "data.name=iris", "epochs=2", "output=out", "--quiet", cwd=cwd,
                   env=env)
    assert proc.returncode == 0, proc.stderr
    new = _tree(cwd) - {"keep.txt"}
    assert new and all(p == "out" or p.startswith("out/") for p in new), new
    assert not [p for p in new if ".tmp" in p]  # no temporary file left behind
    # matplotlib's font cache is the one thing written elsewhere (once per machine)
    assert all("matplotlib" in p or p in {".cache", ".config"} for p in _tree(home)), _tree(home)

    before = _tree(cwd)
    proc = run_smx("run", "--resume", str(cwd / "out"), "--quiet", cwd=other, env=env)
    assert proc.returncode == 0, proc.stderr
    assert _tree(other) == set() and _tree(cwd) == before


def test_model_files_are_read_with_pickling_disabled(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, format=np.asarray("smx-model/1"), W=np.zeros((2, 2)),
             classes=np.array([{"evil": 1}, 2], dtype=object), mean=np.zeros(2),
             scale=np.ones(2))
    with pytest.raises(ModelFileError, match=r"corrupted model file.*would need pickle"):
        load_model(path)
