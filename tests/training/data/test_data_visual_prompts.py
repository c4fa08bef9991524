import json

import numpy as np
import pytest
from scipy import ndimage
from skimage import data as skimage_data
from xsam_data_fixtures import assert_picklable, box_mask, rect_polygon, rle_of, write_json

from xsam_hf.training.data import SkipCounter, generate_coco_vgd, load_coco_interactive, load_coco_vgd
from xsam_hf.training.data.masks import decode_rle
from xsam_hf.training.data.visual_prompt_generation import (POINT_RADIUS, connected_components, disc,
                                                            generate_visual_prompts)


@pytest.fixture(scope="module")
def horse() -> np.ndarray:
    return ~skimage_data.horse()  # the silhouette is False on a True background


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_generated_prompts_follow_the_rules_on_a_real_silhouette(horse):
    prompts = generate_visual_prompts(horse, np.random.default_rng(3))
    ys, xs = np.nonzero(horse)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    cy, cx = ndimage.center_of_mass(horse)

    (px, py), = prompts["point"]["points"]
    assert horse[int(py), int(px)]  # the click is inside the object
    assert np.hypot(py - cy, px - cx) <= 0.5 * min(y1 - y0, x1 - x0) + 1
    expected_disc = np.zeros_like(horse)
    expected_disc[int(py) - POINT_RADIUS:int(py) + POINT_RADIUS + 1,
                  int(px) - POINT_RADIUS:int(px) + POINT_RADIUS + 1] = disc(POINT_RADIUS)
    assert np.array_equal(prompts["point"]["mask"], expected_disc)

    box = prompts["box"]["mask"]
    bx0, by0, bx1, by1 = prompts["box"]["box"]
    assert box.sum() == (bx1 - bx0) * (by1 - by0) and box[int(by0):int(by1), int(bx0):int(bx1)].all()
    assert _iou(box, box_mask(*horse.shape, y0, x0, y1, x1)) > (0.9 / 1.1) ** 2 - 0.02

    scribble = prompts["scribble"]["mask"]
    margin = 20 + 5 + 2  # sine amplitude + dilation + rounding
    assert scribble.sum() > 0
    assert not scribble[:max(0, y0 - margin)].any() and not scribble[y1 + margin:].any()
    assert (scribble & horse).sum() > 0.3 * scribble.sum()

    assert _iou(prompts["mask"]["mask"], horse) > 0.85


def test_generation_is_reproducible_from_the_seed(horse):
    first = generate_visual_prompts(horse, np.random.default_rng(11))
    again = generate_visual_prompts(horse, np.random.default_rng(11))
    other = generate_visual_prompts(horse, np.random.default_rng(12))
    for prompt_type in first:
        assert np.array_equal(first[prompt_type]["mask"], again[prompt_type]["mask"])
    assert not np.array_equal(first["scribble"]["mask"], other["scribble"]["mask"])


def test_each_component_above_five_pixels_gets_its_own_prompt():
    mask = box_mask(60, 60, 5, 5, 25, 25) | box_mask(60, 60, 35, 35, 55, 55) | box_mask(60, 60, 0, 58, 2, 60)
    assert len(connected_components(mask)) == 2  # the 2x2 blob (area 4) is ignored
    prompts = generate_visual_prompts(mask, np.random.default_rng(0))
    assert len(prompts["point"]["points"]) == 2
    assert prompts["box"]["box"] is None  # no single raw box for a two-part instance
    labels, _ = ndimage.label(prompts["box"]["mask"])
    assert labels.max() == 2
    empty = generate_visual_prompts(np.zeros((10, 10), bool), np.random.default_rng(0))
    assert all(not p["mask"].any() for p in empty.values()) and empty["point"]["points"] is None


H, W = 40, 50


def test_coco_interactive_dilates_points_and_scribbles_and_keeps_raw_clicks(tmp_path):
    point = np.zeros((H, W), bool)
    point[20, 25] = True
    scribble = np.zeros((H, W), bool)
    scribble[18, 10:30] = True
    box = box_mask(H, W, 10, 8, 30, 40)
    obj = box_mask(H, W, 12, 10, 28, 38)
    write_json(tmp_path / "instances_val2017.json", {"images": [], "annotations": [],
                                                     "categories": [{"id": 5, "name": "air-plane"}]})
    path = write_json(tmp_path / "coco_interactive_val_psalm.json", [{
        "image": "000000000001.jpg",
        "image_info": {"file_name": "000000000001.jpg", "height": H, "width": W, "id": 1},
        "anns": [{"id": 77, "category_id": 5, "bbox": [10, 12, 28, 16], "iscrowd": 0,
                  "segmentation": [rect_polygon(12, 10, 28, 38)],
                  "point_visual_prompt_mask": rle_of(point), "scribble_visual_prompt_mask": rle_of(scribble),
                  "box_visual_prompt_mask": rle_of(box), "mask_visual_prompt_mask": rle_of(obj)},
                 {"id": 78, "category_id": 999, "segmentation": rle_of(obj)}],
    }])
    counter = SkipCounter()
    source = load_coco_interactive(path, tmp_path / "val2017", categories=tmp_path / "instances_val2017.json",
                                   counter=counter)
    assert_picklable(source)
    example = source[0]
    assert example.task == "intseg" and example.class_names == ["air plane"] and example.class_ids == [5]
    assert counter.count(reason="bad_annotation") == 1  # unknown category 999
    (loaded,) = example.objects
    prompts = {p.type: p for p in loaded.visual_prompts}
    assert set(prompts) == {"point", "scribble", "box", "mask"}
    assert np.array_equal(decode_rle(prompts["point"].mask), ndimage.binary_dilation(point, disc(10)))
    assert prompts["point"].points == [[25.0, 20.0]]
    assert np.array_equal(decode_rle(prompts["scribble"].mask), ndimage.binary_dilation(scribble, disc(5)))
    assert prompts["box"].box == [8.0, 10.0, 40.0, 30.0]
    assert np.array_equal(decode_rle(prompts["box"].mask), box)
    assert np.array_equal(decode_rle(prompts["mask"].mask), obj)
    assert np.array_equal(decode_rle(loaded.mask), obj)

    raw = load_coco_interactive(path, tmp_path, dilate=False)[0].objects[0]
    assert np.array_equal(decode_rle(raw.prompt("point").mask), point)
    assert raw.object_id == "77"


def _write_instances(tmp_path):
    return write_json(tmp_path / "instances_train2017.json", {
        "images": [{"id": 1, "file_name": "1.jpg", "height": H, "width": W},
                   {"id": 2, "file_name": "2.jpg", "height": H, "width": W},
                   {"id": 3, "file_name": "3.jpg", "height": H, "width": W}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [rect_polygon(5, 5, 30, 20)], "iscrowd": 0,
             "bbox": [5, 5, 15, 25]},
            {"id": 11, "image_id": 1, "category_id": 2, "segmentation": rle_of(box_mask(H, W, 10, 25, 35, 45)),
             "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 2, "segmentation": rle_of(box_mask(H, W, 0, 0, 2, 2)),
             "iscrowd": 0},
            {"id": 13, "image_id": 3, "category_id": 1, "segmentation": rle_of(box_mask(H, W, 0, 0, 9, 9)),
             "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cat"}],
    })


def test_coco_vgd_is_generated_from_instances_when_missing_and_reproducible(tmp_path):
    instances = _write_instances(tmp_path)
    vgd_json = tmp_path / "annotations" / "img_vgdseg_coco_train.json"
    source = load_coco_vgd(vgd_json, tmp_path / "train2017", generate_from=instances, seed=5)
    assert vgd_json.exists() and not vgd_json.with_name(vgd_json.name + ".partial").exists()
    examples = {e.meta["image_id"]: e for e in source}
    assert_picklable(source)
    assert set(examples) == {1, 2}  # image 3 has only a crowd annotation
    first = examples[1]
    assert first.task == "vgdseg" and first.class_names == ["person", "dog", "cat"]
    assert [(o.object_id, first.class_names[o.class_index]) for o in first.objects] == [("10", "person"),
                                                                                         ("11", "dog")]
    person = first.objects[0]
    assert [p.type for p in person.visual_prompts] == ["point", "scribble", "box", "mask"]
    (px, py), = person.prompt("point").points
    assert decode_rle(person.mask)[int(py), int(px)]
    assert person.prompt("box").box is not None
    assert examples[2].objects[0].visual_prompts == []  # a 4-pixel instance has no component above 5 pixels

    again = tmp_path / "again.json"
    generate_coco_vgd(instances, again, seed=5)
    assert json.loads(again.read_text()) == json.loads(vgd_json.read_text())
    generate_coco_vgd(instances, tmp_path / "other.json", seed=6)
    assert json.loads((tmp_path / "other.json").read_text()) != json.loads(vgd_json.read_text())


def test_existing_coco_vgd_file_is_read_as_written(tmp_path):
    obj = box_mask(H, W, 4, 4, 20, 20)
    point = ndimage.binary_dilation(np.pad(np.ones((1, 1), bool), ((10, H - 11), (10, W - 11))), disc(10))
    path = write_json(tmp_path / "vgdseg_val.json", [{
        "image_file": "val2017/9.jpg", "image_id": 9, "image_size": [H, W],
        "image_info": {"id": 9, "file_name": "9.jpg", "height": H, "width": W},
        "annotations": [{"id": 90, "image_id": 9, "category_id": 3, "segmentation": rle_of(obj), "iscrowd": 0,
                         "bbox": [4, 4, 16, 16], "visual_prompts": {
                             "point_visual_prompt": rle_of(point), "scribble_visual_prompt": rle_of(np.zeros((H, W))),
                             "box_visual_prompt": rle_of(obj), "mask_visual_prompt": rle_of(obj)}}],
    }])
    example = load_coco_vgd(path, tmp_path, categories=[{"id": 3, "name": "cat"}, {"id": 1, "name": "person"}])[0]
    assert example.image_path == str(tmp_path / "val2017/9.jpg") and example.class_names == ["person", "cat"]
    (loaded,) = example.objects
    assert loaded.class_index == 1 and loaded.bbox == [4.0, 4.0, 16.0, 16.0]
    assert [p.type for p in loaded.visual_prompts] == ["point", "box", "mask"]  # the empty scribble is absent
    assert np.array_equal(decode_rle(loaded.prompt("point").mask), point)
    assert loaded.prompt("box").box == [4.0, 4.0, 20.0, 20.0]
    with pytest.raises(FileNotFoundError):
        load_coco_vgd(tmp_path / "missing.json", tmp_path)
