"""Panoptic quality (PQ, SQ, RQ for all / things / stuff), following the COCO panoptic protocol.

Per image, a predicted and a reference segment of the same category match when their IoU exceeds 0.5, where the
union leaves out the predicted pixels that fall on unlabelled (void) reference pixels. Per category:
* TP, with the sum of matched IoUs; FN = unmatched non-crowd reference segments;
* FP = unmatched predicted segments, except those lying more than half on void or on a crowd region of their
  category (ignored).
PQ_c = sum IoU / (TP + FP/2 + FN/2), SQ_c = sum IoU / TP (0 without TP), RQ_c = TP / (TP + FP/2 + FN/2); the
reported numbers average the categories that have TP + FP + FN > 0 (NaN when there is none), as fractions.

Segment-id maps: ids <= 0 are void (COCO PNGs use 0; the transformers post-processors use -1). Every other id must
be listed in the matching ``segments_info``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._arrays import as_label_map, check_same_shape

MATCH_IOU = 0.5
IGNORED_FP_FRACTION = 0.5


@dataclass
class CategoryStats:
    """Running PQ counts of one category."""

    iou_sum: float = 0.0
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0


class PanopticQualityAccumulator:
    """Streaming PQ: memory is four numbers per category, whatever the number of images.

    Args:
        categories: the data set's categories, each a mapping with ``id`` and ``isthing`` (``name`` optional).
        label_id_to_category_id: optional mapping applied to predicted segments that carry ``label_id`` (the
            index into the prompted class list that the transformers post-processors return) instead of
            ``category_id``.
    """

    def __init__(
        self,
        categories: Sequence[Mapping[str, Any]],
        label_id_to_category_id: Mapping[int, int] | None = None,
    ) -> None:
        if not categories:
            raise ValueError("categories must not be empty")
        self.categories: dict[int, dict[str, Any]] = {}
        for category in categories:
            if "id" not in category or "isthing" not in category:
                raise ValueError(f"each category needs 'id' and 'isthing', got {dict(category)}")
            category_id = int(category["id"])
            if category_id in self.categories:
                raise ValueError(f"category id {category_id} is listed twice")
            self.categories[category_id] = {"isthing": bool(category["isthing"]), "name": category.get("name", "")}
        self.label_id_to_category_id = dict(label_id_to_category_id) if label_id_to_category_id else None
        self.stats: dict[int, CategoryStats] = {category_id: CategoryStats() for category_id in self.categories}
        self.num_images = 0

    def _category_of(self, segment: Mapping[str, Any], side: str) -> int:
        if "category_id" in segment:
            category_id = int(segment["category_id"])
        elif "label_id" in segment:
            label_id = int(segment["label_id"])
            if self.label_id_to_category_id is None:
                category_id = label_id
            elif label_id not in self.label_id_to_category_id:
                raise ValueError(f"{side} segment {segment.get('id')} has label_id {label_id} with no category mapping")
            else:
                category_id = int(self.label_id_to_category_id[label_id])
        else:
            raise ValueError(f"{side} segment {segment.get('id')} has neither 'category_id' nor 'label_id'")
        if category_id not in self.categories:
            raise ValueError(
                f"{side} segment {segment.get('id')} has unknown category id {category_id}; "
                f"known ids: {sorted(self.categories)[:20]}{'...' if len(self.categories) > 20 else ''}"
            )
        return category_id

    def _segments(self, segments_info: Iterable[Mapping[str, Any]], side: str) -> dict[int, tuple[int, bool]]:
        """Map segment id -> (category id, iscrowd), validating ids."""
        segments: dict[int, tuple[int, bool]] = {}
        for segment in segments_info:
            if "id" not in segment:
                raise ValueError(f"every {side} segment needs an 'id', got {dict(segment)}")
            segment_id = int(segment["id"])
            if segment_id <= 0:
                raise ValueError(f"{side} segment id {segment_id} is reserved for void (ids must be > 0)")
            if segment_id in segments:
                raise ValueError(f"{side} segment id {segment_id} is listed twice in segments_info")
            iscrowd = bool(segment.get("iscrowd", 0)) if side == "reference" else False
            segments[segment_id] = (self._category_of(segment, side), iscrowd)
        return segments

    def add(
        self,
        prediction_segmentation: Any,
        prediction_segments_info: Sequence[Mapping[str, Any]],
        reference_segmentation: Any,
        reference_segments_info: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one image.

        Args:
            prediction_segmentation: ``(H, W)`` integer segment-id map (ids <= 0 = void).
            prediction_segments_info: ``[{"id", "category_id" | "label_id", ...}]`` for every id in the map.
            reference_segmentation: ``(H, W)`` integer segment-id map (0 = void), e.g. ``rgb2id`` of a COCO PNG.
            reference_segments_info: ``[{"id", "category_id", "iscrowd"}]`` for every id in the map.
        """
        predicted_ids = as_label_map(prediction_segmentation, "prediction_segmentation")
        reference_ids = as_label_map(reference_segmentation, "reference_segmentation")
        check_same_shape(predicted_ids, reference_ids, "panoptic segmentation")
        predicted_segments = self._segments(prediction_segments_info, "prediction")
        reference_segments = self._segments(reference_segments_info, "reference")

        # void pixels become id 0 on both sides so that one contingency table holds everything
        predicted_ids = np.where(predicted_ids > 0, predicted_ids, 0)
        reference_ids = np.where(reference_ids > 0, reference_ids, 0)
        predicted_unique, predicted_index = np.unique(predicted_ids, return_inverse=True)
        reference_unique, reference_index = np.unique(reference_ids, return_inverse=True)
        _check_listed(predicted_unique, predicted_segments, "prediction")
        _check_listed(reference_unique, reference_segments, "reference")
        listed_but_absent = set(predicted_segments) - set(predicted_unique.tolist())
        if listed_but_absent:
            raise ValueError(
                f"prediction segments {sorted(listed_but_absent)} are listed in segments_info but cover no pixel"
            )

        # joint[r, p] = pixels with reference id reference_unique[r] and predicted id predicted_unique[p]
        joint = np.bincount(
            reference_index.ravel() * len(predicted_unique) + predicted_index.ravel(),
            minlength=len(reference_unique) * len(predicted_unique),
        ).reshape(len(reference_unique), len(predicted_unique))
        predicted_area = dict(zip(predicted_unique.tolist(), joint.sum(axis=0).tolist()))
        reference_area = dict(zip(reference_unique.tolist(), joint.sum(axis=1).tolist()))
        reference_row = {segment_id: row for row, segment_id in enumerate(reference_unique.tolist())}
        void_row = reference_row.get(0)

        def on_void(predicted_column: int) -> int:
            return int(joint[void_row, predicted_column]) if void_row is not None else 0

        matched_reference: set[int] = set()
        matched_prediction: set[int] = set()
        for column, predicted_id in enumerate(predicted_unique.tolist()):
            if predicted_id == 0:
                continue
            predicted_category = predicted_segments[predicted_id][0]
            for row in np.flatnonzero(joint[:, column]).tolist():
                reference_id = int(reference_unique[row])
                if reference_id == 0:
                    continue
                reference_category, reference_crowd = reference_segments[reference_id]
                if reference_crowd or reference_category != predicted_category:
                    continue
                intersection = int(joint[row, column])
                union = predicted_area[predicted_id] + reference_area[reference_id] - intersection - on_void(column)
                iou = intersection / union
                if iou > MATCH_IOU:  # IoU > 0.5 makes the match unique, so no assignment step is needed
                    stats = self.stats[reference_category]
                    stats.true_positives += 1
                    stats.iou_sum += iou
                    matched_reference.add(reference_id)
                    matched_prediction.add(predicted_id)

        crowd_rows_by_category: dict[int, list[int]] = {}
        for reference_id, (category_id, crowd) in reference_segments.items():
            if crowd:
                if reference_id in reference_row:
                    crowd_rows_by_category.setdefault(category_id, []).append(reference_row[reference_id])
            elif reference_id not in matched_reference:
                self.stats[category_id].false_negatives += 1

        for column, predicted_id in enumerate(predicted_unique.tolist()):
            if predicted_id == 0 or predicted_id in matched_prediction:
                continue
            category_id = predicted_segments[predicted_id][0]
            crowd_rows = crowd_rows_by_category.get(category_id, [])
            ignorable = on_void(column) + sum(int(joint[row, column]) for row in crowd_rows)
            if ignorable / predicted_area[predicted_id] > IGNORED_FP_FRACTION:
                continue
            self.stats[category_id].false_positives += 1
        self.num_images += 1

    def merge(self, other: PanopticQualityAccumulator) -> PanopticQualityAccumulator:
        if set(other.stats) != set(self.stats):
            raise ValueError("cannot merge accumulators built on different categories")
        for category_id, stats in other.stats.items():
            mine = self.stats[category_id]
            mine.iou_sum += stats.iou_sum
            mine.true_positives += stats.true_positives
            mine.false_positives += stats.false_positives
            mine.false_negatives += stats.false_negatives
        self.num_images += other.num_images
        return self

    def compute(self) -> dict[str, Any]:
        """Return PQ/SQ/RQ for all, things (``_th``) and stuff (``_st``), the category counts ``n`` and
        ``per_category`` ``{id: {"PQ", "SQ", "RQ"}}`` for categories seen at least once."""
        per_category: dict[int, dict[str, float]] = {}
        for category_id, stats in self.stats.items():
            seen = stats.true_positives + stats.false_positives + stats.false_negatives
            if seen == 0:
                continue
            denominator = stats.true_positives + 0.5 * stats.false_positives + 0.5 * stats.false_negatives
            per_category[category_id] = {
                "PQ": stats.iou_sum / denominator,
                "SQ": stats.iou_sum / stats.true_positives if stats.true_positives else 0.0,
                "RQ": stats.true_positives / denominator,
            }
        results: dict[str, Any] = {}
        for suffix, wanted in (("", None), ("_th", True), ("_st", False)):
            selected = [
                values for category_id, values in per_category.items()
                if wanted is None or self.categories[category_id]["isthing"] == wanted
            ]
            for key in ("PQ", "SQ", "RQ"):
                results[key + suffix] = (
                    float(sum(v[key] for v in selected) / len(selected)) if selected else float("nan")
                )
            results["n" + suffix] = len(selected)
        results["per_category"] = per_category
        results["num_images"] = self.num_images
        return results


def _check_listed(unique_ids: np.ndarray, segments: Mapping[int, Any], side: str) -> None:
    unlisted = [int(i) for i in unique_ids.tolist() if i != 0 and i not in segments]
    if unlisted:
        raise ValueError(f"{side} segmentation holds segment ids {unlisted[:10]} that are missing from segments_info")
