"""Typed reads of recipe (YAML) fields, with errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def recipe_flag(section: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
    """``section[key]`` as a strict boolean (``default`` when absent): a quoted YAML string such as "no" is truthy, so
    anything but true / false is an error naming ``where.key``."""
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key} must be true or false, got {value!r}.")
    return value
