"""cIoU / gIoU, per-prompt-type (interactive) and short/long (reasoning) splits, against hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from xsam_eval_synthetic import random_binary_pairs

from xsam_hf.evaluation import (
    PROMPT_TYPES,
    InteractiveIoUAccumulator,
    IoUAccumulator,
    ReasoningIoUAccumulator,
    compute_ciou_giou,
    intersection_and_union,
)

TOLERANCE = 1e-9


def lisa_style_counts(prediction: np.ndarray, reference: np.ndarray, ignore_index: int = 255):
    """LISA's two-class intersection/union: a histogram over {background, foreground} of agreeing pixels."""
    output = prediction.astype(np.int64).ravel().copy()
    target = reference.astype(np.int64).ravel()
    output[target == ignore_index] = ignore_index
    agreeing = output[output == target]
    area_intersection = np.histogram(agreeing, bins=2, range=(0, 1))[0]
    area_output = np.histogram(output[output != ignore_index], bins=2, range=(0, 1))[0]
    area_target = np.histogram(target[target != ignore_index], bins=2, range=(0, 1))[0]
    area_union = area_output + area_target - area_intersection
    return int(area_intersection[1]), int(area_union[1])


def hand_ciou_giou(pairs, ignore_index: int = 255):
    intersections, unions = zip(*(lisa_style_counts(p, r, ignore_index) for p, r in pairs))
    per_sample = [1.0 if u == 0 else i / u for i, u in zip(intersections, unions)]
    return sum(intersections) / sum(unions), sum(per_sample) / len(per_sample)


def test_ciou_giou_match_lisa_style_hand_computation():
    rng = np.random.default_rng(0)
    pairs = random_binary_pairs(rng, 60)
    assert any(not p.any() and not r.any() for p, r in pairs), "the data must hold an empty union"
    expected_ciou, expected_giou = hand_ciou_giou(pairs)
    results = compute_ciou_giou([p for p, _ in pairs], [r for _, r in pairs])
    assert results["num_samples"] == 60
    assert results["cIoU"] == pytest.approx(expected_ciou, abs=TOLERANCE)
    assert results["gIoU"] == pytest.approx(expected_giou, abs=TOLERANCE)
    assert 0.0 < results["cIoU"] < 1.0 and 0.0 < results["gIoU"] < 1.0


def test_ignore_index_pixels_count_in_neither_intersection_nor_union():
    rng = np.random.default_rng(1)
    pairs = []
    for prediction, reference in random_binary_pairs(rng, 20):
        labelled = reference.astype(np.uint8)
        labelled[rng.random(reference.shape) < 0.2] = 255
        pairs.append((prediction, labelled))
    for prediction, reference in pairs:
        assert intersection_and_union(prediction, reference) == lisa_style_counts(prediction, reference)
    expected_ciou, expected_giou = hand_ciou_giou(pairs)
    results = compute_ciou_giou([p for p, _ in pairs], [r for _, r in pairs])
    assert results["cIoU"] == pytest.approx(expected_ciou, abs=TOLERANCE)
    assert results["gIoU"] == pytest.approx(expected_giou, abs=TOLERANCE)


def test_empty_union_counts_as_one_and_small_case_by_hand():
    reference = np.zeros((2, 4), bool)
    reference[0, :2] = True  # 2 pixels
    prediction = np.zeros((2, 4), bool)
    prediction[0, 1:4] = True  # 3 pixels, 1 shared -> I=1, U=4
    empty = np.zeros((2, 4), bool)
    accumulator = IoUAccumulator()
    assert accumulator.add(prediction, reference) == 0.25
    assert accumulator.add(empty, empty) == 1.0
    assert accumulator.compute() == {"cIoU": 0.25, "gIoU": (0.25 + 1.0) / 2, "num_samples": 2}
    assert np.isnan(IoUAccumulator().compute()["gIoU"])


def test_tensor_inputs_on_any_dtype_give_the_same_counts():
    rng = np.random.default_rng(2)
    prediction, reference = random_binary_pairs(rng, 1)[0]
    expected = intersection_and_union(prediction, reference)
    bfloat16_prediction = torch.from_numpy(prediction).to(torch.bfloat16)
    assert intersection_and_union(bfloat16_prediction, torch.from_numpy(reference)) == expected
    assert intersection_and_union(prediction.astype(np.float32), reference.astype(np.int64)) == expected


def test_merge_equals_single_pass():
    rng = np.random.default_rng(3)
    pairs = random_binary_pairs(rng, 30)
    single, first, second = IoUAccumulator(), IoUAccumulator(), IoUAccumulator()
    for index, (prediction, reference) in enumerate(pairs):
        single.add(prediction, reference)
        (first if index < 13 else second).add(prediction, reference)
    merged = first.merge(second).compute()
    assert merged["cIoU"] == single.compute()["cIoU"]
    assert merged["gIoU"] == pytest.approx(single.compute()["gIoU"], abs=TOLERANCE)


def test_interactive_results_are_split_per_prompt_type():
    rng = np.random.default_rng(4)
    pairs = random_binary_pairs(rng, 48)
    prompt_types = [PROMPT_TYPES[i] for i in rng.integers(0, 4, len(pairs))]
    accumulator = InteractiveIoUAccumulator()
    for (prediction, reference), prompt_type in zip(pairs, prompt_types):
        accumulator.add(prediction, reference, prompt_type)
    results = accumulator.compute()
    assert set(results) == set(PROMPT_TYPES)
    for prompt_type in PROMPT_TYPES:
        subset = [pair for pair, kind in zip(pairs, prompt_types) if kind == prompt_type]
        expected_ciou, expected_giou = hand_ciou_giou(subset)
        assert results[prompt_type]["num_samples"] == len(subset)
        assert results[prompt_type]["mIoU"] == pytest.approx(expected_giou, abs=TOLERANCE)
        assert results[prompt_type]["cIoU"] == pytest.approx(expected_ciou, abs=TOLERANCE)
    with pytest.raises(ValueError, match="unknown prompt type 'lasso'"):
        accumulator.add(*pairs[0], "lasso")


def test_reasoning_results_are_split_by_query_length():
    rng = np.random.default_rng(5)
    pairs = random_binary_pairs(rng, 30)
    is_sentence = [bool(v) for v in rng.integers(0, 2, len(pairs))]
    accumulator = ReasoningIoUAccumulator()
    for (prediction, reference), sentence in zip(pairs, is_sentence):
        accumulator.add(prediction, reference, np.bool_(sentence))
    results = accumulator.compute()
    for split, flag in (("short", False), ("long", True)):
        subset = [pair for pair, s in zip(pairs, is_sentence) if s == flag]
        expected_ciou, expected_giou = hand_ciou_giou(subset)
        assert results[split]["gIoU"] == pytest.approx(expected_giou, abs=TOLERANCE)
        assert results[split]["cIoU"] == pytest.approx(expected_ciou, abs=TOLERANCE)
    expected_ciou, expected_giou = hand_ciou_giou(pairs)
    assert results["overall"]["gIoU"] == pytest.approx(expected_giou, abs=TOLERANCE)
    assert results["overall"]["cIoU"] == pytest.approx(expected_ciou, abs=TOLERANCE)
    with pytest.raises(ValueError, match="is_sentence must be a bool"):
        accumulator.add(*pairs[0], "yes")


def test_mismatched_inputs_raise_clear_errors():
    mask = np.ones((4, 5), bool)
    with pytest.raises(ValueError, match=r"prediction has size \(4, 5\) but the reference has size \(5, 4\)"):
        intersection_and_union(mask, mask.T)
    with pytest.raises(ValueError, match="must contain only 0 and 1"):
        intersection_and_union(np.full((4, 5), 0.7), mask)
    with pytest.raises(ValueError, match="2-D"):
        intersection_and_union(np.ones((1, 4, 5), bool), mask)
    with pytest.raises(ValueError, match="3 predictions for 2 references"):
        compute_ciou_giou([mask] * 3, [mask] * 2)
    with pytest.raises(ValueError, match="intersection <= union"):
        IoUAccumulator().add_counts(5, 3)
