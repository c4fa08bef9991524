"""Semantic segmentation: mIoU, fwIoU, mACC and pACC from a streamed confusion matrix.

Protocol (detectron2's semantic evaluator, used by X-SAM): a confusion matrix over ``num_classes + 1`` labels,
where the reference's ``ignore_index`` pixels go to the extra label and so never count. Over the real classes:
TP = diagonal, GT = reference pixels per class, Pred = predicted pixels per class (on non-ignored pixels).
* IoU_c = TP / (GT + Pred - TP) and ACC_c = TP / GT, defined for classes with GT > 0.
* mIoU and mACC average those classes; fwIoU weights IoU_c by GT_c / sum(GT); pACC = sum(TP) / sum(GT).
Results are fractions in [0, 1]; per-class arrays hold NaN for classes absent from the references.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_label_map, check_same_shape


class SemanticSegmentationAccumulator:
    """Streaming semantic-segmentation metrics: memory is one ``(C+1, C+1)`` int64 matrix.

    Args:
        num_classes: number of classes ``C``; predictions must lie in ``[0, C)``, references in ``[0, C)`` or
            equal ``ignore_index``.
        ignore_index: reference label excluded from every count (255 for COCO and ADE20K).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        # rows: reference label, columns: predicted label; index C collects ignored reference pixels
        self.confusion_matrix = np.zeros((self.num_classes + 1, self.num_classes + 1), dtype=np.int64)

    def add(self, prediction: Any, reference: Any) -> None:
        """Add one ``(H, W)`` predicted label map and its ``(H, W)`` reference label map."""
        predicted = as_label_map(prediction, "prediction")
        target = as_label_map(reference, "reference")
        check_same_shape(predicted, target, "semantic segmentation")
        bad_prediction = (predicted < 0) | (predicted >= self.num_classes)
        if bad_prediction.any():
            raise ValueError(
                f"prediction holds class ids outside [0, {self.num_classes}): "
                f"{np.unique(predicted[bad_prediction])[:10].tolist()}"
            )
        ignored = target == self.ignore_index
        bad_reference = ((target < 0) | (target >= self.num_classes)) & ~ignored
        if bad_reference.any():
            raise ValueError(
                f"reference holds unknown class ids {np.unique(target[bad_reference])[:10].tolist()} "
                f"(expected [0, {self.num_classes}) or ignore_index={self.ignore_index})"
            )
        target = np.where(ignored, self.num_classes, target)
        size = self.num_classes + 1
        self.confusion_matrix += np.bincount(
            (target * size + predicted).ravel(), minlength=size * size
        ).reshape(size, size)

    def merge(self, other: SemanticSegmentationAccumulator) -> SemanticSegmentationAccumulator:
        if other.confusion_matrix.shape != self.confusion_matrix.shape:
            raise ValueError("cannot merge accumulators with different num_classes")
        self.confusion_matrix += other.confusion_matrix
        return self

    def compute(self) -> dict[str, Any]:
        """Return ``{"mIoU", "fwIoU", "mACC", "pACC", "per_class_iou" (C,), "per_class_acc" (C,)}``."""
        return semantic_metrics_from_confusion(self.confusion_matrix[:-1, :-1])


def semantic_metrics_from_confusion(confusion: np.ndarray) -> dict[str, Any]:
    """Metrics from a ``(C, C)`` confusion matrix indexed ``[reference, prediction]`` (ignored pixels removed)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    reference_pixels = confusion.sum(axis=1)
    predicted_pixels = confusion.sum(axis=0)
    present = reference_pixels > 0
    per_class_iou = np.full(confusion.shape[0], np.nan)
    per_class_acc = np.full(confusion.shape[0], np.nan)
    union = reference_pixels + predicted_pixels - true_positive
    per_class_iou[present] = true_positive[present] / union[present]
    per_class_acc[present] = true_positive[present] / reference_pixels[present]
    total = reference_pixels.sum()
    if total == 0:
        nan = float("nan")
        return {"mIoU": nan, "fwIoU": nan, "mACC": nan, "pACC": nan,
                "per_class_iou": per_class_iou, "per_class_acc": per_class_acc}
    return {
        "mIoU": float(per_class_iou[present].mean()),
        "fwIoU": float((per_class_iou[present] * reference_pixels[present] / total).sum()),
        "mACC": float(per_class_acc[present].mean()),
        "pACC": float(true_positive.sum() / total),
        "per_class_iou": per_class_iou,
        "per_class_acc": per_class_acc,
    }
