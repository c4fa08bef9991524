"""Evaluation metrics of X-SAM's benchmarks, with the official protocols.

Plain streaming accumulators (``add`` per sample, ``compute`` at the end; memory bounded by per-sample statistics
or RLE-encoded masks) and, for use with the ``evaluate`` library, ``evaluate.Metric`` subclasses. All scores are
fractions in [0, 1] (CIDEr excepted); :func:`format_results_table` prints them as percentages.

The ``evaluate.Metric`` subclasses are imported lazily so that the accumulators need neither ``evaluate`` nor
``datasets``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .caption import caption_metrics
from .conversation import (
    AnswerPrior,
    ConversationAccuracy,
    conversation_accuracy,
    extract_choice_letter,
    llava_question_answer_pairs,
    normalize_answer,
)
from .gcg import GCGAccumulator, clean_gcg_caption, greedy_matched_miou
from .interactive import PROMPT_TYPES, InteractiveIoUAccumulator
from .iou import GroupedIoUAccumulator, IoUAccumulator, compute_ciou_giou, intersection_and_union
from .mask_ap import MaskAPAccumulator, coco_mask_ap
from .panoptic_quality import PanopticQualityAccumulator
from .reasoning import ReasoningIoUAccumulator
from .rle import decode_rle, encode_mask_rle, polygons_to_rle
from .semantic import SemanticSegmentationAccumulator, semantic_metrics_from_confusion
from .table import format_results_table
from .vgd import VGDMaskAPAccumulator

_METRIC_MODULES = (
    "ConversationAccuracyMetric",
    "GCGMetric",
    "InteractiveIoUMetric",
    "MaskAPMetric",
    "PanopticQualityMetric",
    "ReasoningIoUMetric",
    "ReferringIoUMetric",
    "SemanticSegmentationMetric",
    "VGDMaskAPMetric",
)


def __getattr__(name: str) -> Any:
    if name in _METRIC_MODULES:
        return getattr(importlib.import_module(".metric_modules", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnswerPrior",
    "PROMPT_TYPES",
    "ConversationAccuracy",
    "GCGAccumulator",
    "GroupedIoUAccumulator",
    "InteractiveIoUAccumulator",
    "IoUAccumulator",
    "MaskAPAccumulator",
    "PanopticQualityAccumulator",
    "ReasoningIoUAccumulator",
    "SemanticSegmentationAccumulator",
    "VGDMaskAPAccumulator",
    "caption_metrics",
    "clean_gcg_caption",
    "coco_mask_ap",
    "compute_ciou_giou",
    "conversation_accuracy",
    "decode_rle",
    "encode_mask_rle",
    "extract_choice_letter",
    "format_results_table",
    "greedy_matched_miou",
    "intersection_and_union",
    "llava_question_answer_pairs",
    "normalize_answer",
    "polygons_to_rle",
    "semantic_metrics_from_confusion",
    *_METRIC_MODULES,
]
