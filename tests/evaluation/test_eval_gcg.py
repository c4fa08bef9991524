"""GCG: caption cleaning, METEOR/CIDEr vs pycocoevalcap's COCOEvalCap, AP50 vs COCOeval, greedy mIoU by hand."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from xsam_eval_synthetic import blob_mask, perturb_mask

from xsam_hf.evaluation import GCGAccumulator, caption_metrics, clean_gcg_caption, encode_mask_rle, greedy_matched_miou

TOLERANCE = 1e-9


def test_clean_gcg_caption_follows_the_official_rule():
    generated = "Sure, <p>a man</p> <SEG> rides <p>a horse</p> <SEG>. The sky  is <b>blue</b>. 'Nice' view.<|end|>"
    assert clean_gcg_caption(generated) == "The sky is blue. 'Nice' view."
    assert clean_gcg_caption("A man rides a horse.") == ""  # no segmentation token: no caption
    # the piece after the last "." survives as "", so a trailing ". " is left and only one quote is trimmed
    assert clean_gcg_caption("'<p>A dog</p> runs'. Grass <SEG>.") == "A dog runs'."
    assert clean_gcg_caption("x [SEG]. y.", seg_token="[SEG]") == "y."


def hand_greedy_miou(predictions, references):
    """The published pairing, written out: IoU matrix by pixel counts, repeatedly take and delete the max."""
    matrix = np.zeros((len(predictions), len(references)))
    for i, prediction in enumerate(predictions):
        for j, reference in enumerate(references):
            union = np.logical_or(prediction, reference).sum()
            matrix[i, j] = np.logical_and(prediction, reference).sum() / union if union else 0.0
    pairs = []
    while matrix.size > 0 and matrix.max() > 0:
        i, j = np.unravel_index(np.argmax(matrix), matrix.shape)
        pairs.append(matrix[i, j])
        matrix = np.delete(np.delete(matrix, i, axis=0), j, axis=1)
    return float(np.mean(pairs)) if pairs else 0.0


def test_greedy_pairing_is_greedy_not_optimal():
    # greedy takes 0.9 first and is left with 0.1; an optimal assignment would take 0.8 + 0.85
    assert greedy_matched_miou(np.array([[0.9, 0.8], [0.85, 0.1]])) == pytest.approx(0.5, abs=TOLERANCE)
    assert greedy_matched_miou(np.zeros((2, 3))) == 0.0
    assert greedy_matched_miou(np.zeros((0, 3))) == 0.0


def random_gcg_images(rng: np.random.Generator, count: int, height: int = 32, width: int = 40):
    images = []
    for index in range(count):
        references = [blob_mask(rng, height, width, 2) for _ in range(int(rng.integers(1, 5)))]
        predictions = [perturb_mask(rng, m) for m in references if rng.random() < 0.8]
        predictions += [blob_mask(rng, height, width, 1) for _ in range(int(rng.integers(0, 2)))]
        if index == 2:
            predictions = []  # an image whose generation grounded nothing
        images.append({"image_id": f"img_{index}", "references": references, "predictions": predictions})
    return images


def test_gcg_miou_and_ap50_follow_the_protocol(tmp_path):
    rng = np.random.default_rng(40)
    images = random_gcg_images(rng, 10)
    accumulator = GCGAccumulator()
    for image in images:
        accumulator.add(image["image_id"], "a caption", ["a reference"], image["predictions"], image["references"])
    results = accumulator.compute(caption_metric_names=())
    with_masks = [image for image in images if image["predictions"]]
    assert results["num_images"] == 10 and results["num_images_with_masks"] == len(with_masks) == 9
    expected_miou = np.mean([hand_greedy_miou(i["predictions"], i["references"]) for i in with_masks])
    assert results["mIoU"] == pytest.approx(expected_miou, abs=TOLERANCE)

    # AP50: one category, every mask scored 1.0, only images that have predicted masks
    gt = {"images": [], "categories": [{"id": 1, "name": "object"}], "annotations": []}
    detections = []
    for number, image in enumerate(images, start=1):
        gt["images"].append({"id": number, "height": 32, "width": 40})
        for mask in image["references"]:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": number, "category_id": 1,
                                      "segmentation": encode_mask_rle(mask), "area": int(mask.sum()), "iscrowd": 0,
                                      "bbox": [0, 0, 1, 1]})
        for mask in image["predictions"]:
            detections.append(
                {"image_id": number, "category_id": 1, "segmentation": encode_mask_rle(mask), "score": 1.0}
            )
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(detections), "segm")
        evaluator.params.imgIds = sorted({d["image_id"] for d in detections})
        evaluator.params.catIds = [1]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert results["AP50"] == pytest.approx(evaluator.stats[1], abs=1e-12)
    assert 0.2 < results["AP50"] < 1.0

    counted = GCGAccumulator(include_images_without_masks=True)
    for image in images:
        counted.add(image["image_id"], "c", ["r"], image["predictions"], image["references"])
    assert counted.compute(())["mIoU"] == pytest.approx(expected_miou * 9 / 10, abs=TOLERANCE)


CAPTIONS = {
    101: ("A man in a red shirt rides a brown horse on a beach.",
          ["A man in a red shirt is riding a horse along the beach.", "A person riding a horse near the sea."]),
    102: ("Two dogs play with a ball on the grass.", ["Two dogs are playing with a ball in a park."]),
    103: ("A plate with a sandwich and fries.", ["A sandwich and french fries on a white plate."]),
    104: ("", ["A red bus is parked on the street."]),
    105: ("A cat sleeps on a sofa next to a pillow.", ["A cat sleeping on a couch.", "A grey cat on a sofa."]),
}


class _Skipped:
    """Stands in for a pycocoevalcap scorer that a run leaves out (SPICE needs downloads; METEOR is slow)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def method(self) -> str:
        return self.name

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)


def cocoevalcap_reference(tmp_path, monkeypatch, with_meteor: bool) -> dict:
    """The reference route: a COCO captions JSON, COCO.loadRes, COCOEvalCap.evaluate()."""
    pycocoevalcap_eval = pytest.importorskip("pycocoevalcap.eval")
    monkeypatch.setattr(pycocoevalcap_eval, "Spice", lambda: _Skipped("SPICE"))
    if not with_meteor:
        monkeypatch.setattr(pycocoevalcap_eval, "Meteor", lambda: _Skipped("METEOR"))
    gt = {"info": {}, "licenses": [], "type": "captions", "images": [{"id": k} for k in CAPTIONS], "annotations": []}
    for image_id, (_, references) in CAPTIONS.items():
        for reference in references:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "caption": reference})
    (tmp_path / "captions.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "captions.json"))
        coco_results = coco.loadRes([{"image_id": k, "caption": v[0]} for k, v in CAPTIONS.items()])
        reference_eval = pycocoevalcap_eval.COCOEvalCap(coco, coco_results)
        reference_eval.evaluate()
    return reference_eval.eval


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs java")


@needs_java
def test_cider_equals_cocoevalcap(tmp_path, monkeypatch):
    expected = cocoevalcap_reference(tmp_path, monkeypatch, with_meteor=False)
    predictions, references = {k: v[0] for k, v in CAPTIONS.items()}, {k: v[1] for k, v in CAPTIONS.items()}
    results = caption_metrics(predictions, references, ("CIDEr",))
    assert results["CIDEr"] == pytest.approx(expected["CIDEr"], abs=TOLERANCE)
    assert results["CIDEr"] > 0.1


@needs_java
@pytest.mark.slow  # METEOR's Java start-up loads paraphrase tables: ~20 s per run on 2 cores
def test_meteor_and_cider_equal_cocoevalcap(tmp_path, monkeypatch):
    expected = cocoevalcap_reference(tmp_path, monkeypatch, with_meteor=True)
    results = caption_metrics({k: v[0] for k, v in CAPTIONS.items()}, {k: v[1] for k, v in CAPTIONS.items()})
    assert results["METEOR"] == pytest.approx(expected["METEOR"], abs=TOLERANCE)
    assert results["CIDEr"] == pytest.approx(expected["CIDEr"], abs=TOLERANCE)
    assert 0.1 < results["METEOR"] < 1.0


def test_bad_gcg_inputs_raise_clear_errors():
    mask = np.ones((4, 4), bool)
    accumulator = GCGAccumulator()
    with pytest.raises(ValueError, match="different sizes"):
        accumulator.add("a", "c", ["r"], [np.ones((4, 5), bool)], [mask])
    with pytest.raises(ValueError, match="at least one reference caption"):
        accumulator.add("a", "c", [], [mask], [mask])
    accumulator.add("a", "c", "r", [mask], [mask])
    with pytest.raises(ValueError, match="'a' was already added"):
        accumulator.add("a", "c", ["r"], [mask], [mask])
    with pytest.raises(ValueError, match=r"no prediction for \[2\]"):
        caption_metrics({1: "x"}, {1: ["x"], 2: ["y"]})
    with pytest.raises(ValueError, match="unsupported caption metrics"):
        caption_metrics({1: "x"}, {1: ["x"]}, metrics=("SPICE",))
