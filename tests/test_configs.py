"""Every shipped config loads, says how to run it, and trains."""

from __future__ import annotations

import pytest

from smx.cli import builtin_config
from smx.config import load_config
from smx.plugins import Plugins
from smx.runner import run
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
PLUGINS = Plugins(entry_points=False)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_opens_with_its_command_and_trains(path, in_tmp):
    first = path.read_text().splitlines()[0]
    command = "parity" if path.stem.startswith("parity") else "run"  # parity configs: smx parity
    assert first == f"# smx {command} {path.relative_to(ROOT)}" or first.startswith(
        f"# smx {command} {path.relative_to(ROOT)} "), first
    cfg = load_config(path, ["epochs=2", "output=out"], plugins=PLUGINS)
    if cfg.backend != "auto" and (why := PLUGINS.get("backend", cfg.backend).unavailable_reason()):
        pytest.skip(f"backend {cfg.backend} is unavailable: {why}")
    outcome = run(cfg, plugins=PLUGINS, progress=False)
    assert outcome.summary["test_accuracy"] > 0.5


def test_default_config_is_shipped():
    assert builtin_config("digits") is not None
