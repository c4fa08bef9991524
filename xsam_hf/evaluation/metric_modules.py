"""The X-SAM metrics as ``evaluate.Metric`` subclasses.

Instantiate them directly (``ReferringIoUMetric()``; no ``evaluate.load`` and no network), then use
``add`` / ``add_batch`` / ``compute`` as with any evaluate metric. Masks are nested lists or 2-D arrays; for the
AP-based metrics masks travel as COCO RLE dicts ``{"size": [H, W], "counts": str}`` (see
:func:`~xsam_hf.evaluation.rle.encode_mask_rle`) so that the Arrow cache stays small. Each ``_compute`` feeds the
streaming accumulator of the same metric, so both routes give identical numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from .caption import SUPPORTED_CAPTION_METRICS
from .conversation import ConversationAccuracy
from .gcg import GCGAccumulator
from .interactive import PROMPT_TYPES, InteractiveIoUAccumulator
from .iou import IoUAccumulator
from .mask_ap import MaskAPAccumulator
from .panoptic_quality import PanopticQualityAccumulator
from .reasoning import ReasoningIoUAccumulator
from .semantic import SemanticSegmentationAccumulator
from .vgd import VGDMaskAPAccumulator

_CITATION = "X-SAM: From Segment Anything to Any Segmentation (Wang et al., 2025)."

_BOOL_MASK = datasets.List(datasets.List(datasets.Value("bool")))
_ID_MAP = datasets.List(datasets.List(datasets.Value("int64")))
_RLE = {"size": datasets.List(datasets.Value("int64")), "counts": datasets.Value("string")}
_INT_LIST = datasets.List(datasets.Value("int64"))


def _info(description: str, inputs: str, features: dict[str, Any]) -> evaluate.MetricInfo:
    return evaluate.MetricInfo(
        description=description,
        citation=_CITATION,
        inputs_description=inputs,
        features=datasets.Features(features),
    )


class ReferringIoUMetric(evaluate.Metric):
    """cIoU and gIoU of binary masks (referring segmentation)."""

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            "cIoU (sum I / sum U) and gIoU (mean per-sample IoU, 1 for an empty union) of binary masks.",
            "predictions, references: (H, W) bool masks, one prediction per reference.",
            {"predictions": _BOOL_MASK, "references": _BOOL_MASK},
        )

    def _compute(self, predictions: list, references: list) -> dict[str, float]:
        accumulator = IoUAccumulator()
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            accumulator.add(*_bool_pair(prediction, reference, index))
        return accumulator.compute()


class InteractiveIoUMetric(evaluate.Metric):
    """Per-prompt-type mIoU and cIoU (interactive segmentation)."""

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            "mIoU and cIoU per visual-prompt type (point, scribble, box, mask).",
            "predictions, references: (H, W) bool masks; prompt_types: the prompt type of each sample.",
            {"predictions": _BOOL_MASK, "references": _BOOL_MASK, "prompt_types": datasets.Value("string")},
        )

    def _compute(
        self, predictions: list, references: list, prompt_types: list, all_prompt_types: Sequence[str] = PROMPT_TYPES
    ) -> dict[str, dict[str, float]]:
        accumulator = InteractiveIoUAccumulator(tuple(all_prompt_types))
        for index, (prediction, reference, prompt_type) in enumerate(zip(predictions, references, prompt_types)):
            accumulator.add(*_bool_pair(prediction, reference, index), prompt_type)
        return accumulator.compute()


class ReasoningIoUMetric(evaluate.Metric):
    """gIoU and cIoU for short queries, long queries and overall (reasoning segmentation)."""

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            "gIoU and cIoU split by ReasonSeg's is_sentence flag (short / long queries) and overall.",
            "predictions, references: (H, W) bool masks; is_sentence: bool per sample.",
            {"predictions": _BOOL_MASK, "references": _BOOL_MASK, "is_sentence": datasets.Value("bool")},
        )

    def _compute(self, predictions: list, references: list, is_sentence: list) -> dict[str, dict[str, float]]:
        accumulator = ReasoningIoUAccumulator()
        for index, (prediction, reference, sentence) in enumerate(zip(predictions, references, is_sentence)):
            accumulator.add(*_bool_pair(prediction, reference, index), sentence)
        return accumulator.compute()


class SemanticSegmentationMetric(evaluate.Metric):
    """mIoU, fwIoU, mACC and pACC from a confusion matrix; ``compute(num_classes=..., ignore_index=255)``."""

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            "Semantic segmentation mIoU / fwIoU / mACC / pACC (classes with reference pixels only).",
            "predictions: (H, W) class-id maps in [0, num_classes); references: (H, W) class-id maps, "
            "ignore_index for unlabelled pixels. compute(num_classes=C, ignore_index=255).",
            {"predictions": _ID_MAP, "references": _ID_MAP},
        )

    def _compute(
        self, predictions: list, references: list, num_classes: int | None = None, ignore_index: int = 255
    ) -> dict[str, Any]:
        if num_classes is None:
            raise ValueError("SemanticSegmentationMetric.compute needs num_classes=")
        accumulator = SemanticSegmentationAccumulator(num_classes, ignore_index)
        for prediction, reference in zip(predictions, references):
            accumulator.add(np.asarray(prediction, dtype=np.int64), np.asarray(reference, dtype=np.int64))
        return accumulator.compute()


class PanopticQualityMetric(evaluate.Metric):
    """PQ / SQ / RQ for all, things and stuff; ``compute(categories=[{"id", "isthing"}, ...])``."""

    def _info(self) -> evaluate.MetricInfo:
        segment = {"id": datasets.Value("int64"), "category_id": datasets.Value("int64")}
        reference_segment = {**segment, "iscrowd": datasets.Value("int64")}
        return _info(
            "Panoptic quality (COCO panoptic protocol).",
            "predictions: {segmentation: (H, W) segment ids (<= 0 void), segments_info: [{id, category_id}]}; "
            "references: {segmentation, segments_info: [{id, category_id, iscrowd}]}. compute(categories=[...]).",
            {
                "predictions": {"segmentation": _ID_MAP, "segments_info": datasets.List(segment)},
                "references": {"segmentation": _ID_MAP, "segments_info": datasets.List(reference_segment)},
            },
        )

    def _compute(
        self, predictions: list, references: list, categories: Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        if categories is None:
            raise ValueError("PanopticQualityMetric.compute needs categories=[{'id', 'isthing'}, ...]")
        accumulator = PanopticQualityAccumulator(categories)
        for prediction, reference in zip(predictions, references):
            accumulator.add(
                np.asarray(prediction["segmentation"], dtype=np.int64),
                prediction["segments_info"],
                np.asarray(reference["segmentation"], dtype=np.int64),
                reference["segments_info"],
            )
        return accumulator.compute()


class MaskAPMetric(evaluate.Metric):
    """COCO mask AP / AP50 (pycocotools COCOeval segm); ``compute(category_ids=[...])``."""

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            "COCO mask AP (IoU 0.50:0.95), AP50, AP75 and AP by size, maxDets [1, 10, 100].",
            "predictions: {image_id, masks: [RLE], scores: [float], category_ids: [int]}; references: "
            "{image_id, masks: [RLE], category_ids: [int], iscrowd: [0/1]}. compute(category_ids=[...]).",
            {
                "predictions": {
                    "image_id": datasets.Value("int64"),
                    "masks": datasets.List(_RLE),
                    "scores": datasets.List(datasets.Value("float64")),
                    "category_ids": _INT_LIST,
                },
                "references": {
                    "image_id": datasets.Value("int64"),
                    "masks": datasets.List(_RLE),
                    "category_ids": _INT_LIST,
                    "iscrowd": _INT_LIST,
                },
            },
        )

    def _compute(
        self, predictions: list, references: list, category_ids: Sequence[int] | None = None
    ) -> dict[str, float]:
        if category_ids is None:
            raise ValueError("MaskAPMetric.compute needs category_ids=[...]")
        accumulator = MaskAPAccumulator(category_ids)
        for prediction, reference in zip(predictions, references):
            _check_same_image(prediction["image_id"], reference["image_id"])
            accumulator.add(
                reference["image_id"],
                reference["masks"],
                reference["category_ids"],
                prediction["masks"],
                prediction["scores"],
                prediction["category_ids"],
                reference_iscrowd=reference["iscrowd"] or None,
            )
        return accumulator.compute()


class VGDMaskAPMetric(evaluate.Metric):
    """Per-prompt-type COCO mask AP / AP50 for visual grounded detection; ``compute(category_ids=[...])``."""

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            "Mask AP and AP50 per visual-prompt type; predicted labels index the prompted categories.",
            "predictions: {image_id, masks: [RLE], scores, labels: [prompt index], prompted_category_ids}; "
            "references: {image_id, masks: [RLE], category_ids, iscrowd}; prompt_types: str per sample.",
            {
                "predictions": {
                    "image_id": datasets.Value("int64"),
                    "masks": datasets.List(_RLE),
                    "scores": datasets.List(datasets.Value("float64")),
                    "labels": _INT_LIST,
                    "prompted_category_ids": _INT_LIST,
                },
                "references": {
                    "image_id": datasets.Value("int64"),
                    "masks": datasets.List(_RLE),
                    "category_ids": _INT_LIST,
                    "iscrowd": _INT_LIST,
                },
                "prompt_types": datasets.Value("string"),
            },
        )

    def _compute(
        self,
        predictions: list,
        references: list,
        prompt_types: list,
        category_ids: Sequence[int] | None = None,
        all_prompt_types: Sequence[str] = PROMPT_TYPES,
    ) -> dict[str, dict[str, float]]:
        if category_ids is None:
            raise ValueError("VGDMaskAPMetric.compute needs category_ids=[...]")
        accumulator = VGDMaskAPAccumulator(category_ids, all_prompt_types)
        for prediction, reference, prompt_type in zip(predictions, references, prompt_types):
            _check_same_image(prediction["image_id"], reference["image_id"])
            accumulator.add(
                reference["image_id"],
                prompt_type,
                prediction["prompted_category_ids"],
                reference["masks"],
                reference["category_ids"],
                prediction["masks"],
                prediction["scores"],
                prediction["labels"],
                reference_iscrowd=reference["iscrowd"] or None,
            )
        return accumulator.compute()


class GCGMetric(evaluate.Metric):
    """GCG METEOR, CIDEr, mask AP50 and mIoU; ``compute(caption_metric_names=("METEOR", "CIDEr"))``."""

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            "Grounded conversation generation: caption METEOR / CIDEr (PTB tokenizer) and mask AP50 / mIoU.",
            "predictions: {image_id: str, caption: cleaned caption, masks: [RLE]}; references: {image_id: str, "
            "captions: [str], masks: [RLE]}.",
            {
                "predictions": {
                    "image_id": datasets.Value("string"),
                    "caption": datasets.Value("string"),
                    "masks": datasets.List(_RLE),
                },
                "references": {
                    "image_id": datasets.Value("string"),
                    "captions": datasets.List(datasets.Value("string")),
                    "masks": datasets.List(_RLE),
                },
            },
        )

    def _compute(
        self,
        predictions: list,
        references: list,
        caption_metric_names: Sequence[str] = SUPPORTED_CAPTION_METRICS,
        include_images_without_masks: bool = False,
    ) -> dict[str, float]:
        accumulator = GCGAccumulator(include_images_without_masks)
        for prediction, reference in zip(predictions, references):
            _check_same_image(prediction["image_id"], reference["image_id"])
            accumulator.add(
                reference["image_id"],
                prediction["caption"],
                reference["captions"],
                prediction["masks"],
                reference["masks"],
            )
        return accumulator.compute(caption_metric_names)


class ConversationAccuracyMetric(evaluate.Metric):
    """Exact-match / multiple-choice accuracy of generated answers; ``compute(mode="auto")``."""

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            "Accuracy of answers: normalised exact match, or the option letter for multiple-choice questions.",
            "predictions: generated answers; references: reference answers (a bare letter marks a multiple-choice "
            "question when mode='auto').",
            {"predictions": datasets.Value("string"), "references": datasets.Value("string")},
        )

    def _compute(self, predictions: list, references: list, mode: str = "auto") -> dict[str, float]:
        accumulator = ConversationAccuracy()
        for prediction, reference in zip(predictions, references):
            accumulator.add(prediction, reference, mode)
        return accumulator.compute()


def _bool_pair(prediction: Any, reference: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    return _bool_array(prediction, f"predictions[{index}]"), _bool_array(reference, f"references[{index}]")


def _bool_array(mask: Any, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask; got {array.ndim} dimensions (ragged rows?)")
    return array.astype(bool)


def _check_same_image(prediction_id: Any, reference_id: Any) -> None:
    if prediction_id != reference_id:
        raise ValueError(
            f"prediction for image {prediction_id!r} is paired with the reference of image {reference_id!r}; "
            "add predictions and references in the same order"
        )
