"""Semantic mIoU / fwIoU / mACC / pACC against per-class counting by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xsam_hf.evaluation import SemanticSegmentationAccumulator

TOLERANCE = 1e-9
NUM_CLASSES = 6
IGNORE = 255


def random_label_maps(rng: np.random.Generator, count: int, height: int = 20, width: int = 28):
    """Predictions in [0, C) and references in [0, C) with ignored pixels; class 5 is never in a reference."""
    samples = []
    for _ in range(count):
        reference = rng.integers(0, NUM_CLASSES - 1, (height, width))
        reference[rng.random((height, width)) < 0.15] = IGNORE
        noise = rng.integers(0, NUM_CLASSES, (height, width))
        prediction = np.where(rng.random((height, width)) < 0.6, reference, noise)
        prediction = np.where(prediction == IGNORE, 0, prediction)
        samples.append((prediction, reference))
    return samples


def hand_metrics(samples):
    tp = np.zeros(NUM_CLASSES)
    gt = np.zeros(NUM_CLASSES)
    pred = np.zeros(NUM_CLASSES)
    for prediction, reference in samples:
        valid = reference != IGNORE
        for c in range(NUM_CLASSES):
            tp[c] += np.sum((reference == c) & (prediction == c))
            gt[c] += np.sum(reference == c)
            pred[c] += np.sum((prediction == c) & valid)
    present = [c for c in range(NUM_CLASSES) if gt[c] > 0]
    iou = {c: tp[c] / (gt[c] + pred[c] - tp[c]) for c in present}
    acc = {c: tp[c] / gt[c] for c in present}
    total = sum(gt[c] for c in present)
    return {
        "mIoU": sum(iou.values()) / len(present),
        "fwIoU": sum(iou[c] * gt[c] / total for c in present),
        "mACC": sum(acc.values()) / len(present),
        "pACC": sum(tp[c] for c in present) / total,
        "iou": iou,
    }


def test_semantic_metrics_match_hand_counting():
    rng = np.random.default_rng(10)
    samples = random_label_maps(rng, 5)
    accumulator = SemanticSegmentationAccumulator(NUM_CLASSES, ignore_index=IGNORE)
    for prediction, reference in samples:
        accumulator.add(prediction, reference)
    results = accumulator.compute()
    expected = hand_metrics(samples)
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert results[key] == pytest.approx(expected[key], abs=TOLERANCE), key
    for c, value in expected["iou"].items():
        assert results["per_class_iou"][c] == pytest.approx(value, abs=TOLERANCE)
    # class 5 is predicted but never in a reference: it is left out of the mean
    assert np.isnan(results["per_class_iou"][5]) and np.isnan(results["per_class_acc"][5])
    assert 0.3 < results["mIoU"] < 0.9


def test_merged_accumulators_equal_one_pass():
    rng = np.random.default_rng(11)
    samples = random_label_maps(rng, 4)
    single = SemanticSegmentationAccumulator(NUM_CLASSES)
    parts = [SemanticSegmentationAccumulator(NUM_CLASSES) for _ in range(2)]
    for index, (prediction, reference) in enumerate(samples):
        single.add(prediction, reference)
        parts[index % 2].add(prediction, reference)
    np.testing.assert_array_equal(parts[0].merge(parts[1]).confusion_matrix, single.confusion_matrix)


def test_perfect_prediction_scores_one_and_all_ignored_is_nan():
    reference = np.array([[0, 1], [2, IGNORE]])
    perfect = SemanticSegmentationAccumulator(3)
    perfect.add(np.array([[0, 1], [2, 0]]), reference)
    assert perfect.compute()["mIoU"] == 1.0 and perfect.compute()["pACC"] == 1.0
    empty = SemanticSegmentationAccumulator(3)
    empty.add(np.zeros((2, 2), np.int64), np.full((2, 2), IGNORE))
    assert np.isnan(empty.compute()["mIoU"])


def test_bad_inputs_raise_clear_errors():
    accumulator = SemanticSegmentationAccumulator(3)
    with pytest.raises(ValueError, match=r"class ids outside \[0, 3\): \[3\]"):
        accumulator.add(np.array([[0, 3]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match=r"unknown class ids \[7\]"):
        accumulator.add(np.array([[0, 1]]), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="size"):
        accumulator.add(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="integer ids"):
        accumulator.add(np.zeros((2, 2)), np.zeros((2, 2), np.int64))
    assert accumulator.confusion_matrix.sum() == 0, "a rejected sample must not be counted"
