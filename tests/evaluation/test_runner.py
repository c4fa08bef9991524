"""`xsam eval`: the runner and its per-task adapters, on tiny files in the official formats.

The model is the seeded random tiny preset, so its scores mean nothing: the tests check structure, determinism,
resume, bad-record handling, that the runner's numbers equal the accumulators fed directly with the stored
predictions, and (without the model) that ground truth given as the prediction scores perfectly.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training" / "data"))
from xsam_data_fixtures import (box_mask, rect_polygon, rle_of, write_image, write_json,  # noqa: E402
                                write_panoptic_png, write_refcoco_files)

from xsam_hf.default_model import LoadedModel, random_tiny_model  # noqa: E402
from xsam_hf.evaluation import (  # noqa: E402
    ConversationAccuracy,
    InteractiveIoUAccumulator,
    IoUAccumulator,
    PanopticQualityAccumulator,
    VGDMaskAPAccumulator,
    clean_gcg_caption,
)
from xsam_hf.evaluation import runner  # noqa: E402
from xsam_hf.evaluation.rle import decode_rle  # noqa: E402
from xsam_hf.evaluation.runner import (  # noqa: E402
    EvalSettings,
    ResumeMismatchError,
    main,
    run_evaluation,
    table2_markdown,
)
from xsam_hf.evaluation.tasks import EvalOptions, make_task, parse_data_arguments  # noqa: E402
from xsam_hf.training.data.coco_panoptic import read_panoptic_png  # noqa: E402

H, W = 24, 32
PANOPTIC_CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 184, "name": "tree-merged", "isthing": 0},
    {"id": 199, "name": "wall-other-merged", "isthing": 0},
]


class Interrupted(Exception):
    """Stands for a crash or Ctrl-C in the middle of a run."""


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return random_tiny_model()


@pytest.fixture
def count_forward(tiny, monkeypatch):
    """Count `model(...)` calls; `count_forward(fail_at=k)` raises Interrupted on call k (0-based) instead."""
    original = tiny.model.forward
    calls: list[int] = []

    def install(fail_at: int | None = None) -> list[int]:
        calls.clear()

        def forward(*args, **kwargs):
            if fail_at is not None and len(calls) == fail_at:
                raise Interrupted
            calls.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(tiny.model, "forward", forward)
        return calls

    return install


def evaluate(tiny, task, data_items, output, **settings):
    settings.setdefault("progress", False)
    data = parse_data_arguments(task, [str(item) for item in data_items])
    return run_evaluation(tiny.model, tiny.processor, EvalSettings(task=task, data=data, output_dir=output, **settings),
                          model_source=tiny.source, random_weights=tiny.random_weights)


def read_lines(output: Path) -> dict[int, dict]:
    lines = [json.loads(text) for text in (output / "predictions.jsonl").read_text().splitlines()]
    return {line["index"]: line for line in lines}


def same_numbers(a, b) -> bool:
    """Equality of nested result dicts where NaN equals NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_numbers(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_numbers(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


# ------------------------------------------------------------------------------------------------------------------
# Fixtures in the official formats


def panoptic_ids(shift: int) -> np.ndarray:
    ids = np.zeros((H, W), dtype=np.int64)
    ids[0:8, :] = 1000            # tree (stuff)
    ids[10:20, 2 + shift:10 + shift] = 2001   # person
    ids[12:22, 14:26] = 3001      # car
    ids[20:24, 0:2] = 4001        # wall (stuff); the rest is void
    return ids


def write_panoptic_set(root: Path) -> list[str]:
    """COCO panoptic val layout: five annotated images, of which #1 has a corrupt JPEG and #4 a corrupt PNG."""
    images, annotations = [], []
    for number in range(5):
        name = f"{number:012d}"
        images.append({"id": number, "file_name": f"{name}.jpg", "height": H, "width": W})
        segments = [{"id": 1000, "category_id": 184, "iscrowd": 0}, {"id": 2001, "category_id": 1, "iscrowd": 0},
                    {"id": 3001, "category_id": 3, "iscrowd": int(number == 2)},
                    {"id": 4001, "category_id": 199, "iscrowd": 0}]
        annotations.append({"image_id": number, "file_name": f"{name}.png", "segments_info": segments})
        write_panoptic_png(root / "panoptic_val2017" / f"{name}.png", panoptic_ids(number))
        write_image(root / "val2017" / f"{name}.jpg", H, W, seed=number)
    (root / "val2017" / "000000000001.jpg").write_bytes(b"not a jpeg")
    (root / "panoptic_val2017" / "000000000004.png").write_bytes(b"not a png")
    write_json(root / "annotations" / "panoptic_val2017.json",
               {"images": images, "annotations": annotations, "categories": PANOPTIC_CATEGORIES})
    return [str(root / "annotations" / "panoptic_val2017.json"), str(root / "panoptic_val2017"),
            str(root / "val2017")]


def write_refcoco(root: Path) -> list[str]:
    folder = root / "refcoco"
    for image_id in (100, 200):
        write_image(root / "train2014" / f"COCO_train2014_{image_id:012d}.jpg", H, W, seed=image_id)

    def sentences(*texts):
        return [{"tokens": t.split(), "raw": t, "sent_id": i, "sent": t} for i, t in enumerate(texts)]

    refs = [
        {"ref_id": 0, "ann_id": 11, "image_id": 100, "split": "val", "category_id": 1,
         "sentences": sentences("man on the left", "guy in red")},
        {"ref_id": 1, "ann_id": 12, "image_id": 100, "split": "val", "category_id": 18,
         "sentences": sentences("brown dog")},
        {"ref_id": 2, "ann_id": 21, "image_id": 200, "split": "val", "category_id": 1,
         "sentences": sentences("person")},
        {"ref_id": 3, "ann_id": 11, "image_id": 100, "split": "train", "category_id": 1,
         "sentences": sentences("a training sentence")},
    ]
    write_refcoco_files(folder, refs, H, W)
    return [str(folder), str(root / "train2014")]


def write_interactive(root: Path) -> list[str]:
    point = np.zeros((H, W), bool)
    point[14, 12] = True
    scribble = np.zeros((H, W), bool)
    scribble[14, 6:18] = True
    write_image(root / "val2017" / "000000000007.jpg", H, W, seed=7)
    annotations = []
    for ann_id, (y0, x0, y1, x1) in ((70, (8, 4, 20, 20)), (71, (2, 22, 10, 30))):
        obj = box_mask(H, W, y0, x0, y1, x1)
        annotations.append({
            "id": ann_id, "category_id": 5, "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
            "segmentation": rle_of(obj),
            "point_visual_prompt_mask": rle_of(point if ann_id == 70 else box_mask(H, W, 5, 25, 6, 26)),
            "scribble_visual_prompt_mask": rle_of(scribble if ann_id == 70 else box_mask(H, W, 5, 23, 6, 29)),
            "box_visual_prompt_mask": rle_of(box_mask(H, W, max(y0 - 1, 0), max(x0 - 1, 0), y1, x1)),
            "mask_visual_prompt_mask": rle_of(obj),
        })
    # a broken record: its prompt masks were stored at another size than the image, which the processor rejects
    write_image(root / "val2017" / "000000000008.jpg", H, W, seed=8)
    wrong_size = rle_of(box_mask(10, 10, 2, 2, 6, 6))
    broken = {"id": 80, "category_id": 5, "bbox": [0, 0, 4, 4], "iscrowd": 0,
              "segmentation": rle_of(box_mask(H, W, 0, 0, 4, 4)),
              **{f"{t}_visual_prompt_mask": wrong_size for t in ("point", "scribble", "box", "mask")}}
    path = write_json(root / "coco_interactive_val_psalm.json", [
        {"image": "000000000007.jpg", "anns": annotations,
         "image_info": {"file_name": "000000000007.jpg", "height": H, "width": W, "id": 7}},
        {"image": "000000000008.jpg", "anns": [broken],
         "image_info": {"file_name": "000000000008.jpg", "height": H, "width": W, "id": 8}},
    ])
    write_json(root / "instances_val2017.json", {"images": [], "annotations": [],
                                                 "categories": [{"id": 5, "name": "airplane"}]})
    return [str(path), str(root / "val2017"), f"categories={root / 'instances_val2017.json'}"]


def write_vgd(root: Path) -> list[str]:
    def annotation(ann_id, category_id, box, prompt_types):
        obj = box_mask(H, W, *box)
        y0, x0, y1, x1 = box
        prompts = {"point_visual_prompt": rle_of(box_mask(H, W, y0 + 1, x0 + 1, y0 + 3, x0 + 3)),
                   "scribble_visual_prompt": rle_of(box_mask(H, W, y0 + 1, x0, y0 + 2, x1)),
                   "box_visual_prompt": rle_of(obj), "mask_visual_prompt": rle_of(obj)}
        return {"id": ann_id, "image_id": 9, "category_id": category_id, "segmentation": rle_of(obj), "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "visual_prompts": {k: v for k, v in prompts.items() if k.split("_")[0] in prompt_types}}

    write_image(root / "val2017" / "000000000009.jpg", H, W, seed=9)
    path = write_json(root / "img_vgdseg_coco_val.json", [{
        "image_file": "000000000009.jpg", "image_id": 9, "image_size": [H, W],
        "image_info": {"id": 9, "file_name": "000000000009.jpg", "height": H, "width": W},
        "annotations": [
            annotation(90, 1, (2, 2, 10, 10), ("point", "box", "mask")),   # first person: no scribble prompt
            annotation(91, 1, (12, 2, 22, 12), ("point", "scribble", "box", "mask")),
            annotation(92, 18, (4, 16, 20, 30), ("point", "scribble", "box", "mask")),
        ],
    }])
    write_json(root / "instances_val2017.json", {"images": [], "annotations": [], "categories": [
        {"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 25, "name": "giraffe"}]})
    return [str(path), str(root / "val2017"), f"categories={root / 'instances_val2017.json'}"]


MAN = box_mask(H, W, 2, 2, 20, 12)
HORSE = box_mask(H, W, 6, 14, 22, 30)


def write_gcg(root: Path) -> list[str]:
    for image_id in ("sa_1", "sa_2"):
        write_image(root / "val_test" / f"{image_id}.jpg", H, W, seed=len(image_id))
    mask_json = write_json(root / "val_gcg_coco_mask_gt.json", {
        "images": [{"id": "sa_1", "height": H, "width": W}, {"id": "sa_2", "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": "sa_1", "category_id": 1, "segmentation": rle_of(MAN)},
                        {"id": 2, "image_id": "sa_1", "category_id": 1, "segmentation": rle_of(HORSE)},
                        {"id": 3, "image_id": "sa_2", "category_id": 1, "segmentation": rle_of(HORSE)}],
        "categories": [{"id": 1, "name": "object"}],
    })
    caption_json = write_json(root / "val_gcg_coco_caption_gt.json", {
        "images": [{"id": "sa_1"}, {"id": "sa_2"}],
        "annotations": [{"image_id": "sa_1", "caption": "A man rides a horse on the beach."},
                        {"image_id": "sa_2", "caption": "A horse stands in a field."}]})
    return [str(mask_json), str(caption_json), str(root / "val_test")]


def write_llava(root: Path) -> list[str]:
    write_image(root / "images" / "bus.jpg", H, W, seed=1)
    write_image(root / "images" / "cat.jpg", H, W, seed=2)
    path = write_json(root / "llava_eval.json", [
        {"id": "bus", "image": "bus.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the bus?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "How many wheels can you see?"}, {"from": "gpt", "value": "four"}]},
        {"id": "cat", "image": "cat.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat animal is this?\nA. dog\nB. cat\nAnswer with the letter."},
            {"from": "gpt", "value": "B"}]},
    ])
    return [str(path), str(root / "images")]


def write_reasonseg(root: Path) -> list[str]:
    split = root / "val"
    write_image(split / "kitchen.jpg", H, W, seed=3)
    write_json(split / "kitchen.json", {
        "text": ["something to cut bread with", "the knife"], "is_sentence": True,
        "shapes": [{"label": "target", "points": [[2, 2], [20, 2], [20, 16], [2, 16]]},
                   {"label": "ignore", "points": [[4, 4], [8, 4], [8, 8], [4, 8]]}],
    })
    return [str(split)]


# ------------------------------------------------------------------------------------------------------------------
# Runs with the tiny random model


def test_panoptic_run_skips_bad_records_resumes_without_recomputing_and_matches_an_uninterrupted_run(
        tiny, count_forward, tmp_path):
    data = write_panoptic_set(tmp_path / "coco")

    calls = count_forward()
    full = evaluate(tiny, "panoptic", data, tmp_path / "full", batch_size=2)
    assert len(calls) == 2  # images 0, 2 | 3; the corrupt JPEG (1) and PNG (4) never reach the model

    calls = count_forward(fail_at=1)
    with pytest.raises(Interrupted):
        evaluate(tiny, "panoptic", data, tmp_path / "resumed", batch_size=2)
    # the first batch and both skips were saved; image 3 waited for a second batch that never ran
    assert sorted(read_lines(tmp_path / "resumed")) == [0, 1, 2, 4]
    calls = count_forward()
    resumed = evaluate(tiny, "panoptic", data, tmp_path / "resumed", batch_size=2)
    assert len(calls) == 1  # only image 3 was computed again

    # determinism: two independent computations of images 0 and 2, and the same final numbers
    full_lines, resumed_lines = read_lines(tmp_path / "full"), read_lines(tmp_path / "resumed")
    assert full_lines == resumed_lines
    assert same_numbers(full["results"], resumed["results"])
    assert full["meta"] == resumed["meta"]

    (benchmark, entry), = full["results"].items()
    assert benchmark == "panoptic_val2017" and entry["_task"] == "panoptic"
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st", "n", "per_category"} <= set(entry)
    assert entry["num_images"] == 3
    meta = full["meta"]
    assert meta["num_images"] == 5 and meta["num_evaluated_images"] == 3 and meta["num_samples"] == 3
    assert meta["skipped"]["total"] == 2
    assert meta["skipped"]["by_reason"] == {"unbuildable_record": 1, "unreadable_image": 1}
    assert [s["index"] for s in meta["skipped"]["first"]] == [1, 4]
    assert meta["thresholds"]["values"] == {
        "panoptic": {"threshold": 0.0, "mask_threshold": 0.5, "overlap_mask_area_threshold": 0.8}}
    on_disk = json.loads((tmp_path / "full" / "results.json").read_text())
    assert on_disk["model"] == tiny.source and same_numbers(on_disk["results"], full["results"])
    table = (tmp_path / "full" / "results.md").read_text()
    assert "| Model | panoptic_val2017 PQ |" in table and "Skipped images: 2" in table

    # the runner's PQ equals panopticapi-style PQ of the stored predictions fed to the accumulator directly
    direct = PanopticQualityAccumulator(PANOPTIC_CATEGORIES)
    for index, line in sorted(full_lines.items()):
        if "skipped" in line:
            continue
        (sample,) = line["samples"]
        predicted = np.full((H, W), -1, dtype=np.int64)
        for segment in sample["segments"]:
            predicted[decode_rle(segment["rle"])] = segment["id"]
        reference_segments = json.loads((tmp_path / "coco/annotations/panoptic_val2017.json").read_text())[
            "annotations"][index]["segments_info"]
        direct.add(predicted, sample["segments"],
                   read_panoptic_png(tmp_path / "coco/panoptic_val2017" / f"{index:012d}.png"), reference_segments)
    expected = direct.compute()
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "n"):
        assert entry[key] == pytest.approx(expected[key], rel=1e-12, nan_ok=True)


def test_cli_referring_with_limit_then_resume(tiny, count_forward, tmp_path, monkeypatch, capsys):
    data = write_refcoco(tmp_path)
    monkeypatch.setattr(runner, "load_model", lambda *args, **kwargs: tiny)
    arguments = ["--task", "referring", "--data", *data, "split=val", "--output", str(tmp_path / "out"),
                 "--batch-size", "4", "--no-progress", "--model-name", "tiny-random"]

    calls = count_forward()
    assert main([*arguments, "--limit", "1"]) == 0
    assert len(calls) == 1 and sorted(read_lines(tmp_path / "out")) == [0]
    with open(tmp_path / "out" / "predictions.jsonl", "a") as handle:
        handle.write('{"index":1,"record_id":"refcoco_unc_val/200","samples":[{"key"')  # killed mid-write
    assert main(arguments) == 0
    assert len(calls) == 2  # the second run computed image 200 only, once, and dropped the cut line
    assert "| Model | refcoco_unc_val cIoU | refcoco_unc_val gIoU |" in capsys.readouterr().out

    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["model"] == "tiny-random"
    entry = document["results"]["refcoco_unc_val"]
    assert entry["_task"] == "referring" and entry["_split"] == "val" and entry["num_samples"] == 4
    lines = read_lines(tmp_path / "out")
    assert [s["text"] for s in lines[0]["samples"]] == ["man on the left", "guy in red", "brown dog"]

    source = make_task("referring", parse_data_arguments("referring", data)).load()
    direct = IoUAccumulator()
    for index, line in sorted(lines.items()):
        for sample in line["samples"]:
            (obj,) = [o for o in source[index].objects if sample["text"] in o.texts]
            direct.add(decode_rle(sample["rle"]), decode_rle(obj.mask))
    assert entry["cIoU"] == direct.compute()["cIoU"] and entry["gIoU"] == direct.compute()["gIoU"]

    # a rerun with other thresholds would mix two configurations in one file: refused
    assert main([*arguments, "--thresholds", "default"]) == 2
    assert "another run configuration" in capsys.readouterr().err


def test_interactive_reports_each_prompt_type(tiny, count_forward, tmp_path):
    data = write_interactive(tmp_path)
    calls = count_forward()
    document = evaluate(tiny, "interactive", data, tmp_path / "out", batch_size=8)
    assert len(calls) == 1
    entry = document["results"]["coco_interactive_val_psalm"]
    assert set(entry) == {"point", "scribble", "box", "mask", "_task", "_dataset"}
    assert all(entry[t]["num_samples"] == 2 for t in ("point", "scribble", "box", "mask"))
    skipped = document["meta"]["skipped"]
    assert skipped["by_reason"] == {"bad_sample": 1} and skipped["first"][0]["record_id"].endswith("/8")
    assert "mask prompt has shape (10, 10)" in skipped["first"][0]["error"]

    line, _ = read_lines(tmp_path / "out").values()
    assert [s["key"] for s in line["samples"]] == [f"{a}:{t}" for a in (70, 71)
                                                   for t in ("point", "scribble", "box", "mask")]
    direct = InteractiveIoUAccumulator()
    objects = {70: box_mask(H, W, 8, 4, 20, 20), 71: box_mask(H, W, 2, 22, 10, 30)}
    for sample in line["samples"]:
        direct.add(decode_rle(sample["rle"]), objects[int(sample["object_id"])], sample["prompt_type"])
    assert same_numbers(direct.compute(), {k: v for k, v in entry.items() if not k.startswith("_")})
    assert "coco_interactive_val_psalm point/mIoU" in table2_markdown([document])


def test_vgd_prompts_every_present_category_with_its_first_instance(tiny, count_forward, tmp_path):
    data = write_vgd(tmp_path)
    calls = count_forward()
    document = evaluate(tiny, "vgd", data, tmp_path / "out", batch_size=4)
    assert len(calls) == 1
    (line,) = read_lines(tmp_path / "out").values()
    samples = {s["key"]: s for s in line["samples"]}
    assert list(samples) == ["point", "scribble", "box", "mask"]
    assert all(s["prompted_category_ids"] == [1, 18] for s in samples.values())
    assert samples["point"]["prompted_object_ids"] == ["90", "92"]
    assert samples["scribble"]["prompted_object_ids"] == ["91", "92"]  # 90 has no scribble: the next person
    assert all(len(s["references"]) == 3 for s in samples.values())

    entry = document["results"]["img_vgdseg_coco_val"]
    direct = VGDMaskAPAccumulator([1, 18, 25])
    for sample in line["samples"]:
        direct.add(1, sample["prompt_type"], sample["prompted_category_ids"],
                   [r["rle"] for r in sample["references"]], [r["category_id"] for r in sample["references"]],
                   [d["rle"] for d in sample["detections"]], [d["score"] for d in sample["detections"]],
                   [d["label_id"] for d in sample["detections"]])
    for prompt_type, scores in direct.compute().items():
        assert samples[prompt_type]["detections"]  # official threshold 0.0 keeps the top queries
        for key in ("AP", "AP50"):
            assert entry[prompt_type][key] == pytest.approx(scores[key], nan_ok=True)


def test_gcg_generates_cleans_the_caption_and_scores_masks(tiny, tmp_path):
    data = write_gcg(tmp_path)
    document = evaluate(tiny, "gcg", data, tmp_path / "out", batch_size=2, max_new_tokens=6, caption_metrics=())
    entry = document["results"]["val_gcg"]
    assert {"AP50", "mIoU", "num_images", "num_images_with_masks"} <= set(entry) and entry["num_images"] == 2
    assert "METEOR" not in entry and document["meta"]["max_new_tokens"] == 6
    for line in read_lines(tmp_path / "out").values():
        (sample,) = line["samples"]
        assert sample["caption"] == clean_gcg_caption(sample["generated_text"])
        assert sample["reference_caption"] in ("A man rides a horse on the beach.", "A horse stands in a field.")
        assert len(sample["reference_rles"]) in (1, 2)


def test_conversation_accuracy_over_open_and_multiple_choice_turns(tiny, tmp_path):
    data = write_llava(tmp_path)
    document = evaluate(tiny, "conversation", data, tmp_path / "out", batch_size=3, max_new_tokens=4)
    entry = document["results"]["llava_eval"]
    assert entry["num_questions"] == 3 and entry["_task"] == "conversation"
    samples = [s for line in read_lines(tmp_path / "out").values() for s in line["samples"]]
    assert [(s["question"], s["reference"], s["mode"]) for s in samples] == [
        ("What colour is the bus?", "Red.", "exact"), ("How many wheels can you see?", "four", "exact"),
        ("What animal is this?\nA. dog\nB. cat\nAnswer with the letter.", "B", "choice")]
    direct = ConversationAccuracy()
    for sample in samples:
        assert direct.add(sample["prediction"], sample["reference"]) == sample["correct"]
    assert same_numbers(direct.compute(), {k: v for k, v in entry.items() if not k.startswith("_")})


# ------------------------------------------------------------------------------------------------------------------
# The adapters on ground truth: perfect scores (no model)


def perfect_results(task, data_items, predict, **options):
    adapter = make_task(task, parse_data_arguments(task, data_items), EvalOptions(**options))
    source = adapter.load()
    fold = adapter.new_metrics()
    for index, example in enumerate(source):
        for sample in adapter.samples(example):
            fold.add(index, adapter.record(sample, predict(sample, example)))
    return fold.compute()


def test_ground_truth_as_prediction_scores_one_for_panoptic_semantic_and_instance(tmp_path):
    data = write_panoptic_set(tmp_path)
    (tmp_path / "panoptic_val2017" / "000000000004.png").unlink()  # leave the corrupt PNG out of this one
    write_panoptic_png(tmp_path / "panoptic_val2017" / "000000000004.png", panoptic_ids(4))
    class_of = {c["id"]: i for i, c in enumerate(sorted(PANOPTIC_CATEGORIES, key=lambda c: c["id"]))}

    def predict(sample, example):
        ids = read_panoptic_png(sample.reference["panoptic_png"])
        segments = sample.reference["segments_info"]
        semantic = np.zeros((H, W), dtype=np.int64)
        for segment in segments:
            semantic[ids == segment["id"]] = class_of[segment["category_id"]]
        things = [s for s in segments if s["category_id"] in (1, 3) and not s["iscrowd"]]
        return {
            "panoptic": {"segmentation": torch.from_numpy(np.where(ids > 0, ids, -1)),
                         "segments_info": [{"id": s["id"], "label_id": class_of[s["category_id"]], "score": 1.0}
                                           for s in segments]},
            "semantic": torch.from_numpy(semantic),
            "instance": {"segments_info": [{"label_id": class_of[s["category_id"]], "score": 1.0,
                                            "rle": rle_of(ids == s["id"])} for s in things]},
        }

    results = perfect_results("ovseg", data, predict)
    assert results["PQ"] == 1.0 and results["PQ_th"] == 1.0 and results["PQ_st"] == 1.0 and results["n"] == 4
    assert results["mIoU"] == 1.0 and results["pACC"] == 1.0
    assert results["AP"] == 1.0 and results["AP50"] == 1.0
    assert results["num_images"] == 5  # adapters do not open the images: the corrupt JPEG is the runner's concern


def test_ground_truth_as_prediction_scores_one_for_referring_reasoning_and_interactive(tmp_path):
    def predict(sample, example):
        return {"masks": torch.from_numpy(decode_rle(sample.reference["mask"]))[None]}

    referring = perfect_results("referring", write_refcoco(tmp_path / "ref"), predict)
    assert referring == {"cIoU": 1.0, "gIoU": 1.0, "num_samples": 4}
    reasoning = perfect_results("reasoning", write_reasonseg(tmp_path / "reason"), predict)
    assert reasoning["long"] == {"cIoU": 1.0, "gIoU": 1.0, "num_samples": 2}
    assert reasoning["overall"]["cIoU"] == 1.0 and reasoning["short"]["num_samples"] == 0
    interactive = perfect_results("interactive", write_interactive(tmp_path / "int"), predict)
    # three annotations per type: the record whose prompts the processor would reject has a good reference
    assert interactive == {t: {"mIoU": 1.0, "cIoU": 1.0, "num_samples": 3} for t in ("point", "scribble", "box",
                                                                                     "mask")}


def test_reasoning_ignore_region_counts_in_neither_intersection_nor_union(tmp_path):
    data = write_reasonseg(tmp_path)
    adapter = make_task("reasoning", parse_data_arguments("reasoning", data))
    (example,) = adapter.load()
    sample = adapter.samples(example)[0]
    everything = torch.ones((1, H, W), dtype=torch.bool)
    record = adapter.record(sample, {"masks": everything})
    target = np.zeros((H, W), bool)
    target[2:17, 2:21] = True  # the filled polygon, outline included
    ignore = np.zeros((H, W), bool)
    ignore[4:9, 4:9] = True
    assert record["intersection"] == int((target & ~ignore).sum())
    assert record["union"] == H * W - int(ignore.sum())


def test_ground_truth_as_prediction_scores_one_for_vgd_gcg_and_conversation(tmp_path):
    def vgd_predict(sample, example):
        prompted = sample.reference["prompted_category_ids"]
        return {"segments_info": [{"label_id": prompted.index(r["category_id"]), "score": 1.0, "rle": r["rle"]}
                                  for r in sample.reference["references"]]}

    vgd = perfect_results("vgd", write_vgd(tmp_path / "vgd"), vgd_predict)
    assert all(vgd[t]["AP"] == 1.0 and vgd[t]["AP50"] == 1.0 for t in ("point", "scribble", "box", "mask"))

    def gcg_predict(sample, example):
        ids = np.zeros((H, W), dtype=np.int64)
        for k, rle in enumerate(sample.reference["masks"]):
            ids[decode_rle(rle)] = k + 1
        text = f"<p>{sample.reference['caption']}</p> And <SEG>."
        return {"generated_text": text, "result": {"segmentation": torch.from_numpy(ids), "entities": []}}

    gcg = perfect_results("gcg", write_gcg(tmp_path / "gcg"), gcg_predict, caption_metrics=())
    assert gcg["AP50"] == 1.0 and gcg["mIoU"] == 1.0 and gcg["num_images_with_masks"] == 2

    conversation = perfect_results("conversation", write_llava(tmp_path / "chat"),
                                   lambda sample, example: sample.reference["answer"])
    assert conversation["accuracy"] == 1.0 and conversation["multiple_choice_accuracy"] == 1.0


# ------------------------------------------------------------------------------------------------------------------
# Arguments and tables


def test_data_arguments_are_checked_against_the_task(tmp_path):
    parsed = parse_data_arguments("referring", ["refcoco", "images", "split=testA"])
    assert parsed["split"] == "testA" and Path(parsed["refs_dir"]).is_absolute()
    assert parse_data_arguments("gcg", ["image_dir=x", "m.json", "c.json"])["mask_json"].endswith("m.json")
    with pytest.raises(ValueError, match="missing \\['image_dir'\\]"):
        parse_data_arguments("interactive", ["a.json"])
    with pytest.raises(ValueError, match="unknown argument 'spilt'"):
        parse_data_arguments("referring", ["a", "b", "spilt=val"])
    with pytest.raises(ValueError, match="too many paths"):
        parse_data_arguments("reasoning", ["a", "b"])


def test_table2_has_a_row_per_model_and_the_papers_metrics_per_benchmark():
    ours = {"model": "ours", "results": {
        "coco_panoptic": {"PQ": 0.5, "SQ": 0.8, "_task": "panoptic"},
        "refcoco_val": {"cIoU": 0.8, "gIoU": 0.825, "num_samples": 3, "_task": "referring"},
        "reasonseg_val": {"short": {"gIoU": 0.1, "cIoU": 0.2}, "overall": {"gIoU": 0.3, "cIoU": float("nan")},
                          "_task": "reasoning"},
    }}
    theirs = {"model": "theirs", "results": {"refcoco_val": {"cIoU": 0.7, "gIoU": 0.75, "_task": "referring"}}}
    assert table2_markdown([ours, theirs]).splitlines() == [
        "| Model | coco_panoptic PQ | refcoco_val cIoU | refcoco_val gIoU | reasonseg_val overall/gIoU | "
        "reasonseg_val overall/cIoU |",
        "|---|---:|---:|---:|---:|---:|",
        "| ours | 50.0 | 80.0 | 82.5 | 30.0 | - |",
        "| theirs | - | 70.0 | 75.0 | - | - |",
    ]


def test_table_command_combines_runs_of_several_models_and_benchmarks(tmp_path, capsys):
    for name, model, benchmark, task, scores in (
            ("a", "ours", "refcoco_val", "referring", {"cIoU": 0.8, "gIoU": 0.9}),
            ("b", "ours", "coco_panoptic", "panoptic", {"PQ": 0.5}),
            ("c", "theirs", "coco_panoptic", "panoptic", {"PQ": 0.25})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"model": model, "results": {benchmark: {**scores, "_task": task}}, "meta": {}}))
    assert main(["table", str(tmp_path / "a"), str(tmp_path / "b" / "results.json"), str(tmp_path / "c"),
                 "--output", str(tmp_path / "table.md")]) == 0
    expected = [
        "| Model | refcoco_val cIoU | refcoco_val gIoU | coco_panoptic PQ |",
        "|---|---:|---:|---:|",
        "| ours | 80.0 | 90.0 | 50.0 |",
        "| theirs | - | - | 25.0 |",
    ]
    assert capsys.readouterr().out.splitlines() == expected
    assert (tmp_path / "table.md").read_text().splitlines() == expected


def test_a_different_configuration_is_not_resumed_into_the_same_folder(tiny, tmp_path):
    data = write_reasonseg(tmp_path)
    output = tmp_path / "out"
    (output).mkdir()
    (output / "predictions.jsonl").write_text("")
    (output / "eval_config.json").write_text(json.dumps({"task": "reasoning", "thresholds": "default"}))
    with pytest.raises(ResumeMismatchError, match="another run configuration"):
        evaluate(tiny, "reasoning", data, output)


@pytest.mark.slow
def test_semantic_instance_ovseg_reasoning_and_gcg_caption_metrics_run_end_to_end(tiny, tmp_path):
    panoptic = write_panoptic_set(tmp_path / "coco")
    semantic = evaluate(tiny, "semantic", panoptic, tmp_path / "semantic", batch_size=2)
    assert 0.0 <= semantic["results"]["panoptic_val2017"]["mIoU"] <= 1.0
    ovseg = evaluate(tiny, "ovseg", panoptic, tmp_path / "ovseg", batch_size=2)
    assert {"PQ", "mIoU", "AP", "AP50"} <= set(ovseg["results"]["panoptic_val2017"])
    # the same semantic post-processing on the same forward: the same confusion
    assert ovseg["results"]["panoptic_val2017"]["mIoU"] == semantic["results"]["panoptic_val2017"]["mIoU"]
    instances = write_json(tmp_path / "instances_val2017.json", {
        "images": [{"id": 0, "file_name": "000000000000.jpg", "height": H, "width": W}],
        "annotations": [{"id": 5, "image_id": 0, "category_id": 1, "segmentation": [rect_polygon(10, 2, 20, 10)],
                         "bbox": [2, 10, 8, 10], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]})
    instance = evaluate(tiny, "instance", [instances, tmp_path / "coco/val2017",
                                           f"prompt_categories={panoptic[0]}"], tmp_path / "instance")
    assert {"AP", "AP50"} <= set(instance["results"]["instances_val2017"])
    reasoning = evaluate(tiny, "reasoning", write_reasonseg(tmp_path / "lisa"), tmp_path / "reasoning")
    assert reasoning["results"]["reasonseg_val"]["long"]["num_samples"] == 2
    gcg = evaluate(tiny, "gcg", write_gcg(tmp_path / "gcg"), tmp_path / "gcg_out", batch_size=2, max_new_tokens=6)
    assert {"METEOR", "CIDEr"} <= set(gcg["results"]["val_gcg"])
