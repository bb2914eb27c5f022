"""Throwaway third-party plugins, laid out on disk the way an installer leaves them."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_fake_dist(site: Path, dist: str, version: str, modules: dict[str, str],
                      entry_points: dict[str, str]) -> Path:
    """Write modules plus a ``.dist-info`` with ``entry_points.txt`` (group ``smx``) into site."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[smx]\n{eps}\n")
    (info / "RECORD").write_text("")
    return site


HALVING_SGD = '''
    import smx
    from smx.optimizers.sgd import SGD, SGDParams

    class HalfParams(SGDParams):
        pass

    @smx.hookimpl
    def smx_optimizers():
        yield smx.OptimizerSpec(name="half-sgd", factory=SGD, params=HalfParams,
                                description="a third-party optimizer")
'''

DUPLICATE_SGD = '''
    import smx
    from smx.optimizers.sgd import SGD

    @smx.hookimpl
    def smx_optimizers():
        yield smx.OptimizerSpec(name="sgd", factory=SGD)
'''

BROKEN = '''
    raise RuntimeError("this plugin is broken on purpose")
'''
