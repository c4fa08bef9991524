"""Grounded conversation generation (GCG, GranD-f): METEOR, CIDEr, mask AP50 and mIoU.

Protocol (X-SAM's GCG evaluator):
* caption: the generated text with every "."-separated sentence that contains the segmentation token dropped,
  tags ``<...>`` removed and whitespace collapsed (:func:`clean_gcg_caption`); scored with METEOR and CIDEr.
* AP50: COCOeval ``segm`` with a single category, every predicted mask scored 1.0.
* mIoU: per image, predicted and reference masks are paired greedily one-to-one by highest IoU (pairs of IoU 0
  are never made); the image's value is the mean IoU of its pairs (0 without pairs); the result is the mean over
  images.
* Only images with at least one predicted mask take part in AP50 and mIoU (the official evaluator collects image
  ids from the predicted masks); ``include_images_without_masks=True`` counts them instead (mIoU 0, all references
  missed).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .caption import SUPPORTED_CAPTION_METRICS, caption_metrics
from .mask_ap import MaskAPAccumulator
from .rle import CompressedRLE, common_size, masks_to_rles

DEFAULT_SEG_TOKEN = "<SEG>"
_TAG = re.compile(r"<.*?>")


def clean_gcg_caption(generated_text: str, seg_token: str = DEFAULT_SEG_TOKEN) -> str:
    """Turn a GCG generation into the caption that is scored.

    A generation without ``seg_token`` yields ``""``. Otherwise the text is split on ".", the pieces holding
    ``seg_token`` are dropped, the rest (stripped) are joined with ". ", tags such as ``<p>`` or ``<|end|>`` are
    deleted, runs of whitespace become one space, and surrounding quotes (') and spaces are trimmed.
    """
    if seg_token not in generated_text:
        return ""
    kept = [piece.strip() for piece in generated_text.split(".") if seg_token not in piece]
    caption = _TAG.sub("", ". ".join(kept))
    return " ".join(caption.split()).strip("'").strip()


def iou_matrix(prediction_rles: Sequence[CompressedRLE], reference_rles: Sequence[CompressedRLE]) -> np.ndarray:
    """``(P, R)`` mask IoUs; a pair of empty masks gets 0."""
    if not prediction_rles or not reference_rles:
        return np.zeros((len(prediction_rles), len(reference_rles)))
    return np.asarray(mask_utils.iou(list(prediction_rles), list(reference_rles), [0] * len(reference_rles)))


def greedy_matched_miou(ious: np.ndarray) -> float:
    """Mean IoU of the greedy one-to-one pairing of a ``(P, R)`` IoU matrix (0.0 when nothing pairs).

    The highest remaining IoU (first in row-major order on ties) is paired, its row and column are removed, and
    this repeats while the highest remaining IoU is above 0.
    """
    remaining = np.array(ious, dtype=np.float64, copy=True)
    paired: list[float] = []
    while remaining.size and remaining.max() > 0:
        row, column = np.unravel_index(int(np.argmax(remaining)), remaining.shape)
        paired.append(float(remaining[row, column]))
        remaining[row, :] = -1.0
        remaining[:, column] = -1.0
    return float(np.mean(paired)) if paired else 0.0


class GCGAccumulator:
    """Streaming GCG metrics: keeps captions, RLE masks (for AP50) and one mIoU number per image."""

    CATEGORY_ID = 1

    def __init__(self, include_images_without_masks: bool = False) -> None:
        self.include_images_without_masks = include_images_without_masks
        self.predicted_captions: dict[Hashable, str] = {}
        self.reference_captions: dict[Hashable, list[str]] = {}
        self.image_mious: list[float] = []
        self._mask_ap = MaskAPAccumulator([self.CATEGORY_ID])
        self._coco_ids: dict[Hashable, int] = {}

    def add(
        self,
        image_id: Hashable,
        caption: str,
        reference_captions: str | Sequence[str],
        prediction_masks: Any,
        reference_masks: Any,
    ) -> None:
        """Add one image.

        Args:
            image_id: unique image id (int or str).
            caption: the cleaned predicted caption (apply :func:`clean_gcg_caption` to raw generations).
            reference_captions: the reference caption, or several.
            prediction_masks: ``(P, H, W)`` stack or list of masks/RLE dicts, one per grounded phrase.
            reference_masks: ``(R, H, W)`` stack or list of masks/RLE dicts.
        """
        if image_id in self.predicted_captions:
            raise ValueError(f"image_id {image_id!r} was already added")
        if not isinstance(caption, str):
            raise ValueError(f"image {image_id!r}: caption must be a str, got {type(caption).__name__}")
        references = [reference_captions] if isinstance(reference_captions, str) else list(reference_captions)
        if not references:
            raise ValueError(f"image {image_id!r}: at least one reference caption is needed")
        prediction_rles = masks_to_rles(prediction_masks, f"image {image_id!r} prediction_masks")
        reference_rles = masks_to_rles(reference_masks, f"image {image_id!r} reference_masks")
        common_size(prediction_rles + reference_rles, f"image {image_id!r} (predictions must be at the reference size)")

        self.predicted_captions[image_id] = caption
        self.reference_captions[image_id] = references
        if not prediction_rles and not self.include_images_without_masks:
            return
        self.image_mious.append(greedy_matched_miou(iou_matrix(prediction_rles, reference_rles)))
        coco_id = self._coco_ids.setdefault(image_id, len(self._coco_ids) + 1)
        self._mask_ap.add(
            coco_id,
            reference_rles,
            [self.CATEGORY_ID] * len(reference_rles),
            prediction_rles,
            [1.0] * len(prediction_rles),
            [self.CATEGORY_ID] * len(prediction_rles),
        )

    def compute(self, caption_metric_names: Sequence[str] = SUPPORTED_CAPTION_METRICS) -> dict[str, float]:
        """Return ``{"METEOR", "CIDEr", "AP50", "mIoU", "num_images", "num_images_with_masks"}``.

        ``caption_metric_names=()`` skips the Java-based caption metrics.
        """
        results: dict[str, float] = {}
        if caption_metric_names:
            results.update(caption_metrics(self.predicted_captions, self.reference_captions, caption_metric_names))
        results["AP50"] = self._mask_ap.compute()["AP50"]
        results["mIoU"] = float(np.mean(self.image_mious)) if self.image_mious else float("nan")
        results["num_images"] = len(self.predicted_captions)
        results["num_images_with_masks"] = len(self.image_mious)
        return results
