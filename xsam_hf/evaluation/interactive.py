"""Interactive segmentation (COCO-Interactive): mIoU and cIoU reported per visual-prompt type.

The official evaluation runs one sample per annotation per prompt type and reports, for each type, the
"mIoU" (the mean per-sample IoU, i.e. the gIoU of :mod:`.iou`) and the cIoU.
"""

from __future__ import annotations

from typing import Any

from .iou import GroupedIoUAccumulator

PROMPT_TYPES: tuple[str, ...] = ("point", "scribble", "box", "mask")


class InteractiveIoUAccumulator:
    """Streaming per-prompt-type mIoU / cIoU for interactive segmentation."""

    def __init__(self, prompt_types: tuple[str, ...] = PROMPT_TYPES) -> None:
        self._grouped = GroupedIoUAccumulator(prompt_types)

    @property
    def prompt_types(self) -> tuple[str, ...]:
        return self._grouped.groups

    def add(self, prediction: Any, reference: Any, prompt_type: str, ignore_index: int | None = 255) -> float:
        """Add one ``(H, W)`` predicted mask and its reference for a sample prompted with ``prompt_type``."""
        if prompt_type not in self._grouped.groups:
            raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {list(self.prompt_types)}")
        return self._grouped.add(prediction, reference, prompt_type, ignore_index)

    def add_counts(self, intersection: int, union: int, prompt_type: str) -> float:
        if prompt_type not in self._grouped.groups:
            raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {list(self.prompt_types)}")
        return self._grouped.add_counts(intersection, union, prompt_type)

    def compute(self) -> dict[str, dict[str, float]]:
        """Return ``{prompt_type: {"mIoU", "cIoU", "num_samples"}}`` (fractions; NaN for a type never seen)."""
        results = {}
        for prompt_type, stats in self._grouped.compute().items():
            results[prompt_type] = {"mIoU": stats["gIoU"], "cIoU": stats["cIoU"], "num_samples": stats["num_samples"]}
        return results
