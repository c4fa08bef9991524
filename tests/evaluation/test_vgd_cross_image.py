"""`xsam eval --task vgd` on the synthetic world's cross-image VGD file: every prompt is scored, each prompt reaches
the model drawn on its own (other) image as `region_pixel_values`, and the metric is hand-checkable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xsam_hf.evaluation.rle import decode_rle
from xsam_hf.evaluation.runner import EvalSettings, build_parser, run_evaluation
from xsam_hf.evaluation.tasks import is_cross_image_vgd, make_task, parse_data_arguments
from xsam_hf.modeling.configuration_xsam import XSamConfig
from xsam_hf.modeling.modeling_xsam import XSamForSegmentation
from xsam_hf.processing import XSamProcessor, load_image
from xsam_hf.synthetic.train_default import EVAL_TASKS
from xsam_hf.synthetic.writer import write_world

PROMPT_TYPES = ("point", "scribble", "box", "mask")
CROSS = "vgd/img_vgdseg_cross_val.json"
LIMIT = 2


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cross_world")
    write_world(root, seed=0, num_train=0, num_val=4)
    return root


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return XSamForSegmentation(XSamConfig.from_preset("tiny", stage="s3")).eval(), XSamProcessor.from_preset("tiny")


def data_items(world: Path) -> list[str]:
    return [str(world / CROSS), str(world / "images/val"),
            f"categories={world / 'panoptic/annotations/instances_val.json'}"]


def test_the_layout_is_detected_from_the_file(world, tmp_path):
    assert is_cross_image_vgd(world / CROSS)
    assert not is_cross_image_vgd(world / "vgd/img_vgdseg_coco_val.json")
    assert not is_cross_image_vgd(tmp_path / "to_be_generated.json")
    assert "cross-image VGD" in build_parser().format_help()


def test_every_prompt_is_scored_with_its_own_image_as_the_region_source(world, tiny, tmp_path):
    model, processor = tiny
    entries = json.loads((world / CROSS).read_text())[:LIMIT]
    assert all(p["image_id"] != e["image_id"] for e in entries for p in e["prompts"])
    files = {e["image_id"]: e["image_file"] for e in entries} | {p["image_id"]: p["image_file"]
                                                                for e in entries for p in e["prompts"]}
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        settings = EvalSettings(task="vgd", data=parse_data_arguments("vgd", data_items(world)),
                                output_dir=tmp_path / "out", batch_size=1, limit=LIMIT, progress=False)
        document = run_evaluation(model, processor, settings, model_source="tiny-random")
    finally:
        handle.remove()

    # every stored prompt, of every type (the world stores all four), was scored once
    meta = document["meta"]
    assert meta["num_evaluated_images"] == LIMIT and meta["skipped"]["total"] == 0
    assert meta["num_samples"] == len(calls) == len(PROMPT_TYPES) * len(entries)
    lines = [json.loads(line) for line in (tmp_path / "out/predictions.jsonl").read_text().splitlines()]
    samples = [(entry, s) for entry, line in zip(entries, lines) for s in line["samples"]]
    assert sum(len(s["prompted_category_ids"]) for _, s in samples) == len(PROMPT_TYPES) * sum(
        len(e["prompts"]) for e in entries)
    for entry, sample in samples:
        assert sample["prompted_category_ids"] == [p["category_id"] for p in entry["prompts"]]
        assert sample["prompt_image_ids"] == [p["image_id"] for p in entry["prompts"]]
        assert len(sample["references"]) == len(entry["annotations"])

    # the model got each prompt's own image (processed as the SAM canvas) as the region source, not the target
    def canvas(image_id):
        image = load_image(world / "images/val" / files[image_id])
        return processor.seg_image_processor(images=[image], return_tensors="pt")["pixel_values"][0]

    for kwargs, (entry, sample) in zip(calls, samples):
        (sources,) = kwargs["region_image_indices"]
        assert (sources >= 1).all()  # batch of one: index 0 would be the target image itself
        region_pixels = kwargs["region_pixel_values"]
        for source, image_id in zip(sources.tolist(), sample["prompt_image_ids"]):
            assert torch.equal(region_pixels[source - 1], canvas(image_id))
            assert not torch.equal(region_pixels[source - 1], kwargs["extra_pixel_values"][0])
        assert torch.equal(kwargs["extra_pixel_values"][0], canvas(entry["image_id"]))

    entry = document["results"]["img_vgdseg_cross_val"]
    assert entry["_task"] == "vgd" and set(PROMPT_TYPES) <= set(entry)
    assert all("AP50" in entry[t] and "AP" in entry[t] for t in PROMPT_TYPES)
    assert "cross-image" in meta["protocol"]


def fold(world: Path, predict) -> dict:
    adapter = make_task("vgd", parse_data_arguments("vgd", data_items(world)))
    metrics = adapter.new_metrics()
    for index, example in enumerate(adapter.load()):
        for sample in adapter.samples(example):
            metrics.add(index, adapter.record(sample, predict(sample)))
    return metrics.compute()


def test_ground_truth_scores_100_and_no_prediction_scores_0(world):
    def perfect(sample):
        prompted = sample.reference["prompted_category_ids"]
        return {"segments_info": [{"label_id": prompted.index(r["category_id"]), "score": 1.0, "rle": r["rle"]}
                                  for r in sample.reference["references"]]}

    def shifted(sample):  # the right masks under the wrong prompts: the labels must matter
        prompted = sample.reference["prompted_category_ids"]
        return {"segments_info": [{"label_id": (prompted.index(r["category_id"]) + 1) % len(prompted),
                                   "score": 1.0, "rle": r["rle"]} for r in sample.reference["references"]]}

    best = fold(world, perfect)
    assert all(best[t]["AP50"] == 1.0 and best[t]["AP"] == 1.0 for t in PROMPT_TYPES)
    assert all(best[t]["num_unprompted_references"] == 0 for t in PROMPT_TYPES)
    empty = fold(world, lambda sample: {"segments_info": []})
    assert all(empty[t]["AP50"] == 0.0 for t in PROMPT_TYPES)
    if any(len(e["prompts"]) > 1 for e in json.loads((world / CROSS).read_text())):
        assert all(fold(world, shifted)[t]["AP50"] < 1.0 for t in PROMPT_TYPES)


def test_train_default_scores_cross_image_vgd(world):
    eval_task, data, metric, target = EVAL_TASKS["vgd_cross"]
    assert (eval_task, metric, target) == ("vgd", "AP50", 60.0)
    items = [f"{k}={world / v}" if sep else str(world / item)
             for item in data for k, sep, v in [item.partition("=")]]
    source = make_task(eval_task, parse_data_arguments(eval_task, items)).load()
    assert source.name == "img_vgdseg_cross_val" and len(source) == len(json.loads((world / CROSS).read_text()))
    example = source[0]
    assert [p["category_id"] for p in example.meta["prompts"]] == example.class_ids
    assert all(decode_rle(p["visual_prompts"]["mask"]).any() for p in example.meta["prompts"])
