"""Mask AP (instance, VGD per prompt type) against direct pycocotools COCOeval runs on JSON files."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from xsam_eval_synthetic import blob_mask, perturb_mask

from xsam_hf.evaluation import PROMPT_TYPES, MaskAPAccumulator, VGDMaskAPAccumulator, encode_mask_rle

CATEGORY_IDS = [1, 5, 9]  # non-contiguous on purpose, like COCO's
TOLERANCE = 1e-12


def random_instances(rng: np.random.Generator, num_images: int, height: int = 40, width: int = 48):
    """Per image: reference masks/categories/crowd flags and scored predictions (matches, misses, duplicates)."""
    images = []
    for image_id in range(101, 101 + num_images):
        count = int(rng.integers(1, 5))
        references = np.stack([blob_mask(rng, height, width, 2) for _ in range(count)])
        categories = [int(c) for c in rng.choice(CATEGORY_IDS, count)]
        crowd = [int(rng.random() < 0.15) for _ in range(count)]
        prediction_masks, scores, labels = [], [], []
        for mask, category in zip(references, categories):
            for _ in range(int(rng.integers(0, 3))):  # 0 = missed, 2 = duplicate
                prediction_masks.append(perturb_mask(rng, mask))
                scores.append(float(rng.random()))
                labels.append(category if rng.random() < 0.85 else int(rng.choice(CATEGORY_IDS)))
        for _ in range(int(rng.integers(0, 3))):
            prediction_masks.append(blob_mask(rng, height, width, 1))
            scores.append(float(rng.random()))
            labels.append(int(rng.choice(CATEGORY_IDS)))
        images.append(
            {
                "image_id": image_id,
                "size": (height, width),
                "reference_masks": references,
                "reference_category_ids": categories,
                "reference_iscrowd": crowd,
                "prediction_masks": np.stack(prediction_masks)
                if prediction_masks
                else np.zeros((0, height, width), bool),
                "prediction_scores": scores,
                "prediction_labels": labels,
            }
        )
    return images


def direct_cocoeval(tmp_path, images, category_ids, image_ids=None, name="run"):
    """The reference route: COCO JSON files, COCO(), loadRes(), COCOeval('segm')."""
    gt = {"images": [], "categories": [{"id": c, "name": str(c)} for c in category_ids], "annotations": []}
    results = []
    for image in images:
        height, width = image["size"]
        gt["images"].append({"id": image["image_id"], "height": height, "width": width})
        references = zip(image["reference_masks"], image["reference_category_ids"], image["reference_iscrowd"])
        for mask, category, crowd in references:
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image["image_id"],
                    "category_id": category,
                    "segmentation": encode_mask_rle(mask),
                    "area": int(mask.sum()),
                    "iscrowd": crowd,
                    "bbox": [0, 0, 1, 1],
                }
            )
        predictions = zip(image["prediction_masks"], image["prediction_scores"], image["prediction_category_ids"])
        for mask, score, category in predictions:
            results.append(
                {
                    "image_id": image["image_id"],
                    "category_id": category,
                    "segmentation": encode_mask_rle(mask),
                    "score": score,
                }
            )
    gt_path, results_path = tmp_path / f"{name}_gt.json", tmp_path / f"{name}_results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(results_path))
        evaluator = COCOeval(coco_gt, coco_dt, "segm")
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_mask_ap_equals_direct_cocoeval(tmp_path):
    rng = np.random.default_rng(30)
    images = random_instances(rng, 12)
    accumulator = MaskAPAccumulator(CATEGORY_IDS)
    for index, image in enumerate(images):
        image["prediction_category_ids"] = image["prediction_labels"]
        masks = image["prediction_masks"]
        accumulator.add(
            image["image_id"],
            image["reference_masks"],
            image["reference_category_ids"],
            # every accepted mask form: numpy stack, torch stack, list of RLE dicts
            [masks, torch.from_numpy(masks), [encode_mask_rle(m) for m in masks]][index % 3],
            image["prediction_scores"],
            image["prediction_labels"],
            reference_iscrowd=image["reference_iscrowd"],
        )
    stats = direct_cocoeval(tmp_path, images, CATEGORY_IDS)
    results = accumulator.compute()
    assert results["AP"] == pytest.approx(stats[0], abs=TOLERANCE)
    assert results["AP50"] == pytest.approx(stats[1], abs=TOLERANCE)
    assert results["AP75"] == pytest.approx(stats[2], abs=TOLERANCE)
    assert 0.1 < results["AP"] < results["AP50"] < 1.0


def test_label_remapping_gives_the_same_ap_as_dataset_ids(tmp_path):
    rng = np.random.default_rng(31)
    images = random_instances(rng, 6)
    contiguous_to_id = dict(enumerate(CATEGORY_IDS))
    id_to_contiguous = {v: k for k, v in contiguous_to_id.items()}
    remapped = MaskAPAccumulator(CATEGORY_IDS, label_id_to_category_id=contiguous_to_id)
    for image in images:
        image["prediction_category_ids"] = image["prediction_labels"]
        remapped.add(
            image["image_id"], image["reference_masks"], image["reference_category_ids"], image["prediction_masks"],
            image["prediction_scores"], [id_to_contiguous[c] for c in image["prediction_labels"]],
            reference_iscrowd=image["reference_iscrowd"],
        )
    stats = direct_cocoeval(tmp_path, images, CATEGORY_IDS)
    assert remapped.compute()["AP"] == pytest.approx(stats[0], abs=TOLERANCE)


def test_no_prediction_gives_zero_ap_and_no_reference_gives_nan():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:6] = True
    missed = MaskAPAccumulator([1])
    missed.add(1, [mask], [1], [], [], [])
    assert missed.compute()["AP"] == 0.0
    nothing = MaskAPAccumulator([1])
    nothing.add(1, [], [], [mask], [0.5], [1])
    assert np.isnan(nothing.compute()["AP"])


def test_vgd_ap_is_split_per_prompt_type_and_maps_prompt_indices(tmp_path):
    rng = np.random.default_rng(32)
    accumulator = VGDMaskAPAccumulator(CATEGORY_IDS)
    per_type: dict[str, list] = {prompt_type: [] for prompt_type in PROMPT_TYPES}
    for prompt_type in PROMPT_TYPES:
        images = random_instances(rng, 5)
        for image in images:
            # prompts: every reference category present, in a shuffled order; labels index that list
            prompted = [int(c) for c in rng.permutation(sorted(set(image["reference_category_ids"])))]
            labels = [c if c in prompted else prompted[0] for c in image["prediction_labels"]]
            image["prediction_category_ids"] = labels
            accumulator.add(
                image["image_id"], prompt_type, prompted, image["reference_masks"], image["reference_category_ids"],
                image["prediction_masks"], image["prediction_scores"], [prompted.index(c) for c in labels],
                reference_iscrowd=image["reference_iscrowd"],
            )
        per_type[prompt_type] = images
    results = accumulator.compute()
    assert set(results) == set(PROMPT_TYPES)
    for prompt_type, images in per_type.items():
        stats = direct_cocoeval(tmp_path, images, CATEGORY_IDS, name=prompt_type)
        assert results[prompt_type]["AP"] == pytest.approx(stats[0], abs=TOLERANCE), prompt_type
        assert results[prompt_type]["AP50"] == pytest.approx(stats[1], abs=TOLERANCE), prompt_type
    assert len({round(results[t]["AP"], 12) for t in PROMPT_TYPES}) > 1, "different data per type, different AP"


def test_bad_ap_inputs_raise_clear_errors():
    mask = np.zeros((8, 8), bool)
    mask[1:4, 1:4] = True
    accumulator = MaskAPAccumulator(CATEGORY_IDS)
    with pytest.raises(ValueError, match=r"unknown category ids \[2\]"):
        accumulator.add(1, [mask], [2], [], [], [])
    with pytest.raises(ValueError, match=r"predictions: unknown category ids \[7\]"):
        accumulator.add(1, [mask], [1], [mask], [0.5], [7])
    with pytest.raises(ValueError, match="2 predicted masks, 1 scores and 2 labels"):
        accumulator.add(1, [mask], [1], [mask, mask], [0.5], [1, 1])
    with pytest.raises(ValueError, match="1 reference masks but 2 category ids"):
        accumulator.add(1, [mask], [1, 5], [], [], [])
    with pytest.raises(ValueError, match="different sizes"):
        accumulator.add(1, [mask], [1], [np.zeros((8, 9), bool)], [0.5], [1])
    accumulator.add(1, [mask], [1], [mask], [0.5], [1])
    with pytest.raises(ValueError, match="image_id 1 was already added"):
        accumulator.add(1, [mask], [1], [mask], [0.5], [1])
    vgd = VGDMaskAPAccumulator(CATEGORY_IDS)
    with pytest.raises(ValueError, match=r"prediction labels \[2\] index no prompt"):
        vgd.add(1, "box", [1, 5], [mask], [1], [mask], [0.5], [2])
    with pytest.raises(ValueError, match=r"reference categories \[9\] were not prompted"):
        vgd.add(1, "box", [1, 5], [mask], [9], [mask], [0.5], [0])
    with pytest.raises(ValueError, match="unknown prompt type 'text'"):
        vgd.add(1, "text", [1], [mask], [1], [mask], [0.5], [0])
