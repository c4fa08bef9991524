"""The evaluate.Metric subclasses, instantiated directly offline, give the accumulators' numbers."""

from __future__ import annotations

import os

import numpy as np
import pytest
from xsam_eval_synthetic import blob_mask, perturb_mask, random_binary_pairs

pytest.importorskip("evaluate")  # before the import below, which loads the evaluate.Metric subclasses

from xsam_hf.evaluation import (  # noqa: E402
    PROMPT_TYPES,
    ConversationAccuracy,
    ConversationAccuracyMetric,
    GCGAccumulator,
    GCGMetric,
    InteractiveIoUAccumulator,
    InteractiveIoUMetric,
    IoUAccumulator,
    MaskAPAccumulator,
    MaskAPMetric,
    PanopticQualityAccumulator,
    PanopticQualityMetric,
    ReasoningIoUAccumulator,
    ReasoningIoUMetric,
    ReferringIoUMetric,
    SemanticSegmentationAccumulator,
    SemanticSegmentationMetric,
    VGDMaskAPAccumulator,
    VGDMaskAPMetric,
    encode_mask_rle,
)


def test_runs_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("HF_DATASETS_OFFLINE") == "1"


def assert_same(actual, expected):
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, np.ndarray):
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)
    elif isinstance(expected, float) and np.isnan(expected):
        assert np.isnan(actual)
    else:
        assert actual == pytest.approx(expected, abs=1e-12)


def test_iou_metrics_equal_accumulators(tmp_path):
    rng = np.random.default_rng(50)
    pairs = random_binary_pairs(rng, 12, 16, 20)
    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]

    referring = ReferringIoUMetric(cache_dir=str(tmp_path))  # default, on-disk Arrow cache
    for prediction, reference in zip(predictions, references):
        referring.add(prediction=prediction, reference=reference)
    expected = IoUAccumulator()
    for prediction, reference in pairs:
        expected.add(prediction, reference)
    assert_same(referring.compute(), expected.compute())

    prompt_types = [PROMPT_TYPES[i % 4] for i in range(len(pairs))]
    interactive = InteractiveIoUMetric(keep_in_memory=True)
    interactive.add_batch(predictions=predictions, references=references, prompt_types=prompt_types)
    expected_interactive = InteractiveIoUAccumulator()
    for (prediction, reference), prompt_type in zip(pairs, prompt_types):
        expected_interactive.add(prediction, reference, prompt_type)
    assert_same(interactive.compute(), expected_interactive.compute())

    is_sentence = [i % 3 == 0 for i in range(len(pairs))]
    reasoning = ReasoningIoUMetric(keep_in_memory=True)
    results = reasoning.compute(predictions=predictions, references=references, is_sentence=is_sentence)
    expected_reasoning = ReasoningIoUAccumulator()
    for (prediction, reference), sentence in zip(pairs, is_sentence):
        expected_reasoning.add(prediction, reference, sentence)
    assert_same(results, expected_reasoning.compute())


def test_semantic_and_panoptic_metrics_equal_accumulators():
    rng = np.random.default_rng(51)
    references = [np.where(rng.random((12, 16)) < 0.1, 255, rng.integers(0, 4, (12, 16))) for _ in range(3)]
    predictions = [
        np.where(rng.random((12, 16)) < 0.7, np.where(r == 255, 0, r), rng.integers(0, 4, (12, 16))) for r in references
    ]
    semantic = SemanticSegmentationMetric(keep_in_memory=True)
    semantic.add_batch(predictions=predictions, references=references)
    expected = SemanticSegmentationAccumulator(4)
    for prediction, reference in zip(predictions, references):
        expected.add(prediction, reference)
    assert_same(semantic.compute(num_classes=4), expected.compute())

    categories = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}]
    reference_map = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 3, 3, 2]])
    reference_info = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 0},
                      {"id": 3, "category_id": 1, "iscrowd": 0}]
    prediction_map = np.array([[5, 5, 6, 6], [5, 7, 6, 6], [7, 7, 7, 6]])
    prediction_info = [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 2}, {"id": 7, "category_id": 1}]
    panoptic = PanopticQualityMetric(keep_in_memory=True)
    panoptic.add(prediction={"segmentation": prediction_map, "segments_info": prediction_info},
                 reference={"segmentation": reference_map, "segments_info": reference_info})
    expected_pq = PanopticQualityAccumulator(categories)
    expected_pq.add(prediction_map, prediction_info, reference_map, reference_info)
    results = panoptic.compute(categories=categories)
    assert_same(results, expected_pq.compute())
    # by hand: person 5 vs 1 -> I 3, U 4; 7 vs 3 -> I 2, U 4 + 2 - 2 - 1 void pixel = 3; stuff 6 vs 2 -> 5/5
    assert results["PQ_th"] == pytest.approx((3 / 4 + 2 / 3) / 2, abs=1e-12) and results["PQ_st"] == 1.0


def test_ap_metrics_equal_accumulators():
    rng = np.random.default_rng(52)
    category_ids = [3, 7]
    mask_ap = MaskAPMetric(keep_in_memory=True)
    vgd = VGDMaskAPMetric(keep_in_memory=True)
    expected_ap = MaskAPAccumulator(category_ids)
    expected_vgd = VGDMaskAPAccumulator(category_ids)
    for image_id in range(1, 6):
        references = [blob_mask(rng, 20, 24, 2) for _ in range(3)]
        reference_categories = [int(c) for c in rng.choice(category_ids, 3)]
        predictions = [perturb_mask(rng, m) for m in references] + [blob_mask(rng, 20, 24, 1)]
        scores = [float(s) for s in rng.random(4)]
        labels = reference_categories + [category_ids[0]]
        prediction = {"image_id": image_id, "masks": [encode_mask_rle(m) for m in predictions], "scores": scores,
                      "category_ids": labels}
        reference = {"image_id": image_id, "masks": [encode_mask_rle(m) for m in references],
                     "category_ids": reference_categories, "iscrowd": [0, 0, 0]}
        mask_ap.add(prediction=prediction, reference=reference)
        expected_ap.add(image_id, references, reference_categories, predictions, scores, labels)

        prompted = sorted(set(labels))
        prompt_type = PROMPT_TYPES[image_id % 2]
        vgd.add(
            prediction={"image_id": image_id, "masks": prediction["masks"], "scores": scores,
                        "labels": [prompted.index(c) for c in labels], "prompted_category_ids": prompted},
            reference=reference, prompt_types=prompt_type,
        )
        expected_vgd.add(image_id, prompt_type, prompted, references, reference_categories, predictions, scores,
                         [prompted.index(c) for c in labels])
    assert_same(mask_ap.compute(category_ids=category_ids), expected_ap.compute())
    results = vgd.compute(category_ids=category_ids)
    assert_same(results, expected_vgd.compute())
    assert 0.0 < results["point"]["AP50"] <= 1.0 and np.isnan(results["box"]["AP"])

    mismatched = MaskAPMetric(keep_in_memory=True)
    mismatched.add(prediction={**prediction, "image_id": 1}, reference={**reference, "image_id": 2})
    with pytest.raises(ValueError, match="prediction for image 1 is paired with the reference of image 2"):
        mismatched.compute(category_ids=category_ids)


def test_gcg_and_conversation_metrics_equal_accumulators():
    rng = np.random.default_rng(53)
    gcg = GCGMetric(keep_in_memory=True)
    expected = GCGAccumulator()
    for index in range(4):
        references = [blob_mask(rng, 16, 16, 2) for _ in range(2)]
        predictions = [perturb_mask(rng, references[0])]
        gcg.add(
            prediction={"image_id": f"i{index}", "caption": "a dog", "masks": [encode_mask_rle(m) for m in predictions]},
            reference={
                "image_id": f"i{index}",
                "captions": ["a dog on grass"],
                "masks": [encode_mask_rle(m) for m in references],
            },
        )
        expected.add(f"i{index}", "a dog", ["a dog on grass"], predictions, references)
    assert_same(gcg.compute(caption_metric_names=()), expected.compute(()))

    predictions, references = ["Red.", "The answer is C", "two"], ["red", "C", "three"]
    conversation = ConversationAccuracyMetric(keep_in_memory=True)
    results = conversation.compute(predictions=predictions, references=references)
    accumulator = ConversationAccuracy()
    for prediction, reference in zip(predictions, references):
        accumulator.add(prediction, reference)
    assert_same(results, accumulator.compute())
    assert results["accuracy"] == pytest.approx(2 / 3)


def test_metric_input_errors_name_the_problem():
    metric = SemanticSegmentationMetric(keep_in_memory=True)
    metric.add(prediction=np.zeros((2, 2), np.int64), reference=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="needs num_classes="):
        metric.compute()
    sized = ReferringIoUMetric(keep_in_memory=True)
    sized.add(prediction=np.zeros((2, 3), bool), reference=np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match=r"size \(2, 3\) but the reference has size \(3, 2\)"):
        sized.compute()
