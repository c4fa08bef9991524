"""Reasoning segmentation (ReasonSeg): gIoU and cIoU split by short and long queries.

ReasonSeg marks each query with ``is_sentence``: phrases are the "short" split, full sentences the "long" one;
"overall" pools both.
"""

from __future__ import annotations

from typing import Any

from .iou import GroupedIoUAccumulator


class ReasoningIoUAccumulator:
    """Streaming gIoU / cIoU for short queries, long queries and both."""

    def __init__(self) -> None:
        self._grouped = GroupedIoUAccumulator(("short", "long"))

    def add(self, prediction: Any, reference: Any, is_sentence: bool, ignore_index: int | None = 255) -> float:
        """Add one ``(H, W)`` pair; ``is_sentence`` is the query's ReasonSeg flag (True = long query)."""
        return self._grouped.add(prediction, reference, _split(is_sentence), ignore_index)

    def add_counts(self, intersection: int, union: int, is_sentence: bool) -> float:
        return self._grouped.add_counts(intersection, union, _split(is_sentence))

    def compute(self) -> dict[str, dict[str, float]]:
        """Return ``{"short" | "long" | "overall": {"gIoU", "cIoU", "num_samples"}}`` (NaN for an empty split)."""
        results = self._grouped.compute()
        results["overall"] = self._grouped.overall().compute()
        return results


def _split(is_sentence: Any) -> str:
    if isinstance(is_sentence, str) or is_sentence not in (0, 1):
        raise ValueError(f"is_sentence must be a bool, got {is_sentence!r}")
    return "long" if is_sentence else "short"
