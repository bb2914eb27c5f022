"""Helpers shared by optimizers (kept for plugins written against smx 0.1's names)."""

from __future__ import annotations

from smx.optimizers.transforms import apply_updates, tree_map, zeros_like

__all__ = ["apply_updates", "tree_map", "zeros_like"]
