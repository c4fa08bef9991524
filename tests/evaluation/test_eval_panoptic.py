"""PQ against panopticapi's ``pq_compute`` run on PNG folders and JSON files written to tmp_path."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from xsam_eval_synthetic import blob_mask, perturb_mask

from xsam_hf.evaluation import PanopticQualityAccumulator

TOLERANCE = 1e-9
CATEGORIES = [
    {"id": 1, "isthing": 1, "name": "person"},
    {"id": 3, "isthing": 1, "name": "car"},
    {"id": 18, "isthing": 1, "name": "dog"},
    {"id": 120, "isthing": 0, "name": "sky"},
    {"id": 145, "isthing": 0, "name": "grass"},
]
THINGS = [1, 3, 18]
STUFF = [120, 145]


def paint(segmentation: np.ndarray, mask: np.ndarray, segment_id: int, segments: list, **info) -> None:
    """Paint a segment over what is there; keep it only if it still covers pixels."""
    segmentation[mask] = segment_id
    segments.append({"id": segment_id, **info})


def finalize(segmentation: np.ndarray, segments: list) -> list:
    present = set(np.unique(segmentation).tolist())
    kept = []
    for segment in segments:
        if segment["id"] in present:
            kept.append({**segment, "area": int(np.sum(segmentation == segment["id"]))})
    return kept


def random_scene(rng: np.random.Generator, height: int = 48, width: int = 64):
    """A reference panoptic map (void = 0, stuff bands, thing blobs, at most one crowd per category)."""
    reference = np.zeros((height, width), np.int64)
    segments: list = []
    next_id = 1
    split = int(rng.integers(height // 3, 2 * height // 3))
    for category_id, rows in ((STUFF[0], slice(0, split)), (STUFF[1], slice(split, height))):
        band = np.zeros((height, width), bool)
        band[rows] = True
        band &= rng.random((height, width)) > 0.02  # sprinkle void
        paint(reference, band, next_id, segments, category_id=category_id, iscrowd=0)
        next_id += 1
    crowd_used: set = set()
    for _ in range(int(rng.integers(2, 6))):
        category_id = int(rng.choice(THINGS))
        crowd = int(category_id not in crowd_used and rng.random() < 0.25)
        if crowd:
            crowd_used.add(category_id)
        paint(reference, blob_mask(rng, height, width, 2), next_id, segments, category_id=category_id, iscrowd=crowd)
        next_id += 1
    reference[rng.random((height, width)) < 0.03] = 0
    return reference, finalize(reference, segments)


def predict(rng: np.random.Generator, reference: np.ndarray, reference_segments: list):
    """A prediction: noisy copies (some relabelled or dropped), spurious blobs, void holes, shuffled ids."""
    height, width = reference.shape
    prediction = np.zeros_like(reference)
    segments: list = []
    next_id = int(rng.integers(1, 50))
    for segment in reference_segments:
        roll = rng.random()
        if roll < 0.15:
            continue
        category_id = segment["category_id"]
        if roll > 0.9:
            category_id = int(rng.choice(THINGS if category_id in THINGS else STUFF))
        paint(prediction, perturb_mask(rng, reference == segment["id"]), next_id, segments, category_id=category_id)
        next_id += int(rng.integers(1, 4))
    for _ in range(int(rng.integers(0, 3))):
        paint(prediction, blob_mask(rng, height, width, 1), next_id, segments, category_id=int(rng.choice(THINGS)))
        next_id += 1
    prediction[rng.random((height, width)) < 0.02] = 0
    kept = finalize(prediction, segments)
    return prediction, [{"id": s["id"], "category_id": s["category_id"]} for s in kept]


def write_panoptic(folder, name: str, images: list, id2rgb) -> str:
    folder.mkdir()
    annotations = []
    for image_id, segmentation, segments in images:
        file_name = f"{image_id:06d}.png"
        Image.fromarray(id2rgb(segmentation)).save(folder / file_name)
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    path = folder.parent / f"{name}.json"
    path.write_text(json.dumps({"categories": CATEGORIES, "annotations": annotations, "images": []}))
    return str(path)


def test_pq_matches_panopticapi(tmp_path):
    # panopticapi-lite is installed with --no-deps (its metadata pins numpy<2), so it may be absent
    panopticapi_evaluation = pytest.importorskip("panopticapi.evaluation")
    id2rgb = pytest.importorskip("panopticapi.utils").id2rgb
    rng = np.random.default_rng(20)
    references, predictions = [], []
    accumulator = PanopticQualityAccumulator(CATEGORIES)
    for image_id in range(1, 9):
        reference, reference_segments = random_scene(rng)
        prediction, prediction_segments = predict(rng, reference, reference_segments)
        references.append((image_id, reference, reference_segments))
        predictions.append((image_id, prediction, prediction_segments))
        # the transformers post-processors mark void with -1: the accumulator must treat it like 0
        accumulator.add(np.where(prediction == 0, -1, prediction), prediction_segments, reference, reference_segments)
    assert any(s["iscrowd"] for _, _, segments in references for s in segments), "the data must hold crowd regions"

    gt_json = write_panoptic(tmp_path / "gt", "gt", references, id2rgb)
    pred_json = write_panoptic(tmp_path / "pred", "pred", predictions, id2rgb)
    with contextlib.redirect_stdout(io.StringIO()):
        expected = panopticapi_evaluation.pq_compute(gt_json, pred_json, str(tmp_path / "gt"), str(tmp_path / "pred"))

    results = accumulator.compute()
    for suffix, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        assert results["n" + suffix] == expected[name]["n"]
        for key in ("pq", "sq", "rq"):
            assert results[key.upper() + suffix] == pytest.approx(float(expected[name][key]), abs=TOLERANCE)
    for category_id, values in expected["per_class"].items():
        if category_id in results["per_category"]:
            for key in ("pq", "sq", "rq"):
                actual = results["per_category"][category_id][key.upper()]
                assert actual == pytest.approx(float(values[key]), abs=TOLERANCE)
    assert 0.2 < results["PQ"] < 0.95, "the scenes should be neither trivial nor hopeless"


def test_perfect_prediction_and_label_id_mapping():
    rng = np.random.default_rng(21)
    reference, segments = random_scene(rng)
    contiguous = {index: category["id"] for index, category in enumerate(CATEGORIES)}
    to_label = {v: k for k, v in contiguous.items()}
    accumulator = PanopticQualityAccumulator(CATEGORIES, label_id_to_category_id=contiguous)
    prediction_segments = [
        {"id": s["id"], "label_id": to_label[s["category_id"]]} for s in segments if not s["iscrowd"]
    ]
    crowd_ids = [s["id"] for s in segments if s["iscrowd"]]
    prediction = np.where(np.isin(reference, crowd_ids), 0, reference)
    accumulator.add(prediction, prediction_segments, reference, segments)
    results = accumulator.compute()
    assert results["PQ"] == 1.0 and results["SQ"] == 1.0 and results["RQ"] == 1.0


def test_bad_panoptic_inputs_raise_clear_errors():
    accumulator = PanopticQualityAccumulator(CATEGORIES)
    reference = np.array([[1, 1], [2, 0]])
    reference_segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 120, "iscrowd": 0}]
    with pytest.raises(ValueError, match=r"segment ids \[7\] that are missing from segments_info"):
        accumulator.add(np.array([[7, 1], [1, 1]]), [{"id": 1, "category_id": 1}], reference, reference_segments)
    with pytest.raises(ValueError, match="unknown category id 99"):
        unknown = [{"id": 1, "category_id": 99}, {"id": 2, "category_id": 1}]
        accumulator.add(reference, unknown, reference, reference_segments)
    with pytest.raises(ValueError, match=r"\[5\] are listed in segments_info but cover no pixel"):
        accumulator.add(
            reference, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1}, {"id": 5, "category_id": 1}],
            reference, reference_segments,
        )
    with pytest.raises(ValueError, match="size"):
        accumulator.add(np.ones((3, 2), np.int64), [{"id": 1, "category_id": 1}], reference, reference_segments)
    with pytest.raises(ValueError, match="listed twice"):
        accumulator.add(reference, [{"id": 1, "category_id": 1}] * 2, reference, reference_segments)
    with pytest.raises(ValueError, match="'id' and 'isthing'"):
        PanopticQualityAccumulator([{"id": 1}])
    assert accumulator.num_images == 0 and all(s.true_positives == 0 for s in accumulator.stats.values())
