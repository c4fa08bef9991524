"""Category-name cleaning shared by every categorical loader."""

from __future__ import annotations

import re

# COCO panoptic names carry dataset-construction suffixes that would read oddly in a prompt.
_SUFFIXES = re.compile(r"-(merged|other|stuff)\b")


def clean_category_name(name: str) -> str:
    """``"wall-other-merged"`` -> ``"wall"``, ``"dining table"`` unchanged, ``"door-stuff"`` -> ``"door"``.

    Removes ``-merged`` / ``-other`` / ``-stuff``, turns the remaining hyphens into spaces and lower-cases.
    """
    cleaned = _SUFFIXES.sub("", name)
    cleaned = cleaned.replace("-", " ")
    return " ".join(cleaned.lower().split())
