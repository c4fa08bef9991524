"""COCO mask AP (instance segmentation, VGD, GCG), computed by pycocotools' ``COCOeval`` with ``iouType="segm"``.

The accumulator keeps every mask as a compressed RLE (a few hundred bytes instead of H*W), and hands COCOeval
in-memory data sets built the way ``COCO.loadRes`` builds results: detection ids from 1, ``iscrowd`` 0, area and
box from the RLE. ``maxDets`` is [1, 10, 100]; AP is ``stats[0]`` (IoU 0.50:0.95), AP50 ``stats[1]``. Results are
fractions; a value COCOeval reports as -1 (no reference instance at all) comes back as NaN.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ._arrays import to_numpy
from .rle import common_size, masks_to_rles

MAX_DETECTIONS: tuple[int, int, int] = (1, 10, 100)
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _in_memory_coco(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def coco_mask_ap(
    images: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    detections: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """Run COCOeval ``segm`` on in-memory COCO-format lists.

    Args:
        images: ``[{"id", "height", "width"}]``.
        categories: ``[{"id", ...}]``.
        references: COCO annotations ``{"id" (>= 1), "image_id", "category_id", "segmentation" (RLE), "area",
            "iscrowd"}``.
        detections: results ``{"image_id", "category_id", "segmentation" (RLE), "score"}``.
        image_ids: images to evaluate (default: all of ``images``).
    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` as fractions (NaN where COCOeval says -1).
    """
    ground_truth = _in_memory_coco(
        {"images": list(images), "categories": list(categories), "annotations": list(references)}
    )
    results = []
    for index, detection in enumerate(detections):
        segmentation = detection["segmentation"]
        results.append(
            {
                "id": index + 1,  # COCOeval treats id 0 as "unmatched", so ids start at 1 as in loadRes
                "image_id": detection["image_id"],
                "category_id": detection["category_id"],
                "segmentation": segmentation,
                "score": float(detection["score"]),
                "area": float(mask_utils.area(segmentation)),
                "bbox": mask_utils.toBbox(segmentation).tolist(),
                "iscrowd": 0,
            }
        )
    predicted = _in_memory_coco({"images": list(images), "categories": list(categories), "annotations": results})
    evaluator = COCOeval(ground_truth, predicted, iouType="segm")
    evaluator.params.maxDets = list(MAX_DETECTIONS)
    evaluator.params.imgIds = sorted(image_ids if image_ids is not None else [image["id"] for image in images])
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (float(value) if value >= 0 else float("nan")) for name, value in zip(STAT_NAMES, evaluator.stats)}


class MaskAPAccumulator:
    """Streaming COCO mask AP: keeps RLE-encoded masks, scores and category ids per image.

    Args:
        category_ids: the data set's category ids (the ids references and predictions must use).
        label_id_to_category_id: optional mapping applied to predicted labels first (e.g. a contiguous index or
            the index into the prompted class list -> the data set's category id).
    """

    def __init__(
        self, category_ids: Sequence[int], label_id_to_category_id: Mapping[int, int] | None = None
    ) -> None:
        if len(category_ids) == 0:
            raise ValueError("category_ids must not be empty")
        self.category_ids = [int(c) for c in category_ids]
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"category_ids contain duplicates: {self.category_ids}")
        self._known = set(self.category_ids)
        self.label_id_to_category_id = dict(label_id_to_category_id) if label_id_to_category_id else None
        self.images: dict[int, dict[str, int]] = {}
        self.references: list[dict[str, Any]] = []
        self.detections: list[dict[str, Any]] = []

    def _checked_categories(self, values: Any, what: str, map_labels: bool) -> list[int]:
        categories = [int(v) for v in to_numpy(values).reshape(-1).tolist()] if values is not None else []
        if map_labels and self.label_id_to_category_id is not None:
            unmapped = sorted({c for c in categories if c not in self.label_id_to_category_id})
            if unmapped:
                raise ValueError(f"{what}: labels {unmapped} have no entry in label_id_to_category_id")
            categories = [int(self.label_id_to_category_id[c]) for c in categories]
        unknown = sorted(set(categories) - self._known)
        if unknown:
            raise ValueError(f"{what}: unknown category ids {unknown}; known ids: {self.category_ids[:20]}")
        return categories

    def add(
        self,
        image_id: int,
        reference_masks: Any,
        reference_category_ids: Any,
        prediction_masks: Any,
        prediction_scores: Any,
        prediction_labels: Any,
        reference_iscrowd: Any = None,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        """Add one image.

        Args:
            image_id: unique id of the image in this evaluation.
            reference_masks: ``(N, H, W)`` stack or list of masks/RLE dicts, one per reference instance.
            reference_category_ids: ``(N,)`` data-set category ids.
            prediction_masks: ``(M, H, W)`` stack or list of masks/RLE dicts.
            prediction_scores: ``(M,)`` confidence scores.
            prediction_labels: ``(M,)`` category ids (or labels, mapped by ``label_id_to_category_id``).
            reference_iscrowd: optional ``(N,)`` 0/1 crowd flags (crowd regions are ignored, as in COCO).
            image_size: ``(H, W)``; only needed when the image has no mask at all.
        """
        image_id = int(image_id)
        if image_id in self.images:
            raise ValueError(f"image_id {image_id} was already added")
        what = f"image {image_id}"
        reference_rles = masks_to_rles(reference_masks, f"{what} reference_masks")
        prediction_rles = masks_to_rles(prediction_masks, f"{what} prediction_masks")
        reference_categories = self._checked_categories(reference_category_ids, f"{what} references", False)
        prediction_categories = self._checked_categories(prediction_labels, f"{what} predictions", True)
        scores = [] if prediction_scores is None else [float(s) for s in to_numpy(prediction_scores).reshape(-1)]
        crowd = [0] * len(reference_rles) if reference_iscrowd is None else [
            int(bool(c)) for c in to_numpy(reference_iscrowd).reshape(-1).tolist()
        ]
        if len(reference_categories) != len(reference_rles) or len(crowd) != len(reference_rles):
            raise ValueError(
                f"{what}: {len(reference_rles)} reference masks but {len(reference_categories)} category ids "
                f"and {len(crowd)} iscrowd flags"
            )
        if not (len(prediction_rles) == len(scores) == len(prediction_categories)):
            raise ValueError(
                f"{what}: {len(prediction_rles)} predicted masks, {len(scores)} scores and "
                f"{len(prediction_categories)} labels; the counts must match"
            )
        size = common_size(reference_rles + prediction_rles, f"{what} (predictions must be at the reference size)")
        if image_size is not None:
            if size is not None and tuple(image_size) != size:
                raise ValueError(f"{what}: image_size {tuple(image_size)} but masks have size {size}")
            size = (int(image_size[0]), int(image_size[1]))
        height, width = size if size is not None else (0, 0)
        self.images[image_id] = {"id": image_id, "height": height, "width": width}
        for rle, category_id, is_crowd in zip(reference_rles, reference_categories, crowd):
            self.references.append(
                {
                    "id": len(self.references) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": is_crowd,
                }
            )
        for rle, category_id, score in zip(prediction_rles, prediction_categories, scores):
            self.detections.append(
                {"image_id": image_id, "category_id": category_id, "segmentation": rle, "score": score}
            )

    def compute(self) -> dict[str, float]:
        """Return ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` (fractions; NaN with no reference at all)."""
        if not self.images:
            return {name: float("nan") for name in STAT_NAMES}
        categories = [{"id": category_id} for category_id in self.category_ids]
        return coco_mask_ap(list(self.images.values()), categories, self.references, self.detections)

