import pickle

import numpy as np
import pytest
from xsam_data_fixtures import assert_picklable, box_mask, rect_polygon, write_refcoco_files

from xsam_hf.training.data import SkipCounter, load_refcoco
from xsam_hf.training.data.masks import decode_mask, decode_rle
from xsam_hf.training.data.refcoco import read_refs_pickle

H, W = 20, 30


def _sentences(*texts):
    return [{"tokens": t.split(), "raw": t.upper(), "sent_id": i, "sent": t} for i, t in enumerate(texts)]


def _write_refcoco(folder, split_by):
    refs = [
        {"ref_id": 0, "ann_id": 11, "image_id": 100, "split": "train", "category_id": 1,
         "file_name": "COCO_train2014_000000000100_11.jpg", "sent_ids": [0, 1],
         "sentences": _sentences("man on the left", "guy in red")},
        {"ref_id": 1, "ann_id": 12, "image_id": 100, "split": "train", "category_id": 18,
         "file_name": "COCO_train2014_000000000100_12.jpg", "sent_ids": [2],
         "sentences": _sentences("brown dog")},
        {"ref_id": 2, "ann_id": 21, "image_id": 200, "split": "val", "category_id": 1,
         "file_name": "COCO_train2014_000000000200_21.jpg", "sent_ids": [3], "sentences": _sentences("person")},
        {"ref_id": 3, "ann_id": 999, "image_id": 100, "split": "train", "category_id": 1,
         "file_name": "x.jpg", "sent_ids": [4], "sentences": _sentences("missing annotation")},
    ]
    write_refcoco_files(folder, refs, H, W, split_by)


def test_refcoco_groups_referred_objects_per_image_with_their_sentences(tmp_path):
    _write_refcoco(tmp_path / "refcoco", "unc")
    counter = SkipCounter()
    source = load_refcoco(tmp_path / "refcoco", tmp_path / "images" / "train2014", split="train", counter=counter)
    assert source.name == "refcoco_unc_train" and len(source) == 1
    assert_picklable(source)
    example = source[0]
    assert example.task == "refseg" and example.image_size == (H, W)
    assert example.image_path.endswith("train2014/COCO_train2014_000000000100.jpg")
    assert [o.texts for o in example.objects] == [["man on the left", "guy in red"], ["brown dog"]]
    assert np.array_equal(decode_rle(example.objects[0].mask),
                          decode_mask([rect_polygon(2, 3, 10, 9)], H, W))
    assert decode_rle(example.objects[0].mask)[2:10, 3:9].all()
    assert np.array_equal(decode_rle(example.objects[1].mask), box_mask(H, W, 12, 0, 20, 30))
    assert example.meta["category_names"] == ["person", "dog"] and example.meta["ann_ids"] == [11, 12]
    assert counter.count(reason="ref_without_annotation_or_sentence") == 1

    val = load_refcoco(tmp_path / "refcoco", tmp_path / "images", split="val")
    assert [o.texts for o in val[0].objects] == [["person"]]


def test_refcocog_defaults_to_umd_split(tmp_path):
    _write_refcoco(tmp_path / "refcocog", "umd")
    assert load_refcoco(tmp_path / "refcocog", tmp_path, split="train").name == "refcocog_umd_train"


def test_refs_pickle_reader_refuses_objects_that_could_run_code(tmp_path):
    path = tmp_path / "refs(unc).p"
    with open(path, "wb") as handle:
        pickle.dump([{"ref_id": 0, "callable": print}], handle)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_refs_pickle(path)
