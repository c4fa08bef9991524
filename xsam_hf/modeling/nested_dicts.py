"""Nested-dict merging shared by presets, training recipes and the synthetic-world recipes.

It sits beside `presets.py` because the presets travel with remote-code exports, which carry sibling modules only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping


def deep_merge(base: Mapping, update: Mapping) -> dict:
    """A copy of `base` with `update` merged in: nested mappings key by key, anything else replaced (copied)."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
