import numpy as np
from PIL import Image
from xsam_data_fixtures import (assert_picklable, box_mask, rect_polygon, rle_of, uncompressed_rle_of, write_image,
                                write_json, write_panoptic_png)

from xsam_hf.training.data import (SkipCounter, load_ade20k_panoptic, load_coco_instances, load_coco_panoptic,
                                   panoptic_to_semantic, write_semantic_pngs)
from xsam_hf.training.data.masks import decode_rle
from xsam_hf.training.data.semantic import IGNORE_ID, contiguous_category_ids, load_semantic_png

H, W = 24, 32
PANOPTIC_CATEGORIES = [
    {"id": 184, "name": "tree-merged", "isthing": 0},
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 199, "name": "wall-other-merged", "isthing": 0},
    {"id": 3, "name": "car", "isthing": 1},
]


def _write_panoptic(root, *, with_broken_png=False):
    segment_ids = np.zeros((H, W), dtype=np.int64)
    segment_ids[0:10, :] = 1000           # stuff: tree
    segment_ids[12:20, 2:8] = 2001        # person instance 1
    segment_ids[12:20, 10:14] = 2002      # person instance 2
    segment_ids[14:22, 20:30] = 3003      # crowd of cars
    segment_ids[22:24, 0:5] = 4004        # wall
    write_panoptic_png(root / "panoptic_train2017" / "000000000001.png", segment_ids)
    write_image(root / "train2017" / "000000000001.jpg", H, W)
    images = [{"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W}]
    annotations = [{"image_id": 1, "file_name": "000000000001.png", "segments_info": [
        {"id": 1000, "category_id": 184, "iscrowd": 0, "bbox": [0, 0, W, 10]},
        {"id": 2001, "category_id": 1, "iscrowd": 0, "bbox": [2, 12, 6, 8]},
        {"id": 2002, "category_id": 1, "iscrowd": 0},
        {"id": 3003, "category_id": 3, "iscrowd": 1},
        {"id": 4004, "category_id": 199, "iscrowd": 0},
    ]}]
    if with_broken_png:
        images.append({"id": 2, "file_name": "000000000002.jpg", "height": H, "width": W})
        annotations.append({"image_id": 2, "file_name": "000000000002.png", "segments_info": []})
        (root / "panoptic_train2017" / "000000000002.png").write_bytes(b"not a png")
    write_json(root / "annotations" / "panoptic_train2017.json",
               {"images": images, "annotations": annotations, "categories": PANOPTIC_CATEGORIES})
    return segment_ids


def test_coco_panoptic_masks_classes_and_flags_match_the_png(tmp_path):
    segment_ids = _write_panoptic(tmp_path)
    source = load_coco_panoptic(tmp_path / "annotations/panoptic_train2017.json", tmp_path / "panoptic_train2017",
                                tmp_path / "train2017")
    assert len(source) == 1 and source.task == "genseg"
    assert_picklable(source)
    example = source[0]
    assert example.class_names == ["person", "car", "tree", "wall"]  # sorted by id, names cleaned
    assert example.class_ids == [1, 3, 184, 199]
    assert example.image_size == (H, W)
    assert example.image_path == str(tmp_path / "train2017" / "000000000001.jpg")
    assert [o.object_id for o in example.objects] == ["1000", "2001", "2002", "4004"]  # crowd left out
    for obj in example.objects:
        assert np.array_equal(decode_rle(obj.mask), segment_ids == int(obj.object_id))
    assert [example.class_names[o.class_index] for o in example.objects] == ["tree", "person", "person", "wall"]
    assert [o.isthing for o in example.objects] == [False, True, True, False]
    assert example.meta["panoptic_png"].endswith("000000000001.png") and len(example.meta["segments_info"]) == 5

    with_crowd = load_coco_panoptic(tmp_path / "annotations/panoptic_train2017.json",
                                    tmp_path / "panoptic_train2017", tmp_path / "train2017", include_crowd=True)[0]
    crowd = [o for o in with_crowd.objects if o.iscrowd]
    assert len(crowd) == 1 and np.array_equal(decode_rle(crowd[0].mask), segment_ids == 3003)


def test_broken_panoptic_png_is_skipped_and_counted(tmp_path):
    _write_panoptic(tmp_path, with_broken_png=True)
    counter = SkipCounter()
    source = load_coco_panoptic(tmp_path / "annotations/panoptic_train2017.json", tmp_path / "panoptic_train2017",
                                tmp_path / "train2017", counter=counter)
    examples = list(source)
    assert [e.meta["image_id"] for e in examples] == [1]
    assert counter.count(reason="build_failed") == 1
    assert "build_failed=1" in counter.summary_line()


def test_semantic_ground_truth_from_panoptic_uses_contiguous_ids_and_255_void(tmp_path):
    segment_ids = _write_panoptic(tmp_path)
    mapping = contiguous_category_ids(PANOPTIC_CATEGORIES)
    assert mapping == {1: 0, 3: 1, 184: 2, 199: 3}
    written = write_semantic_pngs(tmp_path / "annotations/panoptic_train2017.json", tmp_path / "panoptic_train2017",
                                  tmp_path / "panoptic_semseg_train2017")
    assert written == 1
    semantic = load_semantic_png(tmp_path / "panoptic_semseg_train2017" / "000000000001.png")
    expected = np.full((H, W), IGNORE_ID, dtype=np.uint8)
    expected[segment_ids == 1000] = 2
    expected[(segment_ids == 2001) | (segment_ids == 2002)] = 0
    expected[segment_ids == 3003] = 1  # crowd keeps its class in semantic ground truth
    expected[segment_ids == 4004] = 3
    assert np.array_equal(semantic, expected)
    assert (semantic == IGNORE_ID).sum() == (segment_ids == 0).sum() > 0
    # The direct converter agrees with the file written.
    segments = [{"id": 1000, "category_id": 184}, {"id": 2001, "category_id": 1}]
    direct = panoptic_to_semantic(segment_ids, segments, mapping)
    assert set(np.unique(direct).tolist()) == {0, 2, IGNORE_ID}


def test_ade20k_panoptic_loads_as_open_vocabulary(tmp_path):
    segment_ids = np.zeros((8, 8), dtype=np.int64)
    segment_ids[:4] = 7
    write_panoptic_png(tmp_path / "ade20k_panoptic_val" / "ADE_val_1.png", segment_ids)
    write_json(tmp_path / "ade20k_panoptic_val.json", {
        "images": [{"id": "ADE_val_1", "file_name": "ADE_val_1.jpg", "height": 8, "width": 8}],
        "annotations": [{"image_id": "ADE_val_1", "file_name": "ADE_val_1.png",
                         "segments_info": [{"id": 7, "category_id": 0, "iscrowd": 0}]}],
        "categories": [{"id": 0, "name": "wall", "isthing": 0}, {"id": 1, "name": "building, edifice", "isthing": 0}],
    })
    example = load_ade20k_panoptic(tmp_path / "ade20k_panoptic_val.json", tmp_path / "ade20k_panoptic_val",
                                   tmp_path / "images")[0]
    assert example.task == "ovseg" and example.source == "ade20k_panoptic_val"
    assert example.class_names == ["wall", "building, edifice"]
    assert np.array_equal(decode_rle(example.objects[0].mask), segment_ids == 7)


def test_user_coco_instances_with_polygons_rle_and_crowd_load_without_code(tmp_path):
    person = np.zeros((H, W), dtype=bool)
    person[3:9, 4:12] = True
    dog = box_mask(H, W, 10, 15, 20, 28)
    crowd = box_mask(H, W, 20, 0, 24, 6)
    write_json(tmp_path / "instances.json", {
        "images": [{"id": 5, "file_name": "a.jpg", "height": H, "width": W},
                   {"id": 6, "file_name": "b.jpg", "height": H, "width": W}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "segmentation": [rect_polygon(3, 4, 9, 12)], "iscrowd": 0,
             "bbox": [4, 3, 8, 6]},
            {"id": 2, "image_id": 5, "category_id": 18, "segmentation": rle_of(dog), "iscrowd": 0},
            {"id": 3, "image_id": 5, "category_id": 1, "segmentation": uncompressed_rle_of(crowd), "iscrowd": 1},
            {"id": 4, "image_id": 5, "category_id": 1, "segmentation": "garbage", "iscrowd": 0},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
    })
    counter = SkipCounter()
    source = load_coco_instances(tmp_path / "instances.json", tmp_path, counter=counter)
    first, second = list(source)
    assert_picklable(source)
    assert first.class_names == ["person", "dog"] and first.class_ids == [1, 18]
    assert [(o.object_id, o.class_index) for o in first.objects] == [("1", 0), ("2", 1)]
    assert np.array_equal(decode_rle(first.objects[0].mask), person)
    assert np.array_equal(decode_rle(first.objects[1].mask), dog)
    assert first.objects[0].bbox == [4.0, 3.0, 8.0, 6.0]
    assert counter.count(reason="bad_annotation") == 1  # the "garbage" segmentation
    assert second.objects == []  # an image without annotations is a valid (empty) example

    crowded = load_coco_instances(tmp_path / "instances.json", tmp_path, include_crowd=True)[0]
    crowd_objects = [o for o in crowded.objects if o.iscrowd]
    assert len(crowd_objects) == 1 and np.array_equal(decode_rle(crowd_objects[0].mask), crowd)


def test_panoptic_png_size_mismatch_is_reported_not_silently_used(tmp_path):
    write_panoptic_png(tmp_path / "png" / "x.png", np.ones((4, 4), dtype=np.int64))
    write_json(tmp_path / "p.json", {
        "images": [{"id": 1, "file_name": "x.jpg", "height": 5, "width": 4}],
        "annotations": [{"image_id": 1, "file_name": "x.png", "segments_info": [{"id": 1, "category_id": 1}]}],
        "categories": [{"id": 1, "name": "thing", "isthing": 1}],
    })
    counter = SkipCounter()
    assert list(load_coco_panoptic(tmp_path / "p.json", tmp_path / "png", tmp_path, counter=counter)) == []
    assert counter.total == 1
    assert Image.open(tmp_path / "png" / "x.png").size == (4, 4)
