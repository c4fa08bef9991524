"""cIoU and gIoU of binary masks (referring, reasoning and interactive segmentation).

Protocol (X-SAM ``IouStat``, the same as LISA's): per sample, the foreground intersection ``I`` and union ``U`` in
pixels, with reference pixels equal to ``ignore_index`` excluded from both.
* cIoU = sum(I) / sum(U) over the data set (1.0 when every union is empty).
* gIoU = mean over samples of I / U, where a sample whose union is empty (empty prediction and empty reference)
  counts as IoU 1.0.
Results are fractions in [0, 1]; both are NaN when no sample was added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._arrays import as_binary_mask, check_same_shape, to_numpy


def intersection_and_union(prediction: Any, reference: Any, ignore_index: int | None = 255) -> tuple[int, int]:
    """Foreground intersection and union, in pixels, of one predicted mask against one reference mask.

    Args:
        prediction: ``(H, W)`` bool or 0/1 mask.
        reference: ``(H, W)`` bool or 0/1 mask; an integer reference may also hold ``ignore_index`` for pixels that
            count in neither the intersection nor the union.
        ignore_index: the reference value to ignore; ``None`` disables ignoring.
    """
    predicted = as_binary_mask(prediction, "prediction")
    reference_array = to_numpy(reference)
    check_same_shape(predicted, reference_array, "intersection_and_union")
    if ignore_index is not None and reference_array.dtype != bool and np.issubdtype(reference_array.dtype, np.integer):
        valid = reference_array != ignore_index
        target = as_binary_mask(np.where(valid, reference_array, 0), "reference")
        predicted = predicted & valid
    else:
        target = as_binary_mask(reference_array, "reference")
    intersection = int(np.count_nonzero(predicted & target))
    union = int(np.count_nonzero(predicted)) + int(np.count_nonzero(target)) - intersection
    return intersection, union


def sample_iou(intersection: int, union: int) -> float:
    """IoU of one sample; an empty union (nothing predicted, nothing to find) counts as a perfect 1.0."""
    return 1.0 if union == 0 else intersection / union


@dataclass
class IoUAccumulator:
    """Streaming cIoU / gIoU: keeps four numbers however many samples are added."""

    intersection_sum: int = 0
    union_sum: int = 0
    iou_sum: float = 0.0
    num_samples: int = 0

    def add(self, prediction: Any, reference: Any, ignore_index: int | None = 255) -> float:
        """Add one ``(H, W)`` prediction/reference pair; return its IoU."""
        return self.add_counts(*intersection_and_union(prediction, reference, ignore_index))

    def add_counts(self, intersection: int, union: int) -> float:
        """Add one sample given as pixel counts; return its IoU."""
        intersection, union = int(intersection), int(union)
        if intersection < 0 or union < intersection:
            raise ValueError(f"need 0 <= intersection <= union, got intersection={intersection}, union={union}")
        self.intersection_sum += intersection
        self.union_sum += union
        iou = sample_iou(intersection, union)
        self.iou_sum += iou
        self.num_samples += 1
        return iou

    def merge(self, other: IoUAccumulator) -> IoUAccumulator:
        """Fold another accumulator (e.g. from another process) into this one."""
        self.intersection_sum += other.intersection_sum
        self.union_sum += other.union_sum
        self.iou_sum += other.iou_sum
        self.num_samples += other.num_samples
        return self

    def compute(self) -> dict[str, float]:
        """Return ``{"cIoU", "gIoU", "num_samples"}`` (fractions; NaN when empty)."""
        if self.num_samples == 0:
            return {"cIoU": float("nan"), "gIoU": float("nan"), "num_samples": 0}
        return {
            "cIoU": sample_iou(self.intersection_sum, self.union_sum),
            "gIoU": self.iou_sum / self.num_samples,
            "num_samples": self.num_samples,
        }


class GroupedIoUAccumulator:
    """cIoU / gIoU kept separately per named group (prompt type, query length, data set)."""

    def __init__(self, groups: Sequence[str]) -> None:
        if len(set(groups)) != len(groups) or not groups:
            raise ValueError(f"groups must be distinct and non-empty, got {list(groups)}")
        self.groups = tuple(groups)
        self.accumulators = {group: IoUAccumulator() for group in self.groups}

    def _accumulator(self, group: str) -> IoUAccumulator:
        if group not in self.accumulators:
            raise ValueError(f"unknown group {group!r}; expected one of {list(self.groups)}")
        return self.accumulators[group]

    def add(self, prediction: Any, reference: Any, group: str, ignore_index: int | None = 255) -> float:
        """Add one ``(H, W)`` pair to ``group``; return its IoU."""
        return self._accumulator(group).add(prediction, reference, ignore_index)

    def add_counts(self, intersection: int, union: int, group: str) -> float:
        return self._accumulator(group).add_counts(intersection, union)

    def overall(self) -> IoUAccumulator:
        """All groups pooled together."""
        pooled = IoUAccumulator()
        for accumulator in self.accumulators.values():
            pooled.merge(accumulator)
        return pooled

    def compute(self) -> dict[str, dict[str, float]]:
        """Return ``{group: {"cIoU", "gIoU", "num_samples"}}``."""
        return {group: accumulator.compute() for group, accumulator in self.accumulators.items()}


def compute_ciou_giou(
    predictions: Sequence[Any], references: Sequence[Any], ignore_index: int | None = 255
) -> dict[str, float]:
    """cIoU and gIoU of paired lists of ``(H, W)`` masks (one prediction per reference)."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    accumulator = IoUAccumulator()
    for prediction, reference in zip(predictions, references):
        accumulator.add(prediction, reference, ignore_index)
    return accumulator.compute()
